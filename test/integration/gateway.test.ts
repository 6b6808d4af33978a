/**
 * The homeserver gateway against the test homeserver: decoding room state, errors turned
 * into values that name the room, and rate limits honoured exactly (the sleep is injected,
 * so the waits are observed without waiting).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/log.ts";
import { createBotSdkGateway } from "../../src/matrix/bot-sdk-gateway.ts";
import type { MatrixGateway } from "../../src/matrix/gateway.ts";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const BOT = "@bot:example.org";
let hs: FakeHomeserver;
let token: string;
let waits: number[];
let gateway: MatrixGateway;

beforeAll(async () => {
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  token = hs.registerUser(BOT);
  waits = [];
  gateway = createBotSdkGateway({
    homeserverUrl: hs.url,
    accessToken: token,
    requestTimeoutMs: 5_000,
    maxRetries: 3,
    log: silentLogger,
    sleep: (ms) => {
      waits.push(ms);
      return Promise.resolve();
    },
  });
});

afterAll(async () => {
  await hs.close();
});

describe("the homeserver gateway", () => {
  it("reads a room in one request: members incl. invites and bans, power levels, v12 creators", async () => {
    const roomId = hs.createRoom({
      creator: "@owner:example.org",
      version: "12",
      additionalCreators: [BOT],
      members: { [BOT]: "join", "@a:example.org": "invite", "@b:example.org": "ban", "@c:example.org": "leave" },
    }) as RoomId;
    hs.resetCounts();
    const r = await gateway.readRoom(roomId);
    expect(hs.totalRequests()).toBe(1);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.roomVersion).toBe("12");
    expect([...r.value.creators].sort()).toEqual(["@bot:example.org", "@owner:example.org"]);
    expect(r.value.members).toEqual({
      "@owner:example.org": "join",
      [BOT]: "join",
      "@a:example.org": "invite",
      "@b:example.org": "ban",
      "@c:example.org": "leave",
    });
    expect(r.value.powerLevels?.users).toEqual({});
  });

  it("resolves aliases, and names an unknown one", async () => {
    const roomId = hs.createRoom({ creator: BOT, alias: "#known:example.org" });
    const r = await gateway.resolveRoom("#known:example.org");
    expect(r).toEqual({ ok: true, value: roomId });
    const missing = await gateway.resolveRoom("#missing:example.org");
    expect(missing.ok).toBe(false);
    if (!missing.ok) expect(missing.error.message).toBe("#missing:example.org: no such room alias on the homeserver");
    const bad = await gateway.resolveRoom("not a room");
    expect(bad.ok).toBe(false);
  });

  it("turns a refusal into a value naming the action, user and room", async () => {
    const roomId = hs.createRoom({ creator: BOT, members: { "@a:example.org": "join" } }) as RoomId;
    const r = await gateway.invite(roomId, "@a:example.org" as UserId);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.message).toContain(`inviting @a:example.org to ${roomId}`);
      expect(r.error.message).toContain("403");
      expect(r.error.code).toBe("M_FORBIDDEN");
    }
  });

  it("waits exactly Retry-After (the header wins over the body) and retries", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    waits = [];
    hs.rateLimit({ count: 2, retryAfterMs: 2_000, endpoints: ["invite"] });
    const r = await gateway.invite(roomId, "@new:example.org" as UserId);
    expect(r.ok).toBe(true);
    expect(waits).toEqual([2_000, 2_000]);
    expect(hs.members(roomId)["@new:example.org"]).toBe("invite");
    expect(hs.appliedChanges().filter((c) => c.roomId === roomId && c.kind === "invite")).toHaveLength(1);
  });

  it("uses retry_after_ms from the body when there is no header", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    waits = [];
    hs.rateLimit({ count: 1, retryAfterMs: 1_234, endpoints: ["state"], header: false });
    expect((await gateway.readRoom(roomId)).ok).toBe(true);
    expect(waits).toEqual([1_234]);
  });

  it("backs off exponentially when the server names no time, and gives up after the budget", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    waits = [];
    hs.rateLimit({ count: 10, retryAfterMs: 0, endpoints: ["kick"], header: false, body: false });
    const r = await gateway.kick(roomId, "@x:example.org" as UserId, "bye");
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/still rate-limited by the homeserver after 3 retries/);
    expect(waits).toEqual([500, 1_000, 2_000]);
  });

  it("once its signal aborts, sends nothing more: a 429 wait is cut short and the retry is never sent", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    const halt = new AbortController();
    const halting = createBotSdkGateway({
      homeserverUrl: hs.url,
      accessToken: token,
      requestTimeoutMs: 5_000,
      maxRetries: 3,
      log: silentLogger,
      signal: halt.signal,
      // the 429 wait never ends by itself: only the abort can end it
      sleep: () => new Promise<void>(() => undefined),
    });
    hs.rateLimit({ count: 1, retryAfterMs: 60_000, endpoints: ["invite"] });
    const before = hs.requestCounts().invite;
    const pending = halting.invite(roomId, "@late:example.org" as UserId);
    while (hs.requestCounts().invite === before) await new Promise((r) => setTimeout(r, 10));
    halt.abort();
    const r = await pending;
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/not sent: this process has stopped acting/);
    const after = await halting.kick(roomId, "@x:example.org" as UserId, "bye");
    expect(after.ok).toBe(false);
    expect(hs.requestCounts().invite).toBe(before + 1); // the 429'd attempt only
    expect(hs.members(roomId)["@late:example.org"]).toBeUndefined();
  });

  it("reports an unknown token clearly", async () => {
    const bad = createBotSdkGateway({ homeserverUrl: hs.url, accessToken: "wrong", requestTimeoutMs: 5_000, maxRetries: 0, log: silentLogger });
    const r = await bad.whoami();
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/M_UNKNOWN_TOKEN/);
  });
});
