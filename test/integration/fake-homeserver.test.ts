import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const SERVER = "example.org";
const ADMIN = "@admin:example.org";
const MOD = "@mod:example.org";
const USER = "@user:example.org";
const OTHER = "@other:example.org";
const OUTSIDER = "@outsider:example.org";

interface StateEvent {
  type: string;
  state_key: string;
  content: Record<string, unknown>;
  sender: string;
  event_id: string;
  origin_server_ts: number;
  room_id: string;
  unsigned: unknown;
}

/** The fields these tests read from response bodies. */
interface Body {
  errcode?: string;
  error?: string;
  soft_logout?: boolean;
  retry_after_ms?: number;
  user_id?: string;
  device_id?: string;
  is_guest?: boolean;
  versions?: string[];
  room_id?: string;
  servers?: string[];
  event_id?: string;
  users?: Record<string, number>;
  chunk?: StateEvent[];
  joined_rooms?: string[];
  joined?: unknown;
  next_batch?: string;
  rooms?: unknown;
}

interface Answer {
  status: number;
  body: Body;
  headers: Headers;
}

/** A response body that is a JSON array of events (`/state`). */
const eventsOf = (answer: Answer): StateEvent[] => answer.body as unknown as StateEvent[];

let hs: FakeHomeserver;
const tokens: Record<string, string> = {};

async function call(
  method: string,
  path: string,
  opts: { as?: string; token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  const token = opts.token ?? (opts.as !== undefined ? tokens[opts.as] : undefined);
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (opts.raw !== undefined) body = opts.raw;
  else if (opts.body !== undefined) body = JSON.stringify(opts.body);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${hs.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body: parsed as Body, headers: res.headers };
}

const v3 = (path: string): string => `/_matrix/client/v3${path}`;
const room = (roomId: string, rest: string): string => v3(`/rooms/${encodeURIComponent(roomId)}${rest}`);

/** The usual three-level room: admin 100 (creator), mod 50, user 0; outsider never joined. */
function standardRoom(extra: { powerLevels?: Record<string, unknown>; members?: Record<string, "join" | "invite" | "leave" | "ban" | "knock"> } = {}): string {
  return hs.createRoom({
    creator: ADMIN,
    alias: "#standard:example.org",
    powerLevels: extra.powerLevels ?? {
      users: { [ADMIN]: 100, [MOD]: 50 },
      users_default: 0,
      events: { "m.room.power_levels": 50, "m.room.tombstone": 100 },
      events_default: 0,
      state_default: 50,
      ban: 50,
      kick: 50,
      redact: 50,
      invite: 0,
    },
    members: extra.members ?? { [MOD]: "join", [USER]: "join", [OTHER]: "join" },
  });
}

function expectError(answer: Answer, status: number, errcode: string, message?: string | RegExp): void {
  expect(answer.status).toBe(status);
  expect(answer.headers.get("content-type")).toContain("application/json");
  expect(answer.body.errcode).toBe(errcode);
  expect(typeof answer.body.error).toBe("string");
  if (typeof message === "string") expect(answer.body.error).toBe(message);
  else if (message) expect(answer.body.error).toMatch(message);
}

function membersFromState(events: readonly StateEvent[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of events) if (e.type === "m.room.member") out[e.state_key] = String(e.content.membership);
  return out;
}

beforeEach(async () => {
  hs = await FakeHomeserver.start({ serverName: SERVER });
  for (const u of [ADMIN, MOD, USER, OTHER, OUTSIDER]) tokens[u] = hs.registerUser(u);
});

afterEach(async () => {
  await hs.close();
});

describe("basics and authentication", () => {
  it("answers /versions without a token", async () => {
    const a = await call("GET", "/_matrix/client/versions");
    expect(a.status).toBe(200);
    expect(a.body.versions).toContain("v1.11");
  });

  it("refuses a missing token with 401 M_MISSING_TOKEN", async () => {
    expectError(await call("GET", v3("/account/whoami")), 401, "M_MISSING_TOKEN");
    expectError(await call("GET", v3("/account/whoami"), { headers: { Authorization: "Basic abc" } }), 401, "M_MISSING_TOKEN");
  });

  it("refuses an unknown token with 401 M_UNKNOWN_TOKEN and soft_logout false", async () => {
    const a = await call("GET", v3("/account/whoami"), { token: "nope" });
    expectError(a, 401, "M_UNKNOWN_TOKEN");
    expect(a.body.soft_logout).toBe(false);
  });

  it("accepts the access_token query parameter, but not mixed with a header", async () => {
    const a = await call("GET", v3(`/account/whoami?access_token=${tokens[USER]}`));
    expect(a.status).toBe(200);
    expect(a.body.user_id).toBe(USER);
    expectError(await call("GET", v3(`/account/whoami?access_token=${tokens[USER]}`), { as: USER }), 400, "M_MISSING_PARAM");
  });

  it("answers whoami", async () => {
    const token = hs.registerUser("@bot:example.org", "bot-token");
    expect(token).toBe("bot-token");
    const a = await call("GET", v3("/account/whoami"), { token });
    expect(a.status).toBe(200);
    expect(a.body.user_id).toBe("@bot:example.org");
    expect(a.body.is_guest).toBe(false);
    expect(typeof a.body.device_id).toBe("string");
  });

  it("answers unknown paths with 404 and wrong methods with 405, both M_UNRECOGNIZED", async () => {
    expectError(await call("GET", v3("/no/such/thing"), { as: USER }), 404, "M_UNRECOGNIZED", "Unrecognized request");
    expectError(await call("DELETE", v3("/account/whoami"), { as: USER }), 405, "M_UNRECOGNIZED");
  });
});

describe("room directory", () => {
  it("resolves a known alias and refuses unknown and malformed ones", async () => {
    const roomId = standardRoom();
    const a = await call("GET", v3(`/directory/room/${encodeURIComponent("#standard:example.org")}`), { as: USER });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ room_id: roomId, servers: [SERVER] });
    expectError(
      await call("GET", v3(`/directory/room/${encodeURIComponent("#nope:example.org")}`), { as: USER }),
      404,
      "M_NOT_FOUND",
      "Room alias #nope:example.org not found",
    );
    expectError(await call("GET", v3(`/directory/room/${encodeURIComponent("nohash")}`), { as: USER }), 400, "M_INVALID_PARAM");
  });
});

