/**
 * Proves the Matrix Authentication Service stand-in (test/fakes/mas.ts) with plain fetch: the
 * OAuth2 client-credentials token endpoint and the admin API for user registration tokens, with
 * the exact statuses and bodies MAS gives (sources named in the fake's header).
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeMas } from "../fakes/mas.ts";

const ADMIN_ID = "01J9Z8ZQ5N6M7P8Q9R0S1T2V3W";
const ADMIN_SECRET = "admin-secret";
const PLAIN_ID = "01J9Z8ZQ5N6M7P8Q9R0S1T2V3X";
const PLAIN_SECRET = "plain-secret";
const POST_ID = "01J9Z8ZQ5N6M7P8Q9R0S1T2V3Y";
const POST_SECRET = "post-secret";
const PATH = "/api/admin/v1/user-registration-tokens";
const T0 = "2022-01-16T14:40:00Z";
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  /** The parsed body when it is JSON, else undefined. */
  json: unknown;
}

let mas: FakeMas;
let now: Date;

const at = (iso: string): void => {
  now = new Date(iso);
};
const advance = (ms: number): void => {
  now = new Date(now.getTime() + ms);
};

async function call(
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token !== undefined) headers["authorization"] = `Bearer ${opts.token}`;
  let body: string | undefined = opts.raw;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  const res = await fetch(`${mas.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  let json: unknown;
  if (res.headers.get("content-type") === "application/json") json = JSON.parse(text);
  return { status: res.status, headers: res.headers, text, json };
}

const basic = (id: string, secret: string): string => `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`;

async function tokenRequest(form: string, headers: Record<string, string> = {}): Promise<Answer> {
  return call("POST", "/oauth2/token", { raw: form, headers: { "content-type": "application/x-www-form-urlencoded", ...headers } });
}

async function revokeRequest(form: string, headers: Record<string, string> = {}): Promise<Answer> {
  return call("POST", "/oauth2/revoke", { raw: form, headers: { "content-type": "application/x-www-form-urlencoded", ...headers } });
}

async function adminToken(): Promise<string> {
  const r = await tokenRequest("grant_type=client_credentials&scope=urn:mas:admin", { authorization: basic(ADMIN_ID, ADMIN_SECRET) });
  expect(r.status).toBe(200);
  return (r.json as { access_token: string }).access_token;
}

interface Attributes {
  token: string;
  valid: boolean;
  usage_limit: number | null;
  times_used: number;
  created_at: string;
  last_used_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
}

interface Resource {
  type: string;
  id: string;
  attributes: Attributes;
  links: { self: string };
  meta?: { page: { cursor: string } };
}

interface ListBody {
  meta?: { count: number };
  data?: Resource[];
  links: { self: string; first?: string; last?: string; next?: string; prev?: string };
}

const single = (id: string, attributes: Attributes, self = `${PATH}/${id}`): unknown => ({
  data: { type: "user-registration_token", id, attributes, links: { self: `${PATH}/${id}` } },
  links: { self },
});

/** The attributes in MAS's field order (checked byte for byte in one test). */
const attrs = (a: Partial<Attributes> & { token: string }): Attributes => ({
  token: a.token,
  valid: a.valid ?? true,
  usage_limit: a.usage_limit ?? null,
  times_used: a.times_used ?? 0,
  created_at: a.created_at ?? T0,
  last_used_at: a.last_used_at ?? null,
  expires_at: a.expires_at ?? null,
  revoked_at: a.revoked_at ?? null,
});

async function create(token: string, body: Record<string, unknown>): Promise<Resource> {
  const r = await call("POST", PATH, { token, body });
  expect(r.status).toBe(201);
  return (r.json as { data: Resource }).data;
}

const errors = (...titles: string[]): unknown => ({ errors: titles.map((title) => ({ title })) });

beforeEach(async () => {
  at(T0);
  mas = await FakeMas.start({ now: () => now });
  mas.addClient({ clientId: ADMIN_ID, clientSecret: ADMIN_SECRET, admin: true });
  mas.addClient({ clientId: PLAIN_ID, clientSecret: PLAIN_SECRET, admin: false });
  mas.addClient({ clientId: POST_ID, clientSecret: POST_SECRET, admin: true, authMethod: "client_secret_post" });
});

afterEach(async () => {
  await mas.close();
});

describe("token endpoint", () => {
  it("issues an admin access token to an admin client (client_secret_basic)", async () => {
    const r = await tokenRequest("grant_type=client_credentials&scope=urn:mas:admin", { authorization: basic(ADMIN_ID, ADMIN_SECRET) });
    expect(r.status).toBe(200);
    expect(r.headers.get("cache-control")).toBe("no-store");
    expect(r.headers.get("pragma")).toBe("no-cache");
    const body = r.json as Record<string, unknown>;
    expect(Object.keys(body)).toEqual(["access_token", "token_type", "expires_in", "scope"]);
    expect(body).toEqual({ access_token: expect.stringMatching(/^mat_[A-Za-z0-9]{30}_[0-9A-Za-z]{6}$/), token_type: "Bearer", expires_in: 300, scope: "urn:mas:admin" });
    expect(mas.tokenRequests()).toBe(1);
  });

  it("accepts client_secret_post only for a client configured for it, and the other way round", async () => {
    const post = await tokenRequest(`grant_type=client_credentials&scope=urn:mas:admin&client_id=${POST_ID}&client_secret=${POST_SECRET}`);
    expect(post.status).toBe(200);
    expect((post.json as { scope: string }).scope).toBe("urn:mas:admin");

    const basicForPostClient = await tokenRequest("grant_type=client_credentials&scope=urn:mas:admin", { authorization: basic(POST_ID, POST_SECRET) });
    expect(basicForPostClient.status).toBe(401);
    expect(basicForPostClient.json).toEqual({ error: "invalid_client", error_description: "Client authentication failed." });

    const postForBasicClient = await tokenRequest(`grant_type=client_credentials&client_id=${ADMIN_ID}&client_secret=${ADMIN_SECRET}`);
    expect(postForBasicClient.status).toBe(401);
    expect(postForBasicClient.json).toEqual({ error: "invalid_client", error_description: "Client authentication failed." });
  });

  it("answers 401 invalid_client for a wrong secret, an unknown client and a client id that is no ULID", async () => {
    const expected = { error: "invalid_client", error_description: "Client authentication failed." };
    for (const auth of [basic(ADMIN_ID, "wrong"), basic("01J9Z8ZQ5N6M7P8Q9R0S1T2V40", ADMIN_SECRET), basic("sync-bot", ADMIN_SECRET)]) {
      const r = await tokenRequest("grant_type=client_credentials&scope=urn:mas:admin", { authorization: auth });
      expect(r.status).toBe(401);
      expect(r.json).toEqual(expected);
    }
    // The Basic credentials are not percent-decoded (headers crate): an encoded secret is a wrong secret.
    mas.addClient({ clientId: "01J9Z8ZQ5N6M7P8Q9R0S1T2V41", clientSecret: "a b", admin: true });
    const encoded = await tokenRequest("grant_type=client_credentials", { authorization: basic("01J9Z8ZQ5N6M7P8Q9R0S1T2V41", "a%20b") });
    expect(encoded.status).toBe(401);
    // Client ids are looked up as ULIDs: any case works.
    const lower = await tokenRequest("grant_type=client_credentials", { authorization: basic(ADMIN_ID.toLowerCase(), ADMIN_SECRET) });
    expect(lower.status).toBe(200);
  });

  it("answers 403 invalid_scope when a client not in admin_clients asks for urn:mas:admin", async () => {
    const r = await tokenRequest("grant_type=client_credentials&scope=urn:mas:admin", { authorization: basic(PLAIN_ID, PLAIN_SECRET) });
    expect(r.status).toBe(403);
    expect(r.json).toEqual({ error: "invalid_scope", error_description: "scope 'urn:mas:admin' not allowed" });

    const two = await tokenRequest("grant_type=client_credentials&scope=urn:mas:admin%20urn:synapse:admin:*", { authorization: basic(PLAIN_ID, PLAIN_SECRET) });
    expect(two.status).toBe(403);
    expect(two.json).toEqual({
      error: "invalid_scope",
      error_description: "scope 'urn:mas:admin' not allowed, scope 'urn:synapse:admin:*' not allowed",
    });

    // Without a scope the grant succeeds and the answer carries no scope.
    const none = await tokenRequest("grant_type=client_credentials", { authorization: basic(PLAIN_ID, PLAIN_SECRET) });
    expect(none.status).toBe(200);
    expect(Object.keys(none.json as object)).toEqual(["access_token", "token_type", "expires_in"]);
  });

  it("answers 400 unsupported_grant_type for a grant MAS does not know", async () => {
    const r = await tokenRequest("grant_type=password&username=a&password=b", { authorization: basic(ADMIN_ID, ADMIN_SECRET) });
    expect(r.status).toBe(400);
    expect(r.json).toEqual({
      error: "unsupported_grant_type",
      error_description: "The authorization grant type is not supported by the authorization server.",
    });
    // The client is authenticated first.
    const wrong = await tokenRequest("grant_type=password", { authorization: basic(ADMIN_ID, "wrong") });
    expect(wrong.status).toBe(401);
  });

  it("answers malformed requests as MAS does", async () => {
    const noCredentials = await tokenRequest("grant_type=client_credentials");
    expect(noCredentials.status).toBe(400);
    expect(noCredentials.json).toEqual({ error: "invalid_request", error_description: "No credentials were presented" });

    const badHeader = await tokenRequest("grant_type=client_credentials", { authorization: "Basic not-base64!" });
    expect(badHeader.status).toBe(400);
    expect(badHeader.json).toEqual({ error: "invalid_request", error_description: "Invalid Authorization header" });

    const mismatch = await tokenRequest(`grant_type=client_credentials&client_id=${PLAIN_ID}`, { authorization: basic(ADMIN_ID, ADMIN_SECRET) });
    expect(mismatch.status).toBe(400);
    expect(mismatch.json).toEqual({
      error: "invalid_grant",
      error_description: `client_id in form ("${PLAIN_ID}") does not match credential ("${ADMIN_ID}")`,
    });

    // Not a form: the client authenticates, then there is no grant to read.
    const notForm = await call("POST", "/oauth2/token", { raw: "{}", headers: { authorization: basic(ADMIN_ID, ADMIN_SECRET), "content-type": "application/json" } });
    expect(notForm.status).toBe(400);
    expect(notForm.json).toEqual({
      error: "invalid_request",
      error_description:
        "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed.",
    });

    // A form serde cannot read is axum's FailedToDeserializeFormBody, which MAS turns into a 500.
    for (const form of ["scope=urn:mas:admin", "grant_type=client_credentials&scope=", "grant_type=client_credentials&scope=a&scope=b"]) {
      const r = await tokenRequest(form, { authorization: basic(ADMIN_ID, ADMIN_SECRET) });
      expect(r.status).toBe(500);
      expect(r.json).toEqual({ error: "server_error", error_description: "Failed to deserialize form body" });
    }

    const get = await call("GET", "/oauth2/token");
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
  });

  it("honours accessTokenLifetimeSeconds and refuses clients whose id is not a ULID", async () => {
    const short = await FakeMas.start({ now: () => now, accessTokenLifetimeSeconds: 60 });
    try {
      short.addClient({ clientId: ADMIN_ID, clientSecret: ADMIN_SECRET, admin: true });
      const r = await fetch(`${short.url}/oauth2/token`, {
        method: "POST",
        headers: { authorization: basic(ADMIN_ID, ADMIN_SECRET), "content-type": "application/x-www-form-urlencoded" },
        body: "grant_type=client_credentials&scope=urn:mas:admin",
      });
      expect(((await r.json()) as { expires_in: number }).expires_in).toBe(60);
      expect(() => short.addClient({ clientId: "sync-bot", clientSecret: "x", admin: true })).toThrow(/client ids are ULIDs in MAS \(invalid length\)/);
    } finally {
      await short.close();
    }
  });
});

describe("admin API authentication", () => {
  it("answers 400 without an Authorization header and for another scheme", async () => {
    const none = await call("GET", PATH);
    expect(none.status).toBe(400);
    expect(none.json).toEqual(errors("Missing authorization header"));
    const other = await call("GET", PATH, { headers: { authorization: basic(ADMIN_ID, ADMIN_SECRET) } });
    expect(other.status).toBe(400);
    expect(other.json).toEqual(errors("Invalid authorization header"));
  });

  it("answers 401 for malformed, foreign and unknown tokens", async () => {
    const garbage = await call("GET", PATH, { token: "foo" });
    expect(garbage.status).toBe(401);
    expect(garbage.json).toEqual(errors("Invalid type of access token", "invalid token format"));

    const prefix = await call("GET", PATH, { token: `abc_${"a".repeat(30)}_000000` });
    expect(prefix.json).toEqual(errors("Invalid type of access token", 'unknown token prefix "abc"'));

    const good = await adminToken();
    const crc = good.slice(-6);
    const bent = `${good.slice(0, -1)}${good.endsWith("0") ? "1" : "0"}`;
    const badCrc = await call("GET", PATH, { token: bent });
    expect(badCrc.status).toBe(401);
    expect(badCrc.json).toEqual(errors("Invalid type of access token", `invalid crc "${bent.slice(-6)}", expected "${crc}"`));

    const compat = await call("GET", PATH, { token: "syt_YWRtaW4_abcdefghijklmnopqrst_1a2b3c" });
    expect(compat.status).toBe(401);
    expect(compat.json).toEqual(errors("Invalid type of access token"));

    // Well formed but issued by another server.
    const other = await FakeMas.start({ now: () => now });
    try {
      other.addClient({ clientId: ADMIN_ID, clientSecret: ADMIN_SECRET, admin: true });
      const r = await fetch(`${other.url}/oauth2/token`, {
        method: "POST",
        headers: { authorization: basic(ADMIN_ID, ADMIN_SECRET), "content-type": "application/x-www-form-urlencoded" },
        body: "grant_type=client_credentials&scope=urn:mas:admin",
      });
      const foreign = ((await r.json()) as { access_token: string }).access_token;
      const unknown = await call("GET", PATH, { token: foreign });
      expect(unknown.status).toBe(401);
      expect(unknown.json).toEqual(errors("Unknown access token"));
    } finally {
      await other.close();
    }
  });

  it("answers 401 once the access token has expired, by the clock or by expireAccessTokens()", async () => {
    const token = await adminToken();
    advance(300_000); // expires_at = issued + 300 s; expired only when expires_at < now
    expect((await call("GET", PATH, { token })).status).toBe(200);
    advance(1);
    const late = await call("GET", PATH, { token });
    expect(late.status).toBe(401);
    expect(late.json).toEqual(errors("Access token expired"));

    const fresh = await adminToken();
    expect((await call("GET", PATH, { token: fresh })).status).toBe(200);
    mas.expireAccessTokens();
    const expired = await call("GET", PATH, { token: fresh });
    expect(expired.status).toBe(401);
    expect(expired.json).toEqual(errors("Access token expired"));
    expect((await call("GET", PATH, { token: await adminToken() })).status).toBe(200);
  });

  it("answers 401 for a token without the urn:mas:admin scope", async () => {
    const r = await tokenRequest("grant_type=client_credentials", { authorization: basic(PLAIN_ID, PLAIN_SECRET) });
    const token = (r.json as { access_token: string }).access_token;
    const answer = await call("GET", PATH, { token });
    expect(answer.status).toBe(401);
    expect(answer.json).toEqual(errors("Missing urn:mas:admin scope"));
  });

  it("checks authentication before the path id", async () => {
    const r = await call("GET", `${PATH}/not-a-ulid`);
    expect(r.status).toBe(400);
    expect(r.json).toEqual(errors("Missing authorization header"));
  });
});

describe("creating tokens", () => {
  let token: string;
  beforeEach(async () => {
    token = await adminToken();
  });

  it("answers 201 with the JSON:API resource", async () => {
    const r = await call("POST", PATH, { token, body: { token: "test_token_123", usage_limit: 5, expires_at: "2022-01-16T18:40:00+02:00" } });
    expect(r.status).toBe(201);
    const id = (r.json as { data: { id: string } }).data.id;
    expect(id).toMatch(ULID);
    expect(id.startsWith("01FSHN9AG0")).toBe(true); // the ULID time part is the clock's 2022-01-16T14:40:00Z
    expect(r.json).toEqual(single(id, attrs({ token: "test_token_123", usage_limit: 5, expires_at: "2022-01-16T16:40:00Z" })));
    expect(JSON.stringify(r.json)).toBe(JSON.stringify(single(id, attrs({ token: "test_token_123", usage_limit: 5, expires_at: "2022-01-16T16:40:00Z" }))));
    expect(mas.tokens()).toEqual([
      {
        id,
        token: "test_token_123",
        usageLimit: 5,
        timesUsed: 0,
        createdAt: new Date(T0),
        lastUsedAt: null,
        expiresAt: new Date("2022-01-16T16:40:00Z"),
        revokedAt: null,
      },
    ]);
  });

  it("defaults to 12 random alphanumerics, no usage limit and no expiry", async () => {
    const r = await call("POST", PATH, { token, body: {} });
    expect(r.status).toBe(201);
    const data = (r.json as { data: Resource }).data;
    expect(data.attributes.token).toMatch(/^[A-Za-z0-9]{12}$/);
    expect(data.attributes).toEqual(attrs({ token: data.attributes.token }));
    const again = await create(token, { usage_limit: null, expires_at: null, token: null });
    expect(again.attributes.token).not.toBe(data.attributes.token);
  });

  it("answers 409 when the token string exists", async () => {
    await create(token, { token: "dup" });
    const r = await call("POST", PATH, { token, body: { token: "dup", usage_limit: 1 } });
    expect(r.status).toBe(409);
    expect(r.json).toEqual(errors("A registration token with the same token already exists"));
    expect(mas.tokens()).toHaveLength(1);
  });

  it("rejects bad bodies in plain text, as axum's Json extractor does", async () => {
    const cases: [string, Record<string, string>, number, string][] = [
      ['{"token":"a"}', { "content-type": "text/plain" }, 415, "Expected request with `Content-Type: application/json`"],
      ['{"token":"a"}', {}, 415, "Expected request with `Content-Type: application/json`"],
      ["{", { "content-type": "application/json" }, 400, "Failed to parse the request body as JSON: EOF while parsing an object at line 1 column 1"],
      ["", { "content-type": "application/json" }, 400, "Failed to parse the request body as JSON: EOF while parsing a value at line 1 column 0"],
      ['{"usage_limit": 1,}', { "content-type": "application/json" }, 400, "Failed to parse the request body as JSON: trailing comma at line 1 column 19"],
      ['{"token": "abc', { "content-type": "application/json" }, 400, "Failed to parse the request body as JSON: token: EOF while parsing a string at line 1 column 14"],
      [
        '{"usage_limit":"5"}',
        { "content-type": "application/json" },
        422,
        'Failed to deserialize the JSON body into the target type: usage_limit: invalid type: string "5", expected u32 at line 1 column 18',
      ],
      [
        '{"usage_limit": -1}',
        { "content-type": "application/json; charset=utf-8" },
        422,
        "Failed to deserialize the JSON body into the target type: usage_limit: invalid value: integer `-1`, expected u32 at line 1 column 18",
      ],
      [
        '{\n  "expires_at": 1700000000\n}',
        { "content-type": "application/json" },
        422,
        "Failed to deserialize the JSON body into the target type: expires_at: invalid type: integer `1700000000`, expected an RFC 3339 formatted date and time string at line 2 column 26",
      ],
      [
        '{"token":"x","token":"y"}',
        { "content-type": "application/json" },
        422,
        "Failed to deserialize the JSON body into the target type: duplicate field `token` at line 1 column 20",
      ],
      [
        "[]",
        { "content-type": "application/json" },
        422,
        "Failed to deserialize the JSON body into the target type: invalid length 0, expected struct AddUserRegistrationTokenRequest with 3 elements at line 1 column 2",
      ],
    ];
    for (const [raw, headers, status, text] of cases) {
      const r = await call("POST", PATH, { token, raw, headers });
      expect({ raw, status: r.status, text: r.text }).toEqual({ raw, status, text });
      expect(r.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    }
    expect(mas.tokens()).toEqual([]);
  });
});

describe("listing tokens", () => {
  let token: string;
  beforeEach(async () => {
    token = await adminToken();
  });

  it("pages through 25 tokens, 10 at a time, by following links.next", async () => {
    const made: string[] = [];
    for (let i = 0; i < 25; i++) {
      made.push((await create(token, { token: `t${String(i).padStart(2, "0")}` })).id);
      advance(1000); // distinct ULID times: MAS's ULIDs are not monotonic within a millisecond
    }
    expect([...made].sort()).toEqual(made);

    const seen: string[] = [];
    const pages: ListBody[] = [];
    let next: string | undefined = `${PATH}?page[first]=10`;
    while (next !== undefined) {
      const r = await call("GET", next, { token });
      expect(r.status).toBe(200);
      const body = r.json as ListBody;
      pages.push(body);
      for (const item of body.data ?? []) {
        expect(item.meta).toEqual({ page: { cursor: item.id } });
        seen.push(item.id);
      }
      next = body.links.next;
    }
    expect(seen).toEqual(made);
    expect(pages.map((p) => p.data?.length)).toEqual([10, 10, 5]);
    expect(pages.map((p) => p.meta)).toEqual([{ count: 25 }, { count: 25 }, { count: 25 }]);
    expect(pages[0]?.links).toEqual({
      self: `${PATH}?page[first]=10`,
      first: `${PATH}?page[first]=10`,
      last: `${PATH}?page[last]=10`,
      next: `${PATH}?page[after]=${made[9]}&page[first]=10`,
    });
    expect(pages[1]?.links.self).toBe(`${PATH}?page[after]=${made[9]}&page[first]=10`);
    expect(pages[2]?.links).toEqual({
      self: `${PATH}?page[after]=${made[19]}&page[first]=10`,
      first: `${PATH}?page[first]=10`,
      last: `${PATH}?page[last]=10`,
    });

    // The default page size is 10; cursors are case-insensitive.
    const plain = (await call("GET", PATH, { token })).json as ListBody;
    expect(plain.links.self).toBe(`${PATH}?page[first]=10`);
    expect(plain.data?.map((d) => d.id)).toEqual(made.slice(0, 10));
    const lower = (await call("GET", `${PATH}?page[after]=${made[9]?.toLowerCase()}&page[first]=3`, { token })).json as ListBody;
    expect(lower.data?.map((d) => d.id)).toEqual(made.slice(10, 13));
    expect(lower.links.self).toBe(`${PATH}?page[after]=${made[9]}&page[first]=3`);

    // Backwards: the last N in ascending order, `prev` and never `next`.
    const last = (await call("GET", `${PATH}?page[last]=10`, { token })).json as ListBody;
    expect(last.data?.map((d) => d.id)).toEqual(made.slice(15));
    expect(last.links).toEqual({
      self: `${PATH}?page[last]=10`,
      first: `${PATH}?page[first]=10`,
      last: `${PATH}?page[last]=10`,
      prev: `${PATH}?page[before]=${made[15]}&page[last]=10`,
    });
    const before = (await call("GET", `${PATH}?page[before]=${made[5]}&page[last]=10`, { token })).json as ListBody;
    expect(before.data?.map((d) => d.id)).toEqual(made.slice(0, 5));
    expect(before.links.prev).toBeUndefined();

    // No maximum page size.
    const all = (await call("GET", `${PATH}?page[first]=1000`, { token })).json as ListBody;
    expect(all.data).toHaveLength(25);
    expect(all.links.next).toBeUndefined();
  });

  it("answers 400 for first and last together and for bad paging values", async () => {
    const both = await call("GET", `${PATH}?page[first]=10&page[last]=10`, { token });
    expect(both.status).toBe(400);
    expect(both.json).toEqual(errors("Cannot specify both `page[first]` and `page[last]` parameters"));

    const bad: [string, string][] = [
      ["page[first]=0", "page[first]: invalid value: integer `0`, expected a nonzero usize"],
      ["page[last]=ten", "page[last]: invalid digit found in string"],
      ["page[after]=123", "page[after]: invalid length"],
      ["page[before]=0123456789ABCDEFGHJKMNPQRU", "page[before]: invalid character"],
      ["count=yes", "count: unknown variant `yes`, expected one of `true`, `false`, `only`"],
      ["page[first]=1&page[first]=2", "duplicate field `page[first]`"],
    ];
    for (const [query, detail] of bad) {
      const r = await call("GET", `${PATH}?${query}`, { token });
      expect({ query, status: r.status, body: r.json }).toEqual({
        query,
        status: 400,
        body: errors("Invalid pagination parameters", "Failed to deserialize query string", detail, detail),
      });
    }
  });

  it("counts with count=true|false|only", async () => {
    await create(token, { token: "a" });
    await create(token, { token: "b", usage_limit: 0 });
    const without = await call("GET", `${PATH}?count=false`, { token });
    const body = without.json as ListBody;
    expect(Object.keys(body)).toEqual(["data", "links"]);
    expect(body.links.self).toBe(`${PATH}?count=false&page[first]=10`);
    const only = await call("GET", `${PATH}?filter[valid]=true&count=only`, { token });
    expect(only.json).toEqual({ meta: { count: 1 }, links: { self: `${PATH}?filter[valid]=true&count=only` } });
    const explicit = (await call("GET", `${PATH}?count=true`, { token })).json as ListBody;
    expect(explicit.meta).toEqual({ count: 2 });
    expect(explicit.links.self).toBe(`${PATH}?page[first]=10`);
  });

  it("filters by used, revoked, expired and valid", async () => {
    const unused = await create(token, { token: "unused", usage_limit: 10 });
    advance(1000);
    const used = await create(token, { token: "used", usage_limit: 10 });
    mas.useToken("used");
    advance(1000);
    const revoked = await create(token, { token: "revoked" });
    expect((await call("POST", `${PATH}/${revoked.id}/revoke`, { token })).status).toBe(200);
    advance(1000);
    const usedRevoked = await create(token, { token: "used-revoked" });
    mas.useToken("used-revoked");
    expect((await call("POST", `${PATH}/${usedRevoked.id}/revoke`, { token })).status).toBe(200);
    advance(1000);
    const expired = await create(token, { token: "expired", expires_at: "2022-01-16T14:40:00Z" });
    advance(1000);
    const exhausted = await create(token, { token: "exhausted", usage_limit: 1 });
    mas.useToken("exhausted");

    const ids = async (query: string): Promise<string[]> => {
      const r = await call("GET", `${PATH}?${query}`, { token });
      expect(r.status).toBe(200);
      return ((r.json as ListBody).data ?? []).map((d) => d.attributes.token);
    };
    expect(await ids("filter[used]=true")).toEqual(["used", "used-revoked", "exhausted"]);
    expect(await ids("filter[used]=false")).toEqual(["unused", "revoked", "expired"]);
    expect(await ids("filter[revoked]=true")).toEqual(["revoked", "used-revoked"]);
    expect(await ids("filter[expired]=true")).toEqual(["expired"]);
    expect(await ids("filter[expired]=false")).toEqual(["unused", "used", "revoked", "used-revoked", "exhausted"]);
    expect(await ids("filter[valid]=true")).toEqual(["unused", "used"]);
    expect(await ids("filter[valid]=false")).toEqual(["revoked", "used-revoked", "expired", "exhausted"]);
    expect(await ids("filter[used]=true&filter[revoked]=false")).toEqual(["used", "exhausted"]);
    expect(await ids("filter[used]=")).toHaveLength(6); // empty means no filter
    expect([unused, used, revoked, usedRevoked, expired, exhausted].every((t) => ULID.test(t.id))).toBe(true);

    // Links name the filters in MAS's fixed order, whatever order they came in.
    const r = await call("GET", `${PATH}?filter[valid]=false&filter[used]=true&page[first]=2`, { token });
    const body = r.json as ListBody;
    expect(body.meta).toEqual({ count: 2 });
    expect(body.links.self).toBe(`${PATH}?filter[used]=true&filter[valid]=false&page[first]=2`);
    expect(body.links.next).toBeUndefined();

    for (const [query, detail] of [
      ["filter[used]=yes", "filter[used]: provided string was not `true` or `false`"],
      ["filter[valid]=true&filter[valid]=false", "filter[valid]: unsupported value"],
    ] as const) {
      const bad = await call("GET", `${PATH}?${query}`, { token });
      expect(bad.status).toBe(400);
      expect(bad.json).toEqual(errors("Invalid filter parameters", "Failed to deserialize query string", detail, detail));
    }
  });
});

describe("one token", () => {
  let token: string;
  beforeEach(async () => {
    token = await adminToken();
  });

  it("gets a token by id, in any case; 404 for an unknown ULID, 400 for anything else", async () => {
    const made = await create(token, { token: "test_token_123", usage_limit: 5 });
    const r = await call("GET", `${PATH}/${made.id}`, { token });
    expect(r.status).toBe(200);
    expect(r.json).toEqual(single(made.id, attrs({ token: "test_token_123", usage_limit: 5 })));
    const lower = await call("GET", `${PATH}/${made.id.toLowerCase()}`, { token });
    expect(lower.json).toEqual(r.json);

    const unknown = await call("GET", `${PATH}/01040g2081040g2081040g2081`, { token });
    expect(unknown.status).toBe(404);
    expect(unknown.json).toEqual(errors("Registration token with ID 01040G2081040G2081040G2081 not found"));

    const notUlid = await call("GET", `${PATH}/not-a-ulid`, { token });
    expect(notUlid.status).toBe(400);
    expect(notUlid.json).toEqual(errors("Invalid ULID in path", "invalid length"));
    const badChar = await call("GET", `${PATH}/01040G2081040G2081040G208U`, { token });
    expect(badChar.json).toEqual(errors("Invalid ULID in path", "invalid character"));

    expect((await call("DELETE", `${PATH}/${made.id}`, { token })).status).toBe(405);
    expect((await call("GET", `${PATH}/${made.id}/`, { token })).status).toBe(404);
  });

  it("updates usage_limit and expires_at; null removes them, an absent field stays", async () => {
    const made = await create(token, { token: "upd", usage_limit: 5 });
    const set = await call("PUT", `${PATH}/${made.id}`, { token, body: { usage_limit: 10, expires_at: "2022-02-15T14:40:00Z" } });
    expect(set.status).toBe(200);
    expect(set.json).toEqual(single(made.id, attrs({ token: "upd", usage_limit: 10, expires_at: "2022-02-15T14:40:00Z" })));

    const keep = await call("PUT", `${PATH}/${made.id}`, { token, body: {} });
    expect(keep.json).toEqual(set.json);

    const clearLimit = await call("PUT", `${PATH}/${made.id}`, { token, body: { usage_limit: null } });
    expect(clearLimit.json).toEqual(single(made.id, attrs({ token: "upd", expires_at: "2022-02-15T14:40:00Z" })));
    const clearExpiry = await call("PUT", `${PATH}/${made.id}`, { token, body: { expires_at: null } });
    expect(clearExpiry.json).toEqual(single(made.id, attrs({ token: "upd" })));

    const unknown = await call("PUT", `${PATH}/01040G2081040G2081040G2081`, { token, body: { usage_limit: 1 } });
    expect(unknown.status).toBe(404);
    expect(unknown.json).toEqual(errors("Registration token with ID 01040G2081040G2081040G2081 not found"));
    // The body is read before the lookup.
    const badBody = await call("PUT", `${PATH}/01040G2081040G2081040G2081`, { token, raw: '{"usage_limit": true}', headers: { "content-type": "application/json" } });
    expect(badBody.status).toBe(422);
    expect(badBody.text).toBe("Failed to deserialize the JSON body into the target type: usage_limit: invalid type: boolean `true`, expected u32 at line 1 column 20");
  });

  it("revokes and unrevokes, refusing to do either twice", async () => {
    const made = await create(token, { token: "rev", usage_limit: 5 });
    advance(60_000);
    const revoked = await call("POST", `${PATH}/${made.id}/revoke`, { token });
    expect(revoked.status).toBe(200);
    expect(revoked.json).toEqual(
      single(made.id, attrs({ token: "rev", usage_limit: 5, valid: false, revoked_at: "2022-01-16T14:41:00Z" }), `${PATH}/${made.id}/revoke`),
    );
    const again = await call("POST", `${PATH}/${made.id}/revoke`, { token });
    expect(again.status).toBe(400);
    expect(again.json).toEqual(errors(`Registration token with ID ${made.id} is already revoked`));

    const unrevoked = await call("POST", `${PATH}/${made.id}/unrevoke`, { token });
    expect(unrevoked.status).toBe(200);
    expect(unrevoked.json).toEqual(single(made.id, attrs({ token: "rev", usage_limit: 5 }), `${PATH}/${made.id}/unrevoke`));
    const notRevoked = await call("POST", `${PATH}/${made.id}/unrevoke`, { token });
    expect(notRevoked.status).toBe(400);
    expect(notRevoked.json).toEqual(errors(`Registration token with ID ${made.id} is not revoked`));

    const unknown = await call("POST", `${PATH}/01040G2081040G2081040G2081/revoke`, { token });
    expect(unknown.status).toBe(404);
    expect(unknown.json).toEqual(errors("Registration token with ID 01040G2081040G2081040G2081 not found"));
    expect((await call("GET", `${PATH}/${made.id}/revoke`, { token })).status).toBe(405);
  });

  it("computes valid from the clock, the usage limit and revocation", async () => {
    const made = await create(token, { token: "clock", usage_limit: 2, expires_at: "2022-01-16T14:41:00Z" });
    const valid = async (): Promise<boolean> =>
      ((await call("GET", `${PATH}/${made.id}`, { token })).json as { data: Resource }).data.attributes.valid;
    const listed = async (query: string): Promise<number> => ((await call("GET", `${PATH}?${query}`, { token })).json as ListBody).data?.length ?? 0;

    expect(await valid()).toBe(true);
    mas.useToken("clock");
    expect(mas.tokens()[0]).toMatchObject({ timesUsed: 1, lastUsedAt: new Date(T0) });
    expect(await valid()).toBe(true);

    at("2022-01-16T14:41:00Z"); // now == expires_at
    expect(await valid()).toBe(false);
    // MAS's list filters disagree with the attribute at this exact instant (expired: `<`, valid: `>=`).
    expect(await listed("filter[expired]=true")).toBe(0);
    expect(await listed("filter[valid]=true")).toBe(1);
    expect(() => mas.useToken("clock")).toThrow(/not valid/);

    at("2022-01-16T14:41:00.001Z");
    expect(await listed("filter[expired]=true")).toBe(1);
    expect(await listed("filter[valid]=true")).toBe(0);

    // Removing the expiry makes it valid again until the limit is reached.
    expect((await call("PUT", `${PATH}/${made.id}`, { token, body: { expires_at: null } })).status).toBe(200);
    expect(await valid()).toBe(true);
    mas.useToken("clock");
    const after = ((await call("GET", `${PATH}/${made.id}`, { token })).json as { data: Resource }).data.attributes;
    expect(after).toEqual(attrs({ token: "clock", usage_limit: 2, times_used: 2, valid: false, last_used_at: "2022-01-16T14:41:00.001Z" }));
    expect(() => mas.useToken("clock")).toThrow(/not valid/);
    expect(() => mas.useToken("nope")).toThrow(/no registration token/);
  });
});

describe("revocation endpoint (RFC 7009)", () => {
  const okEmpty = (r: Answer): void => {
    expect(r.status).toBe(200);
    expect(r.text).toBe("");
  };

  it("ends the session of the client's own access token: 200 with no body, then the admin API answers 401 'Access token revoked'", async () => {
    const token = await adminToken();
    expect((await call("GET", PATH, { token })).status).toBe(200);
    expect(mas.liveAccessTokens()).toBe(1);
    okEmpty(await revokeRequest(`token=${token}&token_type_hint=access_token`, { authorization: basic(ADMIN_ID, ADMIN_SECRET) }));
    const after = await call("GET", PATH, { token });
    expect(after.status).toBe(401);
    expect(after.json).toEqual(errors("Access token revoked"));
    expect(mas.liveAccessTokens()).toBe(0);
    expect(mas.revokedAccessTokens()).toBe(1);
    // Again, and for an expired, unknown or malformed token: 200, nothing to say (RFC 7009 2.2).
    okEmpty(await revokeRequest(`token=${token}`, { authorization: basic(ADMIN_ID, ADMIN_SECRET) }));
    const expiring = await adminToken();
    advance(301_000);
    okEmpty(await revokeRequest(`token=${expiring}`, { authorization: basic(ADMIN_ID, ADMIN_SECRET) }));
    okEmpty(await revokeRequest(`token=${expiring.slice(0, -6)}AAAAAA`, { authorization: basic(ADMIN_ID, ADMIN_SECRET) }));
    okEmpty(await revokeRequest("token=not-a-token", { authorization: basic(ADMIN_ID, ADMIN_SECRET) }));
    expect(mas.revokedAccessTokens()).toBe(1);
  });

  it("authenticates the client as the token endpoint does: its one method, its secret", async () => {
    const post = await tokenRequest(`grant_type=client_credentials&scope=urn:mas:admin&client_id=${POST_ID}&client_secret=${POST_SECRET}`);
    const postToken = (post.json as { access_token: string }).access_token;
    const invalidClient = { error: "invalid_client", error_description: "Client authentication failed." };
    const asBasic = await revokeRequest(`token=${postToken}`, { authorization: basic(POST_ID, POST_SECRET) });
    expect(asBasic.status).toBe(401);
    expect(asBasic.json).toEqual(invalidClient);
    const wrongSecret = await revokeRequest(`token=${postToken}&client_id=${POST_ID}&client_secret=nope`);
    expect(wrongSecret.status).toBe(401);
    expect(wrongSecret.json).toEqual(invalidClient);
    expect(mas.liveAccessTokens()).toBe(1);
    okEmpty(await revokeRequest(`token=${postToken}&client_id=${POST_ID}&client_secret=${POST_SECRET}`));
    expect(mas.liveAccessTokens()).toBe(0);

    const none = await revokeRequest(`token=${postToken}`);
    expect(none.status).toBe(400);
    expect(none.json).toEqual({ error: "invalid_request", error_description: "No credentials were presented" });
  });

  it("refuses another client's token (401 unauthorized_client) and a hint it does not handle (400 unsupported_token_type)", async () => {
    const token = await adminToken();
    const other = await revokeRequest(`token=${token}&client_id=${POST_ID}&client_secret=${POST_SECRET}`);
    expect(other.status).toBe(401);
    expect(other.json).toEqual({ error: "unauthorized_client", error_description: "The client is not authorized to request an access token using this method." });
    const hint = await revokeRequest(`token=${token}&token_type_hint=pct`, { authorization: basic(ADMIN_ID, ADMIN_SECRET) });
    expect(hint.status).toBe(400);
    expect(hint.json).toEqual({
      error: "unsupported_token_type",
      error_description: "The authorization server does not support the revocation of the presented token type.",
    });
    // A refresh-token hint for an access token: an unknown refresh token, 200, nothing revoked.
    okEmpty(await revokeRequest(`token=${token}&token_type_hint=refresh_token`, { authorization: basic(ADMIN_ID, ADMIN_SECRET) }));
    expect(mas.liveAccessTokens()).toBe(1);
  });

  it("answers malformed requests as MAS does", async () => {
    const auth = { authorization: basic(ADMIN_ID, ADMIN_SECRET) };
    const noToken = await revokeRequest("token_type_hint=access_token", auth);
    expect(noToken.status).toBe(500);
    expect(noToken.json).toEqual({ error: "server_error", error_description: "Failed to deserialize form body" });
    const twice = await revokeRequest("token=a&token=b", auth);
    expect(twice.status).toBe(500);
    // No form at all: the client is authenticated first, then 400.
    const noForm = await call("POST", "/oauth2/revoke", { headers: auth });
    expect(noForm.status).toBe(400);
    expect(noForm.json).toEqual({ error: "invalid_request", error_description: expect.any(String) });
    const get = await call("GET", "/oauth2/revoke");
    expect(get.status).toBe(405);
    expect(get.headers.get("allow")).toBe("POST");
  });
});

describe("paths no route matches", () => {
  it("get MAS's fallback: 404 with an HTML page, also under /api/admin and /oauth2", async () => {
    for (const path of ["/nowhere", "/api/admin/v1/nope", "/oauth2/oauth2/token", `${PATH}/01J9Z8ZQ5N6M7P8Q9R0S1T2V3W/revoke/x`]) {
      const r = await call("POST", path);
      expect(r.status, path).toBe(404);
      expect(r.headers.get("content-type"), path).toBe("text/html; charset=utf-8");
      expect(r.text, path).toMatch(/^<!DOCTYPE html>/);
    }
  });

  it("without the adminapi resource, the admin API is such a path; the token endpoint still works", async () => {
    const bare = await FakeMas.start({ now: () => now, adminApi: false });
    try {
      bare.addClient({ clientId: ADMIN_ID, clientSecret: ADMIN_SECRET, admin: true });
      const t = await fetch(`${bare.url}/oauth2/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", authorization: basic(ADMIN_ID, ADMIN_SECRET) },
        body: "grant_type=client_credentials&scope=urn:mas:admin",
      });
      expect(t.status).toBe(200);
      const { access_token: token } = (await t.json()) as { access_token: string };
      const r = await fetch(`${bare.url}${PATH}`, { headers: { authorization: `Bearer ${token}` } });
      expect(r.status).toBe(404);
      expect(r.headers.get("content-type")).toBe("text/html; charset=utf-8");
      await r.text();
    } finally {
      await bare.close();
    }
  });
});

