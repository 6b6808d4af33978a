/**
 * `Retry-After` in both its forms (seconds, HTTP-date) is honoured by the homeserver gateway,
 * the Synapse and MAS admin API backends and the Graph provider; a wait longer than the cap
 * (homeserver.maxRetryWaitMs, 5 minutes by default) fails the request at once with words that
 * say so, instead of sleeping for hours. The clock and the sleep are injected: a date answer
 * gives an exact wait, and the waits are observed without waiting.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Clock } from "../../src/clock.ts";
import { AzureIdentityProvider } from "../../src/idp/azure.ts";
import { silentLogger } from "../../src/log.ts";
import { createBotSdkGateway } from "../../src/matrix/bot-sdk-gateway.ts";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import { createMasTokenBackend } from "../../src/tokens/mas.ts";
import { createSynapseTokenBackend } from "../../src/tokens/synapse.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { FakeMas } from "../fakes/mas.ts";
import { GraphServer, guid } from "../graph/graph-server.ts";
import { azureSettings } from "../graph/azure-settings.ts";

const BOT = "@bot:example.org";
/** Our clock, and the date the servers name relative to it. */
const NOW = new Date("2026-03-01T12:00:00Z");
const clock: Clock = { now: () => NOW };
const httpDate = (offsetMs: number): string => new Date(NOW.getTime() + offsetMs).toUTCString();
const THREE_HOURS = 3 * 3_600_000;

let waits: number[];
const sleep = (ms: number): Promise<void> => {
  waits.push(ms);
  return Promise.resolve();
};

beforeEach(() => {
  waits = [];
});

describe("the homeserver gateway", () => {
  let hs: FakeHomeserver;
  let token: string;

  beforeEach(async () => {
    hs = await FakeHomeserver.start({ serverName: "example.org" });
    token = hs.registerUser(BOT);
  });

  afterEach(async () => {
    await hs.close();
  });

  const gateway = (extra: { maxRetryWaitMs?: number } = {}): ReturnType<typeof createBotSdkGateway> =>
    createBotSdkGateway({ homeserverUrl: hs.url, accessToken: token, requestTimeoutMs: 10_000, maxRetries: 3, log: silentLogger, sleep, clock, ...extra });

  it("waits until the HTTP-date Retry-After names, by its clock, and retries", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    hs.rateLimit({ count: 1, retryAfterMs: 0, endpoints: ["invite"], headerText: httpDate(7_000), body: false });
    const r = await gateway().invite(roomId, "@new:example.org" as UserId);
    expect(r.ok).toBe(true);
    expect(waits).toEqual([7_000]);
    expect(hs.members(roomId)["@new:example.org"]).toBe("invite");
  });

  it("a date in the past means no wait", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    hs.rateLimit({ count: 1, retryAfterMs: 0, endpoints: ["state"], headerText: httpDate(-60_000), body: false });
    expect((await gateway().readRoom(roomId)).ok).toBe(true);
    expect(waits).toEqual([0]);
  });

  it("a wait longer than the cap fails the request at once, saying so; nothing is retried", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    hs.rateLimit({ count: 1, retryAfterMs: THREE_HOURS, endpoints: ["invite"] });
    const before = hs.requestCounts().invite;
    const r = await gateway().invite(roomId, "@late:example.org" as UserId);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.message).toBe(
        `inviting @late:example.org to ${roomId}: the homeserver asked to wait 3 h before retrying (Retry-After), longer than homeserver.maxRetryWaitMs (5 min): not retried`,
      );
      expect(r.error.code).toBe("M_LIMIT_EXCEEDED");
    }
    expect(waits).toEqual([]);
    expect(hs.requestCounts().invite).toBe(before + 1);
    expect(hs.members(roomId)["@late:example.org"]).toBeUndefined();
  });

  it("the cap is the configured one, for a date too", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    hs.rateLimit({ count: 1, retryAfterMs: 0, endpoints: ["state"], headerText: httpDate(90_000), body: false });
    const r = await gateway({ maxRetryWaitMs: 60_000 }).readRoom(roomId);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toMatch(/asked to wait 90 s before retrying \(Retry-After\), longer than homeserver\.maxRetryWaitMs \(60 s\): not retried$/);
    expect(waits).toEqual([]);
  });
});

