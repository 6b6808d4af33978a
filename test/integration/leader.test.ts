/**
 * Leader election among replicas with a PostgreSQL session advisory lock, against the real
 * server: one leader at a time; when its session is killed, a standby takes over.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/log.ts";
import { waitForLeadership, type Leadership } from "../../src/service/leader.ts";
import { postgresUnreachable, TEST_DATABASE_URL } from "../helpers/postgres.ts";
import { waitUntil } from "../helpers/wait.ts";

const base = TEST_DATABASE_URL;

const skip = (await postgresUnreachable()) !== undefined && !process.env["CI"];
if (skip) console.warn("leader tests: PostgreSQL is not reachable: skipping (set CI to make this fail)");

// A schema of its own: the lock key includes current_schema(), so this test never contends
// with a real installation on the same database.
const schema = `t_leader_${randomBytes(4).toString("hex")}`;
const url = `${base}${base.includes("?") ? "&" : "?"}options=${encodeURIComponent(`-c search_path=${schema}`)}`;

afterAll(async () => {
  if (skip) return;
  const c = new pg.Client({ connectionString: base });
  await c.connect();
  await c.query(`drop schema if exists "${schema}" cascade`);
  await c.end();
});

describe.skipIf(skip)("leader lock on PostgreSQL", () => {
  it("one leader at a time; a standby takes over within seconds when the leader's session dies", async () => {
    const admin = new pg.Client({ connectionString: base });
    await admin.connect();
    await admin.query(`create schema if not exists "${schema}"`);
    const held: Leadership[] = [];
    try {
      const first = await waitForLeadership({ databaseUrl: url, log: silentLogger, retryMs: 200 });
      expect(first).toBeDefined();
      held.push(first!);
      let standbyTries = 0;
      let second: Leadership | undefined;
      const secondPromise = waitForLeadership({ databaseUrl: url, log: silentLogger, retryMs: 200, onStandby: () => standbyTries++ }).then((l) => {
        second = l;
        return l;
      });
      // The standby has tried three times (every 200 ms), and is still standing by.
      await waitUntil("the standby has tried the lock three times", () => standbyTries >= 3);
      expect(second).toBeUndefined();
      expect(standbyTries).toBeGreaterThanOrEqual(3);

      // Kill the leader's session, as a crashed process or a cut network would.
      const killedAt = Date.now();
      // Only the session holding this schema's lock (the key leader.ts derives from it): other
      // tests running beside this one hold advisory locks of their own.
      const pids = await admin.query<{ pid: number }>(
        `with k as (select hashtext('matrix-group-sync:' || $1::text)::bigint as key)
         select l.pid from pg_locks l, k
         where l.locktype = 'advisory' and l.granted and l.objsubid = 1 and l.pid <> pg_backend_pid()
           and l.database = (select oid from pg_database where datname = current_database())
           and l.objid::text::bigint = (k.key & 4294967295)
           and l.classid::text::bigint = ((k.key >> 32) & 4294967295)`,
        [schema],
      );
      expect(pids.rows).toHaveLength(1);
      expect(pids.rows.length).toBeGreaterThan(0);
      for (const { pid } of pids.rows) await admin.query("select pg_terminate_backend($1)", [pid]);
      const reason = await first!.lost;
      expect(reason).toMatch(/connection/);
      const takeover = await secondPromise;
      expect(takeover).toBeDefined();
      held.push(takeover!);
      expect(Date.now() - killedAt).toBeLessThan(10_000);
    } finally {
      for (const l of held) await l.release();
      await admin.end();
    }
  });

  it("a standby stops waiting when told to stop", async () => {
    const leader = await waitForLeadership({ databaseUrl: url, log: silentLogger, retryMs: 100 });
    try {
      const abort = new AbortController();
      const waiting = waitForLeadership({ databaseUrl: url, log: silentLogger, retryMs: 100, signal: abort.signal });
      setTimeout(() => abort.abort(), 300);
      expect(await waiting).toBeUndefined();
    } finally {
      await leader?.release();
    }
  });
});
