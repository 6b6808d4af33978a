/**
 * What every importer shares: reading the other bot's YAML with line numbers, checking it
 * against a description of its documented keys (unknown keys with the nearest known one,
 * wrong types), the three-list report, and turning a conversion into our YAML (secrets as
 * `...File` references, placeholders marked) that is checked against our own schema before
 * anything is written.
 */
import { basename, dirname, join, resolve } from "node:path";
import { Document, LineCounter, parseDocument, type Document as YamlDocument } from "yaml";
import { readRegularFile } from "../files.ts";
import { checkReferences, configFileSchema } from "../config/schema.ts";

// ---------------------------------------------------------------------------------------
// Errors and the report.
// ---------------------------------------------------------------------------------------

export interface ImportError {
  readonly file: string;
  /** Dotted key in the source file ("ldap.port"); "" for the file as a whole. */
  readonly key: string;
  readonly line?: number;
  readonly message: string;
}

/** `bot.yaml:12: ldap.port: must be a whole number (got "389x")`. */
export function formatImportError(e: ImportError): string {
  const where = e.line === undefined ? e.file : `${e.file}:${e.line}`;
  return e.key === "" ? `${where}: ${e.message}` : `${where}: ${e.key}: ${e.message}`;
}

export interface ReportLine {
  /** The source key(s), or "(built in)" for a behaviour of the other bot that has no key. */
  readonly from: string;
  /** Our key(s). */
  readonly to?: string;
  /** What differs, or why it is left out. Never a secret. */
  readonly note?: string;
}

export interface Report {
  readonly mapped: ReportLine[];
  readonly changed: ReportLine[];
  readonly ignored: ReportLine[];
  /** Keys our schema needs that the source lacks, filled with a marked placeholder. */
  readonly placeholders: ReportLine[];
}

export function emptyReport(): Report {
  return { mapped: [], changed: [], ignored: [], placeholders: [] };
}

export function formatReport(report: Report, title: string): string {
  const section = (heading: string, lines: readonly ReportLine[]): string => {
    const body =
      lines.length === 0
        ? "  (none)"
        : lines
            .map((l) => `  - ${l.from}${l.to !== undefined ? ` → ${l.to}` : ""}${l.note !== undefined ? `\n      ${l.note}` : ""}`)
            .join("\n");
    return `${heading}\n${body}`;
  };
  return [
    title,
    section("Mapped 1:1:", report.mapped),
    section("Changes meaning (check these):", report.changed),
    section("No equivalent (ignored):", report.ignored),
    section("Placeholders (our config needs these; the source has none — replace them):", report.placeholders),
  ].join("\n\n");
}

// ---------------------------------------------------------------------------------------
// The source file.
// ---------------------------------------------------------------------------------------

type Path = readonly (string | number)[];

/** The documented shape of a source file: each key's type. Every mapping is closed. */
export type Spec =
  | "string"
  | "int"
  | "bool"
  | { readonly map: Spec }
  | { readonly list: Spec }
  | { readonly obj: Readonly<Record<string, Spec>> };

export class SourceDoc {
  private constructor(
    readonly file: string,
    readonly data: Readonly<Record<string, unknown>>,
    private readonly doc: YamlDocument,
    private readonly lines: LineCounter,
  ) {}

  /** Reads and parses a source file; an unreadable file, bad YAML or a non-mapping is an error. */
  static read(path: string, cwd: string): { ok: true; doc: SourceDoc } | { ok: false; errors: ImportError[] } {
    const file = resolve(cwd, path);
    const read = readRegularFile(file, 8 * 1024 * 1024, "the file to import");
    if (!read.ok) return { ok: false, errors: [{ file, key: "", message: read.message }] };
    return SourceDoc.parse(read.text, file);
  }

