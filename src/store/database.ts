/**
 * The database behind the store: one schema, two engines.
 *
 * - PostgreSQL through a `pg.Pool` when a `databaseUrl` is given;
 * - otherwise an embedded PGlite database in `<dataDir>/pglite`, guarded by the lock file
 *   `<dataDir>/pglite.lock` (PGlite does not lock its folder, and two processes on one
 *   folder silently lose writes).
 *
 * The embedded database is private to the service's user: the folders are created 0700 and
 * the lock file 0600; `pglite/` and the files in it are tightened to 0700/0600 at each open
 * (PGlite writes its files 0644). A data folder that already exists and is open to others is
 * left as it is (it may be a folder the operator shares) and reported through `onWarning`.
 *
 * Who runs what (`RunOwner`): with PostgreSQL each open store holds, on a connection of its
 * own, a session advisory lock with a random key, recorded in every run it starts. A run
 * still "running" whose key is no longer locked belongs to a process that is gone (its
 * session ended, which releases the lock), so any process may mark it interrupted, without
 * touching the runs of a live leader or of a CLI run next to it. With PGlite the folder lock
 * already says it: whoever holds it is the only process, and every running run is its own
 * or a dead one's.
 *
 * Both engines are given the same type parsers, so queries return the same JS values:
 * int8 (bigserial ids, `count(*)`) as `number`, timestamptz as `Date`, json/jsonb parsed.
 * jsonb is written as JSON text (`toJson`), which both drivers pass through unchanged.
 */
