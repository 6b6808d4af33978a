/**
 * A run's time limit: a short one aborts with a RunTimeLimit reason; a long one (a yearly
 * schedule's slot is ~3.4e10 ms, past what one Node timer can hold) does not fire at once.
 */
import { setImmediate as tick } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { RunTimeLimit, withTimeLimit } from "../../src/reconcile/run.ts";

describe("withTimeLimit", () => {
  it("aborts with a RunTimeLimit naming the limit", async () => {
    const limit = withTimeLimit(5, "a test limit");
    const reason = await new Promise<unknown>((resolve) => limit.signal.addEventListener("abort", () => resolve(limit.signal.reason), { once: true }));
    expect(reason).toBeInstanceOf(RunTimeLimit);
    expect((reason as Error).message).toContain("a test limit");
  });

  it("a limit longer than a Node timer can hold is not reached at once", async () => {
    const limit = withTimeLimit(365 * 24 * 3600 * 1000, "the next scheduled slot");
    // The overflowing timer would fire after 1 ms: give it that and more (a short limit set
    // after it fires before we look again).
    const probe = withTimeLimit(20, "probe");
    await new Promise<void>((resolve) => probe.signal.addEventListener("abort", () => resolve(), { once: true }));
    await tick();
    expect(limit.signal.aborted).toBe(false);
    limit.clear();
  });

  it("joins the caller's signal: a shutdown aborts it with the caller's reason", () => {
    const shutdown = new AbortController();
    const limit = withTimeLimit(60_000, "x", shutdown.signal);
    shutdown.abort(new Error("shutting down"));
    expect(limit.signal.aborted).toBe(true);
    expect(limit.signal.reason).not.toBeInstanceOf(RunTimeLimit);
    limit.clear();
  });
});
