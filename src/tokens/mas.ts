/**
 * Matrix Authentication Service's admin API for user registration tokens. Authenticates with
 * OAuth2 client credentials (`POST {issuer}/oauth2/token`, scope urn:mas:admin), the client
 * secret sent as HTTP Basic (client_secret_basic, the default) or in the form
 * (client_secret_post) — MAS accepts only the one method the client is configured for. The
 * access token is cached until shortly before it expires, fetched again once on a 401, and
 * revoked at `{issuer}/oauth2/revoke` (RFC 7009) by `close()`.
 *
 * Lists follow `links.next` to the end; filters are MAS's own (`filter[used|revoked|expired|valid]`).
 * A token's status is MAS's `valid` attribute. MAS has no lookup by token string: a string is
 * found through the list; a ULID is tried both as an id and as a string (they are different
 * namespaces), and one that names two tokens is refused. MAS never deletes a token: `delete`
 * revokes it. A 429 or 503 with `Retry-After` is retried within the retry options (see http.ts).
 *
 * A wrong `tokens.mas.url` shows as a 404 or an HTML page (MAS's own fallback is an HTML 404
 * page) from the token endpoint or the admin API: said as such, not as refused credentials.
 */
import type { Clock } from "../clock.ts";
import { fail, ok, type Result } from "../result.ts";
import { requestJson, retryPolicy, type HttpAnswer, type RetryOptions } from "./http.ts";
import {
  checkTokenString,
  isUlid,
  listFilter,
  type NewToken,
  type RegistrationToken,
  type TokenBackend,
  type TokenChanges,
  type TokenFilter,
  type TokenRef,
} from "./types.ts";

export type MasClientAuth = "client_secret_basic" | "client_secret_post";

export interface MasTokenOptions extends RetryOptions {
  readonly url: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** How the client authenticates at the token and revocation endpoints (MAS `client_auth_method`). Default client_secret_basic. */
  readonly clientAuth?: MasClientAuth;
  readonly timeoutMs: number;
  readonly clock: Clock;
}

const PAGE = 100;
const EARLY_REFRESH_MS = 30_000;
const URL_HINT = "check tokens.mas.url: the MAS issuer URL, such as https://auth.example.org, without /oauth2 or /api";