import { randomBytes, randomInt } from "node:crypto";
import { chmod, lstat, mkdir, link, readdir, readFile, stat, unlink, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { Kysely, PostgresDialect, type ColumnType, type Generated } from "kysely";
import { PGliteDialect } from "kysely-pglite-dialect";
import pg from "pg";
import { describeError } from "../result.ts";
import type { RecordedKind, SpaceLinkType } from "./store.ts";

/** A timestamptz column: a `Date` in and out. */
type Timestamp = ColumnType<Date, Date, Date>;
type NullableTimestamp = ColumnType<Date | null, Date | null | undefined, Date | null>;
/** A jsonb column: any JSON value out; JSON text in (see `toJson`), SQL NULL for null. */
type Json = ColumnType<unknown, string | null | undefined, string | null>;

export interface SyncRunsTable {
  id: Generated<number>;
  trigger: string;
  dry_run: boolean;
  started_at: Timestamp;
  finished_at: NullableTimestamp;
  outcome: string;
  summary: Json;
  error: string | null;
  /** Who started the run (see `RunOwner`); null in runs recorded before these columns existed. */
  owner_pid: number | null;
  owner_host: string | null;
  owner_lock_key: number | null;
}

export interface RunActionsTable {
  id: Generated<number>;
  run_id: number;
  room: string;
  room_id: string | null;
  kind: RecordedKind;
  user_id: string | null;
  detail: Json;
  outcome: string;
  error: string | null;
  at: Timestamp;
}

export interface SpaceLinksTable {
  /** The room the link event lives in (the space for a child link, the child for a parent link). */
  room_id: string;
  type: SpaceLinkType;
  /** The linked room's id. */
  state_key: string;
  run_id: number;
  added_at: Timestamp;
}

export interface HeldRemovalsTable {
  room_id: string;
  user_id: string;
  room: string;
  reason: string;
  run_id: number;
  held_at: Timestamp;
  released_at: NullableTimestamp;
}

export interface ExternalMembersTable {
  room_id: string;
  user_id: string;
  role: string;
  added_by: string;
  added_at: Timestamp;
}

export interface ManagedRoomsTable {
  room: string;
  room_id: string | null;
  managed: Generated<boolean>;
  last_run_id: number | null;
  last_outcome: string | null;
  last_summary: Json;
  updated_at: Timestamp;
}

export interface HandledEventsTable {
  event_id: string;
  room_id: string;
  handled_at: Timestamp;
}

export interface CommandAllowTable {
  scope: string;
  entry: string;
  kind: string;
  source: string;
  added_by: string;
  added_at: Timestamp;
}

export interface TokenAuditTable {
  id: Generated<number>;
  at: Timestamp;
  actor: string;
  place: string;
  action: string;
  token_ref: string | null;
  result: string;
  detail: Json;
}

export interface CryptoDatabasesTable {
  owner: string;
  name: string;
  version: number;
  layout: Json;
}

export interface CryptoRecordsTable {
  owner: string;
  database: string;
  store: string;
  key: Uint8Array;
  value: Uint8Array;
}

export interface BotSessionsTable {
  /** `homeserver.user` as configured. */
  login: string;
  user_id: string;
  device_id: string;
  sealed_token: Uint8Array;
  updated_at: Timestamp;
}

export interface DirectoryMarkersTable {
  directory: string;
  marker: string;
  seen_at: Timestamp;
}

export interface Database {
  directory_markers: DirectoryMarkersTable;
  bot_sessions: BotSessionsTable;
  crypto_databases: CryptoDatabasesTable;
  crypto_records: CryptoRecordsTable;
  token_audit: TokenAuditTable;
  handled_events: HandledEventsTable;
  command_allow: CommandAllowTable;
  sync_runs: SyncRunsTable;
  run_actions: RunActionsTable;
  held_removals: HeldRemovalsTable;
  external_members: ExternalMembersTable;
  managed_rooms: ManagedRoomsTable;
  space_links: SpaceLinksTable;
}

export type Engine = "pglite" | "postgres";

export interface OpenDatabaseOptions {
  /** `postgres://user:pass@host:port/db`. Set and non-empty: PostgreSQL; otherwise PGlite. */
  readonly databaseUrl?: string | undefined;
  /** The service's data folder; PGlite keeps its files in `<dataDir>/pglite`. */
  readonly dataDir: string;
  /**
   * Use this schema instead of the default (`public`): it is created if missing and becomes
   * the session's only `search_path` entry, so tables and the migration bookkeeping live in
   * it. Meant for tests that share one PostgreSQL database (one schema per test file/run).
   * Lower-case letters, digits and `_` only.
   */
  readonly schema?: string | undefined;
  /** Errors of idle pooled PostgreSQL connections (e.g. server restart); default: ignored — the pool replaces them. */
  readonly onBackgroundError?: ((err: Error) => void) | undefined;
  /** Told of something the operator should fix but that does not stop the store (a data folder open to others). */
  readonly onWarning?: ((message: string, fields: Record<string, unknown>) => void) | undefined;
}

/** The process behind a run, recorded in each run it starts. */
export interface RunOwner {
  readonly pid: number;
  readonly host: string;
  /**
   * PostgreSQL: the key of the session advisory lock (`RUN_OWNER_LOCK_CLASS`, key) this store
   * holds for as long as it is open. Null with PGlite, whose folder lock says the same.
   */
  readonly lockKey: number | null;
}

/**
 * The first key of the two-key advisory locks that mark a live run owner ("mgsr"). The
 * leader lock uses the one-key form, a separate key space.
 */
export const RUN_OWNER_LOCK_CLASS = 0x6d677372;

export interface OpenedDatabase {
  readonly db: Kysely<Database>;
  readonly engine: Engine;
  /** This process, as recorded in the runs it starts. */
  readonly owner: RunOwner;
  /** Closes the pool / the PGlite instance, and releases the data-folder lock. Idempotent. */
  close(): Promise<void>;
}

/** int8 as a number: ids and counts stay far below 2^53; anything above is refused, not rounded. */
function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`int8 value ${text} does not fit a JS number`);
  return n;
}

/**
 * A jsonb parameter: JSON text, which both drivers pass through unchanged (given a raw JS
 * value, `pg` would send a string as invalid JSON and an array as a PostgreSQL array).
 * `null` and `undefined` become SQL NULL, which reads back as `null`.
 */
export function toJson(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  const text = JSON.stringify(value) as string | undefined;
  if (text === undefined) throw new TypeError(`not a JSON value: ${typeof value}`);
  return text;
}

/** pg's own parser for a type (timestamptz → Date, json/jsonb → parsed...). */
const pgDefaultParser = pg.types.getTypeParser as (oid: number, format?: "text" | "binary") => (text: string) => unknown;

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export async function openDatabase(options: OpenDatabaseOptions): Promise<OpenedDatabase> {
  if (options.schema !== undefined && !SCHEMA_NAME.test(options.schema)) {
    throw new Error(`invalid schema name ${JSON.stringify(options.schema)}: use lower-case letters, digits and _`);
  }
  return options.databaseUrl !== undefined && options.databaseUrl !== ""
    ? openPostgres(options.databaseUrl, options)
    : openPglite(options);
}

