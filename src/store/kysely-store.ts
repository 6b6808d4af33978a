/**
 * The store port (store.ts) implemented with Kysely, over PGlite or PostgreSQL.
 *
 * Query functions take the `db` (or a transaction) first and are exported for reuse;
 * `openStore` opens the database, runs the migrations and binds them into a `Store`.
 *
 * Isolated schemas (tests): `openStore({ databaseUrl, dataDir, schema: "t_abc" })` creates
 * the schema if needed and uses it as the only search_path entry, for the tables and for
 * Kysely's migration bookkeeping, so test files sharing one PostgreSQL database do not
 * collide. Drop it afterwards (`drop schema "t_abc" cascade`).
 */
import type { CryptoChanges, CryptoDatabaseSchema, CryptoSnapshot } from "../matrix/crypto-persistence.ts";
import { sql, type Kysely, type Selectable, type SqlBool, type Transaction } from "kysely";
import {
  DEFAULT_AUDIT_ROWS,
  MAX_AUDIT_ROWS,
  type ActionOutcome,
  type AllowEntry,
  type PruneCounts,
  type TokenAuditQuery,
  type TokenAuditRecord,
  type UserActionRecord,
  type UserActionsQuery,
  type ActionRecord,
  type ExternalRecord,
  type SpaceLinkRecord,
  type SpaceLinkType,
  type HeldRecord,
  type ManagedRoomRecord,
  type RunOutcome,
  type RunRecord,
  type RunTrigger,
  type Store,
  type BotSessionRecord,
} from "./store.ts";
import {
  RUN_OWNER_LOCK_CLASS,
  openDatabase,
  toJson,
  type Database,
  type Engine,
  type RunOwner,
  type ManagedRoomsTable,
  type OpenDatabaseOptions,
  type RunActionsTable,
  type SyncRunsTable,
} from "./database.ts";
import { migrateToLatest } from "./migrate.ts";

type Db = Kysely<Database> | Transaction<Database>;

/** Rows per INSERT statement: run_actions has 10 columns, well below PostgreSQL's 65,535 parameters. */
export const INSERT_BATCH_ROWS = 1000;

function* batches<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

// --- runs --------------------------------------------------------------------------------

export async function startRun(db: Db, input: { trigger: RunTrigger; dryRun: boolean; startedAt: Date; owner?: RunOwner }): Promise<number> {
  const row = await db
    .insertInto("sync_runs")
    .values({
      trigger: input.trigger,
      dry_run: input.dryRun,
      started_at: input.startedAt,
      outcome: "running",
      owner_pid: input.owner?.pid ?? null,
      owner_host: input.owner?.host ?? null,
      owner_lock_key: input.owner?.lockKey ?? null,
    })
    .returning("id")
    .executeTakeFirstOrThrow();
  return row.id;
}

export async function finishRun(
  db: Db,
  id: number,
  input: { outcome: Exclude<RunOutcome, "running">; finishedAt: Date; summary: unknown; error?: string | null },
): Promise<void> {
  const result = await db
    .updateTable("sync_runs")
    .set({ outcome: input.outcome, finished_at: input.finishedAt, summary: toJson(input.summary), error: input.error ?? null })
    .where("id", "=", id)
    .executeTakeFirst();
  if (result.numUpdatedRows === 0n) throw new Error(`finishRun: no sync run with id ${id}`);
}

export async function listRuns(db: Db, limit: number): Promise<RunRecord[]> {
  const rows = await db
    .selectFrom("sync_runs")
    .selectAll()
    .orderBy("started_at", "desc")
    .orderBy("id", "desc")
    .limit(limit)
    .execute();
  return rows.map(toRunRecord);
}

export async function getRun(db: Db, id: number): Promise<RunRecord | undefined> {
  const row = await db.selectFrom("sync_runs").selectAll().where("id", "=", id).executeTakeFirst();
  return row === undefined ? undefined : toRunRecord(row);
}