describe("GET /rooms/{roomId}/state", () => {
  it("returns create, power levels, join rules, alias and every membership", async () => {
    const roomId = standardRoom({
      members: { [MOD]: "join", [USER]: "invite", [OTHER]: "ban", "@gone:example.org": "leave", "@knocker:example.org": "knock" },
    });
    expect(roomId).toMatch(/^![A-Za-z]+:example\.org$/);
    const a = await call("GET", room(roomId, "/state"), { as: MOD });
    expect(a.status).toBe(200);
    const events = eventsOf(a);
    for (const e of events) {
      expect(e).toMatchObject({ room_id: roomId, unsigned: {} });
      expect(typeof e.event_id).toBe("string");
      expect(e.event_id.startsWith("$")).toBe(true);
      expect(typeof e.origin_server_ts).toBe("number");
      expect(typeof e.sender).toBe("string");
    }
    expect(new Set(events.map((e) => e.event_id)).size).toBe(events.length);
    const create = events.find((e) => e.type === "m.room.create");
    expect(create).toMatchObject({ state_key: "", sender: ADMIN, content: { room_version: "10", creator: ADMIN } });
    const pl = events.find((e) => e.type === "m.room.power_levels");
    expect(pl?.content.users).toEqual({ [ADMIN]: 100, [MOD]: 50 });
    expect(events.find((e) => e.type === "m.room.join_rules")?.content).toEqual({ join_rule: "invite" });
    expect(events.find((e) => e.type === "m.room.canonical_alias")?.content).toEqual({ alias: "#standard:example.org" });
    expect(membersFromState(events)).toEqual({
      [ADMIN]: "join",
      [MOD]: "join",
      [USER]: "invite",
      [OTHER]: "ban",
      "@gone:example.org": "leave",
      "@knocker:example.org": "knock",
    });
    const invite = events.find((e) => e.type === "m.room.member" && e.state_key === USER);
    expect(invite?.sender).toBe(ADMIN);
  });

  it("gives the default preset power levels when none are given, and none with null", async () => {
    const withDefault = hs.createRoom({ creator: ADMIN });
    expect(hs.powerLevels(withDefault)).toEqual({
      users: { [ADMIN]: 100 },
      users_default: 0,
      events: {},
      events_default: 0,
      state_default: 50,
      ban: 50,
      kick: 50,
      redact: 50,
      invite: 0,
    });
    const without = hs.createRoom({ creator: ADMIN, powerLevels: null });
    expect(hs.powerLevels(without)).toBeUndefined();
    const a = await call("GET", room(without, "/state"), { as: ADMIN });
    expect(eventsOf(a).some((e) => e.type === "m.room.power_levels")).toBe(false);
  });

  it("shows room version 12: no server part, additional creators, no creator in users", async () => {
    const roomId = hs.createRoom({ creator: ADMIN, version: "12", additionalCreators: [MOD], members: { [MOD]: "join" } });
    expect(roomId).toMatch(/^![A-Za-z0-9_-]{43}$/);
    const a = await call("GET", room(roomId, "/state"), { as: ADMIN });
    expect(a.status).toBe(200);
    const create = eventsOf(a).find((e) => e.type === "m.room.create");
    expect(create?.content).toEqual({ room_version: "12", additional_creators: [MOD] });
    expect(create?.event_id).toBe(`$${roomId.slice(1)}`);
    expect(eventsOf(a).find((e) => e.type === "m.room.power_levels")?.content.users).toEqual({});
  });

  it("refuses non-members (left, invited, never joined) and unknown rooms with 403", async () => {
    const roomId = standardRoom({ members: { [USER]: "leave", [OTHER]: "invite" } });
    for (const who of [USER, OTHER, OUTSIDER]) {
      expectError(
        await call("GET", room(roomId, "/state"), { as: who }),
        403,
        "M_FORBIDDEN",
        `User ${who} not in room ${roomId}, and room previews are disabled`,
      );
    }
    expectError(await call("GET", room("!unknown:example.org", "/state"), { as: USER }), 403, "M_FORBIDDEN");
  });

  it("serves one state event's content, or 404", async () => {
    const roomId = standardRoom();
    const a = await call("GET", room(roomId, "/state/m.room.power_levels/"), { as: USER });
    expect(a.status).toBe(200);
    expect(a.body.users?.[MOD]).toBe(50);
    const noKey = await call("GET", room(roomId, "/state/m.room.power_levels"), { as: USER });
    expect(noKey.body).toEqual(a.body);
    const member = await call("GET", room(roomId, `/state/m.room.member/${encodeURIComponent(MOD)}`), { as: USER });
    expect(member.body).toEqual({ membership: "join" });
    expectError(await call("GET", room(roomId, "/state/m.room.topic/"), { as: USER }), 404, "M_NOT_FOUND");
    expectError(await call("GET", room(roomId, `/state/m.room.member/${encodeURIComponent(OUTSIDER)}`), { as: USER }), 404, "M_NOT_FOUND");
  });
});

