/**
 * The one `Retry-After` reader (RFC 9110 §10.2.3): delay-seconds or an HTTP-date in any of
 * its three forms, against an injected `now`; nonsense is not guessed at.
 */
import { describe, expect, it } from "vitest";
import { describeWait, parseHttpDate, parseRetryAfter, waitTooLong } from "../../src/http/retry-after.ts";

const NOW = new Date("1994-11-06T08:49:30Z");

describe("parseRetryAfter", () => {
  it("reads delay-seconds", () => {
    expect(parseRetryAfter("120", NOW)).toBe(120_000);
    expect(parseRetryAfter(" 0 ", NOW)).toBe(0);
    expect(parseRetryAfter("1.5", NOW)).toBe(1_500);
  });

  it("reads an IMF-fixdate against now, and a date in the past as no wait", () => {
    expect(parseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", NOW)).toBe(7_000);
    expect(parseRetryAfter("Sun, 06 Nov 1994 09:49:30 GMT", NOW)).toBe(3_600_000);
    expect(parseRetryAfter("Sun, 06 Nov 1994 08:00:00 GMT", NOW)).toBe(0);
  });

  it("reads the obsolete RFC 850 and asctime forms, always as UTC", () => {
    expect(parseRetryAfter("Sunday, 06-Nov-94 08:49:37 GMT", NOW)).toBe(7_000);
    expect(parseRetryAfter("Sun Nov  6 08:49:37 1994", NOW)).toBe(7_000);
    expect(parseHttpDate("Sun Nov 16 08:49:37 1994", NOW)).toBe(Date.UTC(1994, 10, 16, 8, 49, 37));
  });

  it("gives nothing for an absent, empty or unreadable value", () => {
    for (const bad of [undefined, null, "", "  ", "-5", "soon", "1e3", "0x10", "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 CET", "2026-01-01T00:00:00Z"]) {
      expect(parseRetryAfter(bad, NOW), String(bad)).toBeUndefined();
    }
  });
});

describe("waits for a person", () => {
  it("says how long, and which setting was exceeded", () => {
    expect(describeWait(400)).toBe("400 ms");
    expect(describeWait(42_000)).toBe("42 s");
    expect(describeWait(300_000)).toBe("5 min");
    expect(describeWait(3 * 3_600_000 + 20 * 60_000)).toBe("3 h 20 min");
    expect(waitTooLong("the homeserver", 10_800_000, 300_000, "homeserver.maxRetryWaitMs")).toBe(
      "the homeserver asked to wait 3 h before retrying (Retry-After), longer than homeserver.maxRetryWaitMs (5 min): not retried",
    );
  });
});
