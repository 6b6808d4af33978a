/**
 * The store against both engines: embedded PGlite (a fresh temp folder) and PostgreSQL
 * (a fresh schema in the `test` database; MGS_TEST_DATABASE_URL overrides the URL).
 * Without a reachable PostgreSQL the postgres half is skipped with one console line,
 * unless CI is set: then it fails.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import path from "node:path";
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { describeDatabaseUrl, openDatabase } from "../../src/store/database.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import { migrations } from "../../migrations/index.ts";
import { migrateToLatest } from "../../src/store/migrate.ts";
import type { ActionRecord, Store } from "../../src/store/store.ts";
import { postgresUnreachable, TEST_DATABASE_URL, storeFixture, type StoreFixture } from "../helpers/postgres.ts";

const databaseUrl = TEST_DATABASE_URL;

const unreachable = await postgresUnreachable(databaseUrl);
const skipPostgres = unreachable !== undefined && !process.env.CI;
if (skipPostgres) {
  console.warn(
    `store tests: PostgreSQL at ${describeDatabaseUrl(databaseUrl)} is not reachable (${unreachable}): skipping the postgres half (set CI to make this fail)`,
  );
}

const t = (iso: string): Date => new Date(`2026-11-25T${iso}Z`);

/** JSON values of every shape, for summaries and details. */
const jsonSamples: unknown[] = [
  { invited: 3, kicked: 0, failures: [{ user: "@a:x", error: "M_FORBIDDEN" }] },
  ["a", 1, true, null, { nested: ["deep"] }],
  "just a string",
  "",
  null,
  42,
  -1.5,
  true,
  { unicode: "Grüße 🎉 \"quoted\" back\\slash", empty: {}, list: [] },
];

type Fixture = StoreFixture;

function fixture(engine: "pglite" | "postgres"): Promise<Fixture> {
  return storeFixture(engine, "store", databaseUrl);
}

const engines = [
  { engine: "pglite" as const, skip: false },
  { engine: "postgres" as const, skip: skipPostgres },
];

