/**
 * The test homeserver's `POST /createRoom`, `PUT|DELETE /directory/room/{alias}` and the state PUTs a
 * managed room needs (spaces, join rules, history visibility, guest access, name, topic, encryption),
 * over plain HTTP, against Synapse's behaviour (synapse/handlers/room.py, synapse/handlers/directory.py,
 * synapse/rest/client/directory.py, synapse/events/validator.py, synapse/event_auth.py).
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const SERVER = "example.org";
const ALICE = "@alice:example.org";
const BOB = "@bob:example.org";
const CAROL = "@carol:example.org";
const DAVE = "@dave:example.org";
const ROOT = "@root:example.org"; // a server admin

interface ClientEvent {
  type: string;
  state_key?: string;
  content: Record<string, unknown>;
  sender: string;
  event_id: string;
}

interface Body {
  errcode?: string;
  error?: string;
  room_id?: string;
  room_alias?: string;
  servers?: string[];
  event_id?: string;
}

interface Answer {
  status: number;
  body: Body;
}

interface SyncBody {
  rooms: {
    join: Record<string, { timeline: { events: ClientEvent[]; limited: boolean }; state: { events: ClientEvent[] } }>;
    invite: Record<string, { invite_state: { events: ClientEvent[] } }>;
  };
}

let hs: FakeHomeserver;
const tokens: Record<string, string> = {};

async function call(method: string, path: string, opts: { as?: string; token?: string; body?: unknown; raw?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  const token = opts.token ?? (opts.as !== undefined ? tokens[opts.as] : undefined);
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  const body = opts.raw ?? (opts.body !== undefined ? JSON.stringify(opts.body) : undefined);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${hs.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as Body };
}

const v3 = (path: string): string => `/_matrix/client/v3${path}`;
const room = (roomId: string, rest: string): string => v3(`/rooms/${encodeURIComponent(roomId)}${rest}`);
const dir = (alias: string): string => v3(`/directory/room/${encodeURIComponent(alias)}`);

function expectError(a: Answer, status: number, errcode: string, message?: string | RegExp): void {
  expect(a.status, JSON.stringify(a.body)).toBe(status);
  expect(a.body.errcode).toBe(errcode);
  if (typeof message === "string") expect(a.body.error).toBe(message);
  else if (message) expect(a.body.error).toMatch(message);
}

/** `POST /createRoom` that must succeed; returns the room id. */
async function create(as: string, body: Record<string, unknown> = {}): Promise<string> {
  const a = await call("POST", v3("/createRoom"), { as, body });
  expect(a.status, JSON.stringify(a.body)).toBe(200);
  expect(Object.keys(a.body)).toEqual(["room_id"]);
  return a.body.room_id!;
}

/** Current state over HTTP (`GET /state`), as `type|state_key` → content. */
async function stateMap(as: string, roomId: string): Promise<Map<string, Record<string, unknown>>> {
  const a = await call("GET", room(roomId, "/state"), { as });
  expect(a.status, JSON.stringify(a.body)).toBe(200);
  const events = a.body as unknown as ClientEvent[];
  return new Map(events.map((e) => [`${e.type}|${e.state_key ?? ""}`, e.content]));
}

/** The room's events in order, as its creator's initial sync shows them (timeline limit 50). */
async function timeline(as: string, roomId: string): Promise<ClientEvent[]> {
  const filter = JSON.stringify({ room: { timeline: { limit: 50 } } });
  const a = await call("GET", v3(`/sync?filter=${encodeURIComponent(filter)}`), { as });
  expect(a.status).toBe(200);
  const section = (a.body as unknown as SyncBody).rooms.join[roomId];
  expect(section, `${roomId} not in rooms.join`).toBeDefined();
  return section!.timeline.events;
}

const putState = (as: string, roomId: string, type: string, stateKey: string, content: unknown): Promise<Answer> =>
  call("PUT", room(roomId, `/state/${encodeURIComponent(type)}/${encodeURIComponent(stateKey)}`), { as, body: content });

/** Synapse's default power levels of a new room (room versions before 12), with the private_chat preset applied. */
const privateChatLevels = (users: Record<string, number>): Record<string, unknown> => ({
  users,
  users_default: 0,
  events: {
    "m.room.name": 50,
    "m.room.power_levels": 100,
    "m.room.history_visibility": 100,
    "m.room.canonical_alias": 50,
    "m.room.avatar": 50,
    "m.room.tombstone": 100,
    "m.room.server_acl": 100,
    "m.room.encryption": 100,
  },
  events_default: 0,
  state_default: 50,
  ban: 50,
  kick: 50,
  redact: 50,
  invite: 0,
  historical: 100,
});

beforeEach(async () => {
  hs = await FakeHomeserver.start({ serverName: SERVER });
  for (const u of [ALICE, BOB, CAROL, DAVE]) tokens[u] = hs.registerUser(u);
  tokens[ROOT] = hs.registerUser(ROOT, undefined, { admin: true });
});

afterEach(async () => {
  await hs.close();
});

