/**
 * `matrix-group-sync import <kind> FILE [--out FILE] [--force]`: another bot's config turned
 * into ours. Needs no config of ours. Exit 0 done, 2 bad usage or bad input (nothing written).
 */
import { basename, resolve } from "node:path";
import { parseArgs } from "node:util";
import { EXIT_FAILURES, EXIT_OK, EXIT_USAGE } from "../exit-codes.ts";
import { describeError } from "../result.ts";
import type { CliIo } from "../main.ts";
import { convertInviterbot } from "./inviterbot.ts";
import { convertMasTokenBot } from "./mas-token-bot.ts";
import { convertMatrixRegistrationBot } from "./matrix-registration-bot.ts";
import { formatImportError, formatReport, nearest, render, SourceDoc, type Conversion, type ImportError } from "./report.ts";
import { writeAll } from "./write.ts";

type Converter = (src: SourceDoc, ctx: { directoryName: string }) => { ok: true; value: Conversion } | { ok: false; errors: ImportError[] };

export const IMPORTERS: Readonly<Record<string, { what: string; convert: Converter }>> = {
  inviterbot: { what: "SAPUCC inviterbot (maubot plugin) base-config.yaml", convert: (src) => convertInviterbot(src) },
  "matrix-registration-bot": { what: "moan0s/matrix-registration-bot config.yml (Synapse tokens)", convert: convertMatrixRegistrationBot },
  "mas-token-bot": { what: "mas-token-bot (maubot plugin) base-config.yaml (MAS tokens)", convert: convertMasTokenBot },
};

export const IMPORT_USAGE = `Usage: matrix-group-sync import <kind> FILE [--out FILE] [--force]

Turns the config of a bot you run today into a matrix-group-sync config, and prints what
maps 1:1, what changes meaning and what has no equivalent.
Kinds:
${Object.entries(IMPORTERS)
  .map(([k, v]) => `  ${k.padEnd(26)}${v.what}`)
  .join("\n")}

Options:
  --out FILE   write the config there; each secret goes to FILE.secrets/<name> (mode 0600).
               Without it the config is printed (refused when the source holds secrets).
  --force      replace existing output files`;

export function runImportCli(args: readonly string[], io: CliIo): number {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      allowPositionals: true,
      strict: true,
      options: { out: { type: "string" }, force: { type: "boolean", default: false }, help: { type: "boolean", short: "h", default: false } },
    });
  } catch (err) {
    io.err(`${describeError(err)}\n\n${IMPORT_USAGE}`);
    return EXIT_USAGE;
  }
  if (parsed.values.help) {
    io.out(IMPORT_USAGE);
    return EXIT_OK;
  }
  const [kind, file, ...rest] = parsed.positionals;
  if (kind === undefined || file === undefined || rest.length > 0) {
    io.err(`${rest.length > 0 ? `unexpected argument: ${rest.join(" ")}` : "import needs a kind and a file"}\n\n${IMPORT_USAGE}`);
    return EXIT_USAGE;
  }
  const importer = IMPORTERS[kind];
  if (importer === undefined) {
    const near = nearest(kind, Object.keys(IMPORTERS));
    io.err(`unknown kind: ${kind}.${near !== undefined ? ` Did you mean "${near}"?` : ""} Known: ${Object.keys(IMPORTERS).join(", ")}\n\n${IMPORT_USAGE}`);
    return EXIT_USAGE;
  }
  const out = parsed.values.out !== undefined ? resolve(io.cwd, parsed.values.out) : undefined;
  const bad = (errors: readonly ImportError[]): number => {
    io.err(`Cannot import ${file}; nothing was written:\n${errors.map((e) => `  ${formatImportError(e)}`).join("\n")}`);
    return EXIT_USAGE;
  };

  const read = SourceDoc.read(file, io.cwd);
  if (!read.ok) return bad(read.errors);
  const directoryName = out !== undefined ? `${basename(out).replace(/\.ya?ml$/i, "")}.directory.yaml` : "directory.yaml";
  const converted = importer.convert(read.doc, { directoryName });
  if (!converted.ok) return bad(converted.errors);
  const rendered = render(converted.value, read.doc, kind, out);
  if (!rendered.ok) return bad(rendered.errors);

  const title = `Imported ${read.doc.file} (${kind})${out !== undefined ? ` into ${out}` : ""}.`;
  const report = formatReport(converted.value.report, title);
  if (out === undefined) {
    io.out(rendered.value.yaml.trimEnd());
    const dir = converted.value.directory;
    io.err(dir !== undefined ? `${report}\n\nCreate ${dir.name} next to the config, e.g.:\n${dir.text}` : report);
    return EXIT_OK;
  }
  const written = writeAll(
    [
      ...rendered.value.secretFiles.map((f) => ({ ...f, mode: 0o600 })),
      ...rendered.value.extraFiles.map((f) => ({ ...f, mode: 0o644 })),
      { path: out, text: rendered.value.yaml, mode: 0o644 },
    ],
    parsed.values.force,
  );
  if (!written.ok) {
    io.err(`${written.message}; nothing was written`);
    return written.message.startsWith("refusing") ? EXIT_USAGE : EXIT_FAILURES;
  }
  const files = [
    ...rendered.value.secretFiles.map((f) => `  ${f.path} (secret, mode 0600)`),
    ...rendered.value.extraFiles.map((f) => `  ${f.path} (placeholder)`),
    `  ${out}`,
  ];
  io.out(`${report}\n\nWritten:\n${files.join("\n")}\nNext: matrix-group-sync check-config --config ${out}`);
  return EXIT_OK;
}
