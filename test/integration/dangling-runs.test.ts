/**
 * A run whose process was killed (SIGKILL: no chance to record anything) is marked
 * interrupted by whoever takes the store next — a CLI command as well as serve — and only
 * such runs: with PostgreSQL a run of another live process sharing the database (a serving
 * leader, here a store held open by the test) stays "running".
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, type CliIo } from "../../src/main.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import type { RunRecord, Store } from "../../src/store/store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { TEST_DATABASE_URL, postgresUnreachable } from "../helpers/postgres.ts";
import { HANG_GUARD_MS, startBin } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";

const BOT = "@bot:example.org";
const skipPostgres = (await postgresUnreachable()) !== undefined;

let dir: string;
let hs: FakeHomeserver;
let token: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-dangling-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  token = hs.registerUser(BOT);
  await writeFile(join(dir, "directory.yaml"), "users: [a1, a2]\ngroups:\n  - { id: g, members: [a1, a2] }\n");
});

afterAll(async () => {
  await hs?.close();
  await rm(dir, { recursive: true, force: true });
});

async function writeConfig(name: string, room: string, storage: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(
    path,
    `homeserver: { url: ${hs.url}, accessToken: ${token}, concurrency: 1, requestTimeoutMs: 600000 }
${storage}
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - { room: "${room}", groups: [ { group: g } ] }
log: { level: error }
`,
  );
  return path;
}

/**
 * Starts `sync` in a child process, waits until its run is under way (its room read reached
 * the homeserver, which never answers it), and kills it with SIGKILL.
 */
async function killMidRun(config: string): Promise<void> {
  hs.stallNext("state", 1, { apply: false });
  const child = startBin(["sync", "--config", config], { cwd: dir });
  await waitUntil("the child's run reads the room", () => hs.stalledRequests() === 1 || !child.running, () => child.tail());
  expect(child.running, `the child ended before its run reached the homeserver\n${child.tail()}`).toBe(true);
  await child.kill();
}

async function sync(config: string): Promise<number> {
  const io: CliIo = { out: () => undefined, err: () => undefined, env: {}, cwd: dir, interactive: false };
  return runCli(["sync", "--config", config], io);
}

/**
 * PostgreSQL ends a killed client's session when it reads the closed socket, a moment after
 * the kill: waits until no running CLI run's owner lock is held any more.
 */
async function sessionsOfDeadOwnersEnded(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    await waitUntil("the killed process's database session has ended", async () => {
      const r = await client.query<{ held: number }>(
        `select count(*)::int as held from "${schema}".sync_runs r join pg_locks l
           on l.locktype = 'advisory' and l.objsubid = 2 and l.objid = r.owner_lock_key::int8::oid
         where r.outcome = 'running' and r.trigger = 'cli'`,
      );
      return r.rows[0]?.held === 0;
    });
  } finally {
    await client.end();
  }
}

const outcomes = (runs: RunRecord[]): string[] => runs.map((r) => `${r.trigger}:${r.outcome}`);

describe("runs left by a killed process", () => {
  it("embedded database: the next CLI run marks the killed run interrupted", { timeout: 2 * HANG_GUARD_MS }, async () => {
    hs.createRoom({ creator: BOT, alias: "#d1:example.org" });
    const config = await writeConfig("d1.yaml", "#d1:example.org", "dataDir: ./data-d1");
    await killMidRun(config);
    expect(await sync(config)).toBe(0);

    const store = await openStore({ dataDir: join(dir, "data-d1") });
    try {
      const runs = await store.listRuns(10);
      expect(outcomes(runs)).toEqual(["cli:ok", "cli:interrupted"]);
      expect(runs[1]!.finishedAt).not.toBeNull();
      expect(runs[1]!.error).toMatch(/stopped before the run finished/);
    } finally {
      await store.close();
    }
  });

  describe.skipIf(skipPostgres)("PostgreSQL shared with a live process", () => {
    const schema = `t_dangling_${process.pid}_${Date.now().toString(36)}`;
    let leader: Store | undefined;

    afterAll(async () => {
      await leader?.close();
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      try {
        await client.query(`drop schema if exists "${schema}" cascade`);
      } finally {
        await client.end();
      }
    });

    it("a CLI run marks the killed run interrupted and leaves the live leader's run running", { timeout: 2 * HANG_GUARD_MS }, async () => {
      // The "leader": a live process in the middle of its own run.
      leader = await openStore({ databaseUrl: TEST_DATABASE_URL, dataDir: "/nonexistent-unused", schema });
      const live = await leader.startRun({ trigger: "schedule", dryRun: false, startedAt: new Date() });

      hs.createRoom({ creator: BOT, alias: "#d2:example.org" });
      const url = `${TEST_DATABASE_URL}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
      const config = await writeConfig("d2.yaml", "#d2:example.org", `database: { url: "${url}" }`);
      await killMidRun(config);
      await sessionsOfDeadOwnersEnded(schema);
      expect(await sync(config)).toBe(0);

      const runs = await leader.listRuns(10);
      expect(outcomes(runs)).toEqual(["cli:ok", "cli:interrupted", "schedule:running"]);
      expect(runs[2]!.id).toBe(live);

      // Once the leader's process is gone (its store closed: its session and lock with it),
      // its run is dead too, and the next one to take the store closes it.
      await leader.close();
      leader = undefined;
      expect(await sync(config)).toBe(0);
      const after = await openStore({ databaseUrl: TEST_DATABASE_URL, dataDir: "/nonexistent-unused", schema });
      try {
        expect(outcomes(await after.listRuns(10))).toEqual(["cli:ok", "cli:ok", "cli:interrupted", "schedule:interrupted"]);
      } finally {
        await after.close();
      }
    });

    it("the store itself: another store's live run is left alone, a closed store's run is marked", async () => {
      const a = await openStore({ databaseUrl: TEST_DATABASE_URL, dataDir: "/nonexistent-unused", schema });
      const b = await openStore({ databaseUrl: TEST_DATABASE_URL, dataDir: "/nonexistent-unused", schema });
      try {
        const runA = await a.startRun({ trigger: "cli", dryRun: true, startedAt: new Date() });
        expect(await b.interruptDanglingRuns(new Date())).toBe(0);
        expect((await b.listRuns(1))[0]).toMatchObject({ id: runA, outcome: "running" });
        await a.close();
        expect(await b.interruptDanglingRuns(new Date())).toBe(1);
        expect((await b.listRuns(1))[0]).toMatchObject({ id: runA, outcome: "interrupted" });
      } finally {
        await a.close();
        await b.close();
      }
    });
  });
});