describe("createRoom: presets", () => {
  it("defaults to room version 11 and private_chat: invite only, shared history, guests may join, invite level 0, events in Synapse's order", async () => {
    const roomId = await create(ALICE);
    expect(roomId).toMatch(/^![A-Za-z]{18}:example\.org$/);
    expect(hs.requestCounts().create_room).toBe(1);
    const state = await stateMap(ALICE, roomId);
    expect(state.get("m.room.create|")).toEqual({ room_version: "11" }); // v11: no `creator`
    expect(state.get(`m.room.member|${ALICE}`)).toEqual({ membership: "join" });
    expect(state.get("m.room.power_levels|")).toEqual(privateChatLevels({ [ALICE]: 100 }));
    expect(state.get("m.room.join_rules|")).toEqual({ join_rule: "invite" });
    expect(state.get("m.room.history_visibility|")).toEqual({ history_visibility: "shared" });
    expect(state.get("m.room.guest_access|")).toEqual({ guest_access: "can_join" });
    expect(state.size).toBe(6);
    const events = await timeline(ALICE, roomId);
    expect(events.map((e) => e.type)).toEqual([
      "m.room.create",
      "m.room.member",
      "m.room.power_levels",
      "m.room.join_rules",
      "m.room.history_visibility",
      "m.room.guest_access",
    ]);
    expect(events.every((e) => e.sender === ALICE)).toBe(true);
    expect(hs.stateOf(roomId, "m.room.join_rules")).toEqual({ join_rule: "invite" });
    expect(hs.roomType(roomId)).toBeUndefined();
  });

  it("public_chat (the default for visibility public, and for any visibility but \"private\"): public, no guest access, invite 50 and a top-level m.call.invite", async () => {
    for (const body of [{ visibility: "public" }, { preset: "public_chat" }, { visibility: "unlisted" }]) {
      const roomId = await create(ALICE, body);
      const state = await stateMap(ALICE, roomId);
      expect(state.get("m.room.join_rules|")).toEqual({ join_rule: "public" });
      expect(state.get("m.room.history_visibility|")).toEqual({ history_visibility: "shared" });
      expect(state.has("m.room.guest_access|")).toBe(false);
      expect(state.get("m.room.power_levels|")).toEqual({ ...privateChatLevels({ [ALICE]: 100 }), invite: 50, "m.call.invite": 50 });
    }
    // An explicit preset wins over the visibility.
    const roomId = await create(ALICE, { visibility: "public", preset: "private_chat" });
    expect((await stateMap(ALICE, roomId)).get("m.room.join_rules|")).toEqual({ join_rule: "invite" });
  });

  it("trusted_private_chat gives the invitees the creator's level; room version 10 names the creator in m.room.create", async () => {
    const roomId = await create(ALICE, { preset: "trusted_private_chat", invite: [BOB, CAROL], room_version: "10" });
    const state = await stateMap(ALICE, roomId);
    expect(state.get("m.room.create|")).toEqual({ room_version: "10", creator: ALICE });
    expect(state.get("m.room.power_levels|")).toEqual(privateChatLevels({ [ALICE]: 100, [BOB]: 100, [CAROL]: 100 }));
    expect(state.get("m.room.guest_access|")).toEqual({ guest_access: "can_join" });
    expect(hs.members(roomId)).toEqual({ [ALICE]: "join", [BOB]: "invite", [CAROL]: "invite" });
  });

  it("room version 12: an id without server part, no creator in users, tombstone 150; trusted_private_chat makes the invitees additional creators", async () => {
    const plain = await create(ALICE, { room_version: "12" });
    expect(plain).toMatch(/^![A-Za-z0-9_-]{43}$/);
    const plainState = await stateMap(ALICE, plain);
    expect(plainState.get("m.room.create|")).toEqual({ room_version: "12" });
    const pl = plainState.get("m.room.power_levels|")!;
    expect(pl.users).toEqual({});
    expect((pl.events as Record<string, number>)["m.room.tombstone"]).toBe(150);
    const createEvent = (await timeline(ALICE, plain))[0]!;
    expect(createEvent.event_id).toBe(`$${plain.slice(1)}`);

    const trusted = await create(ALICE, {
      room_version: "12",
      preset: "trusted_private_chat",
      invite: [BOB],
      creation_content: { additional_creators: [CAROL] },
    });
    const state = await stateMap(ALICE, trusted);
    expect(state.get("m.room.create|")).toEqual({ additional_creators: [CAROL, BOB], room_version: "12" });
    expect(state.get("m.room.power_levels|")!.users).toEqual({});
    // Bob, a creator, joins and has unlimited power: he may raise anyone and set any event level.
    expect((await call("POST", room(trusted, "/join"), { as: BOB })).status).toBe(200);
    const raised = { ...state.get("m.room.power_levels|")!, users: { [DAVE]: 1_000_000 } };
    expect((await putState(BOB, trusted, "m.room.power_levels", "", raised)).status).toBe(200);
    // A creator in users is refused, also as an additional creator.
    expectError(await putState(BOB, trusted, "m.room.power_levels", "", { ...raised, users: { [ALICE]: 100 } }), 400, "M_UNKNOWN", `Creator user ${ALICE} must not appear in content.users`);
    expectError(await putState(BOB, trusted, "m.room.power_levels", "", { ...raised, users: { [CAROL]: 100 } }), 400, "M_UNKNOWN", "Additional creators users must not appear in content.users");
  });
});