for (const { engine, skip } of engines) {
  describe.skipIf(skip)(`store on ${engine}`, () => {
    let fx: Fixture;
    let store: Store;
    let bigRunId: number | undefined;

    beforeAll(async () => {
      fx = await fixture(engine);
      store = await openStore(fx.options);
    });

    afterAll(async () => {
      await store?.close();
      // When the store never opened, cleanup failing (no server) only repeats that error.
      await fx?.cleanup().catch((err: unknown) => {
        if (store !== undefined) throw err;
      });
    });

    test("reports its engine", () => {
      expect(store.engine).toBe(engine);
    });

    test("runs: start, finish, list newest first, interrupt the dangling ones", async () => {
      expect(await store.interruptDanglingRuns(t("09:00:00"))).toBe(0);

      const first = await store.startRun({ trigger: "schedule", dryRun: false, startedAt: t("10:00:00") });
      const second = await store.startRun({ trigger: "cli", dryRun: true, startedAt: t("10:05:00") });
      const third = await store.startRun({ trigger: "command", dryRun: false, startedAt: t("10:10:00") });
      expect(typeof first).toBe("number");
      expect(second).toBeGreaterThan(first);
      expect(third).toBeGreaterThan(second);

      const summary = { invited: 2, kicked: 1, failures: [{ room: "#a:x", error: "M_FORBIDDEN" }] };
      await store.finishRun(second, { outcome: "failed", finishedAt: t("10:06:00"), summary, error: "room #a:x failed" });

      expect(await store.listRuns(10)).toEqual([
        { id: third, trigger: "command", dryRun: false, startedAt: t("10:10:00"), finishedAt: null, outcome: "running", summary: null, error: null },
        { id: second, trigger: "cli", dryRun: true, startedAt: t("10:05:00"), finishedAt: t("10:06:00"), outcome: "failed", summary, error: "room #a:x failed" },
        { id: first, trigger: "schedule", dryRun: false, startedAt: t("10:00:00"), finishedAt: null, outcome: "running", summary: null, error: null },
      ]);
      expect((await store.listRuns(2)).map((r) => r.id)).toEqual([third, second]);

      expect(await store.interruptDanglingRuns(t("11:00:00"))).toBe(2);
      const after = await store.listRuns(10);
      expect(after.map((r) => [r.id, r.outcome, r.finishedAt])).toEqual([
        [third, "interrupted", t("11:00:00")],
        [second, "failed", t("10:06:00")],
        [first, "interrupted", t("11:00:00")],
      ]);
      expect(await store.interruptDanglingRuns(t("12:00:00"))).toBe(0);
    });

    test("runs: summaries of every JSON shape round-trip", async () => {
      for (const summary of jsonSamples) {
        const id = await store.startRun({ trigger: "demo", dryRun: true, startedAt: t("13:00:00") });
        await store.finishRun(id, { outcome: "ok", finishedAt: t("13:00:01"), summary });
        const [run] = await store.listRuns(1);
        expect(run).toMatchObject({ id, outcome: "ok", error: null });
        expect(run?.summary).toEqual(summary);
      }
    });

    test("runs: finishing an unknown run is an error", async () => {
      await expect(store.finishRun(987_654_321, { outcome: "ok", finishedAt: t("13:00:00"), summary: null })).rejects.toThrow(
        /987654321/,
      );
    });

    test("actions: 2,500 rows are recorded in batches and read back equal", async () => {
      const runId = await store.startRun({ trigger: "cli", dryRun: false, startedAt: t("14:00:00") });
      const other = await store.startRun({ trigger: "cli", dryRun: false, startedAt: t("14:00:00") });
      const outcomes = ["planned", "applied", "failed", "held", "skipped"] as const;
      const rows: ActionRecord[] = Array.from({ length: 2500 }, (_, i) => ({
        runId,
        room: `#room-${i % 7}:example.org`,
        roomId: i % 5 === 0 ? null : `!r${i % 7}:example.org`,
        kind: (["invite", "kick", "set-power-levels", "room-error"] as const)[i % 4]!,
        userId: i % 4 === 3 ? null : `@user${i}:example.org`,
        detail: i < jsonSamples.length ? jsonSamples[i] : { index: i, levels: { from: 0, to: 50 } },
        outcome: outcomes[i % outcomes.length]!,
        error: i % 5 === 2 ? `error ${i}` : null,
        at: new Date(t("14:00:00").getTime() + i),
      }));
      await store.recordActions(rows);
      await store.recordActions([{ ...rows[0]!, runId: other }]);
      await store.recordActions([]);

      bigRunId = runId;
      const back = await store.listActions(runId);
      expect(back).toHaveLength(2500);
      expect(back).toEqual(rows);
      expect(await store.listActions(other)).toEqual([{ ...rows[0]!, runId: other }]);
    });

    test("actions: a failing batch insert records nothing", async () => {
      const runId = await store.startRun({ trigger: "cli", dryRun: false, startedAt: t("15:00:00") });
      const rows: ActionRecord[] = Array.from({ length: 1500 }, (_, i) => ({
        runId: i === 1400 ? 987_654_321 : runId, // violates the foreign key in the second batch
        room: "#r:x",
        roomId: null,
        kind: "invite",
        userId: `@u${i}:x`,
        detail: null,
        outcome: "planned",
        error: null,
        at: t("15:00:00"),
      }));
      await expect(store.recordActions(rows)).rejects.toThrow();
      expect(await store.listActions(runId)).toEqual([]);
    });

    test("held removals: replace, release, list", async () => {
      const roomA = "!a:example.org";
      const roomB = "!b:example.org";
      await store.replaceHeld(roomB, "#b:example.org", [{ userId: "@z:x", reason: "left group" }], 1, t("09:00:00"));
      await store.replaceHeld(
        roomA,
        "#a:example.org",
        [
          { userId: "@u1:x", reason: "not in group" },
          { userId: "@u2:x", reason: "not in group" },
          { userId: "@u3:x", reason: "cautious mode" },
        ],
        7,
        t("10:00:00"),
      );
      const held = (userId: string, reason: string, runId: number, heldAt: Date, releasedAt: Date | null = null) => ({
        roomId: roomA,
        room: "#a:example.org",
        userId,
        reason,
        runId,
        heldAt,
        releasedAt,
      });
      expect(await store.listHeld(roomA)).toEqual([
        held("@u1:x", "not in group", 7, t("10:00:00")),
        held("@u2:x", "not in group", 7, t("10:00:00")),
        held("@u3:x", "cautious mode", 7, t("10:00:00")),
      ]);

      expect(await store.releaseHeld(roomA, ["@u2:x"], t("10:30:00"))).toBe(1);
      expect(await store.releaseHeld(roomA, ["@u2:x"], t("10:31:00"))).toBe(0); // already released
      expect(await store.releaseHeld(roomA, ["@nobody:x"], t("10:31:00"))).toBe(0);
      expect(await store.releaseHeld(roomA, [], t("10:31:00"))).toBe(0);
      expect(await store.releaseHeld(roomA, "all", t("10:45:00"))).toBe(2);
      expect(await store.listHeld(roomA)).toEqual([
        held("@u1:x", "not in group", 7, t("10:00:00"), t("10:45:00")),
        held("@u2:x", "not in group", 7, t("10:00:00"), t("10:30:00")),
        held("@u3:x", "cautious mode", 7, t("10:00:00"), t("10:45:00")),
      ]);

      // The next real run: the held set becomes exactly what it holds now, unreleased.
      await store.replaceHeld(
        roomA,
        "#a:example.org",
        [
          { userId: "@u1:x", reason: "still not in group" },
          { userId: "@u4:x", reason: "not in group" },
        ],
        8,
        t("11:00:00"),
      );
      expect(await store.listHeld(roomA)).toEqual([
        held("@u1:x", "still not in group", 8, t("11:00:00")),
        held("@u4:x", "not in group", 8, t("11:00:00")),
      ]);

      // A user still held keeps the time they were first held.
      await store.replaceHeld(
        roomA,
        "#a:example.org",
        [
          { userId: "@u4:x", reason: "not in group" },
          { userId: "@u5:x", reason: "not in group" },
        ],
        9,
        t("12:00:00"),
      );
      expect(await store.listHeld(roomA)).toEqual([
        held("@u4:x", "not in group", 9, t("11:00:00")),
        held("@u5:x", "not in group", 9, t("12:00:00")),
      ]);

      // Room B was never touched; listing without a room lists every room.
      const all = await store.listHeld();
      expect(all.map((h) => [h.roomId, h.userId, h.releasedAt])).toEqual([
        [roomA, "@u4:x", null],
        [roomA, "@u5:x", null],
        [roomB, "@z:x", null],
      ]);

      await store.replaceHeld(roomA, "#a:example.org", [], 10, t("13:00:00"));
      expect(await store.listHeld(roomA)).toEqual([]);
      expect(await store.listHeld(roomB)).toHaveLength(1);
    });

    test("external members: add (upsert), remove, list", async () => {
      const ext = (roomId: string, userId: string, role: string, addedAt: Date) => ({
        roomId,
        userId,
        role,
        addedBy: "@admin:example.org",
        addedAt,
      });
      await store.addExternal(ext("!a:x", "@guest:other.org", "member", t("10:00:00")));
      await store.addExternal(ext("!a:x", "@bot:other.org", "member", t("10:01:00")));
      await store.addExternal(ext("!b:x", "@guest:other.org", "member", t("10:02:00")));
      await store.addExternal(ext("!a:x", "@guest:other.org", "admin", t("10:03:00")));

      expect(await store.listExternals("!a:x")).toEqual([
        ext("!a:x", "@bot:other.org", "member", t("10:01:00")),
        ext("!a:x", "@guest:other.org", "admin", t("10:03:00")),
      ]);
      expect(await store.listExternals()).toHaveLength(3);

      expect(await store.removeExternal("!a:x", "@guest:other.org")).toBe(true);
      expect(await store.removeExternal("!a:x", "@guest:other.org")).toBe(false);
      expect(await store.listExternals()).toEqual([
        ext("!a:x", "@bot:other.org", "member", t("10:01:00")),
        ext("!b:x", "@guest:other.org", "member", t("10:02:00")),
      ]);
    });

    test("managed rooms in a batch: one row per room (the last of a room given twice), more rooms than one statement takes, the known room id kept", async () => {
      // A store of its own: the other tests list the managed rooms of theirs.
      const own = await storeFixture(engine, "store_batch", databaseUrl);
      const store = await openStore(own.options);
      try {
      await store.upsertManagedRoom({ room: "#kept:example.org", roomId: "!kept:example.org", lastRunId: 1, lastOutcome: "ok", lastSummary: null, now: t("09:00:00") });
      const rows = Array.from({ length: 1_205 }, (_, i) => ({
        room: `#r${String(i).padStart(4, "0")}:example.org`,
        roomId: `!r${i}:example.org`,
        lastRunId: 7,
        lastOutcome: "ok",
        lastSummary: { n: i },
        now: t("10:00:00"),
      }));
      await store.upsertManagedRooms([
        ...rows,
        { room: "#r0000:example.org", roomId: "!r0:example.org", lastRunId: 7, lastOutcome: "failed", lastSummary: { error: "later" }, now: t("10:00:01") },
        { room: "#kept:example.org", roomId: null, lastRunId: 7, lastOutcome: "failed", lastSummary: { error: "alias did not resolve" }, now: t("10:00:02") },
      ]);
      await store.upsertManagedRooms([]);
      const listed = await store.listManagedRooms();
      expect(listed).toHaveLength(1_206);
      expect(listed.find((r) => r.room === "#r0000:example.org")).toMatchObject({ lastOutcome: "failed", lastSummary: { error: "later" } });
      expect(listed.find((r) => r.room === "#r1204:example.org")).toMatchObject({ roomId: "!r1204:example.org", lastRunId: 7, lastSummary: { n: 1204 } });
      expect(listed.find((r) => r.room === "#kept:example.org")).toMatchObject({ roomId: "!kept:example.org", lastRunId: 7, lastOutcome: "failed" });
      } finally {
        await store.close();
        await own.cleanup();
      }
    });

    test("managed rooms: upsert, setManaged, list", async () => {
      const summary = { invited: 1, kicked: 0, byKind: ["invite"] };
      await store.upsertManagedRoom({
        room: "#team:example.org",
        roomId: "!team:example.org",
        lastRunId: 5,
        lastOutcome: "ok",
        lastSummary: summary,
        now: t("10:00:00"),
      });
      await store.setManaged("#team:example.org", null, false, t("10:05:00"));
      await store.setManaged("!raw:example.org", "!raw:example.org", false, t("10:06:00"));
      expect(await store.listManagedRooms()).toEqual([
        {
          room: "!raw:example.org",
          roomId: "!raw:example.org",
          managed: false,
          lastRunId: null,
          lastOutcome: null,
          lastSummary: null,
          updatedAt: t("10:06:00"),
        },
        {
          room: "#team:example.org",
          roomId: "!team:example.org",
          managed: false,
          lastRunId: 5,
          lastOutcome: "ok",
          lastSummary: summary,
          updatedAt: t("10:05:00"),
        },
      ]);

      // A later run keeps the flag; an unresolved alias keeps the room id known before.
      await store.upsertManagedRoom({
        room: "#team:example.org",
        roomId: null,
        lastRunId: 6,
        lastOutcome: "failed",
        lastSummary: "alias did not resolve",
        now: t("11:00:00"),
      });
      await store.setManaged("!raw:example.org", null, true, t("11:01:00"));
      await store.upsertManagedRoom({
        room: "#new:example.org",
        roomId: null,
        lastRunId: 6,
        lastOutcome: "ok",
        lastSummary: [1, 2],
        now: t("11:02:00"),
      });
      expect(await store.listManagedRooms()).toEqual([
        {
          room: "!raw:example.org",
          roomId: "!raw:example.org",
          managed: true,
          lastRunId: null,
          lastOutcome: null,
          lastSummary: null,
          updatedAt: t("11:01:00"),
        },
        {
          room: "#new:example.org",
          roomId: null,
          managed: true,
          lastRunId: 6,
          lastOutcome: "ok",
          lastSummary: [1, 2],
          updatedAt: t("11:02:00"),
        },
        {
          room: "#team:example.org",
          roomId: "!team:example.org",
          managed: false,
          lastRunId: 6,
          lastOutcome: "failed",
          lastSummary: "alias did not resolve",
          updatedAt: t("11:00:00"),
        },
      ]);
    });

    test.runIf(engine === "pglite")("a second open of the same data folder is refused while the first is open", async () => {
      await expect(openStore(fx.options)).rejects.toThrow(/in use by process \d+/);
    });

    test("reopening keeps the data, and migrating again is a no-op", async () => {
      const before = {
        runs: await store.listRuns(100),
        held: await store.listHeld(),
        externals: await store.listExternals(),
        rooms: await store.listManagedRooms(),
      };
      expect(before.runs.length).toBeGreaterThan(0);
      await store.close();

      const opened = await openDatabase(fx.options);
      try {
        expect(await migrateToLatest(opened.db)).toEqual({ ok: true, value: { applied: [] } });
      } finally {
        await opened.close();
      }

      if (engine === "pglite") {
        // A lock left behind by a process that is gone (here: "our" pid after a container
        // restart, not held by this process) does not block the next start.
        const lock = { pid: process.pid, hostname: hostname(), since: "2026-11-24T00:00:00Z", token: "old" };
        await writeFile(path.join(fx.options.dataDir, "pglite.lock"), JSON.stringify(lock));
      }
      store = await openStore(fx.options);
      expect({
        runs: await store.listRuns(100),
        held: await store.listHeld(),
        externals: await store.listExternals(),
        rooms: await store.listManagedRooms(),
      }).toEqual(before);
      expect(await store.listActions(bigRunId!)).toHaveLength(2500);
    });
  });
}

