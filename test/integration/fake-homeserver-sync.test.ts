/**
 * The test homeserver's /sync, timelines, filters and message helpers — over plain HTTP, and with
 * the real matrix-bot-sdk 0.7.1 `MatrixClient` and its sync loop (what "serve mode" will run on).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LogLevel, LogService, MatrixClient, MemoryStorageProvider } from "matrix-bot-sdk";
import { FakeHomeserver, type FakeMessage } from "../fakes/homeserver.ts";

const SERVER = "example.org";
const BOT = "@bot:example.org";
const ALICE = "@alice:example.org";
const BOB = "@bob:example.org";
const CAROL = "@carol:example.org";

interface ClientEvent {
  type: string;
  sender: string;
  event_id: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
  unsigned?: Record<string, unknown>;
  state_key?: string;
  room_id?: string;
}

interface RoomSection {
  timeline: { events: ClientEvent[]; limited: boolean; prev_batch: string };
  state: { events: ClientEvent[] };
  account_data: { events: { type: string; content: Record<string, unknown> }[] };
  ephemeral?: { events: unknown[] };
}

interface SyncBody {
  next_batch: string;
  rooms: {
    join: Record<string, RoomSection>;
    invite: Record<string, { invite_state: { events: ClientEvent[] } }>;
    leave: Record<string, RoomSection>;
    knock?: Record<string, unknown>;
  };
  account_data: { events: { type: string; content: Record<string, unknown> }[] };
  presence: { events: unknown[] };
  to_device: { events: unknown[] };
  device_lists: { changed: string[]; left: string[] };
}

interface ErrorBody {
  errcode?: string;
  error?: string;
}

interface Answer<T = unknown> {
  status: number;
  body: T;
}

let hs: FakeHomeserver;
const tokens: Record<string, string> = {};

async function call<T = ErrorBody>(
  method: string,
  path: string,
  opts: { as?: string; token?: string; body?: unknown; raw?: string; signal?: AbortSignal } = {},
): Promise<Answer<T>> {
  const headers: Record<string, string> = {};
  const token = opts.token ?? (opts.as !== undefined ? tokens[opts.as] : undefined);
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  const body = opts.raw ?? (opts.body !== undefined ? JSON.stringify(opts.body) : undefined);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${hs.url}${path}`, {
    method,
    headers,
    ...(body !== undefined ? { body } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as T };
}

const v3 = (path: string): string => `/_matrix/client/v3${path}`;
const room = (roomId: string, rest: string): string => v3(`/rooms/${encodeURIComponent(roomId)}${rest}`);

async function sync(as: string, params: Record<string, string | number | boolean> = {}): Promise<SyncBody> {
  const q = new URLSearchParams(Object.entries(params).map(([k, v]): [string, string] => [k, String(v)]));
  const a = await call<SyncBody & ErrorBody>("GET", v3(`/sync?${q.toString()}`), { as });
  expect(a.status, JSON.stringify(a.body)).toBe(200);
  return a.body;
}

function expectError(a: Answer, status: number, errcode: string, message?: string | RegExp): void {
  const body = a.body as ErrorBody;
  expect(a.status, JSON.stringify(body)).toBe(status);
  expect(body.errcode).toBe(errcode);
  if (typeof message === "string") expect(body.error).toBe(message);
  else if (message) expect(body.error).toMatch(message);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const bodies = (events: readonly ClientEvent[]): unknown[] => events.filter((e) => e.type === "m.room.message").map((e) => e.content.body);

/** A room made by Alice with the bot and Bob already joined (creation-time memberships). */
function sharedRoom(extra: { encrypted?: boolean; name?: string } = {}): string {
  return hs.createRoom({ creator: ALICE, members: { [BOT]: "join", [BOB]: "join" }, ...extra });
}

beforeEach(async () => {
  hs = await FakeHomeserver.start({ serverName: SERVER });
  for (const u of [BOT, ALICE, BOB, CAROL]) tokens[u] = hs.registerUser(u);
});

afterEach(async () => {
  await hs.close();
});