describe("createRoom: power_level_content_override", () => {
  it("shallow-updates the preset's content: a given map (events, users) replaces the preset's whole map", async () => {
    const roomId = await create(ALICE, {
      power_level_content_override: { users: { [ALICE]: 100, [CAROL]: 50 }, events: { "m.room.name": 0 }, invite: 50, kick: 75 },
    });
    const pl = hs.powerLevels(roomId)!;
    expect(pl).toEqual({ ...privateChatLevels({ [ALICE]: 100, [CAROL]: 50 }), events: { "m.room.name": 0 }, invite: 50, kick: 75 });
    // The new levels govern at once: Bob (0) may name the room.
    expect((await call("POST", room(roomId, "/invite"), { as: ALICE, body: { user_id: BOB } })).status).toBe(200);
    expect((await call("POST", room(roomId, "/join"), { as: BOB })).status).toBe(200);
    expect((await putState(BOB, roomId, "m.room.name", "", { name: "by bob" })).status).toBe(200);
  });

  it("refuses users without the creator before anything is stored (before room version 12)", async () => {
    const before = hs.joinedRooms(ALICE).length;
    expectError(
      await call("POST", v3("/createRoom"), { as: ALICE, body: { room_alias_name: "pl", power_level_content_override: { users: { [BOB]: 100 } } } }),
      400,
      "M_UNKNOWN",
      `Not a valid power_level_content_override: 'users' did not contain ${ALICE}`,
    );
    expect(hs.joinedRooms(ALICE).length).toBe(before);
    expect(hs.directoryEntry("#pl:example.org")).toBeUndefined();
  });

  it("in room version 12 does not ask for the creator, but a creator in users fails the power-levels event: the room is left with its create and join events, the alias taken", async () => {
    const a = await call("POST", v3("/createRoom"), {
      as: ALICE,
      body: { room_version: "12", room_alias_name: "half", name: "never", power_level_content_override: { users: { [ALICE]: 100 } } },
    });
    expectError(a, 400, "M_UNKNOWN", `Creator user ${ALICE} must not appear in content.users`);
    const entry = hs.directoryEntry("#half:example.org")!;
    expect(entry.creator).toBe(ALICE);
    const state = await stateMap(ALICE, entry.roomId);
    expect([...state.keys()].sort()).toEqual(["m.room.create|", `m.room.member|${ALICE}`]);
    // The alias resolves, and cannot be had again.
    expect((await call("GET", dir("#half:example.org"))).body).toEqual({ room_id: entry.roomId, servers: [SERVER] });
    expectError(await call("POST", v3("/createRoom"), { as: ALICE, body: { room_alias_name: "half" } }), 400, "M_ROOM_IN_USE", "Room alias already taken");
  });

  it("validates the resulting content like a state PUT (schema, canonical JSON) and runs the auth rules on each event in turn", async () => {
    expectError(
      await call("POST", v3("/createRoom"), { as: ALICE, body: { power_level_content_override: { kick: "50" } } }),
      400,
      "M_BAD_JSON",
      `"kick": '50' is not of type 'integer'`,
    );
    expectError(
      await call("POST", v3("/createRoom"), { as: ALICE, raw: `{"power_level_content_override": {"kick": 50.0}}` }),
      400,
      "M_BAD_JSON",
      "Bad JSON value: float",
    );
    // Room versions before 6 take a whole float, which jsonschema counts as an integer.
    expectError(
      await call("POST", v3("/createRoom"), { as: ALICE, body: { room_version: "5", power_level_content_override: { kick: 50.5 } } }),
      400,
      "M_BAD_JSON",
      `"kick": 50.5 is not of type 'integer'`,
    );
    const ok5 = await call("POST", v3("/createRoom"), { as: ALICE, raw: `{"room_version": "5", "power_level_content_override": {"kick": 50.0}}` });
    expect(ok5.status).toBe(200);
    // The creator set below state_default cannot send the join rules that follow: 403, and the batch is dropped.
    const before = new Set(hs.joinedRooms(ALICE));
    expectError(
      await call("POST", v3("/createRoom"), { as: ALICE, body: { power_level_content_override: { users: { [ALICE]: 10 } } } }),
      403,
      "M_FORBIDDEN",
      "You don't have permission to post that to the room. user_level (10) < send_level (50)",
    );
    const [half] = hs.joinedRooms(ALICE).filter((r) => !before.has(r));
    expect(hs.powerLevels(half!)).toBeUndefined();
    expect(hs.members(half!)).toEqual({ [ALICE]: "join" });
  });
});

describe("createRoom: initial_state, name, topic", () => {
  it("initial_state replaces the preset's join rules and history visibility, in its own place; name and topic follow (topic with m.topic)", async () => {
    const space = await create(ALICE, { creation_content: { type: "m.space" } });
    const roomId = await create(ALICE, {
      name: "Engineering",
      topic: "All things eng",
      initial_state: [
        { type: "m.room.join_rules", content: { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: space }] } },
        { type: "m.room.history_visibility", state_key: "", content: { history_visibility: "invited" } },
        { type: "m.space.parent", state_key: space, content: { via: [SERVER], canonical: true } },
        { type: "m.room.history_visibility", content: { history_visibility: "joined" } }, // the last of a key wins
      ],
    });
    const events = await timeline(ALICE, roomId);
    expect(events.map((e) => `${e.type}|${e.state_key}`)).toEqual([
      "m.room.create|",
      `m.room.member|${ALICE}`,
      "m.room.power_levels|",
      "m.room.guest_access|",
      "m.room.join_rules|",
      "m.room.history_visibility|",
      `m.space.parent|${space}`,
      "m.room.name|",
      "m.room.topic|",
    ]);
    const state = await stateMap(ALICE, roomId);
    expect(state.get("m.room.history_visibility|")).toEqual({ history_visibility: "joined" });
    expect(state.get("m.room.name|")).toEqual({ name: "Engineering" });
    expect(state.get("m.room.topic|")).toEqual({ topic: "All things eng", "m.topic": { "m.text": [{ body: "All things eng" }] } });
    expect(hs.stateOf(roomId, "m.space.parent", space)).toEqual({ via: [SERVER], canonical: true });
  });

  it("an m.room.power_levels in initial_state is used as it is, and the override is then ignored", async () => {
    const levels = { users: { [ALICE]: 100 }, state_default: 0 };
    const roomId = await create(ALICE, {
      initial_state: [{ type: "m.room.power_levels", content: levels }],
      power_level_content_override: { users: { [ALICE]: 100 }, kick: 0 },
      preset: "trusted_private_chat",
      invite: [BOB],
    });
    expect(hs.powerLevels(roomId)).toEqual(levels);
    expect(hs.members(roomId)[BOB]).toBe("invite");
  });

  it("refuses malformed events: a name or topic that is no string, a state key that is no string, a second m.room.create, an alias pointing elsewhere", async () => {
    const refuse = async (body: Record<string, unknown>, status: number, errcode: string, message: string): Promise<void> => {
      expectError(await call("POST", v3("/createRoom"), { as: ALICE, body }), status, errcode, message);
    };
    await refuse({ name: 5 }, 400, "M_UNKNOWN", "'name' not a string type");
    await refuse({ topic: null }, 400, "M_UNKNOWN", "'topic' not a string type");
    await refuse({ initial_state: [{ type: "m.room.topic", content: { text: "x" } }] }, 400, "M_UNKNOWN", "'topic' not in content");
    await refuse({ initial_state: [{ type: "x.custom", state_key: 1, content: {} }] }, 400, "M_UNKNOWN", "Not 'state_key' a string type");
    await refuse({ initial_state: [{ type: 7, content: {} }] }, 400, "M_UNKNOWN", "Not 'type' a string type");
    await refuse({ initial_state: [{ type: "m.room.create", content: { room_version: "11" } }] }, 400, "M_INVALID_PARAM", "Cannot resend m.room.create event");
    await refuse({ initial_state: [{ type: "m.room.canonical_alias", content: { alias: "#elsewhere:example.org" } }] }, 400, "M_BAD_ALIAS", "Room alias #elsewhere:example.org does not point to the room");
    await refuse({ initial_state: [{ type: "m.room.member", state_key: BOB, content: {} }] }, 400, "M_UNKNOWN", "Content has not membership key");
    // Python's KeyError on an entry without type or content: a 500.
    expectError(await call("POST", v3("/createRoom"), { as: ALICE, body: { initial_state: [{ content: {} }] } }), 500, "M_UNKNOWN");
    // initial_state may name the alias that the same request creates.
    const roomId = await create(ALICE, { room_alias_name: "named", initial_state: [{ type: "m.room.canonical_alias", content: { alias: "#named:example.org", alt_aliases: [] } }] });
    expect(hs.stateOf(roomId, "m.room.canonical_alias")).toEqual({ alias: "#named:example.org", alt_aliases: [] });
  });

  it("an initial_state event identical to persisted state (the creator's own join) makes Synapse drop the rest of the batch silently", async () => {
    const roomId = await create(ALICE, {
      name: "lost",
      initial_state: [{ type: "m.room.member", state_key: ALICE, content: { membership: "join" } }],
      invite: [BOB],
    });
    const state = await stateMap(ALICE, roomId);
    expect([...state.keys()].sort()).toEqual(["m.room.create|", `m.room.member|${ALICE}`, `m.room.member|${BOB}`]);
    expect(hs.members(roomId)[BOB]).toBe("invite");
  });
});