/**
 * Marks interrupted the runs still "running" that nobody carries on: this store's own (its
 * caller says they stopped) and those of a process that is gone. With PGlite that is every
 * running run (the folder lock admits one process). With PostgreSQL it is the runs whose
 * owner lock is free — the owner's session ended — plus runs recorded before owners were
 * (no lock key); the runs of a live leader, or of a CLI run beside it, are left alone.
 */
export async function interruptDanglingRuns(db: Db, finishedAt: Date, engine: Engine, owner: RunOwner): Promise<number> {
  let query = db
    .updateTable("sync_runs")
    .set({ outcome: "interrupted", finished_at: finishedAt, error: "the process stopped before the run finished" })
    .where("outcome", "=", "running");
  if (engine === "postgres") {
    const ownerGone = sql<SqlBool>`not exists (
      select 1 from pg_locks l
      where l.locktype = 'advisory' and l.granted and l.objsubid = 2
        and l.database = (select oid from pg_database where datname = current_database())
        and l.classid = ${RUN_OWNER_LOCK_CLASS}::int8::oid and l.objid = sync_runs.owner_lock_key::int8::oid)`;
    query = query.where((eb) =>
      eb.or([eb("owner_lock_key", "is", null), ...(owner.lockKey !== null ? [eb("owner_lock_key", "=", owner.lockKey)] : []), ownerGone]),
    );
  }
  const result = await query.executeTakeFirst();
  return Number(result.numUpdatedRows);
}

function toRunRecord(row: Selectable<SyncRunsTable>): RunRecord {
  return {
    id: row.id,
    trigger: row.trigger as RunTrigger,
    dryRun: row.dry_run,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    outcome: row.outcome as RunOutcome,
    summary: row.summary,
    error: row.error,
  };
}

// --- actions -----------------------------------------------------------------------------

/** Inserts in batches of INSERT_BATCH_ROWS, one statement each; several batches share a transaction. */
export async function recordActions(db: Kysely<Database>, rows: readonly ActionRecord[]): Promise<void> {
  if (rows.length === 0) return;
  const values = rows.map((r) => ({
    run_id: r.runId,
    room: r.room,
    room_id: r.roomId,
    kind: r.kind,
    user_id: r.userId,
    detail: toJson(r.detail),
    outcome: r.outcome,
    error: r.error,
    at: r.at,
  }));
  const insertAll = async (trx: Db): Promise<void> => {
    for (const batch of batches(values, INSERT_BATCH_ROWS)) {
      await trx.insertInto("run_actions").values(batch).execute();
    }
  };
  if (values.length <= INSERT_BATCH_ROWS) await insertAll(db);
  else await db.transaction().execute(insertAll);
}

/** In the order they were recorded. */
export async function listActions(db: Db, runId: number): Promise<ActionRecord[]> {
  const rows = await db.selectFrom("run_actions").selectAll().where("run_id", "=", runId).orderBy("id").execute();
  return rows.map(toActionRecord);
}

/** A read's row count: DEFAULT_AUDIT_ROWS when not given, at most MAX_AUDIT_ROWS. */
export function auditLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_AUDIT_ROWS;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`an audit read's limit must be a whole number of at least 1, not ${limit}`);
  return Math.min(limit, MAX_AUDIT_ROWS);
}

/**
 * Every action recorded for one user, newest first (`at`, then `id`), with its run: read
 * backwards along run_actions_user_at_idx, each row's run by its primary key.
 */
export async function listUserActions(db: Db, userId: string, query: UserActionsQuery = {}): Promise<UserActionRecord[]> {
  const rows = await userActionsQuery(db, userId, query).execute();
  return rows.map((row) => ({
    id: row.id,
    ...toActionRecord(row),
    userId,
    run: { trigger: row.run_trigger as RunTrigger, dryRun: row.run_dry_run, startedAt: row.run_started_at, outcome: row.run_outcome as RunOutcome },
  }));
}