export function createMasTokenBackend(opts: MasTokenOptions): TokenBackend {
  const issuer = opts.url.replace(/\/+$/, "");
  const api = `${issuer}/api/admin/v1/user-registration-tokens`;
  const clientAuth = opts.clientAuth ?? "client_secret_basic";
  let cached: { token: string; until: number } | undefined;
  const retry = retryPolicy(opts);

  /** A form request to an OAuth2 endpoint, with the client's credentials the configured way. */
  function oauthPost(path: string, fields: Record<string, string>): ReturnType<typeof requestJson> {
    const form = new URLSearchParams(fields);
    const headers: Record<string, string> = { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" };
    if (clientAuth === "client_secret_post") {
      form.set("client_id", opts.clientId);
      form.set("client_secret", opts.clientSecret);
    } else {
      // MAS reads the Basic credentials as they are (it does not form-decode them).
      headers["Authorization"] = `Basic ${Buffer.from(`${opts.clientId}:${opts.clientSecret}`).toString("base64")}`;
    }
    return requestJson(`${issuer}${path}`, { method: "POST", headers, body: form.toString(), timeoutMs: opts.timeoutMs, retry });
  }

  async function accessToken(): Promise<Result<string>> {
    if (cached && opts.clock.now().getTime() < cached.until) return ok(cached.token);
    const r = await oauthPost("/oauth2/token", { grant_type: "client_credentials", scope: "urn:mas:admin" });
    if (!r.ok) return fail(`MAS: ${r.error}`);
    const a = r.value;
    const b = a.body as { access_token?: unknown; expires_in?: unknown; error?: unknown } | undefined;
    if (a.status === 200 && typeof b?.access_token === "string") {
      const lifetime = typeof b.expires_in === "number" ? b.expires_in * 1000 : 300_000;
      cached = { token: b.access_token, until: opts.clock.now().getTime() + Math.max(0, lifetime - EARLY_REFRESH_MS) };
      return ok(b.access_token);
    }
    // MAS's token endpoint answers 200, 400, 401, 403 or 500, always with JSON. A 404, a 405 or
    // a page that is not JSON comes from something else at that address.
    if (a.status === 404 || a.status === 405 || (a.body === undefined && looksLikeHtml(a.text))) {
      return fail(`no MAS at ${issuer}: ${issuer}/oauth2/token answered ${answerKind(a)} (${URL_HINT})`, { code: "no-mas" });
    }
    if (typeof b?.error !== "string") {
      return fail(`MAS token endpoint ${issuer}/oauth2/token answered HTTP ${a.status}: ${a.text.slice(0, 200)}`, { code: String(a.status) });
    }
    const error = b.error;
    const hint =
      error === "invalid_client"
        ? // MAS answers the same for a client set up for the other method (tokens.mas.clientAuth).
          clientAuth === "client_secret_basic"
          ? " (wrong client id or secret)"
          : " (wrong client id or secret, or the client's client_auth_method in MAS is not client_secret_post)"
        : error === "invalid_scope" || a.status === 403
          ? " (the client must be listed in MAS policy.data.admin_clients)"
          : "";
    return fail(`MAS refused the client credentials: ${error}${hint}`, { code: error });
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
      const a = r.value;
      // Every admin API answer is JSON; a 404 without JSON:API errors is MAS's (HTML) fallback or
      // another server: no admin API here.
      if ((a.status === 404 && !hasErrors(a.body)) || (a.body === undefined && looksLikeHtml(a.text))) {
        return fail(
          `no MAS admin API at ${issuer}/api/admin/v1: ${new URL(url).pathname} answered ${answerKind(a)} (${URL_HINT}; and MAS must serve the adminapi resource on that listener)`,
          { code: "no-mas-admin-api" },
        );
      }
      if (a.status === 401 && attempt === 0) {
        cached = undefined; // expired or revoked early: fetch a new one, once
        continue;
      }
      return ok(a);
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

  async function byId(id: string): Promise<Result<RegistrationToken | undefined>> {
    const r = await call("GET", `${api}/${encodeURIComponent(id)}`);
    if (!r.ok) return r;
    if (r.value.status === 404) return ok(undefined);
    return one(r.value, 200, `reading token ${id}`);
  }

  async function byString(token: string): Promise<Result<RegistrationToken | undefined>> {
    const all = await listAll(new URLSearchParams());
    if (!all.ok) return all;
    return ok(all.value.find((t) => t.token === token));
  }

  /**
   * `{id}` by id. A ULID both ways — a token string may look like a ULID, and ids and strings
   * are different namespaces — so that the answer is the one token it names, or an error when it
   * names two. Anything else by string (MAS has no lookup by string: through the list).
   */
  async function find(ref: TokenRef): Promise<Result<RegistrationToken | undefined>> {
    if (typeof ref !== "string") return byId(ref.id);
    if (!isUlid(ref)) return byString(ref);
    // One after the other: the first may fetch the access token that the second then uses.
    const asId = await byId(ref);
    if (!asId.ok) return asId;
    const asString = await byString(ref);
    if (!asString.ok) return asString;
    const a = asId.value;
    const b = asString.value;
    if (a !== undefined && b !== undefined && a.id !== b.id) {
      return fail(`${ref} names two registration tokens: the one with that id, and the one with that token string (id ${b.id}); name it by id: ${a.id} or ${b.id}`, {
        code: "ambiguous",
      });
    }
    return ok(a ?? b);
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

  const byRef = async (ref: TokenRef): Promise<Result<RegistrationToken>> => {
    const t = await find(ref);
    if (!t.ok) return t;
    const name = typeof ref === "string" ? ref : ref.id;
    return t.value ? ok(t.value) : fail(`no registration token ${name}`, { code: "404" });
  };

  let closing: Promise<Result<void>> | undefined;
  async function revokeAccessToken(): Promise<Result<void>> {
    const held = cached;
    cached = undefined;
    if (held === undefined) return ok(undefined);
    const r = await oauthPost("/oauth2/revoke", { token: held.token, token_type_hint: "access_token" });
    if (!r.ok) return fail(`revoking the MAS access token: ${r.error}`);
    if (r.value.status === 200) return ok(undefined);
    const error = (r.value.body as { error?: unknown } | undefined)?.error;
    return fail(`revoking the MAS access token: ${issuer}/oauth2/revoke answered ${answerKind(r.value)}${typeof error === "string" ? ` (${error})` : ""}`, {
      code: String(r.value.status),
    });
  }

  return {
    kind: "mas",
    list(which) {
      const f = listFilter(which);
      const q = new URLSearchParams();
      for (const key of ["used", "revoked", "expired", "valid"] as const satisfies readonly (keyof TokenFilter)[]) {
        const v = f[key];
        if (v !== undefined) q.set(`filter[${key}]`, String(v));
      }
      return listAll(q);
    },
    get: find,
    async create(input: NewToken) {
      const body: Record<string, unknown> = {};
      if (input.token !== undefined) {
        const checked = checkTokenString(input.token, "mas");
        if (!checked.ok) return fail(`token: ${checked.error}`, { code: "invalid-token" });
        body["token"] = input.token;
      }
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
      return r.ok ? one(r.value, 200, `updating token ${t.value.id}`) : r;
    },
    async delete(ref) {
      const t = await byRef(ref);
      if (!t.ok) return t;
      if (t.value.revokedAt !== null) return ok("revoked");
      const r = await call("POST", `${api}/${t.value.id}/revoke`);
      if (!r.ok) return r;
      return r.value.status === 200 ? ok("revoked") : problem(r.value, `revoking token ${t.value.id}`);
    },
    async unrevoke(ref) {
      const t = await byRef(ref);
      if (!t.ok) return t;
      if (t.value.revokedAt === null) return fail(`token ${typeof ref === "string" ? ref : ref.id} is not revoked`);
      const r = await call("POST", `${api}/${t.value.id}/unrevoke`);
      return r.ok ? one(r.value, 200, `unrevoking token ${t.value.id}`) : r;
    },
    close() {
      // Two calls at once share one revocation; a later call revokes whatever was fetched since.
      closing ??= revokeAccessToken().finally(() => {
        closing = undefined;
      });
      return closing;
    },
  };
}

function hasErrors(body: unknown): boolean {
  return Array.isArray((body as { errors?: unknown } | undefined)?.errors);
}

function looksLikeHtml(text: string): boolean {
  return /^\s*</.test(text);
}

/** "404 with an HTML page", "404 with an empty body", "404". */
function answerKind(a: HttpAnswer): string {
  if (a.body === undefined && looksLikeHtml(a.text)) return `${a.status} with an HTML page`;
  if (a.text === "") return `${a.status} with an empty body`;
  return String(a.status);
}

function decode(x: unknown): RegistrationToken | undefined {
  if (x === null || typeof x !== "object") return undefined;
  const d = x as { id?: unknown; attributes?: Record<string, unknown> };
  const a = d.attributes;
  if (typeof d.id !== "string" || !a || typeof a["token"] !== "string") return undefined;
  const date = (v: unknown): Date | null => (typeof v === "string" && !Number.isNaN(Date.parse(v)) ? new Date(v) : null);
  const valid = a["valid"];
  return {
    id: d.id,
    token: a["token"],
    usesAllowed: typeof a["usage_limit"] === "number" ? a["usage_limit"] : null,
    used: typeof a["times_used"] === "number" ? a["times_used"] : 0,
    pending: 0,
    expiresAt: date(a["expires_at"]),
    revokedAt: date(a["revoked_at"]),
    createdAt: date(a["created_at"]),
    ...(typeof valid === "boolean" ? { valid } : {}),
  };
}
