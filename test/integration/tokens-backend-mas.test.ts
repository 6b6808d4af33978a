/**
 * The MAS token backend (src/tokens/mas.ts) end to end against the strict MAS stand-in: chosen
 * token strings, partial updates, MAS's own list filters, ULID-looking token strings, status from
 * MAS's `valid`, client_secret_post, a wrong URL said as such, and close() revoking the access
 * token. The end state is read from the stand-in.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Clock } from "../../src/clock.ts";
import { createMasTokenBackend, type MasClientAuth } from "../../src/tokens/mas.ts";
import { describeStatus, tokenStatus, type RegistrationToken, type TokenBackend } from "../../src/tokens/types.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { FakeMas } from "../fakes/mas.ts";

const BASIC_ID = "01J9Z8ZQ5N6M7P8Q9R0S1T2V3W";
const POST_ID = "01J9Z8ZQ5N6M7P8Q9R0S1T2V3Y";
const SECRET = "se+cr/et=with:odd chars";
const T0 = new Date("2026-11-25T12:00:00Z");
const DAY = 86_400_000;

let mas: FakeMas;
/** The stand-in's clock (MAS's) and ours, separately: they need not agree. */
let masNow: Date;
let ourNow: Date;
const ourClock: Clock = { now: () => ourNow };

function backend(opts: { url?: string; clientId?: string; clientAuth?: MasClientAuth } = {}): TokenBackend {
  return createMasTokenBackend({
    url: opts.url ?? mas.url,
    clientId: opts.clientId ?? BASIC_ID,
    clientSecret: SECRET,
    ...(opts.clientAuth !== undefined ? { clientAuth: opts.clientAuth } : {}),
    timeoutMs: 10_000,
    clock: ourClock,
    maxRetries: 0,
  });
}

function value<T>(r: { ok: true; value: T } | { ok: false; error: { message: string } }): T {
  if (!r.ok) throw new Error(`expected success: ${r.error.message}`);
  return r.value;
}

function message(r: { ok: true } | { ok: false; error: { message: string } }): string {
  if (r.ok) throw new Error("expected a failure");
  return r.error.message;
}

beforeEach(async () => {
  masNow = T0;
  ourNow = T0;
  mas = await FakeMas.start({ now: () => masNow });
  mas.addClient({ clientId: BASIC_ID, clientSecret: SECRET, admin: true });
  mas.addClient({ clientId: POST_ID, clientSecret: SECRET, admin: true, authMethod: "client_secret_post" });
});

afterEach(async () => {
  await mas.close();
});

describe("create and update", () => {
  it("creates a token with a chosen string; MAS accepts characters Synapse does not", async () => {
    const b = backend();
    try {
      const made = value(await b.create({ token: "Willkommen, Jürgen!", usesAllowed: 2, expiresAt: new Date(T0.getTime() + 7 * DAY) }));
      expect(made.token).toBe("Willkommen, Jürgen!");
      expect(mas.tokens()).toMatchObject([{ id: made.id, token: "Willkommen, Jürgen!", usageLimit: 2, expiresAt: new Date(T0.getTime() + 7 * DAY) }]);
      expect(message(await b.create({ token: "Willkommen, Jürgen!", usesAllowed: null, expiresAt: null }))).toMatch(/already exists/);
    } finally {
      await b.close();
    }
  });

  it("refuses a chosen string MAS cannot take, before any request", async () => {
    const b = backend();
    mas.resetCounts();
    expect(message(await b.create({ token: "", usesAllowed: null, expiresAt: null }))).toBe("token: a token has at least 1 character");
    expect(message(await b.create({ token: "nul\u0000byte", usesAllowed: null, expiresAt: null }))).toBe("token: a token may not contain control characters");
    expect(mas.totalRequests()).toBe(0);
    expect(mas.tokens()).toEqual([]);
  });

  it("updates the expiry only, the uses only, and removes either with null", async () => {
    const b = backend();
    try {
      const made = value(await b.create({ token: "partial", usesAllowed: 3, expiresAt: new Date(T0.getTime() + DAY) }));
      const later = new Date(T0.getTime() + 30 * DAY);
      value(await b.update("partial", { expiresAt: later }));
      expect(mas.tokens()[0]).toMatchObject({ usageLimit: 3, expiresAt: later });
      value(await b.update(made.id, { usesAllowed: 10 }));
      expect(mas.tokens()[0]).toMatchObject({ usageLimit: 10, expiresAt: later });
      const cleared = value(await b.update({ id: made.id }, { usesAllowed: null, expiresAt: null }));
      expect(cleared).toMatchObject({ usesAllowed: null, expiresAt: null });
      expect(mas.tokens()[0]).toMatchObject({ usageLimit: null, expiresAt: null });
      expect(message(await b.update("nope", { usesAllowed: 1 }))).toBe("no registration token nope");
    } finally {
      await b.close();
    }
  });
});

