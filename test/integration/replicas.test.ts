/**
 * Two replicas of `serve` on one PostgreSQL schema, as real processes against the test
 * homeserver. Each replica logs in as the same bot user with its own access token (its own
 * device), so the homeserver's request log tells them apart, and reaches PostgreSQL through
 * its own TCP proxy, so that one of them can be cut off. The directory file changes every
 * 300 ms and the schedule runs every second, so every run has invites, kicks and
 * power-level changes to make.
 *
 * What is checked, from the request log and the rooms' end state:
 * - only one replica reconciles at a time: read as a sequence, the reconcile requests (room
 *   state reads and room changes in the managed rooms) of the replicas form one tenure per
 *   leader, in the expected order, each ending before the next begins, and no request of one
 *   replica overlaps a request of the other;
 * - when the leader is cut off from PostgreSQL, has its lock session terminated, or is killed
 *   in the middle of a run, the standby takes over and reconciles;
 * - a leader that lost its lock goes back to standing by (it says so, /readyz and /metrics
 *   say standby), stays alive, and keeps standing by once it reaches the database again;
 * - the rooms end as the last directory says.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { FakeHomeserver, type EndpointKind, type RequestLogEntry } from "../fakes/homeserver.ts";
import { postgresUnreachable, TEST_DATABASE_URL } from "../helpers/postgres.ts";
import { HANG_GUARD_MS, startBin, type Exit, type TestProcess } from "../helpers/processes.ts";
import { hostPort, TcpProxy, viaProxy } from "../helpers/tcp-proxy.ts";
import { waitUntil } from "../helpers/wait.ts";

const skip = (await postgresUnreachable()) !== undefined && !process.env["CI"];
if (skip) console.warn("replica tests: PostgreSQL is not reachable: skipping (set CI to make this fail)");

const BOT = "@mgs-bot:example.org";
const OP = "@op:example.org";
const USERS = 18;
const ROOMS = 4;

/** Requests that read a managed room's state or change a managed room: a sync run's work. */
const RECONCILE_KINDS: ReadonlySet<EndpointKind> = new Set<EndpointKind>([
  "directory",
  "state",
  "state_event",
  "put_state",
  "members",
  "joined_members",
  "invite",
  "kick",
  "ban",
  "unban",
  "join",
  "leave",
]);

const user = (i: number): string => `@u${String(i).padStart(2, "0")}:example.org`;
const isManagedUser = (id: string): boolean => /^@u\d\d:example\.org$/.test(id);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One `serve` process (stopped with its test, whatever the outcome: test/helpers/processes.ts). */
class Replica {
  constructor(
    readonly name: string,
    /** The homeserver device of this replica's access token. */
    readonly device: string,
    readonly proc: TestProcess,
    /** Its only way to PostgreSQL. */
    readonly proxy: TcpProxy,
  ) {}

  get exited(): Exit | undefined {
    return this.proc.exited;
  }

  get exit(): Promise<Exit> {
    return this.proc.exit;
  }

  private get lines(): readonly string[] {
    return this.proc.outputLines("stderr");
  }

  stderr(): string {
    return this.lines.join("\n");
  }

  /** How many stderr lines match. */
  count(re: RegExp): number {
    return this.lines.filter((l) => re.test(l)).length;
  }

  /** How often it has become the serving leader. */
  servings(): number {
    return this.count(/^matrix-group-sync is serving/);
  }

  /** The /healthz, /readyz and /metrics base URL, from the service's log line. */
  httpUrl(): string | undefined {
    for (const line of this.lines) {
      if (!line.startsWith("{")) continue;
      try {
        const o = JSON.parse(line) as { msg?: unknown; url?: unknown };
        if (o.msg === "health and metrics endpoints" && typeof o.url === "string") return o.url;
      } catch {
        // not a log line
      }
    }
    return undefined;
  }

  async readyz(): Promise<{ status: number; role: string }> {
    const res = await fetch(`${this.httpUrl()!}/readyz`);
    const body = (await res.json()) as { role: string };
    return { status: res.status, role: body.role };
  }

