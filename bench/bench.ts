/**
 * `npm run bench`: figures, not assertions.
 * (a) planner time and peak memory for 1,000,000 desired memberships (1,000 rooms × 1,000 users);
 * (b) homeserver requests and wall time for a no-op run over 1,000 rooms × 10,000 users against
 *     the test homeserver, through the whole pipeline (static directory → plan → store).
 * (g) requests to create N rooms with M members each (floor: N createRoom + N alias lookups);
 * (h) requests to correct template drift in N rooms (floor: one power-levels event and one
 *     event per other drifted state type per room, plus the N reads).
 * (i) an encrypted management room: encrypted command → encrypted reply, as a matrix-js-sdk
 *     client sees it (floor: the same command in an unencrypted room, same run), and the cost of
 *     opening the crypto store at start.
 * Sizes can be lowered for a quick look: BENCH_ROOMS, BENCH_USERS_A, BENCH_USERS_B.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { systemClock } from "../src/clock.ts";
import { StaticIdentityProvider } from "../src/idp/static.ts";
import { silentLogger } from "../src/log.ts";
import { createBotSdkGateway } from "../src/matrix/bot-sdk-gateway.ts";
import type { UserId } from "../src/matrix/ids.ts";
import { planRoom, EMPTY_MEMORY } from "../src/reconcile/plan.ts";
import { runSync, type SyncSettings } from "../src/reconcile/run.ts";
import type { DesiredRoom, ObservedRoom, Policy } from "../src/reconcile/types.ts";
import type { RoomId } from "../src/matrix/ids.ts";
import { openStore } from "../src/store/kysely-store.ts";
import { FakeHomeserver } from "../test/fakes/homeserver.ts";
import { generateDirectoryLdif, recursiveUsers } from "../test/ldap/generate.ts";
import { GROUPS_DN, PEOPLE_DN, slapdAvailable, startSlapd } from "../test/ldap/slapd.ts";
import { LdapIdentityProvider } from "../src/idp/ldap.ts";
import { resolveGroups } from "../src/idp/resolve.ts";
import { normalizeDn } from "../src/idp/dn.ts";
import { AzureIdentityProvider } from "../src/idp/azure.ts";
import { GraphServer, generateUsers, guid } from "../test/graph/graph-server.ts";
import { ensureTestCa } from "../test/graph/test-ca.ts";
import { azureSettings } from "../test/graph/azure-settings.ts";
import { spawn, spawnSync } from "node:child_process";
import pg from "pg";
import { waitForLeadership } from "../src/service/leader.ts";
import { Metrics } from "../src/service/metrics.ts";
import { observeHomeserverResponses } from "../src/matrix/bot-sdk-gateway.ts";

const ROOMS = Number(process.env["BENCH_ROOMS"] ?? 1000);
const USERS_A = Number(process.env["BENCH_USERS_A"] ?? 1000);
const USERS_B = Number(process.env["BENCH_USERS_B"] ?? 10_000);
const DOMAIN = "example.org";
const BOT = `@mgs-bot:${DOMAIN}` as UserId;

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MB`;
}

/** Samples RSS and heap while `fn` runs; returns the peaks. */
async function withPeakMemory<T>(fn: () => Promise<T> | T): Promise<{ value: T; peakRss: number; peakHeap: number }> {
  let peakRss = process.memoryUsage().rss;
  let peakHeap = process.memoryUsage().heapUsed;
  const timer = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  }, 5);
  try {
    const value = await fn();
    const m = process.memoryUsage();
    return { value, peakRss: Math.max(peakRss, m.rss), peakHeap: Math.max(peakHeap, m.heapUsed) };
  } finally {
    clearInterval(timer);
  }
}