describe("invite", () => {
  it("refuses a target who is already joined", async () => {
    const roomId = standardRoom();
    expectError(await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: USER } }), 403, "M_FORBIDDEN", `${USER} is already in the room.`);
  });

  it("refuses a banned target (Synapse's membership handler: M_BAD_STATE)", async () => {
    const roomId = standardRoom({ members: { [MOD]: "join", [USER]: "ban" } });
    expectError(await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: USER } }), 403, "M_BAD_STATE", "Cannot invite user who was banned");
  });

  it("refuses a sender below the invite level, and a sender not in the room", async () => {
    const roomId = standardRoom({
      powerLevels: { users: { [ADMIN]: 100 }, users_default: 0, invite: 50 },
      members: { [USER]: "join" },
    });
    expectError(await call("POST", room(roomId, "/invite"), { as: USER, body: { user_id: OUTSIDER } }), 403, "M_FORBIDDEN", "You don't have permission to invite users");
    expectError(await call("POST", room(roomId, "/invite"), { as: OTHER, body: { user_id: OUTSIDER } }), 403, "M_FORBIDDEN", `${OTHER} not in room ${roomId}.`);
    expect(hs.members(roomId)[OUTSIDER]).toBeUndefined();
    expect(hs.appliedChanges()).toEqual([]);
  });

  it("invites (also unregistered and remote users) and shows them as invited", async () => {
    const roomId = standardRoom();
    const a = await call("POST", room(roomId, "/invite"), { as: MOD, body: { user_id: OUTSIDER, reason: "welcome" } });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({});
    expect((await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: "@never-registered:example.org" } })).status).toBe(200);
    expect((await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: "@someone:remote.example" } })).status).toBe(200);
    const members = hs.members(roomId);
    expect(members[OUTSIDER]).toBe("invite");
    expect(members["@never-registered:example.org"]).toBe("invite");
    expect(members["@someone:remote.example"]).toBe("invite");
    const state = await call("GET", room(roomId, "/state"), { as: USER });
    const event = eventsOf(state).find((e) => e.type === "m.room.member" && e.state_key === OUTSIDER);
    expect(event).toMatchObject({ sender: MOD, content: { membership: "invite", reason: "welcome" } });
    expect(hs.appliedChanges()[0]).toMatchObject({ kind: "invite", roomId, sender: MOD, target: OUTSIDER });
  });

  it("answers 200 to inviting an already invited user, and records the new event", async () => {
    const roomId = standardRoom({ members: { [MOD]: "join", [USER]: "invite" } });
    expect((await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: USER } })).status).toBe(200);
    expect(hs.members(roomId)[USER]).toBe("invite");
    expect(hs.appliedChanges().filter((c) => c.kind === "invite")).toHaveLength(1);
  });

  it("refuses a missing or invalid user_id with 400", async () => {
    const roomId = standardRoom();
    expectError(await call("POST", room(roomId, "/invite"), { as: ADMIN, body: {} }), 400, "M_MISSING_PARAM");
    expectError(await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: "not-a-user" } }), 400, "M_INVALID_PARAM");
    expectError(await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: 42 } }), 400, "M_INVALID_PARAM");
    // Synapse ignores an unparsable body on membership endpoints: the user_id is then missing.
    expectError(await call("POST", room(roomId, "/invite"), { as: ADMIN, raw: "{oops" }), 400, "M_MISSING_PARAM");
  });
});

describe("kick", () => {
  it("refuses a target whose level is not below the sender's", async () => {
    const roomId = standardRoom({ members: { [MOD]: "join", [USER]: "join", "@mod2:example.org": "join" } });
    const pl = hs.powerLevels(roomId)!;
    (pl.users as Record<string, number>)["@mod2:example.org"] = 50;
    expect((await call("PUT", room(roomId, "/state/m.room.power_levels/"), { as: ADMIN, body: pl })).status).toBe(200);
    expectError(await call("POST", room(roomId, "/kick"), { as: MOD, body: { user_id: "@mod2:example.org" } }), 403, "M_FORBIDDEN", "You cannot kick user @mod2:example.org.");
    expectError(await call("POST", room(roomId, "/kick"), { as: MOD, body: { user_id: ADMIN } }), 403, "M_FORBIDDEN");
    expect(hs.members(roomId)["@mod2:example.org"]).toBe("join");
  });

  it("refuses a sender below the kick level", async () => {
    const roomId = standardRoom();
    expectError(await call("POST", room(roomId, "/kick"), { as: USER, body: { user_id: OTHER } }), 403, "M_FORBIDDEN", `You cannot kick user ${OTHER}.`);
  });

  it("refuses a target who is not in the room (never, left) or banned", async () => {
    const roomId = standardRoom({ members: { [MOD]: "join", [USER]: "leave", [OTHER]: "ban" } });
    expectError(await call("POST", room(roomId, "/kick"), { as: ADMIN, body: { user_id: OUTSIDER } }), 403, "M_FORBIDDEN", "The target user is not in the room");
    expectError(await call("POST", room(roomId, "/kick"), { as: ADMIN, body: { user_id: USER } }), 403, "M_FORBIDDEN", "The target user is not in the room");
    expectError(await call("POST", room(roomId, "/kick"), { as: ADMIN, body: { user_id: OTHER } }), 403, "M_BAD_STATE", "Cannot kick user who was banned");
  });

  it("kicks joined and invited users, with the reason in the event", async () => {
    const roomId = standardRoom({ members: { [MOD]: "join", [USER]: "join", [OTHER]: "invite" } });
    const a = await call("POST", room(roomId, "/kick"), { as: MOD, body: { user_id: USER, reason: "left the group" } });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({});
    expect((await call("POST", room(roomId, "/kick"), { as: MOD, body: { user_id: OTHER } })).status).toBe(200);
    expect(hs.members(roomId)[USER]).toBe("leave");
    expect(hs.members(roomId)[OTHER]).toBe("leave");
    const ev = await call("GET", room(roomId, `/state/m.room.member/${encodeURIComponent(USER)}`), { as: ADMIN });
    expect(ev.body).toEqual({ membership: "leave", reason: "left the group" });
    expect(hs.appliedChanges().map((c) => [c.kind, c.target])).toEqual([
      ["kick", USER],
      ["kick", OTHER],
    ]);
    // A second kick of the same user is refused: they are no longer in the room.
    expectError(await call("POST", room(roomId, "/kick"), { as: MOD, body: { user_id: USER, reason: "left the group" } }), 403, "M_FORBIDDEN");
  });

  it("needs a level above 0 without a power levels event (creator 100, others 0, kick 50)", async () => {
    const roomId = hs.createRoom({ creator: ADMIN, powerLevels: null, members: { [USER]: "join", [OTHER]: "join" } });
    expectError(await call("POST", room(roomId, "/kick"), { as: USER, body: { user_id: OTHER } }), 403, "M_FORBIDDEN");
    expect((await call("POST", room(roomId, "/kick"), { as: ADMIN, body: { user_id: OTHER } })).status).toBe(200);
    // Synapse requires state_default 50 for state events even without a power levels event.
    expectError(await call("PUT", room(roomId, "/state/m.room.topic/"), { as: USER, body: { topic: "x" } }), 403, "M_FORBIDDEN");
    expect((await call("PUT", room(roomId, "/state/m.room.topic/"), { as: ADMIN, body: { topic: "x" } })).status).toBe(200);
  });
});

