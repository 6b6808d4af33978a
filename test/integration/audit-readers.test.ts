/**
 * The audit readers against both engines: everything done to one user across rooms and
 * runs (`listUserActions`), and the token audit, newest first, bounded, filtered; and that
 * PostgreSQL (and PGlite) read them along the indexes of 2026-12-04T00-audit-readers.
 * Without a reachable PostgreSQL the postgres half is skipped, unless CI is set.
 */
import { CompiledQuery, sql, type Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { describeDatabaseUrl, openDatabase, type Database, type OpenedDatabase } from "../../src/store/database.ts";
import { openStore, tokenAuditQuery, userActionsQuery } from "../../src/store/kysely-store.ts";
import { migrateToLatest } from "../../src/store/migrate.ts";
import { MAX_AUDIT_ROWS, type ActionRecord, type Store, type TokenAuditRecord, type UserActionRecord } from "../../src/store/store.ts";
import { postgresUnreachable, TEST_DATABASE_URL, storeFixture, type StoreFixture } from "../helpers/postgres.ts";

const databaseUrl = TEST_DATABASE_URL;
const unreachable = await postgresUnreachable(databaseUrl);
const skipPostgres = unreachable !== undefined && !process.env.CI;
if (skipPostgres) console.warn(`audit reader tests: PostgreSQL at ${describeDatabaseUrl(databaseUrl)} is not reachable (${unreachable}): skipping the postgres half`);

const t = (iso: string): Date => new Date(`2026-12-01T${iso}Z`);

type Fixture = StoreFixture;

function fixture(engine: "pglite" | "postgres"): Promise<Fixture> {
  return storeFixture(engine, "readers", databaseUrl);
}

/** The plan of a compiled query, as PostgreSQL's JSON EXPLAIN. */
async function planOf(db: Kysely<Database>, query: { compile(): CompiledQuery }): Promise<PlanNode> {
  const c = query.compile();
  const r = await db.executeQuery<{ "QUERY PLAN": unknown }>(CompiledQuery.raw(`explain (format json) ${c.sql}`, [...c.parameters]));
  const raw = r.rows[0]?.["QUERY PLAN"];
  const doc = (typeof raw === "string" ? JSON.parse(raw) : raw) as { Plan: PlanNode }[];
  return doc[0]!.Plan;
}

interface PlanNode {
  readonly "Node Type": string;
  readonly "Index Name"?: string;
  readonly "Relation Name"?: string;
  readonly "Scan Direction"?: string;
  readonly Plans?: readonly PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

const usesIndex = (plan: readonly PlanNode[], index: string): boolean => plan.some((n) => n["Index Name"] === index);
const scansTable = (plan: readonly PlanNode[], table: string): boolean => plan.some((n) => n["Node Type"] === "Seq Scan" && n["Relation Name"] === table);

const engines = [
  { engine: "pglite" as const, skip: false },
  { engine: "postgres" as const, skip: skipPostgres },
];

for (const { engine, skip } of engines) {
  describe.skipIf(skip)(`audit readers on ${engine}`, () => {
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

    test("everything done to one user, across rooms and runs, newest first, with its run", async () => {
      const s = store!;
      const alice = "@alice:example.org";
      const r1 = await s.startRun({ trigger: "schedule", dryRun: false, startedAt: t("10:00:00") });
      const r2 = await s.startRun({ trigger: "cli", dryRun: true, startedAt: t("11:00:00") });
      const r3 = await s.startRun({ trigger: "command", dryRun: false, startedAt: t("12:00:00") });
      await s.finishRun(r1, { outcome: "ok", finishedAt: t("10:01:00"), summary: null });
      await s.finishRun(r2, { outcome: "ok", finishedAt: t("11:01:00"), summary: null });
      await s.recordActions([
        action(r1, alice, t("10:00:10")),
        action(r1, "@bob:example.org", t("10:00:10")),
        action(r1, null, t("10:00:11"), { kind: "set-power-levels", detail: { field: "kick", from: 50, to: 100 } }),
        action(r1, alice, t("10:00:12"), { kind: "set-power-levels", detail: { from: 0, to: 50 }, room: "#ops:example.org", roomId: "!ops:example.org" }),
        action(r1, null, t("10:00:13"), { kind: "room-error", outcome: "failed", error: "not joined", room: "#gone:example.org", roomId: null }),
      ]);
      await s.recordActions([action(r2, alice, t("11:00:10"), { kind: "kick", detail: { reason: "left" }, outcome: "planned" })]);
      // Two rows recorded at the same time: the later insert comes first.
      await s.recordActions([
        action(r3, alice, t("12:00:10"), { kind: "kick", detail: { reason: "left" }, outcome: "held" }),
        action(r3, alice, t("12:00:10"), { kind: "set-power-levels", detail: { from: 50, to: 0 }, outcome: "failed", error: "M_FORBIDDEN" }),
        action(r3, "@alice:example.org.evil", t("12:00:11")),
      ]);

      const rows = await s.listUserActions(alice);
      const shape = (r: UserActionRecord) => [r.runId, r.run.trigger, r.run.dryRun, r.run.startedAt, r.run.outcome, r.room, r.kind, r.outcome, r.error, r.at];
      expect(rows.map(shape)).toEqual([
        [r3, "command", false, t("12:00:00"), "running", "#eng:example.org", "set-power-levels", "failed", "M_FORBIDDEN", t("12:00:10")],
        [r3, "command", false, t("12:00:00"), "running", "#eng:example.org", "kick", "held", null, t("12:00:10")],
        [r2, "cli", true, t("11:00:00"), "ok", "#eng:example.org", "kick", "planned", null, t("11:00:10")],
        [r1, "schedule", false, t("10:00:00"), "ok", "#ops:example.org", "set-power-levels", "applied", null, t("10:00:12")],
        [r1, "schedule", false, t("10:00:00"), "ok", "#eng:example.org", "invite", "applied", null, t("10:00:10")],
      ]);
      expect(rows.every((r) => r.userId === alice)).toBe(true);
      expect(rows[3]).toMatchObject({ roomId: "!ops:example.org", detail: { from: 0, to: 50 } });
      expect(rows[0]!.id).toBeGreaterThan(rows[1]!.id);

      // Bounded, and paged on from the last row shown.
      expect((await s.listUserActions(alice, { limit: 2 })).map((r) => r.id)).toEqual(rows.slice(0, 2).map((r) => r.id));
      const last = rows[1]!;
      expect((await s.listUserActions(alice, { limit: 2, before: { at: last.at, id: last.id } })).map((r) => r.id)).toEqual(rows.slice(2, 4).map((r) => r.id));
      // The cursor's own time, an earlier id: the other row of that instant.
      expect((await s.listUserActions(alice, { before: { at: rows[0]!.at, id: rows[0]!.id } }))[0]?.id).toBe(rows[1]!.id);
      expect(await s.listUserActions("@nobody:example.org")).toEqual([]);
      await expect(s.listUserActions(alice, { limit: 0 })).rejects.toThrow(RangeError);
    });

    test("the default limit is 50, and no read returns more than MAX_AUDIT_ROWS", async () => {
      const s = store!;
      const run = await s.startRun({ trigger: "schedule", dryRun: false, startedAt: t("13:00:00") });
      const many = "@many:example.org";
      await s.recordActions(Array.from({ length: MAX_AUDIT_ROWS + 5 }, (_, i) => action(run, many, new Date(t("13:00:00").getTime() + i))));
      const page = await s.listUserActions(many);
      expect(page).toHaveLength(50);
      expect(page[0]!.at).toEqual(new Date(t("13:00:00").getTime() + MAX_AUDIT_ROWS + 4));
      expect(await s.listUserActions(many, { limit: 5000 })).toHaveLength(MAX_AUDIT_ROWS);
    });

    test("the token audit: newest first by time, bounded, filtered by stored reference", async () => {
      const s = store!;
      const entry = (at: Date, action: string, tokenRef: string | null, result = "ok"): TokenAuditRecord => ({ at, actor: "@op:example.org", place: "!mgmt:example.org", action, tokenRef, result, detail: null });
      // Recorded out of time order: the reader goes by `at`.
      await s.recordTokenAudit(entry(t("09:00:00"), "create", "abc…(16)"));
      await s.recordTokenAudit(entry(t("09:30:00"), "list", null));
      await s.recordTokenAudit(entry(t("08:00:00"), "create", "xyz…(16)"));
      await s.recordTokenAudit(entry(t("10:00:00"), "update", "abc…(16)"));
      await s.recordTokenAudit(entry(t("10:00:00"), "delete", "abc…(16)", "deleted"));
      await s.recordTokenAudit(entry(t("11:00:00"), "create", "01JD8Y1W5Q7ZK1X3V9M2N4P6RT"));

      const all = await s.listTokenAudit(50);
      expect(all.map((a) => [a.action, a.tokenRef, a.at])).toEqual([
        ["create", "01JD8Y1W5Q7ZK1X3V9M2N4P6RT", t("11:00:00")],
        ["delete", "abc…(16)", t("10:00:00")],
        ["update", "abc…(16)", t("10:00:00")],
        ["list", null, t("09:30:00")],
        ["create", "abc…(16)", t("09:00:00")],
        ["create", "xyz…(16)", t("08:00:00")],
      ]);
      expect(all[1]).toEqual(entry(t("10:00:00"), "delete", "abc…(16)", "deleted"));
      expect((await s.listTokenAudit(2)).map((a) => a.action)).toEqual(["create", "delete"]);
      expect((await s.listTokenAudit(50, { tokenRefs: ["abc…(16)"] })).map((a) => a.action)).toEqual(["delete", "update", "create"]);
      expect((await s.listTokenAudit(2, { tokenRefs: ["abc…(16)"] })).map((a) => a.action)).toEqual(["delete", "update"]);
      // The masked form and a MAS id side by side, as a caller passes both for what a person typed.
      expect((await s.listTokenAudit(50, { tokenRefs: ["01J…(26)", "01JD8Y1W5Q7ZK1X3V9M2N4P6RT"] })).map((a) => a.action)).toEqual(["create"]);
      expect(await s.listTokenAudit(50, { tokenRefs: [] })).toEqual([]);
      expect(await s.listTokenAudit(50, { tokenRefs: ["nope"] })).toEqual([]);
    });
  });

  describe.skipIf(skip)(`audit reader plans on ${engine}`, () => {
    let fx: Fixture | undefined;
    let opened: OpenedDatabase | undefined;

    beforeAll(async () => {
      fx = await fixture(engine);
      opened = await openDatabase(fx.options);
      const migrated = await migrateToLatest(opened.db);
      if (!migrated.ok) throw new Error(migrated.error.message);
      const db = opened.db;
      // 400 runs x 250 actions over 2,000 users (about 50 rows each; a few rows without a user), 20,000 rows
      // for one user, and 20,000 token audit rows over 4,000 refs.
      await sql`insert into sync_runs (trigger, dry_run, started_at, finished_at, outcome)
        select 'schedule', g % 5 = 0, timestamptz '2026-06-01' + g * interval '30 minutes', timestamptz '2026-06-01' + g * interval '30 minutes', 'ok'
        from generate_series(1, 400) g`.execute(db);
      await sql`insert into run_actions (run_id, room, room_id, kind, user_id, detail, outcome, error, at)
        select r.id, '#room-' || (a % 20) || ':example.org', '!r' || (a % 20) || ':example.org',
               case when a % 50 = 0 then 'set-power-levels' else 'invite' end,
               case when a % 50 = 0 then null else '@user' || ((r.id * 250 + a) % 2000) || ':example.org' end,
               '{}'::jsonb, 'applied', null, r.started_at + a * interval '1 second'
        from sync_runs r, generate_series(1, 250) a`.execute(db);
      await sql`insert into run_actions (run_id, room, room_id, kind, user_id, detail, outcome, error, at)
        select r.id, '#room-' || (a % 20) || ':example.org', '!r' || (a % 20) || ':example.org', 'kick', '@heavy:example.org',
               '{}'::jsonb, 'held', null, r.started_at + a * interval '1 second' + interval '500 milliseconds'
        from sync_runs r, generate_series(1, 50) a`.execute(db);
      await sql`insert into token_audit (at, actor, place, action, token_ref, result, detail)
        select timestamptz '2026-01-01' + g * interval '1 hour', '@op:example.org', '!mgmt:example.org', 'update', 'r' || (g % 4000) || '…(16)', 'ok', null
        from generate_series(1, 20000) g`.execute(db);
      await sql`analyze`.execute(db);
    });

    afterAll(async () => {
      try {
        await opened?.close();
      } finally {
        await fx?.cleanup();
      }
    });

    // A user with few rows: a bitmap scan of the index and a top-N sort of those few rows;
    // a user with many: the index read backwards, stopping after `limit` rows. Never the table.
    test("one user's actions are read along run_actions_user_at_idx, never by scanning run_actions", async () => {
      const db = opened!.db;
      for (const query of [{ limit: 50 }, { limit: 50, before: { at: new Date("2026-06-05T00:00:00Z"), id: 10_000 } }]) {
        const plan = nodes(await planOf(db, userActionsQuery(db, "@user7:example.org", query)));
        expect(usesIndex(plan, "run_actions_user_at_idx"), JSON.stringify(plan)).toBe(true);
        expect(scansTable(plan, "run_actions"), JSON.stringify(plan)).toBe(false);
      }
    });

    test("for a user with many rows the index is read backwards, with no sort", async () => {
      const db = opened!.db;
      for (const query of [{ limit: 50 }, { limit: 50, before: { at: new Date("2026-06-05T00:00:00Z"), id: 10_000 } }]) {
        const plan = nodes(await planOf(db, userActionsQuery(db, "@heavy:example.org", query)));
        expect(plan.find((n) => n["Index Name"] === "run_actions_user_at_idx"), JSON.stringify(plan)).toMatchObject({ "Node Type": "Index Scan", "Scan Direction": "Backward" });
        expect(plan.some((n) => n["Node Type"] === "Sort" || n["Node Type"] === "Incremental Sort"), JSON.stringify(plan)).toBe(false);
        expect(scansTable(plan, "run_actions")).toBe(false);
      }
    });

    test("one token's audit is read along token_audit_token_ref_at_idx, the whole audit along token_audit_at_idx", async () => {
      const db = opened!.db;
      const one = nodes(await planOf(db, tokenAuditQuery(db, 50, { tokenRefs: ["r7…(16)"] })));
      expect(usesIndex(one, "token_audit_token_ref_at_idx"), JSON.stringify(one)).toBe(true);
      expect(scansTable(one, "token_audit")).toBe(false);
      const two = nodes(await planOf(db, tokenAuditQuery(db, 50, { tokenRefs: ["r7…(16)", "r8…(16)"] })));
      expect(usesIndex(two, "token_audit_token_ref_at_idx"), JSON.stringify(two)).toBe(true);
      expect(scansTable(two, "token_audit")).toBe(false);
      const all = nodes(await planOf(db, tokenAuditQuery(db, 50)));
      expect(all.find((n) => n["Index Name"] === "token_audit_at_idx"), JSON.stringify(all)).toMatchObject({ "Scan Direction": "Backward" });
    });
  });
}
