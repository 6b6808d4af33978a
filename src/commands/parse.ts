/**
 * Command text → a command and decoded arguments, or a reason it is not one. Pure and total:
 * every function here returns a value for any input and never throws.
 *
 * How a message is read (`parseCommandLine`):
 * - A reply fallback (leading lines starting with `>` followed by a blank line) is dropped;
 *   then leading whitespace. The rest must start with the prefix (default `!`), else it is
 *   not a command. When the prefix ends with a letter or digit (`!gs`), it must be followed
 *   by whitespace (`!gsfoo` is not a command); any other prefix (`!`) directly by the
 *   command name (`! sync` is not a command).
 * - The whole body counts; newlines are whitespace like any other (a command may be wrapped
 *   over several lines).
 * - The first word after the prefix must start with a letter (`!!`, `!1` and a lone `!` are
 *   exclamations, not commands). Command names are matched case-insensitively and the
 *   longest name wins (`token list` over `token`).
 * - Then flags and positional arguments, in any order: `--name` (also `—name`, as phones
 *   autocorrect `--`) is a flag unless quoted; `--` ends the flags.
 * - Bodies over `MAX_COMMAND_LENGTH` characters are a usage error ("command too long") once
 *   the command is known.
 */
import { parseRoomAlias, parseRoomId, parseUserId, type UserId } from "../matrix/ids.ts";
import type { Result } from "../result.ts";
import { usageLine } from "./help.ts";
import { editDistance, type ArgValue, type AnySpec, type CommandMatch, type CommandTable, type Duration, type FlagSpec, type ParamSpec, type ParsedArgs, type RoomRef } from "./spec.ts";

/** Longest command text accepted, in UTF-16 code units, after any reply fallback. */
export const MAX_COMMAND_LENGTH = 10_000;
/** A formatted body longer than this is not searched for pills. */
const MAX_FORMATTED_LENGTH = 100_000;
/** At most this many pills are honoured. */
const MAX_PILLS = 100;
/** Relative durations up to 100 years; beyond that, `never` is meant. */
const MAX_RELATIVE_MS = 100 * 365 * 24 * 3600 * 1000;

export type ParseResult<C extends AnySpec> =
  | { kind: "not-a-command" }
  | { kind: "ok"; command: C; args: ParsedArgs }
  | { kind: "usage-error"; command: C; message: string; usage: string }
  | { kind: "unknown"; name: string; suggestion?: string };

export interface ParseOptions {
  /** What starts a command; default `!`. */
  prefix?: string;
  /**
   * The event's `formatted_body`, when its `format` is `org.matrix.custom.html`. Pills in it
   * (`<a href="https://matrix.to/#/@alice:example.org">Alice</a>`) turn their display text
   * in the body back into the id (for rooms, into the link, keeping its `via`).
   */
  formattedBody?: string;
}

// ---------------------------------------------------------------------------------------
// Tokenizer

interface Token {
  readonly text: string;
  /** Started with a quote: never a flag, never `--`. */
  readonly quoted: boolean;
}

const CLOSING_QUOTE: Readonly<Record<string, string>> = { '"': '"', "'": "'", "\u201C": "\u201D" };

function isSpace(c: string): boolean {
  return /\s/.test(c);
}