function benchPlanner(): void {
  console.log(`(a) planner: ${ROOMS} rooms × ${USERS_A} users = ${(ROOMS * USERS_A).toLocaleString("en")} desired memberships`);
  const users = Array.from({ length: USERS_A }, (_, i) => `@user${i}:${DOMAIN}` as UserId);
  const policy: Policy = {
    bot: BOT,
    managedDomains: [DOMAIN],
    kick: true,
    kickReason: "bench",
    ignoreUsers: ["@.*-bot:example\\.org"],
    maxRemovals: { count: 10, share: 0.25 },
  };
  // Each room: every user desired; 90% already joined, 5% to invite, some level changes and
  // 1% stale members to kick, so every branch of the planner runs.
  const inputs: { desired: DesiredRoom; observed: ObservedRoom }[] = [];
  for (let r = 0; r < ROOMS; r++) {
    const members: Record<string, "join" | "invite"> = { [BOT]: "join" };
    const levelsUsers: Record<string, number> = { [BOT]: 100 };
    users.forEach((u, i) => {
      if ((i + r) % 20 !== 0) members[u] = i % 7 === 0 ? "invite" : "join";
      if (i % 50 === 0) levelsUsers[u] = 50;
    });
    for (let k = 0; k < USERS_A / 100; k++) members[`@gone${k}:${DOMAIN}`] = "join";
    inputs.push({
      desired: {
        room: `!room${r}:${DOMAIN}`,
        members: users.map((u, i) => ({ user: u, level: i % 100 === 0 ? 50 : 0, role: i % 100 === 0 ? "moderator" : "member", via: ["everyone"] })),
        incompleteGroups: [],
        notes: [],
      },
      observed: {
        roomId: `!room${r}:${DOMAIN}` as RoomId,
        roomVersion: "10",
        creators: [],
        members,
        powerLevels: { users: levelsUsers, users_default: 0, kick: 50, invite: 0, state_default: 50, events: {} },
      },
    });
  }
  global.gc?.();
  const before = process.memoryUsage();
  const t0 = performance.now();
  let actions = 0;
  let held = 0;
  const peak = { rss: before.rss, heap: before.heapUsed };
  for (const input of inputs) {
    const p = planRoom(input.desired, input.observed, EMPTY_MEMORY, policy);
    actions += p.actions.length;
    held += p.held.length;
    if ((actions & 0x3f) === 0) {
      const m = process.memoryUsage();
      peak.rss = Math.max(peak.rss, m.rss);
      peak.heap = Math.max(peak.heap, m.heapUsed);
    }
  }
  const ms = performance.now() - t0;
  const after = process.memoryUsage();
  peak.rss = Math.max(peak.rss, after.rss);
  peak.heap = Math.max(peak.heap, after.heapUsed);
  console.log(`    planned ${actions.toLocaleString("en")} actions (${held.toLocaleString("en")} held) in ${ms.toFixed(0)} ms`);
  console.log(
    `    peak RSS ${mb(peak.rss)} (process incl. inputs), heap growth while planning ${mb(Math.max(0, peak.heap - before.heapUsed))}`,
  );
}