  static parse(text: string, file: string): { ok: true; doc: SourceDoc } | { ok: false; errors: ImportError[] } {
    const lines = new LineCounter();
    const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true, lineCounter: lines });
    if (doc.errors.length > 0) {
      return {
        ok: false,
        errors: doc.errors.map((err) => {
          const what = (err.message.split("\n")[0] ?? err.message).replace(/ at line \d+, column \d+:?$/, "");
          const line = err.linePos?.[0].line;
          return { file, key: "", message: `not valid YAML: ${what}`, ...(line !== undefined ? { line } : {}) };
        }),
      };
    }
    let data: unknown;
    try {
      data = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      return { ok: false, errors: [{ file, key: "", message: `cannot read as YAML: ${err instanceof Error ? err.message : String(err)}` }] };
    }
    if (data === null || data === undefined) return { ok: false, errors: [{ file, key: "", message: "the file is empty" }] };
    if (!isRecord(data)) return { ok: false, errors: [{ file, key: "", message: `the top level must be a mapping of keys, not ${kindOf(data)}` }] };
    return { ok: true, doc: new SourceDoc(file, data, doc, lines) };
  }

  /** The value at a path; YAML's empty value (null) reads as absent. */
  get(...path: Path): unknown {
    let at: unknown = this.data;
    for (const key of path) {
      if (Array.isArray(at) && typeof key === "number") at = at[key];
      else if (isRecord(at)) at = at[String(key)];
      else return undefined;
    }
    return at === null ? undefined : at;
  }

  /** A string value, absent when missing or empty (the other bots' templates ship `""`). */
  str(...path: Path): string | undefined {
    const v = this.get(...path);
    return typeof v === "string" && v.trim() !== "" ? v.trim() : undefined;
  }

  lineOf(path: Path): number | undefined {
    for (let n = path.length; n > 0; n--) {
      const node = this.doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node?.range !== undefined) return this.lines.linePos(node.range[0]).line;
    }
    return undefined;
  }

  /** The line of a key itself (the pair's key node), for unknown keys. */
  private keyLine(path: Path): number | undefined {
    const parent = path.length === 1 ? this.doc.contents : this.doc.getIn(path.slice(0, -1), true);
    const items = (parent as { items?: { key?: { value?: unknown; range?: [number, number, number] } }[] } | null)?.items;
    const pair = items?.find((p) => p.key?.value === path[path.length - 1]);
    if (pair?.key?.range !== undefined) return this.lines.linePos(pair.key.range[0]).line;
    return this.lineOf(path);
  }

  error(path: Path, message: string): ImportError {
    const line = this.lineOf(path);
    return { file: this.file, key: path.join("."), message, ...(line !== undefined ? { line } : {}) };
  }

  /** Unknown keys (with the nearest known one) and values of the wrong type, key by key. */
  check(spec: Readonly<Record<string, Spec>>): ImportError[] {
    const out: ImportError[] = [];
    const walk = (value: unknown, s: Spec, path: Path): void => {
      if (value === null || value === undefined) return; // an empty value: absent
      if (s === "string") {
        if (typeof value !== "string") out.push(this.error(path, `must be a string (got ${kindOf(value)})`));
      } else if (s === "int") {
        if (typeof value !== "number" || !Number.isInteger(value)) out.push(this.error(path, `must be a whole number (got ${kindOf(value)})`));
      } else if (s === "bool") {
        if (typeof value !== "boolean") out.push(this.error(path, `must be true or false (got ${kindOf(value)})`));
      } else if ("list" in s) {
        if (!Array.isArray(value)) out.push(this.error(path, `must be a list (got ${kindOf(value)})`));
        else value.forEach((v, i) => walk(v, s.list, [...path, i]));
      } else if ("map" in s) {
        if (!isRecord(value)) out.push(this.error(path, `must be a mapping (got ${kindOf(value)})`));
        else for (const [k, v] of Object.entries(value)) walk(v, s.map, [...path, k]);
      } else {
        if (!isRecord(value)) {
          out.push(this.error(path, `must be a mapping (got ${kindOf(value)})`));
          return;
        }
        const known = Object.keys(s.obj);
        for (const [k, v] of Object.entries(value)) {
          const sub = s.obj[k];
          if (sub === undefined) {
            const near = nearest(k, known);
            const hint = near !== undefined ? `; did you mean "${near}"?` : `; known keys here: ${known.join(", ")}`;
            const line = this.keyLine([...path, k]);
            out.push({ file: this.file, key: [...path, k].join("."), message: `unknown key${hint}`, ...(line !== undefined ? { line } : {}) });
          } else walk(v, sub, [...path, k]);
        }
      }
    };
    walk(this.data, { obj: spec }, []);
    return out.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  }
}

/** The known key closest to `key` by edit distance, when close enough to be a typo. */
export function nearest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function kindOf(value: unknown): string {
  if (value === null || value === undefined) return "an empty value";
  if (Array.isArray(value)) return "a list";
  if (isRecord(value)) return "a mapping";
  if (typeof value === "string") return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === "number" || typeof value === "boolean") return `${typeof value} ${value}`;
  return typeof value;
}

