/**
 * Commands are data: each command is a `CommandSpec` (name, typed parameters, flags, who may
 * run it, and `run`), all of them registered in one `CommandTable`. The parser
 * (`parse.ts`) and the help text (`help.ts`) are generated from the table, so usage lines
 * and help cannot drift from what the parser accepts.
 *
 * Nothing here does I/O. Permission is declared here but checked by the caller, which knows
 * who sent the message and where.
 */
import type { RoomAlias, RoomId, UserId } from "../matrix/ids.ts";

/**
 * How a parameter's text is decoded (parse.ts):
 * - `room`: `!id[:server]`, `#alias:server`, a matrix.to link or a `matrix:` URI → `RoomRef`
 * - `user`: `@user:server`, a matrix.to link, a `matrix:u/` URI or a pill → `UserId`
 * - `string`: any token (quote it to include spaces)
 * - `int`: a non-negative safe integer → `number`
 * - `duration`: `7d`, `12h`, `30m`, `90s`, `2w` (combinable: `1h30m`), an ISO 8601 date or
 *   date-time, or `never` → `Duration`
 */
export type ParamKind = "room" | "user" | "string" | "int" | "duration";

export interface ParamSpec {
  readonly name: string;
  readonly kind: ParamKind;
  readonly description: string;
  /** Optional parameters may only be followed by optional parameters. */
  readonly optional?: boolean;
  /** Last parameter only: one or more values (zero or more when also optional). */
  readonly variadic?: boolean;
}

export interface FlagSpec {
  /** `"dry"` is written `--dry`. Lowercase letters, digits and `-`. */
  readonly name: string;
  readonly description: string;
  /** Flags are switches; valued flags (`--since 7d`) are not supported. */
  readonly takesValue?: false;
  /**
   * Also given as the bare word (`!sync dry`, the inviterbot's form), unquoted and where no
   * parameter could take it. Only for flags whose name no parameter value could be.
   */
  readonly word?: true;
  /** Other names it is given by (`--dry-run` for `--dry`: the CLI's spelling). */
  readonly aliases?: readonly string[];
}

export interface CommandSpec<Ctx, Result> {
  /** Lowercase words; a space separates sub-commands (`"token list"`). */
  readonly name: string;
  /** Other names it answers to (the bots operators come from: `inviter` for help, `token generate`). */
  readonly aliases?: readonly string[];
  /** One line, shown in the command list. */
  readonly summary: string;
  /** Longer text for `help <command>`; the summary is shown when absent. */
  readonly description?: string;
  readonly params: readonly ParamSpec[];
  readonly flags?: readonly FlagSpec[];
  /**
   * Who may run it. Checked by the caller, not by the parser: `operator` needs the command
   * allow list; `anyone-in-room` anyone in the room; `token-users` the token allow list (or
   * an operator), which the token commands check themselves.
   */
  readonly permission: Permission;
  run(ctx: Ctx, args: ParsedArgs): Promise<Result>;
}

export type Permission = "operator" | "anyone-in-room" | "token-users";

export type RoomRef =
  | { kind: "id"; roomId: RoomId; via: string[] }
  | { kind: "alias"; alias: RoomAlias; via: string[] };

/**
 * An expiry. `absolute` comes from an ISO date (midnight UTC) or date-time (UTC unless it
 * has an offset). The parser reads no clock: whether an absolute date lies in the past is
 * for the caller to check against its `Clock`.
 */
export type Duration = { kind: "never" } | { kind: "relative"; ms: number } | { kind: "absolute"; at: Date };

export type ArgValue = string | number | UserId | RoomRef | Duration;

export interface ParsedArgs {
  /**
   * One entry per declared parameter: the decoded value, `undefined` for an absent optional
   * parameter, and an array (possibly empty when optional) for a variadic one.
   */
  values: Record<string, string | number | UserId | RoomRef | Duration | (string | number | UserId | RoomRef | Duration)[] | undefined>;
  /** One entry per declared flag: whether it was given. */
  flags: Record<string, boolean>;
}