describe("/sync over HTTP", () => {
  it("initial sync: the last 10 timeline events (limited), state before them, events in client format", async () => {
    const roomId = sharedRoom({ name: "Management" });
    const sent: string[] = [];
    for (let i = 0; i < 12; i++) sent.push(hs.sendMessage(roomId, ALICE, `m${i}`));
    const s = await sync(BOT);
    expect(s.next_batch).toEqual(expect.any(String));
    expect(s.rooms.invite).toEqual({});
    expect(s.rooms.leave).toEqual({});
    expect(s.account_data).toEqual({ events: [] });
    expect(s.presence).toEqual({ events: [] });
    expect(s.to_device).toEqual({ events: [] });
    expect(s.device_lists).toEqual({ changed: [], left: [] });
    const section = s.rooms.join[roomId]!;
    expect(section.timeline.limited).toBe(true);
    expect(section.timeline.prev_batch).toEqual(expect.any(String));
    expect(section.timeline.events.map((e) => e.event_id)).toEqual(sent.slice(2));
    expect(bodies(section.timeline.events)).toEqual(Array.from({ length: 10 }, (_, i) => `m${i + 2}`));
    for (const e of [...section.timeline.events, ...section.state.events]) {
      expect(e).toMatchObject({ type: expect.any(String), sender: expect.any(String), event_id: expect.stringMatching(/^\$/), origin_server_ts: expect.any(Number) });
      expect(e.content).toEqual(expect.any(Object));
      expect(e.unsigned?.age).toEqual(expect.any(Number));
      expect(e.room_id).toBeUndefined();
    }
    const state = section.state.events;
    const types = new Set(state.map((e) => e.type));
    for (const t of ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name", "m.room.member"]) expect(types).toContain(t);
    const members = Object.fromEntries(state.filter((e) => e.type === "m.room.member").map((e) => [e.state_key, e.content.membership]));
    expect(members).toEqual({ [ALICE]: "join", [BOT]: "join", [BOB]: "join" });
    expect(section.ephemeral).toEqual({ events: [] });
    // Rooms the user is not in do not appear.
    const other = hs.createRoom({ creator: CAROL });
    expect((await sync(BOT)).rooms.join[other]).toBeUndefined();
  });

  it("incremental sync: only what happened since the token, and nothing when nothing happened", async () => {
    const roomId = sharedRoom();
    hs.sendMessage(roomId, ALICE, "before");
    const first = await sync(BOT);
    const empty = await sync(BOT, { since: first.next_batch, timeout: 0 });
    expect(empty.rooms).toEqual({ join: {}, invite: {}, leave: {} });
    expect(empty.next_batch).toBe(first.next_batch);
    const a = hs.sendMessage(roomId, ALICE, "one");
    const b = hs.sendMessage(roomId, BOB, "two");
    const next = await sync(BOT, { since: first.next_batch, timeout: 0 });
    const section = next.rooms.join[roomId]!;
    expect(section.timeline.events.map((e) => e.event_id)).toEqual([a, b]);
    expect(section.timeline.limited).toBe(false);
    expect(section.state.events).toEqual([]);
    expect(next.next_batch).not.toBe(first.next_batch);
    // The same token again gives the same events: tokens are positions, not cursors.
    const again = await sync(BOT, { since: first.next_batch, timeout: 0 });
    expect(again.rooms.join[roomId]!.timeline.events.map((e) => e.event_id)).toEqual([a, b]);
    // More than the limit since the token: limited, with the state changes from the gap.
    for (let i = 0; i < 5; i++) hs.sendMessage(roomId, ALICE, `gap ${i}`);
    await call("PUT", room(roomId, "/state/m.room.topic/"), { as: ALICE, body: { topic: "in the gap" } });
    for (let i = 0; i < 10; i++) hs.sendMessage(roomId, ALICE, `late ${i}`);
    const gappy = (await sync(BOT, { since: next.next_batch, timeout: 0 })).rooms.join[roomId]!;
    expect(gappy.timeline.limited).toBe(true);
    expect(bodies(gappy.timeline.events)).toEqual(Array.from({ length: 10 }, (_, i) => `late ${i}`));
    expect(gappy.state.events.map((e) => [e.type, e.content])).toEqual([["m.room.topic", { topic: "in the gap" }]]);
    // full_state=true sends the whole state again.
    const full = (await sync(BOT, { since: next.next_batch, full_state: true })).rooms.join[roomId]!;
    expect(full.state.events.filter((e) => e.type === "m.room.member")).toHaveLength(3);
  });

  it("records every room event in the timeline: memberships, power levels, state, messages, reactions", async () => {
    const roomId = hs.createRoom({ creator: ALICE, members: { [BOT]: "join", [BOB]: "join" } });
    const since = (await sync(BOT)).next_batch;
    await call("POST", room(roomId, "/invite"), { as: ALICE, body: { user_id: CAROL } });
    await call("POST", room(roomId, "/join"), { as: CAROL });
    await call("POST", room(roomId, "/kick"), { as: ALICE, body: { user_id: CAROL, reason: "bye" } });
    await call("POST", room(roomId, "/ban"), { as: ALICE, body: { user_id: CAROL } });
    hs.setMembership(roomId, "@dave:example.org", "invite");
    const pl = { ...hs.powerLevels(roomId)!, users: { [ALICE]: 100, [BOB]: 50 } };
    await call("PUT", room(roomId, "/state/m.room.power_levels/"), { as: ALICE, body: pl });
    await call("PUT", room(roomId, "/state/m.room.topic/"), { as: ALICE, body: { topic: "t" } });
    const msg = hs.sendMessage(roomId, BOB, "hello");
    hs.sendReaction(roomId, ALICE, msg, "👍");
    await call("POST", room(roomId, "/leave"), { as: BOB });
    const s = await sync(BOT, { since, filter: JSON.stringify({ room: { timeline: { limit: 50 } } }) });
    const events = s.rooms.join[roomId]!.timeline.events;
    expect(events.map((e) => (e.type === "m.room.member" ? `${e.state_key} ${String(e.content.membership)}` : e.type))).toEqual([
      `${CAROL} invite`,
      `${CAROL} join`,
      `${CAROL} leave`,
      `${CAROL} ban`,
      "@dave:example.org invite",
      "m.room.power_levels",
      "m.room.topic",
      "m.room.message",
      "m.reaction",
      `${BOB} leave`,
    ]);
    const kick = events[2]!;
    expect(kick).toMatchObject({ sender: ALICE, content: { membership: "leave", reason: "bye" } });
    expect(kick.unsigned).toMatchObject({ prev_content: { membership: "join" }, replaces_state: events[1]!.event_id });
    // Bob's creation-time membership is what his leave replaced.
    expect(events[9]!.unsigned).toMatchObject({ prev_content: { membership: "join" }, prev_sender: BOB, replaces_state: expect.stringMatching(/^\$/) });
    expect(events[8]!.content).toEqual({ "m.relates_to": { rel_type: "m.annotation", event_id: msg, key: "👍" } });
  });

  it("long-poll: held until an event for this user arrives, and not woken by other rooms", async () => {
    const mine = sharedRoom();
    const elsewhere = hs.createRoom({ creator: CAROL });
    const since = (await sync(BOT)).next_batch;
    const started = performance.now();
    const pending = sync(BOT, { since, timeout: 20_000 });
    await vi.waitFor(() => expect(hs.pendingLongPolls(BOT)).toBe(1));
    hs.sendMessage(elsewhere, CAROL, "not for the bot");
    await sleep(100);
    expect(hs.pendingLongPolls(BOT)).toBe(1);
    const id = hs.sendMessage(mine, ALICE, "wake up");
    const s = await pending;
    expect(performance.now() - started).toBeLessThan(5000);
    expect(Object.keys(s.rooms.join)).toEqual([mine]);
    expect(s.rooms.join[mine]!.timeline.events.map((e) => e.event_id)).toEqual([id]);
    expect(hs.pendingLongPolls()).toBe(0);
  });

  it("long-poll: an invite wakes it, and an expired timeout answers with an empty sync", async () => {
    const since = (await sync(BOT)).next_batch;
    const t0 = performance.now();
    const quiet = await sync(BOT, { since, timeout: 250 });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(200);
    expect(quiet.rooms).toEqual({ join: {}, invite: {}, leave: {} });
    expect(quiet.next_batch).toBe(since);
    const pending = sync(BOT, { since, timeout: 20_000 });
    await vi.waitFor(() => expect(hs.pendingLongPolls(BOT)).toBe(1));
    const roomId = hs.createRoom({ creator: ALICE, name: "Ops" });
    await call("POST", room(roomId, "/invite"), { as: ALICE, body: { user_id: BOT } });
    const s = await pending;
    const invite = s.rooms.invite[roomId]!.invite_state.events;
    expect(invite.map((e) => e.type).sort()).toEqual(["m.room.create", "m.room.join_rules", "m.room.member", "m.room.name"]);
    expect(invite.find((e) => e.type === "m.room.member")).toMatchObject({ state_key: BOT, sender: ALICE, content: { membership: "invite" } });
    expect(invite.find((e) => e.type === "m.room.name")).toEqual({ type: "m.room.name", state_key: "", content: { name: "Ops" }, sender: ALICE });
  });

  it("a long-poll whose client went away is dropped", async () => {
    const since = (await sync(BOT)).next_batch;
    const abort = new AbortController();
    const pending = call("GET", v3(`/sync?since=${since}&timeout=20000`), { as: BOT, signal: abort.signal });
    await vi.waitFor(() => expect(hs.pendingLongPolls(BOT)).toBe(1));
    abort.abort();
    await expect(pending).rejects.toThrow();
    await vi.waitFor(() => expect(hs.pendingLongPolls(BOT)).toBe(0));
  });

  it("an invited user joins and then sees the room in rooms.join with full state; a kick shows in rooms.leave", async () => {
    const roomId = hs.createRoom({ creator: ALICE, members: { [BOB]: "join" } });
    hs.sendMessage(roomId, ALICE, "history");
    const s0 = (await sync(BOT)).next_batch;
    await call("POST", room(roomId, "/invite"), { as: ALICE, body: { user_id: BOT } });
    const s1 = await sync(BOT, { since: s0 });
    expect(Object.keys(s1.rooms.invite)).toEqual([roomId]);
    expect(s1.rooms.join).toEqual({});
    const joined = await call<{ room_id: string }>("POST", v3(`/join/${encodeURIComponent(roomId)}`), { as: BOT, body: {} });
    expect(joined.body).toEqual({ room_id: roomId });
    expect(hs.joinedRooms(BOT)).toEqual([roomId]);
    const s2 = await sync(BOT, { since: s1.next_batch });
    expect(s2.rooms.invite).toEqual({});
    const section = s2.rooms.join[roomId]!;
    expect(section.timeline.limited).toBe(true); // newly joined (Synapse)
    expect(section.timeline.events.at(-1)).toMatchObject({ type: "m.room.member", state_key: BOT, content: { membership: "join" } });
    expect(bodies(section.timeline.events)).toEqual(["history"]); // history visibility "shared"
    // State + timeline give the whole room; an event is in one of them, never both.
    const all = [...section.state.events, ...section.timeline.events];
    expect(new Set(all.map((e) => e.event_id)).size).toBe(all.length);
    const members = Object.fromEntries(all.filter((e) => e.type === "m.room.member").map((e) => [e.state_key, e.content.membership]));
    expect(members).toEqual({ [ALICE]: "join", [BOB]: "join", [BOT]: "join" });
    expect(section.state.events.map((e) => e.state_key)).toEqual([BOB]); // the creation-time membership
    expect(all.some((e) => e.type === "m.room.create")).toBe(true);
    // Kicked: shown once in rooms.leave, with the kick in the timeline.
    await call("POST", room(roomId, "/kick"), { as: ALICE, body: { user_id: BOT, reason: "out" } });
    hs.sendMessage(roomId, ALICE, "after the kick");
    const s3 = await sync(BOT, { since: s2.next_batch });
    expect(s3.rooms.join).toEqual({});
    const left = s3.rooms.leave[roomId]!;
    expect(left.timeline.events.at(-1)).toMatchObject({ type: "m.room.member", state_key: BOT, sender: ALICE, content: { membership: "leave", reason: "out" } });
    expect(bodies(left.timeline.events)).toEqual([]);
    expect((await sync(BOT, { since: s3.next_batch, timeout: 0 })).rooms.leave).toEqual({});
    // An initial sync lists left rooms only with include_leave.
    expect((await sync(BOT)).rooms.leave).toEqual({});
    const withLeave = await sync(BOT, { filter: JSON.stringify({ room: { include_leave: true } }) });
    expect(Object.keys(withLeave.rooms.leave)).toEqual([roomId]);
  });

  it("validates its query parameters like Synapse", async () => {
    expectError(await call("GET", v3("/sync?timeout=soon"), { as: BOT }), 400, "M_INVALID_PARAM", "Query parameter timeout must be an integer");
    expectError(await call("GET", v3("/sync?timeout=-1"), { as: BOT }), 400, "M_INVALID_PARAM");
    expectError(await call("GET", v3("/sync?full_state=yes"), { as: BOT }), 400, "M_INVALID_PARAM", "Boolean query parameter 'full_state' must be one of ['true', 'false']");
    expectError(await call("GET", v3("/sync?set_presence=away"), { as: BOT }), 400, "M_INVALID_PARAM");
    expectError(await call("GET", v3("/sync?since=bogus"), { as: BOT }), 400, "M_INVALID_PARAM", "Invalid stream token");
    expectError(await call("GET", v3("/sync?from=s1"), { as: BOT }), 400, "M_UNKNOWN");
    expectError(await call("GET", v3("/sync")), 401, "M_MISSING_TOKEN");
    for (const presence of ["online", "offline", "unavailable"]) expect((await call("GET", v3(`/sync?set_presence=${presence}`), { as: BOT })).status).toBe(200);
  });
});

describe("filters", () => {
  it("uploads filters (ids from 0, identical ones shared, timeline limit capped at 100) and reads them back", async () => {
    const path = v3(`/user/${encodeURIComponent(BOT)}/filter`);
    const f1 = await call<{ filter_id: string }>("POST", path, { as: BOT, body: { room: { timeline: { limit: 500 } } } });
    expect(f1.body).toEqual({ filter_id: "0" });
    const same = await call<{ filter_id: string }>("POST", path, { as: BOT, body: { room: { timeline: { limit: 500 } } } });
    expect(same.body.filter_id).toBe("0");
    const f2 = await call<{ filter_id: string }>("POST", path, { as: BOT, body: { presence: { not_types: ["*"] } } });
    expect(f2.body.filter_id).toBe("1");
    const got = await call("GET", `${path}/0`, { as: BOT });
    expect(got.body).toEqual({ room: { timeline: { limit: 100 } } });
    expectError(await call("GET", `${path}/7`, { as: BOT }), 404, "M_NOT_FOUND", "No such filter");
    expectError(await call("GET", `${path}/abc`, { as: BOT }), 400, "M_UNKNOWN", "Invalid filter_id");
    expectError(await call("GET", `${path}/0`, { as: ALICE }), 403, "M_FORBIDDEN", "Cannot get filters for other users");
    expectError(await call("POST", path, { as: ALICE, body: {} }), 403, "M_FORBIDDEN", "Cannot create filters for other users");
    expectError(await call("POST", path, { as: BOT, body: { room: { timeline: { limit: "ten" } } } }), 400, "M_UNKNOWN", "'ten' is not of type 'number'");
    expectError(await call("POST", path, { as: BOT, body: { room: { timeline: { senders: ["bob"] } } } }), 400, "M_UNKNOWN");
    expectError(await call("POST", path, { as: BOT, raw: "[1]" }), 400, "M_BAD_JSON");
  });

  it("applies an uploaded filter by id and an inline JSON filter; refuses unknown and malformed ones", async () => {
    const roomId = sharedRoom();
    for (let i = 0; i < 5; i++) hs.sendMessage(roomId, i % 2 === 0 ? ALICE : BOB, `m${i}`);
    hs.sendReaction(roomId, BOB, hs.messages(roomId)[0]!.eventId, "✅");
    const id = (await call<{ filter_id: string }>("POST", v3(`/user/${encodeURIComponent(BOT)}/filter`), { as: BOT, body: { room: { timeline: { limit: 2 } } } })).body.filter_id;
    const byId = (await sync(BOT, { filter: id })).rooms.join[roomId]!;
    expect(byId.timeline.events).toHaveLength(2);
    expect(byId.timeline.limited).toBe(true);
    const onlyMessages = (await sync(BOT, { filter: JSON.stringify({ room: { timeline: { types: ["m.room.*"], not_types: ["m.room.member", "m.room.create", "m.room.power_levels", "m.room.join_rules"] } } }) })).rooms.join[roomId]!;
    expect(onlyMessages.timeline.events.map((e) => e.type)).toEqual(Array(5).fill("m.room.message"));
    const notBob = (await sync(BOT, { filter: JSON.stringify({ room: { timeline: { not_senders: [BOB], types: ["m.room.message"] } } }) })).rooms.join[roomId]!;
    expect(bodies(notBob.timeline.events)).toEqual(["m0", "m2", "m4"]);
    const noRooms = await sync(BOT, { filter: JSON.stringify({ room: { not_rooms: [roomId] } }) });
    expect(noRooms.rooms.join).toEqual({});
    expectError(await call("GET", v3(`/sync?filter=${encodeURIComponent("{nope")}`), { as: BOT }), 400, "M_NOT_JSON", "Invalid filter JSON");
    expectError(await call("GET", v3("/sync?filter=42"), { as: BOT }), 400, "M_INVALID_PARAM", "No such filter");
    expectError(await call("GET", v3("/sync?filter=abc"), { as: BOT }), 400, "M_INVALID_PARAM", "Invalid filter ID");
    expectError(await call("GET", v3(`/sync?filter=${encodeURIComponent('{"room":{"include_leave":"yes"}}')}`), { as: BOT }), 400, "M_UNKNOWN");
  });

  it("lazy-loads members and keeps only the event_fields asked for", async () => {
    const roomId = hs.createRoom({ creator: ALICE, members: { [BOT]: "join", [BOB]: "join", [CAROL]: "join" } });
    hs.sendMessage(roomId, BOB, "only bob speaks");
    const lazy = (await sync(BOT, { filter: JSON.stringify({ room: { timeline: { types: ["m.room.message"] }, state: { lazy_load_members: true } } }) })).rooms.join[roomId]!;
    expect(lazy.state.events.filter((e) => e.type === "m.room.member").map((e) => e.state_key).sort()).toEqual([BOB, BOT].sort());
    expect(lazy.state.events.some((e) => e.type === "m.room.power_levels")).toBe(true);
    const slim = (await sync(BOT, { filter: JSON.stringify({ event_fields: ["type", "content.body"], room: { timeline: { types: ["m.room.message"] } } }) })).rooms.join[roomId]!;
    expect(slim.timeline.events).toEqual([{ type: "m.room.message", content: { body: "only bob speaks" } }]);
  });
});

describe("sending events", () => {
  it("stores m.room.message and m.reaction in the timeline, once per (access token, txn id)", async () => {
    const roomId = sharedRoom();
    const since = (await sync(BOT)).next_batch;
    const body = { msgtype: "m.text", body: "hi" };
    const first = await call<{ event_id: string }>("PUT", room(roomId, "/send/m.room.message/t1"), { as: ALICE, body });
    const again = await call<{ event_id: string }>("PUT", room(roomId, "/send/m.room.message/t1"), { as: ALICE, body });
    expect(again.body.event_id).toBe(first.body.event_id);
    // Another access token of the same user is another transaction scope.
    const secondDevice = hs.registerUser(ALICE);
    const other = await call<{ event_id: string }>("PUT", room(roomId, "/send/m.room.message/t1"), { token: secondDevice, body });
    expect(other.body.event_id).not.toBe(first.body.event_id);
    const reaction = { "m.relates_to": { rel_type: "m.annotation", event_id: first.body.event_id, key: "👍" } };
    const r = await call<{ event_id: string }>("PUT", room(roomId, "/send/m.reaction/t2"), { as: BOB, body: reaction });
    expect(r.status).toBe(200);
    expectError(await call("PUT", room(roomId, "/send/m.reaction/t3"), { as: BOB, body: reaction }), 400, "M_DUPLICATE_ANNOTATION", "Can't send same reaction twice");
    const unknown = { "m.relates_to": { rel_type: "m.annotation", event_id: "$nope", key: "👍" } };
    expectError(await call("PUT", room(roomId, "/send/m.reaction/t4"), { as: BOB, body: unknown }), 400, "M_UNKNOWN", "Can't send relation to unknown event");
    const noKey = { "m.relates_to": { rel_type: "m.annotation", event_id: first.body.event_id } };
    expectError(await call("PUT", room(roomId, "/send/m.reaction/t5"), { as: BOB, body: noKey }), 400, "M_UNKNOWN", "Missing aggregation key");
    expect(hs.messages(roomId).map((m) => [m.type, m.sender, m.eventId])).toEqual([
      ["m.room.message", ALICE, first.body.event_id],
      ["m.room.message", ALICE, other.body.event_id],
      ["m.reaction", BOB, r.body.event_id],
    ]);
    // The sender's own token sees its transaction id; others do not.
    const aliceView = (await sync(ALICE, { since })).rooms.join[roomId]!.timeline.events;
    expect(aliceView[0]!.unsigned?.transaction_id).toBe("t1");
    expect(aliceView[1]!.unsigned?.transaction_id).toBeUndefined();
    const botView = (await sync(BOT, { since })).rooms.join[roomId]!.timeline.events;
    expect(botView.map((e) => e.type)).toEqual(["m.room.message", "m.room.message", "m.reaction"]);
    expect(botView.every((e) => e.unsigned?.transaction_id === undefined)).toBe(true);
  });

  it("refuses an event over 65,536 bytes of PDU JSON with 413 M_TOO_LARGE, as Synapse does", async () => {
    const roomId = sharedRoom();
    const ok = await call("PUT", room(roomId, "/send/m.room.message/big1"), { as: ALICE, body: { msgtype: "m.text", body: "x".repeat(64_000) } });
    expect(ok.status).toBe(200);
    const tooBig = await call("PUT", room(roomId, "/send/m.room.message/big2"), { as: ALICE, body: { msgtype: "m.text", body: "x".repeat(65_536) } });
    expectError(tooBig, 413, "M_TOO_LARGE", "event too large");
    // Bytes count, not characters: 22,000 × "€" is 66,000 bytes.
    expectError(await call("PUT", room(roomId, "/send/m.room.message/big3"), { as: ALICE, body: { msgtype: "m.text", body: "€".repeat(22_000) } }), 413, "M_TOO_LARGE");
    // Size is checked before membership (Synapse: state-independent auth rules first).
    expectError(await call("PUT", room(roomId, "/send/m.room.message/big4"), { as: CAROL, body: { msgtype: "m.text", body: "x".repeat(70_000) } }), 413, "M_TOO_LARGE");
    expectError(await call("PUT", room(roomId, "/state/m.room.topic/"), { as: ALICE, body: { topic: "x".repeat(70_000) } }), 413, "M_TOO_LARGE");
    expect(hs.messages(roomId)).toHaveLength(1);
    expect(() => hs.sendMessage(roomId, ALICE, "y".repeat(70_000))).toThrow(/413 M_TOO_LARGE event too large/);
    expect(() => hs.sendMessage(roomId, CAROL, "not a member")).toThrow(/403 M_FORBIDDEN/);
  });
});

describe("other endpoints a bot uses", () => {
  it("m.room.encryption state: 404 M_NOT_FOUND in a plain room, present in an encrypted one", async () => {
    const plain = sharedRoom();
    const encrypted = sharedRoom({ encrypted: true });
    expectError(await call("GET", room(plain, "/state/m.room.encryption/"), { as: BOT }), 404, "M_NOT_FOUND");
    const a = await call("GET", room(encrypted, "/state/m.room.encryption/"), { as: BOT });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ algorithm: "m.megolm.v1.aes-sha2" });
    // A user's message in an encrypted room arrives encrypted: a bot without E2EE cannot read it.
    hs.sendMessage(encrypted, ALICE, "secret command");
    const [m] = hs.messages(encrypted);
    expect(m!.type).toBe("m.room.encrypted");
    expect(m!.content).toMatchObject({ algorithm: "m.megolm.v1.aes-sha2", ciphertext: expect.any(String) });
    expect(JSON.stringify(m!.content)).not.toContain("secret");
  });

  it("profiles: the localpart by default, 404 for unknown users, PUT displayname updates joined rooms", async () => {
    const roomId = sharedRoom();
    expect((await call("GET", v3(`/profile/${encodeURIComponent(BOT)}`))).body).toEqual({ displayname: "bot" });
    expect((await call("GET", v3(`/profile/${encodeURIComponent(BOT)}/displayname`))).body).toEqual({ displayname: "bot" });
    expectError(await call("GET", v3(`/profile/${encodeURIComponent("@nobody:example.org")}`)), 404, "M_NOT_FOUND", "Profile was not found");
    expectError(await call("GET", v3("/profile/not-a-user")), 400, "M_INVALID_PARAM");
    const since = (await sync(ALICE)).next_batch;
    expect((await call("PUT", v3(`/profile/${encodeURIComponent(BOT)}/displayname`), { as: BOT, body: { displayname: "Group Sync" } })).status).toBe(200);
    expect((await call("GET", v3(`/profile/${encodeURIComponent(BOT)}`))).body).toEqual({ displayname: "Group Sync" });
    const events = (await sync(ALICE, { since })).rooms.join[roomId]!.timeline.events;
    expect(events).toEqual([expect.objectContaining({ type: "m.room.member", state_key: BOT, content: { membership: "join", displayname: "Group Sync" } })]);
    expectError(await call("PUT", v3(`/profile/${encodeURIComponent(BOT)}/displayname`), { as: ALICE, body: { displayname: "x" } }), 400, "M_FORBIDDEN");
  });

  it("account data: 404 until set, then served and synced; other users refused", async () => {
    const path = v3(`/user/${encodeURIComponent(BOT)}/account_data/org.example.state`);
    expectError(await call("GET", path, { as: BOT }), 404, "M_NOT_FOUND", "Account data not found");
    expectError(await call("GET", path, { as: ALICE }), 403, "M_FORBIDDEN", "Cannot get account data for other users.");
    const since = (await sync(BOT)).next_batch;
    expect((await call("PUT", path, { as: BOT, body: { last: 3 } })).status).toBe(200);
    expect((await call("GET", path, { as: BOT })).body).toEqual({ last: 3 });
    expect((await sync(BOT, { since })).account_data.events).toEqual([{ type: "org.example.state", content: { last: 3 } }]);
    expect((await sync(BOT)).account_data.events).toEqual([{ type: "org.example.state", content: { last: 3 } }]);
  });

  it("serves one event, and stores read receipts", async () => {
    const roomId = sharedRoom();
    const id = hs.sendMessage(roomId, ALICE, "read me");
    const ev = await call<ClientEvent>("GET", room(roomId, `/event/${encodeURIComponent(id)}`), { as: BOT });
    expect(ev.body).toMatchObject({ event_id: id, room_id: roomId, sender: ALICE, type: "m.room.message", content: { body: "read me" } });
    expectError(await call("GET", room(roomId, "/event/%24nope"), { as: BOT }), 404, "M_NOT_FOUND");
    expectError(await call("GET", room(roomId, `/event/${encodeURIComponent(id)}`), { as: CAROL }), 403, "M_FORBIDDEN");
    expect((await call("POST", room(roomId, `/receipt/m.read/${encodeURIComponent(id)}`), { as: BOT, body: {} })).status).toBe(200);
    expect(hs.readReceipts(roomId)).toEqual({ [BOT]: { "m.read": id } });
    expectError(await call("POST", room(roomId, `/receipt/m.unread/${encodeURIComponent(id)}`), { as: BOT, body: {} }), 400, "M_UNKNOWN");
  });
});