async function benchNoOpRun(): Promise<void> {
  console.log(`(b) no-op run: ${ROOMS} rooms × ${USERS_B} users against the test homeserver`);
  const dir = await mkdtemp(join(tmpdir(), "mgs-bench-"));
  const hs = await FakeHomeserver.start({ serverName: DOMAIN });
  try {
    const token = hs.registerUser(BOT);
    const userIds = Array.from({ length: USERS_B }, (_, i) => `user${i}`);
    const shared = new Map<string, "join">(userIds.map((u) => [`@${u}:${DOMAIN}`, "join"]));
    const rooms: string[] = [];
    for (let r = 0; r < ROOMS; r++) {
      rooms.push(hs.createRoom({ creator: BOT, members: shared }));
    }
    // The directory: one big group, nested into one group per room.
    const directory = {
      users: userIds.map((u) => ({ id: u, attributes: { uid: u } })),
      groups: [
        { id: "everyone", members: userIds },
        ...rooms.map((_, r) => ({ id: `room-${r}`, members: ["group:everyone"] })),
      ],
    };
    const dirFile = join(dir, "directory.json");
    await writeFile(dirFile, JSON.stringify(directory));
    const settings: SyncSettings = {
      roles: { member: 0, moderator: 50, admin: 100 },
      users: { attribute: "uid", template: "@{uid}:{domain}", lowercase: true, renamedUsers: {} },
      mapping: {
        rooms: rooms.map((roomId, r) => ({ room: roomId, groups: [{ group: `room-${r}`, role: "member" }] })),
        convention: { enabled: false, prefix: "MTRX ", ownersSuffix: "_owners", ownersRole: "moderator", memberRole: "member" },
      },
      sync: { kick: true, kickReason: "bench", maxRemovals: { count: 10, share: 0.25 }, ignoreUsers: [], maxDepth: 10, createRooms: false },
      concurrency: 4,
    };
    const opened = await openStore({ dataDir: join(dir, "data") });
    // Store calls by method (each one a statement or a transaction), counted.
    const storeCalls = new Map<string, number>();
    const store = new Proxy(opened, {
      get(target, prop, receiver) {
        const v: unknown = Reflect.get(target, prop, receiver);
        if (typeof v !== "function" || typeof prop !== "string") return v;
        return (...args: unknown[]) => {
          storeCalls.set(prop, (storeCalls.get(prop) ?? 0) + 1);
          return Reflect.apply(v, target, args) as unknown;
        };
      },
    });
    const gateway = createBotSdkGateway({
      homeserverUrl: hs.url,
      accessToken: token,
      requestTimeoutMs: 60_000,
      maxRetries: 5,
      log: silentLogger,
    });
    const idp = new StaticIdentityProvider(dirFile);
    hs.resetCounts();
    const t0 = performance.now();
    // Live heap after a full GC: before the run (the in-process test homeserver and the rest),
    // and half-way through it (what the run keeps alive), next to the RSS.
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const liveBefore = process.memoryUsage().heapUsed;
    let liveMid: number | undefined;
    const progress = (done: number, total: number): void => {
      if (liveMid === undefined && done >= total / 2 && gc !== undefined) {
        gc();
        liveMid = process.memoryUsage().heapUsed;
      }
    };
    const { value: report, peakRss } = await withPeakMemory(() =>
      runSync({ idp, gateway, store, clock: systemClock, log: silentLogger, progress }, settings, { dryRun: false, trigger: "cli" }),
    );
    const ms = performance.now() - t0;
    const counts = hs.requestCounts();
    const total = hs.totalRequests();
    const c = report.counts;
    console.log(
      `    ${report.rooms.length} rooms, outcome ${report.outcome}: ${c.invites} invites, ${c.kicks} kicks, ${c.powerLevels} level changes, ${c.roomErrors} room errors`,
    );
    console.log(
      `    homeserver requests: ${total} in all (${Object.entries(counts)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${k} ${n}`)
        .join(", ")}) = ${(total / ROOMS).toFixed(3)} per room, ${(total / (ROOMS * USERS_B)).toFixed(6)} per membership`,
    );
    console.log(`    wall time ${(ms / 1000).toFixed(1)} s (test homeserver in the same process), peak RSS ${mb(peakRss)}`);
    console.log(`    store calls: ${[...storeCalls].map(([k, n]) => `${k} ${n}`).join(", ")}`);
    if (liveMid !== undefined) {
      console.log(`    live heap after GC: ${mb(liveBefore)} before the run (test homeserver, directory file), ${mb(liveMid)} half-way through (+${mb(liveMid - liveBefore)} held by the run); peak RSS ${mb(peakRss)}`);
    }
    await store.close();
    await idp.close();
  } finally {
    await hs.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function benchLdap(): Promise<void> {
  const USERS = Number(process.env["BENCH_LDAP_USERS"] ?? 20_000);
  const GROUPS = Number(process.env["BENCH_LDAP_GROUPS"] ?? 2_000);
  const MAPPED = Number(process.env["BENCH_LDAP_MAPPED"] ?? 200);
  const PAGE = 1000;
  console.log(`(c) LDAP: ${USERS} users in ${GROUPS} groups nested up to depth 6 with cycles, in slapd; ${MAPPED} mapped groups`);
  if (!slapdAvailable()) {
    console.log("    skipped: slapd is not installed (apt-get install -y slapd ldap-utils)");
    return;
  }
  const generated = generateDirectoryLdif({ users: USERS, groups: GROUPS, maxDepth: 6, cycles: 20, seed: 7 });
  const tLoad = performance.now();
  // A server-side size limit of 1000 entries, as Active Directory has: unpaged reads would fail.
  const slapd = await startSlapd({ bulkLdif: generated.ldif, sizeLimit: PAGE, syncprov: true });
  const loadMs = performance.now() - tLoad;
  try {
    const idp = new LdapIdentityProvider({
      settings: {
        url: slapd.url,
        startTls: false,
        rejectUnauthorized: true,
        bindDn: slapd.readerDn,
        bindPassword: slapd.readerPassword,
        connectTimeoutMs: 10_000,
        timeoutMs: 60_000,
        pageSize: PAGE,
        flavour: "openldap",
        groups: { base: GROUPS_DN, scope: "sub", nameAttribute: "cn", memberAttributes: ["member"] },
        users: { base: PEOPLE_DN, scope: "sub", memberUidAttribute: "uid" },
        activeDirectoryInChain: false,
      },
      userAttributes: ["uid"],
      log: silentLogger,
      onRequest: (r) => requests.push(r.operation),
    });
    const requests: string[] = [];
    // Mapped groups: spread over every level, top groups first (they hold the deepest nesting).
    const mapped = [...new Set([...generated.topGroupDns, ...generated.groupDns])].slice(0, MAPPED);
    const t0 = performance.now();
    const snap = await idp.snapshot();
    if (!snap.ok) throw new Error(snap.error.message);
    const tRead = performance.now();
    const ids = mapped.map((dn) => normalizeDn(dn)!);
    const resolved = resolveGroups(snap.value, ids, { maxDepth: 10 });
    const t1 = performance.now();
    let memberships = 0;
    let wrong = 0;
    let cutByDepth = 0;
    mapped.forEach((dn, i) => {
      const got = resolved.get(ids[i]!)!;
      memberships += got.users.size;
      // A chain through the cycles that is deeper than maxDepth marks the group incomplete
      // (fail closed); only complete groups must equal the generator's own resolution.
      if (!got.complete) cutByDepth++;
      else if (got.users.size !== recursiveUsers(generated.directMembers, dn).size) wrong++;
    });
    const st = idp.lastStats;
    console.log(
      `    read ${snap.value.users.size} users and ${snap.value.groups.size} groups; resolved ${MAPPED} groups to ${memberships.toLocaleString("en")} memberships; ${wrong} differ from the generator's own resolution, ${cutByDepth} incomplete (nesting through cycles deeper than maxDepth 10)`,
    );
    console.log(
      `    wall time ${((t1 - t0) / 1000).toFixed(2)} s (directory read ${((tRead - t0) / 1000).toFixed(2)} s, resolution ${((t1 - tRead) / 1000).toFixed(2)} s)`,
    );
    console.log(
      `    LDAP searches ${st.searches}, requests (pages) ${st.pages}, entries ${st.entries.toLocaleString("en")}; bound: groups + pages = ${GROUPS + st.pages}`,
    );
    console.log(`    (slapd start with slapadd of the generated LDIF: ${(loadMs / 1000).toFixed(2)} s, not counted)`);
    // serve.pollIntervalMs: the change probe (contextCSN, kept by syncprov) instead of that read.
    const probeTimes: number[] = [];
    let probeRequests = 0;
    for (let i = 0; i < 5; i++) {
      requests.length = 0;
      const tp = performance.now();
      const m = await idp.changeMarker();
      probeTimes.push(performance.now() - tp);
      if (!m.ok || m.value === undefined) throw new Error(`no change marker: ${m.ok ? "none" : m.error.message}`);
      probeRequests = requests.length;
    }
    probeTimes.sort((a, b) => a - b);
    console.log(
      `    change probe (serve.pollIntervalMs): median ${probeTimes[2]!.toFixed(1)} ms, ${probeRequests} LDAP requests (bind and base searches) — against the full read above: ${((tRead - t0) / 1000).toFixed(2)} s, ${st.pages} pages`,
    );
  } finally {
    await slapd.stop();
  }
}