// PostgreSQL only: a fresh schema is cheap there (a fresh PGlite folder costs seconds).
describe.skipIf(skipPostgres)("migrations on postgres", () => {
  async function withFreshSchema(body: (opened: Awaited<ReturnType<typeof openDatabase>>) => Promise<void>): Promise<void> {
    const schema = `t_migrate_${randomBytes(6).toString("hex")}`;
    const opened = await openDatabase({ databaseUrl, dataDir: "/nonexistent-unused", schema });
    try {
      await body(opened);
    } finally {
      await opened.close();
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      await client.query(`drop schema if exists "${schema}" cascade`);
      await client.end();
    }
  }

  test("an empty schema gets every migration, once", async () => {
    await withFreshSchema(async (opened) => {
      expect(await migrateToLatest(opened.db)).toEqual({ ok: true, value: { applied: Object.keys(migrations) } });
      expect(await migrateToLatest(opened.db)).toEqual({ ok: true, value: { applied: [] } });
    });
  });

  test("a failed migration is reported by name and leaves nothing behind", async () => {
    await withFreshSchema(async (opened) => {
      await sql`create table managed_rooms (something text)`.execute(opened.db);
      const result = await migrateToLatest(opened.db);
      expect(result.ok).toBe(false);
      if (!result.ok) {
        expect(result.error.message).toMatch(/^database migration 2026-11-25T00-initial failed: .*managed_rooms.*already exists/);
      }
      // The migration ran in a transaction: its earlier tables were rolled back.
      const { rows } = await sql<{ n: number }>`select count(*) as n from pg_tables where schemaname = current_schema() and tablename = 'sync_runs'`.execute(opened.db);
      expect(rows).toEqual([{ n: 0 }]);
    });
  });
});

