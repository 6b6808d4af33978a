/**
 * The Synapse admin API for registration tokens, `/_synapse/admin/v1/registration_tokens`.
 * Needs a server admin's access token. When Synapse delegates authentication to MAS the API
 * is gone: the error says to configure the MAS backend. A 429 or 503 with `Retry-After` is
 * retried within the retry options (see http.ts).
 *
 * Its list filters only by `valid=true|false`; the other filters of `TokenFilter` are applied
 * here (see `TokenFilter`), against the injected clock. A chosen token string is checked as
 * Synapse checks it before it is sent. There is no session to end: `close()` does nothing.
 */
import { systemClock } from "../clock.ts";
import { fail, ok, type Result } from "../result.ts";
import { requestJson, retryPolicy, type HttpAnswer, type RetryOptions } from "./http.ts";
import { checkTokenString, listFilter, type NewToken, type RegistrationToken, type TokenBackend, type TokenChanges, type TokenRef } from "./types.ts";

export interface SynapseTokenOptions extends RetryOptions {
  readonly homeserverUrl: string;
  readonly accessToken: string;
  readonly timeoutMs: number;
}

export function createSynapseTokenBackend(opts: SynapseTokenOptions): TokenBackend {
  const base = `${opts.homeserverUrl.replace(/\/+$/, "")}/_synapse/admin/v1/registration_tokens`;
  const retry = retryPolicy(opts);
  const call = async (method: string, path: string, body?: unknown): Promise<Result<HttpAnswer>> => {
    const r = await requestJson(`${base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${opts.accessToken}`, ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      timeoutMs: opts.timeoutMs,
      retry,
    });
    if (!r.ok) return fail(`Synapse admin API: ${r.error}`);
    return ok(r.value);
  };
  const problem = (a: HttpAnswer, what: string): Result<never> => {
    const b = a.body as { errcode?: unknown; error?: unknown } | undefined;
    const errcode = typeof b?.errcode === "string" ? b.errcode : undefined;
    const error = typeof b?.error === "string" ? b.error : a.text.slice(0, 200);
    if (a.status === 404 && errcode === "M_UNRECOGNIZED") {
      return fail(
        "the Synapse admin API for registration tokens is not available (Synapse may delegate authentication to MAS): set tokens.backend: mas",
        { code: errcode },
      );
    }
    if (a.status === 403) return fail(`${what}: refused (${errcode ?? a.status}): the access token must belong to a Synapse server admin`, errcode ? { code: errcode } : {});
    return fail(`${what}: ${errcode ?? `HTTP ${a.status}`}: ${error}`, errcode ? { code: errcode } : {});
  };
  const one = (a: HttpAnswer, what: string): Result<RegistrationToken> => {
    if (a.status !== 200) return problem(a, what);
    const t = decode(a.body);
    return t ? ok(t) : fail(`${what}: Synapse answered with something that is not a registration token`);
  };
  const path = (ref: TokenRef): string => `/${encodeURIComponent(typeof ref === "string" ? ref : ref.id)}`;
  const name = (ref: TokenRef): string => (typeof ref === "string" ? ref : ref.id);
  const clock = opts.clock ?? systemClock;

  return {
    kind: "synapse",
    async list(which) {
      const f = listFilter(which);
      const r = await call("GET", f.valid === undefined ? "" : `?valid=${f.valid}`);
      if (!r.ok) return r;
      if (r.value.status !== 200) return problem(r.value, "listing tokens");
      const list = (r.value.body as { registration_tokens?: unknown } | undefined)?.registration_tokens;
      if (!Array.isArray(list)) return fail("listing tokens: Synapse answered without registration_tokens");
      const now = clock.now().getTime();
      return ok(
        list
          .flatMap((x) => decode(x) ?? [])
          .filter(
            (t) =>
              (f.used === undefined || f.used === t.used > 0) &&
              // Synapse deletes tokens; none is ever revoked.
              (f.revoked === undefined || !f.revoked) &&
              // Synapse's own rule: valid while expiry_time > now.
              (f.expired === undefined || f.expired === (t.expiresAt !== null && t.expiresAt.getTime() <= now)),
          ),
      );
    },
    async get(ref) {
      const r = await call("GET", path(ref));
      if (!r.ok) return r;
      if (r.value.status === 404 && (r.value.body as { errcode?: unknown } | undefined)?.errcode === "M_NOT_FOUND") return ok(undefined);
      return one(r.value, `reading token ${name(ref)}`);
    },
    async create(input: NewToken) {
      const body: Record<string, unknown> = {
        uses_allowed: input.usesAllowed,
        expiry_time: input.expiresAt === null ? null : input.expiresAt.getTime(),
      };
      if (input.token !== undefined) {
        const checked = checkTokenString(input.token, "synapse");
        if (!checked.ok) return fail(`token: ${checked.error}`, { code: "invalid-token" });
        body["token"] = input.token;
      }
      const r = await call("POST", "/new", body);
      return r.ok ? one(r.value, "creating a token") : r;
    },
    async update(ref, changes: TokenChanges) {
      const body: Record<string, unknown> = {};
      if (changes.usesAllowed !== undefined) body["uses_allowed"] = changes.usesAllowed;
      if (changes.expiresAt !== undefined) body["expiry_time"] = changes.expiresAt === null ? null : changes.expiresAt.getTime();
      const r = await call("PUT", path(ref), body);
      return r.ok ? one(r.value, `updating token ${name(ref)}`) : r;
    },
    async delete(ref) {
      const r = await call("DELETE", path(ref));
      if (!r.ok) return r;
      return r.value.status === 200 ? ok("deleted") : problem(r.value, `deleting token ${name(ref)}`);
    },
    unrevoke() {
      return Promise.resolve(fail("Synapse has no revoked tokens: unrevoke is a MAS command"));
    },
    close() {
      return Promise.resolve(ok(undefined));
    },
  };
}

function decode(x: unknown): RegistrationToken | undefined {
  if (x === null || typeof x !== "object") return undefined;
  const t = x as { token?: unknown; uses_allowed?: unknown; pending?: unknown; completed?: unknown; expiry_time?: unknown };
  if (typeof t.token !== "string") return undefined;
  const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  return {
    id: t.token,
    token: t.token,
    usesAllowed: typeof t.uses_allowed === "number" ? t.uses_allowed : null,
    used: num(t.completed),
    pending: num(t.pending),
    expiresAt: typeof t.expiry_time === "number" ? new Date(t.expiry_time) : null,
    revokedAt: null,
    createdAt: null,
  };
}
