/**
 * Managed rooms as desired state, through the whole pipeline: config file → loader →
 * settings → run, against the test homeserver (Synapse's createRoom, state and auth rules), a
 * static directory file and an embedded PGlite store. Checked by the end state of the rooms
 * and by the requests they cost.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { settingsFrom } from "../../src/app.ts";
import { systemClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config/load.ts";
import { StaticIdentityProvider } from "../../src/idp/static.ts";
import { silentLogger } from "../../src/log.ts";
import { createBotSdkGateway } from "../../src/matrix/bot-sdk-gateway.ts";
import type { RunReport } from "../../src/reconcile/report.ts";
import { runSync } from "../../src/reconcile/run.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import type { Store } from "../../src/store/store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const BOT = "@bot:example.org";
const u = (name: string): string => `@${name}:example.org`;

const directory = {
  users: ["alice", "bob", "carol", "dave"],
  groups: [
    { id: "chat", members: ["group:eng", "group:ops"] },
    { id: "eng", members: ["alice", "bob"] },
    { id: "eng-leads", members: ["carol"] },
    { id: "ops", members: ["dave"] },
  ],
};

interface World {
  hs: FakeHomeserver;
  store: Store;
  run(dryRun?: boolean): Promise<RunReport>;
}

let dir: string;
let world: World | undefined;
const registered = new WeakSet<FakeHomeserver>();

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-rooms-"));
});

afterEach(async () => {
  await world?.store.close();
  await world?.hs.close();
  world = undefined;
  await rm(dir, { recursive: true, force: true });
});

/** A world on `hs` (a new test homeserver when absent); the previous world's store is closed first (one PGlite per data folder). */
async function makeWorld(configTail: string, hs?: FakeHomeserver): Promise<World> {
  await world?.store.close();
  const server = hs ?? (await FakeHomeserver.start({ serverName: "example.org" }));
  if (!registered.has(server)) server.registerUser(BOT, "bot-token");
  registered.add(server);
  const token = "bot-token";
  await writeFile(join(dir, "directory.json"), JSON.stringify(directory));
  await writeFile(
    join(dir, "config.yaml"),
    `homeserver: { url: "${server.url}", accessToken: ${token} }
idp: { kind: static, static: { file: directory.json } }
dataDir: ./data
${configTail}`,
  );
  const loaded = loadConfig({ path: join(dir, "config.yaml"), env: {} });
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));
  const store = await openStore({ dataDir: join(dir, "data") });
  const gateway = createBotSdkGateway({ homeserverUrl: server.url, accessToken: token, requestTimeoutMs: 10_000, maxRetries: 5, log: silentLogger });
  const idp = new StaticIdentityProvider(join(dir, "directory.json"));
  const settings = settingsFrom(loaded.config);
  world = {
    hs: server,
    store,
    run: (dryRun = false) => runSync({ idp, gateway, store, clock: systemClock, log: silentLogger }, settings, { dryRun, trigger: "cli" }),
  };
  return world;
}

function stateOf(hs: FakeHomeserver, roomId: string): Map<string, Record<string, unknown>> {
  return new Map(hs.roomState(roomId).map((e) => [`${e.type}|${e.state_key}`, e.content]));
}

function roomIdOf(report: RunReport, room: string): string {
  const id = report.rooms.find((r) => r.room === room)?.roomId;
  if (id === null || id === undefined) throw new Error(`${room} has no room id in ${JSON.stringify(report.rooms.map((r) => r.room))}`);
  return id;
}

