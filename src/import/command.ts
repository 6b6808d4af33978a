/**
 * `matrix-group-sync import <kind> FILE [--out FILE] [--force]`: another bot's config turned
 * into ours. Needs no config of ours. Refused (nothing written) on bad input.
 */
import { basename, resolve } from "node:path";
import { command, done, type Command, type Outcome } from "../commands/command.ts";
import { paragraph, preformatted } from "../commands/render.ts";
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

function textOutcome(status: Outcome["status"], text: string, data?: unknown): Outcome {
  return { status, parts: [preformatted(text)], text, ...(data !== undefined ? { data } : {}) };
}

export const importCommand: Command = command({
  name: "import",
  summary: "Turn another bot's config into ours (needs no config of ours)",
  description: `Turns the config of a bot you run today into a matrix-group-sync config, and prints what maps 1:1, what changes meaning and what has no equivalent. Kinds: ${Object.entries(
    IMPORTERS,
  )
    .map(([k, v]) => `${k} (${v.what})`)
    .join("; ")}. Without --out the config is printed (refused when the source holds secrets); with it, each secret goes to OUT.secrets/<name> (mode 0600).`,
  params: [
    { name: "kind", kind: "string", description: Object.keys(IMPORTERS).join(", ") },
    { name: "file", kind: "string", description: "the other bot's config file" },
    { name: "out", kind: "string", description: "where to write our config (also --out FILE)", optional: true },
  ],
  flags: [{ name: "force", description: "replace existing output files" }],
  permission: "operator",
  surfaces: ["cli"],
  uses: ["terminal"],
  async run(ctx, args) {
    const { kind, file } = args;
    const io = ctx.terminal;
    const importer = IMPORTERS[kind];
    if (importer === undefined) {
      const near = nearest(kind, Object.keys(IMPORTERS));
      return textOutcome("usage", `unknown kind: ${kind}.${near !== undefined ? ` Did you mean "${near}"?` : ""} Known: ${Object.keys(IMPORTERS).join(", ")}`);
    }
    const out = args.out !== undefined ? resolve(io.cwd, args.out) : undefined;
    const bad = (errors: readonly ImportError[]): Outcome =>
      textOutcome("refused", `Cannot import ${file}; nothing was written:\n${errors.map((e) => `  ${formatImportError(e)}`).join("\n")}`, { errors: errors.map(formatImportError) });

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
      // The config on stdout (to redirect), the report beside it on stderr.
      const dir = converted.value.directory;
      await ctx.say([preformatted(dir !== undefined ? `${report}\n\nCreate ${dir.name} next to the config, e.g.:\n${dir.text}` : report)]);
      return textOutcome("ok", rendered.value.yaml.trimEnd(), { config: rendered.value.yaml, report: converted.value.report });
    }
    const written = writeAll(
      [
        ...rendered.value.secretFiles.map((f) => ({ ...f, mode: 0o600 })),
        ...rendered.value.extraFiles.map((f) => ({ ...f, mode: 0o644 })),
        { path: out, text: rendered.value.yaml, mode: 0o644 },
      ],
      args.force,
    );
    if (!written.ok) return textOutcome(written.message.startsWith("refusing") ? "refused" : "failed", `${written.message}; nothing was written`);
    const files = [
      ...rendered.value.secretFiles.map((f) => `  ${f.path} (secret, mode 0600)`),
      ...rendered.value.extraFiles.map((f) => `  ${f.path} (placeholder)`),
      `  ${out}`,
    ];
    return {
      ...done(paragraph(title)),
      text: `${report}\n\nWritten:\n${files.join("\n")}\nNext: matrix-group-sync check-config --config ${out}`,
      data: { written: [...rendered.value.secretFiles, ...rendered.value.extraFiles].map((f) => f.path).concat(out), report: converted.value.report },
    };
  },
});