describe("ban, unban, join, leave", () => {
  it("bans and unbans with the ban level", async () => {
    const roomId = standardRoom();
    expectError(await call("POST", room(roomId, "/ban"), { as: USER, body: { user_id: OTHER } }), 403, "M_FORBIDDEN", "You don't have permission to ban");
    expect((await call("POST", room(roomId, "/ban"), { as: MOD, body: { user_id: OTHER } })).status).toBe(200);
    expect(hs.members(roomId)[OTHER]).toBe("ban");
    expectError(await call("POST", room(roomId, "/unban"), { as: MOD, body: { user_id: USER } }), 403, "M_BAD_STATE");
    expect((await call("POST", room(roomId, "/unban"), { as: MOD, body: { user_id: OTHER } })).status).toBe(200);
    expect(hs.members(roomId)[OTHER]).toBe("leave");
  });

  it("lets invited users join and leave, refuses the uninvited and the banned", async () => {
    const roomId = standardRoom({ members: { [MOD]: "join", [USER]: "invite", [OTHER]: "ban" } });
    const joined = await call("POST", room(roomId, "/join"), { as: USER });
    expect(joined.status).toBe(200);
    expect(joined.body).toEqual({ room_id: roomId });
    expectError(await call("POST", room(roomId, "/join"), { as: OUTSIDER }), 403, "M_FORBIDDEN", "You are not invited to this room.");
    expectError(await call("POST", v3(`/join/${encodeURIComponent(roomId)}`), { as: OTHER }), 403, "M_BAD_STATE");
    expect((await call("POST", room(roomId, "/leave"), { as: USER })).status).toBe(200);
    expect(hs.members(roomId)[USER]).toBe("leave");
    expectError(await call("POST", room(roomId, "/leave"), { as: OUTSIDER }), 403, "M_FORBIDDEN");
  });

  it("joins public rooms by alias", async () => {
    const roomId = hs.createRoom({ creator: ADMIN, alias: "#public:example.org", joinRule: "public" });
    const a = await call("POST", v3(`/join/${encodeURIComponent("#public:example.org")}`), { as: OUTSIDER });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ room_id: roomId });
    expect(hs.members(roomId)[OUTSIDER]).toBe("join");
    expectError(await call("POST", v3(`/join/${encodeURIComponent("#none:example.org")}`), { as: OUTSIDER }), 404, "M_NOT_FOUND");
  });
});