async function benchGraph(): Promise<void> {
  const GROUPS = 50;
  const BIG = Number(process.env["BENCH_GRAPH_BIG"] ?? 50_000);
  console.log(`(d) Microsoft Graph: ${GROUPS} mapped groups found by prefix, one of ${BIG.toLocaleString("en")} members (https stand-in, real @azure/identity)`);
  const graph = await GraphServer.start();
  try {
    const client = guid(1, 9);
    graph.addApp({ clientId: client, secret: "bench-secret", roles: ["GroupMember.Read.All", "User.Read.All", "Group.Read.All"] });
    graph.addUsers(generateUsers(BIG));
    const sizes: number[] = [BIG];
    graph.addGroup({ id: guid(0, 1), displayName: "MTRX #big:example.org", members: Array.from({ length: BIG }, (_, i) => guid(i, 0xa)) });
    for (let g = 1; g < GROUPS; g++) {
      const size = 50 + ((g * 397) % 1950); // 50 … 1,999 members
      sizes.push(size);
      graph.addGroup({
        id: guid(g, 1),
        displayName: `MTRX #room${g}:example.org`,
        members: Array.from({ length: size }, (_, i) => guid((g * 1000 + i) % BIG, 0xa)),
      });
    }
    const expectedMemberPages = sizes.reduce((n, m) => n + Math.ceil(m / 999), 0);
    const idp = new AzureIdentityProvider({
      settings: azureSettings(graph, { clientId: client, secret: "bench-secret" }, { maxRetries: 5, timeoutMs: 60_000 }),
      userAttributes: ["uid"],
      log: silentLogger,
    });
    graph.resetCounts();
    const t0 = performance.now();
    const snap = await idp.snapshot({ isMapped: () => true, explicitGroups: [], conventionPrefix: "MTRX " });
    const ms = performance.now() - t0;
    if (!snap.ok) throw new Error(snap.error.message);
    const st = idp.lastStats;
    const memberships = [...snap.value.groups.values()].reduce((n, g) => n + g.members.length, 0);
    console.log(`    read ${snap.value.groups.size} groups, ${memberships.toLocaleString("en")} memberships, ${snap.value.users.size.toLocaleString("en")} users`);
    console.log(
      `    Graph requests ${st.requests} = discovery pages ${st.discoveryRequests} + member pages ${st.memberRequests} (Σ⌈members/999⌉ = ${expectedMemberPages}); plus ${graph.tokenRequests()} token request(s)`,
    );
    console.log(`    wall time ${(ms / 1000).toFixed(2)} s (stand-in in the same process, sign-in included)`);
  } finally {
    await graph.close();
  }
}

/** An admin connection to the test PostgreSQL, or undefined (said) when it is not reachable. */
async function connectOrSkip(url: string): Promise<pg.Client | undefined> {
  const admin = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
    return admin;
  } catch (err) {
    console.log(`    skipped: PostgreSQL not reachable (${String(err)})`);
    return undefined;
  }
}

