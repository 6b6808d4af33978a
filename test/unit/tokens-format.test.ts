import { describe, expect, it } from "vitest";
import { checkTokenRef, checkTokenString, describeExpiry, describeStatus, listFilter, tokenStatus, type RegistrationToken } from "../../src/tokens/types.ts";

const now = new Date("2026-11-25T12:00:00Z");
const at = (ms: number): Date => new Date(now.getTime() + ms);
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const base: RegistrationToken = {
  id: "abc",
  token: "abc",
  usesAllowed: 3,
  used: 1,
  pending: 0,
  expiresAt: at(7 * DAY),
  revokedAt: null,
  createdAt: null,
};
const relative = (ms: number): string => /\((.*)\)$/.exec(describeExpiry(at(ms), now))?.[1] ?? "";

describe("relative times, rounded to the nearest unit", () => {
  it("7 days less a few milliseconds is in 7 days, and so on at every unit's edge", () => {
    expect(relative(7 * DAY - 3)).toBe("in 7 days");
    expect(relative(7 * DAY + 3)).toBe("in 7 days");
    expect(relative(-(7 * DAY - 3))).toBe("7 days ago");
    expect(relative(DAY - 10_000)).toBe("in 1 day");
    expect(relative(HOUR - 10_000)).toBe("in 1 hour");
    expect(relative(90 * MIN)).toBe("in 2 hours");
    expect(relative(89 * MIN)).toBe("in 1 hour");
    expect(relative(12 * HOUR)).toBe("in 12 hours");
    expect(relative(23 * HOUR + 29 * MIN)).toBe("in 23 hours");
    expect(relative(6 * DAY + 11 * HOUR)).toBe("in 6 days");
    expect(relative(6 * DAY + 13 * HOUR)).toBe("in 7 days");
    expect(relative(59 * MIN + 29_000)).toBe("in 59 minutes");
    expect(relative(MIN)).toBe("in 1 minute");
    expect(relative(31_000)).toBe("in 1 minute");
    expect(relative(29_000)).toBe("in less than a minute");
    expect(relative(-29_000)).toBe("just now");
    expect(relative(-3 * HOUR)).toBe("3 hours ago");
  });
});

describe("status", () => {
  it("is written like the expiry column", () => {
    expect(describeStatus(base, now)).toBe("valid");
    expect(describeStatus({ ...base, expiresAt: at(-3 * HOUR) }, now)).toBe("expired 2026-11-25 09:00 UTC (3 hours ago)");
    expect(describeStatus({ ...base, revokedAt: at(-5 * DAY + 1) }, now)).toBe("revoked 2026-11-20 12:00 UTC (5 days ago)");
    expect(describeStatus({ ...base, used: 3 }, now)).toBe("used up (3 of 3 used)");
  });

  it("takes the server's verdict when there is one, and says why from the attributes", () => {
    // The server says valid although our clock is past the expiry: valid.
    expect(tokenStatus({ ...base, expiresAt: at(-MIN), valid: true }, now).state).toBe("valid");
    // The server says not valid although our clock is before the expiry: expired (its clock is ahead).
    expect(tokenStatus({ ...base, expiresAt: at(MIN), valid: false }, now).state).toBe("expired");
    expect(tokenStatus({ ...base, used: 3, valid: false }, now).state).toBe("used-up");
    // Used up and long expired: expired, as our clock would say.
    expect(tokenStatus({ ...base, used: 3, expiresAt: at(-DAY), valid: false }, now).state).toBe("expired");
    expect(tokenStatus({ ...base, revokedAt: at(-DAY), used: 3, valid: false }, now).state).toBe("revoked");
    expect(tokenStatus({ ...base, expiresAt: null, valid: false }, now)).toEqual({ state: "invalid", reason: "not valid (the server gave no reason)" });
    // Without a verdict (Synapse): our clock.
    expect(tokenStatus({ ...base, expiresAt: at(-MIN) }, now).state).toBe("expired");
  });
});

describe("token strings per backend", () => {
  it("MAS takes any string but the empty one and control characters; Synapse's rule is the default", () => {
    expect(checkTokenString("Willkommen, Jürgen! ✓", "mas")).toEqual({ ok: true, value: "Willkommen, Jürgen! ✓" });
    expect(checkTokenString("x".repeat(200), "mas").ok).toBe(true);
    expect(checkTokenString("", "mas")).toEqual({ ok: false, error: "a token has at least 1 character" });
    expect(checkTokenString("tab\there", "mas")).toEqual({ ok: false, error: "a token may not contain control characters" });
    expect(checkTokenString("\u0000", "mas").ok).toBe(false);
    expect(checkTokenString("Jürgen").ok).toBe(false);
    expect(checkTokenString("Jürgen", "synapse").ok).toBe(false);
    expect(checkTokenRef("with space", "mas").ok).toBe(true);
    expect(checkTokenRef("with space").ok).toBe(false);
    expect(checkTokenRef("01J0ZQK8Y9X6V5T4S3R2Q1P0NM", "synapse").ok).toBe(true);
  });
});

describe("list words", () => {
  it("valid, invalid and all are filters on valid", () => {
    expect(listFilter("valid")).toEqual({ valid: true });
    expect(listFilter("invalid")).toEqual({ valid: false });
    expect(listFilter("all")).toEqual({});
    expect(listFilter({ used: true, expired: false })).toEqual({ used: true, expired: false });
  });
});