describe("power levels", () => {
  const put = (roomId: string, as: string, content: unknown) => call("PUT", room(roomId, "/state/m.room.power_levels/"), { as, body: content });

  it("refuses changing a user whose level is not below the sender's", async () => {
    const roomId = standardRoom({ members: { [MOD]: "join", "@mod2:example.org": "join" } });
    const pl = hs.powerLevels(roomId)!;
    (pl.users as Record<string, number>)["@mod2:example.org"] = 50;
    expect((await put(roomId, ADMIN, pl)).status).toBe(200);
    const demote = structuredClone(pl);
    (demote.users as Record<string, number>)["@mod2:example.org"] = 0;
    expectError(await put(roomId, MOD, demote), 403, "M_FORBIDDEN", /equal to your own/);
    const remove = structuredClone(pl);
    delete (remove.users as Record<string, number>)["@mod2:example.org"];
    expectError(await put(roomId, MOD, remove), 403, "M_FORBIDDEN", /equal to your own/);
    const demoteAdmin = structuredClone(pl);
    (demoteAdmin.users as Record<string, number>)[ADMIN] = 0;
    expectError(await put(roomId, MOD, demoteAdmin), 403, "M_FORBIDDEN", /greater than your own/);
    expect((hs.powerLevels(roomId)!.users as Record<string, number>)["@mod2:example.org"]).toBe(50);
  });

  it("refuses raising anyone above the sender's own level", async () => {
    const roomId = standardRoom();
    const pl = hs.powerLevels(roomId)!;
    (pl.users as Record<string, number>)[USER] = 51;
    expectError(await put(roomId, MOD, pl), 403, "M_FORBIDDEN", /greater than your own/);
    (pl.users as Record<string, number>)[USER] = 50;
    expect((await put(roomId, MOD, pl)).status).toBe(200);
  });

  it("refuses changing an events entry or a top-level level above the sender's", async () => {
    const roomId = standardRoom();
    const events = hs.powerLevels(roomId)!;
    (events.events as Record<string, number>)["m.room.tombstone"] = 50; // old value 100 > 50
    expectError(await put(roomId, MOD, events), 403, "M_FORBIDDEN", /greater than your own/);
    const top = hs.powerLevels(roomId)!;
    top.state_default = 60;
    expectError(await put(roomId, MOD, top), 403, "M_FORBIDDEN", /greater than your own/);
    const notif = hs.powerLevels(roomId)!;
    notif.notifications = { room: 75 };
    expectError(await put(roomId, MOD, notif), 403, "M_FORBIDDEN", /greater than your own/);
  });

  it("refuses a sender below the level needed to send power levels", async () => {
    const roomId = standardRoom();
    const pl = hs.powerLevels(roomId)!;
    expectError(await put(roomId, USER, pl), 403, "M_FORBIDDEN", /user_level \(0\) < send_level \(50\)/);
    expectError(await put(roomId, OUTSIDER, pl), 403, "M_FORBIDDEN");
  });

  it("stores the whole content exactly as sent", async () => {
    const roomId = standardRoom();
    const content = {
      ...hs.powerLevels(roomId)!,
      users: { [ADMIN]: 100, [MOD]: 50, [USER]: 25 },
      notifications: { room: 50 },
      "org.example.custom": { nested: [1, "two", null] },
    };
    const a = await put(roomId, ADMIN, content);
    expect(a.status).toBe(200);
    expect(typeof a.body.event_id).toBe("string");
    expect(hs.powerLevels(roomId)).toEqual(content);
    const read = await call("GET", room(roomId, "/state/m.room.power_levels/"), { as: USER });
    expect(read.body).toEqual(content);
    const changes = hs.appliedChanges();
    expect(changes).toHaveLength(1);
    expect(changes[0]).toMatchObject({ kind: "power_levels", roomId, sender: ADMIN, content });
    // The same content again from the same sender is a no-op that returns the same event.
    const again = await put(roomId, ADMIN, content);
    expect(again.body.event_id).toBe(a.body.event_id);
    expect(hs.appliedChanges()).toHaveLength(1);
  });

  it("lets a sender change its own entry downwards", async () => {
    const roomId = standardRoom();
    const pl = hs.powerLevels(roomId)!;
    (pl.users as Record<string, number>)[MOD] = 10;
    expect((await put(roomId, MOD, pl)).status).toBe(200);
  });

  it("refuses non-integer levels with 400 M_BAD_JSON", async () => {
    const roomId = standardRoom();
    const stringy = { ...hs.powerLevels(roomId)!, users_default: "0" };
    expectError(await put(roomId, ADMIN, stringy), 400, "M_BAD_JSON");
    const inUsers = { ...hs.powerLevels(roomId)!, users: { [ADMIN]: 100, [USER]: "50" } };
    expectError(await put(roomId, ADMIN, inUsers), 400, "M_BAD_JSON");
    const fraction = { ...hs.powerLevels(roomId)!, kick: 50.5 };
    expectError(await put(roomId, ADMIN, fraction), 400, "M_BAD_JSON");
    // A float literal is refused even when it is whole (canonical JSON).
    const raw = JSON.stringify(hs.powerLevels(roomId)).replace('"kick":50', '"kick":50.0');
    expect(raw).toContain("50.0");
    expectError(await call("PUT", room(roomId, "/state/m.room.power_levels/"), { as: ADMIN, raw }), 400, "M_BAD_JSON");
    expect(hs.powerLevels(roomId)!.kick).toBe(50);
  });

  it("refuses invalid user ids in users with 400", async () => {
    const roomId = standardRoom();
    const pl = { ...hs.powerLevels(roomId)!, users: { [ADMIN]: 100, "not-a-user": 10 } };
    expectError(await put(roomId, ADMIN, pl), 400, "M_UNKNOWN", "Not a valid user_id: not-a-user");
  });

  it("in room version 12 refuses creators in users and gives creators infinite power", async () => {
    const roomId = hs.createRoom({
      creator: ADMIN,
      version: "12",
      additionalCreators: [OTHER],
      members: { [OTHER]: "join", [MOD]: "join", [USER]: "join" },
      powerLevels: { users: { [MOD]: 100 }, users_default: 0, state_default: 50, events: {} },
    });
    const withCreator = { ...hs.powerLevels(roomId)!, users: { [MOD]: 100, [ADMIN]: 150 } };
    expectError(await put(roomId, ADMIN, withCreator), 400, "M_UNKNOWN", `Creator user ${ADMIN} must not appear in content.users`);
    const withAdditional = { ...hs.powerLevels(roomId)!, users: { [MOD]: 100, [OTHER]: 100 } };
    expectError(await put(roomId, ADMIN, withAdditional), 400, "M_UNKNOWN");
    // A creator may demote a PL 100 user and raise someone above 100.
    const demote = { ...hs.powerLevels(roomId)!, users: { [MOD]: 0, [USER]: 9000 } };
    expect((await put(roomId, OTHER, demote)).status).toBe(200);
    // Nobody can kick a creator, not even another creator.
    expectError(await call("POST", room(roomId, "/kick"), { as: USER, body: { user_id: ADMIN } }), 403, "M_FORBIDDEN");
    expectError(await call("POST", room(roomId, "/kick"), { as: OTHER, body: { user_id: ADMIN } }), 403, "M_FORBIDDEN");
    expect(() => hs.createRoom({ creator: ADMIN, version: "12", powerLevels: { users: { [ADMIN]: 100 } } })).toThrow(/must not appear/);
  });

  it("refuses bad JSON bodies", async () => {
    const roomId = standardRoom();
    expectError(await call("PUT", room(roomId, "/state/m.room.power_levels/"), { as: ADMIN, raw: "{not json" }), 400, "M_NOT_JSON");
    expectError(await call("PUT", room(roomId, "/state/m.room.power_levels/"), { as: ADMIN, raw: "[1]" }), 400, "M_BAD_JSON");
  });
});

