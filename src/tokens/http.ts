/** A small JSON-over-HTTP helper for the admin APIs: every failure becomes a value. */
import { describeError } from "../result.ts";

export interface HttpAnswer {
  readonly status: number;
  readonly body: unknown;
  readonly text: string;
}

export async function requestJson(
  url: string,
  init: { method: string; headers?: Record<string, string>; body?: string; timeoutMs: number },
): Promise<{ ok: true; value: HttpAnswer } | { ok: false; error: string }> {
  try {
    const res = await fetch(url, {
      method: init.method,
      ...(init.headers ? { headers: init.headers } : {}),
      ...(init.body !== undefined ? { body: init.body } : {}),
      signal: AbortSignal.timeout(init.timeoutMs),
    });
    const text = await res.text();
    let body: unknown = undefined;
    if (text !== "") {
      try {
        body = JSON.parse(text) as unknown;
      } catch {
        body = undefined;
      }
    }
    return { ok: true, value: { status: res.status, body, text } };
  } catch (err) {
    const cause = (err as { cause?: { code?: unknown } }).cause;
    const code = typeof cause?.code === "string" ? ` (${cause.code})` : "";
    return { ok: false, error: `cannot reach ${new URL(url).origin}${code}: ${describeError(err)}` };
  }
}