async function benchTakeover(): Promise<void> {
  const base = process.env["MGS_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";
  const schema = `bench_leader_${process.pid}`;
  const url = `${base}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
  console.log("(e) standby takeover after the leader's database session dies (PostgreSQL advisory lock, standby retry every 2 s)");
  const admin = await connectOrSkip(base);
  if (admin === undefined) return;
  try {
    await admin.query(`create schema if not exists "${schema}"`);
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const leader = await waitForLeadership({ databaseUrl: url, log: silentLogger });
      const standby = waitForLeadership({ databaseUrl: url, log: silentLogger, retryMs: 2_000 });
      await new Promise((r) => setTimeout(r, 500 + i * 700)); // die at different points of the standby's cycle
      const t0 = performance.now();
      const pids = await admin.query<{ pid: number }>("select pid from pg_locks where locktype = 'advisory' and granted and pid <> pg_backend_pid()");
      for (const { pid } of pids.rows) await admin.query("select pg_terminate_backend($1)", [pid]);
      const next = await standby;
      times.push(performance.now() - t0);
      await leader?.release();
      await next?.release();
    }
    console.log(`    takeover times: ${times.map((t) => `${(t / 1000).toFixed(2)} s`).join(", ")} (worst case ≈ the retry interval)`);
  } finally {
    await admin.query(`drop schema if exists "${schema}" cascade`).catch(() => undefined);
    await admin.end();
  }
}

/**
 * (e, end to end) Two real `serve` processes (default 2 s retry); the leader is SIGKILLed;
 * the time until the standby's first request for a managed room reaches the homeserver
 * (lock retry + the takeover grace of one interval + start-up + the run at start).
 */
async function benchServeTakeover(): Promise<void> {
  const base = process.env["MGS_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";
  const schema = `bench_serve_${process.pid}`;
  console.log("(e2) serve-level takeover: leader SIGKILLed → first request of the new leader for a managed room (leaderRetryMs 2 s)");
  const admin = await connectOrSkip(base);
  if (admin === undefined) return;
  const dir = await mkdtemp(join(tmpdir(), "mgs-bench-e2-"));
  const hs = await FakeHomeserver.start({ serverName: DOMAIN });
  const children: import("node:child_process").ChildProcess[] = [];
  try {
    await admin.query(`create schema if not exists "${schema}"`);
    const url = `${base}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    const bootstrap = hs.registerUser(BOT);
    hs.createRoom({ creator: BOT, alias: `#mgmt:${DOMAIN}` });
    const room = hs.createRoom({ creator: BOT, alias: `#r:${DOMAIN}` });
    void bootstrap;
    await writeFile(join(dir, "directory.yaml"), "users: [a, b]\ngroups:\n  - { id: g, members: [a, b] }\n");
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("MGS_")));
    const bin = join(import.meta.dirname, "../bin/matrix-group-sync.js");
    const devices: string[] = [];
    const start = async (name: string): Promise<import("node:child_process").ChildProcess> => {
      const token = hs.registerUser(BOT);
      const who = (await (await fetch(`${hs.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${token}` } })).json()) as { device_id: string };
      devices.push(who.device_id);
      await writeFile(
        join(dir, `${name}.yaml`),
        `homeserver: { url: ${hs.url}, accessToken: ${token} }
database: { url: "${url}" }
idp: { kind: static, static: { file: directory.yaml } }
mapping: { rooms: [ { room: "#r:${DOMAIN}", groups: [ { group: g } ] } ] }
serve: { managementRoom: "#mgmt:${DOMAIN}", schedule: "*/5 * * * * *", runAtStart: true, http: { enabled: false } }
log: { level: error }
`,
      );
      const child = spawn(process.execPath, [bin, "serve", "--config", join(dir, `${name}.yaml`)], { cwd: dir, env, stdio: "ignore" });
      children.push(child);
      return child;
    };
    const touched = (device: string): number | undefined =>
      hs.requestLog().find((e) => e.device === device && e.path.includes(encodeURIComponent(room)))?.receivedAt;
    const waitFor = async <T>(check: () => T | undefined, ms: number): Promise<T> => {
      const deadline = Date.now() + ms;
      for (;;) {
        const v = check();
        if (v !== undefined) return v;
        if (Date.now() > deadline) throw new Error("timed out");
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      hs.resetCounts();
      const first = await start(`a${i}`);
      const firstDevice = devices[devices.length - 1]!;
      await waitFor(() => touched(firstDevice), 60_000);
      const second = await start(`b${i}`);
      const secondDevice = devices[devices.length - 1]!;
      await new Promise((r) => setTimeout(r, 4_000 + i * 700)); // the standby is waiting, at different points of its cycle
      const killedAt = Date.now();
      first.kill("SIGKILL");
      const actedAt = await waitFor(() => {
        const t = hs.requestLog().find((e) => e.device === secondDevice && e.receivedAt >= killedAt && e.path.includes(encodeURIComponent(room)))?.receivedAt;
        return t;
      }, 60_000);
      times.push(actedAt - killedAt);
      second.kill("SIGTERM");
      await new Promise((r) => second.once("exit", r));
    }
    console.log(`    kill → new leader's first room request: ${times.map((t) => `${(t / 1000).toFixed(2)} s`).join(", ")}`);
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await hs.close();
    await admin.query(`drop schema if exists "${schema}" cascade`).catch(() => undefined);
    await admin.end();
    await rm(dir, { recursive: true, force: true });
  }
}