describe("the Synapse admin API", () => {
  let hs: FakeHomeserver;
  let token: string;

  beforeEach(async () => {
    hs = await FakeHomeserver.start({ serverName: "example.org" });
    token = hs.registerUser("@admin:example.org", undefined, { admin: true });
  });

  afterEach(async () => {
    await hs.close();
  });

  const backend = (): ReturnType<typeof createSynapseTokenBackend> =>
    createSynapseTokenBackend({ homeserverUrl: hs.url, accessToken: token, timeoutMs: 10_000, maxRetries: 3, sleep, clock });
  const limited = { errcode: "M_LIMIT_EXCEEDED", error: "Too Many Requests" };

  it("a 429 with an HTTP-date and a 503 with seconds are waited out and retried; the token is created once", async () => {
    hs.failNext("admin_registration_tokens", 1, 429, limited, { "Retry-After": httpDate(4_000) });
    hs.failNext("admin_registration_tokens", 1, 503, "Service Unavailable", { "Retry-After": "2" });
    const r = await backend().create({ token: "abc", usesAllowed: 1, expiresAt: null });
    expect(r.ok).toBe(true);
    expect(waits).toEqual([4_000, 2_000]);
    const list = await backend().list("all");
    expect(list.ok && list.value.map((t) => t.token)).toEqual(["abc"]);
  });

  it("gives up after the retry budget, and at once on a wait over the cap", async () => {
    hs.failNext("admin_registration_tokens", 4, 429, limited, { "Retry-After": "1" }); // the first try and 3 retries
    const r = await backend().list("all");
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toBe(`Synapse admin API: ${hs.url} still answered 429 (rate limited) after 3 retries`);
    expect(waits).toEqual([1_000, 1_000, 1_000]);

    waits = [];
    hs.failNext("admin_registration_tokens", 10, 503, "Service Unavailable", { "Retry-After": httpDate(THREE_HOURS) });
    const capped = await createSynapseTokenBackend({
      homeserverUrl: hs.url,
      accessToken: token,
      timeoutMs: 10_000,
      maxRetries: 3,
      maxRetryWaitMs: 300_000,
      sleep,
      clock,
    }).list("all");
    expect(capped.ok).toBe(false);
    if (!capped.ok) {
      expect(capped.error.message).toBe(
        `Synapse admin API: ${hs.url} asked to wait 3 h before retrying (Retry-After), longer than homeserver.maxRetryWaitMs (5 min): not retried`,
      );
    }
    expect(waits).toEqual([]);
  });
});

describe("the MAS admin API", () => {
  const CLIENT = "01JAAAAAAAAAAAAAAAAAAAAAAA";
  const SECRET = "mas-secret";
  let mas: FakeMas;

  beforeEach(async () => {
    mas = await FakeMas.start();
    mas.addClient({ clientId: CLIENT, clientSecret: SECRET, admin: true });
  });

  afterEach(async () => {
    await mas.close();
  });

  it("a 503 with Retry-After at the token endpoint and at the admin API is waited out and retried", async () => {
    mas.failNext("token", 1, { status: 503, headers: { "Retry-After": "3" } });
    mas.failNext("admin", 1, { status: 429, text: "Too Many Requests", headers: { "Retry-After": httpDate(5_000) } });
    const backend = createMasTokenBackend({ url: mas.url, clientId: CLIENT, clientSecret: SECRET, timeoutMs: 10_000, clock, sleep, maxRetries: 3 });
    const r = await backend.create({ token: "mas-token", usesAllowed: null, expiresAt: null });
    expect(r.ok).toBe(true);
    expect(waits).toEqual([3_000, 5_000]);
    expect(mas.faultsAnswered()).toBe(2);
    expect(mas.tokens().map((t) => t.token)).toEqual(["mas-token"]);
  });
});

describe("Microsoft Graph", () => {
  const CLIENT = guid(1, 0xc1);
  const SECRET = "graph-secret-value";
  const OPS = guid(10, 0x60);
  let graph: GraphServer;

  beforeEach(async () => {
    graph = await GraphServer.start();
    graph.addApp({ clientId: CLIENT, secret: SECRET, roles: ["GroupMember.Read.All", "User.Read.All", "Group.Read.All"] });
    graph.addUser({ id: guid(20, 0x70), userPrincipalName: "alice@contoso.example", accountEnabled: true });
    graph.addGroup({ id: OPS, displayName: "Ops", members: [guid(20, 0x70)] });
  });

  afterEach(async () => {
    await graph.close();
  });

  const provider = (): AzureIdentityProvider =>
    new AzureIdentityProvider({
      settings: azureSettings(graph, { clientId: CLIENT, secret: SECRET }, { maxRetries: 3 }),
      userAttributes: ["uid"],
      log: silentLogger,
      sleep,
      clock,
    });

  it("reads an HTTP-date Retry-After by the provider's clock", async () => {
    graph.throttle({ count: 1, endpoint: "transitiveMembers", retryAfterText: httpDate(12_000) });
    const r = await provider().snapshot({ isMapped: () => true, explicitGroups: [OPS] });
    expect(r.ok && r.value.groups.get(OPS)?.complete).toBe(true);
    expect(waits).toEqual([12_000]);
  });

  it("a wait over 5 minutes makes the group incomplete at once, saying why", async () => {
    graph.throttle({ count: 1, endpoint: "transitiveMembers", status: 503, retryAfterSeconds: THREE_HOURS / 1000 });
    const r = await provider().snapshot({ isMapped: () => true, explicitGroups: [OPS] });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.groups.get(OPS)?.complete).toBe(false);
    expect(r.value.groups.get(OPS)?.incompleteReason).toBe(
      "Graph (503) asked to wait 3 h before retrying (Retry-After), longer than the limit (5 min): not retried",
    );
    expect(waits).toEqual([]);
  });
});