describe("createRoom: spaces", () => {
  it("creates a space (creation_content type m.space) with child links in initial_state; a link is removed by PUTting {}", async () => {
    const child = await create(ALICE, { name: "child" });
    const space = await create(ALICE, {
      name: "Company",
      creation_content: { type: "m.space" },
      initial_state: [{ type: "m.space.child", state_key: child, content: { via: [SERVER] } }],
      power_level_content_override: { users: { [ALICE]: 100 }, events_default: 100 },
    });
    expect(hs.roomType(space)).toBe("m.space");
    const state = await stateMap(ALICE, space);
    expect(state.get("m.room.create|")).toEqual({ type: "m.space", room_version: "11" });
    expect(state.get(`m.space.child|${child}`)).toEqual({ via: [SERVER] });
    expect(hs.powerLevels(space)!.events_default).toBe(100);
    const removed = await putState(ALICE, space, "m.space.child", child, {});
    expect(removed.status).toBe(200);
    expect(hs.stateOf(space, "m.space.child", child)).toEqual({});
    expect(hs.roomState(space).find((e) => e.type === "m.room.create")?.content).toMatchObject({ type: "m.space" });
  });
});

describe("createRoom: invites in the same request", () => {
  it("invites after the room's events (is_direct carried): the invitees see it in rooms.invite, the creator in rooms.join", async () => {
    const roomId = await create(ALICE, { invite: [BOB, CAROL], is_direct: true, name: "chat" });
    expect(hs.members(roomId)).toEqual({ [ALICE]: "join", [BOB]: "invite", [CAROL]: "invite" });
    const events = await timeline(ALICE, roomId);
    expect(events.slice(-3).map((e) => `${e.type}|${e.state_key}`)).toEqual(["m.room.name|", `m.room.member|${BOB}`, `m.room.member|${CAROL}`]);
    expect(events.at(-1)!.content).toEqual({ is_direct: true, membership: "invite" });
    const s = await call("GET", v3("/sync"), { as: BOB });
    const invite = (s.body as unknown as SyncBody).rooms.invite[roomId];
    expect(invite).toBeDefined();
    const own = invite!.invite_state.events.find((e) => e.type === "m.room.member" && e.state_key === BOB);
    expect(own?.content).toEqual({ is_direct: true, membership: "invite" });
    expect(invite!.invite_state.events.find((e) => e.type === "m.room.name")?.content).toEqual({ name: "chat" });
    expect((await call("POST", room(roomId, "/join"), { as: BOB })).status).toBe(200);
    expect(hs.members(roomId)[BOB]).toBe("join");
  });

  it("refuses bad invitees and more than 10 at once before creating anything; an invite the auth rules refuse comes after the room exists", async () => {
    expectError(await call("POST", v3("/createRoom"), { as: ALICE, body: { invite: ["bob"] } }), 400, "M_UNKNOWN", "Invalid user_id: bob");
    expectError(await call("POST", v3("/createRoom"), { as: ALICE, body: { invite: [5] } }), 400, "M_UNKNOWN", "Invalid user_id: 5");
    expectError(await call("POST", v3("/createRoom"), { as: ALICE, body: { invite: ["@bob:bad host"] } }), 400, "M_UNKNOWN", "Invalid user_id: @bob:bad host");
    const many = Array.from({ length: 11 }, (_, i) => `@u${i}:example.org`);
    expectError(await call("POST", v3("/createRoom"), { as: ALICE, body: { invite: many } }), 400, "M_UNKNOWN", "Cannot invite so many users at once");
    expect(hs.joinedRooms(ALICE)).toEqual([]);
    expect((await call("POST", v3("/createRoom"), { as: ALICE, body: { invite: many.slice(1) } })).status).toBe(200);
    // Inviting oneself: the room is made, the invite fails the auth rules.
    expectError(await call("POST", v3("/createRoom"), { as: ALICE, body: { invite: [ALICE] } }), 403, "M_FORBIDDEN", `${ALICE} is already in the room.`);
    expect(hs.joinedRooms(ALICE)).toHaveLength(2);
  });
});