/** The query of `listUserActions`, unexecuted (tests EXPLAIN it). */
export function userActionsQuery(db: Db, userId: string, query: UserActionsQuery = {}) {
  let q = db
    .selectFrom("run_actions as a")
    .innerJoin("sync_runs as r", "r.id", "a.run_id")
    .select([
      "a.id",
      "a.run_id",
      "a.room",
      "a.room_id",
      "a.kind",
      "a.user_id",
      "a.detail",
      "a.outcome",
      "a.error",
      "a.at",
      "r.trigger as run_trigger",
      "r.dry_run as run_dry_run",
      "r.started_at as run_started_at",
      "r.outcome as run_outcome",
    ])
    .where("a.user_id", "=", userId);
  const { before } = query;
  if (before !== undefined) q = q.where((eb) => eb(eb.refTuple("a.at", "a.id"), "<", eb.tuple(before.at, before.id)));
  return q.orderBy("a.at", "desc").orderBy("a.id", "desc").limit(auditLimit(query.limit));
}

function toActionRecord(row: Omit<Selectable<RunActionsTable>, "id">): ActionRecord {
  return {
    runId: row.run_id,
    room: row.room,
    roomId: row.room_id,
    kind: row.kind,
    userId: row.user_id,
    detail: row.detail,
    outcome: row.outcome as ActionOutcome,
    error: row.error,
    at: row.at,
  };
}

// --- held removals -----------------------------------------------------------------------

/** Ordered by room id, then user id. */
export async function listHeld(db: Db, roomId?: string): Promise<HeldRecord[]> {
  let query = db.selectFrom("held_removals").selectAll();
  if (roomId !== undefined) query = query.where("room_id", "=", roomId);
  const rows = await query.orderBy("room_id").orderBy("user_id").execute();
  return rows.map((row) => ({
    roomId: row.room_id,
    room: row.room,
    userId: row.user_id,
    reason: row.reason,
    runId: row.run_id,
    heldAt: row.held_at,
    releasedAt: row.released_at,
  }));
}

/**
 * The room's held set becomes exactly `rows`, unreleased. A user who was already held (and
 * not released) keeps the original `heldAt`, so "held since" stays true across runs; others
 * get `now`. A user listed twice counts once (the last entry wins).
 */
export async function replaceHeld(
  db: Kysely<Database>,
  roomId: string,
  room: string,
  rows: readonly { userId: string; reason: string }[],
  runId: number,
  now: Date,
): Promise<void> {
  const wanted = new Map(rows.map((r) => [r.userId, r.reason]));
  await db.transaction().execute(async (trx) => {
    const existing = await trx
      .selectFrom("held_removals")
      .select(["user_id", "held_at"])
      .where("room_id", "=", roomId)
      .where("released_at", "is", null)
      .execute();
    const heldSince = new Map(existing.map((r) => [r.user_id, r.held_at]));
    await trx.deleteFrom("held_removals").where("room_id", "=", roomId).execute();
    const values = [...wanted].map(([userId, reason]) => ({
      room_id: roomId,
      user_id: userId,
      room,
      reason,
      run_id: runId,
      held_at: heldSince.get(userId) ?? now,
      released_at: null,
    }));
    for (const batch of batches(values, INSERT_BATCH_ROWS)) {
      await trx.insertInto("held_removals").values(batch).execute();
    }
  });
}

/** Releases unreleased rows (already released ones keep their time and are not counted). */
export async function releaseHeld(db: Db, roomId: string, userIds: readonly string[] | "all", now: Date): Promise<number> {
  if (userIds !== "all" && userIds.length === 0) return 0;
  let query = db
    .updateTable("held_removals")
    .set({ released_at: now })
    .where("room_id", "=", roomId)
    .where("released_at", "is", null);
  if (userIds !== "all") query = query.where("user_id", "in", [...userIds]);
  const result = await query.executeTakeFirst();
  return Number(result.numUpdatedRows);
}