describe("rate limiting and fault injection", () => {
  it("answers 429 with Retry-After and retry_after_ms for the chosen endpoints only", async () => {
    const roomId = standardRoom();
    hs.rateLimit({ count: 2, retryAfterMs: 1500, endpoints: ["invite"] });
    for (let i = 0; i < 2; i++) {
      const a = await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: OUTSIDER } });
      expectError(a, 429, "M_LIMIT_EXCEEDED", "Too Many Requests");
      expect(a.headers.get("retry-after")).toBe("2");
      expect(a.body.retry_after_ms).toBe(1500);
      expect(hs.members(roomId)[OUTSIDER]).toBeUndefined();
      expect((await call("GET", v3("/account/whoami"), { as: ADMIN })).status).toBe(200);
    }
    expect((await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: OUTSIDER } })).status).toBe(200);
    expect(hs.appliedChanges()).toHaveLength(1);
  });

  it("can leave out the header or the body field", async () => {
    hs.rateLimit({ count: 1, retryAfterMs: 200, header: false });
    const noHeader = await call("GET", v3("/account/whoami"), { as: ADMIN });
    expectError(noHeader, 429, "M_LIMIT_EXCEEDED");
    expect(noHeader.headers.get("retry-after")).toBeNull();
    expect(noHeader.body.retry_after_ms).toBe(200);
    hs.rateLimit({ count: 1, retryAfterMs: 200, body: false });
    const noBody = await call("GET", v3("/account/whoami"), { as: ADMIN });
    expectError(noBody, 429, "M_LIMIT_EXCEEDED");
    expect(noBody.headers.get("retry-after")).toBe("1");
    expect(noBody.body.retry_after_ms).toBeUndefined();
    expect((await call("GET", v3("/account/whoami"), { as: ADMIN })).status).toBe(200);
  });

  it("fails the next requests to one endpoint as told", async () => {
    const roomId = standardRoom();
    hs.failNext("state", 1);
    hs.failNext("kick", 1, 502, { errcode: "M_UNKNOWN", error: "Bad gateway" });
    expectError(await call("GET", room(roomId, "/state"), { as: ADMIN }), 500, "M_UNKNOWN");
    expect((await call("GET", room(roomId, "/state"), { as: ADMIN })).status).toBe(200);
    expectError(await call("POST", room(roomId, "/kick"), { as: ADMIN, body: { user_id: USER } }), 502, "M_UNKNOWN", "Bad gateway");
    expect(hs.members(roomId)[USER]).toBe("join");
    expect((await call("POST", room(roomId, "/kick"), { as: ADMIN, body: { user_id: USER } })).status).toBe(200);
  });
});

describe("request counting", () => {
  it("counts every request by endpoint, rejected ones included", async () => {
    const roomId = standardRoom();
    await call("GET", v3("/account/whoami"), { as: ADMIN });
    await call("GET", v3("/account/whoami"));
    await call("GET", room(roomId, "/state"), { as: ADMIN });
    await call("GET", room(roomId, "/state"), { as: OUTSIDER });
    await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: USER } });
    await call("PUT", room(roomId, "/state/m.room.power_levels/"), { as: ADMIN, body: hs.powerLevels(roomId) });
    await call("GET", v3("/nothing"), { as: ADMIN });
    const counts = hs.requestCounts();
    expect(counts).toMatchObject({ whoami: 2, state: 2, invite: 1, put_state: 1, other: 1, kick: 0 });
    expect(hs.totalRequests()).toBe(7);
    hs.resetCounts();
    expect(hs.totalRequests()).toBe(0);
    expect(Object.values(hs.requestCounts()).every((n) => n === 0)).toBe(true);
  });
});