// ---------------------------------------------------------------------------------------
// A conversion and our YAML.
// ---------------------------------------------------------------------------------------

/** A secret of the source, written to its own file and referenced with our `...File` key. */
export interface SecretOut {
  /** File name inside `<out>.secrets/`, e.g. "azure-client-secret". */
  readonly name: string;
  readonly value: string;
  /** Our object holding it, e.g. ["idp", "azure"]. */
  readonly parent: readonly string[];
  /** Our inline and file keys, e.g. "clientSecret" / "clientSecretFile". */
  readonly key: string;
  readonly fileKey: string;
  /** A stand-in our schema needs (not a secret): without --out it is written inline. */
  readonly placeholder?: boolean;
  /** The source key it came from ("" for a placeholder). */
  readonly from: string;
}

/** Another file written next to the output (e.g. a placeholder static directory). */
export interface ExtraFile {
  /** Path relative to the output's folder, as referenced in the config. */
  readonly name: string;
  readonly text: string;
}

export interface Conversion {
  /** Our config without the secrets (they are added by `render`). */
  readonly config: Record<string, unknown>;
  readonly secrets: readonly SecretOut[];
  readonly report: Report;
  /** Our dotted key → the source key it came from: our schema's complaints name the source line. */
  readonly origins: ReadonlyMap<string, readonly (string | number)[]>;
  /** Comments on our keys (dotted path → text), e.g. placeholders. */
  readonly comments: ReadonlyMap<string, string>;
  /** A placeholder directory file: written with --out under this name (relative to the output's folder). */
  readonly directory?: ExtraFile;
}

/** Builds a conversion step by step, remembering where each of our keys came from. */
export class Builder {
  readonly config: Record<string, unknown> = {};
  readonly secrets: SecretOut[] = [];
  readonly report = emptyReport();
  readonly origins = new Map<string, readonly (string | number)[]>();
  readonly comments = new Map<string, string>();

  set(path: readonly string[], value: unknown, from?: readonly (string | number)[]): void {
    let at = this.config;
    for (const key of path.slice(0, -1)) {
      const next = at[key];
      if (isRecord(next)) at = next;
      else {
        const created: Record<string, unknown> = {};
        at[key] = created;
        at = created;
      }
    }
    at[path[path.length - 1] as string] = value;
    if (from !== undefined) this.origins.set(path.join("."), from);
  }

  secret(s: SecretOut): void {
    this.secrets.push(s);
    if (s.from !== "") this.origins.set([...s.parent, s.fileKey].join("."), s.from.split("."));
  }

  comment(path: readonly string[], text: string): void {
    this.comments.set(path.join("."), text);
  }

  done(directory?: ExtraFile): Conversion {
    return { config: this.config, secrets: this.secrets, report: this.report, origins: this.origins, comments: this.comments, ...(directory ? { directory } : {}) };
  }
}

export const PLACEHOLDER_TOKEN = "REPLACE-ME-with-the-bot-access-token";
export const PLACEHOLDER_DIRECTORY = `# PLACEHOLDER written by matrix-group-sync import: the bot you came from had no
# directory. List users and groups here, or switch idp to ldap or azure (README).
users:
  - alice
groups:
  - { id: example-group, members: [alice] }
`;

/** Adds the placeholder homeserver token (a file with --out, inline without). */
export function placeholderToken(b: Builder, why: string): void {
  b.secret({ name: "homeserver-access-token", value: PLACEHOLDER_TOKEN, parent: ["homeserver"], key: "accessToken", fileKey: "accessTokenFile", placeholder: true, from: "" });
  b.report.placeholders.push({ from: "(none)", to: "homeserver.accessToken(File)", note: `${why} Put the bot's access token in the file (or set MGS_HOMESERVER_ACCESS_TOKEN).` });
}

/** Adds the placeholder static directory. */
export function placeholderDirectory(b: Builder, name: string): ExtraFile {
  b.set(["idp"], { kind: "static", static: { file: name } });
  b.comment(["idp"], " PLACEHOLDER: the source has no directory; replace with ldap or azure, or fill the file");
  b.report.placeholders.push({
    from: "(none)",
    to: `idp: { kind: static, static: { file: ${name} } }`,
    note: "our config needs a directory and the source has none: an example static directory file is written next to the config (with --out); replace it, or set idp to ldap or azure.",
  });
  return { name, text: PLACEHOLDER_DIRECTORY };
}