async function openPostgres(databaseUrl: string, options: OpenDatabaseOptions): Promise<OpenedDatabase> {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    types: { getTypeParser: (oid, format) => (oid === pg.types.builtins.INT8 ? parseInt8 : pgDefaultParser(oid, format)) },
    ...(options.schema !== undefined ? { options: `-c search_path=${options.schema}` } : {}),
  });
  const onError = options.onBackgroundError;
  pool.on("error", (err) => onError?.(err));
  try {
    // Fail fast with a message that says where we tried to connect (without the password).
    if (options.schema !== undefined) {
      await pool.query(`create schema if not exists "${options.schema}"`);
    } else {
      await pool.query("select 1");
    }
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new Error(`cannot use PostgreSQL at ${describeDatabaseUrl(databaseUrl)}: ${connectionErrorText(err)}`, { cause: err });
  }
  let ownerSession: pg.Client;
  let lockKey: number;
  try {
    ({ client: ownerSession, key: lockKey } = await holdOwnerLock(databaseUrl, onError));
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new Error(`cannot use PostgreSQL at ${describeDatabaseUrl(databaseUrl)}: ${connectionErrorText(err)}`, { cause: err });
  }
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  let closed = false;
  return {
    db,
    engine: "postgres",
    owner: { pid: process.pid, host: hostname(), lockKey },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await db.destroy(); // ends the pool
      } finally {
        await ownerSession.end().catch(() => undefined); // ending the session releases the owner lock
      }
    },
  };
}

/**
 * A connection of its own holding a run-owner advisory lock with a random key: held until
 * the store closes or the process dies. A key some other live process holds is not taken;
 * another is drawn.
 */
async function holdOwnerLock(databaseUrl: string, onError: ((err: Error) => void) | undefined): Promise<{ client: pg.Client; key: number }> {
  const client = new pg.Client({ connectionString: databaseUrl, keepAlive: true });
  client.on("error", (err) => onError?.(err));
  try {
    await client.connect();
    for (let attempt = 0; attempt < 8; attempt++) {
      const key = randomInt(1, 2 ** 31 - 1);
      const r = await client.query<{ ok: boolean }>("select pg_try_advisory_lock($1::int4, $2::int4) as ok", [RUN_OWNER_LOCK_CLASS, key]);
      if (r.rows[0]?.ok === true) return { client, key };
    }
    throw new Error("no free run-owner lock key found");
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
}

/** Node reports a refused connection to every address of a name as an AggregateError with an empty message. */
function connectionErrorText(err: unknown): string {
  if (err instanceof AggregateError && err.message === "") {
    const inner = err.errors.map((e) => describeError(e)).filter((m) => m !== "");
    if (inner.length > 0) return inner.join("; ");
  }
  const text = describeError(err);
  return text !== "" ? text : ((err as NodeJS.ErrnoException | undefined)?.code ?? "unknown error");
}

/** host:port/database of a connection URL, never its password. */
export function describeDatabaseUrl(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    return `${url.hostname || "localhost"}:${url.port || "5432"}${url.pathname}`;
  } catch {
    return "(unparsable DATABASE_URL)";
  }
}

async function openPglite(options: OpenDatabaseOptions): Promise<OpenedDatabase> {
  const dataDir = path.resolve(options.dataDir);
  const pgliteDir = path.resolve(dataDir, "pglite");
  await mkdir(pgliteDir, { recursive: true, mode: PRIVATE_DIR });
  await warnIfOpen(dataDir, options.onWarning);
  await tighten(pgliteDir, PRIVATE_DIR);
  const releaseLock = await acquireFolderLock(path.resolve(dataDir, "pglite.lock"), pgliteDir);
  let client: PGlite;
  try {
    client = await PGlite.create(pgliteDir, { parsers: { [pg.types.builtins.INT8]: parseInt8 } });
    await tightenTree(pgliteDir);
    if (options.schema !== undefined) {
      // A single session: the setting holds for every later query.
      await client.exec(`create schema if not exists "${options.schema}"; set search_path to "${options.schema}"`);
    }
  } catch (err) {
    await releaseLock();
    throw new Error(`cannot open the embedded database in ${pgliteDir}: ${describeError(err)}`, { cause: err });
  }
  const db = new Kysely<Database>({ dialect: new PGliteDialect(client) });
  let closed = false;
  return {
    db,
    engine: "pglite",
    owner: { pid: process.pid, host: hostname(), lockKey: null },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await db.destroy(); // closes PGlite
      } finally {
        await releaseLock();
      }
    },
  };
}