async function benchEncryptedRoom(): Promise<void> {
  console.log("(i) encrypted management room: command → reply as the operator's matrix-js-sdk client sees it (room key already shared)");
  const { startDevice, quietSdkLogger, waitForReply } = await import("../test/helpers/js-sdk.ts");
  const { loadConfig } = await import("../src/config/load.ts");
  const { startServe } = await import("../src/service/serve.ts");
  const { EndToEnd, RoomEncryptionState } = await import("../src/matrix/e2ee.ts");
  quietSdkLogger();
  const dir = await mkdtemp(join(tmpdir(), "mgs-bench-i-"));
  const hs = await FakeHomeserver.start({ serverName: DOMAIN });
  const OP = `@op:${DOMAIN}`;
  const botToken = hs.registerUser(BOT, undefined, { deviceId: "BENCHBOT" });
  const op = await startDevice(hs, OP, "OPDEV");
  const replyTo = (roomId: string, eventId: string) => waitForReply(op, BOT, roomId, eventId);
  const config = async (room: string, encryption: boolean) => {
    const path = join(dir, "config.yaml");
    await writeFile(
      path,
      `homeserver: { url: ${hs.url}, accessToken: ${botToken} }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping: { rooms: [] }
serve: { managementRoom: "${room}", schedule: "0 0 1 1 *", http: { enabled: false }${encryption ? `, encryption: { storeKey: "bench store key" }` : ""} }
log: { level: error }
`,
    );
    const r = loadConfig({ path, env: {}, cwd: dir });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.config;
  };
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const N = 20;
  /** N commands one after another in `room`: the milliseconds from send to decrypted reply. */
  const rounds = async (room: string): Promise<number[]> => {
    const times: number[] = [];
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      const { event_id } = await op.sendTextMessage(room, "!status");
      await replyTo(room, event_id);
      times.push(performance.now() - t0);
    }
    return times;
  };
  try {
    await writeFile(join(dir, "directory.yaml"), "users: []\ngroups: []\n");
    const { room_id: encrypted } = await op.createRoom({
      preset: "private_chat" as never,
      invite: [BOT],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    const { room_id: plain } = await op.createRoom({ preset: "private_chat" as never, invite: [BOT] });

    // Floor: the same command in an unencrypted room.
    let handle = await startServe(await config(plain, false));
    await rounds(plain); // warm-up
    const plainTimes = await rounds(plain);
    await handle.stop();

    const t0 = performance.now();
    handle = await startServe(await config(encrypted, true));
    const firstStart = performance.now() - t0;
    await rounds(encrypted); // the first reply shares the room key
    const encTimes = await rounds(encrypted);
    await handle.stop();
    console.log(`    encrypted: median ${median(encTimes).toFixed(0)} ms, max ${Math.max(...encTimes).toFixed(0)} ms over ${N} commands`);
    console.log(`    floor (unencrypted room, same run): median ${median(plainTimes).toFixed(0)} ms, max ${Math.max(...plainTimes).toFixed(0)} ms`);

    // Opening the crypto store at start (loading what the runs above saved, and the key derivation).
    const store = await openStore({ dataDir: join(dir, "data") });
    const gateway = createBotSdkGateway({ homeserverUrl: hs.url, accessToken: botToken, requestTimeoutMs: 30_000, maxRetries: 3, log: silentLogger });
    const opens: number[] = [];
    let records = 0;
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const e = await EndToEnd.open({ userId: BOT, deviceId: "BENCHBOT", storeKey: "bench store key", api: gateway, rooms: new RoomEncryptionState(gateway), store, log: silentLogger });
      opens.push(performance.now() - t);
      if (!e.ok) throw new Error(e.error.message);
      await e.value.close();
      records = (await store.loadCryptoState(BOT)).records.length;
    }
    await store.close();
    console.log(`    crypto store open (${records} records): median ${median(opens).toFixed(0)} ms; first serve start with new keys: ${firstStart.toFixed(0)} ms`);
  } finally {
    op.stopClient();
    await hs.close();
    await rm(dir, { recursive: true, force: true });
  }
}