describe("shared (copy-on-write) memberships", () => {
  it("keeps a change in one room out of the rooms sharing its members", async () => {
    // The creator is in the map, so both rooms use the very same base map.
    const shared = new Map<string, "join" | "invite">([
      [ADMIN, "join"],
      [USER, "join"],
      [OTHER, "invite"],
    ]);
    const a = hs.createRoom({ creator: ADMIN, members: shared });
    const b = hs.createRoom({ creator: ADMIN, members: shared });
    expect((await call("POST", room(a, "/kick"), { as: ADMIN, body: { user_id: USER } })).status).toBe(200);
    expect((await call("POST", room(a, "/invite"), { as: ADMIN, body: { user_id: OUTSIDER } })).status).toBe(200);
    hs.setMembership(a, OTHER, "join");
    expect(hs.members(a)).toEqual({ [ADMIN]: "join", [USER]: "leave", [OTHER]: "join", [OUTSIDER]: "invite" });
    expect(hs.members(b)).toEqual({ [ADMIN]: "join", [USER]: "join", [OTHER]: "invite" });
    const stateB = await call("GET", room(b, "/state"), { as: ADMIN });
    expect(membersFromState(eventsOf(stateB))).toEqual({ [ADMIN]: "join", [USER]: "join", [OTHER]: "invite" });
    const stateA = await call("GET", room(a, "/state"), { as: ADMIN });
    expect(membersFromState(eventsOf(stateA))).toEqual({ [ADMIN]: "join", [USER]: "leave", [OTHER]: "join", [OUTSIDER]: "invite" });
    expect(shared.size).toBe(3);
    expect(shared.get(USER)).toBe("join");
    const c = hs.createRoom({ creator: ADMIN, members: shared });
    expect(hs.members(c)).toEqual({ [ADMIN]: "join", [USER]: "join", [OTHER]: "invite" });
  });

  it("notices a source changed between rooms, and earlier rooms keep what they were given", () => {
    const source: Record<string, "join" | "leave"> = { [USER]: "join" };
    const a = hs.createRoom({ creator: ADMIN, members: source });
    source[USER] = "leave";
    source[OTHER] = "join";
    const b = hs.createRoom({ creator: ADMIN, members: source });
    expect(hs.members(a)).toEqual({ [USER]: "join", [ADMIN]: "join" });
    expect(hs.members(b)).toEqual({ [USER]: "leave", [OTHER]: "join", [ADMIN]: "join" });
  });

  it("creates 1,000 rooms sharing 10,000 members quickly", async () => {
    const shared = new Map<string, "join">(Array.from({ length: 10_000 }, (_, i) => [`@u${i}:example.org`, "join"]));
    const started = performance.now();
    const ids: string[] = [];
    for (let i = 0; i < 1000; i++) ids.push(hs.createRoom({ creator: ADMIN, members: shared }));
    expect(performance.now() - started).toBeLessThan(3000);
    const a = await call("GET", room(ids[999]!, "/state"), { as: ADMIN });
    expect(a.status).toBe(200);
    expect(eventsOf(a).filter((e) => e.type === "m.room.member")).toHaveLength(10_001);
  });
});

describe("members endpoints, joined rooms, send, sync", () => {
  it("filters /members by membership and not_membership (both must pass, as Synapse does)", async () => {
    const roomId = standardRoom({ members: { [MOD]: "join", [USER]: "invite", [OTHER]: "leave" } });
    const all = await call("GET", room(roomId, "/members"), { as: MOD });
    expect(membersFromState(all.body.chunk ?? [])).toEqual({ [ADMIN]: "join", [MOD]: "join", [USER]: "invite", [OTHER]: "leave" });
    const joined = await call("GET", room(roomId, "/members?membership=join"), { as: MOD });
    expect(Object.keys(membersFromState(joined.body.chunk ?? [])).sort()).toEqual([ADMIN, MOD].sort());
    const notLeft = await call("GET", room(roomId, "/members?not_membership=leave"), { as: MOD });
    expect(Object.keys(membersFromState(notLeft.body.chunk ?? [])).sort()).toEqual([ADMIN, MOD, USER].sort());
    const both = await call("GET", room(roomId, "/members?membership=invite&not_membership=leave"), { as: MOD });
    expect(Object.keys(membersFromState(both.body.chunk ?? []))).toEqual([USER]);
    expectError(await call("GET", room(roomId, "/members"), { as: USER }), 403, "M_FORBIDDEN");
  });

  it("lists joined members only in /joined_members, and joined rooms in /joined_rooms", async () => {
    const roomId = standardRoom({ members: { [MOD]: "join", [USER]: "invite" } });
    const other = hs.createRoom({ creator: OTHER, members: { [MOD]: "join" } });
    const a = await call("GET", room(roomId, "/joined_members"), { as: MOD });
    expect(a.body).toEqual({ joined: { [ADMIN]: { display_name: null, avatar_url: null }, [MOD]: { display_name: null, avatar_url: null } } });
    expectError(await call("GET", room(roomId, "/joined_members"), { as: USER }), 403, "M_FORBIDDEN");
    const rooms = await call("GET", v3("/joined_rooms"), { as: MOD });
    expect(rooms.body.joined_rooms?.sort()).toEqual([roomId, other].sort());
    expect((await call("GET", v3("/joined_rooms"), { as: USER })).body).toEqual({ joined_rooms: [] });
  });

  it("stores sent events once per transaction id", async () => {
    const roomId = standardRoom();
    const body = { msgtype: "m.notice", body: "hello" };
    const first = await call("PUT", room(roomId, "/send/m.room.message/txn1"), { as: ADMIN, body });
    const again = await call("PUT", room(roomId, "/send/m.room.message/txn1"), { as: ADMIN, body });
    expect(first.status).toBe(200);
    expect(again.body.event_id).toBe(first.body.event_id);
    const next = await call("PUT", room(roomId, "/send/m.room.message/txn2"), { as: ADMIN, body });
    expect(next.body.event_id).not.toBe(first.body.event_id);
    expect(hs.sentEvents(roomId)).toEqual([
      { type: "m.room.message", sender: ADMIN, content: body },
      { type: "m.room.message", sender: ADMIN, content: body },
    ]);
    expectError(await call("PUT", room(roomId, "/send/m.room.message/txn3"), { as: OUTSIDER, body }), 403, "M_FORBIDDEN");
    expectError(await call("PUT", room(roomId, "/send/m.room.message/txn4"), { as: ADMIN, body: { msgtype: "m.text" } }), 400, "M_UNKNOWN");
  });

  it("answers a minimal /sync", async () => {
    const a = await call("GET", v3("/sync"), { as: ADMIN });
    expect(a.status).toBe(200);
    expect(typeof a.body.next_batch).toBe("string");
    expect(a.body.rooms).toEqual({ join: {}, invite: {}, leave: {} });
  });
});

