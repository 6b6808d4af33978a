/**
 * The store port: what the service remembers between runs. Implemented once with Kysely
 * (store/kysely-store.ts) over either embedded PGlite or PostgreSQL.
 * Times are passed in by the caller (injected clock); the store never reads the clock.
 */
import type { ActionKind } from "../reconcile/types.ts";

/** What a run_actions row records: an action of the planner's vocabulary, or a room that could not be synced. */
export type RecordedKind = ActionKind | "room-error";
export type SpaceLinkType = "m.space.child" | "m.space.parent";

export interface SpaceLinkRecord {
  /** The room the link event lives in. */
  readonly roomId: string;
  readonly type: SpaceLinkType;
  /** The linked room. */
  readonly stateKey: string;
  readonly runId: number;
  readonly addedAt: Date;
}

/** `directory`: serve saw the directory change (serve.pollIntervalMs). */
export type RunTrigger = "cli" | "schedule" | "command" | "startup" | "directory" | "demo";
/** `degraded`: the run worked, but a mapped group was incomplete or missing (no removals in its rooms). */
export type RunOutcome = "running" | "ok" | "degraded" | "failed" | "interrupted";
export type ActionOutcome = "planned" | "applied" | "failed" | "held" | "skipped";

export interface RunRecord {
  readonly id: number;
  readonly trigger: RunTrigger;
  readonly dryRun: boolean;
  readonly startedAt: Date;
  readonly finishedAt: Date | null;
  readonly outcome: RunOutcome;
  /** JSON summary (counts per kind, failures). */
  readonly summary: unknown;
  readonly error: string | null;
}

export interface ActionRecord {
  readonly runId: number;
  /** The room as configured (alias or id). */
  readonly room: string;
  readonly roomId: string | null;
  readonly kind: RecordedKind;
  readonly userId: string | null;
  /** JSON detail: from/to levels, reason... */
  readonly detail: unknown;
  readonly outcome: ActionOutcome;
  readonly error: string | null;
  readonly at: Date;
}

/** The run an action belongs to, as `listUserActions` returns it with each action. */
export interface ActionRunInfo {
  readonly trigger: RunTrigger;
  readonly dryRun: boolean;
  readonly startedAt: Date;
  readonly outcome: RunOutcome;
}

/**
 * One action that names a user (an invite, a kick, a held kick, a change of their power
 * level), with its run. `id` orders rows recorded at the same time and pages on (`before`).
 */
export interface UserActionRecord extends ActionRecord {
  readonly id: number;
  readonly userId: string;
  readonly run: ActionRunInfo;
}

/** Most rows one audit read returns, whatever `limit` asks for. */
export const MAX_AUDIT_ROWS = 1000;
/** Rows an audit read returns when no `limit` is given. */
export const DEFAULT_AUDIT_ROWS = 50;

export interface UserActionsQuery {
  /** Default DEFAULT_AUDIT_ROWS, at most MAX_AUDIT_ROWS. */
  readonly limit?: number;
  /** Only rows older than this one (the last row of the previous page): `at`, then `id`. */
  readonly before?: { readonly at: Date; readonly id: number };
}

export interface HeldRecord {
  readonly roomId: string;
  readonly room: string;
  readonly userId: string;
  readonly reason: string;
  readonly runId: number;
  readonly heldAt: Date;
  /** Set by an operator's release; the next real run applies the removal and deletes the row. */
  readonly releasedAt: Date | null;
}

export interface ExternalRecord {
  readonly roomId: string;
  readonly userId: string;
  /** The role they were invited with ("member", "admin"...). */
  readonly role: string;
  readonly addedBy: string;
  readonly addedAt: Date;
}

export interface ManagedRoomRecord {
  readonly room: string;
  readonly roomId: string | null;
  readonly managed: boolean;
  readonly lastRunId: number | null;
  readonly lastOutcome: string | null;
  readonly lastSummary: unknown;
  readonly updatedAt: Date;
}

/** An allow-list entry: a user id, or a regular expression over whole user ids. */
export interface AllowEntry {
  /** Which list: "commands" (the management room) or "tokens" (registration tokens). */
  readonly scope: string;
  readonly entry: string;
  readonly kind: "user" | "regex" | "room";
  /** "config": seeded from the config at start (and replaced then); "command": added in the room. */
  readonly source: "config" | "command";
  readonly addedBy: string;
  readonly addedAt: Date;
}

/** One registration-token action. `tokenRef` never holds a full token string (see tokens/). */
export interface TokenAuditRecord {
  readonly at: Date;
  /** A user id, or "cli". */
  readonly actor: string;
  /** The room id the command came from, or "cli". */
  readonly place: string;
  readonly action: string;
  readonly tokenRef: string | null;
  /** "ok", or the error. */
  readonly result: string;
  readonly detail: unknown;
}

export interface TokenAuditQuery {
  /**
   * Only rows about one of these references, compared as stored. The store does not mask:
   * the caller passes what the token module would have recorded for the token a person
   * names (tokens/service.ts `maskRef(text)`, and for MAS also the id itself).
   */
  readonly tokenRefs?: readonly string[];
}

/** What `prune` deleted. */
export interface PruneCounts {
  readonly runs: number;
  readonly actions: number;
  readonly tokenAudit: number;
}

import type { CryptoChanges, CryptoSnapshot } from "../matrix/crypto-persistence.ts";

export interface BotSessionRecord {
  readonly login: string;
  readonly userId: string;
  readonly deviceId: string;
  /** The access token, sealed with a key derived from the password. */
  readonly sealedToken: Uint8Array;
  readonly updatedAt: Date;
}