describe("list filters (MAS's own query parameters)", () => {
  it("used, revoked, expired and valid, alone and together, as MAS applies them", async () => {
    const b = backend();
    try {
      await b.create({ token: "fresh", usesAllowed: null, expiresAt: null });
      await b.create({ token: "used-once", usesAllowed: 5, expiresAt: null });
      await b.create({ token: "used-up", usesAllowed: 1, expiresAt: null });
      await b.create({ token: "revoked", usesAllowed: null, expiresAt: null });
      await b.create({ token: "expiring", usesAllowed: null, expiresAt: new Date(T0.getTime() + DAY) });
      mas.useToken("used-once");
      mas.useToken("used-up");
      value(await b.delete("revoked"));
      masNow = new Date(T0.getTime() + 2 * DAY);

      const names = async (f: Parameters<TokenBackend["list"]>[0]): Promise<string[]> => value(await b.list(f)).map((t) => t.token).sort();
      expect(await names({})).toEqual(["expiring", "fresh", "revoked", "used-once", "used-up"]);
      expect(await names("all")).toEqual(await names({}));
      expect(await names({ used: true })).toEqual(["used-once", "used-up"]);
      expect(await names({ used: false })).toEqual(["expiring", "fresh", "revoked"]);
      expect(await names({ revoked: true })).toEqual(["revoked"]);
      expect(await names({ expired: true })).toEqual(["expiring"]);
      expect(await names({ valid: true })).toEqual(["fresh", "used-once"]);
      expect(await names("valid")).toEqual(["fresh", "used-once"]);
      expect(await names("invalid")).toEqual(["expiring", "revoked", "used-up"]);
      expect(await names({ used: true, valid: false })).toEqual(["used-up"]);
      expect(await names({ revoked: false, expired: false, used: false })).toEqual(["fresh"]);
    } finally {
      await b.close();
    }
  });
});

describe("a token string that looks like a ULID", () => {
  it("is found by its string; an id by its id; in any case for the id", async () => {
    const b = backend();
    try {
      const ulidString = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
      const chosen = value(await b.create({ token: ulidString, usesAllowed: 1, expiresAt: null }));
      expect(chosen.id).not.toBe(ulidString);
      expect(value(await b.get(ulidString))?.id).toBe(chosen.id);
      expect(value(await b.get(chosen.id))?.token).toBe(ulidString);
      expect(value(await b.get(chosen.id.toLowerCase()))?.token).toBe(ulidString);
      // Revoke by the string: the right token is revoked.
      expect(value(await b.delete(ulidString))).toBe("revoked");
      expect(mas.tokens()[0]?.revokedAt).not.toBeNull();
      expect(value(await b.get("01BX5ZZKBKACTAV9WEVGEMMVRZ"))).toBeUndefined();
    } finally {
      await b.close();
    }
  });

  it("that is also another token's id is refused as ambiguous, naming both ids; { id } settles it", async () => {
    const b = backend();
    try {
      const first = value(await b.create({ token: "first", usesAllowed: null, expiresAt: null }));
      const twin = value(await b.create({ token: first.id, usesAllowed: null, expiresAt: null }));
      const r = await b.get(first.id);
      expect(message(r)).toBe(
        `${first.id} names two registration tokens: the one with that id, and the one with that token string (id ${twin.id}); name it by id: ${first.id} or ${twin.id}`,
      );
      expect(value(await b.get({ id: first.id }))?.token).toBe("first");
      expect(value(await b.get({ id: twin.id }))?.token).toBe(first.id);
      // Nothing was changed by the refused lookup; delete with { id } revokes that one only.
      expect(message(await b.delete(first.id))).toMatch(/names two registration tokens/);
      expect(mas.tokens().every((t) => t.revokedAt === null)).toBe(true);
      value(await b.delete({ id: twin.id }));
      expect(mas.tokens().find((t) => t.id === twin.id)?.revokedAt).not.toBeNull();
      expect(mas.tokens().find((t) => t.id === first.id)?.revokedAt).toBeNull();
    } finally {
      await b.close();
    }
  });
});