export interface Rendered {
  readonly yaml: string;
  /** Secret files: absolute path and content (only with an output file). */
  readonly secretFiles: readonly { path: string; text: string }[];
  readonly extraFiles: readonly { path: string; text: string }[];
}

/**
 * Our YAML for a conversion. `out` is the absolute output path, or undefined for stdout (then
 * a real secret is refused). Our schema and cross-field rules are applied to the result, so
 * what is written is what `loadConfig` accepts; a complaint names the source key it came from.
 */
export function render(
  conv: Conversion,
  source: SourceDoc,
  kind: string,
  out: string | undefined,
): { ok: true; value: Rendered } | { ok: false; errors: ImportError[] } {
  const raw = structuredClone(conv.config);
  const secretFiles: { path: string; text: string }[] = [];
  const real = conv.secrets.filter((s) => s.placeholder !== true);
  if (out === undefined && real.length > 0) {
    return {
      ok: false,
      errors: [
        {
          file: source.file,
          key: "",
          message: `it holds secrets (${real.map((s) => s.from).join(", ")}), which are written to files next to the output: give --out FILE`,
        },
      ],
    };
  }
  const base = out !== undefined ? basename(out) : "";
  const dir = out !== undefined ? dirname(out) : "";
  for (const s of conv.secrets) {
    let at = raw;
    for (const key of s.parent) {
      const next = at[key];
      if (isRecord(next)) at = next;
      else at = at[key] = {};
    }
    if (out === undefined) {
      at[s.key] = s.value; // only a placeholder gets here
    } else {
      const rel = `${base}.secrets/${s.name}`;
      at[s.fileKey] = rel;
      secretFiles.push({ path: join(dir, rel), text: `${s.value}\n` });
    }
  }

  const errors = validate(raw, conv, source);
  if (errors.length > 0) return { ok: false, errors };

  const doc = new Document(raw);
  doc.commentBefore =
    ` matrix-group-sync config, imported from the ${kind} config ${source.file}` +
    `\n by \`matrix-group-sync import ${kind}\`. Read the report it printed, replace every PLACEHOLDER,` +
    `\n then check it: matrix-group-sync check-config --config ${out ?? "<this file>"}`;
  for (const [path, text] of conv.comments) {
    const node = doc.getIn(path.split("."), true) as { comment?: string | null; commentBefore?: string | null; items?: unknown } | undefined;
    if (node === undefined || node === null) continue;
    if (node.items !== undefined) node.commentBefore = text; // a mapping: the comment goes above its first key
    else node.comment = text;
  }
  for (const s of conv.secrets.filter((x) => x.placeholder === true)) {
    const node = doc.getIn([...s.parent, out === undefined ? s.key : s.fileKey], true) as { comment?: string | null } | undefined;
    if (node) node.comment = out === undefined ? " PLACEHOLDER: move the real token to accessTokenFile or MGS_HOMESERVER_ACCESS_TOKEN" : " PLACEHOLDER: put the bot's access token in this file";
  }
  const extraFiles = out !== undefined && conv.directory !== undefined ? [{ path: join(dir, conv.directory.name), text: conv.directory.text }] : [];
  return { ok: true, value: { yaml: doc.toString({ lineWidth: 0 }), secretFiles, extraFiles } };
}

/** Our schema over the result; each complaint is reported at the source key it came from. */
function validate(raw: Record<string, unknown>, conv: Conversion, source: SourceDoc): ImportError[] {
  const found: { path: Path; message: string }[] = [];
  const parsed = configFileSchema.safeParse(raw);
  if (!parsed.success) for (const issue of parsed.error.issues) found.push({ path: issue.path as Path, message: issue.message });
  found.push(...checkReferences(raw));
  return found.map(({ path, message }) => {
    const ours = path.map(String);
    for (let n = ours.length; n > 0; n--) {
      const from = conv.origins.get(ours.slice(0, n).join("."));
      if (from !== undefined) return source.error(from, `${message} (as our ${ours.join(".")})`);
    }
    return { file: source.file, key: "", message: `the converted config is not valid at ${ours.join(".") || "(top level)"}: ${message}` };
  });
}