// --- external members --------------------------------------------------------------------

/** Ordered by room id, then user id. */
export async function getBotSession(db: Db, login: string): Promise<BotSessionRecord | undefined> {
  const row = await db.selectFrom("bot_sessions").selectAll().where("login", "=", login).executeTakeFirst();
  return row === undefined ? undefined : { login: row.login, userId: row.user_id, deviceId: row.device_id, sealedToken: new Uint8Array(row.sealed_token), updatedAt: row.updated_at };
}

export async function putBotSession(db: Db, r: BotSessionRecord): Promise<void> {
  const values = { user_id: r.userId, device_id: r.deviceId, sealed_token: Buffer.from(r.sealedToken), updated_at: r.updatedAt };
  await db
    .insertInto("bot_sessions")
    .values({ login: r.login, ...values })
    .onConflict((oc) => oc.column("login").doUpdateSet(values))
    .execute();
}

export async function loadCryptoState(db: Db, owner: string): Promise<CryptoSnapshot> {
  const databases = await db.selectFrom("crypto_databases").selectAll().where("owner", "=", owner).orderBy("name").execute();
  const records = await db.selectFrom("crypto_records").select(["database", "store", "key", "value"]).where("owner", "=", owner).execute();
  return {
    databases: databases.map((d) => ({ name: d.name, version: d.version, stores: (d.layout ?? []) as CryptoDatabaseSchema["stores"] })),
    records: records.map((r) => ({ database: r.database, store: r.store, key: new Uint8Array(r.key), value: new Uint8Array(r.value) })),
  };
}

/** Rows per INSERT (each row is five parameters; PostgreSQL allows 65,535). */
const CRYPTO_BATCH = 500;

export async function saveCryptoState(db: Db, owner: string, changes: CryptoChanges): Promise<void> {
  await db.transaction().execute(async (tx) => {
    for (const d of changes.databases) {
      await tx
        .insertInto("crypto_databases")
        .values({ owner, name: d.name, version: d.version, layout: toJson(d.stores) })
        .onConflict((oc) => oc.columns(["owner", "name"]).doUpdateSet({ version: d.version, layout: toJson(d.stores) }))
        .execute();
    }
    for (const r of changes.deleted) {
      await tx.deleteFrom("crypto_records").where("owner", "=", owner).where("database", "=", r.database).where("store", "=", r.store).where("key", "=", Buffer.from(r.key)).execute();
    }
    for (let i = 0; i < changes.put.length; i += CRYPTO_BATCH) {
      const rows = changes.put.slice(i, i + CRYPTO_BATCH).map((r) => ({ owner, database: r.database, store: r.store, key: Buffer.from(r.key), value: Buffer.from(r.value) }));
      await tx
        .insertInto("crypto_records")
        .values(rows)
        .onConflict((oc) => oc.columns(["owner", "database", "store", "key"]).doUpdateSet((eb) => ({ value: eb.ref("excluded.value") })))
        .execute();
    }
  });
}

export async function deleteCryptoState(db: Db, owner?: string): Promise<number> {
  return db.transaction().execute(async (tx) => {
    let records = tx.deleteFrom("crypto_records");
    let databases = tx.deleteFrom("crypto_databases");
    if (owner !== undefined) {
      records = records.where("owner", "=", owner);
      databases = databases.where("owner", "=", owner);
    }
    const r = await records.executeTakeFirst();
    await databases.execute();
    return Number(r.numDeletedRows);
  });
}

export async function listSpaceLinks(db: Db, roomId?: string): Promise<SpaceLinkRecord[]> {
  let query = db.selectFrom("space_links").selectAll();
  if (roomId !== undefined) query = query.where("room_id", "=", roomId);
  const rows = await query.orderBy("room_id").orderBy("type").orderBy("state_key").execute();
  return rows.map((row) => ({ roomId: row.room_id, type: row.type, stateKey: row.state_key, runId: row.run_id, addedAt: row.added_at }));
}