/** Identity; lets TypeScript infer `Ctx` and the result type at the definition site. */
export function defineCommand<Ctx, R>(spec: CommandSpec<Ctx, R>): CommandSpec<Ctx, R> {
  return spec;
}

const COMMAND_NAME = /^[a-z][a-z0-9-]*(?: [a-z][a-z0-9-]*)*$/;
const PARAM_NAME = /^[A-Za-z][A-Za-z0-9_-]*$/;
const FLAG_NAME = /^[a-z0-9][a-z0-9-]*$/;

/** Any command spec, whatever its context and result (what the parser and help need). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the table is read-only over its commands' run
export type AnySpec = CommandSpec<any, unknown>;

/** The result of matching the leading words of a message against the table. */
export interface CommandMatch<C> {
  readonly command: C;
  /** How many of the given words the command name used. */
  readonly wordCount: number;
}

/**
 * All commands, validated once at start-up. Construction throws on programmer errors:
 * duplicate or malformed names, duplicate parameter or flag names, a variadic parameter
 * that is not last, a required parameter after an optional one (the positional assignment
 * would be ambiguous), an empty summary.
 */
export class CommandTable<C extends AnySpec> {
  readonly #byName = new Map<string, C>();
  readonly #commands: readonly C[];
  readonly #maxWords: number;

  constructor(commands: readonly C[]) {
    let maxWords = 0;
    for (const command of commands) {
      validate(command);
      for (const name of [command.name, ...(command.aliases ?? [])]) {
        if (!COMMAND_NAME.test(name)) throw new Error(`command table: malformed alias '${name}' of '${command.name}'`);
        if (this.#byName.has(name)) throw new Error(`command table: duplicate command name '${name}'`);
        this.#byName.set(name, command);
        maxWords = Math.max(maxWords, name.split(" ").length);
      }
    }
    this.#commands = [...commands];
    this.#maxWords = maxWords;
  }

  /** Commands in registration order. */
  get commands(): readonly C[] {
    return this.#commands;
  }

  /** The largest number of words in a command name. */
  get maxWords(): number {
    return this.#maxWords;
  }

  /** Exact lookup; case and runs of whitespace are ignored (`"Token  List"` finds `token list`). */
  find(name: string): C | undefined {
    return this.#byName.get(normalizeName(name));
  }

  /**
   * The command whose name is the longest prefix of `words` (`["token", "list", "x"]` →
   * `token list` rather than `token`), compared case-insensitively.
   */
  match(words: readonly string[]): CommandMatch<C> | undefined {
    const lower = words.slice(0, this.#maxWords).map((w) => w.toLowerCase());
    for (let n = lower.length; n > 0; n--) {
      const command = this.#byName.get(lower.slice(0, n).join(" "));
      if (command !== undefined) return { command, wordCount: n };
    }
    return undefined;
  }

  /** All names, sorted. */
  names(): string[] {
    return [...this.#byName.keys()].sort();
  }

  /**
   * The nearest command name to what was typed (`["snyc"]` → `sync`), by edit distance
   * (adjacent transpositions count once), only when it is close: at most one edit for names
   * up to five characters, two for longer ones. Each name is compared with as many typed
   * words as it has; with `moreWordsThan`, only names of more words than that are considered
   * (`token lsit` where a `token` command exists → `token list`).
   */
  suggest(words: readonly string[], moreWordsThan = 0): { name: string; typed: string } | undefined {
    let best: { name: string; typed: string; distance: number } | undefined;
    for (const name of this.names()) {
      const count = name.split(" ").length;
      if (words.length < count || count <= moreWordsThan) continue;
      const typed = words.slice(0, count).join(" ");
      if (typed.length > 64) continue;
      const limit = name.length <= 5 ? 1 : 2;
      const distance = editDistance(typed.toLowerCase(), name, limit);
      if (distance <= limit && (best === undefined || distance < best.distance)) best = { name, typed, distance };
    }
    return best === undefined ? undefined : { name: best.name, typed: best.typed };
  }
}

function normalizeName(name: string): string {
  return name.trim().toLowerCase().split(/\s+/).join(" ");
}

function validate(command: AnySpec): void {
  const where = `command table: '${command.name}'`;
  if (!COMMAND_NAME.test(command.name)) {
    throw new Error(`${where}: a name is lowercase words of letters, digits and '-', separated by single spaces`);
  }
  if (command.summary.trim() === "") throw new Error(`${where}: empty summary`);
  const params = new Set<string>();
  let sawOptional = false;
  command.params.forEach((param, i) => {
    if (!PARAM_NAME.test(param.name)) throw new Error(`${where}: bad parameter name '${param.name}'`);
    if (params.has(param.name)) throw new Error(`${where}: duplicate parameter '${param.name}'`);
    params.add(param.name);
    if (param.variadic === true && i !== command.params.length - 1) {
      throw new Error(`${where}: variadic parameter '${param.name}' must be the last one`);
    }
    if (param.optional === true) sawOptional = true;
    else if (sawOptional) throw new Error(`${where}: required parameter '${param.name}' follows an optional one`);
  });
  const flags = new Set<string>();
  for (const flag of command.flags ?? []) {
    if (!FLAG_NAME.test(flag.name)) throw new Error(`${where}: bad flag name '${flag.name}'`);
    if (flags.has(flag.name)) throw new Error(`${where}: duplicate flag '--${flag.name}'`);
    flags.add(flag.name);
  }
}

/**
 * Optimal string alignment distance (Levenshtein plus adjacent transpositions), giving up
 * with `limit + 1` once every alignment exceeds `limit`.
 */
export function editDistance(a: string, b: string, limit = Number.POSITIVE_INFINITY): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let prevPrev: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, (prevPrev[j - 2] ?? 0) + 1);
      row.push(d);
      rowMin = Math.min(rowMin, d);
    }
    if (rowMin > limit) return limit + 1;
    prevPrev = prev;
    prev = row;
  }
  return prev[b.length] ?? 0;
}