describe("test helpers", () => {
  it("messages() filters by sender and since; waitForMessage() resolves on a match and explains a timeout", async () => {
    const roomId = sharedRoom();
    const a = hs.sendMessage(roomId, ALICE, "one");
    hs.sendMessage(roomId, BOB, "two", { msgtype: "m.notice", formattedBody: "<b>two</b>" });
    expect(hs.messages(roomId, { sender: BOB })).toEqual([
      { eventId: expect.any(String), sender: BOB, type: "m.room.message", content: { msgtype: "m.notice", body: "two", format: "org.matrix.custom.html", formatted_body: "<b>two</b>" } },
    ]);
    expect(hs.messages(roomId, { since: a }).map((m) => m.content.body)).toEqual(["two"]);
    expect(() => hs.messages(roomId, { since: "$missing" })).toThrow(/no event/);
    // Already sent, found through `since`.
    await expect(hs.waitForMessage(roomId, (m) => m.content.body === "two", 100, { since: a })).resolves.toMatchObject({ sender: BOB });
    const waiting = hs.waitForMessage(roomId, (m) => m.sender === BOT, 2000);
    setTimeout(() => hs.sendMessage(roomId, BOT, "reply"), 20);
    await expect(waiting).resolves.toMatchObject({ sender: BOT, content: { body: "reply" } });
    const failing = hs.waitForMessage(roomId, (m: FakeMessage) => m.content.body === "never", 150);
    hs.sendMessage(roomId, ALICE, "something else");
    await expect(failing).rejects.toThrow(/no matching event .* within 150 ms\. Sent meanwhile \(1\):\n {2}\$\S+ @alice:example.org m.room.message "something else"/);
    expect(hs.joinedRooms(BOT)).toEqual([roomId]);
    expect(hs.joinedRooms(CAROL)).toEqual([]);
  });

  it("close() ends pending long-polls at once and rejects pending waits", async () => {
    const roomId = sharedRoom();
    const since = (await sync(BOT)).next_batch;
    const poll = call("GET", v3(`/sync?since=${since}&timeout=30000`), { as: BOT }).then(
      (a) => a.status,
      () => "closed",
    );
    await vi.waitFor(() => expect(hs.pendingLongPolls(BOT)).toBe(1));
    const waiting = expect(hs.waitForMessage(roomId, () => true, 30_000)).rejects.toThrow("FakeHomeserver closed");
    const idle = expect(hs.waitForSyncIdle(CAROL, 30_000)).rejects.toThrow("FakeHomeserver closed");
    const started = performance.now();
    await hs.close();
    expect(performance.now() - started).toBeLessThan(1000);
    await waiting;
    await idle;
    expect(await poll).toEqual(expect.anything());
    expect(performance.now() - started).toBeLessThan(2000);
    expect(hs.pendingLongPolls()).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// The real matrix-bot-sdk 0.7.1 client.

interface RawEvent {
  event_id: string;
  sender: string;
  type: string;
  content: { body?: string; membership?: string };
}

describe("matrix-bot-sdk 0.7.1 MatrixClient against the test homeserver", () => {
  const logs: string[] = [];
  const clients: MatrixClient[] = [];

  beforeEach(() => {
    logs.length = 0;
    const sink =
      (level: string) =>
      (module: string, ...parts: unknown[]): void => {
        logs.push(`${level} ${module} ${parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" ")}`);
      };
    LogService.setLogger({ info: sink("info"), warn: sink("warn"), error: sink("error"), debug: sink("debug"), trace: sink("trace") });
    LogService.setLevel(LogLevel.DEBUG);
  });

  afterEach(() => {
    for (const c of clients.splice(0)) c.stop();
  });

  function botClient(storage = new MemoryStorageProvider()): { client: MatrixClient; messages: RawEvent[] } {
    const client = new MatrixClient(hs.url, tokens[BOT]!, storage);
    clients.push(client);
    const messages: RawEvent[] = [];
    client.on("room.message", (_roomId: string, event: RawEvent) => {
      messages.push(event);
    });
    return { client, messages };
  }

  it("delivers every new message exactly once — and, on the first sync, the recent ones from before start", async () => {
    const roomId = sharedRoom();
    const before: string[] = [];
    for (let i = 0; i < 12; i++) before.push(hs.sendMessage(roomId, ALICE, `old ${i}`));
    const { client, messages } = botClient();
    await client.start();
    await hs.waitForSyncIdle(BOT);
    // 0.7.1 emits "room.message" for the initial sync's timeline: the last 10 events from before start.
    expect(messages.map((e) => e.event_id)).toEqual(before.slice(2));
    messages.length = 0;
    const after: string[] = [];
    for (let i = 0; i < 3; i++) {
      after.push(hs.sendMessage(roomId, i === 1 ? BOB : ALICE, `new ${i}`));
      await hs.waitForSyncIdle(BOT);
    }
    after.push(hs.sendMessage(roomId, ALICE, "burst a"), hs.sendMessage(roomId, BOB, "burst b"));
    await hs.waitForSyncIdle(BOT);
    expect(messages.map((e) => e.event_id)).toEqual(after);
    expect(messages.map((e) => e.content.body)).toEqual(["new 0", "new 1", "new 2", "burst a", "burst b"]);
    // The endpoints the client used to start and sync.
    const used = hs.requestLog().map((e) => `${e.method} ${e.path}${e.query.replace(/since=s\d+/, "since=<token>")}`);
    expect(used.slice(0, 5)).toEqual([
      "GET /_matrix/client/v3/account/whoami",
      `GET /_matrix/client/v3/user/${encodeURIComponent(BOT)}/account_data/m.direct`,
      "GET /_matrix/client/v3/joined_rooms",
      "GET /_matrix/client/v3/sync?full_state=false&timeout=30000",
      "GET /_matrix/client/v3/sync?full_state=false&timeout=30000&since=<token>",
    ]);
    expect(new Set(used.slice(5))).toEqual(new Set(["GET /_matrix/client/v3/sync?full_state=false&timeout=30000&since=<token>"]));
  });

  it("skips the history when started from a fresh sync token", async () => {
    const roomId = sharedRoom();
    hs.sendMessage(roomId, ALICE, "!do-something-old");
    const light = JSON.stringify({ room: { timeline: { limit: 0 }, state: { types: [] } }, presence: { not_types: ["*"] }, account_data: { not_types: ["*"] } });
    const storage = new MemoryStorageProvider();
    storage.setSyncToken((await sync(BOT, { filter: light })).next_batch);
    const { client, messages } = botClient(storage);
    await client.start();
    await hs.waitForSyncIdle(BOT);
    const fresh = hs.sendMessage(roomId, ALICE, "!do-something-new");
    await hs.waitForSyncIdle(BOT);
    expect(messages.map((e) => e.event_id)).toEqual([fresh]);
  });

  it("uploads its filter and syncs with it", async () => {
    const roomId = sharedRoom();
    const { client, messages } = botClient();
    await client.start({ room: { timeline: { types: ["m.room.message"] } }, presence: { not_types: ["*"] } });
    await hs.waitForSyncIdle(BOT);
    hs.sendReaction(roomId, ALICE, hs.sendMessage(roomId, ALICE, "hi"), "👋");
    await hs.waitForSyncIdle(BOT);
    expect(messages.map((e) => e.content.body)).toEqual(["hi"]);
    const log = hs.requestLog();
    expect(log.some((e) => e.method === "POST" && e.path === v3(`/user/${encodeURIComponent(BOT)}/filter`) && e.status === 200)).toBe(true);
    expect(log.filter((e) => e.kind === "sync").every((e) => e.query.includes("filter=0"))).toBe(true);
  });

  it("emits room.invite, joins with joinRoom, then emits room.join and the new room's messages", async () => {
    const { client, messages } = botClient();
    const invites: { roomId: string; event: RawEvent }[] = [];
    const joins: string[] = [];
    client.on("room.invite", (roomId: string, event: RawEvent) => {
      invites.push({ roomId, event });
    });
    client.on("room.join", (roomId: string) => {
      joins.push(roomId);
    });
    await client.start();
    await hs.waitForSyncIdle(BOT);
    const roomId = hs.createRoom({ creator: ALICE, name: "Management" });
    await call("POST", room(roomId, "/invite"), { as: ALICE, body: { user_id: BOT } });
    await hs.waitForSyncIdle(BOT);
    expect(invites).toHaveLength(1);
    expect(invites[0]).toMatchObject({ roomId, event: { sender: ALICE, type: "m.room.member", content: { membership: "invite" } } });
    expect(await client.joinRoom(roomId)).toBe(roomId);
    await hs.waitForSyncIdle(BOT);
    expect(joins).toEqual([roomId]);
    expect(hs.members(roomId)[BOT]).toBe("join");
    const hello = hs.sendMessage(roomId, ALICE, "hello bot");
    await hs.waitForSyncIdle(BOT);
    expect(messages.map((e) => e.event_id)).toEqual([hello]);
    expect(invites).toHaveLength(1);
    expect(joins).toEqual([roomId]);
    // A kick reaches the client as room.leave.
    const leaves: { roomId: string; event: RawEvent }[] = [];
    client.on("room.leave", (rid: string, event: RawEvent) => {
      leaves.push({ roomId: rid, event });
    });
    await call("POST", room(roomId, "/kick"), { as: ALICE, body: { user_id: BOT, reason: "done" } });
    await hs.waitForSyncIdle(BOT);
    expect(leaves).toEqual([{ roomId, event: expect.objectContaining({ sender: ALICE, content: { membership: "leave", reason: "done" } }) }]);
  });

  it("replies with sendMessage / sendHtmlNotice / replyNotice, visible in messages() — and sees its own replies", async () => {
    const roomId = sharedRoom();
    const { client, messages } = botClient();
    client.on("room.message", (rid: string, event: RawEvent) => {
      if (event.sender === BOT || event.content.body !== "!ping") return;
      void (async () => {
        await client.replyNotice(rid, event, "pong");
        await client.sendHtmlNotice(rid, "<b>done</b>");
        await client.sendMessage(rid, { msgtype: "m.text", body: "plain" });
      })();
    });
    await client.start();
    await hs.waitForSyncIdle(BOT);
    const command = hs.sendMessage(roomId, ALICE, "!ping");
    await hs.waitForMessage(roomId, (m) => m.sender === BOT && m.content.body === "plain", 5000, { since: command });
    const replies = hs.messages(roomId, { sender: BOT, since: command });
    expect(replies.map((m) => m.content.msgtype)).toEqual(["m.notice", "m.notice", "m.text"]);
    expect(replies[0]!.content).toMatchObject({ "m.relates_to": { "m.in_reply_to": { event_id: command } } });
    expect(String(replies[0]!.content.body)).toContain("pong");
    expect(replies[1]!.content).toMatchObject({ body: "done", format: "org.matrix.custom.html", formatted_body: "<b>done</b>" });
    await hs.waitForSyncIdle(BOT);
    // Synapse sends a client its own events too: the handler must skip them.
    expect(messages.filter((e) => e.sender === BOT).map((e) => e.event_id)).toEqual(replies.map((m) => m.eventId));
  });

  it("sees an encrypted management room's messages only as m.room.encrypted events", async () => {
    const roomId = sharedRoom({ encrypted: true });
    const { client, messages } = botClient();
    const events: RawEvent[] = [];
    client.on("room.event", (_rid: string, event: RawEvent) => {
      events.push(event);
    });
    await client.start();
    await hs.waitForSyncIdle(BOT);
    expect(await client.getRoomStateEvent(roomId, "m.room.encryption", "")).toEqual({ algorithm: "m.megolm.v1.aes-sha2" });
    events.length = 0;
    hs.sendMessage(roomId, ALICE, "!status");
    await hs.waitForSyncIdle(BOT);
    expect(messages).toEqual([]);
    expect(events.map((e) => e.type)).toEqual(["m.room.encrypted"]);
  });

  it("leaves nothing running after stop() and close()", async () => {
    const tcp = (): number => process.getActiveResourcesInfo().filter((r) => r.startsWith("TCP")).length;
    const roomId = sharedRoom();
    const { client } = botClient();
    await client.start();
    await hs.waitForSyncIdle(BOT);
    hs.sendMessage(roomId, ALICE, "one more");
    await hs.waitForSyncIdle(BOT);
    client.stop();
    // stop() only sets a flag: the long-poll it has open stays open until the server answers it.
    expect(hs.pendingLongPolls(BOT)).toBe(1);
    const syncs = hs.requestLog().filter((e) => e.kind === "sync").length;
    const started = performance.now();
    await hs.close();
    expect(performance.now() - started).toBeLessThan(1000);
    expect(hs.pendingLongPolls()).toBe(0);
    await vi.waitFor(() => expect(logs.some((l) => l.includes("Client stop requested"))).toBe(true));
    await vi.waitFor(() => expect(tcp()).toBe(0));
    await sleep(50);
    expect(hs.requestLog().filter((e) => e.kind === "sync")).toHaveLength(syncs);
    expect(logs.filter((l) => l.startsWith("error") && !l.includes("M_NOT_FOUND"))).toEqual([]);
  });
});
