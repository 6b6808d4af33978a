import { describe, expect, it } from "vitest";
import { checkTokenRef, checkTokenString, describeExpiry, describeUses, isUlid, tokenStatus, type RegistrationToken } from "../../src/tokens/types.ts";

const now = new Date("2026-11-25T12:00:00Z");
const base: RegistrationToken = {
  id: "abc",
  token: "abc",
  usesAllowed: 3,
  used: 1,
  pending: 0,
  expiresAt: new Date("2026-12-01T12:00:00Z"),
  revokedAt: null,
  createdAt: null,
};

describe("token status (fixed clock)", () => {
  it("valid, expired at the exact instant, used up counting pending, revoked first", () => {
    expect(tokenStatus(base, now).state).toBe("valid");
    expect(tokenStatus({ ...base, expiresAt: now }, now)).toEqual({ state: "expired", reason: "expired 2026-11-25T12:00:00.000Z" });
    expect(tokenStatus({ ...base, used: 2, pending: 1 }, now)).toEqual({ state: "used-up", reason: "used up (2 of 3 used, 1 pending)" });
    expect(tokenStatus({ ...base, usesAllowed: null, used: 1000 }, now).state).toBe("valid");
    expect(tokenStatus({ ...base, revokedAt: new Date("2026-11-20T00:00:00Z"), expiresAt: now }, now).state).toBe("revoked");
    expect(tokenStatus({ ...base, usesAllowed: 0, used: 0 }, now).state).toBe("used-up");
  });

  it("reads as a person would say it", () => {
    expect(describeUses({ ...base, pending: 1 })).toBe("1 of 3 used, 1 pending");
    expect(describeUses({ ...base, usesAllowed: null, used: 2 })).toBe("2 used (unlimited)");
    expect(describeExpiry(new Date("2026-12-01T12:00:00Z"), now)).toBe("2026-12-01 12:00 UTC (in 6 days)");
    expect(describeExpiry(new Date("2026-11-25T09:00:00Z"), now)).toBe("2026-11-25 09:00 UTC (3 hours ago)");
    expect(describeExpiry(null, now)).toBe("never");
  });
});

describe("token input is checked before any request", () => {
  it("token strings: 1-64 characters of [A-Za-z0-9._~-]", () => {
    expect(checkTokenString("abc-DEF_1.2~x").ok).toBe(true);
    expect(checkTokenString("a".repeat(64)).ok).toBe(true);
    expect(checkTokenString("a".repeat(65))).toEqual({ ok: false, error: "a token has 1 to 64 characters (got 65)" });
    expect(checkTokenString("")).toEqual({ ok: false, error: "a token has 1 to 64 characters (got 0)" });
    for (const bad of ["with space", "slash/", "ümlaut", "quote'", "*)(uid=*"]) {
      expect(checkTokenString(bad), bad).toEqual({ ok: false, error: "a token may contain only A-Z, a-z, 0-9 and . _ ~ -" });
    }
  });

  it("MAS ids are ULIDs, in any case", () => {
    expect(isUlid("01J0ZQK8Y9X6V5T4S3R2Q1P0NM")).toBe(true);
    expect(isUlid("01j0zqk8y9x6v5t4s3r2q1p0nm")).toBe(true);
    expect(isUlid("01J0ZQK8Y9X6V5T4S3R2Q1P0N")).toBe(false);
    expect(isUlid("01J0ZQK8Y9X6V5T4S3R2Q1P0NU")).toBe(false); // U is not Crockford base32
    expect(checkTokenRef("01J0ZQK8Y9X6V5T4S3R2Q1P0NM").ok).toBe(true);
    expect(checkTokenRef("bad token").ok).toBe(false);
  });
});