async function benchMetricsOverhead(): Promise<void> {
  const ROOMS_M = Number(process.env["BENCH_METRICS_ROOMS"] ?? 1000);
  const USERS_M = Number(process.env["BENCH_METRICS_USERS"] ?? 1000);
  console.log(`(f) metrics overhead: no-op run over ${ROOMS_M} rooms × ${USERS_M} users, with and without metrics (3 runs each, alternating)`);
  const dir = await mkdtemp(join(tmpdir(), "mgs-bench-m-"));
  const hs = await FakeHomeserver.start({ serverName: DOMAIN });
  try {
    const token = hs.registerUser(BOT);
    const userIds = Array.from({ length: USERS_M }, (_, i) => `user${i}`);
    const shared = new Map<string, "join">(userIds.map((u) => [`@${u}:${DOMAIN}`, "join"]));
    const rooms = Array.from({ length: ROOMS_M }, () => hs.createRoom({ creator: BOT, members: shared }));
    const dirFile = join(dir, "directory.json");
    await writeFile(
      dirFile,
      JSON.stringify({ users: userIds.map((u) => ({ id: u, attributes: { uid: u } })), groups: [{ id: "everyone", members: userIds }] }),
    );
    const settings: SyncSettings = {
      roles: { member: 0, moderator: 50, admin: 100 },
      users: { attribute: "uid", template: "@{uid}:{domain}", lowercase: true, renamedUsers: {} },
      mapping: {
        rooms: rooms.map((roomId) => ({ room: roomId, groups: [{ group: "everyone", role: "member" }] })),
        convention: { enabled: false, prefix: "MTRX ", ownersSuffix: "_owners", ownersRole: "moderator", memberRole: "member" },
      },
      sync: { kick: true, kickReason: "bench", maxRemovals: {}, ignoreUsers: [], maxDepth: 10, createRooms: false },
      concurrency: 4,
    };
    const store = await openStore({ dataDir: join(dir, "data") });
    const gateway = createBotSdkGateway({ homeserverUrl: hs.url, accessToken: token, requestTimeoutMs: 60_000, maxRetries: 5, log: silentLogger });
    const idp = new StaticIdentityProvider(dirFile);
    const metrics = new Metrics();
    const run = async (withMetrics: boolean): Promise<number> => {
      observeHomeserverResponses(withMetrics ? (s, ms) => metrics.recordHomeserverResponse(s, ms) : undefined);
      const t0 = performance.now();
      const report = await runSync({ idp, gateway, store, clock: systemClock, log: silentLogger }, settings, { dryRun: false, trigger: "cli" });
      if (withMetrics) metrics.recordRun(report);
      return performance.now() - t0;
    };
    await run(false); // warm-up
    const without: number[] = [];
    const with_: number[] = [];
    for (let i = 0; i < 3; i++) {
      without.push(await run(false));
      with_.push(await run(true));
    }
    observeHomeserverResponses(undefined);
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[1]!;
    const a = median(without);
    const b = median(with_);
    console.log(
      `    median without ${(a / 1000).toFixed(2)} s, with ${(b / 1000).toFixed(2)} s: overhead ${(((b - a) / a) * 100).toFixed(1)}% (runs: ${without.map((x) => (x / 1000).toFixed(2)).join("/")} vs ${with_.map((x) => (x / 1000).toFixed(2)).join("/")} s)`,
    );
    await store.close();
  } finally {
    await hs.close();
    await rm(dir, { recursive: true, force: true });
  }
}

// The Graph stand-in serves https with a test CA, which Node trusts only through
// NODE_EXTRA_CA_CERTS, read at process start: re-run this file with it set.
const ca = ensureTestCa().caFile;
if (process.env["NODE_EXTRA_CA_CERTS"] !== ca) {
  const child = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, NODE_EXTRA_CA_CERTS: ca },
  });
  process.exit(child.status ?? 1);
}

/** A world for (g) and (h): N rooms mapped from one group of M users, with a room template. */
async function templateWorld(hs: FakeHomeserver, dir: string, rooms: readonly string[], users: number) {
  const token = hs.registerUser(BOT);
  const userIds = Array.from({ length: users }, (_, i) => `user${i}`);
  const dirFile = join(dir, "directory.json");
  await writeFile(dirFile, JSON.stringify({ users: userIds.map((u) => ({ id: u, attributes: { uid: u } })), groups: [{ id: "everyone", members: userIds }] }));
  const template = {
    powerLevels: { invite: 0, kick: 50, redact: 50, events: { "m.room.topic": 50, "m.reaction": 0 } },
    historyVisibility: "shared" as const,
    joinRule: { rule: "invite" as const },
    guestAccess: "forbidden" as const,
    encryption: true,
  };
  const settings: SyncSettings = {
    roles: { member: 0, moderator: 50, admin: 100 },
    users: { attribute: "uid", template: "@{uid}:{domain}", lowercase: true, renamedUsers: {} },
    mapping: {
      rooms: rooms.map((room) => ({ room, groups: [{ group: "everyone", role: "member" }] })),
      convention: { enabled: false, prefix: "MTRX ", ownersSuffix: "_owners", ownersRole: "moderator", memberRole: "member" },
    },
    sync: { kick: true, kickReason: "bench", maxRemovals: {}, ignoreUsers: [], maxDepth: 10, createRooms: true },
    concurrency: 4,
    templateFor: () => template,
  };
  const store = await openStore({ dataDir: join(dir, "data") });
  const gateway = createBotSdkGateway({ homeserverUrl: hs.url, accessToken: token, requestTimeoutMs: 60_000, maxRetries: 5, log: silentLogger });
  const idp = new StaticIdentityProvider(dirFile);
  const run = () => runSync({ idp, gateway, store, clock: systemClock, log: silentLogger }, settings, { dryRun: false, trigger: "cli" });
  return { run, close: async () => { await store.close(); await idp.close(); } };
}

function requestLine(hs: FakeHomeserver): string {
  return Object.entries(hs.requestCounts())
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");
}