export async function addSpaceLink(db: Db, r: SpaceLinkRecord): Promise<void> {
  await db
    .insertInto("space_links")
    .values({ room_id: r.roomId, type: r.type, state_key: r.stateKey, run_id: r.runId, added_at: r.addedAt })
    .onConflict((oc) => oc.columns(["room_id", "type", "state_key"]).doUpdateSet({ run_id: r.runId, added_at: r.addedAt }))
    .execute();
}

export async function removeSpaceLink(db: Db, roomId: string, type: SpaceLinkType, stateKey: string): Promise<boolean> {
  const r = await db.deleteFrom("space_links").where("room_id", "=", roomId).where("type", "=", type).where("state_key", "=", stateKey).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

export async function listExternals(db: Db, roomId?: string): Promise<ExternalRecord[]> {
  let query = db.selectFrom("external_members").selectAll();
  if (roomId !== undefined) query = query.where("room_id", "=", roomId);
  const rows = await query.orderBy("room_id").orderBy("user_id").execute();
  return rows.map((row) => ({
    roomId: row.room_id,
    userId: row.user_id,
    role: row.role,
    addedBy: row.added_by,
    addedAt: row.added_at,
  }));
}

export async function addExternal(db: Db, record: ExternalRecord): Promise<void> {
  await db
    .insertInto("external_members")
    .values({
      room_id: record.roomId,
      user_id: record.userId,
      role: record.role,
      added_by: record.addedBy,
      added_at: record.addedAt,
    })
    .onConflict((oc) =>
      oc.columns(["room_id", "user_id"]).doUpdateSet((eb) => ({
        role: eb.ref("excluded.role"),
        added_by: eb.ref("excluded.added_by"),
        added_at: eb.ref("excluded.added_at"),
      })),
    )
    .execute();
}

export async function removeExternal(db: Db, roomId: string, userId: string): Promise<boolean> {
  const result = await db
    .deleteFrom("external_members")
    .where("room_id", "=", roomId)
    .where("user_id", "=", userId)
    .executeTakeFirst();
  return result.numDeletedRows > 0n;
}

// --- managed rooms -----------------------------------------------------------------------

/**
 * Records a room's last run. A new room is managed; an existing one keeps its `managed`
 * flag. A null `roomId` (alias not resolved this time) keeps the room id known before.
 */
export type ManagedRoomUpsert = { room: string; roomId: string | null; lastRunId: number | null; lastOutcome: string | null; lastSummary: unknown; now: Date };

export async function upsertManagedRoom(db: Db, input: ManagedRoomUpsert): Promise<void> {
  await upsertManagedRooms(db, [input]);
}

/** One statement per INSERT_BATCH_ROWS rows (a reference given twice: its last row wins). */
export async function upsertManagedRooms(db: Db, inputs: readonly ManagedRoomUpsert[]): Promise<void> {
  if (inputs.length === 0) return;
  const byRoom = new Map(inputs.map((i) => [i.room, i]));
  const values = [...byRoom.values()].map((input) => ({
    room: input.room,
    room_id: input.roomId,
    last_run_id: input.lastRunId,
    last_outcome: input.lastOutcome,
    last_summary: toJson(input.lastSummary),
    updated_at: input.now,
  }));
  for (const batch of batches(values, INSERT_BATCH_ROWS)) {
    await db
      .insertInto("managed_rooms")
      .values(batch)
      .onConflict((oc) =>
        oc.column("room").doUpdateSet((eb) => ({
          room_id: eb.fn.coalesce("excluded.room_id", "managed_rooms.room_id"),
          last_run_id: eb.ref("excluded.last_run_id"),
          last_outcome: eb.ref("excluded.last_outcome"),
          last_summary: eb.ref("excluded.last_summary"),
          updated_at: eb.ref("excluded.updated_at"),
        })),
      )
      .execute();
  }
}

/** Sets the flag, creating the room's row if needed; a null `roomId` keeps the known one. */
export async function setManaged(db: Db, room: string, roomId: string | null, managed: boolean, now: Date): Promise<void> {
  await db
    .insertInto("managed_rooms")
    .values({ room, room_id: roomId, managed, last_run_id: null, last_outcome: null, last_summary: null, updated_at: now })
    .onConflict((oc) =>
      oc.column("room").doUpdateSet((eb) => ({
        room_id: eb.fn.coalesce("excluded.room_id", "managed_rooms.room_id"),
        managed: eb.ref("excluded.managed"),
        updated_at: eb.ref("excluded.updated_at"),
      })),
    )
    .execute();
}

/** Ordered by room. */
export async function listManagedRooms(db: Db): Promise<ManagedRoomRecord[]> {
  const rows = await db.selectFrom("managed_rooms").selectAll().orderBy("room").execute();
  return rows.map(toManagedRoomRecord);
}

function toManagedRoomRecord(row: Selectable<ManagedRoomsTable>): ManagedRoomRecord {
  return {
    room: row.room,
    roomId: row.room_id,
    managed: row.managed,
    lastRunId: row.last_run_id,
    lastOutcome: row.last_outcome,
    lastSummary: row.last_summary,
    updatedAt: row.updated_at,
  };
}

// --- the store ---------------------------------------------------------------------------

// --- handled command events ---------------------------------------------------------------

export async function markHandled(db: Db, eventId: string, roomId: string, at: Date): Promise<boolean> {
  const result = await db
    .insertInto("handled_events")
    .values({ event_id: eventId, room_id: roomId, handled_at: at })
    .onConflict((oc) => oc.column("event_id").doNothing())
    .executeTakeFirst();
  return (result.numInsertedOrUpdatedRows ?? 0n) > 0n;
}

export async function pruneHandled(db: Db, before: Date): Promise<number> {
  const result = await db.deleteFrom("handled_events").where("handled_at", "<", before).executeTakeFirst();
  return Number(result.numDeletedRows);
}

// --- token audit -------------------------------------------------------------------------

export async function recordTokenAudit(db: Db, e: TokenAuditRecord): Promise<void> {
  await db
    .insertInto("token_audit")
    .values({ at: e.at, actor: e.actor, place: e.place, action: e.action, token_ref: e.tokenRef, result: e.result, detail: toJson(e.detail) })
    .execute();
}

/** Newest first (`at`, then insertion order); with `tokenRefs`, along token_audit_token_ref_at_idx. */
export async function listTokenAudit(db: Db, limit: number, query: TokenAuditQuery = {}): Promise<TokenAuditRecord[]> {
  if (query.tokenRefs?.length === 0) return [];
  const rows = await tokenAuditQuery(db, limit, query).execute();
  return rows.map((r) => ({ at: r.at, actor: r.actor, place: r.place, action: r.action, tokenRef: r.token_ref, result: r.result, detail: r.detail }));
}

/** The query of `listTokenAudit`, unexecuted (tests EXPLAIN it). */
export function tokenAuditQuery(db: Db, limit: number, query: TokenAuditQuery = {}) {
  let q = db.selectFrom("token_audit").selectAll();
  const refs = query.tokenRefs;
  if (refs !== undefined) q = refs.length > 0 ? q.where("token_ref", "in", [...refs]) : q.where(sql<SqlBool>`false`);
  return q.orderBy("at", "desc").orderBy("id", "desc").limit(auditLimit(limit));
}

// --- retention ---------------------------------------------------------------------------

/** Runs deleted per transaction: a long backlog is pruned in steps, each one short. */
export const PRUNE_BATCH_RUNS = 200;

/**
 * Deletes old runs with their actions, and old token audit rows (a null date: none). Kept
 * whatever their age: runs still running (one may yet be finished or interrupted), and the
 * runs managed_rooms.last_run_id and held_removals.run_id point at — a room's last real run,
 * whose actions show what it did and why a kick is held. Neither table is touched: both have
 * no foreign key to sync_runs on purpose. Handled command events are not pruned here.
 */
export async function prune(db: Kysely<Database>, before: { readonly runs: Date | null; readonly tokenAudit: Date | null }): Promise<PruneCounts> {
  let runs = 0;
  let actions = 0;
  const runsBefore = before.runs;
  if (runsBefore !== null) {
    for (;;) {
      const step = await db.transaction().execute(async (trx) => {
        const ids = (
          await trx
            .selectFrom("sync_runs")
            .select("id")
            .where("started_at", "<", runsBefore)
            .where("outcome", "<>", "running")
            .where((eb) => eb.not(eb.exists(eb.selectFrom("managed_rooms").select("managed_rooms.last_run_id").whereRef("managed_rooms.last_run_id", "=", "sync_runs.id"))))
            .where((eb) => eb.not(eb.exists(eb.selectFrom("held_removals").select("held_removals.run_id").whereRef("held_removals.run_id", "=", "sync_runs.id"))))
            .orderBy("id")
            .limit(PRUNE_BATCH_RUNS)
            .execute()
        ).map((r) => r.id);
        if (ids.length === 0) return { runs: 0, actions: 0 };
        // Explicitly, not by the foreign key's cascade: to count them.
        const a = await trx.deleteFrom("run_actions").where("run_id", "in", ids).executeTakeFirst();
        const r = await trx.deleteFrom("sync_runs").where("id", "in", ids).executeTakeFirst();
        return { runs: Number(r.numDeletedRows), actions: Number(a.numDeletedRows) };
      });
      runs += step.runs;
      actions += step.actions;
      if (step.runs < PRUNE_BATCH_RUNS) break;
    }
  }
  let tokenAudit = 0;
  if (before.tokenAudit !== null) {
    const result = await db.deleteFrom("token_audit").where("at", "<", before.tokenAudit).executeTakeFirst();
    tokenAudit = Number(result.numDeletedRows);
  }
  return { runs, actions, tokenAudit };
}

// --- allow lists -------------------------------------------------------------------------

export async function listAllowed(db: Db, scope: string): Promise<AllowEntry[]> {
  const rows = await db.selectFrom("command_allow").selectAll().where("scope", "=", scope).orderBy("entry").execute();
  return rows.map((r) => ({
    scope: r.scope,
    entry: r.entry,
    kind: r.kind as AllowEntry["kind"],
    source: r.source as AllowEntry["source"],
    addedBy: r.added_by,
    addedAt: r.added_at,
  }));
}

export async function addAllowed(db: Db, e: AllowEntry): Promise<void> {
  await db
    .insertInto("command_allow")
    .values({ scope: e.scope, entry: e.entry, kind: e.kind, source: e.source, added_by: e.addedBy, added_at: e.addedAt })
    .onConflict((oc) =>
      oc.columns(["scope", "entry"]).doUpdateSet((eb) => ({
        kind: eb.ref("excluded.kind"),
        source: eb.ref("excluded.source"),
        added_by: eb.ref("excluded.added_by"),
        added_at: eb.ref("excluded.added_at"),
      })),
    )
    .execute();
}

export async function removeAllowed(db: Db, scope: string, entry: string): Promise<boolean> {
  const result = await db.deleteFrom("command_allow").where("scope", "=", scope).where("entry", "=", entry).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

export async function seedAllowed(
  db: Kysely<Database>,
  scope: string,
  entries: readonly Omit<AllowEntry, "scope" | "source" | "addedAt">[],
  now: Date,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.deleteFrom("command_allow").where("scope", "=", scope).where("source", "=", "config").execute();
    for (const e of entries) {
      await trx
        .insertInto("command_allow")
        .values({ scope, entry: e.entry, kind: e.kind, source: "config", added_by: e.addedBy, added_at: now })
        .onConflict((oc) => oc.columns(["scope", "entry"]).doNothing())
        .execute();
    }
  });
}