describe("bookkeeping", () => {
  it("counts requests per endpoint and hands out copies", async () => {
    const token = await adminToken();
    const made = await create(token, { token: "x" });
    await call("GET", PATH, { token });
    await call("GET", `${PATH}/${made.id}`, { token });
    await call("PUT", `${PATH}/${made.id}`, { token, body: {} });
    await call("POST", `${PATH}/${made.id}/revoke`, { token });
    await call("POST", `${PATH}/${made.id}/unrevoke`, { token });
    await call("GET", "/nowhere");
    await revokeRequest(`token=${token}`, { authorization: basic(ADMIN_ID, ADMIN_SECRET) });
    expect(mas.requestCounts()).toEqual({ token: 1, "oauth-revoke": 1, list: 1, get: 1, add: 1, update: 1, revoke: 1, unrevoke: 1, other: 1 });
    expect(mas.totalRequests()).toBe(9);
    expect(mas.tokenRequests()).toBe(1);
    mas.resetCounts();
    expect(mas.totalRequests()).toBe(0);

    const copy = mas.tokens();
    const first = copy[0];
    if (first === undefined) throw new Error("expected a token");
    first.token = "changed";
    first.createdAt.setTime(0);
    expect(mas.tokens()[0]).toMatchObject({ token: "x", createdAt: new Date(T0) });
  });
});