describe("stalled answers (stallNext)", () => {
  /** Waits until `done()` holds (the server sees a client's disconnect a moment after it happened). */
  async function until(done: () => boolean, what: string): Promise<void> {
    for (let i = 0; i < 200 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
    if (!done()) throw new Error(`still not: ${what}`);
  }

  /** A client that gives up after `ms`, as matrix-bot-sdk does with its request timeout. */
  function callWithTimeout(method: string, path: string, as: string, body: unknown, ms = 300): Promise<Response> {
    return fetch(`${hs.url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${tokens[as]!}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(ms),
    });
  }

  it("apply: true processes the request and never answers: the change is made, the client times out", async () => {
    const roomId = standardRoom();
    hs.stallNext("invite", 1, { apply: true });
    await expect(callWithTimeout("POST", room(roomId, "/invite"), ADMIN, { user_id: OUTSIDER })).rejects.toThrow(/aborted|timeout/i);
    expect(hs.members(roomId)[OUTSIDER]).toBe("invite");
    expect(hs.appliedChanges()).toEqual([{ kind: "invite", roomId, sender: ADMIN, target: OUTSIDER, content: { membership: "invite" } }]);
    await until(() => hs.stalledRequests() === 0, "the stalled request is let go once its client gave up");
    const [entry] = hs.requestLog().filter((e) => e.kind === "invite");
    expect(entry).toMatchObject({ method: "POST", user: ADMIN, status: null, finishedAt: null });
    // One request was stalled: the same invite again is answered (Synapse accepts inviting an
    // invited user, and stores a second invite event: what a client that retried would cause).
    expect((await call("POST", room(roomId, "/invite"), { as: ADMIN, body: { user_id: OUTSIDER } })).status).toBe(200);
    expect(hs.appliedChanges().map((c) => [c.kind, c.target])).toEqual([
      ["invite", OUTSIDER],
      ["invite", OUTSIDER],
    ]);
    expect(hs.requestCounts().invite).toBe(2);
  });

  it("apply: true withholds an error answer the same way", async () => {
    const roomId = standardRoom();
    hs.stallNext("kick", 1, { apply: true });
    await expect(callWithTimeout("POST", room(roomId, "/kick"), USER, { user_id: OTHER })).rejects.toThrow(/aborted|timeout/i);
    expect(hs.members(roomId)[OTHER]).toBe("join");
    expect(hs.appliedChanges()).toEqual([]);
  });

  it("apply: false hangs before processing: nothing changes; rules run out in order; a stalled request is not rate-limited", async () => {
    const roomId = standardRoom();
    hs.stallNext("put_state", 1, { apply: false });
    hs.stallNext("kick", 1, { apply: false });
    hs.stallNext("kick", 1, { apply: true });
    hs.rateLimit({ count: 1, retryAfterMs: 100, endpoints: ["kick"] });
    const levels = { ...hs.powerLevels(roomId), users: { [ADMIN]: 100, [MOD]: 50, [USER]: 25 } };
    await expect(callWithTimeout("PUT", room(roomId, "/state/m.room.power_levels/"), ADMIN, levels)).rejects.toThrow(/aborted|timeout/i);
    expect(hs.powerLevels(roomId)!["users"]).toEqual({ [ADMIN]: 100, [MOD]: 50 });
    await expect(callWithTimeout("POST", room(roomId, "/kick"), ADMIN, { user_id: USER })).rejects.toThrow(/aborted|timeout/i);
    expect(hs.members(roomId)[USER]).toBe("join");
    await expect(callWithTimeout("POST", room(roomId, "/kick"), ADMIN, { user_id: USER })).rejects.toThrow(/aborted|timeout/i);
    expect(hs.members(roomId)[USER]).toBe("leave");
    // The rate limit was left for the next request; after it, answers are normal again.
    expectError(await call("POST", room(roomId, "/kick"), { as: ADMIN, body: { user_id: OTHER } }), 429, "M_LIMIT_EXCEEDED");
    expect((await call("POST", room(roomId, "/kick"), { as: ADMIN, body: { user_id: OTHER } })).status).toBe(200);
    expect((await call("PUT", room(roomId, "/state/m.room.power_levels/"), { as: ADMIN, body: levels })).status).toBe(200);
    expect(hs.appliedChanges().map((c) => [c.kind, c.target ?? null])).toEqual([
      ["kick", USER],
      ["kick", OTHER],
      ["power_levels", null],
    ]);
    expect(hs.requestCounts()).toMatchObject({ kick: 4, put_state: 2 });
    await until(() => hs.stalledRequests() === 0, "every stalled client gave up");
  });

  it("close() closes the connections of stalled requests whose client still waits", async () => {
    const roomId = standardRoom();
    hs.stallNext("state", 2, { apply: false });
    const waiting = [0, 1].map(() =>
      fetch(`${hs.url}${room(roomId, "/state")}`, { headers: { Authorization: `Bearer ${tokens[ADMIN]!}` } }).then(
        () => "answered",
        () => "connection closed",
      ),
    );
    await until(() => hs.stalledRequests() === 2, "both requests are stalled");
    await hs.close();
    expect(await Promise.all(waiting)).toEqual(["connection closed", "connection closed"]);
    expect(hs.stalledRequests()).toBe(0);
  });
});
