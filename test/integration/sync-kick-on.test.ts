/**
 * `sync.kickOn` end to end: a config file loaded by our loader, its settings (settingsFrom),
 * runs started by each trigger against the test homeserver, and the end state of the room, the
 * report and the held removals. Also `users.renamedLocalparts` reaching the real account.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { settingsFrom } from "../../src/app.ts";
import { systemClock } from "../../src/clock.ts";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";
import { StaticIdentityProvider } from "../../src/idp/static.ts";
import { silentLogger } from "../../src/log.ts";
import { createBotSdkGateway } from "../../src/matrix/bot-sdk-gateway.ts";
import type { RunReport } from "../../src/reconcile/report.ts";
import { runSync } from "../../src/reconcile/run.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import type { RunTrigger, Store } from "../../src/store/store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const BOT = "@bot:example.org";
const u = (name: string): string => `@${name}:example.org`;
const MANUAL_NOTE = "kicks are made only by manual runs (sync.kickOn: manual): run !sync or matrix-group-sync sync";

let dir: string;
let store: Store;
let hs: FakeHomeserver;
let token: string;
let counter = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-kick-on-"));
  store = await openStore({ dataDir: join(dir, "data") });
});

afterAll(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  token = hs.registerUser(BOT);
});

afterEach(async () => {
  await hs.close();
});

const DIRECTORY = { users: ["alice", "bob"], groups: [{ id: "staff", members: ["alice", "bob"] }] };

/** A config file with `sync` and `users` as given, loaded by our loader; its run, by trigger. */
async function world(sync: string, opts: { users?: string; directory?: unknown } = {}): Promise<{ room: string; run: (trigger: RunTrigger) => Promise<RunReport> }> {
  const n = ++counter;
  const dirFile = join(dir, `directory-${n}.json`);
  await writeFile(dirFile, JSON.stringify(opts.directory ?? DIRECTORY));
  const configFile = join(dir, `config-${n}.yaml`);
  await writeFile(
    configFile,
    [
      `homeserver: { url: "${hs.url}", accessToken: "${token}" }`,
      `idp: { kind: static, static: { file: directory-${n}.json } }`,
      `mapping: { rooms: [{ room: "#staff:example.org", groups: [{ group: staff }] }] }`,
      `sync: ${sync}`,
      ...(opts.users !== undefined ? [`users: ${opts.users}`] : []),
      "",
    ].join("\n"),
  );
  const loaded = loadConfig({ path: configFile, env: {} });
  if (!loaded.ok) throw new Error(loaded.errors.map(formatConfigError).join("\n"));
  const settings = settingsFrom(loaded.config);
  const room = hs.createRoom({
    creator: BOT,
    alias: "#staff:example.org",
    members: { [u("alice")]: "join", [u("mallory")]: "join", [u("trudy")]: "invite" },
    powerLevels: { users: { [BOT]: 100 }, users_default: 0, state_default: 50, kick: 50, ban: 50, invite: 0, redact: 50 },
  });
  const gateway = createBotSdkGateway({ homeserverUrl: hs.url, accessToken: token, requestTimeoutMs: 10_000, maxRetries: 5, log: silentLogger });
  const deps = { idp: new StaticIdentityProvider(dirFile), gateway, store, clock: systemClock, log: silentLogger };
  return { room, run: (trigger) => runSync(deps, settings, { dryRun: false, trigger }) };
}

const notesOf = (report: RunReport): string[] => report.rooms.flatMap((r) => r.notes);