for (const { engine, skip } of engines) {
  describe.skipIf(skip)(`serve-mode tables on ${engine}`, () => {
    let fx: Fixture;
    let store: Store;
    beforeAll(async () => {
      fx = await fixture(engine);
      store = await openStore(fx.options);
    });
    afterAll(async () => {
      await store.close();
      await fx.cleanup();
    });

    test("an event is handled once, and old records are pruned", async () => {
      expect(await store.markHandled("$a", "!r:x", t("10:00:00"))).toBe(true);
      expect(await store.markHandled("$a", "!r:x", t("10:00:01"))).toBe(false);
      expect(await store.markHandled("$b", "!r:x", t("11:00:00"))).toBe(true);
      expect(await store.pruneHandled(t("10:30:00"))).toBe(1);
      // Pruned: it could be marked again (it is too old to be replayed by then).
      expect(await store.markHandled("$a", "!r:x", t("12:00:00"))).toBe(true);
      expect(await store.markHandled("$b", "!r:x", t("12:00:00"))).toBe(false);
    });

    test("allow lists: add, update, remove, and seeding from the config keeps command entries", async () => {
      await store.addAllowed({ scope: "commands", entry: "@op:x", kind: "user", source: "command", addedBy: "@admin:x", addedAt: t("10:00:00") });
      await store.seedAllowed("commands", [{ entry: "@cfg:x", kind: "user", addedBy: "config" }, { entry: "@.*-admin:x", kind: "regex", addedBy: "config" }], t("10:01:00"));
      expect((await store.listAllowed("commands")).map((e) => [e.entry, e.kind, e.source])).toEqual([
        ["@.*-admin:x", "regex", "config"],
        ["@cfg:x", "user", "config"],
        ["@op:x", "user", "command"],
      ]);
      await store.seedAllowed("commands", [{ entry: "@cfg2:x", kind: "user", addedBy: "config" }], t("10:02:00"));
      expect((await store.listAllowed("commands")).map((e) => e.entry)).toEqual(["@cfg2:x", "@op:x"]);
      expect(await store.removeAllowed("commands", "@op:x")).toBe(true);
      expect(await store.removeAllowed("commands", "@op:x")).toBe(false);
      expect(await store.listAllowed("tokens")).toEqual([]);
    });
  });
}