describe("createRoom: request validation", () => {
  it("answers each malformed field with Synapse's status, errcode and message, and stores nothing", async () => {
    const refuse = async (body: Record<string, unknown> | string, status: number, errcode: string, message?: string): Promise<void> => {
      const opts = typeof body === "string" ? { as: ALICE, raw: body } : { as: ALICE, body };
      expectError(await call("POST", v3("/createRoom"), opts), status, errcode, message);
    };
    await refuse("{nope", 400, "M_NOT_JSON", "Content not JSON.");
    await refuse("[]", 400, "M_BAD_JSON", "Content must be a JSON object.");
    await refuse({ room_version: "99" }, 400, "M_UNSUPPORTED_ROOM_VERSION", "Your homeserver does not support this room version");
    await refuse({ room_version: 10 }, 400, "M_BAD_JSON", "room_version must be a string");
    await refuse({ room_alias_name: "two words" }, 400, "M_UNKNOWN", "Invalid characters in room alias");
    await refuse({ room_alias_name: "tab\there" }, 400, "M_UNKNOWN", "Invalid characters in room alias");
    await refuse(
      { room_alias_name: "#eng:example.org" },
      400,
      "M_UNKNOWN",
      "':' is not permitted in the room alias name. Please note this expects a local part — 'wombat', not '#wombat:example.com'.",
    );
    await refuse({ preset: "secret_chat" }, 400, "M_BAD_JSON", "'secret_chat' is not a valid preset");
    await refuse({ preset: null }, 400, "M_BAD_JSON", "'None' is not a valid preset");
    await refuse(
      { invite_3pid: [{ medium: "email", address: "a@b.c" }] },
      400,
      "M_MISSING_PARAM",
      "all of `medium`, `address`, `id_server` and `id_access_token` are required when making a 3pid invite",
    );
    await refuse({ creation_content: [] }, 500, "M_UNKNOWN", "Internal server error");
    expect(hs.joinedRooms(ALICE)).toEqual([]);
    expect(hs.requestCounts().create_room).toBe(11);
    expectError(await call("POST", v3("/createRoom"), { body: {} }), 401, "M_MISSING_TOKEN");
    expectError(await call("GET", v3("/createRoom"), { as: ALICE }), 405, "M_UNRECOGNIZED");
  });

  it("an alias taken (by any room) is 400 M_ROOM_IN_USE; an over-long alias fails after the room is stored", async () => {
    hs.createRoom({ creator: BOB, alias: "#eng:example.org" });
    expectError(await call("POST", v3("/createRoom"), { as: ALICE, body: { room_alias_name: "eng" } }), 400, "M_ROOM_IN_USE", "Room alias already taken");
    expectError(
      await call("POST", v3("/createRoom"), { as: ALICE, body: { room_alias_name: "x".repeat(250) } }),
      400,
      "M_INVALID_PARAM",
      "Can't create aliases longer than 255 characters",
    );
    expect(hs.joinedRooms(ALICE)).toEqual([]);
    // An empty localpart is a valid alias for Synapse.
    const roomId = await create(ALICE, { room_alias_name: "" });
    expect((await call("GET", dir("#:example.org"))).body.room_id).toBe(roomId);
  });

  it("room version 12: bad additional_creators fail the create event after the room and its alias are stored (400 M_FORBIDDEN)", async () => {
    const a = await call("POST", v3("/createRoom"), {
      as: ALICE,
      body: { room_version: "12", room_alias_name: "v12", creation_content: { additional_creators: ["not-a-user"] } },
    });
    expectError(a, 400, "M_FORBIDDEN", "entry in additional_creators is not a valid user ID");
    const entry = hs.directoryEntry("#v12:example.org")!;
    expect(entry.roomId).toMatch(/^![A-Za-z0-9_-]{43}$/);
    expect(hs.joinedRooms(ALICE)).toEqual([]);
    expectError(await call("GET", room(entry.roomId, "/state"), { as: ALICE }), 403, "M_FORBIDDEN");
    expectError(
      await call("POST", v3("/createRoom"), { as: ALICE, body: { room_version: "12", creation_content: { additional_creators: "@bob:example.org" } } }),
      400,
      "M_FORBIDDEN",
      "additional_creators must be an array",
    );
    // Before room version 12 the field is just content.
    const v11 = await create(ALICE, { creation_content: { additional_creators: ["not-a-user"] } });
    expect(hs.stateOf(v11, "m.room.create")).toEqual({ additional_creators: ["not-a-user"], room_version: "11" });
  });

  it("serves r0 as well as v3, and PUT /createRoom/{txnId} answers a repeated transaction with the same room", async () => {
    const a = await call("POST", "/_matrix/client/r0/createRoom", { as: ALICE, body: { room_alias_name: "old" } });
    expect(a.status).toBe(200);
    expect((await call("GET", `/_matrix/client/r0/directory/room/${encodeURIComponent("#old:example.org")}`)).body.room_id).toBe(a.body.room_id);
    const first = await call("PUT", v3("/createRoom/txn1"), { as: ALICE, body: { name: "once" } });
    const again = await call("PUT", v3("/createRoom/txn1"), { as: ALICE, body: { name: "once" } });
    expect(first.status).toBe(200);
    expect(again.body.room_id).toBe(first.body.room_id);
    expect(hs.joinedRooms(ALICE)).toHaveLength(2);
    expect(hs.requestCounts().create_room).toBe(3);
  });
});