describe("sync.kickOn: manual (the inviterbot's cautious: true)", () => {
  it("a scheduled run and the run at start invite but leave the others in the room, and the report says why and how to get the kicks", async () => {
    const w = await world("{ kickOn: manual }");
    for (const trigger of ["schedule", "startup"] as const) {
      const report = await w.run(trigger);
      expect(report.outcome).toBe("ok");
      expect(report.counts.kicks).toBe(0);
      expect(hs.members(w.room)).toMatchObject({ [u("mallory")]: "join", [u("trudy")]: "invite", [u("bob")]: "invite" });
      expect(notesOf(report)).toEqual(
        expect.arrayContaining([
          `${u("mallory")}: not in a mapped group; left in the room: ${MANUAL_NOTE}`,
          `${u("trudy")}: not in a mapped group; left in the room: ${MANUAL_NOTE}`,
        ]),
      );
    }
  });

  it("a run from the sync CLI command kicks", async () => {
    const w = await world("{ kickOn: manual }");
    await w.run("schedule");
    const report = await w.run("cli");
    expect(report.counts.kicks).toBe(2);
    expect(hs.members(w.room)).toEqual({ [BOT]: "join", [u("alice")]: "join", [u("bob")]: "invite", [u("mallory")]: "leave", [u("trudy")]: "leave" });
    expect(notesOf(report).some((n) => n.includes("sync.kickOn"))).toBe(false);
  });

  it("a run from !sync in the management room kicks", async () => {
    const w = await world("{ kickOn: manual }");
    const report = await w.run("command");
    expect(report.counts.kicks).toBe(2);
    expect(hs.members(w.room)).toMatchObject({ [u("mallory")]: "leave", [u("trudy")]: "leave" });
  });

  it("held removals and releases survive scheduled runs: the guard still decides on the next manual run", async () => {
    const w = await world("{ kickOn: manual, maxRemovals: { count: 1 } }");
    const manual = await w.run("cli");
    expect(manual.rooms[0]!.held.map((h) => h.user).sort()).toEqual([u("mallory"), u("trudy")]);
    const heldUsers = async (): Promise<{ userId: string; released: boolean }[]> =>
      (await store.listHeld(w.room)).map((h) => ({ userId: h.userId, released: h.releasedAt !== null })).sort((a, b) => a.userId.localeCompare(b.userId));
    expect(await heldUsers()).toEqual([
      { userId: u("mallory"), released: false },
      { userId: u("trudy"), released: false },
    ]);

    // A scheduled run judges no removal: the held set is left exactly as it is.
    await w.run("schedule");
    expect(await heldUsers()).toEqual([
      { userId: u("mallory"), released: false },
      { userId: u("trudy"), released: false },
    ]);
    // An operator releases one; a scheduled run keeps the release and still kicks nobody.
    await store.releaseHeld(w.room, [u("mallory")], new Date());
    const scheduled = await w.run("schedule");
    expect(scheduled.counts.kicks).toBe(0);
    expect(hs.members(w.room)).toMatchObject({ [u("mallory")]: "join", [u("trudy")]: "invite" });
    expect(await heldUsers()).toEqual([
      { userId: u("mallory"), released: true },
      { userId: u("trudy"), released: false },
    ]);
    // The next manual run applies the release; the other stays held (held earlier: waits for an operator).
    const next = await w.run("command");
    expect(hs.members(w.room)).toMatchObject({ [u("mallory")]: "leave", [u("trudy")]: "invite" });
    expect(next.rooms[0]!.held.map((h) => h.user)).toEqual([u("trudy")]);
    expect(await heldUsers()).toEqual([{ userId: u("trudy"), released: false }]);
  });
});

describe("the other rules", () => {
  it("kickOn: scheduled: a CLI run leaves them and says the schedule kicks; the scheduled run kicks", async () => {
    const w = await world("{ kickOn: scheduled }");
    const cli = await w.run("cli");
    expect(cli.counts.kicks).toBe(0);
    expect(hs.members(w.room)).toMatchObject({ [u("mallory")]: "join" });
    expect(notesOf(cli)).toContain(
      `${u("mallory")}: not in a mapped group; left in the room: kicks are made only by scheduled runs (sync.kickOn: scheduled): the service's next scheduled run makes them`,
    );
    const scheduled = await w.run("schedule");
    expect(scheduled.counts.kicks).toBe(2);
    expect(hs.members(w.room)).toMatchObject({ [u("mallory")]: "leave", [u("trudy")]: "leave" });
  });

  it("sync.kick: false (the older form) still never kicks, whoever starts the run", async () => {
    const w = await world("{ kick: false }");
    for (const trigger of ["cli", "command", "schedule"] as const) {
      const report = await w.run(trigger);
      expect(report.counts.kicks).toBe(0);
      expect(notesOf(report)).toContain(`${u("mallory")}: not in a mapped group; kicking is off (sync.kickOn: never), left in the room`);
    }
    expect(hs.members(w.room)).toMatchObject({ [u("mallory")]: "join", [u("trudy")]: "invite" });
  });

  it("no kickOn, no kick: every run kicks, a scheduled one too", async () => {
    const w = await world("{ kickReason: bye }");
    const report = await w.run("schedule");
    expect(report.counts.kicks).toBe(2);
    expect(hs.members(w.room)).toMatchObject({ [u("mallory")]: "leave", [u("trudy")]: "leave" });
  });
});

describe("users.renamedLocalparts", () => {
  it("the user the directory now calls jane.doe is invited as their real account @jdoe", async () => {
    const w = await world("{ kickOn: never }", {
      users: "{ domain: example.org, renamedLocalparts: { jane.doe: jdoe } }",
      directory: { users: ["alice", "jane.doe"], groups: [{ id: "staff", members: ["alice", "jane.doe"] }] },
    });
    await w.run("cli");
    const members = hs.members(w.room);
    expect(members[u("jdoe")]).toBe("invite");
    expect(members[u("jane.doe")]).toBeUndefined();
  });
});
