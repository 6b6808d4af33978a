/**
 * The Synapse token backend (src/tokens/synapse.ts) end to end against the test homeserver's
 * registration-token admin API: chosen token strings checked as Synapse checks them, partial
 * updates, the list filters (valid by Synapse, the rest here), and a close() that does nothing.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createSynapseTokenBackend } from "../../src/tokens/synapse.ts";
import type { TokenBackend, TokenFilter } from "../../src/tokens/types.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const T0 = Date.parse("2026-11-25T12:00:00Z");
const DAY = 86_400_000;

let hs: FakeHomeserver;
let now: number;
let b: TokenBackend;

function value<T>(r: { ok: true; value: T } | { ok: false; error: { message: string } }): T {
  if (!r.ok) throw new Error(`expected success: ${r.error.message}`);
  return r.value;
}

function message(r: { ok: true } | { ok: false; error: { message: string } }): string {
  if (r.ok) throw new Error("expected a failure");
  return r.error.message;
}

beforeEach(async () => {
  now = T0;
  hs = await FakeHomeserver.start({ serverName: "example.org", clock: () => now });
  const admin = hs.registerUser("@admin:example.org", undefined, { admin: true });
  b = createSynapseTokenBackend({ homeserverUrl: hs.url, accessToken: admin, timeoutMs: 10_000, clock: { now: () => new Date(now) } });
});

afterEach(async () => {
  await b.close();
  await hs.close();
});

describe("create with a chosen token", () => {
  it("sends it; Synapse keeps it as given", async () => {
    const made = value(await b.create({ token: "Team.2026_~welcome-", usesAllowed: 3, expiresAt: new Date(T0 + 7 * DAY) }));
    expect(made).toMatchObject({ id: "Team.2026_~welcome-", token: "Team.2026_~welcome-", usesAllowed: 3 });
    expect(hs.registrationTokens()).toMatchObject([{ token: "Team.2026_~welcome-", uses_allowed: 3, expiry_time: T0 + 7 * DAY }]);
    expect(message(await b.create({ token: "Team.2026_~welcome-", usesAllowed: null, expiresAt: null }))).toMatch(/Token already exists/);
  });

  it("refuses what Synapse would refuse, before any request", async () => {
    hs.resetCounts();
    expect(message(await b.create({ token: "x".repeat(65), usesAllowed: null, expiresAt: null }))).toBe("token: a token has 1 to 64 characters (got 65)");
    expect(message(await b.create({ token: "Jürgen", usesAllowed: null, expiresAt: null }))).toBe("token: a token may contain only A-Z, a-z, 0-9 and . _ ~ -");
    expect(message(await b.create({ token: "", usesAllowed: null, expiresAt: null }))).toBe("token: a token has 1 to 64 characters (got 0)");
    expect(hs.requestCounts().admin_registration_tokens).toBe(0);
    expect(hs.registrationTokens()).toEqual([]);
    value(await b.create({ token: "y".repeat(64), usesAllowed: null, expiresAt: null }));
  });
});

describe("update", () => {
  it("changes the expiry only, the uses only, and clears either with null", async () => {
    value(await b.create({ token: "partial", usesAllowed: 3, expiresAt: new Date(T0 + DAY) }));
    value(await b.update("partial", { expiresAt: new Date(T0 + 30 * DAY) }));
    expect(hs.registrationTokens()[0]).toMatchObject({ uses_allowed: 3, expiry_time: T0 + 30 * DAY });
    value(await b.update({ id: "partial" }, { usesAllowed: 9 }));
    expect(hs.registrationTokens()[0]).toMatchObject({ uses_allowed: 9, expiry_time: T0 + 30 * DAY });
    value(await b.update("partial", { usesAllowed: null, expiresAt: null }));
    expect(hs.registrationTokens()[0]).toMatchObject({ uses_allowed: null, expiry_time: null });
    expect(message(await b.update("nope", { usesAllowed: 1 }))).toMatch(/M_NOT_FOUND/);
  });
});

describe("list filters", () => {
  it("valid by Synapse; used, expired and revoked applied from the attributes and the clock", async () => {
    value(await b.create({ token: "fresh", usesAllowed: null, expiresAt: null }));
    value(await b.create({ token: "used-once", usesAllowed: 5, expiresAt: null }));
    value(await b.create({ token: "used-up", usesAllowed: 1, expiresAt: null }));
    value(await b.create({ token: "pending", usesAllowed: 1, expiresAt: null }));
    value(await b.create({ token: "expiring", usesAllowed: null, expiresAt: new Date(T0 + DAY) }));
    hs.useRegistrationToken("used-once", { complete: true });
    hs.useRegistrationToken("used-up", { complete: true });
    hs.useRegistrationToken("pending", { complete: false });
    now = T0 + 2 * DAY;

    const names = async (f: TokenFilter | "valid" | "invalid" | "all"): Promise<string[]> => value(await b.list(f)).map((t) => t.token).sort();
    expect(await names("all")).toEqual(["expiring", "fresh", "pending", "used-once", "used-up"]);
    expect(await names({ valid: true })).toEqual(["fresh", "used-once"]);
    expect(await names("invalid")).toEqual(["expiring", "pending", "used-up"]);
    // used: a completed registration (a pending one is not yet a use)
    expect(await names({ used: true })).toEqual(["used-once", "used-up"]);
    expect(await names({ expired: true })).toEqual(["expiring"]);
    expect(await names({ expired: false, valid: false })).toEqual(["pending", "used-up"]);
    // Synapse deletes tokens instead of revoking them.
    expect(await names({ revoked: true })).toEqual([]);
    expect(await names({ revoked: false })).toEqual(await names("all"));
  });

  it("expired at the exact instant, as Synapse's own valid filter has it", async () => {
    value(await b.create({ token: "edge", usesAllowed: null, expiresAt: new Date(T0 + DAY) }));
    now = T0 + DAY;
    expect(value(await b.list({ expired: true })).map((t) => t.token)).toEqual(["edge"]);
    expect(value(await b.list("valid"))).toEqual([]);
  });
});

describe("close", () => {
  it("does nothing, any number of times; the backend keeps working", async () => {
    hs.resetCounts();
    value(await b.close());
    value(await b.close());
    expect(hs.requestCounts().admin_registration_tokens).toBe(0);
    expect(value(await b.list("all"))).toEqual([]);
  });
});
