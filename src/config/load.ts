/**
 * Loading the configuration: read the YAML file, apply environment overrides, read
 * `...File` secrets, validate against the schema and the cross-field rules, and hand out a
 * `Config` with defaults applied, secrets resolved and paths absolute. Every problem found
 * is returned, not just the first, each with the JSON pointer of the value it concerns.
 *
 * Environment (an empty variable counts as unset):
 * - MGS_CONFIG: the config file, when no path is passed.
 * - every setting: `MGS_` + its path in upper snake case (env.ts, `ENV_SETTINGS`), e.g.
 *   MGS_HOMESERVER_URL, MGS_SYNC_MAX_REMOVALS_COUNT; it replaces what the file says.
 * - secrets (`SECRET_FIELDS`): MGS_HOMESERVER_ACCESS_TOKEN / MGS_HOMESERVER_ACCESS_TOKEN_FILE
 *   and the like. A secret from the environment replaces whatever the file gives for it,
 *   inline or as a file: the env inline value replaces a YAML `...File` and an env file
 *   replaces a YAML inline value. Setting both variables of one pair is an error, as is
 *   giving both keys of one pair in the file.
 * Relative paths in the file are resolved against the file's folder; relative paths from
 * the environment against the working directory.
 */
import { dirname, resolve } from "node:path";
import { readRegularFile } from "../files.ts";
import { LineCounter, parseDocument, type Document } from "yaml";
import type { z } from "zod";
import {
  CONFIG_PATH_ENV,
  SECRET_FIELDS,
  checkReferences,
  configFileSchema,
  type Config,
  type ConfigFile,
  type IdpConfig,
} from "./schema.ts";
import { redactUrlsInText } from "../redact-url.ts";
import { ENV_SETTINGS, readEnvValue } from "./env.ts";
import { resolveKickOn } from "../reconcile/kick-rule.ts";

export interface ConfigError {
  /** JSON pointer of the value concerned ("/mapping/rooms/2/groups/0/role"); "" for the file as a whole. */
  readonly path: string;
  /** What is wrong, in plain words. */
  readonly message: string;
  /** Line in the config file, when the value is written there. */
  readonly line?: number;
}

export interface LoadOptions {
  /** The config file; relative to `cwd`. Default: env MGS_CONFIG. */
  readonly path?: string | undefined;
  /** Default: process.env. */
  readonly env?: NodeJS.ProcessEnv | undefined;
  /** Default: process.cwd(). */
  readonly cwd?: string | undefined;
}

export interface LoadedConfig {
  readonly ok: true;
  readonly config: Config;
  /** Absolute path of the file that was read. */
  readonly path: string;
  /** Values taken from the environment instead of the file: pointer and variable name. */
  readonly overrides: readonly { readonly path: string; readonly env: string }[];
  /** Where each setting that has a value got it: every variable-backed key, in schema order. */
  readonly sources: readonly ValueSource[];
  /** Secret variables set for a section this config does not use (e.g. an LDAP password with Azure). */
  readonly unused: readonly { readonly env: string; readonly key: string }[];
}

export interface ValueSource {
  /** Dotted key: `homeserver.url`. */
  readonly key: string;
  /** The variable that gave it, `file` (a `...File` secret: `file (accessTokenFile)`), or `default`. */
  readonly source: string;
}

export type ConfigResult = LoadedConfig | { readonly ok: false; readonly errors: readonly ConfigError[] };

type Path = readonly (string | number)[];
type Raw = Record<string, unknown>;

/** One line per error: `/homeserver/color: unknown key (line 4)`. */
export function formatConfigError(error: ConfigError): string {
  const where = error.path === "" ? "config" : error.path;
  return `${where}: ${error.message}${error.line === undefined ? "" : ` (line ${error.line})`}`;
}

export function loadConfig(opts: LoadOptions = {}): ConfigResult {
  const cwd = opts.cwd ?? process.cwd();
  const env = opts.env ?? process.env;
  const given = opts.path ?? envValue(env, CONFIG_PATH_ENV);
  if (given === undefined || given === "") {
    return failed([{ path: "", message: `no config file given: pass its path or set ${CONFIG_PATH_ENV}` }]);
  }
  const file = resolve(cwd, given);
  // Bounded like a secret file: `--config /dev/zero` or a FIFO must not hang check-config.
  const read = readRegularFile(file, CONFIG_FILE_MAX_BYTES, "the config file");
  if (!read.ok) return failed([{ path: "", message: read.message.startsWith("cannot read") ? read.message.replace("cannot read ", "cannot read the config file ") : read.message }]);
  return loadFromText(read.text, file, env, cwd);
}

