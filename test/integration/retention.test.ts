/**
 * Retention against both engines: `pruneHistory` / `Store.prune` delete old runs with their
 * actions and old token audit rows, and keep what held removals and managed rooms point at
 * and the runs still running; the end state is checked row by row. Also: the migration of
 * 2026-12-04 applies to a database of the schema before it, data kept and readable.
 * Without a reachable PostgreSQL the postgres half is skipped, unless CI is set.
 */
import { Migrator, sql } from "kysely";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { migrations } from "../../migrations/index.ts";
import { describeDatabaseUrl, openDatabase, type OpenedDatabase } from "../../src/store/database.ts";
import { listUserActions, openStore, PRUNE_BATCH_RUNS, recordActions, recordTokenAudit, startRun, finishRun } from "../../src/store/kysely-store.ts";
import { migrateToLatest } from "../../src/store/migrate.ts";
import { pruneHistory } from "../../src/store/retention.ts";
import type { ActionRecord, Store, TokenAuditRecord } from "../../src/store/store.ts";
import { postgresUnreachable, TEST_DATABASE_URL, storeFixture, type StoreFixture } from "../helpers/postgres.ts";

const databaseUrl = TEST_DATABASE_URL;
const unreachable = await postgresUnreachable(databaseUrl);
const skipPostgres = unreachable !== undefined && !process.env.CI;
if (skipPostgres) console.warn(`retention tests: PostgreSQL at ${describeDatabaseUrl(databaseUrl)} is not reachable (${unreachable}): skipping the postgres half`);

const DAY = 86_400_000;
const NOW = new Date("2026-12-04T12:00:00Z");
const daysAgo = (days: number, plusMs = 0): Date => new Date(NOW.getTime() - days * DAY + plusMs);

type Fixture = StoreFixture;

function fixture(engine: "pglite" | "postgres"): Promise<Fixture> {
  return storeFixture(engine, "retention", databaseUrl);
}

const action = (runId: number, userId: string | null, at: Date, extra: Partial<ActionRecord> = {}): ActionRecord => ({
  runId,
  room: "#eng:example.org",
  roomId: "!eng:example.org",
  kind: "invite",
  userId,
  detail: {},
  outcome: "applied",
  error: null,
  at,
  ...extra,
});

const audit = (at: Date, action: string): TokenAuditRecord => ({ at, actor: "@op:example.org", place: "!mgmt:example.org", action, tokenRef: "abc…(16)", result: "ok", detail: null });

const engines = [
  { engine: "pglite" as const, skip: false },
  { engine: "postgres" as const, skip: skipPostgres },
];

