/**
 * The one command table's typed layer. A command is defined once (`command`): its words,
 * typed parameters and flags, who may run it, which surfaces offer it (the management room,
 * the CLI or both), the capabilities it uses, and an executor that returns an `Outcome`.
 * Each surface renders outcomes its own way: the room as HTML + plain text with a ✅ / ❌ on
 * the command, the terminal as text (tables aligned) or `--json`, with an exit code.
 *
 * The executor sees its arguments as the types its parameters declare (`args.room` is a
 * `RoomRef`, an optional one `RoomRef | undefined`), and only the capabilities it names in
 * `uses`: a command that only reads the store cannot start a run.
 */
import type { Config } from "../config/schema.ts";
import type { LoadedConfig } from "../config/load.ts";
import type { Clock } from "../clock.ts";
import type { MatrixGateway } from "../matrix/gateway.ts";
import type { RoomId, UserId } from "../matrix/ids.ts";
import type { DirectoryState } from "../reconcile/directory.ts";
import type { RunReport } from "../reconcile/report.ts";
import type { Result } from "../result.ts";
import type { Store } from "../store/store.ts";
import type { TokenService } from "../tokens/service.ts";
import type { RunRequest } from "../service/runner.ts";
import { blocks, clean, paragraph, type Inline, type Part } from "./render.ts";
import { argOf, argsOf, type ArgTypes, type CommandSpec, type CommandTable, type FlagSpec, type ParamKind, type ParsedArgs, type Permission, type RoomRef } from "./spec.ts";

export type Surface = "room" | "cli";

/**
 * How a command ended. `refused`: understood, but not done as asked (no such token, not a
 * managed room, not allowed). `failed`: tried, and something went wrong (a server refused, a
 * run had failures). `degraded`: a run finished without removals in some rooms. `usage`: an
 * argument the parser could not judge is not one the command takes (an unknown kind); the
 * surface adds the usage line.
 */
export type OutcomeStatus = "ok" | "refused" | "failed" | "degraded" | "usage";

export interface Outcome {
  readonly status: OutcomeStatus;
  /** What it says, for every surface (the terminal prints their plain text). */
  readonly parts: readonly Part[];
  /** The terminal's text when it differs from the parts' (a run report's own layout). */
  readonly text?: string;
  /** `--json`: the outcome as data. Absent: `{ status, message }` from the parts. */
  readonly data?: unknown;
}

export function done(parts: Part | readonly Part[], data?: unknown): Outcome {
  return { status: "ok", parts: Array.isArray(parts) ? parts : [parts as Part], ...(data !== undefined ? { data } : {}) };
}

/** Understood, not done: one paragraph saying why. */
export function refused(...content: Inline[]): Outcome {
  return { status: "refused", parts: [paragraph(...content)] };
}

/** An argument of the right type but not one the command takes. */
export function usageError(...content: Inline[]): Outcome {
  return { status: "usage", parts: [paragraph(...content)] };
}

/** Tried, and it went wrong. */
export function failure(...content: Inline[]): Outcome {
  return { status: "failed", parts: [paragraph(...content)] };
}

/** The JSON an outcome prints with `--json`. */
export function outcomeJson(outcome: Outcome): unknown {
  if (outcome.data !== undefined) return outcome.status === "ok" ? outcome.data : { status: outcome.status, ...asObject(outcome.data) };
  return { status: outcome.status, message: clean(blocks(outcome.parts).text) };
}

function asObject(data: unknown): Record<string, unknown> {
  return data !== null && typeof data === "object" && !Array.isArray(data) ? (data as Record<string, unknown>) : { data };
}

/** A managed room as a command names it: as configured (alias or id), and its room id. */
export interface ManagedRoom {
  readonly room: string;
  readonly roomId: RoomId;
}

/** Runs: one at a time, whoever asks (see service/runner.ts). */
export interface Runs {
  /** A run now (or queued behind the one under way). */
  request(opts: { dryRun: boolean; rooms?: readonly string[]; progress?: (done: number, total: number) => void }): RunRequest<RunReport>;
  /** Whether a run is under way (always false on the CLI: it has no other runs). */
  readonly busy: boolean;
}

/** What the directory says, and the managed rooms commands may name. */
export interface Directory {
  /** `ldap`, `azure`, `static`. */
  readonly kind: string;
  read(): Promise<Result<DirectoryState>>;
  /**
   * The managed room `ref` names: by the alias or id it is configured with, or by the room id
   * its alias resolves to; anything else is an error naming it.
   */
  managedRoom(ref: RoomRef, state?: DirectoryState): Promise<Result<ManagedRoom>>;
}

/** The homeserver, as commands use it (rate limits and the halt signal as for runs). */
export type Homeserver = Pick<MatrixGateway, "readRoom" | "invite" | "kick" | "setPowerLevels" | "userExists" | "resolveRoom"> & {
  /** The bot's own user id. */
  readonly bot: UserId;
  joinedRooms(): Promise<Result<RoomId[]>>;
  joinRoom(roomOrAlias: string): Promise<Result<RoomId>>;
  leaveRoom(roomId: RoomId): Promise<Result<void>>;
};

