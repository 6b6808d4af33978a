/**
 * The whole pipeline against the test homeserver, a static directory file and an embedded
 * PGlite store: end state of the rooms, the record, and dry run = real run.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { systemClock } from "../../src/clock.ts";
import { StaticIdentityProvider } from "../../src/idp/static.ts";
import { silentLogger } from "../../src/log.ts";
import { createBotSdkGateway } from "../../src/matrix/bot-sdk-gateway.ts";
import { runSync, type SyncSettings } from "../../src/reconcile/run.ts";
import type { ReportAction, RunReport } from "../../src/reconcile/report.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import type { Store } from "../../src/store/store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const BOT = "@bot:example.org";
const u = (name: string): string => `@${name}:example.org`;

let dir: string;
let store: Store;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-run-"));
  store = await openStore({ dataDir: join(dir, "data") });
});

afterAll(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

interface World {
  hs: FakeHomeserver;
  token: string;
  dirFile: string;
  run(opts?: { dryRun?: boolean; rooms?: string[]; settings?: Partial<SyncSettings["sync"]> }): Promise<RunReport>;
}

let world: World;
let counter = 0;

async function makeWorld(directory: unknown, mapping: SyncSettings["mapping"]["rooms"]): Promise<World> {
  const hs = await FakeHomeserver.start({ serverName: "example.org" });
  const token = hs.registerUser(BOT);
  const dirFile = join(dir, `directory-${++counter}.json`);
  await writeFile(dirFile, JSON.stringify(directory));
  const gateway = createBotSdkGateway({
    homeserverUrl: hs.url,
    accessToken: token,
    requestTimeoutMs: 10_000,
    maxRetries: 5,
    log: silentLogger,
  });
  const idp = new StaticIdentityProvider(dirFile);
  return {
    hs,
    token,
    dirFile,
    run: (opts = {}) =>
      runSync(
        { idp, gateway, store, clock: systemClock, log: silentLogger },
        {
          roles: { member: 0, moderator: 50, admin: 100 },
          users: { attribute: "uid", template: "@{uid}:{domain}", lowercase: true, renamedUsers: {} },
          mapping: {
            rooms: mapping,
            convention: { enabled: false, prefix: "MTRX ", ownersSuffix: "_owners", ownersRole: "moderator", memberRole: "member" },
          },
          sync: {
            kick: true,
            kickReason: "not in the directory group",
            maxRemovals: {},
            ignoreUsers: [],
            maxDepth: 10,
            createRooms: false,
            ...opts.settings,
          },
          concurrency: 3,
        },
        { dryRun: opts.dryRun ?? false, trigger: "cli", ...(opts.rooms ? { rooms: opts.rooms } : {}) },
      ),
  };
}

const directory = {
  users: ["alice", "bob", "carol", "dave", { id: "eve", attributes: { uid: "eve" }, enabled: false }, { id: "bad", attributes: { uid: "Bad Name" } }],
  groups: [
    { id: "staff", members: ["alice", "bob", "group:leads", "eve", "bad"] },
    { id: "leads", members: ["carol"] },
    { id: "ops", members: ["dave"] },
  ],
};

function withoutOutcome(actions: readonly ReportAction[]): ReportAction[] {
  return actions.map((a) => {
    const { outcome: _o, error: _e, ...rest } = a;
    return rest;
  });
}

describe("a sync run", () => {
  let staffRoom: string;
  let opsRoom: string;

  beforeEach(async () => {
    world = await makeWorld(directory, [
      { room: "#staff:example.org", groups: [{ group: "staff", role: "member" }, { group: "leads", role: "moderator" }] },
      { room: "#ops:example.org", groups: [{ group: "ops", role: "admin" }] },
    ]);
    staffRoom = world.hs.createRoom({
      creator: BOT,
      alias: "#staff:example.org",
      members: { [u("alice")]: "join", [u("mallory")]: "join", [u("trudy")]: "invite", "@guest:other.org": "join" },
      powerLevels: {
        users: { [BOT]: 100, [u("mallory")]: 50 },
        users_default: 0,
        events: { "m.room.name": 50 },
        state_default: 50,
        kick: 50,
        ban: 50,
        invite: 0,
        redact: 50,
        "org.example.custom": "kept",
      },
    });
    opsRoom = world.hs.createRoom({ creator: BOT, alias: "#ops:example.org" });
  });

  afterEach(async () => {
    await world.hs.close();
  });

  it("brings every room to the directory's state, and a second run has nothing to do", async () => {
    const report = await world.run();
    expect(report.outcome).toBe("ok");

    expect(world.hs.members(staffRoom)).toEqual({
      [BOT]: "join",
      [u("alice")]: "join",
      [u("bob")]: "invite",
      [u("carol")]: "invite",
      [u("mallory")]: "leave",
      [u("trudy")]: "leave",
      "@guest:other.org": "join",
    });
    const pl = world.hs.powerLevels(staffRoom)!;
    expect(pl["users"]).toEqual({ [BOT]: 100, [u("carol")]: 50 });
    // Everything else in the content is preserved.
    expect(pl["events"]).toEqual({ "m.room.name": 50 });
    expect(pl["org.example.custom"]).toBe("kept");
    // Admin role is clamped to... the bot's own level (100 here, so dave gets 100).
    expect(world.hs.powerLevels(opsRoom)!["users"]).toEqual({ [BOT]: 100, [u("dave")]: 100 });

    const staff = report.rooms.find((r) => r.room === "#staff:example.org")!;
    expect(staff.notes.some((n) => n.includes("Bad Name") || n.toLowerCase().includes("bad name"))).toBe(true);

    const again = await world.run();
    expect(again.rooms.flatMap((r) => r.actions)).toEqual([]);
    expect(again.outcome).toBe("ok");
  });

  it("a dry run changes nothing and lists exactly what the real run then applies", async () => {
    const before = { staff: world.hs.members(staffRoom), pl: world.hs.powerLevels(staffRoom) };
    const dry = await world.run({ dryRun: true });
    expect(world.hs.members(staffRoom)).toEqual(before.staff);
    expect(world.hs.powerLevels(staffRoom)).toEqual(before.pl);
    expect(world.hs.appliedChanges()).toEqual([]);
    expect(dry.rooms.flatMap((r) => r.actions).every((a) => a.outcome === undefined)).toBe(true);

    const real = await world.run();
    for (const room of real.rooms) {
      const planned = dry.rooms.find((r) => r.room === room.room)!;
      expect(withoutOutcome(room.actions)).toEqual(planned.actions);
      expect(room.actions.every((a) => a.outcome === "applied")).toBe(true);
    }
    // One homeserver change per invite/kick and one power-levels event per room.
    const changes = world.hs.appliedChanges();
    const kinds = changes.map((c) => c.kind).sort();
    expect(kinds).toEqual(["invite", "invite", "invite", "kick", "kick", "power_levels", "power_levels"].sort());
  });

  it("records the run and every action in the store", async () => {
    const report = await world.run();
    const runs = await store.listRuns(1);
    expect(runs[0]!.id).toBe(report.runId);
    expect(runs[0]!.outcome).toBe("ok");
    const actions = await store.listActions(report.runId!);
    const kicks = actions.filter((a) => a.kind === "kick").map((a) => a.userId).sort();
    expect(kicks).toEqual([u("mallory"), u("trudy")]);
    expect(actions.every((a) => a.outcome === "applied")).toBe(true);
  });

  it("an unknown alias fails that room only; the others still sync", async () => {
    const w = await makeWorld(directory, [
      { room: "#missing:example.org", groups: [{ group: "ops", role: "member" }] },
      { room: "#ops:example.org", groups: [{ group: "ops", role: "member" }] },
    ]);
    const ops = w.hs.createRoom({ creator: BOT, alias: "#ops:example.org" });
    const report = await w.run();
    expect(report.outcome).toBe("failed");
    const missing = report.rooms.find((r) => r.room === "#missing:example.org")!;
    expect(missing.error).toMatch(/#missing:example.org/);
    expect(w.hs.members(ops)[u("dave")]).toBe("invite");
    await w.hs.close();
  });

  it("an unreadable directory changes nothing anywhere", async () => {
    await writeFile(world.dirFile, "groups: [ { id: x, members: 3 } ]");
    const report = await world.run();
    expect(report.outcome).toBe("failed");
    expect(report.errors.join("\n")).toMatch(/directory/);
    expect(world.hs.appliedChanges()).toEqual([]);
  });

  it("an incomplete group means no removals in its rooms, but invites still go out", async () => {
    await writeFile(
      world.dirFile,
      JSON.stringify({ ...directory, groups: directory.groups.map((g) => (g.id === "staff" ? { ...g, incomplete: "size limit exceeded" } : g)) }),
    );
    const report = await world.run();
    const members = world.hs.members(staffRoom);
    expect(members[u("mallory")]).toBe("join");
    expect(members[u("trudy")]).toBe("invite");
    expect(members[u("bob")]).toBe("invite");
    const staff = report.rooms.find((r) => r.room === "#staff:example.org")!;
    expect(staff.notes.join("\n")).toMatch(/incomplete/);
  });

  it("holds a mass removal across runs until it is released", async () => {
    const report = await world.run({ settings: { maxRemovals: { count: 1 } } });
    const staff = report.rooms.find((r) => r.room === "#staff:example.org")!;
    expect(staff.held.map((h) => h.user).sort()).toEqual([u("mallory"), u("trudy")]);
    expect(world.hs.members(staffRoom)[u("mallory")]).toBe("join");
    // Still held with a generous limit: held removals wait for an operator.
    const again = await world.run({ settings: { maxRemovals: { count: 100 } } });
    expect(again.rooms.find((r) => r.room === "#staff:example.org")!.held).toHaveLength(2);
    expect(world.hs.members(staffRoom)[u("mallory")]).toBe("join");

    expect(await store.releaseHeld(staffRoom, [u("mallory")], new Date())).toBe(1);
    await world.run({ settings: { maxRemovals: { count: 1 } } });
    expect(world.hs.members(staffRoom)[u("mallory")]).toBe("leave");
    expect(world.hs.members(staffRoom)[u("trudy")]).toBe("invite");
    expect((await store.listHeld(staffRoom)).map((h) => h.userId)).toEqual([u("trudy")]);
  });

  it("waits out 429s with Retry-After and applies each action once", async () => {
    world.hs.rateLimit({ count: 4, retryAfterMs: 50, endpoints: ["invite", "kick", "state"] });
    const report = await world.run();
    expect(report.outcome).toBe("ok");
    const invites = world.hs.appliedChanges().filter((c) => c.kind === "invite");
    expect(invites).toHaveLength(3);
    expect(new Set(invites.map((c) => `${c.roomId} ${c.target}`)).size).toBe(3);
    expect(world.hs.members(staffRoom)[u("mallory")]).toBe("leave");
  });

  it("gives up on a room the bot cannot manage, with a clear note", async () => {
    const w = await makeWorld(directory, [{ room: "#low:example.org", groups: [{ group: "ops", role: "moderator" }] }]);
    const low = w.hs.createRoom({
      creator: u("owner"),
      alias: "#low:example.org",
      members: { [BOT]: "join", [u("mallory")]: "join" },
      powerLevels: { users: { [u("owner")]: 100, [BOT]: 10 }, users_default: 0, kick: 50, invite: 0, state_default: 50, ban: 50, redact: 50, events: {} },
    });
    const report = await w.run();
    const room = report.rooms[0]!;
    expect(room.notes.join("\n")).toContain(`our level 10 is too low to kick (needs 50), change power levels (needs 50): raise ${BOT} to at least 50`);
    expect(room.notes.join("\n")).toMatch(/cannot kick/);
    expect(room.notes.join("\n")).toMatch(/cannot change power levels/);
    expect(w.hs.members(low)[u("mallory")]).toBe("join");
    expect(w.hs.members(low)[u("dave")]).toBe("invite");
    await w.hs.close();
  });

  it("a room the bot is not in is an error naming the room", async () => {
    const w = await makeWorld(directory, [{ room: "#closed:example.org", groups: [{ group: "ops", role: "member" }] }]);
    w.hs.createRoom({ creator: u("owner"), alias: "#closed:example.org" });
    const report = await w.run();
    expect(report.rooms[0]!.error).toMatch(/M_FORBIDDEN/);
    expect(report.outcome).toBe("failed");
    await w.hs.close();
  });

  it("--room limits the run to one room, by alias or by id", async () => {
    const byAlias = await world.run({ dryRun: true, rooms: ["#ops:example.org"] });
    expect(byAlias.rooms.map((r) => r.room)).toEqual(["#ops:example.org"]);
    const byId = await world.run({ dryRun: true, rooms: [staffRoom] });
    expect(byId.rooms.map((r) => r.roomId)).toEqual([staffRoom]);
    const unknown = await world.run({ dryRun: true, rooms: ["#nope:example.org"] });
    expect(unknown.errors.join()).toMatch(/#nope:example.org: not a managed room/);
  });
});
