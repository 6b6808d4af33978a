/**
 * The one HTTP transport for every request that carries credentials: the homeserver's client
 * API (matrix-bot-sdk, through `bot-sdk-request.ts`), the Synapse and MAS admin APIs, Microsoft
 * Graph and the Entra ID token endpoint. Over Node's own fetch, with two rules:
 *
 * - A redirect is never followed. A 3xx answer is a failure that names where it pointed
 *   (userinfo and query values masked): following it would hand the token to whoever the
 *   `Location` names (`request` keeps `Authorization` across a port or scheme change) and trust
 *   the answer of a host we never chose.
 * - One deadline for the whole exchange: connecting, the headers AND the body. An idle timeout
 *   lets a server that drip-feeds a byte a second keep a run alive for ever; this one does not.
 *   A caller's signal (shutdown, lost leader lock) ends the request too.
 */
import { redactUrlsInText } from "../redact-url.ts";
import { ok, type Result } from "../result.ts";

export interface HttpRequest {
  readonly url: string;
  readonly method: string;
  readonly headers?: Headers | Readonly<Record<string, string>>;
  readonly body?: string | Uint8Array;
  /** Time for the whole exchange, the body included, in milliseconds. */
  readonly deadlineMs: number;
  readonly signal?: AbortSignal;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Headers;
  /** The whole body, read within the deadline. */
  readonly body: Uint8Array;
}

export type HttpFailure =
  /** A 3xx; `location` is absolute and masked (see `maskUrl`), or says there was none. */
  | { readonly kind: "redirect"; readonly status: number; readonly location: string }
  /** The deadline passed: before the headers came, or while the body was still arriving. */
  | { readonly kind: "deadline"; readonly ms: number; readonly phase: "headers" | "body" }
  /** The caller's signal ended it. */
  | { readonly kind: "aborted" }
  /** No answer at all: refused, reset, DNS, TLS... `code` is Node's (ECONNREFUSED...), when it gave one. */
  | { readonly kind: "network"; readonly code: string | undefined; readonly detail: string };

/** An `HttpFailure` as an Error, for libraries whose callbacks want one (matrix-bot-sdk, the Graph client). */
export class HttpTransportError extends Error {
  override readonly name = "HttpTransportError";
  readonly failure: HttpFailure;

  constructor(failure: HttpFailure, origin: string) {
    super(`${origin}: ${describeHttpFailure(failure)}`);
    this.failure = failure;
  }
}

/** One request under the rules above. Never throws. */
export async function send(req: HttpRequest): Promise<Result<HttpResponse, HttpFailure>> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), req.deadlineMs);
  const signal = req.signal === undefined ? deadline.signal : AbortSignal.any([deadline.signal, req.signal]);
  let phase: "headers" | "body" = "headers";
  try {
    if (req.signal?.aborted === true) return fail<HttpFailure>({ kind: "aborted" });
    const res = await fetch(req.url, {
      method: req.method,
      ...(req.headers !== undefined ? { headers: req.headers } : {}),
      ...(req.body !== undefined ? { body: req.body } : {}),
      redirect: "manual",
      signal,
    });
    if (isRedirect(res.status)) {
      await res.body?.cancel().catch(() => undefined);
      const location = res.headers.get("location");
      return fail<HttpFailure>({
        kind: "redirect",
        status: res.status,
        location: location === null ? "(no Location header)" : maskUrl(location, req.url),
      });
    }
    phase = "body";
    const body = new Uint8Array(await res.arrayBuffer());
    return ok({ status: res.status, headers: res.headers, body });
  } catch (err) {
    if (deadline.signal.aborted) return fail<HttpFailure>({ kind: "deadline", ms: req.deadlineMs, phase });
    if (req.signal?.aborted === true) return fail<HttpFailure>({ kind: "aborted" });
    return fail<HttpFailure>(networkFailure(err));
  } finally {
    clearTimeout(timer);
  }
}

/** A failed result with this module's own failure type (`fail` in result.ts makes a `Failure`). */
function fail<E>(error: E): { readonly ok: false; readonly error: E } {
  return { ok: false, error };
}

/** 3xx, except 304 (an answer to a conditional request, which is no redirect). */
function isRedirect(status: number): boolean {
  return status >= 300 && status < 400 && status !== 304;
}

function networkFailure(err: unknown): HttpFailure {
  const cause = err instanceof Error ? (err as Error & { cause?: unknown }).cause : undefined;
  const code = codeOf(cause) ?? codeOf(err);
  // The runtime's own words may quote the URL, userinfo and all ("Request cannot be
  // constructed from a URL that includes credentials: https://user:pw@…").
  const detail = redactUrlsInText(cause instanceof Error ? cause.message : err instanceof Error ? err.message : String(err));
  return { kind: "network", code, detail };
}

function codeOf(x: unknown): string | undefined {
  if (x === null || typeof x !== "object" || !("code" in x)) return undefined;
  const code = x.code;
  return typeof code === "string" ? code : undefined;
}

/** Words for a failure, without the origin (callers name who they asked). */
export function describeHttpFailure(f: HttpFailure): string {
  switch (f.kind) {
    case "redirect":
      return `answered ${f.status}, a redirect to ${f.location}; not followed (a request that carries credentials never follows a redirect)`;
    case "deadline":
      return f.phase === "headers" ? `no answer within ${f.ms} ms` : `the answer did not arrive in full within ${f.ms} ms`;
    case "aborted":
      return "the request was cancelled";
    case "network":
      return f.code === undefined ? `cannot connect: ${f.detail}` : `cannot connect (${f.code}): ${f.detail}`;
  }
}

/**
 * A URL someone else gave us (a redirect's Location) fit to print: resolved against `base`,
 * user name and password replaced by `***`, every query value by `***` (names kept), fragment
 * dropped; what cannot be parsed is not printed. Stricter than `redactUrl` (redact-url.ts),
 * which shows our own configured URLs as written but for their credentials: a Location may
 * carry a credential under any parameter name.
 */
export function maskUrl(text: string, base?: string): string {
  let url: URL;
  try {
    url = new URL(text, base);
  } catch {
    return "(a Location that is not a URL)";
  }
  if (url.username !== "" || url.password !== "") {
    url.username = "***";
    url.password = "";
  }
  const names = [...new Set(url.searchParams.keys())];
  url.search = names.length === 0 ? "" : `?${names.map((n) => `${encodeURIComponent(n)}=***`).join("&")}`;
  url.hash = "";
  return url.toString();
}

/** The response headers as a plain object with lower-case names (what `request` gave callers). */
export function headersObject(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => {
    out[name] = value;
  });
  return out;
}