describe("PUT and DELETE /directory/room/{alias}", () => {
  let roomId: string;
  beforeEach(async () => {
    roomId = await create(ALICE, { room_alias_name: "main", invite: [BOB, CAROL] });
    for (const u of [BOB, CAROL]) expect((await call("POST", room(roomId, "/join"), { as: u })).status).toBe(200);
  });

  it("lets any joined member add an alias (no power needed); the alias resolves with the room's servers", async () => {
    expect((await call("PUT", dir("#second:example.org"), { as: BOB, body: { room_id: roomId } })).body).toEqual({});
    expect((await call("GET", dir("#second:example.org"))).body).toEqual({ room_id: roomId, servers: [SERVER] });
    expect(hs.directoryEntry("#second:example.org")).toEqual({ roomId, creator: BOB, servers: [SERVER] });
    // Given servers are stored; this server comes first.
    expect((await call("PUT", dir("#third:example.org"), { as: BOB, body: { room_id: roomId, servers: ["other.org"] } })).status).toBe(200);
    expect((await call("GET", dir("#third:example.org"))).body).toEqual({ room_id: roomId, servers: [SERVER, "other.org"] });
    // The new alias can be joined by.
    await call("POST", room(roomId, "/invite"), { as: ALICE, body: { user_id: DAVE } });
    expect((await call("POST", v3(`/join/${encodeURIComponent("#second:example.org")}`), { as: DAVE })).body.room_id).toBe(roomId);
  });

  it("checks in Synapse's order: alias, body, room, token; then length, membership (server admins exempt), whitespace, locality, a free alias (409)", async () => {
    expectError(await call("PUT", dir("nohash"), { body: { room_id: roomId } }), 400, "M_INVALID_PARAM", "Room alias invalid");
    expectError(await call("PUT", dir("#x:bad host"), { body: { room_id: roomId } }), 400, "M_INVALID_PARAM", "Room alias invalid");
    expectError(
      await call("PUT", dir("#x:example.org"), { token: "bogus", body: {} }),
      400,
      "M_MISSING_PARAM",
      "1 validation error for PutBody\nroom_id\n  Field required [type=missing, input_value={}, input_type=dict]\n    For further information visit https://errors.pydantic.dev/2.12/v/missing",
    );
    expectError(
      await call("PUT", dir("#x:example.org"), { body: { room_id: 5, servers: "example.org" } }),
      400,
      "M_BAD_JSON",
      "2 validation errors for PutBody\nroom_id\n  Input should be a valid string [type=string_type, input_value=5, input_type=int]\n    For further information visit https://errors.pydantic.dev/2.12/v/string_type\n" +
        "servers\n  Input should be a valid list [type=list_type, input_value='example.org', input_type=str]\n    For further information visit https://errors.pydantic.dev/2.12/v/list_type",
    );
    expectError(await call("PUT", dir("#x:example.org"), { token: "bogus", body: { room_id: "!nope:example.org" } }), 400, "M_UNKNOWN", "Room does not exist");
    expectError(await call("PUT", dir("#x:example.org"), { token: "bogus", body: { room_id: roomId } }), 401, "M_UNKNOWN_TOKEN");
    expectError(
      await call("PUT", dir(`#${"x".repeat(250)}:example.org`), { as: DAVE, body: { room_id: roomId } }),
      400,
      "M_INVALID_PARAM",
      "Can't create aliases longer than 255 characters",
    );
    expectError(await call("PUT", dir("#x:example.org"), { as: DAVE, body: { room_id: roomId } }), 403, "M_FORBIDDEN", "You must be in the room to create an alias for it");
    expect((await call("PUT", dir("#by-admin:example.org"), { as: ROOT, body: { room_id: roomId } })).status).toBe(200);
    expectError(await call("PUT", dir("#two words:example.org"), { as: BOB, body: { room_id: roomId } }), 400, "M_UNKNOWN", "Invalid characters in room alias");
    expectError(await call("PUT", dir("#x:other.org"), { as: BOB, body: { room_id: roomId } }), 400, "M_UNKNOWN", "Room alias must be local");
    expectError(await call("PUT", dir("#main:example.org"), { as: BOB, body: { room_id: roomId } }), 409, "M_UNKNOWN", "Room alias #main:example.org already exists");
    expect(hs.requestCounts().directory).toBe(12);
  });

  it("lets the alias' creator, a server admin or a member with the canonical-alias level delete it; and removes it from the canonical alias event", async () => {
    expect(hs.stateOf(roomId, "m.room.canonical_alias")).toEqual({ alias: "#main:example.org" });
    expect((await call("PUT", dir("#bobs:example.org"), { as: BOB, body: { room_id: roomId } })).status).toBe(200);
    expect((await call("PUT", dir("#carols:example.org"), { as: CAROL, body: { room_id: roomId } })).status).toBe(200);
    expect((await call("PUT", dir("#admins:example.org"), { as: BOB, body: { room_id: roomId } })).status).toBe(200);

    expectError(await call("DELETE", dir("#bobs:example.org"), { as: CAROL }), 403, "M_FORBIDDEN", "You don't have permission to delete the alias.");
    expectError(await call("DELETE", dir("#bobs:example.org"), { as: DAVE }), 403, "M_FORBIDDEN", `User ${DAVE} not in room ${roomId}`);
    expectError(await call("DELETE", dir("#nope:example.org"), { as: BOB }), 404, "M_NOT_FOUND", "Unknown room alias");
    expectError(await call("DELETE", dir("nohash")), 400, "M_INVALID_PARAM", "Room alias invalid"); // before the token
    expectError(await call("DELETE", dir("#bobs:example.org")), 401, "M_MISSING_TOKEN");
    expect((await call("DELETE", dir("#bobs:example.org"), { as: BOB })).body).toEqual({}); // its creator
    expect((await call("DELETE", dir("#carols:example.org"), { as: ALICE })).status).toBe(200); // canonical alias level (50)
    expect((await call("DELETE", dir("#admins:example.org"), { as: ROOT })).status).toBe(200); // server admin
    for (const a of ["#bobs:example.org", "#carols:example.org", "#admins:example.org"]) {
      expectError(await call("GET", dir(a)), 404, "M_NOT_FOUND", `Room alias ${a} not found`);
    }
    // Deleting the canonical alias sends a new m.room.canonical_alias without it, as the deleting user.
    expect((await call("DELETE", dir("#main:example.org"), { as: ALICE })).status).toBe(200);
    expect(hs.stateOf(roomId, "m.room.canonical_alias")).toEqual({});
    expect((await timeline(ALICE, roomId)).at(-1)).toMatchObject({ type: "m.room.canonical_alias", sender: ALICE, content: {} });
  });

  it("the canonical alias stays when the deleting user may not send it (Synapse only logs that)", async () => {
    expect((await call("PUT", dir("#alt:example.org"), { as: BOB, body: { room_id: roomId } })).status).toBe(200);
    expect((await putState(ALICE, roomId, "m.room.canonical_alias", "", { alias: "#main:example.org", alt_aliases: ["#alt:example.org"] })).status).toBe(200);
    expect((await call("DELETE", dir("#alt:example.org"), { as: BOB })).status).toBe(200);
    expect(hs.stateOf(roomId, "m.room.canonical_alias")).toEqual({ alias: "#main:example.org", alt_aliases: ["#alt:example.org"] });
    // A canonical alias naming an alias that no longer points to the room is refused.
    expectError(
      await putState(ALICE, roomId, "m.room.canonical_alias", "", { alias: "#main:example.org", alt_aliases: ["#alt:example.org", "#gone:example.org"] }),
      400,
      "M_BAD_ALIAS",
      "Room alias #gone:example.org does not point to the room", // #alt was there before: not checked again
    );
    expectError(await putState(ALICE, roomId, "m.room.canonical_alias", "", { alias: "no-hash" }), 400, "M_INVALID_PARAM", "Expected RoomAlias string to start with '#'");
    expectError(await putState(ALICE, roomId, "m.room.canonical_alias", "", { alt_aliases: "#main:example.org" }), 400, "M_INVALID_PARAM", "The alt_aliases property must be a list.");
  });
});