function loadFromText(text: string, file: string, env: NodeJS.ProcessEnv, cwd: string): ConfigResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true, lineCounter });
  if (doc.errors.length > 0) {
    return failed(
      doc.errors.map((err) => {
        const pos = err.linePos?.[0];
        const what = (err.message.split("\n")[0] ?? err.message).replace(/ at line \d+, column \d+:?$/, "");
        return pos === undefined
          ? { path: "", message: `YAML syntax error in ${file}: ${what}` }
          : { path: "", message: `YAML syntax error in ${file} at line ${pos.line}, column ${pos.col}: ${what}` };
      }),
    );
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return failed([{ path: "", message: `cannot read ${file} as YAML: ${err instanceof Error ? err.message : String(err)}` }]);
  }
  if (raw === null || raw === undefined) {
    return failed([{ path: "", message: `${file} is empty; it needs at least homeserver and idp` }]);
  }
  if (!isRecord(raw)) {
    const message = `the top level of ${file} must be a mapping (homeserver: ..., idp: ...), not ${describeValue(raw, false)}`;
    return failed([{ path: "", message }]);
  }

  const baseDir = dirname(file);
  const found: { path: Path; message: string }[] = [];
  const fromEnv = new Map<string, string>(); // pointer → variable
  const sectionsFromEnv = new Map<string, string>(); // sections a variable created → variable
  const inFile = keysInFile(raw);
  const unused: { env: string; key: string }[] = [];
  applyEnvironment(raw, env, cwd, fromEnv, sectionsFromEnv, unused, found);
  readSecretFiles(raw, baseDir, fromEnv, found);

  const parsed = configFileSchema.safeParse(raw);
  if (!parsed.success) for (const issue of parsed.error.issues) found.push(...describeIssue(issue, raw));
  found.push(...checkReferences(raw));

  if (found.length > 0 || !parsed.success) {
    const errors = found.map(({ path, message }): ConfigError => {
      const pointer = toPointer(path);
      const variable = envOrigin(pointer, fromEnv) ?? envOrigin(pointer, sectionsFromEnv);
      if (variable !== undefined) return { path: pointer, message: `${message} (from ${variable})` };
      const line = lineOf(doc, lineCounter, path);
      return line === undefined ? { path: pointer, message } : { path: pointer, message, line };
    });
    return failed(sortByPosition(errors));
  }
  const config = finish(parsed.data, baseDir);
  return {
    ok: true,
    config,
    path: file,
    overrides: [...fromEnv].map(([path, variable]) => ({ path, env: variable })),
    sources: sourcesOf(config, inFile, fromEnv),
    unused,
  };
}

/** Pointers of the settings the file itself writes (before the environment is applied). */
function keysInFile(raw: Raw): Set<string> {
  const paths = [...ENV_SETTINGS.map((s) => s.path), ...SECRET_FIELDS.flatMap((s) => [[...s.parent, s.key], [...s.parent, s.fileKey]])];
  return new Set(paths.filter((p) => getAt(raw, p) !== undefined).map((p) => toPointer(p)));
}

/** Older keys folded into a newer one when loading (the newer key's value comes from the older one's). */
const FOLDED: ReadonlyMap<string, readonly string[]> = new Map([["/sync/kickOn", ["sync", "kick"]]]);