describe("creating missing rooms", () => {
  const config = `
mapping:
  rooms:
    - { room: "#eng:example.org", groups: [ { group: eng }, { group: eng-leads, role: moderator } ] }
    - { room: "#remote:other.org", groups: [ { group: ops } ] }
rooms:
  defaults:
    permissions: { invite: 50, kick: 50, events: { m.room.topic: 50, m.reaction: 0 } }
    historyVisibility: joined
    guestAccess: forbidden
    encryption: true
  overrides:
    "#eng:example.org": { name: Engineering, topic: "Where eng talks" }
`;

  it("creates a mapped alias of our server with its members and template in ONE request; another server's alias is reported, never created", async () => {
    const w = await makeWorld(config);
    w.hs.resetCounts();
    const report = await w.run();
    const eng = report.rooms.find((r) => r.room === "#eng:example.org");
    expect(eng?.error).toBeNull();
    expect(eng?.actions).toEqual([expect.objectContaining({ kind: "create-room", alias: "#eng:example.org", members: 3, outcome: "applied" })]);
    const remote = report.rooms.find((r) => r.room === "#remote:other.org");
    expect(remote?.error).toMatch(/other\.org.*not on our server example\.org.*not created/);
    expect(report.counts.created).toBe(1);

    // One createRoom, plus one alias lookup per mapped alias; nothing per member.
    const counts = w.hs.requestCounts();
    expect(counts.create_room).toBe(1);
    expect(counts.invite).toBe(0);
    expect(counts.put_state).toBe(0);

    const roomId = roomIdOf(report, "#eng:example.org");
    expect(w.hs.members(roomId)).toEqual({ [BOT]: "join", [u("alice")]: "invite", [u("bob")]: "invite", [u("carol")]: "invite" });
    const pl = w.hs.powerLevels(roomId);
    expect(pl).toMatchObject({ users: { [BOT]: 100, [u("carol")]: 50 }, invite: 50, kick: 50 });
    expect((pl as { events: Record<string, number> }).events).toMatchObject({ "m.room.topic": 50, "m.reaction": 0, "m.room.power_levels": 100, "m.room.encryption": 100 });
    const state = stateOf(w.hs, roomId);
    expect(state.get("m.room.name|")).toEqual({ name: "Engineering" });
    expect(state.get("m.room.topic|")).toMatchObject({ topic: "Where eng talks" });
    expect(state.get("m.room.history_visibility|")).toEqual({ history_visibility: "joined" });
    expect(state.get("m.room.guest_access|")).toEqual({ guest_access: "forbidden" });
    expect(state.get("m.room.encryption|")).toMatchObject({ algorithm: "m.megolm.v1.aes-sha2" });
    expect(state.get("m.room.canonical_alias|")).toMatchObject({ alias: "#eng:example.org" });

    // Converged: the next run resolves the alias and has nothing to do there.
    const again = await w.run();
    expect(again.rooms.find((r) => r.room === "#eng:example.org")?.actions).toEqual([]);
  });

  it("a dry run shows the creation and creates nothing; sync.createRooms: false never creates", async () => {
    const w = await makeWorld(config);
    const dry = await w.run(true);
    expect(dry.rooms.find((r) => r.room === "#eng:example.org")?.actions).toEqual([
      { kind: "create-room", alias: "#eng:example.org", members: 3 },
    ]);
    expect(w.hs.requestCounts().create_room).toBe(0);

    const off = await makeWorld(`${config}\nsync: { createRooms: false }\n`, w.hs);
    const report = await off.run();
    expect(report.rooms.find((r) => r.room === "#eng:example.org")?.error).toMatch(/createRooms is off/);
    expect(w.hs.requestCounts().create_room).toBe(0);
  });

  it("an alias taken meanwhile (M_ROOM_IN_USE) is a room error and nothing else", async () => {
    const w = await makeWorld(config);
    // The alias appears between our lookup and our createRoom: a room made by someone else.
    w.hs.beforeNext("create_room", () => {
      w.hs.createRoom({ creator: u("dave"), alias: "#eng:example.org" });
    });
    const report = await w.run();
    const eng = report.rooms.find((r) => r.room === "#eng:example.org");
    expect(eng?.error).toMatch(/the alias was taken meanwhile \(M_ROOM_IN_USE\); nothing was created/);
    expect(eng?.actions).toEqual([]);
    expect(report.outcome).toBe("failed");
    // Nothing else happened: the room someone else made is untouched, nobody was invited.
    const theirs = w.hs.directoryEntry("#eng:example.org");
    expect(theirs).toBeDefined();
    expect(w.hs.members(theirs?.roomId ?? "")).toEqual({ [u("dave")]: "join" });
  });
});