describe("status is MAS's verdict (valid), not our clock's", () => {
  it("valid while MAS says so even when our clock is past the expiry; expired when MAS's clock is past it and ours is not", async () => {
    const b = backend();
    try {
      const expiry = new Date(T0.getTime() + DAY);
      value(await b.create({ token: "clocks", usesAllowed: null, expiresAt: expiry }));
      ourNow = new Date(expiry.getTime() + 60_000); // our clock runs ahead
      const ahead = value(await b.get("clocks")) as RegistrationToken;
      expect(ahead.valid).toBe(true);
      expect(tokenStatus(ahead, ourNow).state).toBe("valid");

      ourNow = T0;
      masNow = new Date(expiry.getTime() + 1); // MAS's clock is past it
      const behind = value(await b.get("clocks")) as RegistrationToken;
      expect(behind.valid).toBe(false);
      expect(tokenStatus(behind, ourNow).state).toBe("expired");
      expect(describeStatus(behind, ourNow)).toBe("expired 2026-11-26 12:00 UTC (in 1 day)");
    } finally {
      await b.close();
    }
  });

  it("says why not from the attributes: revoked, used up", async () => {
    const b = backend();
    try {
      value(await b.create({ token: "once", usesAllowed: 1, expiresAt: null }));
      mas.useToken("once");
      const used = value(await b.get("once")) as RegistrationToken;
      expect(tokenStatus(used, ourNow)).toEqual({ state: "used-up", reason: "used up (1 of 1 used)" });
      value(await b.delete("once"));
      const revoked = value(await b.get("once")) as RegistrationToken;
      expect(tokenStatus(revoked, ourNow).state).toBe("revoked");
      expect(describeStatus(revoked, ourNow)).toBe("revoked 2026-11-25 12:00 UTC (in less than a minute)");
    } finally {
      await b.close();
    }
  });
});

describe("client authentication", () => {
  it("client_secret_post for a client set up for it; each method is refused for a client of the other", async () => {
    const post = backend({ clientId: POST_ID, clientAuth: "client_secret_post" });
    try {
      value(await post.create({ token: "by-post", usesAllowed: null, expiresAt: null }));
      expect(mas.tokens().map((t) => t.token)).toEqual(["by-post"]);
    } finally {
      await post.close();
    }
    expect(message(await backend({ clientId: POST_ID }).list("all"))).toBe("MAS refused the client credentials: invalid_client (wrong client id or secret)");
    expect(message(await backend({ clientId: BASIC_ID, clientAuth: "client_secret_post" }).list("all"))).toBe(
      "MAS refused the client credentials: invalid_client (wrong client id or secret, or the client's client_auth_method in MAS is not client_secret_post)",
    );
  });
});