export interface Store {
  readonly engine: "pglite" | "postgres";

  startRun(input: { trigger: RunTrigger; dryRun: boolean; startedAt: Date }): Promise<number>;
  finishRun(id: number, input: { outcome: Exclude<RunOutcome, "running">; finishedAt: Date; summary: unknown; error?: string | null }): Promise<void>;
  /** Newest first. */
  listRuns(limit: number): Promise<RunRecord[]>;
  getRun(id: number): Promise<RunRecord | undefined>;
  /**
   * Marks interrupted the runs still "running" that no live process carries on — left by a
   * killed process, or started through this store and stopped — and returns how many. The
   * runs of another live process sharing the database (a PostgreSQL leader, a CLI run beside
   * it) are left alone. Called whenever the store is taken (app.ts), and by serve on stop.
   */
  interruptDanglingRuns(finishedAt: Date): Promise<number>;

  /** Batch insert; one statement per call (not one per row) where the engine allows. */
  recordActions(rows: readonly ActionRecord[]): Promise<void>;
  listActions(runId: number): Promise<ActionRecord[]>;
  /**
   * Everything recorded for one user across rooms and runs (dry runs included, marked by
   * `run.dryRun`), newest first (`at`, then `id`). Held kicks are rows with outcome "held";
   * an operator's release is not an action (see `listHeld`).
   */
  listUserActions(userId: string, query?: UserActionsQuery): Promise<UserActionRecord[]>;

  listHeld(roomId?: string): Promise<HeldRecord[]>;
  /** After a real run of a room: its held set becomes exactly `rows` (released rows included: they were applied or are moot). */
  replaceHeld(roomId: string, room: string, rows: readonly { userId: string; reason: string }[], runId: number, now: Date): Promise<void>;
  /** Marks held removals released ("all" = every held row of the room); returns how many rows changed. */
  releaseHeld(roomId: string, userIds: readonly string[] | "all", now: Date): Promise<number>;

  listExternals(roomId?: string): Promise<ExternalRecord[]>;
  /** Insert or update (same room + user). */
  addExternal(record: ExternalRecord): Promise<void>;
  removeExternal(roomId: string, userId: string): Promise<boolean>;

  upsertManagedRoom(input: { room: string; roomId: string | null; lastRunId: number | null; lastOutcome: string | null; lastSummary: unknown; now: Date }): Promise<void>;
  /** The same for many rooms, in a few statements (a run's rooms). */
  upsertManagedRooms(inputs: readonly { room: string; roomId: string | null; lastRunId: number | null; lastOutcome: string | null; lastSummary: unknown; now: Date }[]): Promise<void>;
  setManaged(room: string, roomId: string | null, managed: boolean, now: Date): Promise<void>;
  listManagedRooms(): Promise<ManagedRoomRecord[]>;

  /**
   * Records that a command event was handled. True the first time for an event id, false
   * afterwards (atomically): a restart or a second replica never runs it again.
   */
  markHandled(eventId: string, roomId: string, at: Date): Promise<boolean>;
  /** Drops handled-event records older than `before` (they can no longer be replayed). */
  pruneHandled(before: Date): Promise<number>;

  recordTokenAudit(entry: TokenAuditRecord): Promise<void>;
  /** Newest first (`at`, then insertion order); at most MAX_AUDIT_ROWS. */
  listTokenAudit(limit: number, query?: TokenAuditQuery): Promise<TokenAuditRecord[]>;

  /**
   * Deletes the runs that started before `before.runs`, with their actions, and the token
   * audit rows from before `before.tokenAudit` (null: keep them all). Kept whatever their age:
   * a run still running, and the run each managed room and each held removal points at (its
   * last real run, whose actions show why a kick is held).
   */
  prune(before: { readonly runs: Date | null; readonly tokenAudit: Date | null }): Promise<PruneCounts>;

  listAllowed(scope: string): Promise<AllowEntry[]>;
  /** Insert or update (same scope and entry). */
  addAllowed(entry: AllowEntry): Promise<void>;
  removeAllowed(scope: string, entry: string): Promise<boolean>;
  /** Makes the config-sourced entries of a scope exactly `entries`; command-sourced ones stay. */
  seedAllowed(scope: string, entries: readonly Omit<AllowEntry, "scope" | "source" | "addedAt">[], now: Date): Promise<void>;

  /** Space links this service added (all, or those living in one room). */
  listSpaceLinks(roomId?: string): Promise<SpaceLinkRecord[]>;
  /** Insert or update (same room, type and state key). */
  addSpaceLink(record: SpaceLinkRecord): Promise<void>;
  removeSpaceLink(roomId: string, type: SpaceLinkType, stateKey: string): Promise<boolean>;

  /** The directory's change marker as serve last saw it (by directory kind). */
  getDirectoryMarker(directory: string): Promise<string | undefined>;
  putDirectoryMarker(directory: string, marker: string, at: Date): Promise<void>;

  /** A password login's session (matrix/login.ts), by `homeserver.user`. */
  getBotSession(login: string): Promise<BotSessionRecord | undefined>;
  putBotSession(record: BotSessionRecord): Promise<void>;

  /** The bot's end-to-end encryption state (matrix/crypto-persistence.ts), per bot user. */
  loadCryptoState(owner: string): Promise<CryptoSnapshot>;
  /** Applies one save's changes in one transaction. */
  saveCryptoState(owner: string, changes: CryptoChanges): Promise<void>;
  /** Forgets the encryption state (`crypto-reset`; of every bot user when none is named); how many records went. */
  deleteCryptoState(owner?: string): Promise<number>;

  close(): Promise<void>;
}