export type OpenStoreOptions = OpenDatabaseOptions;

/**
 * Opens the database (PostgreSQL when `databaseUrl` is set, else PGlite in `<dataDir>/pglite`),
 * applies pending migrations and returns the store. Throws an error naming the cause (the
 * unreachable server, the folder in use, the failed migration); nothing is left open then.
 */
export async function openStore(options: OpenStoreOptions): Promise<Store> {
  const opened = await openDatabase(options);
  const migrated = await migrateToLatest(opened.db);
  if (!migrated.ok) {
    await opened.close().catch(() => undefined);
    throw new Error(migrated.error.message, { cause: migrated.error.cause });
  }
  const { db } = opened;
  return {
    engine: opened.engine,
    startRun: (input) => startRun(db, { ...input, owner: opened.owner }),
    finishRun: (id, input) => finishRun(db, id, input),
    listRuns: (limit) => listRuns(db, limit),
    getRun: (id) => getRun(db, id),
    interruptDanglingRuns: (finishedAt) => interruptDanglingRuns(db, finishedAt, opened.engine, opened.owner),
    recordActions: (rows) => recordActions(db, rows),
    listActions: (runId) => listActions(db, runId),
    listUserActions: (userId, query) => listUserActions(db, userId, query),
    listHeld: (roomId) => listHeld(db, roomId),
    replaceHeld: (roomId, room, rows, runId, now) => replaceHeld(db, roomId, room, rows, runId, now),
    releaseHeld: (roomId, userIds, now) => releaseHeld(db, roomId, userIds, now),
    listExternals: (roomId) => listExternals(db, roomId),
    getDirectoryMarker: async (directory) =>
      (await db.selectFrom("directory_markers").select("marker").where("directory", "=", directory).executeTakeFirst())?.marker,
    putDirectoryMarker: async (directory, marker, at) => {
      await db
        .insertInto("directory_markers")
        .values({ directory, marker, seen_at: at })
        .onConflict((oc) => oc.column("directory").doUpdateSet({ marker, seen_at: at }))
        .execute();
    },
    getBotSession: (login) => getBotSession(db, login),
    putBotSession: (record) => putBotSession(db, record),
    loadCryptoState: (owner) => loadCryptoState(db, owner),
    saveCryptoState: (owner, changes) => saveCryptoState(db, owner, changes),
    deleteCryptoState: (owner) => deleteCryptoState(db, owner),
    listSpaceLinks: (roomId) => listSpaceLinks(db, roomId),
    addSpaceLink: (record) => addSpaceLink(db, record),
    removeSpaceLink: (roomId, type, stateKey) => removeSpaceLink(db, roomId, type, stateKey),
    addExternal: (record) => addExternal(db, record),
    removeExternal: (roomId, userId) => removeExternal(db, roomId, userId),
    upsertManagedRoom: (input) => upsertManagedRoom(db, input),
    upsertManagedRooms: (inputs) => upsertManagedRooms(db, inputs),
    setManaged: (room, roomId, managed, now) => setManaged(db, room, roomId, managed, now),
    listManagedRooms: () => listManagedRooms(db),
    markHandled: (eventId, roomId, at) => markHandled(db, eventId, roomId, at),
    pruneHandled: (before) => pruneHandled(db, before),
    recordTokenAudit: (entry) => recordTokenAudit(db, entry),
    listTokenAudit: (limit, query) => listTokenAudit(db, limit, query),
    prune: (before) => prune(db, before),
    listAllowed: (scope) => listAllowed(db, scope),
    addAllowed: (entry) => addAllowed(db, entry),
    removeAllowed: (scope, entry) => removeAllowed(db, scope, entry),
    seedAllowed: (scope, entries, now) => seedAllowed(db, scope, entries, now),
    close: () => opened.close(),
  };
}