describe("a wrong MAS URL is said as such", () => {
  it("a path after the issuer: the token endpoint is MAS's HTML 404 page", async () => {
    const r = await backend({ url: `${mas.url}/oauth2` }).list("all");
    expect(message(r)).toBe(
      `no MAS at ${mas.url}/oauth2: ${mas.url}/oauth2/oauth2/token answered 404 with an HTML page (check tokens.mas.url: the MAS issuer URL, such as https://auth.example.org, without /oauth2 or /api)`,
    );
    expect(r.ok || r.error.code).toBe("no-mas");
  });

  it("the homeserver's URL instead of MAS's: Synapse's 404 M_UNRECOGNIZED is not refused credentials", async () => {
    const hs = await FakeHomeserver.start({ serverName: "example.org" });
    try {
      const r = await backend({ url: hs.url }).list("all");
      expect(message(r)).toMatch(new RegExp(`^no MAS at ${hs.url}: ${hs.url}/oauth2/token answered 404 \\(check tokens.mas.url`));
    } finally {
      await hs.close();
    }
  });

  it("a MAS without the adminapi resource: no admin API at that URL", async () => {
    const bare = await FakeMas.start({ now: () => masNow, adminApi: false });
    try {
      bare.addClient({ clientId: BASIC_ID, clientSecret: SECRET, admin: true });
      const b = backend({ url: bare.url });
      const r = await b.list("all");
      expect(message(r)).toBe(
        `no MAS admin API at ${bare.url}/api/admin/v1: /api/admin/v1/user-registration-tokens answered 404 with an HTML page (check tokens.mas.url: the MAS issuer URL, such as https://auth.example.org, without /oauth2 or /api; and MAS must serve the adminapi resource on that listener)`,
      );
      expect(message(await b.get("01ARZ3NDEKTSV4RRFFQ69G5FAV"))).toMatch(/^no MAS admin API at /);
      value(await b.close());
    } finally {
      await bare.close();
    }
  });

  it("an unknown id is still just not found", async () => {
    expect(value(await backend().get("01ARZ3NDEKTSV4RRFFQ69G5FAV"))).toBeUndefined();
  });
});

describe("close() revokes the access token", () => {
  it("at MAS's revocation endpoint: the token is dead (401 'Access token revoked'), a second close does nothing", async () => {
    const b = backend();
    value(await b.list("all"));
    const [token] = mas.issuedAccessTokens();
    expect(mas.liveAccessTokens()).toBe(1);
    value(await b.close());
    expect(mas.liveAccessTokens()).toBe(0);
    expect(mas.revokedAccessTokens()).toBe(1);
    const after = await fetch(`${mas.url}/api/admin/v1/user-registration-tokens`, { headers: { authorization: `Bearer ${token ?? ""}` } });
    expect(after.status).toBe(401);
    expect(await after.json()).toEqual({ errors: [{ title: "Access token revoked" }] });
    const revokes = mas.requestCounts()["oauth-revoke"];
    value(await b.close());
    expect(mas.requestCounts()["oauth-revoke"]).toBe(revokes);
  });

  it("two calls at once revoke once; the backend still works after, with a new access token, which the next close revokes", async () => {
    const b = backend({ clientId: POST_ID, clientAuth: "client_secret_post" });
    value(await b.list("all"));
    const both = await Promise.all([b.close(), b.close()]);
    expect(both.every((r) => r.ok)).toBe(true);
    expect(mas.requestCounts()["oauth-revoke"]).toBe(1);
    expect(mas.revokedAccessTokens()).toBe(1);
    value(await b.create({ token: "after-close", usesAllowed: null, expiresAt: null }));
    expect(mas.issuedAccessTokens()).toHaveLength(2);
    value(await b.close());
    expect(mas.revokedAccessTokens()).toBe(2);
    expect(mas.liveAccessTokens()).toBe(0);
  });

  it("without an access token, sends nothing; when MAS is gone, reports and does not throw", async () => {
    const b = backend();
    value(await b.close());
    expect(mas.totalRequests()).toBe(0);
    value(await b.list("all"));
    await mas.close();
    const r = await b.close();
    expect(message(r)).toMatch(/^revoking the MAS access token: cannot reach /);
    // The token itself is never part of the message.
    expect(message(r)).not.toContain("mat_");
    mas = await FakeMas.start({ now: () => masNow }); // for afterEach
  });
});