describe("state PUTs under the auth rules", () => {
  let roomId: string;
  let space: string;
  beforeEach(async () => {
    // Alice 100, Carol 50, Bob 0 (all joined); the preset's event levels.
    space = await create(ALICE, { creation_content: { type: "m.space" } });
    roomId = await create(ALICE, { invite: [BOB, CAROL], power_level_content_override: { users: { [ALICE]: 100, [CAROL]: 50 } } });
    for (const u of [BOB, CAROL]) expect((await call("POST", room(roomId, "/join"), { as: u })).status).toBe(200);
  });

  const levelError = (have: number, need: number): [number, string, string] => [
    403,
    "M_FORBIDDEN",
    `You don't have permission to post that to the room. user_level (${have}) < send_level (${need})`,
  ];

  it("needs each type's level: space links and guest access state_default (50), name 50, history visibility and encryption 100", async () => {
    const cases: { type: string; key: string; content: Record<string, unknown>; need: number }[] = [
      { type: "m.space.child", key: space, content: { via: [SERVER] }, need: 50 },
      { type: "m.space.parent", key: space, content: { via: [SERVER], canonical: true }, need: 50 },
      { type: "m.room.guest_access", key: "", content: { guest_access: "forbidden" }, need: 50 },
      { type: "m.room.topic", key: "", content: { topic: "t" }, need: 50 },
      { type: "m.room.name", key: "", content: { name: "n" }, need: 50 },
      { type: "m.room.join_rules", key: "", content: { join_rule: "knock" }, need: 50 },
      { type: "m.room.history_visibility", key: "", content: { history_visibility: "joined" }, need: 100 },
      { type: "m.room.encryption", key: "", content: { algorithm: "m.megolm.v1.aes-sha2" }, need: 100 },
    ];
    for (const c of cases) {
      expectError(await putState(BOB, roomId, c.type, c.key, c.content), ...levelError(0, c.need));
      if (c.need > 50) expectError(await putState(CAROL, roomId, c.type, c.key, c.content), ...levelError(50, c.need));
      const who = c.need > 50 ? ALICE : CAROL;
      const a = await putState(who, roomId, c.type, c.key, c.content);
      expect(a.status, `${c.type}: ${JSON.stringify(a.body)}`).toBe(200);
      expect(hs.stateOf(roomId, c.type, c.key)).toEqual(c.content);
    }
    // Deduplicated: the same content from the same sender is the same event; another sender makes a new one.
    const again = await putState(CAROL, roomId, "m.room.name", "", { name: "n" });
    const first = hs.roomState(roomId).find((e) => e.type === "m.room.name")!.event_id;
    expect(again.body.event_id).toBe(first);
    expect((await putState(ALICE, roomId, "m.room.name", "", { name: "n" })).body.event_id).not.toBe(first);
  });

  it("refuses what Synapse's event validator refuses: names and topics that are no strings, floats, a tombstone to itself, an ACL denying this server", async () => {
    expectError(await putState(ALICE, roomId, "m.room.name", "", { title: "x" }), 400, "M_UNKNOWN", "'name' not in content");
    expectError(await putState(ALICE, roomId, "m.room.topic", "", { topic: 5 }), 400, "M_UNKNOWN", "'topic' not a string type");
    expectError(
      await call("PUT", room(roomId, `/state/m.space.child/${encodeURIComponent(space)}`), { as: ALICE, raw: `{"via": ["example.org"], "order": 1.5}` }),
      400,
      "M_BAD_JSON",
      "Bad JSON value: float",
    );
    expectError(await putState(ALICE, roomId, "m.room.tombstone", "", { replacement_room: roomId }), 400, "M_UNKNOWN", "Tombstone cannot reference the room it was sent in");
    expectError(await putState(ALICE, roomId, "m.room.server_acl", "", { deny: ["*.org"], allow: ["*"] }), 400, "M_UNKNOWN", "Can't create an ACL event that denies the local server");
    expectError(await putState(ALICE, roomId, "m.room.server_acl", "", { deny: [] }), 400, "M_UNKNOWN", "Can't create an ACL event that denies the local server");
    expect((await putState(ALICE, roomId, "m.room.server_acl", "", { allow: ["*"], deny: ["evil.org"] })).status).toBe(200);
    expectError(await putState(ALICE, roomId, "m.room.power_levels", "", { ...hs.powerLevels(roomId)!, ban: "50" }), 400, "M_BAD_JSON", `"ban": '50' is not of type 'integer'`);
    expectError(await putState(ALICE, roomId, "x.custom", "", { "m.mentions": { room: "yes" } }), 400, "M_BAD_JSON", `"room": 'yes' is not of type 'boolean'`);
    // m.room.create cannot be sent again; a PUT to an unknown room is refused before anything else.
    expectError(await putState(ALICE, roomId, "m.room.create", "", { room_version: "11" }), 400, "M_INVALID_PARAM", "Cannot resend m.room.create event");
    expectError(await putState(ALICE, roomId, "m.room.create", "", { room_version: "99" }), 400, "M_UNSUPPORTED_ROOM_VERSION", "99");
    expectError(await putState(ALICE, "!nope:example.org", "m.room.name", "", { name: "x" }), 403, "M_FORBIDDEN", `User ${ALICE} not in room !nope:example.org`);
  });

  it("refuses senders who are not joined, others' state keys, and power levels above the sender's own", async () => {
    expectError(await putState(DAVE, roomId, "m.room.topic", "", { topic: "t" }), 403, "M_FORBIDDEN", `User ${DAVE} not in room ${roomId} (None)`);
    expect((await call("POST", room(roomId, "/leave"), { as: BOB })).status).toBe(200);
    const left = await putState(BOB, roomId, "m.room.topic", "", { topic: "t" });
    expectError(left, 403, "M_FORBIDDEN", new RegExp(`^User @bob:example\\.org not in room .* \\(<Event event_id=\\$\\S+, type=m\\.room\\.member, state_key=${BOB}, membership=leave>\\)$`));
    expectError(await putState(CAROL, roomId, "x.profile", ALICE, {}), 403, "M_FORBIDDEN", "You are not allowed to set others state");
    expect((await putState(CAROL, roomId, "x.profile", CAROL, {})).status).toBe(200);
    const pl = hs.powerLevels(roomId)!;
    const raise = { ...pl, events: { ...(pl.events as Record<string, number>), "m.room.power_levels": 50 } };
    expect((await putState(ALICE, roomId, "m.room.power_levels", "", raise)).status).toBe(200);
    expectError(
      await putState(CAROL, roomId, "m.room.power_levels", "", { ...raise, users: { [ALICE]: 100, [CAROL]: 60 } }),
      403,
      "M_FORBIDDEN",
      "You don't have permission to add ops level greater than your own",
    );
    expectError(
      await putState(CAROL, roomId, "m.room.power_levels", "", { ...raise, users: { [CAROL]: 50 } }),
      403,
      "M_FORBIDDEN",
      "You don't have permission to add ops level greater than your own",
    );
  });

  it("join rules: restricted lets members of an allowed room join (the event names who authorised it); others get 403", async () => {
    // Dave joins the space; Erin is in nothing.
    await call("POST", room(space, "/invite"), { as: ALICE, body: { user_id: DAVE } });
    expect((await call("POST", room(space, "/join"), { as: DAVE })).status).toBe(200);
    const restricted = { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: space }] };
    expect((await putState(CAROL, roomId, "m.room.join_rules", "", restricted)).status).toBe(200);
    const outsider = hs.registerUser("@erin:example.org");
    expectError(
      await call("POST", room(roomId, "/join"), { token: outsider }),
      403,
      "M_FORBIDDEN",
      "You do not belong to any of the required rooms/spaces to join this room.",
    );
    // A client cannot name the authorising user itself: Synapse strips it and picks a local user who could invite.
    const joined = await call("POST", room(roomId, "/join"), { as: DAVE, body: { join_authorised_via_users_server: "@evil:example.org" } });
    expect(joined.status).toBe(200);
    expect(hs.stateOf(roomId, "m.room.member", DAVE)).toEqual({ join_authorised_via_users_server: ALICE, membership: "join" });
    // knock_restricted (room version 10+) works the same way.
    expect((await putState(CAROL, roomId, "m.room.join_rules", "", { ...restricted, join_rule: "knock_restricted" })).status).toBe(200);
    expectError(await call("POST", room(roomId, "/join"), { token: outsider }), 403, "M_FORBIDDEN", "You do not belong to any of the required rooms/spaces to join this room.");
  });

  it("join rules are not validated when sent, only applied by room version: restricted before version 8 and knock before 7 let no one join", async () => {
    const v7 = await create(ALICE, { room_version: "7", invite: [BOB] });
    expect((await putState(ALICE, v7, "m.room.join_rules", "", { join_rule: "restricted", allow: [] })).status).toBe(200);
    expectError(await call("POST", room(v7, "/join"), { as: BOB }), 403, "M_FORBIDDEN", "You are not allowed to join this room");
    const v6 = await create(ALICE, { room_version: "6", invite: [BOB] });
    expect((await putState(ALICE, v6, "m.room.join_rules", "", { join_rule: "knock" })).status).toBe(200);
    expectError(await call("POST", room(v6, "/join"), { as: BOB }), 403, "M_FORBIDDEN", "You are not allowed to join this room");
    expect((await putState(ALICE, v6, "m.room.join_rules", "", { join_rule: "invite" })).status).toBe(200);
    expect((await call("POST", room(v6, "/join"), { as: BOB })).status).toBe(200);
    // In version 7 knock works: the invited may join, others may knock.
    const knockRoom = await create(ALICE, { room_version: "7", initial_state: [{ type: "m.room.join_rules", content: { join_rule: "knock" } }] });
    expect(hs.stateOf(knockRoom, "m.room.join_rules")).toEqual({ join_rule: "knock" });
    expectError(await call("POST", room(knockRoom, "/join"), { as: BOB }), 403, "M_FORBIDDEN", "You are not invited to this room.");
  });
});