  async leaderGauge(): Promise<number | undefined> {
    const text = await (await fetch(`${this.httpUrl()!}/metrics`)).text();
    const m = /^mgs_leader (\d+)$/m.exec(text);
    return m ? Number(m[1]) : undefined;
  }

  /** Its role changes and last lines, for failure messages. */
  tail(n = 8): string {
    const roles = this.lines.filter((l) => /leader|standing by|serving|SIG/.test(l) && !l.includes('"sync run finished"'));
    return `--- ${this.name} (${this.device}) role changes ---\n${roles.join("\n")}\n--- last ${n} lines ---\n${this.lines.slice(-n).join("\n")}`;
  }

  /** SIGTERM, then SIGKILL if it does not exit in time. */
  async stop(): Promise<void> {
    await this.proc.stop(10_000);
  }
}

/**
 * One installation: its own homeserver, PostgreSQL schema, folder, managed rooms and a static
 * directory that changes on a timer ("generations").
 */
class World {
  readonly replicas: Replica[] = [];
  private readonly proxies: TcpProxy[] = [];
  readonly roomIds: string[] = [];
  generation = 0;
  private churn: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    readonly label: string,
    readonly hs: FakeHomeserver,
    readonly dir: string,
    readonly schema: string,
    readonly admin: pg.Client,
  ) {}

  static async create(label: string): Promise<World> {
    const dir = await mkdtemp(join(tmpdir(), `mgs-replicas-${label}-`));
    const hs = await FakeHomeserver.start({ serverName: "example.org" });
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    const schema = `t_replicas_${label}_${randomBytes(4).toString("hex")}`;
    const world = new World(label, hs, dir, schema, admin);
    worlds.push(world); // cleaned up in afterAll, whatever happens next
    await admin.connect();
    await admin.query(`create schema "${schema}"`);
    hs.createRoom({ creator: OP, alias: "#mgmt:example.org", members: { [BOT]: "invite" } });
    // Half the users are there from the start, some of them wrongly.
    const initial = Object.fromEntries(Array.from({ length: USERS }, (_, j) => [user(j), "join" as const]).filter((_, j) => j % 2 === 0));
    for (let i = 0; i < ROOMS; i++) {
      world.roomIds.push(hs.createRoom({ creator: BOT, alias: `#r${i}:example.org`, members: initial }));
    }
    await world.writeDirectory();
    return world;
  }

  get databaseUrl(): string {
    const base = TEST_DATABASE_URL;
    return `${base}${base.includes("?") ? "&" : "?"}options=${encodeURIComponent(`-c search_path=${this.schema}`)}`;
  }

  /** Room i in generation g: two thirds of the users (a third changes each generation), one moderator. */
  desired(room: number, g = this.generation): { members: Set<string>; moderator: string } {
    const members = new Set<string>();
    for (let j = 0; j < USERS; j++) if ((j + room + g) % 3 !== 0) members.add(user(j));
    const moderator = user((g * 5 + room) % USERS);
    members.add(moderator);
    return { members, moderator };
  }

  private directoryText(g: number): string {
    const users = Array.from({ length: USERS }, (_, j) => `u${String(j).padStart(2, "0")}`);
    const groups: string[] = [];
    for (let i = 0; i < ROOMS; i++) {
      const d = this.desired(i, g);
      groups.push(`  - { id: room${i}, members: [${[...d.members].map((m) => m.slice(1, m.indexOf(":"))).join(", ")}] }`);
      groups.push(`  - { id: mods${i}, members: [${d.moderator.slice(1, d.moderator.indexOf(":"))}] }`);
    }
    return `users: [${users.join(", ")}]\ngroups:\n${groups.join("\n")}\n`;
  }

  /** Replaces the directory file atomically (a run never reads half a file). */
  writeDirectory(): Promise<void> {
    const g = this.generation;
    this.writing = this.writing.then(async () => {
      const tmp = join(this.dir, `directory.${g}.tmp`);
      await writeFile(tmp, this.directoryText(g));
      await rename(tmp, join(this.dir, "directory.yaml"));
    });
    return this.writing;
  }

  startChurn(everyMs = 300): void {
    this.churn = setInterval(() => {
      this.generation++;
      void this.writeDirectory();
    }, everyMs);
  }

  /** Stops changing the directory; the file on disk is the last generation when this resolves. */
  async stopChurn(): Promise<void> {
    clearInterval(this.churn);
    this.churn = undefined;
    await this.writing;
  }

  async startReplica(name: string): Promise<Replica> {
    const token = this.hs.registerUser(BOT);
    const who = (await (await fetch(`${this.hs.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
      device_id: string;
    };
    const rooms = Array.from({ length: ROOMS }, (_, i) => `    - room: "#r${i}:example.org"\n      groups: [ { group: room${i} }, { group: mods${i}, role: moderator } ]`).join("\n");
    const proxy = await TcpProxy.start(hostPort(TEST_DATABASE_URL));
    this.proxies.push(proxy);
    const config = join(this.dir, `${name}.yaml`);
    await writeFile(
      config,
      `homeserver: { url: ${this.hs.url}, accessToken: ${token}, maxRetries: 10 }
database: { url: "${viaProxy(this.databaseUrl, proxy)}" }
dataDir: ./data-${name}
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
${rooms}
serve:
  managementRoom: "#mgmt:example.org"
  schedule: "* * * * * *"
  runAtStart: true
  leaderRetryMs: 200
  shutdownTimeoutMs: 10000
  http: { port: 0 }
log: { level: info }
`,
    );
    // Overrides from the environment would change the config under test.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("MGS_")));
    const proc = startBin(["serve", "--config", config], { cwd: this.dir, env, stdio: ["ignore", "ignore", "pipe"], name: `replica ${name}`, graceMs: 10_000 });
    const replica = new Replica(name, who.device_id, proc, proxy);
    this.replicas.push(replica);
    return replica;
  }

  /** Requests of a sync run (reading or changing a managed room), by one device. */
  reconcileRequests(device: string): RequestLogEntry[] {
    const rooms = [...this.roomIds, ...Array.from({ length: ROOMS }, (_, i) => `#r${i}:example.org`)];
    return this.hs
      .requestLog()
      .filter((e) => e.device === device && RECONCILE_KINDS.has(e.kind))
      .filter((e) => {
        const path = decodeURIComponent(e.path);
        return rooms.some((r) => path.includes(`/${r}/`) || path.endsWith(`/${r}`));
      });
  }

  async finishedRuns(): Promise<number> {
    try {
      const r = await this.admin.query<{ n: number }>(`select count(*)::int as n from "${this.schema}".sync_runs where outcome <> 'running'`);
      return r.rows[0]?.n ?? 0;
    } catch {
      return 0; // not migrated yet
    }
  }

  /** Backends holding this installation's leader lock (the key leader.ts derives from the schema). */
  async lockHolders(): Promise<number[]> {
    const r = await this.admin.query<{ pid: number }>(
      `with k as (select hashtext('matrix-group-sync:' || $1::text)::bigint as key)
       select l.pid from pg_locks l, k
       where l.locktype = 'advisory' and l.granted and l.objsubid = 1
         and l.database = (select oid from pg_database where datname = current_database())
         and l.objid::text::bigint = (k.key & 4294967295)
         and l.classid::text::bigint = ((k.key >> 32) & 4294967295)`,
      [this.schema],
    );
    return r.rows.map((row) => row.pid);
  }

  /** A replica's PostgreSQL sessions (found by the client ports of its proxy's connections). */
  async sessions(r: Replica): Promise<{ pid: number; state: string; query: string; stateChange: string }[]> {
    const res = await this.admin.query<{ pid: number; state: string; query: string; state_change: string }>(
      "select pid, state, query, state_change::text from pg_stat_activity where datname = current_database() and client_port = any($1::int[])",
      [r.proxy.upstreamPorts()],
    );
    return res.rows.map((row) => ({ pid: row.pid, state: row.state, query: row.query, stateChange: row.state_change }));
  }

  /** Where the rooms differ from the directory of the current generation (empty: converged). */
  differences(): string[] {
    const out: string[] = [];
    for (let i = 0; i < ROOMS; i++) {
      const roomId = this.roomIds[i]!;
      const want = this.desired(i);
      const members = this.hs.members(roomId);
      const present = new Set(Object.entries(members).filter(([u, m]) => isManagedUser(u) && (m === "join" || m === "invite")).map(([u]) => u));
      for (const u of want.members) if (!present.has(u)) out.push(`#r${i}: ${u} missing`);
      for (const u of present) if (!want.members.has(u)) out.push(`#r${i}: ${u} should not be there (${members[u]})`);
      const levels = (this.hs.powerLevels(roomId)?.["users"] ?? {}) as Record<string, number>;
      const raised = Object.entries(levels).filter(([u, l]) => isManagedUser(u) && l !== 0);
      const expected = [[want.moderator, 50]];
      if (JSON.stringify(raised) !== JSON.stringify(expected)) out.push(`#r${i}: levels ${JSON.stringify(raised)}, want ${JSON.stringify(expected)}`);
    }
    return out;
  }

  diagnose(): string {
    return this.replicas.map((r) => r.tail()).join("\n");
  }

  async close(): Promise<void> {
    clearInterval(this.churn);
    await Promise.all(this.replicas.map((r) => r.stop()));
    await Promise.all(this.proxies.map((p) => p.close()));
    await this.hs.close();
    await this.admin.query(`drop schema if exists "${this.schema}" cascade`).catch(() => undefined);
    await this.admin.end().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

const worlds: World[] = [];

afterAll(async () => {
  for (const w of worlds) await w.close();
});

/** The end of a request: when it was answered, or (never answered) when its sender died; else still going. */
function endOf(e: RequestLogEntry, sender: Replica): number {
  return e.finishedAt ?? sender.exited?.at ?? Number.POSITIVE_INFINITY;
}

function describeRequest(r: Replica, e: RequestLogEntry): string {
  const path = decodeURIComponent(e.path).replace(/^\/_matrix\/client\/v3/, "");
  return `${r.name} ${e.method} ${path} [${e.receivedAt}, ${e.finishedAt ?? "-"}] ${e.status ?? "pending"}`;
}

/**
 * The request log, read as tenures: the reconcile requests of all replicas in the order they
 * arrived, consecutive ones of the same replica taken together. One replica at a time means
 * the tenures come in the expected order and each ends before the next begins.
 */
function checkOneAtATime(world: World, expected: readonly Replica[], cuts: readonly number[]): void {
  const all = world.replicas.flatMap((r) => world.reconcileRequests(r.device).map((e) => ({ r, e })));
  all.sort((x, y) => x.e.receivedAt - y.e.receivedAt);
  const tenures: { r: Replica; first: RequestLogEntry; last: RequestLogEntry; end: number }[] = [];
  for (const { r, e } of all) {
    const t = tenures.at(-1);
    if (t?.r === r) {
      t.last = e;
      t.end = Math.max(t.end, endOf(e, r));
    } else tenures.push({ r, first: e, last: e, end: endOf(e, r) });
  }
  const story = [
    ...tenures.map((t) => `${t.r.name}: ${describeRequest(t.r, t.first)} … ${describeRequest(t.r, t.last)}`),
    `leader cut off at ${cuts.join(", ")}`,
  ].join("\n");
  expect(tenures.map((t) => t.r.name), `who reconciled, in order:\n${story}`).toEqual(expected.map((r) => r.name));

  // No request of one replica overlaps a request of another.
  const overlaps: string[] = [];
  for (const x of all) {
    for (const y of all) {
      if (x.r !== y.r && x.e.receivedAt <= y.e.receivedAt && y.e.receivedAt < endOf(x.e, x.r)) {
        overlaps.push(`${describeRequest(x.r, x.e)} overlaps ${describeRequest(y.r, y.e)}`);
      }
    }
  }
  expect(overlaps).toEqual([]);
  for (let i = 1; i < tenures.length; i++) {
    expect(tenures[i - 1]!.end, story).toBeLessThanOrEqual(tenures[i]!.first.receivedAt);
    // A standby starts reconciling only after the leader was cut off.
    expect(tenures[i]!.first.receivedAt, story).toBeGreaterThanOrEqual(cuts[i - 1]!);
  }
  // Every leader did real work: it changed rooms, not only read them.
  for (const t of tenures) {
    const changes = all.filter(({ r, e }) => r === t.r && e.receivedAt >= t.first.receivedAt && e.receivedAt <= t.last.receivedAt && ["invite", "kick", "put_state"].includes(e.kind));
    expect(changes.length, `${t.r.name} changed no room`).toBeGreaterThan(0);
  }
}

/** Starts two replicas; resolves with [leader, standby] once the leader has finished two runs. */
async function twoReplicas(world: World): Promise<[Replica, Replica]> {
  const a = await world.startReplica("a");
  const b = await world.startReplica("b");
  world.startChurn();
  const leader = await waitUntil("one replica serves", () => [a, b].find((r) => r.servings() > 0), () => world.diagnose());
  const standby = leader === a ? b : a;
  await waitUntil("the leader has finished two runs", async () => (await world.finishedRuns()) >= 2, () => world.diagnose());
  expect(world.reconcileRequests(standby.device)).toEqual([]);
  expect(standby.servings()).toBe(0);
  await waitUntil("the standby's endpoints are up", () => standby.httpUrl(), () => world.diagnose());
  expect(await standby.readyz()).toEqual({ status: 200, role: "standby" });
  expect(await standby.leaderGauge()).toBe(0);
  expect(await leader.readyz()).toEqual({ status: 200, role: "leader" });
  expect(await leader.leaderGauge()).toBe(1);
  return [leader, standby];
}

/**
 * Terminates the leader's lock session: the one backend holding this installation's advisory
 * lock (the service sets no application_name), which must be one of the leader's sessions.
 */
async function terminateLockSession(world: World, leader: Replica): Promise<number> {
  const holders = await world.lockHolders();
  expect(holders).toHaveLength(1);
  expect((await world.sessions(leader)).map((x) => x.pid)).toContain(holders[0]);
  const at = Date.now();
  const r = await world.admin.query<{ ok: boolean }>("select pg_terminate_backend($1) as ok", [holders[0]]);
  expect(r.rows[0]?.ok).toBe(true);
  return at;
}

/** Resolves just after the standby's lock session has answered a new pg_try_advisory_lock. */
async function standbyHasJustTried(world: World, standby: Replica): Promise<void> {
  const lockTry = async (): Promise<string | undefined> =>
    (await world.sessions(standby)).find((x) => x.state === "idle" && x.query.includes("pg_try_advisory_lock"))?.stateChange;
  const before = await waitUntil("the standby tries the lock", lockTry, () => world.diagnose());
  const deadline = Date.now() + HANG_GUARD_MS;
  while (Date.now() < deadline) {
    const now = await lockTry();
    if (now !== undefined && now !== before) return;
    await sleep(5);
  }
  throw new Error(`the standby did not try the lock again\n${world.diagnose()}`);
}

/** Waits until `next` reconciles (after `since`) and a run has finished since. */
async function takesOver(world: World, next: Replica, since: number): Promise<void> {
  await waitUntil(`${next.name} reconciles`, () => world.reconcileRequests(next.device).some((e) => e.receivedAt >= since), () => world.diagnose());
  const runs = await world.finishedRuns();
  await waitUntil(`${next.name} finishes a run`, async () => (await world.finishedRuns()) > runs, () => world.diagnose());
}

/** The directory stops changing; the rooms end as it says. */
async function converges(world: World): Promise<void> {
  await world.stopChurn();
  await waitUntil("the rooms match the last directory", () => world.differences().length === 0, () => `${world.differences().join("\n")}\n${world.diagnose()}`);
}

/** The leader's next invite is answered 429 ("retry in `ms`"): it is caught in the middle of a run. */
async function catchInARun(world: World, retryAfterMs: number): Promise<void> {
  const before = world.hs.requestLog().filter((e) => e.status === 429).length;
  world.hs.rateLimit({ count: 1, retryAfterMs, endpoints: ["invite"] });
  await waitUntil("the leader waits on a rate-limited invite", () => world.hs.requestLog().filter((e) => e.kind === "invite" && e.status === 429).length > before, () => world.diagnose());
}

describe.skipIf(skip)("two replicas of serve on one PostgreSQL schema", () => {
  it("the leader is cut off from PostgreSQL, later the next leader is killed mid-run: each time the standby takes over, one at a time, and the rooms converge", { timeout: 4 * HANG_GUARD_MS }, async () => {
    const world = await World.create("failover");
    const [first, second] = await twoReplicas(world);

    // 1. The leader loses its network path to PostgreSQL: its connections drop, new ones fail.
    const cutAt = Date.now();
    first.proxy.cut();
    await takesOver(world, second, cutAt);
    // The old leader stopped serving and stands by, alive, its endpoints up.
    expect(first.stderr()).toMatch(/lost the leader lock \(the lock's database connection (failed|ended)[^)]*\); standing by/);
    expect(first.exited).toBeUndefined();
    expect(await first.readyz()).toEqual({ status: 200, role: "standby" });
    expect(await first.leaderGauge()).toBe(0);
    expect(await second.readyz()).toEqual({ status: 200, role: "leader" });
    expect(await second.leaderGauge()).toBe(1);
    // Back in touch with the database, it finds the lock taken and keeps standing by.
    const standbyLines = first.count(/another replica is the leader/);
    first.proxy.restore();
    await waitUntil("the old leader finds the lock taken", () => first.count(/another replica is the leader/) > standbyLines, () => world.diagnose());
    expect(first.servings()).toBe(1);
    expect(await first.readyz()).toEqual({ status: 200, role: "standby" });
    expect(await world.lockHolders()).toHaveLength(1);

    // 2. The new leader is killed while a run waits on a rate-limited invite.
    await catchInARun(world, 5_000);
    const killedAt = Date.now();
    await second.proc.kill();
    await takesOver(world, first, killedAt);
    expect(await first.readyz()).toEqual({ status: 200, role: "leader" });
    expect(await first.leaderGauge()).toBe(1);

    await converges(world);
    checkOneAtATime(world, [first, second, first], [cutAt, killedAt]);
    // The run the dead leader left behind was recorded as interrupted by the next one.
    const dangling = await world.admin.query(`select id from "${world.schema}".sync_runs where outcome = 'running' and started_at < $1`, [new Date(killedAt)]);
    expect(dangling.rows).toEqual([]);
  });

  it("the leader's lock session is terminated between runs: the standby takes over", { timeout: 3 * HANG_GUARD_MS }, async () => {
    const world = await World.create("terminate");
    const [leader, standby] = await twoReplicas(world);

    // Between two runs: the leader's last reconcile request was answered a little while ago.
    await waitUntil(
      "the leader is between runs",
      () => {
        const last = world.reconcileRequests(leader.device).at(-1);
        const idle = last?.finishedAt != null ? Date.now() - last.finishedAt : 0;
        return idle > 150 && idle < 600;
      },
    );
    // Cut right after one of the standby's tries, so that its next try is a full retry
    // interval (200 ms) away: the standby must still be the one that takes over.
    await standbyHasJustTried(world, standby);
    const servings = new Map([leader, standby].map((r) => [r, r.servings()]));
    const cutAt = await terminateLockSession(world, leader);
    const next = await waitUntil("a replica serves again", () => [leader, standby].find((r) => r.servings() > servings.get(r)!), () => world.diagnose());
    expect(next.name, `the lock went back to the old leader ${leader.name}, not to the standby ${standby.name}:\n${world.diagnose()}`).toBe(standby.name);
    await takesOver(world, standby, cutAt);
    await converges(world);
    checkOneAtATime(world, [leader, standby], [cutAt]);
    expect(await leader.readyz()).toEqual({ status: 200, role: "standby" });
  });

  it("the leader's lock session is terminated while an action waits on Retry-After: the old leader sends nothing more", { timeout: 3 * HANG_GUARD_MS }, async () => {
    const world = await World.create("retry");
    const [leader, standby] = await twoReplicas(world);

    await catchInARun(world, 4_000);
    const cutAt = await terminateLockSession(world, leader);
    await takesOver(world, standby, cutAt);
    // The old leader reports the lost lock once its run under way has ended: by then it has
    // sent whatever it was going to send.
    await waitUntil("the old leader stands by", () => leader.stderr().includes("lost the leader lock"), () => world.diagnose());
    await converges(world);
    checkOneAtATime(world, [leader, standby], [cutAt]);
  });
});