async function benchCreateRooms(): Promise<void> {
  // Synapse refuses a createRoom with more invitees than rc_invites.per_room.burst_count (10
  // by default, as the test homeserver): up to 10 members cost nothing beyond the createRoom,
  // the rest one invite each.
  for (const [N, M] of [
    [Number(process.env["BENCH_CREATE_ROOMS"] ?? 200), 10],
    [Number(process.env["BENCH_CREATE_ROOMS_BIG"] ?? 20), Number(process.env["BENCH_CREATE_MEMBERS"] ?? 200)],
  ] as const) {
    console.log(`(g) create ${N} missing rooms with ${M} members each (template, encryption, members' levels in the request)`);
    const dir = await mkdtemp(join(tmpdir(), "mgs-bench-"));
    const hs = await FakeHomeserver.start({ serverName: DOMAIN });
    try {
      const rooms = Array.from({ length: N }, (_, i) => `#new-${i}:${DOMAIN}`);
      const world = await templateWorld(hs, dir, rooms, M);
      hs.resetCounts();
      const t0 = performance.now();
      const report = await world.run();
      const ms = performance.now() - t0;
      const c = report.counts;
      const failed = report.rooms.flatMap((r) => r.actions.filter((a) => a.outcome === "failed"));
      if (failed.length > 0) console.log(`    failed: ${failed.length}, e.g. ${JSON.stringify(failed[0])}`);
      const later = Math.max(0, M - 10);
      console.log(`    ${c.created} created, ${c.invites} invites after creation, ${c.powerLevels} level changes, ${c.roomErrors} room errors, outcome ${report.outcome}`);
      console.log(
        `    homeserver requests: ${hs.totalRequests()} (${requestLine(hs)}); floor ${1 + N + N + N * later} (whoami + ${N} alias lookups + ${N} createRoom${later > 0 ? ` + ${N}×${later} invites past Synapse's burst of 10` : ""})`,
      );
      console.log(`    wall time ${(ms / 1000).toFixed(2)} s`);
      await world.close();
    } finally {
      await hs.close();
      await rm(dir, { recursive: true, force: true });
    }
  }
}

async function benchTemplateDrift(): Promise<void> {
  const N = Number(process.env["BENCH_DRIFT_ROOMS"] ?? 200);
  const M = Number(process.env["BENCH_DRIFT_MEMBERS"] ?? 200);
  console.log(`(h) correct template drift in ${N} rooms of ${M} members (power levels, history visibility, join rule, guest access drifted)`);
  const dir = await mkdtemp(join(tmpdir(), "mgs-bench-"));
  const hs = await FakeHomeserver.start({ serverName: DOMAIN });
  try {
    const members = new Map<string, "join">(Array.from({ length: M }, (_, i) => [`@user${i}:${DOMAIN}`, "join"] as const));
    const rooms: string[] = [];
    for (let r = 0; r < N; r++) {
      const id = hs.createRoom({ creator: BOT, members, joinRule: "public" });
      hs.putLegacyState(id, "m.room.history_visibility", "", { history_visibility: "joined" }, BOT);
      hs.putLegacyState(id, "m.room.guest_access", "", { guest_access: "can_join" }, BOT);
      rooms.push(id);
    }
    const world = await templateWorld(hs, dir, rooms, M);
    hs.resetCounts();
    const t0 = performance.now();
    const report = await world.run();
    const ms = performance.now() - t0;
    const c = report.counts;
    const puts = hs.requestCounts().put_state;
    console.log(`    ${c.permissions} permission changes, ${c.state} state changes, ${c.roomErrors} room errors, outcome ${report.outcome}`);
    console.log(`    homeserver requests: ${hs.totalRequests()} (${requestLine(hs)}); state events ${puts} = ${(puts / N).toFixed(2)} per room, floor 4 per room (1 power levels + 3 drifted types) = ${4 * N}`);
    hs.resetCounts();
    const again = await world.run();
    console.log(`    next run: ${again.counts.permissions + again.counts.state} changes, ${hs.requestCounts().put_state} state events (floor 0); wall time of the correcting run ${(ms / 1000).toFixed(2)} s`);
    await world.close();
  } finally {
    await hs.close();
    await rm(dir, { recursive: true, force: true });
  }
}

console.log(`matrix-group-sync benchmark — node ${process.version}, ${new Date().toISOString()}`);
const only = process.env["BENCH_ONLY"];
if (!only || only.includes("a")) benchPlanner();
if (!only || only.includes("c")) await benchLdap();
if (!only || only.includes("d")) await benchGraph();
if (!only || only.includes("e")) await benchTakeover();
if (!only || only.includes("e")) await benchServeTakeover();
if (!only || only.includes("f")) await benchMetricsOverhead();
if (!only || only.includes("g")) await benchCreateRooms();
if (!only || only.includes("h")) await benchTemplateDrift();
if (!only || only.includes("i")) await benchEncryptedRoom();
if (!only || only.includes("b")) await benchNoOpRun();