function tokenizeDetailed(text: string): { ok: true; tokens: Token[] } | { ok: false; error: string } {
  const tokens: Token[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    while (i < n && isSpace(text.charAt(i))) i++;
    if (i >= n) break;
    const first = text.charAt(i);
    const close = CLOSING_QUOTE[first];
    let value = "";
    let quoted = false;
    if (close !== undefined) {
      quoted = true;
      const start = i;
      i++;
      let closed = false;
      while (i < n) {
        const c = text.charAt(i);
        if (c === close) {
          closed = true;
          i++;
          break;
        }
        if (c === "\\" && first === '"' && i + 1 < n && (text.charAt(i + 1) === '"' || text.charAt(i + 1) === "\\")) {
          value += text.charAt(i + 1);
          i += 2;
          continue;
        }
        value += c;
        i++;
      }
      if (!closed) {
        const kind = first === "'" ? "single" : "double";
        return { ok: false, error: `unterminated ${kind} quote (opened at character ${start + 1} of the arguments)` };
      }
    }
    // Unquoted text, or text right after a closing quote (`"a b"c` is one token `a bc`).
    // Quotes inside a word are ordinary characters (`don't`).
    while (i < n && !isSpace(text.charAt(i))) {
      value += text.charAt(i);
      i++;
    }
    tokens.push({ text: value, quoted });
  }
  return { ok: true, tokens };
}

/**
 * Splits text into whitespace-separated tokens. A token that starts with a quote (`"`, `'`,
 * or the typographic `“…”` phones produce) runs to the matching closing quote and may
 * contain whitespace; inside double quotes `\"` and `\\` are escapes (any other backslash is
 * kept). Quotes inside a word are ordinary characters (`don't`). Text right after a closing
 * quote continues the token. An unterminated quote is an error. Never throws.
 */
export function tokenize(text: string): { ok: true; tokens: string[] } | { ok: false; error: string } {
  if (typeof text !== "string") return { ok: false, error: "not text" };
  const result = tokenizeDetailed(text);
  return result.ok ? { ok: true, tokens: result.tokens.map((t) => t.text) } : result;
}

// ---------------------------------------------------------------------------------------
// Argument decoding

/** Quotes user text for an error message, shortened. */
function shown(raw: string): string {
  const chars = Array.from(raw);
  return `'${chars.length > 60 ? `${chars.slice(0, 60).join("")}…` : raw}'`;
}

function isServerName(s: string): boolean {
  // ids.ts keeps its server-name grammar private; a user id built on it checks the same thing.
  return parseUserId(`@x:${s}`) !== undefined;
}

function safeDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

interface LinkTarget {
  /** The decoded identifier with its sigil: `@user:server`, `!id:server`, `#alias:server`. */
  readonly id: string;
  readonly via: string[];
}

/** Parses a query string's `via` values; undefined when malformed. */
function viaOf(query: string): string[] | undefined {
  const via: string[] = [];
  for (const pair of query.split("&")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    const key = safeDecode(eq < 0 ? pair : pair.slice(0, eq));
    const value = safeDecode(eq < 0 ? "" : pair.slice(eq + 1));
    if (key === undefined || value === undefined) return undefined;
    if (key === "via") via.push(value);
  }
  return via;
}

const MATRIX_TO = /^https?:\/\/matrix\.to\/#\//i;
const MATRIX_URI = /^matrix:/i;
const MATRIX_URI_SIGILS: Readonly<Record<string, string>> = { u: "@", r: "#", roomid: "!" };

/**
 * The target of a matrix.to link (`https://matrix.to/#/<id>[/<event>][?via=…]`, the id
 * percent-encoded or not) or an MSC2312 URI (`matrix:u/…`, `matrix:r/…`,
 * `matrix:roomid/…[/e/<event>][?via=…]`). An event part is ignored: a link to a message
 * names its room. Undefined when the text is not such a link or is malformed.
 */
