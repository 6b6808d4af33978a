/** Waiting on a condition the test can observe (a request seen, a row written), not on a clock. */
import { HANG_GUARD_MS } from "./processes.ts";

/**
 * Resolves with the first value `check` returns that is not undefined or false (checked every
 * `everyMs`). The time cap only guards against a hang (default 120 s); the error says what was
 * awaited and, with `diagnose`, what the processes involved said.
 */
export async function waitUntil<T>(
  what: string,
  check: () => T | false | undefined | Promise<T | false | undefined>,
  diagnose?: () => string,
  opts: { timeoutMs?: number; everyMs?: number } = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? HANG_GUARD_MS;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== false && v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}${diagnose ? `\n${diagnose()}` : ""}`);
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 25));
  }
}