function sourcesOf(config: Config, inFile: ReadonlySet<string>, fromEnv: ReadonlyMap<string, string>): ValueSource[] {
  const out: ValueSource[] = [];
  const own = (path: readonly string[]): string | undefined => {
    const pointer = toPointer(path);
    return fromEnv.get(pointer) ?? (inFile.has(pointer) ? "file" : undefined);
  };
  for (const setting of ENV_SETTINGS) {
    const key = setting.path.join(".");
    const source = own(setting.path);
    const older = FOLDED.get(toPointer(setting.path));
    const olderSource = older === undefined ? undefined : own(older);
    if (source !== undefined) out.push({ key, source });
    else if (older !== undefined && olderSource !== undefined) out.push({ key, source: `${olderSource} (${older.join(".")})` });
    else if (getAt(config, setting.path) !== undefined) out.push({ key, source: "default" });
  }
  for (const secret of SECRET_FIELDS) {
    const keyPath = [...secret.parent, secret.key];
    if (getAt(config, keyPath) === undefined) continue;
    const key = keyPath.join(".");
    const variable = fromEnv.get(toPointer(keyPath));
    if (variable !== undefined) out.push({ key, source: variable });
    else if (inFile.has(toPointer([...secret.parent, secret.fileKey]))) out.push({ key, source: `file (${secret.fileKey})` });
    else out.push({ key, source: "file" });
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Environment and secret files (before validation, on the raw document).
// ---------------------------------------------------------------------------------------

function applyEnvironment(
  raw: Raw,
  env: NodeJS.ProcessEnv,
  cwd: string,
  fromEnv: Map<string, string>,
  sectionsFromEnv: Map<string, string>,
  unused: { env: string; key: string }[],
  found: { path: Path; message: string }[],
): void {
  for (const setting of ENV_SETTINGS) {
    const text = envValue(env, setting.env);
    if (text === undefined) continue;
    const parentPath = setting.path.slice(0, -1);
    const key = setting.path[setting.path.length - 1];
    const read = readEnvValue(setting, text);
    if (!read.ok) {
      found.push({ path: setting.path, message: read.message });
      fromEnv.set(toPointer(setting.path), setting.env);
      continue;
    }
    const parent = placeFor(raw, parentPath, setting.env, sectionsFromEnv);
    if (parent === undefined || key === undefined) {
      found.push({ path: parentPath, message: `must be a mapping, so that ${setting.env} can be applied` });
      continue;
    }
    parent[key] = setting.isPath && typeof read.value === "string" ? resolve(cwd, read.value) : read.value;
    fromEnv.set(toPointer(setting.path), setting.env);
  }

  for (const secret of SECRET_FIELDS) {
    const inFile = getAt(raw, secret.parent);
    if (isRecord(inFile) && inFile[secret.key] !== undefined && inFile[secret.fileKey] !== undefined) {
      found.push({ path: secret.parent, message: `give ${secret.key} or ${secret.fileKey}, not both` });
    }
    const inline = envValue(env, secret.env);
    const file = envValue(env, secret.fileEnv);
    if (inline !== undefined && file !== undefined) {
      found.push({ path: secret.parent, message: `the environment sets both ${secret.env} and ${secret.fileEnv}; set one` });
    } else if (inline !== undefined || file !== undefined) {
      const variable = inline !== undefined ? secret.env : secret.fileEnv;
      if (inFile === undefined && secret.inUse !== undefined && !secret.inUse(raw)) {
        unused.push({ env: variable, key: [...secret.parent, secret.key].join(".") });
        continue;
      }
      const parent = placeFor(raw, secret.parent, variable, sectionsFromEnv);
      if (parent === undefined) {
        found.push({ path: secret.parent, message: `must be a mapping, so that ${variable} can be applied` });
        continue;
      }
      delete parent[secret.key];
      delete parent[secret.fileKey];
      if (inline !== undefined) {
        parent[secret.key] = inline;
        fromEnv.set(toPointer([...secret.parent, secret.key]), secret.env);
      } else if (file !== undefined) {
        parent[secret.fileKey] = resolve(cwd, file);
        fromEnv.set(toPointer([...secret.parent, secret.fileKey]), secret.fileEnv);
      }
    }
    const merged = getAt(raw, secret.parent);
    const required = typeof secret.required === "function" ? secret.required(raw) : secret.required;
    if (required && isRecord(merged) && merged[secret.key] === undefined && merged[secret.fileKey] === undefined) {
      found.push({
        path: secret.parent,
        message: `give ${secret.key} or ${secret.fileKey} (or set ${secret.env} or ${secret.fileEnv})`,
      });
    }
  }
}

/**
 * The object at `path` for a variable's value, creating the sections the file does not have;
 * the first section created is remembered, so that an error about it names the variable.
 */
function placeFor(raw: Raw, path: readonly string[], variable: string, sectionsFromEnv: Map<string, string>): Raw | undefined {
  const firstMissing = path.findIndex((_, i) => getAt(raw, path.slice(0, i + 1)) === undefined);
  const parent = ensureRecord(raw, path);
  if (parent !== undefined && firstMissing >= 0) {
    const created = toPointer(path.slice(0, firstMissing + 1));
    if (!sectionsFromEnv.has(created)) sectionsFromEnv.set(created, variable);
  }
  return parent;
}

/** Replaces each `...File` secret by the file's content (trailing newline trimmed). */
function readSecretFiles(
  raw: Raw,
  baseDir: string,
  fromEnv: Map<string, string>,
  found: { path: Path; message: string }[],
): void {
  for (const secret of SECRET_FIELDS) {
    const parent = getAt(raw, secret.parent);
    if (!isRecord(parent)) continue;
    const given = parent[secret.fileKey];
    if (typeof given !== "string" || given === "" || parent[secret.key] !== undefined) continue;
    const filePath = [...secret.parent, secret.fileKey];
    const file = resolve(baseDir, given);
    const read = readSecretFile(file);
    if (!read.ok) {
      found.push({ path: filePath, message: read.message });
      continue;
    }
    const content = read.text.trimEnd();
    if (content === "") {
      found.push({ path: filePath, message: `${file} is empty` });
      continue;
    }
    delete parent[secret.fileKey];
    parent[secret.key] = content;
    const variable = fromEnv.get(toPointer(filePath));
    if (variable !== undefined) fromEnv.set(toPointer([...secret.parent, secret.key]), variable);
  }
}

/** A secret is a token, a password or a URL: anything longer is not one (and must not be read into memory whole). */
export const SECRET_FILE_MAX_BYTES = 64 * 1024;

/** The text of a secret file, read with a bound (files.ts says why each check). */
function readSecretFile(file: string): { ok: true; text: string } | { ok: false; message: string } {
  return readRegularFile(file, SECRET_FILE_MAX_BYTES, "a secret file");
}

/** The largest config file read (a config of thousands of room mappings stays far below). */
const CONFIG_FILE_MAX_BYTES = 8 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// From the validated file to Config.
// ---------------------------------------------------------------------------------------

function finish(file: ConfigFile, baseDir: string): Config {
  const { homeserver, database, ...rest } = file;
  const { accessToken, accessTokenFile: _accessTokenFile, user, password, passwordFile: _passwordFile, ...hs } = homeserver;
  let auth: Config["homeserver"];
  if (accessToken !== undefined) auth = { ...hs, accessToken };
  else if (user !== undefined && password !== undefined) auth = { ...hs, user, password };
  else throw new Error("config: homeserver.accessToken (or user and password) unresolved after loading");
  let resolvedDatabase: Config["database"];
  if (database !== undefined) {
    const { url, urlFile: _urlFile, ...db } = database;
    if (url === undefined) throw new Error("config: database.url unresolved after loading");
    resolvedDatabase = { ...db, url };
  }
  const { tokens, sync, serve, ...others } = rest;
  const { kick: _kick, kickOn: _kickOn, ...syncRest } = sync;
  return {
    ...(tokens === undefined ? {} : { tokens: finishTokens(tokens) }),
    ...(serve === undefined ? {} : { serve: finishServe(serve) }),
    sync: { ...syncRest, kickOn: resolveKickOn(sync) },
    homeserver: auth,
    ...(resolvedDatabase === undefined ? {} : { database: resolvedDatabase }),
    ...others,
    dataDir: resolve(baseDir, file.dataDir),
    idp: finishIdp(file.idp, baseDir),
  };
}

function finishServe(serve: NonNullable<ConfigFile["serve"]>): NonNullable<Config["serve"]> {
  const { encryption, ...rest } = serve;
  if (encryption === undefined) return rest;
  const { storeKey, storeKeyFile: _file, ...e } = encryption;
  if (storeKey === undefined) throw new Error("config: serve.encryption.storeKey unresolved after loading");
  return { ...rest, encryption: { ...e, storeKey } };
}

function finishTokens(tokens: NonNullable<ConfigFile["tokens"]>): NonNullable<Config["tokens"]> {
  const { synapse, mas, ...rest } = tokens;
  let resolvedMas: NonNullable<Config["tokens"]>["mas"];
  if (mas !== undefined) {
    const { clientSecret, clientSecretFile: _file, ...m } = mas;
    if (clientSecret === undefined) throw new Error("config: tokens.mas.clientSecret unresolved after loading");
    resolvedMas = { ...m, clientSecret };
  }
  return {
    ...rest,
    ...(synapse?.accessToken !== undefined ? { synapse: { accessToken: synapse.accessToken } } : {}),
    ...(resolvedMas !== undefined ? { mas: resolvedMas } : {}),
  };
}

/** Paths inside a directory's settings are relative to the config file's folder. */
function finishIdp(idp: ConfigFile["idp"], baseDir: string): IdpConfig {
  switch (idp.kind) {
    case "static":
      return { ...idp, static: { ...idp.static, file: resolve(baseDir, idp.static.file) } };
    case "azure": {
      const { clientSecretFile: _file, certificateFile, ...azure } = idp.azure;
      return {
        ...idp,
        azure: { ...azure, ...(certificateFile === undefined ? {} : { certificateFile: resolve(baseDir, certificateFile) }) },
      };
    }
    case "ldap": {
      const { bindPasswordFile: _file, caFile, ...ldap } = idp.ldap;
      return { ...idp, ldap: { ...ldap, ...(caFile === undefined ? {} : { caFile: resolve(baseDir, caFile) }) } };
    }
  }
}

// ---------------------------------------------------------------------------------------
// Schema issues in plain words.
// ---------------------------------------------------------------------------------------

function describeIssue(issue: z.core.$ZodIssue, raw: unknown): { path: Path; message: string }[] {
  const path = issue.path.map((p) => (typeof p === "number" ? p : String(p)));
  const value = getAt(raw, path);
  const secret = isSecretPath(path);
  const got = () => (value === undefined ? "" : ` (got ${describeValue(value, secret)})`);
  switch (issue.code) {
    case "invalid_type":
      if (value === undefined) return [{ path, message: "required" }];
      return [{ path, message: `expected ${describeExpected(issue.expected)}, got ${describeValue(value, secret)}` }];
    case "unrecognized_keys":
      return issue.keys.map((key) => ({ path: [...path, key], message: unknownKeyMessage(key, allowedKeys(path, raw)) }));
    case "invalid_union":
      if (issue.discriminator !== undefined && "options" in issue && issue.options !== undefined) {
        const known = issue.options.map(String).join(", ");
        const name = issue.discriminator;
        if (value === undefined) return [{ path, message: `required; ${name}s are: ${known}` }];
        return [{ path, message: `unknown ${name} ${describeValue(value, false)}; ${name}s are: ${known}` }];
      }
      return [{ path, message: `does not match any allowed form${got()}` }];
    case "invalid_value":
      if (issue.values.length === 1) return [{ path, message: `must be ${JSON.stringify(issue.values[0])}${got()}` }];
      return [{ path, message: `must be one of: ${issue.values.map(String).join(", ")}${got()}` }];
    case "invalid_format":
      if (issue.format === "url") return [{ path, message: `not a valid ${path[0] === "idp" ? "https" : "http or https"} URL${got()}` }];
      return [{ path, message: `not a valid ${issue.format}${got()}` }];
    case "too_small":
      return [{ path, message: boundMessage("at least", "more than", issue.origin, issue.minimum, issue.inclusive) }];
    case "too_big":
      return [{ path, message: boundMessage("at most", "less than", issue.origin, issue.maximum, issue.inclusive) }];
    case "invalid_key": {
      const why = issue.issues.map((i) => (i.code === "too_small" ? "it must not be empty" : i.message)).join("; ");
      return [{ path, message: `invalid key: ${why}` }];
    }
    default:
      return [{ path, message: issue.message }];
  }
}

function boundMessage(
  inclusiveWord: string,
  exclusiveWord: string,
  origin: string,
  bound: number | bigint,
  inclusive = true,
): string {
  const word = inclusive ? inclusiveWord : exclusiveWord;
  if (origin === "string") {
    if (bound === 1 && inclusive && inclusiveWord === "at least") return "must not be empty";
    return `must be ${word} ${bound} characters long`;
  }
  if (origin === "array") return `must have ${word} ${bound} ${bound === 1 ? "entry" : "entries"}`;
  return `must be ${word} ${bound}`;
}

function describeExpected(expected: string): string {
  switch (expected) {
    case "string":
      return "a string";
    case "number":
      return "a number";
    case "int":
      return "a whole number";
    case "boolean":
      return "true or false";
    case "object":
    case "record":
      return "a mapping (key: value)";
    case "array":
      return "a list";
    default:
      return expected;
  }
}

/** The value as shown in a message; a secret's value is never shown, only its type. */
function describeValue(value: unknown, secret: boolean): string {
  if (value === null) return "an empty value";
  if (Array.isArray(value)) return "a list";
  switch (typeof value) {
    case "string":
      if (secret) return "a string";
      // A URL's `user:password@` is a secret even where the URL itself is not.
      return JSON.stringify(shorten(redactUrlsInText(value)));
    case "number":
      return secret ? "a number" : String(value);
    case "boolean":
      return secret ? "true or false" : String(value);
    case "object":
      return "a mapping";
    default:
      return typeof value;
  }
}

function shorten(text: string): string {
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function isSecretPath(path: Path): boolean {
  return SECRET_FIELDS.some((s) => toPointer(path) === toPointer([...s.parent, s.key]));
}

function unknownKeyMessage(key: string, allowed: readonly string[] | undefined): string {
  if (allowed === undefined || allowed.length === 0) return "unknown key";
  const close = allowed.find((a) => a.toLowerCase() === key.toLowerCase() || editDistance(a, key) <= 2);
  if (close !== undefined) return `unknown key; did you mean "${close}"?`;
  return `unknown key; allowed here: ${[...allowed].sort().join(", ")}`;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** The keys the schema allows in the object at `path` (for "did you mean"). */
function allowedKeys(path: Path, raw: unknown): string[] | undefined {
  interface Def {
    type: string;
    innerType?: Schema;
    in?: Schema;
    shape?: Record<string, Schema>;
    element?: Schema;
    valueType?: Schema;
    options?: Schema[];
    discriminator?: string;
    values?: unknown[];
  }
  interface Schema {
    _zod: { def: Def };
  }
  const walk = (schema: Schema | undefined, rest: Path, value: unknown): string[] | undefined => {
    if (schema === undefined) return undefined;
    const def = schema._zod.def;
    switch (def.type) {
      case "optional":
      case "default":
      case "prefault":
      case "nullable":
      case "readonly":
        return walk(def.innerType, rest, value);
      case "pipe":
        return walk(def.in, rest, value);
      case "object": {
        const [head, ...tail] = rest;
        if (head === undefined) return Object.keys(def.shape ?? {});
        return walk(def.shape?.[String(head)], tail, field(value, head));
      }
      case "array":
      case "record": {
        const [head, ...tail] = rest;
        if (head === undefined) return undefined;
        return walk(def.type === "array" ? def.element : def.valueType, tail, field(value, head));
      }
      case "union": {
        const disc = def.discriminator;
        if (disc === undefined) return undefined;
        const chosen = def.options?.find((o) => o._zod.def.shape?.[disc]?._zod.def.values?.includes(field(value, disc)));
        return walk(chosen, rest, value);
      }
      default:
        return undefined;
    }
  };
  return walk(configFileSchema, path, raw);
}

// ---------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------

function failed(errors: readonly ConfigError[]): ConfigResult {
  return { ok: false, errors };
}

function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === "" ? undefined : value;
}

/** The variable a value came from, when the error's pointer is at or below an overridden one. */
function envOrigin(pointer: string, fromEnv: ReadonlyMap<string, string>): string | undefined {
  for (const [at, variable] of fromEnv) if (pointer === at || pointer.startsWith(`${at}/`)) return variable;
  return undefined;
}

function isRecord(value: unknown): value is Raw {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function field(value: unknown, key: string | number): unknown {
  if (Array.isArray(value) && typeof key === "number") return value[key];
  return isRecord(value) ? value[String(key)] : undefined;
}

function getAt(value: unknown, path: Path): unknown {
  return path.reduce<unknown>((at, key) => field(at, key), value);
}

/** The object at `path`, creating missing levels; undefined when something else is in the way. */
function ensureRecord(raw: Raw, path: readonly string[]): Raw | undefined {
  let at: Raw = raw;
  for (const key of path) {
    const next = at[key];
    if (next === undefined) {
      const created: Raw = {};
      at[key] = created;
      at = created;
    } else if (isRecord(next)) {
      at = next;
    } else {
      return undefined;
    }
  }
  return at;
}

function toPointer(path: Path): string {
  return path.map((p) => `/${String(p).replaceAll("~", "~0").replaceAll("/", "~1")}`).join("");
}

/** The line where the value at `path` (or its nearest written ancestor) is. */
function lineOf(doc: Document, lineCounter: LineCounter, path: Path): number | undefined {
  for (let n = path.length; n > 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node?.range !== undefined) return lineCounter.linePos(node.range[0]).line;
  }
  return undefined;
}

function sortByPosition(errors: ConfigError[]): ConfigError[] {
  return errors
    .map((error, index) => ({ error, index }))
    .sort((a, b) => (a.error.line ?? Infinity) - (b.error.line ?? Infinity) || a.index - b.index)
    .map(({ error }) => error);
}