// ---------------------------------------------------------------------------------------
// File modes of the embedded database: the service's user only.

const PRIVATE_DIR = 0o700;
const PRIVATE_FILE = 0o600;
/** Modes mean little on Windows (no group/other bits to check or set). */
const POSIX_MODES = process.platform !== "win32";

/** A data folder that others may list or enter: told, not changed (the operator may share it on purpose). */
async function warnIfOpen(dataDir: string, onWarning: OpenDatabaseOptions["onWarning"]): Promise<void> {
  if (!POSIX_MODES) return;
  const mode = (await stat(dataDir)).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    onWarning?.("the data folder is open to other users; the embedded database inside it is kept private, but consider chmod 700", {
      dataDir,
      mode: `0${mode.toString(8)}`,
    });
  }
}

/** Removes group and other bits from one file or folder that is ours alone. */
async function tighten(file: string, mode: number): Promise<void> {
  if (!POSIX_MODES) return;
  const current = (await lstat(file)).mode & 0o777;
  if ((current & 0o077) !== 0) await chmod(file, mode);
}

/** Every folder (0700) and file (0600) below `dir`; symbolic links are left alone. */
async function tightenTree(dir: string): Promise<void> {
  if (!POSIX_MODES) return;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      await tighten(full, PRIVATE_DIR);
      await tightenTree(full);
    } else if (entry.isFile()) {
      await tighten(full, PRIVATE_FILE);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Data-folder lock for PGlite.

interface LockHolder {
  readonly pid: number;
  readonly hostname: string;
  readonly since: string;
  readonly token: string;
}

/** Lock files held by this process (a stale file naming our own pid, e.g. after a container restart, is not ours). */
const heldHere = new Set<string>();

/**
 * Takes `lockFile` or throws an error naming the holder. The file is created atomically
 * with its content (written aside, then hard-linked into place). A lock left by a dead
 * process on this host is taken over; a lock from another host cannot be checked and
 * must be removed by the operator.
 */
async function acquireFolderLock(lockFile: string, guarded: string): Promise<() => Promise<void>> {
  const me: LockHolder = {
    pid: process.pid,
    hostname: hostname(),
    since: new Date().toISOString(),
    token: randomBytes(8).toString("hex"),
  };
  const content = JSON.stringify(me);
  const aside = `${lockFile}.${me.token}`;
  await writeFile(aside, content, { mode: PRIVATE_FILE });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(aside, lockFile);
        break;
      } catch (err) {
        if (!isErrno(err, "EEXIST") || attempt > 0) throw err;
      }
      const existing = await readFile(lockFile, "utf8").catch(() => "");
      const holder = parseHolder(existing);
      if (holder === undefined || !isStale(lockFile, holder)) {
        const who = holder ? `process ${holder.pid} on ${holder.hostname} (since ${holder.since})` : "another process";
        throw new Error(
          `the data folder ${guarded} is in use by ${who}: only one process may use an embedded database. ` +
            `If that process is gone, delete ${lockFile}.`,
        );
      }
      // Stale: remove it unless someone replaced it meanwhile, then try once more.
      if ((await readFile(lockFile, "utf8").catch(() => "")) === existing) await unlink(lockFile).catch(() => undefined);
    }
  } finally {
    await unlink(aside).catch(() => undefined);
  }
  heldHere.add(lockFile);
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    heldHere.delete(lockFile);
    const current = await readFile(lockFile, "utf8").catch(() => "");
    if (current === content) await unlink(lockFile).catch(() => undefined);
  };
}

function parseHolder(text: string): LockHolder | undefined {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== "object" || value === null) return undefined;
    const v = value as Partial<Record<keyof LockHolder, unknown>>;
    if (typeof v.pid !== "number" || typeof v.hostname !== "string") return undefined;
    return {
      pid: v.pid,
      hostname: v.hostname,
      since: typeof v.since === "string" ? v.since : "?",
      token: typeof v.token === "string" ? v.token : "",
    };
  } catch {
    return undefined;
  }
}

function isStale(lockFile: string, holder: LockHolder): boolean {
  if (holder.hostname !== hostname()) return false;
  if (holder.pid === process.pid) return !heldHere.has(lockFile);
  try {
    process.kill(holder.pid, 0);
    return false;
  } catch (err) {
    return isErrno(err, "ESRCH");
  }
}

function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}