/** The rooms where token commands are heard (serve only). */
export interface TokenRooms {
  /** Joins the room and hears token commands there from now on; the joined room's id, or why not. */
  listen(room: RoomId): Promise<Result<RoomId, string>>;
  /** No longer hears commands there (the bot stays in the room: it may be a managed room too). */
  unlisten(room: RoomId): void;
}

export interface Tokens {
  /** Undefined when the config has no `tokens` section. */
  readonly service: TokenService | undefined;
  readonly managementRoomId: RoomId | undefined;
  /** Serve only. */
  readonly rooms?: TokenRooms;
}

/** The terminal a CLI command runs in. */
export interface Terminal {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  readonly interactive: boolean;
}

/** Everything a command may ask for; each command names the ones it uses. */
export interface Capabilities {
  readonly config: Config;
  /** The config as loaded: where each value came from (check-config). */
  readonly loaded: LoadedConfig;
  readonly store: Store;
  readonly clock: Clock;
  readonly runs: Runs;
  readonly directory: Directory;
  readonly homeserver: Homeserver;
  readonly tokens: Tokens;
  /** CLI only. */
  readonly terminal: Terminal;
}

export type CapabilityName = keyof Capabilities;

/** What every command knows, whichever surface it came from. */
export interface BaseContext {
  /** A user id, or "cli" (the shell user, an operator). */
  readonly actor: UserId | "cli";
  readonly surface: Surface;
  /** The room the command came from, or "cli". */
  readonly place: RoomId | "cli";
  /** Whether the actor passes the management room's command allow list (always on the CLI). */
  readonly isOperator: boolean;
  /** How a command is written here: `!` in the room, `matrix-group-sync ` on the CLI. */
  readonly prefix: string;
  readonly table: CommandTable<Command>;
  /** An answer before the outcome (e.g. "queued behind the current run"). */
  say(parts: readonly Part[]): Promise<void>;
  /** Marks a long command as under way (⏳ on the command in the room); the outcome replaces it. */
  ack(): Promise<void>;
  /** Progress of a long command (`rooms` 3/50): one edited message in the room, one rewritten line on a terminal. */
  progress(done: number, total: number, what: string): void;
}

export type Context<U extends CapabilityName = CapabilityName> = BaseContext & Pick<Capabilities, U>;

type ValueOf<P> = P extends { readonly kind: infer K extends ParamKind }
  ? P extends { readonly variadic: true }
    ? ArgTypes[K][]
    : P extends { readonly optional: true }
      ? ArgTypes[K] | undefined
      : ArgTypes[K]
  : never;

/** The executor's view of its arguments: one typed field per parameter and per flag. */
export type Args<P extends readonly TypedParam[], F extends readonly FlagSpec[]> = { readonly [S in P[number] as S["name"]]: ValueOf<S> } & {
  readonly [S in F[number] as S["name"]]: boolean;
};

export interface TypedParam {
  readonly name: string;
  readonly kind: ParamKind;
  readonly description: string;
  readonly optional?: boolean;
  readonly variadic?: boolean;
}

export interface CommandDefinition<P extends readonly TypedParam[], F extends readonly FlagSpec[], U extends CapabilityName> {
  readonly name: string;
  readonly aliases?: readonly string[];
  readonly summary: string;
  readonly description?: string;
  readonly params: P;
  readonly flags?: F;
  readonly permission: Permission;
  readonly surfaces: readonly Surface[];
  readonly uses: readonly U[];
  readonly run: (ctx: Context<U>, args: Args<P, F>) => Promise<Outcome>;
}

/** A command as the table and the surfaces hold it. */
export interface Command extends CommandSpec<Context, Outcome> {
  readonly surfaces: readonly Surface[];
  readonly uses: readonly CapabilityName[];
}

/**
 * Defines a command. The decoded arguments are read back through `argOf` / `argsOf`, which
 * check each value against its parameter's kind: what reaches `run` has the type it says.
 */
export function command<const P extends readonly TypedParam[], const F extends readonly FlagSpec[] = readonly [], const U extends CapabilityName = never>(
  def: CommandDefinition<P, F, U>,
): Command {
  const { run: execute, ...shape } = def;
  return {
    ...shape,
    run: (ctx, parsed) => execute(ctx, typedArgs(def.params, def.flags ?? [], parsed) as Args<P, F>),
  };
}

function typedArgs(params: readonly TypedParam[], flags: readonly FlagSpec[], parsed: ParsedArgs): Record<string, unknown> {
  const args: Record<string, unknown> = {};
  for (const p of params) args[p.name] = p.variadic === true ? argsOf(parsed, p.name, p.kind) : argOf(parsed, p.name, p.kind);
  for (const f of flags) args[f.name] = parsed.flags[f.name] === true;
  return args;
}