describe("template drift", () => {
  it("corrects what differs in one power-levels event plus one event per other state type, leaves a field above the bot with a note, and then has nothing to do", async () => {
    const hs = await FakeHomeserver.start({ serverName: "example.org" });
    const w = await makeWorld(
      `
mapping:
  rooms:
    - { room: "#eng:example.org", groups: [ { group: eng } ] }
rooms:
  defaults:
    permissions: { invite: 0, redact: 50, ban: 100, events: { m.room.pinned_events: 0 } }
    historyVisibility: shared
    joinRule: invite
  overrides:
    "#eng:example.org": { name: Engineering }
`,
      hs,
    );
    hs.registerUser(u("boss"));
    const roomId = hs.createRoom({
      creator: u("boss"),
      alias: "#eng:example.org",
      members: { [BOT]: "join", [u("alice")]: "join", [u("bob")]: "join" },
      joinRule: "public",
      name: "eng",
      powerLevels: { users: { [u("boss")]: 100, [BOT]: 50 }, users_default: 0, invite: 50, kick: 50, ban: 50, redact: 80, state_default: 50, events: { "m.room.power_levels": 50 } },
    });
    hs.putLegacyState(roomId, "m.room.history_visibility", "", { history_visibility: "joined" }, u("boss"));
    hs.resetCounts();

    const report = await w.run();
    const eng = report.rooms[0];
    expect(eng?.error).toBeNull();
    // redact (current 80) and ban (wanted 100) are above the bot's 50: left, with notes.
    expect(eng?.notes.join("\n")).toMatch(/permission redact: .*current 80 is above our level \(50\)/);
    expect(eng?.notes.join("\n")).toMatch(/permission ban: .*100 is above our level \(50\)/);
    const pl = hs.powerLevels(roomId) as Record<string, unknown>;
    expect(pl).toMatchObject({ invite: 0, redact: 80, ban: 50, events: { "m.room.power_levels": 50, "m.room.pinned_events": 0 } });
    const state = stateOf(hs, roomId);
    expect(state.get("m.room.history_visibility|")).toEqual({ history_visibility: "shared" });
    expect(state.get("m.room.join_rules|")).toEqual({ join_rule: "invite" });
    expect(state.get("m.room.name|")).toEqual({ name: "Engineering" });
    // One power-levels event and one event per drifted state type: 4 state PUTs.
    expect(hs.requestCounts().put_state).toBe(4);

    hs.resetCounts();
    const again = await w.run();
    expect(again.rooms[0]?.actions).toEqual([]);
    expect(hs.requestCounts().put_state).toBe(0);
  });
});

describe("spaces", () => {
  const config = `
mapping:
  rooms:
    - { room: "#eng:example.org", groups: [ { group: eng } ] }
    - { room: "#ops:example.org", groups: [ { group: ops } ] }
spaces:
  - space: "#company:example.org"
    name: Company
    children: { underGroups: [chat] }
    restrictChildren: true
`;

  it("creates the space first, then its children with a parent link and a join rule restricted to it, links them, and invites the union of their members", async () => {
    const w = await makeWorld(config);
    const report = await w.run();
    expect(report.rooms.every((r) => r.error === null)).toBe(true);
    const space = roomIdOf(report, "#company:example.org");
    const eng = roomIdOf(report, "#eng:example.org");
    const ops = roomIdOf(report, "#ops:example.org");
    const spaceState = stateOf(w.hs, space);
    expect(w.hs.roomState(space).find((e) => e.type === "m.room.create")?.content).toMatchObject({ type: "m.space" });
    expect(spaceState.get("m.room.name|")).toEqual({ name: "Company" });
    expect(spaceState.get(`m.space.child|${eng}`)).toEqual({ via: ["example.org"] });
    expect(spaceState.get(`m.space.child|${ops}`)).toEqual({ via: ["example.org"] });
    expect(w.hs.members(space)).toEqual({ [BOT]: "join", [u("alice")]: "invite", [u("bob")]: "invite", [u("dave")]: "invite" });
    for (const child of [eng, ops]) {
      const s = stateOf(w.hs, child);
      expect(s.get(`m.space.parent|${space}`)).toEqual({ via: ["example.org"] });
      expect(s.get("m.room.join_rules|")).toEqual({ join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: space }] });
    }
    const again = await w.run();
    expect(again.rooms.flatMap((r) => r.actions)).toEqual([]);
  });

  it("removes the child links it added for a room no longer mapped, and leaves a link someone else made", async () => {
    const hs = await FakeHomeserver.start({ serverName: "example.org" });
    const first = await makeWorld(config, hs);
    const report = await first.run();
    const space = roomIdOf(report, "#company:example.org");
    const ops = roomIdOf(report, "#ops:example.org");
    hs.registerUser(u("carol"));
    const handMade = hs.createRoom({ creator: BOT, alias: "#lounge:example.org" });
    hs.putLegacyState(space, "m.space.child", handMade, { via: ["example.org"] }, BOT);

    // ops is no longer in the chat group: its room leaves the space.
    directory.groups[0] = { id: "chat", members: ["group:eng"] };
    try {
      const second = await makeWorld(config, hs);
      const r2 = await second.run();
      const spaceReport = r2.rooms.find((r) => r.room === "#company:example.org");
      expect(spaceReport?.actions).toContainEqual(expect.objectContaining({ kind: "remove-child", child: ops, outcome: "applied" }));
      expect(spaceReport?.notes.join("\n")).toContain(`m.space.child ${handMade}: not added by this service, left alone`);
      const state = stateOf(hs, space);
      expect(state.get(`m.space.child|${ops}`)).toEqual({});
      expect(state.get(`m.space.child|${handMade}`)).toEqual({ via: ["example.org"] });
      // dave is no longer a member of any child: kicked from the space too.
      expect(hs.members(space)[u("dave")]).toBe("leave");
    } finally {
      directory.groups[0] = { id: "chat", members: ["group:eng", "group:ops"] };
    }
  });
});

