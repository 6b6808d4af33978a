/**
 * The test homeserver's Synapse registration-token admin API, over plain fetch. Expected statuses,
 * errcodes and messages are Synapse's (synapse/rest/admin/registration_tokens.py, the registration
 * store, synapse/http/servlet.py `parse_boolean`, synapse/rest/admin/_base.py).
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeHomeserver, type RegistrationTokenInfo } from "../fakes/homeserver.ts";

const ADMIN = "@admin:example.org";
const USER = "@user:example.org";
const T0 = 1_750_000_000_000;
const BASE = "/_synapse/admin/v1/registration_tokens";

interface Answer {
  status: number;
  body: unknown;
  text: string;
}

let hs: FakeHomeserver;
let adminToken: string;
let userToken: string;

async function call(method: string, path: string, opts: { token?: string | null; body?: unknown; raw?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? adminToken : opts.token;
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (opts.raw !== undefined) body = opts.raw;
  else if (opts.body !== undefined) body = JSON.stringify(opts.body);
  if (method === "GET" || method === "HEAD") body = undefined; // fetch sends none
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${hs.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body: parsed, text };
}

const create = (body: unknown, token?: string): Promise<Answer> => call("POST", `${BASE}/new`, { body, ...(token !== undefined ? { token } : {}) });
const createRaw = (raw: string): Promise<Answer> => call("POST", `${BASE}/new`, { raw });
const one = (token: string): string => `${BASE}/${encodeURIComponent(token)}`;
const listed = async (query = ""): Promise<string[]> => {
  const a = await call("GET", `${BASE}${query}`);
  expect(a.status).toBe(200);
  return (a.body as { registration_tokens: RegistrationTokenInfo[] }).registration_tokens.map((t) => t.token);
};
const err = (errcode: string, error: string): { errcode: string; error: string } => ({ errcode, error });

beforeEach(async () => {
  hs = await FakeHomeserver.start({ clock: () => T0 });
  adminToken = hs.registerUser(ADMIN, undefined, { admin: true });
  userToken = hs.registerUser(USER);
});

afterEach(async () => {
  await hs.close();
});

describe("access", () => {
  it("needs an access token (401) and a server admin (403), on every endpoint, before the body is read", async () => {
    await create({ token: "abcd" });
    const endpoints: [string, string][] = [
      ["GET", BASE],
      ["POST", `${BASE}/new`],
      ["GET", one("abcd")],
      ["PUT", one("abcd")],
      ["DELETE", one("abcd")],
    ];
    for (const [method, path] of endpoints) {
      const none = await call(method, path, { token: null, raw: "{}" });
      expect(none.status).toBe(401);
      expect(none.body).toEqual(err("M_MISSING_TOKEN", "Missing access token."));
      const unknown = await call(method, path, { token: "syt_nope", raw: "{}" });
      expect(unknown.status).toBe(401);
      expect(unknown.body).toEqual({ errcode: "M_UNKNOWN_TOKEN", error: "Unrecognised access token.", soft_logout: false });
      // A non-admin is refused before the (here invalid) body is parsed.
      const user = await call(method, path, { token: userToken, raw: "not json" });
      expect(user.status).toBe(403);
      expect(user.body).toEqual(err("M_FORBIDDEN", "You are not a server admin"));
    }
    expect(hs.registrationTokens().map((t) => t.token)).toEqual(["abcd"]);
  });

  it("setAdmin grants and revokes; registerUser's third argument sets the flag; two arguments still work", async () => {
    hs.setAdmin(USER, true);
    expect((await call("GET", BASE, { token: userToken })).status).toBe(200);
    hs.setAdmin(USER, false);
    expect((await call("GET", BASE, { token: userToken })).status).toBe(403);
    // The flag belongs to the user, not the device: every token of an admin works.
    const second = hs.registerUser(ADMIN, "syt_second_device");
    expect(second).toBe("syt_second_device");
    expect((await call("GET", BASE, { token: second })).status).toBe(200);
    hs.registerUser(ADMIN, "syt_third", { admin: false });
    expect((await call("GET", BASE, { token: adminToken })).status).toBe(403);
    expect(() => hs.setAdmin("not-a-user", true)).toThrow(/invalid user id/);
  });

  it("the access_token query parameter works as for the client API", async () => {
    const a = await call("GET", `${BASE}?access_token=${adminToken}`, { token: null });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ registration_tokens: [] });
  });
});

describe("POST /new", () => {
  it("with defaults: 16 random characters from [A-Za-z0-9._~-], unlimited, no expiry, in Synapse's key order", async () => {
    const a = await create({});
    expect(a.status).toBe(200);
    const t = a.body as RegistrationTokenInfo;
    expect(t.token).toMatch(/^[A-Za-z0-9._~-]{16}$/);
    expect(a.text).toBe(`{"token":${JSON.stringify(t.token)},"uses_allowed":null,"pending":0,"completed":0,"expiry_time":null}`);
    expect(hs.registrationTokens()).toEqual([t]);
  });

  it("with every field given", async () => {
    const a = await create({ token: "defg", uses_allowed: 1, expiry_time: T0 + 60_000 });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ token: "defg", uses_allowed: 1, pending: 0, completed: 0, expiry_time: T0 + 60_000 });
  });

  it("accepts the whole character set, 1 and 64 characters, uses_allowed 0, and an expiry_time of exactly now", async () => {
    const all = "ABCXYZabcxyz0189._~-";
    expect((await create({ token: all })).status).toBe(200);
    expect((await create({ token: "x" })).status).toBe(200);
    expect((await create({ token: "a".repeat(64) })).status).toBe(200);
    const zero = await create({ token: "zero", uses_allowed: 0, expiry_time: T0 });
    expect(zero.status).toBe(200);
    expect(zero.body).toEqual({ token: "zero", uses_allowed: 0, pending: 0, completed: 0, expiry_time: T0 });
    const one1 = await create({ length: 1 });
    expect((one1.body as RegistrationTokenInfo).token).toMatch(/^[A-Za-z0-9._~-]$/);
    const long = await create({ length: 64, uses_allowed: null, expiry_time: null });
    expect(long.status).toBe(200);
    expect((long.body as RegistrationTokenInfo).token).toHaveLength(64);
  });

  it("a given token makes length irrelevant, even an invalid one", async () => {
    const a = await create({ token: "given", length: "nonsense" });
    expect(a.status).toBe(200);
    expect((a.body as RegistrationTokenInfo).token).toBe("given");
  });

  const cases: [string, string, string][] = [
    ["token is a number", `{"token": 5}`, "token must be a string"],
    ["token is null", `{"token": null}`, "token must be a string"],
    ["token is empty", `{"token": ""}`, "token must not be empty and must not be longer than 64 characters"],
    ["token has 65 characters", JSON.stringify({ token: "a".repeat(65) }), "token must not be empty and must not be longer than 64 characters"],
    ["token has a slash", `{"token": "ab/cd"}`, "token must consist only of characters matched by the regex [A-Za-z0-9-_]"],
    ["token has a space", `{"token": "ab cd"}`, "token must consist only of characters matched by the regex [A-Za-z0-9-_]"],
    ["token has a non-ASCII letter", `{"token": "caf\u00e9"}`, "token must consist only of characters matched by the regex [A-Za-z0-9-_]"],
    // Python counts code points: 63 letters and an emoji are 64 characters, so the charset check answers.
    ["token of 64 code points, one astral", JSON.stringify({ token: `${"a".repeat(63)}\u{1F600}` }), "token must consist only of characters matched by the regex [A-Za-z0-9-_]"],
    ["length is a string", `{"length": "16"}`, "length must be an integer"],
    ["length is a float literal", `{"length": 16.0}`, "length must be an integer"],
    ["length is an exponent literal", `{"length": 1e1}`, "length must be an integer"],
    ["length is a boolean", `{"length": true}`, "length must be an integer"],
    ["length is null", `{"length": null}`, "length must be an integer"],
    ["length is 0", `{"length": 0}`, "length must be greater than zero and not greater than 64"],
    ["length is 65", `{"length": 65}`, "length must be greater than zero and not greater than 64"],
    ["length is negative", `{"length": -3}`, "length must be greater than zero and not greater than 64"],
    ["uses_allowed is negative", `{"uses_allowed": -1}`, "uses_allowed must be a non-negative integer or null"],
    ["uses_allowed is a float literal", `{"uses_allowed": 2.0}`, "uses_allowed must be a non-negative integer or null"],
    ["uses_allowed is a string", `{"uses_allowed": "3"}`, "uses_allowed must be a non-negative integer or null"],
    ["uses_allowed is a boolean", `{"uses_allowed": false}`, "uses_allowed must be a non-negative integer or null"],
    ["expiry_time is a string", `{"expiry_time": "tomorrow"}`, "expiry_time must be an integer or null"],
    ["expiry_time is a float literal", `{"expiry_time": ${T0 + 1000}.5}`, "expiry_time must be an integer or null"],
    ["expiry_time is in the past", `{"expiry_time": ${T0 - 1}}`, "expiry_time must not be in the past"],
    // Synapse checks in this order: token (or length), then uses_allowed, then expiry_time.
    ["token before uses_allowed", `{"token": "", "uses_allowed": -1}`, "token must not be empty and must not be longer than 64 characters"],
    ["uses_allowed before expiry_time", `{"uses_allowed": -1, "expiry_time": 1}`, "uses_allowed must be a non-negative integer or null"],
    // Python's json keeps the last of duplicate keys.
    ["the last duplicate key counts", `{"uses_allowed": 1, "uses_allowed": -1}`, "uses_allowed must be a non-negative integer or null"],
  ];
  for (const [name, raw, message] of cases) {
    it(`400 M_INVALID_PARAM when ${name}`, async () => {
      const a = await createRaw(raw);
      expect(a.status).toBe(400);
      expect(a.body).toEqual(err("M_INVALID_PARAM", message));
      expect(hs.registrationTokens()).toEqual([]);
    });
  }

  it("400 M_INVALID_PARAM 'Token already exists: X', after the field checks", async () => {
    await create({ token: "dup" });
    const a = await create({ token: "dup", uses_allowed: 5 });
    expect(a.status).toBe(400);
    expect(a.body).toEqual(err("M_INVALID_PARAM", "Token already exists: dup"));
    const b = await create({ token: "dup", uses_allowed: -5 });
    expect(b.body).toEqual(err("M_INVALID_PARAM", "uses_allowed must be a non-negative integer or null"));
    expect(hs.registrationTokens()).toEqual([{ token: "dup", uses_allowed: null, pending: 0, completed: 0, expiry_time: null }]);
  });

  it("a body that is not a JSON object: 400 M_NOT_JSON / M_BAD_JSON", async () => {
    expect((await createRaw("")).body).toEqual(err("M_NOT_JSON", "Content not JSON."));
    expect((await createRaw("{uses_allowed: 1}")).body).toEqual(err("M_NOT_JSON", "Content not JSON."));
    const arr = await createRaw("[]");
    expect(arr.status).toBe(400);
    expect(arr.body).toEqual(err("M_BAD_JSON", "Content must be a JSON object."));
  });

  it("500 when three random tokens in a row already exist", async () => {
    const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~-";
    for (const c of alphabet) expect((await create({ token: c })).status).toBe(200);
    const a = await create({ length: 1 });
    expect(a.status).toBe(500);
    expect(a.body).toEqual(err("M_UNKNOWN", "Unable to generate a unique registration token. Try again with a greater length"));
    expect(hs.registrationTokens()).toHaveLength(alphabet.length);
  });

  it("values beyond PostgreSQL's column types are a 500 (uses_allowed INT, expiry_time BIGINT)", async () => {
    expect((await create({ token: "max", uses_allowed: 2_147_483_647 })).status).toBe(200);
    const big = await createRaw(`{"token": "big", "uses_allowed": 2147483648}`);
    expect(big.status).toBe(500);
    expect(big.body).toEqual(err("M_UNKNOWN", "Internal server error"));
    const far = await createRaw(`{"token": "far", "expiry_time": 9223372036854775808}`);
    expect(far.status).toBe(500);
    // An existing token is reported first (Synapse looks before it inserts).
    expect((await createRaw(`{"token": "max", "uses_allowed": 2147483648}`)).body).toEqual(err("M_INVALID_PARAM", "Token already exists: max"));
    expect(hs.registrationTokens().map((t) => t.token)).toEqual(["max"]);
  });
});

describe("GET /{token}", () => {
  it("returns the token, or 404 M_NOT_FOUND 'No such registration token: X'", async () => {
    await create({ token: "abcd", uses_allowed: 3 });
    const a = await call("GET", one("abcd"));
    expect(a.status).toBe(200);
    expect(a.text).toBe(`{"token":"abcd","uses_allowed":3,"pending":0,"completed":0,"expiry_time":null}`);
    const missing = await call("GET", one("1234"));
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual(err("M_NOT_FOUND", "No such registration token: 1234"));
  });

  it("unquotes the path like Synapse; '/new' is the create servlet's path (405); a trailing slash names the empty token", async () => {
    await create({ token: "a~b.c" });
    expect((await call("GET", `${BASE}/a%7Eb%2Ec`)).status).toBe(200);
    const slash = await call("GET", `${BASE}/a%2Fb`);
    expect(slash.body).toEqual(err("M_NOT_FOUND", "No such registration token: a/b"));
    const empty = await call("GET", `${BASE}/`);
    expect(empty.status).toBe(404);
    expect(empty.body).toEqual(err("M_NOT_FOUND", "No such registration token: "));
    await create({ token: "new" });
    for (const method of ["GET", "PUT", "DELETE"]) {
      const a = await call(method, `${BASE}/new`, { raw: "{}" });
      expect(a.status).toBe(405);
      expect(a.body).toEqual(err("M_UNRECOGNIZED", "Unrecognized request"));
    }
    expect((await call("POST", BASE, { raw: "{}" })).status).toBe(405);
    expect((await call("GET", `${BASE}/a/b`)).status).toBe(404);
  });
});

describe("PUT /{token}", () => {
  beforeEach(async () => {
    await create({ token: "defg", uses_allowed: 1 });
  });

  it("sets what is given, clears what is null, keeps what is omitted", async () => {
    const a = await call("PUT", one("defg"), { body: { expiry_time: T0 + 5000 } });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ token: "defg", uses_allowed: 1, pending: 0, completed: 0, expiry_time: T0 + 5000 });
    const b = await call("PUT", one("defg"), { body: { uses_allowed: 5 } });
    expect(b.body).toEqual({ token: "defg", uses_allowed: 5, pending: 0, completed: 0, expiry_time: T0 + 5000 });
    const c = await call("PUT", one("defg"), { body: { uses_allowed: null, expiry_time: null } });
    expect(c.text).toBe(`{"token":"defg","uses_allowed":null,"pending":0,"completed":0,"expiry_time":null}`);
    const d = await call("PUT", one("defg"), { body: {} });
    expect(d.status).toBe(200);
    expect(d.body).toEqual(c.body);
    expect(hs.registrationTokens()).toEqual([c.body]);
  });

  it("404 for an unknown token, with or without changes", async () => {
    for (const body of [{}, { uses_allowed: 2 }]) {
      const a = await call("PUT", one("nope"), { body });
      expect(a.status).toBe(404);
      expect(a.body).toEqual(err("M_NOT_FOUND", "No such registration token: nope"));
    }
  });

  const cases: [string, string][] = [
    [`{"uses_allowed": -1}`, "uses_allowed must be a non-negative integer or null"],
    [`{"uses_allowed": 1.0}`, "uses_allowed must be a non-negative integer or null"],
    [`{"uses_allowed": "2"}`, "uses_allowed must be a non-negative integer or null"],
    [`{"expiry_time": "soon"}`, "expiry_time must be an integer or null"],
    [`{"expiry_time": 1.5e12}`, "expiry_time must be an integer or null"],
    [`{"expiry_time": ${T0 - 1}}`, "expiry_time must not be in the past"],
  ];
  for (const [raw, message] of cases) {
    it(`400 M_INVALID_PARAM for ${raw}, checked before the token is looked up`, async () => {
      for (const token of ["defg", "nope"]) {
        const a = await call("PUT", one(token), { raw });
        expect(a.status).toBe(400);
        expect(a.body).toEqual(err("M_INVALID_PARAM", message));
      }
      expect(hs.registrationTokens()).toEqual([{ token: "defg", uses_allowed: 1, pending: 0, completed: 0, expiry_time: null }]);
    });
  }

  it("an expiry_time of exactly now is accepted; uses_allowed 0 is accepted", async () => {
    const a = await call("PUT", one("defg"), { body: { uses_allowed: 0, expiry_time: T0 } });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ token: "defg", uses_allowed: 0, pending: 0, completed: 0, expiry_time: T0 });
  });

  it("the body must be a JSON object", async () => {
    const a = await call("PUT", one("defg"), { raw: "null" });
    expect(a.status).toBe(400);
    expect(a.body).toEqual(err("M_BAD_JSON", "Content must be a JSON object."));
  });
});

describe("DELETE /{token}", () => {
  it("answers {} and the token is gone; 404 when it does not exist", async () => {
    await create({ token: "wxyz" });
    const a = await call("DELETE", one("wxyz"));
    expect(a.status).toBe(200);
    expect(a.text).toBe("{}");
    expect((await call("GET", one("wxyz"))).status).toBe(404);
    const again = await call("DELETE", one("wxyz"));
    expect(again.status).toBe(404);
    expect(again.body).toEqual(err("M_NOT_FOUND", "No such registration token: wxyz"));
    expect(hs.registrationTokens()).toEqual([]);
  });
});

describe("GET list and the valid filter", () => {
  it("lists every token in creation order, without paging", async () => {
    for (let i = 0; i < 120; i++) await create({ token: `t${i}` });
    const a = await call("GET", BASE);
    expect(a.status).toBe(200);
    const tokens = (a.body as { registration_tokens: RegistrationTokenInfo[] }).registration_tokens;
    expect(tokens).toHaveLength(120);
    expect(tokens[0]).toEqual({ token: "t0", uses_allowed: null, pending: 0, completed: 0, expiry_time: null });
    expect(Object.keys(a.body as object)).toEqual(["registration_tokens"]);
  });

  it("valid counts pending and completed uses against uses_allowed, and expiry against the server clock", async () => {
    await create({ token: "unlimited" });
    await create({ token: "three", uses_allowed: 3 });
    await create({ token: "two", uses_allowed: 2 });
    await create({ token: "zero", uses_allowed: 0 });
    await create({ token: "expiring", expiry_time: T0 + 1000 });

    // "two": one registration finished, one under way — its two uses are taken.
    expect(hs.useRegistrationToken("two", { complete: true })).toEqual({ token: "two", uses_allowed: 2, pending: 0, completed: 1, expiry_time: null });
    expect(hs.useRegistrationToken("two", { complete: false })).toEqual({ token: "two", uses_allowed: 2, pending: 1, completed: 1, expiry_time: null });
    hs.useRegistrationToken("three", { complete: true });
    hs.useRegistrationToken("three", { complete: true });

    expect(await listed("?valid=true")).toEqual(["unlimited", "three", "expiring"]);
    expect(await listed("?valid=false")).toEqual(["two", "zero"]);
    expect(await listed()).toEqual(["unlimited", "three", "two", "zero", "expiring"]);
    const two = await call("GET", one("two"));
    expect(two.body).toEqual({ token: "two", uses_allowed: 2, pending: 1, completed: 1, expiry_time: null });

    // One millisecond before the expiry it is valid; at expiry_time it is not.
    hs.setNow(T0 + 999);
    expect(await listed("?valid=true")).toContain("expiring");
    hs.setNow(T0 + 1000);
    expect(await listed("?valid=true")).toEqual(["unlimited", "three"]);
    expect(await listed("?valid=false")).toEqual(["two", "zero", "expiring"]);

    // Raising uses_allowed over an admin PUT makes "two" valid again.
    await call("PUT", one("two"), { body: { uses_allowed: 3 } });
    expect(await listed("?valid=true")).toEqual(["unlimited", "three", "two"]);
  });

  it("valid must be exactly true or false", async () => {
    for (const v of ["yes", "True", "1", ""]) {
      const a = await call("GET", `${BASE}?valid=${v}`);
      expect(a.status).toBe(400);
      expect(a.body).toEqual(err("M_INVALID_PARAM", "Boolean query parameter 'valid' must be one of ['true', 'false']"));
    }
  });

  it("the clock decides what is in the past when creating and updating", async () => {
    hs.setNow(T0 + 10_000);
    const a = await create({ token: "late", expiry_time: T0 + 5000 });
    expect(a.body).toEqual(err("M_INVALID_PARAM", "expiry_time must not be in the past"));
    expect((await create({ token: "ok", expiry_time: T0 + 10_000 })).status).toBe(200);
    const put = await call("PUT", one("ok"), { body: { expiry_time: T0 + 9_999 } });
    expect(put.status).toBe(400);
    expect(put.body).toEqual(err("M_INVALID_PARAM", "expiry_time must not be in the past"));
    hs.setNow(T0);
    expect((await call("PUT", one("ok"), { body: { expiry_time: T0 + 9_999 } })).body).toEqual({
      token: "ok",
      uses_allowed: null,
      pending: 0,
      completed: 0,
      expiry_time: T0 + 9_999,
    });
  });
});

describe("useRegistrationToken (helper)", () => {
  it("refuses unknown, used-up and expired tokens as Synapse's registration stage would", async () => {
    await create({ token: "once", uses_allowed: 1 });
    await create({ token: "soon", expiry_time: T0 + 10 });
    expect(() => hs.useRegistrationToken("ghost", { complete: true })).toThrow(/no registration token "ghost"/);
    hs.useRegistrationToken("once", { complete: false });
    // The pending use holds the only use.
    expect(() => hs.useRegistrationToken("once", { complete: true })).toThrow(/used up/);
    // At exactly expiry_time Synapse still accepts a registration (it checks expiry_time < now) …
    hs.setNow(T0 + 10);
    expect(hs.useRegistrationToken("soon", { complete: true }).completed).toBe(1);
    // … but not a millisecond later.
    hs.setNow(T0 + 11);
    expect(() => hs.useRegistrationToken("soon", { complete: true })).toThrow(/expired/);
    expect(hs.registrationTokens()).toEqual([
      { token: "once", uses_allowed: 1, pending: 1, completed: 0, expiry_time: null },
      { token: "soon", uses_allowed: null, pending: 0, completed: 1, expiry_time: T0 + 10 },
    ]);
  });

  it("uses_allowed 0 is listed invalid but, as in Synapse (Python truthiness), still admits registrations", async () => {
    await create({ token: "zero", uses_allowed: 0 });
    expect(await listed("?valid=false")).toEqual(["zero"]);
    expect(hs.useRegistrationToken("zero", { complete: true })).toEqual({ token: "zero", uses_allowed: 0, pending: 0, completed: 1, expiry_time: null });
  });

  it("registrationTokens() returns copies", async () => {
    await create({ token: "abcd" });
    const copy = hs.registrationTokens();
    (copy[0] as { pending: number }).pending = 99;
    expect(hs.registrationTokens()[0]!.pending).toBe(0);
  });
});

describe("clock", () => {
  it("defaults to real time", async () => {
    const real = await FakeHomeserver.start();
    try {
      const token = real.registerUser(ADMIN, undefined, { admin: true });
      const past = Date.now() - 60_000;
      const res = await fetch(`${real.url}${BASE}/new`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ expiry_time: past }),
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual(err("M_INVALID_PARAM", "expiry_time must not be in the past"));
    } finally {
      await real.close();
    }
  });
});

describe("delegateAuthToMas", () => {
  it("unregisters the endpoints: 404 M_UNRECOGNIZED for every method, before any auth; off again, the tokens are back", async () => {
    await create({ token: "kept" });
    hs.delegateAuthToMas(true);
    hs.resetCounts();
    const requests: [string, string][] = [
      ["GET", BASE],
      ["GET", `${BASE}?valid=true`],
      ["POST", `${BASE}/new`],
      ["GET", `${BASE}/new`],
      ["GET", one("kept")],
      ["PUT", one("kept")],
      ["DELETE", one("kept")],
    ];
    for (const [method, path] of requests) {
      for (const token of [adminToken, userToken, null]) {
        const a = await call(method, path, { token, raw: "{}" });
        expect(a.status).toBe(404);
        expect(a.body).toEqual(err("M_UNRECOGNIZED", "Unrecognized request"));
      }
    }
    expect(hs.requestCounts().admin_registration_tokens).toBe(requests.length * 3);
    expect(hs.registrationTokens().map((t) => t.token)).toEqual(["kept"]);

    hs.delegateAuthToMas(false);
    expect(await listed()).toEqual(["kept"]);
  });
});

describe("request counting", () => {
  it("counts the endpoints under admin_registration_tokens (a wrong method counts as other)", async () => {
    hs.resetCounts();
    await create({ token: "abcd" });
    await call("GET", BASE);
    await call("GET", one("abcd"));
    await call("PUT", one("abcd"), { body: {} });
    await call("DELETE", one("abcd"));
    await call("GET", BASE, { token: userToken });
    await call("PATCH", one("abcd"), { body: {} });
    const counts = hs.requestCounts();
    expect(counts.admin_registration_tokens).toBe(6);
    expect(counts.other).toBe(1);
    expect(hs.requestLog().map((e) => [e.kind, e.status])).toEqual([
      ["admin_registration_tokens", 200],
      ["admin_registration_tokens", 200],
      ["admin_registration_tokens", 200],
      ["admin_registration_tokens", 200],
      ["admin_registration_tokens", 200],
      ["admin_registration_tokens", 403],
      ["other", 405],
    ]);
  });

  it("failNext can target the kind", async () => {
    hs.failNext("admin_registration_tokens", 1, 502, { errcode: "M_UNKNOWN", error: "Bad gateway" });
    const a = await call("GET", BASE);
    expect(a.status).toBe(502);
    expect((await call("GET", BASE)).status).toBe(200);
  });
});