/** The TypeScript type each parameter kind decodes to. */
export interface ArgTypes {
  room: RoomRef;
  user: UserId;
  string: string;
  int: number;
  duration: Duration;
}

function isKind<K extends ParamKind>(value: ArgValue, kind: K): value is ArgTypes[K] {
  switch (kind) {
    case "room":
      return typeof value === "object" && "kind" in value && (value.kind === "id" || value.kind === "alias");
    case "duration":
      return typeof value === "object" && "kind" in value && (value.kind === "never" || value.kind === "relative" || value.kind === "absolute");
    case "int":
      return typeof value === "number";
    case "user":
      return typeof value === "string" && value.startsWith("@");
    case "string":
      return typeof value === "string";
  }
  return false;
}

/**
 * Typed access to a decoded argument inside `run`: `argOf(args, "room", "room")` is a
 * `RoomRef | undefined`. A value of another kind than asked for is a programmer error (the
 * spec and the `run` disagree) and throws.
 */
export function argOf<K extends ParamKind>(args: ParsedArgs, name: string, kind: K): ArgTypes[K] | undefined {
  const value = args.values[name];
  if (value === undefined) return undefined;
  if (Array.isArray(value)) throw new TypeError(`argument '${name}' is variadic; use argsOf`);
  if (!isKind(value, kind)) throw new TypeError(`argument '${name}' is not a ${kind}`);
  return value;
}

/** Typed access to a variadic argument (a single value is returned as a one-element list). */
export function argsOf<K extends ParamKind>(args: ParsedArgs, name: string, kind: K): ArgTypes[K][] {
  const value = args.values[name];
  if (value === undefined) return [];
  const list = Array.isArray(value) ? value : [value];
  return list.map((v) => {
    if (!isKind(v, kind)) throw new TypeError(`argument '${name}' is not a list of ${kind}`);
    return v;
  });
}
