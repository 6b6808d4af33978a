/**
 * Matrix Authentication Service's admin API for user registration tokens. Authenticates with
 * OAuth2 client credentials (`POST {issuer}/oauth2/token`, HTTP Basic, scope urn:mas:admin);
 * the access token is cached until shortly before it expires and fetched again once on a 401.
 * Lists follow `links.next` to the end. MAS never deletes a token: `delete` revokes it.
 * A 429 or 503 with `Retry-After` is retried within the retry options (see http.ts).
 */
import type { Clock } from "../clock.ts";
import { fail, ok, type Result } from "../result.ts";
import { requestJson, retryPolicy, type HttpAnswer, type RetryOptions } from "./http.ts";
import { isUlid, type NewToken, type RegistrationToken, type TokenBackend, type TokenChanges } from "./types.ts";

export interface MasTokenOptions extends RetryOptions {
  readonly url: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly timeoutMs: number;
  readonly clock: Clock;
}

const PAGE = 100;
const EARLY_REFRESH_MS = 30_000;

export function createMasTokenBackend(opts: MasTokenOptions): TokenBackend {
  const issuer = opts.url.replace(/\/+$/, "");
  const api = `${issuer}/api/admin/v1/user-registration-tokens`;
  let cached: { token: string; until: number } | undefined;
  const retry = retryPolicy(opts);

  async function accessToken(): Promise<Result<string>> {
    if (cached && opts.clock.now().getTime() < cached.until) return ok(cached.token);
    // MAS reads the Basic credentials as they are (it does not form-decode them).
    const basic = Buffer.from(`${opts.clientId}:${opts.clientSecret}`).toString("base64");
    const r = await requestJson(`${issuer}/oauth2/token`, {
      method: "POST",
      headers: { Authorization: `Basic ${basic}`, "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "client_credentials", scope: "urn:mas:admin" }).toString(),
      timeoutMs: opts.timeoutMs,
      retry,
    });
    if (!r.ok) return fail(`MAS: ${r.error}`);
    const b = r.value.body as { access_token?: unknown; expires_in?: unknown; error?: unknown; error_description?: unknown } | undefined;
    if (r.value.status !== 200 || typeof b?.access_token !== "string") {
      const error = typeof b?.error === "string" ? b.error : `HTTP ${r.value.status}`;
      const hint =
        error === "invalid_client"
          ? " (wrong client id or secret)"
          : error === "invalid_scope" || r.value.status === 403
            ? " (the client must be listed in MAS policy.data.admin_clients)"
            : "";
      return fail(`MAS refused the client credentials: ${error}${hint}`, { code: error });
    }
    const lifetime = typeof b.expires_in === "number" ? b.expires_in * 1000 : 300_000;
    cached = { token: b.access_token, until: opts.clock.now().getTime() + Math.max(0, lifetime - EARLY_REFRESH_MS) };
    return ok(b.access_token);
  }

  async function call(method: string, url: string, body?: unknown): Promise<Result<HttpAnswer>> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const token = await accessToken();
      if (!token.ok) return token;
      const r = await requestJson(url, {
        method,
        headers: { Authorization: `Bearer ${token.value}`, Accept: "application/json", ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        timeoutMs: opts.timeoutMs,
        retry,
      });
      if (!r.ok) return fail(`MAS: ${r.error}`);
      if (r.value.status === 401 && attempt === 0) {
        cached = undefined; // expired or revoked early: fetch a new one, once
        continue;
      }
      return ok(r.value);
    }
    return fail("MAS: unreachable");
  }

  const problem = (a: HttpAnswer, what: string): Result<never> => {
    const errors = (a.body as { errors?: { title?: unknown }[] } | undefined)?.errors;
    const title = Array.isArray(errors) && typeof errors[0]?.title === "string" ? errors[0].title : a.text.slice(0, 200) || `HTTP ${a.status}`;
    return fail(`${what}: MAS answered ${a.status}: ${title}`, { code: String(a.status) });
  };
  const one = (a: HttpAnswer, expect: number, what: string): Result<RegistrationToken> => {
    if (a.status !== expect) return problem(a, what);
    const t = decode((a.body as { data?: unknown } | undefined)?.data);
    return t ? ok(t) : fail(`${what}: MAS answered with something that is not a registration token`);
  };

  /** By ULID directly; by token string through the list (MAS has no lookup by string). */
  async function find(ref: string): Promise<Result<RegistrationToken | undefined>> {
    if (isUlid(ref)) {
      const r = await call("GET", `${api}/${ref}`);
      if (!r.ok) return r;
      if (r.value.status === 404) return ok(undefined);
      return one(r.value, 200, `reading token ${ref}`);
    }
    const all = await listAll(new URLSearchParams());
    if (!all.ok) return all;
    return ok(all.value.find((t) => t.token === ref));
  }

  async function listAll(filter: URLSearchParams): Promise<Result<RegistrationToken[]>> {
    const out: RegistrationToken[] = [];
    const first = new URLSearchParams(filter);
    first.set("page[first]", String(PAGE));
    let next: string | undefined = `${api}?${first.toString()}`;
    for (let pages = 0; next !== undefined; pages++) {
      if (pages > 10_000) return fail("listing tokens: MAS kept answering with more pages");
      const r = await call("GET", next);
      if (!r.ok) return r;
      if (r.value.status !== 200) return problem(r.value, "listing tokens");
      const b = r.value.body as { data?: unknown; links?: { next?: unknown } } | undefined;
      if (!Array.isArray(b?.data)) return fail("listing tokens: MAS answered without a data list");
      for (const item of b.data) {
        const t = decode(item);
        if (t) out.push(t);
      }
      const link = b.links?.next;
      next = typeof link === "string" ? new URL(link, issuer).toString() : undefined;
      if (next !== undefined && new URL(next).origin !== new URL(issuer).origin) {
        return fail(`listing tokens: MAS linked to another host (${new URL(next).origin}); not followed`);
      }
    }
    return ok(out);
  }

  const byRef = async (ref: string): Promise<Result<RegistrationToken>> => {
    const t = await find(ref);
    if (!t.ok) return t;
    return t.value ? ok(t.value) : fail(`no registration token ${ref}`, { code: "404" });
  };

  return {
    kind: "mas",
    list(filter) {
      const f = new URLSearchParams();
      if (filter !== "all") f.set("filter[valid]", String(filter === "valid"));
      return listAll(f);
    },
    get: find,
    async create(input: NewToken) {
      const body: Record<string, unknown> = {};
      if (input.token !== undefined) body["token"] = input.token;
      if (input.usesAllowed !== null) body["usage_limit"] = input.usesAllowed;
      if (input.expiresAt !== null) body["expires_at"] = input.expiresAt.toISOString();
      const r = await call("POST", api, body);
      if (!r.ok) return r;
      if (r.value.status === 409) return fail(`a token ${input.token ?? ""} already exists`, { code: "409" });
      return one(r.value, 201, "creating a token");
    },
    async update(ref, changes: TokenChanges) {
      const t = await byRef(ref);
      if (!t.ok) return t;
      const body: Record<string, unknown> = {};
      if (changes.usesAllowed !== undefined) body["usage_limit"] = changes.usesAllowed;
      if (changes.expiresAt !== undefined) body["expires_at"] = changes.expiresAt === null ? null : changes.expiresAt.toISOString();
      const r = await call("PUT", `${api}/${t.value.id}`, body);
      return r.ok ? one(r.value, 200, `updating token ${ref}`) : r;
    },
    async delete(ref) {
      const t = await byRef(ref);
      if (!t.ok) return t;
      if (t.value.revokedAt !== null) return ok("revoked");
      const r = await call("POST", `${api}/${t.value.id}/revoke`);
      if (!r.ok) return r;
      return r.value.status === 200 ? ok("revoked") : problem(r.value, `revoking token ${ref}`);
    },
    async unrevoke(ref) {
      const t = await byRef(ref);
      if (!t.ok) return t;
      if (t.value.revokedAt === null) return fail(`token ${ref} is not revoked`);
      const r = await call("POST", `${api}/${t.value.id}/unrevoke`);
      return r.ok ? one(r.value, 200, `unrevoking token ${ref}`) : r;
    },
  };
}

function decode(x: unknown): RegistrationToken | undefined {
  if (x === null || typeof x !== "object") return undefined;
  const d = x as { id?: unknown; attributes?: Record<string, unknown> };
  const a = d.attributes;
  if (typeof d.id !== "string" || !a || typeof a["token"] !== "string") return undefined;
  const date = (v: unknown): Date | null => (typeof v === "string" && !Number.isNaN(Date.parse(v)) ? new Date(v) : null);
  return {
    id: d.id,
    token: a["token"],
    usesAllowed: typeof a["usage_limit"] === "number" ? a["usage_limit"] : null,
    used: typeof a["times_used"] === "number" ? a["times_used"] : 0,
    pending: 0,
    expiresAt: date(a["expires_at"]),
    revokedAt: date(a["revoked_at"]),
    createdAt: date(a["created_at"]),
  };
}
