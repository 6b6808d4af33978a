/**
 * A small JSON-over-HTTP helper for the admin APIs: every failure becomes a value.
 *
 * Over our transport (http/transport.ts): no redirect is followed and `timeoutMs` is the
 * deadline of the whole answer. A 429, or a 503 that names a `Retry-After`, is retried after
 * the wait the server asked for (seconds or an HTTP-date; exponential back-off for a 429 that
 * names none), up to `retry.maxRetries` times; a wait longer than `retry.maxWaitMs` fails at once.
 */
import { realSleep, systemClock, type Clock, type Sleep } from "../clock.ts";
import { DEFAULT_MAX_RETRY_WAIT_MS, parseRetryAfter, waitTooLong } from "../http/retry-after.ts";
import { describeHttpFailure, send } from "../http/transport.ts";

export interface HttpAnswer {
  readonly status: number;
  readonly body: unknown;
  readonly text: string;
}

export interface RetryPolicy {
  /** Retries of one request after 429/503; 0: none. */
  readonly maxRetries: number;
  /** Longest `Retry-After` honoured. */
  readonly maxWaitMs: number;
  readonly clock: Clock;
  readonly sleep: Sleep;
}

/** Retry settings of the admin API backends (config: homeserver.maxRetries, homeserver.maxRetryWaitMs). */
export interface RetryOptions {
  readonly maxRetries?: number;
  readonly maxRetryWaitMs?: number;
  readonly clock?: Clock;
  readonly sleep?: Sleep;
}

const DEFAULT_RETRIES = 3;
const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 60_000;

export function retryPolicy(opts: RetryOptions): RetryPolicy {
  return {
    maxRetries: opts.maxRetries ?? DEFAULT_RETRIES,
    maxWaitMs: opts.maxRetryWaitMs ?? DEFAULT_MAX_RETRY_WAIT_MS,
    clock: opts.clock ?? systemClock,
    sleep: opts.sleep ?? realSleep,
  };
}

export async function requestJson(
  url: string,
  init: { method: string; headers?: Record<string, string>; body?: string; timeoutMs: number; retry?: RetryPolicy },
): Promise<{ ok: true; value: HttpAnswer } | { ok: false; error: string }> {
  const origin = new URL(url).origin;
  for (let attempt = 0; ; attempt++) {
    const r = await send({
      url,
      method: init.method,
      ...(init.headers ? { headers: init.headers } : {}),
      ...(init.body !== undefined ? { body: init.body } : {}),
      deadlineMs: init.timeoutMs,
    });
    if (!r.ok) {
      const f = r.error;
      if (f.kind === "network") return { ok: false, error: `cannot reach ${origin}${f.code === undefined ? "" : ` (${f.code})`}: ${f.detail}` };
      return { ok: false, error: `${origin}: ${describeHttpFailure(f)}` };
    }
    const status = r.value.status;
    const text = new TextDecoder().decode(r.value.body);
    const answer: HttpAnswer = { status, body: parseJson(text), text };
    const retry = init.retry;
    if (retry === undefined || (status !== 429 && status !== 503)) return { ok: true, value: answer };
    const asked = parseRetryAfter(r.value.headers.get("retry-after"), retry.clock.now());
    // A 503 that names no time is an outage, not a request to come back: said as it is.
    if (status === 503 && asked === undefined) return { ok: true, value: answer };
    if (attempt >= retry.maxRetries) {
      return { ok: false, error: `${origin} still answered ${status} (${status === 429 ? "rate limited" : "unavailable"}) after ${retry.maxRetries} retries` };
    }
    if (asked !== undefined && asked > retry.maxWaitMs) {
      return { ok: false, error: waitTooLong(origin, asked, retry.maxWaitMs, "homeserver.maxRetryWaitMs") };
    }
    await retry.sleep(asked ?? Math.min(BACKOFF_MAX_MS, retry.maxWaitMs, BACKOFF_START_MS * 2 ** attempt));
  }
}

function parseJson(text: string): unknown {
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