function linkTarget(raw: string): LinkTarget | undefined {
  if (MATRIX_TO.test(raw)) {
    const rest = raw.replace(MATRIX_TO, "");
    const q = rest.indexOf("?");
    const path = q < 0 ? rest : rest.slice(0, q);
    const via = viaOf(q < 0 ? "" : rest.slice(q + 1));
    if (via === undefined) return undefined;
    // A user id may contain '/', so only a '/' before an event id ('$', encoded or not) splits.
    const event = path.search(/\/(?:\$|%24)/i);
    const id = safeDecode(event < 0 ? path : path.slice(0, event));
    return id === undefined ? undefined : { id, via };
  }
  if (MATRIX_URI.test(raw)) {
    const rest = raw.slice("matrix:".length);
    const q = rest.indexOf("?");
    const segments = (q < 0 ? rest : rest.slice(0, q)).split("/");
    const via = viaOf(q < 0 ? "" : rest.slice(q + 1));
    const [type, encoded, ...more] = segments;
    const sigil = type === undefined ? undefined : MATRIX_URI_SIGILS[type.toLowerCase()];
    if (via === undefined || sigil === undefined || encoded === undefined || encoded === "") return undefined;
    if (!(more.length === 0 || (sigil !== "@" && more.length === 2 && more[0]?.toLowerCase() === "e"))) return undefined;
    const id = safeDecode(encoded);
    return id === undefined ? undefined : { id: sigil + id, via };
  }
  return undefined;
}

/**
 * A user: `@name:server`, `https://matrix.to/#/@name:server` (percent-encoded or not, any
 * query ignored) or `matrix:u/name:server`, validated by `parseUserId`.
 */
export function decodeUser(raw: string): Result<UserId, string> {
  const target = linkTarget(raw);
  const user = parseUserId(target === undefined ? raw : target.id);
  if (user !== undefined) return { ok: true, value: user };
  return { ok: false, error: `${shown(raw)} is not a user id (@name:server) or matrix.to link` };
}

/**
 * A room: `!id` / `!id:server`, `#alias:server`, a matrix.to link to either (with `via`
 * query parameters) or a `matrix:roomid/…` / `matrix:r/…` URI. `via` values must be server
 * names.
 */
export function decodeRoom(raw: string): Result<RoomRef, string> {
  const target = linkTarget(raw) ?? { id: raw, via: [] };
  const bad = target.via.find((v) => !isServerName(v));
  if (bad !== undefined) return { ok: false, error: `${shown(raw)} has a via parameter that is not a server name: ${shown(bad)}` };
  const roomId = parseRoomId(target.id);
  if (roomId !== undefined) return { ok: true, value: { kind: "id", roomId, via: target.via } };
  const alias = parseRoomAlias(target.id);
  if (alias !== undefined) return { ok: true, value: { kind: "alias", alias, via: target.via } };
  if (parseUserId(target.id) !== undefined) return { ok: false, error: `${shown(raw)} is a user, not a room` };
  return { ok: false, error: `${shown(raw)} is not a room id, alias or matrix.to link` };
}

/** A non-negative safe integer, in ASCII digits. */
export function decodeInt(raw: string): Result<number, string> {
  if (!/^[0-9]+$/.test(raw)) return { ok: false, error: `${shown(raw)} is not a whole number (0 or more)` };
  const value = Number(raw);
  if (!Number.isSafeInteger(value)) return { ok: false, error: `${shown(raw)} is too large` };
  return { ok: true, value };
}

const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const RELATIVE = /^(?:[0-9]{1,12}[smhdw])+$/i;
const ISO = /^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[Tt]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?$/;

function absolute(raw: string): Date | undefined {
  const m = ISO.exec(raw);
  if (m === null) return undefined;
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((v) => Number(v ?? "0")) as [number, number, number, number, number, number];
  const ms = Number(((m[7] ?? "") + "000").slice(0, 3));
  const daysInMonth = [31, isLeap(year) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1] ?? 0;
  if (day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59) return undefined;
  let offsetMinutes = 0;
  const zone = m[8];
  if (zone !== undefined && zone.toUpperCase() !== "Z") {
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(4, 6));
    if (oh > 23 || om > 59) return undefined;
    offsetMinutes = (zone.startsWith("-") ? -1 : 1) * (oh * 60 + om);
  }
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute - offsetMinutes, second, ms);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