for (const { engine, skip } of engines) {
  describe.skipIf(skip)(`retention on ${engine}`, () => {
    let fx: Fixture | undefined;
    let store: Store | undefined;

    beforeAll(async () => {
      fx = await fixture(engine);
      store = await openStore(fx.options);
    });

    afterAll(async () => {
      try {
        await store?.close();
      } finally {
        await fx?.cleanup();
      }
    });

    test("old runs go with their actions; running runs and those rooms and held removals point at stay; old token audit rows go", async () => {
      const s = store!;
      const run = async (startedAt: Date, outcome: "ok" | "failed" | "interrupted" | "running", dryRun = false): Promise<number> => {
        const id = await s.startRun({ trigger: "schedule", dryRun, startedAt });
        if (outcome !== "running") await s.finishRun(id, { outcome, finishedAt: new Date(startedAt.getTime() + 60_000), summary: { outcome } });
        return id;
      };
      const oldOk = await run(daysAgo(200), "ok");
      const oldDry = await run(daysAgo(150), "failed", true);
      const oldRunning = await run(daysAgo(120), "running"); // dangling: not yet interrupted
      const oldRoomLast = await run(daysAgo(110), "ok"); // managed_rooms.last_run_id of #ops
      const oldHeld = await run(daysAgo(100), "ok"); // held_removals.run_id in #eng
      const oldInterrupted = await run(daysAgo(95), "interrupted");
      const atCutoff = await run(daysAgo(90), "ok"); // started exactly 90 days ago: kept
      const recent = await run(daysAgo(10), "ok");

      await s.recordActions([
        action(oldOk, "@alice:example.org", daysAgo(200, 1)),
        action(oldOk, "@bob:example.org", daysAgo(200, 2), { kind: "kick", detail: { reason: "left" } }),
        action(oldOk, null, daysAgo(200, 3), { kind: "room-error", outcome: "failed", error: "not joined" }),
        action(oldDry, "@alice:example.org", daysAgo(150, 1), { outcome: "planned" }),
        action(oldDry, "@carol:example.org", daysAgo(150, 2), { outcome: "planned" }),
        action(oldRunning, "@alice:example.org", daysAgo(120, 1)),
        action(oldRoomLast, "@alice:example.org", daysAgo(110, 1), { room: "#ops:example.org", roomId: "!ops:example.org", kind: "set-power-levels", detail: { from: 0, to: 50 } }),
        action(oldHeld, "@bob:example.org", daysAgo(100, 1), { kind: "kick", detail: { reason: "left" }, outcome: "held" }),
        action(atCutoff, "@alice:example.org", daysAgo(90, 1)),
        action(recent, "@alice:example.org", daysAgo(10, 1)),
      ]);
      await s.upsertManagedRoom({ room: "#ops:example.org", roomId: "!ops:example.org", lastRunId: oldRoomLast, lastOutcome: "ok", lastSummary: { invites: 0 }, now: daysAgo(110) });
      await s.upsertManagedRoom({ room: "#eng:example.org", roomId: "!eng:example.org", lastRunId: recent, lastOutcome: "ok", lastSummary: { invites: 1 }, now: daysAgo(10) });
      await s.replaceHeld("!eng:example.org", "#eng:example.org", [{ userId: "@bob:example.org", reason: "left" }], oldHeld, daysAgo(100));
      await s.releaseHeld("!eng:example.org", ["@bob:example.org"], daysAgo(99)); // released, not yet applied: still needed

      await s.recordTokenAudit(audit(daysAgo(400), "create"));
      await s.recordTokenAudit(audit(daysAgo(366), "update"));
      await s.recordTokenAudit(audit(daysAgo(365), "show")); // exactly a year: kept
      await s.recordTokenAudit(audit(daysAgo(1), "delete"));

      // Handled command events go with the runs' period.
      expect(await s.markHandled("$old-command", "!mgmt:example.org", daysAgo(120))).toBe(true);
      expect(await s.markHandled("$new-command", "!mgmt:example.org", daysAgo(1))).toBe(true);

      const heldBefore = await s.listHeld();
      const roomsBefore = await s.listManagedRooms();

      const result = await pruneHistory(s, { runs: "90d", tokenAudit: "365d" }, NOW);
      expect(result).toEqual({
        ok: true,
        value: { runs: 3, actions: 5, tokenAudit: 2, handledEvents: 1, runsBefore: daysAgo(90).toISOString(), tokenAuditBefore: daysAgo(365).toISOString() },
      });

      const runs = await s.listRuns(100);
      expect(runs.map((r) => [r.id, r.outcome])).toEqual([
        [recent, "ok"],
        [atCutoff, "ok"],
        [oldHeld, "ok"],
        [oldRoomLast, "ok"],
        [oldRunning, "running"],
      ]);
      expect(await s.getRun(oldOk)).toBeUndefined();
      expect(await s.getRun(oldInterrupted)).toBeUndefined();
      expect(await s.listActions(oldOk)).toEqual([]);
      expect(await s.listActions(oldDry)).toEqual([]);
      expect((await s.listActions(oldHeld)).map((a) => [a.userId, a.outcome])).toEqual([["@bob:example.org", "held"]]);
      expect((await s.listActions(oldRoomLast)).map((a) => [a.userId, a.kind])).toEqual([["@alice:example.org", "set-power-levels"]]);
      expect(await s.listActions(oldRunning)).toHaveLength(1);
      expect((await s.listUserActions("@alice:example.org")).map((a) => a.runId)).toEqual([recent, atCutoff, oldRoomLast, oldRunning]);
      expect(await s.listUserActions("@carol:example.org")).toEqual([]);
      // What held removals and rooms need is untouched.
      expect(await s.listHeld()).toEqual(heldBefore);
      expect(await s.listManagedRooms()).toEqual(roomsBefore);
      expect((await s.listTokenAudit(100)).map((a) => a.action)).toEqual(["delete", "show"]);
      expect(await s.markHandled("$new-command", "!mgmt:example.org", NOW)).toBe(false); // still recorded
      expect(await s.markHandled("$old-command", "!mgmt:example.org", daysAgo(120))).toBe(true); // was pruned (recorded again here)

      // Pruning again changes nothing.
      expect(await pruneHistory(s, { runs: "90d", tokenAudit: "365d" }, NOW)).toMatchObject({ ok: true, value: { runs: 0, actions: 0, tokenAudit: 0, handledEvents: 1 } });

      // Once the run finishes, and the room and the held removal move on, those go too.
      await s.finishRun(oldRunning, { outcome: "interrupted", finishedAt: daysAgo(0), summary: null });
      await s.upsertManagedRoom({ room: "#ops:example.org", roomId: "!ops:example.org", lastRunId: recent, lastOutcome: "ok", lastSummary: null, now: daysAgo(10) });
      await s.replaceHeld("!eng:example.org", "#eng:example.org", [], recent, daysAgo(10));
      expect(await pruneHistory(s, { runs: "90d", tokenAudit: "never" }, NOW)).toEqual({
        ok: true,
        value: { runs: 3, actions: 3, tokenAudit: 0, handledEvents: 0, runsBefore: daysAgo(90).toISOString(), tokenAuditBefore: null },
      });
      expect((await s.listRuns(100)).map((r) => r.id)).toEqual([recent, atCutoff]);
      expect((await s.listTokenAudit(100)).map((a) => a.action)).toEqual(["delete", "show"]);
    });

    test("never keeps everything; a backlog longer than one batch is pruned whole", async () => {
      const s = store!;
      const before = (await s.listRuns(1000)).map((r) => r.id);
      const backlog: number[] = [];
      for (let i = 0; i < PRUNE_BATCH_RUNS * 2 + 7; i++) {
        const id = await s.startRun({ trigger: "schedule", dryRun: i % 3 === 0, startedAt: daysAgo(300, i * 60_000) });
        await s.finishRun(id, { outcome: "ok", finishedAt: daysAgo(300, i * 60_000 + 1000), summary: null });
        backlog.push(id);
      }
      await s.recordActions(backlog.map((id, i) => action(id, `@u${i}:example.org`, daysAgo(300, i * 60_000 + 10))));

      expect(await pruneHistory(s, { runs: "never", tokenAudit: "never" }, NOW)).toEqual({
        ok: true,
        value: { runs: 0, actions: 0, tokenAudit: 0, handledEvents: 0, runsBefore: null, tokenAuditBefore: null },
      });
      expect(await s.listRuns(1000)).toHaveLength(before.length + backlog.length);

      expect(await s.prune({ runs: daysAgo(90), tokenAudit: null })).toEqual({ runs: backlog.length, actions: backlog.length, tokenAudit: 0 });
      expect((await s.listRuns(1000)).map((r) => r.id)).toEqual(before);
    });
  });

  describe.skipIf(skip)(`pruneHistory on a closed ${engine} store`, () => {
    let fx: Fixture | undefined;
    afterEach(async () => {
      await fx?.cleanup();
      fx = undefined;
    });

    test("returns the database error instead of throwing", async () => {
      fx = await fixture(engine);
      const s = await openStore(fx.options);
      await s.close();
      const result = await pruneHistory(s, { runs: "90d", tokenAudit: "365d" }, NOW);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.error.message).toMatch(/^cannot prune the audit history: ./);
    });
  });

  describe.skipIf(skip)(`the 2026-12-04 migration on an existing ${engine} database`, () => {
    let fx: Fixture | undefined;
    let opened: OpenedDatabase | undefined;

    afterEach(async () => {
      try {
        await opened?.close();
      } finally {
        opened = undefined;
        await fx?.cleanup();
        fx = undefined;
      }
    });

    test("applies to a database of the schema before it; its data stays and reads through the new readers", async () => {
      fx = await fixture(engine);
      opened = await openDatabase(fx.options);
      const db = opened.db;
      const { rows } = await sql<{ schema: string }>`select current_schema() as schema`.execute(db);
      const previous = Object.fromEntries(Object.entries(migrations).filter(([name]) => name < "2026-12-04T00-audit-readers"));
      const older = new Migrator({ db, provider: { getMigrations: () => Promise.resolve(previous) }, migrationTableSchema: rows[0]!.schema });
      const first = await older.migrateToLatest();
      expect(first.error).toBeUndefined();
      expect(first.results?.map((r) => r.migrationName)).toEqual(Object.keys(previous));

      // Data written by the previous version.
      const run = await startRun(db, { trigger: "schedule", dryRun: false, startedAt: daysAgo(5) });
      await finishRun(db, run, { outcome: "ok", finishedAt: daysAgo(5, 1000), summary: { invites: 2 } });
      await recordActions(db, [action(run, "@alice:example.org", daysAgo(5, 1)), action(run, "@alice:example.org", daysAgo(5, 2), { kind: "kick", detail: { reason: "left" } })]);
      await recordTokenAudit(db, audit(daysAgo(5), "create"));

      // This migration and every later one.
      expect(await migrateToLatest(db)).toEqual({ ok: true, value: { applied: Object.keys(migrations).filter((name) => name >= "2026-12-04T00-audit-readers") } });
      const indexes = await sql<{ indexname: string }>`select indexname from pg_indexes where schemaname = current_schema() and indexname in ('run_actions_user_at_idx', 'token_audit_token_ref_at_idx') order by indexname`.execute(db);
      expect(indexes.rows.map((r) => r.indexname)).toEqual(["run_actions_user_at_idx", "token_audit_token_ref_at_idx"]);
      expect((await listUserActions(db, "@alice:example.org")).map((a) => [a.kind, a.run.startedAt])).toEqual([
        ["kick", daysAgo(5)],
        ["invite", daysAgo(5)],
      ]);
      expect(await migrateToLatest(db)).toEqual({ ok: true, value: { applied: [] } });
    });
  });
}