describe("dry run = real run, with every new kind", () => {
  it("a dry run lists exactly the creations, template corrections, links and invites the real run then applies", async () => {
    const hs = await FakeHomeserver.start({ serverName: "example.org" });
    const w = await makeWorld(
      `
mapping:
  rooms:
    - { room: "#eng:example.org", groups: [ { group: eng } ] }
    - { room: "#ops:example.org", groups: [ { group: ops } ] }
rooms:
  defaults:
    permissions: { invite: 0, events: { m.room.topic: 50 } }
    historyVisibility: shared
spaces:
  - space: "#company:example.org"
    children: { rooms: ["#eng:example.org", "#ops:example.org"] }
    restrictChildren: true
`,
      hs,
    );
    // #ops exists and has drifted; #eng and the space do not exist yet.
    const ops = hs.createRoom({ creator: BOT, alias: "#ops:example.org", members: { [u("mallory")]: "join" } });
    hs.putLegacyState(ops, "m.room.history_visibility", "", { history_visibility: "joined" }, BOT);

    const dry = await w.run(true);
    expect(hs.requestCounts().create_room).toBe(0);
    expect(hs.members(ops)).toEqual({ [BOT]: "join", [u("mallory")]: "join" });
    const real = await w.run();
    expect(real.outcome).toBe("ok");

    // The ids the real run made stand for the references the dry run named.
    const ids = new Map(real.rooms.flatMap((r) => (r.roomId !== null ? [[r.roomId, r.room] as const] : [])));
    const normal = (report: RunReport): unknown =>
      report.rooms.map((r) => ({
        room: r.room,
        actions: r.actions.map((a) => {
          const { outcome: _o, error: _e, ...rest } = a;
          const { roomId: _r, childId: _c, ...plain } = rest as typeof rest & { roomId?: string; childId?: string };
          let text = JSON.stringify(plain);
          for (const [id, ref] of ids) text = text.split(id).join(ref);
          return JSON.parse(text) as unknown;
        }),
      }));
    expect(normal(dry)).toEqual(normal(real));
    const kinds = new Set(real.rooms.flatMap((r) => r.actions.map((a) => a.kind)));
    expect([...kinds].sort()).toEqual(["add-child", "create-room", "invite", "kick", "set-power-levels", "set-state"]);
    expect(real.rooms.flatMap((r) => r.actions).every((a) => a.outcome === "applied")).toBe(true);
  });
});

describe("bad input", () => {
  it("a room that exists but the bot is not in, and a room configured as a space that is not one: one clear error each, the other rooms still run", async () => {
    const hs = await FakeHomeserver.start({ serverName: "example.org" });
    const w = await makeWorld(
      `
mapping:
  rooms:
    - { room: "#eng:example.org", groups: [ { group: eng } ] }
    - { room: "#ops:example.org", groups: [ { group: ops } ] }
    - { room: "#lounge:example.org", groups: [ { group: ops } ] }
spaces:
  - space: "#plain:example.org"
    children: { rooms: ["#lounge:example.org"] }
`,
      hs,
    );
    hs.registerUser(u("boss"));
    hs.createRoom({ creator: u("boss"), alias: "#eng:example.org" });
    hs.createRoom({ creator: BOT, alias: "#plain:example.org" });
    const lounge = hs.createRoom({ creator: BOT, alias: "#lounge:example.org" });
    const report = await w.run();
    const byRoom = new Map(report.rooms.map((r) => [r.room, r]));
    expect(byRoom.get("#eng:example.org")?.error).toMatch(/the bot is not in this room; invite it .* nothing was changed/);
    expect(byRoom.get("#plain:example.org")?.error).toMatch(/configured as a space, but .* is not one .*nothing changed/);
    expect(byRoom.get("#ops:example.org")?.actions).toEqual([expect.objectContaining({ kind: "create-room", outcome: "applied" })]);
    expect(hs.members(lounge)).toMatchObject({ [u("dave")]: "invite" });
    // Nothing was linked into the room that is not a space.
    expect(hs.roomState(roomIdOf(report, "#plain:example.org")).some((e) => e.type === "m.space.child")).toBe(false);
  });
});