function isLeap(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

/**
 * `never`; a positive relative duration `7d`, `12h`, `30m`, `90s`, `2w` or a combination
 * (`1d12h`), at most 100 years; or an ISO 8601 date (`2025-12-31`, midnight UTC) or date-time
 * (`2025-12-31T18:00`, UTC unless an offset like `+01:00` or `Z` is given).
 */
export function decodeDuration(raw: string): Result<Duration, string> {
  if (raw.toLowerCase() === "never") return { ok: true, value: { kind: "never" } };
  if (RELATIVE.test(raw)) {
    let ms = 0;
    for (const m of raw.matchAll(/([0-9]+)([smhdw])/gi)) {
      ms += Number(m[1]) * (UNIT_MS[(m[2] ?? "").toLowerCase()] ?? Number.NaN);
    }
    if (!(ms > 0)) return { ok: false, error: `${shown(raw)} must be longer than zero` };
    if (ms > MAX_RELATIVE_MS) return { ok: false, error: `${shown(raw)} is too long (at most 100 years; use never)` };
    return { ok: true, value: { kind: "relative", ms } };
  }
  const at = absolute(raw);
  if (at !== undefined) return { ok: true, value: { kind: "absolute", at } };
  if (/^-/.test(raw)) return { ok: false, error: `${shown(raw)} must be longer than zero` };
  return { ok: false, error: `${shown(raw)} is not a duration (like 7d, 12h, 30m, 90s, 2w, 2025-12-31 or never)` };
}

function decodeArg(param: ParamSpec, raw: string): Result<ArgValue, string> {
  switch (param.kind) {
    case "room":
      return decodeRoom(raw);
    case "user":
      return decodeUser(raw);
    case "int":
      return decodeInt(raw);
    case "duration":
      return decodeDuration(raw);
    case "string":
      return { ok: true, value: raw };
  }
}

// ---------------------------------------------------------------------------------------
// Pills

interface Pill {
  /** The display text in the body. */
  readonly text: string;
  /** What replaces it: the user id, or the room link. */
  readonly replacement: string;
}

const NAMED_ENTITIES: Readonly<Record<string, string>> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00A0" };

function decodeEntities(html: string): string {
  return html.replace(/&(#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|[a-zA-Z]{2,8});/g, (whole, entity: string) => {
    if (entity.startsWith("#")) {
      const cp = entity[1] === "x" || entity[1] === "X" ? parseInt(entity.slice(2), 16) : parseInt(entity.slice(1), 10);
      return cp > 0 && cp <= 0x10ffff ? String.fromCodePoint(cp) : whole;
    }
    return NAMED_ENTITIES[entity.toLowerCase()] ?? whole;
  });
}

/** Removes tags, linearly (a regex would backtrack on `<<<<…`). */
function stripTags(html: string): string {
  let out = "";
  let i = 0;
  while (i < html.length) {
    const lt = html.indexOf("<", i);
    if (lt < 0) return out + html.slice(i);
    const gt = html.indexOf(">", lt);
    if (gt < 0) return out + html.slice(i);
    out += html.slice(i, lt);
    i = gt + 1;
  }
  return out;
}

/** The pills of a formatted body, in document order, outside any reply fallback. */
function pillsOf(formattedBody: string): Pill[] {
  if (formattedBody.length > MAX_FORMATTED_LENGTH) return [];
  let html = formattedBody;
  const replyStart = html.toLowerCase().indexOf("<mx-reply");
  if (replyStart >= 0) {
    const replyEnd = html.toLowerCase().indexOf("</mx-reply>", replyStart);
    html = replyEnd < 0 ? html.slice(0, replyStart) : html.slice(0, replyStart) + html.slice(replyEnd + "</mx-reply>".length);
  }
  const lowered = html.toLowerCase();
  const pills: Pill[] = [];
  let i = 0;
  while (pills.length < MAX_PILLS) {
    const start = lowered.indexOf("<a", i);
    if (start < 0) break;
    const after = lowered.charAt(start + 2);
    if (!isSpace(after)) {
      i = start + 2;
      continue;
    }
    const gt = html.indexOf(">", start);
    if (gt < 0) break;
    const end = lowered.indexOf("</a", gt);
    if (end < 0) break;
    i = end + 3;
    const href = /\shref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))/i.exec(html.slice(start, gt));
    const target = decodeEntities(href?.[1] ?? href?.[2] ?? href?.[3] ?? "").trim();
    const text = decodeEntities(stripTags(html.slice(gt + 1, end))).trim();
    if (text === "" || target === "" || linkTarget(target) === undefined) continue;
    const user = decodeUser(target);
    if (user.ok) {
      if (text !== user.value) pills.push({ text, replacement: user.value });
      continue;
    }
    // A room pill becomes its link, which keeps any via; only when it is one safe token.
    if (decodeRoom(target).ok && /^[^\s"'\u201C]\S*$/.test(target) && text !== target) pills.push({ text, replacement: target });
  }
  return pills;
}

/**
 * Each pill's display text, found in order at word boundaries in `text`, becomes its id.
 * A pill whose text is not found (edited, or inside other text) is left alone.
 */
function replacePills(text: string, pills: readonly Pill[]): string {
  let out = text;
  let cursor = 0;
  for (const pill of pills) {
    let at = out.indexOf(pill.text, cursor);
    while (at >= 0) {
      const before = at === 0 ? " " : out.charAt(at - 1);
      const next = at + pill.text.length;
      const after = next >= out.length ? " " : out.charAt(next);
      if (isSpace(before) && isSpace(after)) break;
      at = out.indexOf(pill.text, at + 1);
    }
    if (at < 0) continue;
    out = out.slice(0, at) + pill.replacement + out.slice(at + pill.text.length);
    cursor = at + pill.replacement.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Command lines

/** Drops a reply fallback: leading `>` lines and the blank line after them. */
function stripReplyFallback(body: string): string {
  if (!body.startsWith(">")) return body;
  const match = /^(?:>[^\n]*\n)+\n/.exec(body);
  return match === null ? body : body.slice(match[0].length);
}

interface Word {
  readonly word: string;
  /** Offset just after the word. */
  readonly end: number;
}

/** The first `count` whitespace-separated words of `text`, with where each ends. */
function leadingWords(text: string, count: number): Word[] {
  const words: Word[] = [];
  const re = /\s*(\S+)/y;
  while (words.length < count) {
    const m = re.exec(text);
    if (m === null) break;
    words.push({ word: m[1] ?? "", end: re.lastIndex });
  }
  return words;
}

function truncateName(name: string): string {
  const chars = Array.from(name.slice(0, 202));
  return chars.length > 100 ? `${chars.slice(0, 100).join("")}…` : name;
}

const FLAG_START = /^(?:--|\u2014|\u2013)/;

/**
 * Parses a message body against the table. See the module comment for the rules. The
 * `usage` of a usage error is `usageLine(command, prefix)`; an unknown command carries the
 * nearest name when one is close (`!snyc` → `sync`). Never throws.
 */
export function parseCommandLine<C extends AnySpec>(table: CommandTable<C>, body: string, opts: ParseOptions = {}): ParseResult<C> {
  const prefix = opts.prefix ?? "!";
  if (typeof body !== "string" || typeof prefix !== "string") return { kind: "not-a-command" };
  const text = stripReplyFallback(body).trimStart();
  if (!text.startsWith(prefix)) return { kind: "not-a-command" };
  const afterPrefix = text.slice(prefix.length);
  // A word prefix (`!gs`) is followed by whitespace; a symbol prefix (`!`) directly by the name.
  const wordPrefix = /[\p{L}\p{N}]$/u.test(prefix);
  if (afterPrefix !== "" && wordPrefix !== isSpace(afterPrefix.charAt(0))) return { kind: "not-a-command" };

  const words = leadingWords(afterPrefix, Math.max(table.maxWords, 1));
  const first = words[0];
  if (first === undefined || !/^\p{L}/u.test(first.word)) return { kind: "not-a-command" };
  const match = table.match(words.map((w) => w.word));
  if (match === undefined) {
    const suggestion = table.suggest(words.map((w) => w.word));
    return suggestion === undefined
      ? { kind: "unknown", name: truncateName(first.word) }
      : { kind: "unknown", name: truncateName(suggestion.typed), suggestion: suggestion.name };
  }
  const command = match.command;
  const usageError = (message: string): ParseResult<C> => ({ kind: "usage-error", command, message, usage: usageLine(command, prefix) });
  if (text.length > MAX_COMMAND_LENGTH) {
    return usageError(`command too long: ${text.length} characters (at most ${MAX_COMMAND_LENGTH})`);
  }

  let argText = afterPrefix.slice(words[match.wordCount - 1]?.end ?? 0);
  if (typeof opts.formattedBody === "string" && opts.formattedBody !== "") {
    argText = replacePills(argText, pillsOf(opts.formattedBody));
  }
  const tokenized = tokenizeDetailed(argText);
  if (!tokenized.ok) return usageError(tokenized.error);
  return bindArgs(table, match, words.map((w) => w.word), tokenized.tokens, prefix, false);
}

export interface ArgvOptions {
  /** How commands are written in usage lines (`matrix-group-sync `). */
  prefix: string;
}

/**
 * Command-line words (argv, already split by the shell) → a command and decoded arguments,
 * by the same table and rules as a message, plus one the terminal expects: any parameter
 * may also be given by name, `--room X` or `--room=X` (repeated for a variadic one). Never
 * throws.
 */
export function parseCommandArgv<C extends AnySpec>(table: CommandTable<C>, argv: readonly string[], opts: ArgvOptions): ParseResult<C> {
  const first = argv[0];
  if (first === undefined || !/^\p{L}/u.test(first)) return { kind: "not-a-command" };
  const words = argv.slice(0, Math.max(table.maxWords, 1));
  const match = table.match(words);
  if (match === undefined) {
    const suggestion = table.suggest(words);
    return suggestion === undefined
      ? { kind: "unknown", name: truncateName(first) }
      : { kind: "unknown", name: truncateName(suggestion.typed), suggestion: suggestion.name };
  }
  const tokens = argv.slice(match.wordCount).map((text) => ({ text: clean(text), quoted: false }));
  return bindArgs(table, match, words, tokens, opts.prefix, true);
}

/** Control characters never reach a command from the terminal either. */
function clean(text: string): string {
  // eslint-disable-next-line no-control-regex -- removing control characters is the point
  return text.replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g, "");
}

function bindArgs<C extends AnySpec>(
  table: CommandTable<C>,
  match: CommandMatch<C>,
  words: readonly string[],
  tokens: readonly Token[],
  prefix: string,
  namedParams: boolean,
): ParseResult<C> {
  const command = match.command;
  const usageError = (message: string): ParseResult<C> => ({ kind: "usage-error", command, message, usage: usageLine(command, prefix) });
  const flagSpecs = command.flags ?? [];
  const flags: Record<string, boolean> = {};
  for (const f of flagSpecs) flags[f.name] = false;
  const positional: string[] = [];
  const named = new Map<string, string[]>();
  let flagsEnded = false;
  for (let t = 0; t < tokens.length; t++) {
    const token = tokens[t] as Token;
    if (flagsEnded || token.quoted) {
      positional.push(token.text);
      continue;
    }
    if (token.text === "--") {
      flagsEnded = true;
      continue;
    }
    const flagStart = FLAG_START.exec(token.text);
    if (flagStart === null) {
      const word = flagSpecs.find((f) => f.word === true && f.name === token.text.toLowerCase());
      if (word !== undefined) flags[word.name] = true;
      else positional.push(token.text);
      continue;
    }
    const flagText = token.text.slice(flagStart[0].length);
    if (flagText === "" && flagStart[0] !== "--") {
      positional.push(token.text); // a lone dash is punctuation, not a flag
      continue;
    }
    const eq = flagText.indexOf("=");
    const name = (eq < 0 ? flagText : flagText.slice(0, eq)).toLowerCase();
    const spec = flagSpecs.find((f) => f.name === name || (f.aliases ?? []).includes(name));
    if (spec === undefined) {
      const param = namedParams ? command.params.find((p) => p.name.toLowerCase() === name) : undefined;
      if (param !== undefined) {
        const value = eq >= 0 ? flagText.slice(eq + 1) : tokens[++t]?.text;
        if (value === undefined) return usageError(`--${param.name} needs a value: ${KIND_WORDS[param.kind]}`);
        const given = named.get(param.name) ?? [];
        if (given.length > 0 && param.variadic !== true) return usageError(`--${param.name} is given twice`);
        named.set(param.name, [...given, value]);
        continue;
      }
      const asText = command.params.some((p) => p.kind === "string") ? " (to pass it as text, quote it or put it after --)" : "";
      return usageError(unknownFlag(flagText, flagSpecs) + asText);
    }
    if (eq >= 0) return usageError(`flag --${spec.name} takes no value`);
    flags[spec.name] = true;
  }

  const values: ParsedArgs["values"] = {};
  let next = 0;
  for (const param of command.params) {
    const byName = named.get(param.name);
    if (param.variadic === true) {
      const rest = [...(byName ?? []), ...positional.slice(next)];
      next = positional.length;
      if (rest.length === 0 && param.optional !== true) return usageError(missing(param));
      const decoded: ArgValue[] = [];
      for (const raw of rest) {
        const value = decodeArg(param, raw);
        if (!value.ok) return usageError(`${param.name}: ${value.error}`);
        decoded.push(value.value);
      }
      values[param.name] = decoded;
      continue;
    }
    let raw = byName?.[0];
    if (raw === undefined) {
      raw = positional[next];
      if (raw !== undefined) next++;
    }
    if (raw === undefined) {
      if (param.optional !== true) return usageError(missing(param));
      values[param.name] = undefined;
      continue;
    }
    const value = decodeArg(param, raw);
    if (!value.ok) return usageError(`${param.name}: ${value.error}`);
    values[param.name] = value.value;
  }
  const extra = positional.slice(next);
  if (extra.length > 0) {
    const list = extra.slice(0, 3).map(shown).join(", ") + (extra.length > 3 ? `, … (${extra.length} in all)` : "");
    const longer = table.suggest(words, match.wordCount);
    const hint = longer === undefined ? "" : ` (did you mean ${prefix}${longer.name}?)`;
    return usageError(`unexpected argument${extra.length > 1 ? "s" : ""}: ${list}${hint}`);
  }
  return { kind: "ok", command, args: { values, flags } };
}

/** What a named parameter's value must be, for "needs a value". */
const KIND_WORDS: Readonly<Record<ParamSpec["kind"], string>> = {
  room: "a room id or alias",
  user: "a user id",
  string: "text",
  int: "a whole number",
  duration: "a duration like 7d or a date",
};

function missing(param: ParamSpec): string {
  return `missing ${param.name}${param.variadic === true ? " (at least one)" : ""}`;
}

function unknownFlag(flagText: string, flags: readonly FlagSpec[]): string {
  const name = flagText.split("=")[0] ?? "";
  const near = name.length <= 64 ? flags.find((f) => editDistanceAtMost(name.toLowerCase(), f.name, f.name.length <= 5 ? 1 : 2)) : undefined;
  const known = flags.length === 0 ? "this command has no flags" : `flags: ${flags.map((f) => `--${f.name}`).join(", ")}`;
  return `unknown flag ${shown(`--${name}`)}${near === undefined ? "" : ` (did you mean --${near.name}?)`}; ${known}`;
}

function editDistanceAtMost(a: string, b: string, limit: number): boolean {
  return editDistance(a, b, limit) <= limit;
}
