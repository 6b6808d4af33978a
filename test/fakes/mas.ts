/**
 * A strict stand-in for Matrix Authentication Service (element-hq/matrix-authentication-service):
 * its OAuth2 token endpoint (client credentials only ever succeed) and the admin API for user
 * registration tokens, over plain HTTP on 127.0.0.1.
 *
 * Rule: it is kind to no one. Status codes, bodies and the order of the checks follow MAS's handler
 * source (crates/handlers/src/admin/…, crates/handlers/src/oauth2/token.rs,
 * crates/axum-utils/src/client_authorization.rs, policies/authorization_grant.rego) and the axum /
 * serde behaviour underneath it:
 * - Admin API errors are JSON:API `{"errors":[{"title"}…]}`, one entry per error in the Rust
 *   `source()` chain (MAS's `ErrorResponse::from_error`).
 * - Bad JSON bodies never reach MAS: axum's `Json` extractor answers in plain text — 415 without a
 *   JSON content type, 400 for a syntax error, 422 for a type error — with serde_json's message,
 *   the serde_path_to_error path and serde_json's line/column.
 * - Token and revocation endpoint errors are OAuth2 `{"error","error_description"}` bodies.
 * - Revocation (`POST /oauth2/revoke`, RFC 7009; crates/handlers/src/oauth2/revoke.rs): the same
 *   client authentication as the token endpoint; 200 with an empty body for a revoked token and
 *   for one that is unknown, malformed, expired or already revoked; 401 `unauthorized_client` for
 *   another client's token; 400 `unsupported_token_type` for a hint other than access_token /
 *   refresh_token. Revoking ends the token's session: the admin API then answers 401
 *   "Access token revoked" (checked before expiry, as in MAS's CallContext).
 * - A path no route matches gets MAS's fallback: 404 with an HTML "not found" page (text/html).
 *   A known path with another method: axum's empty 405 with `Allow`.
 * - Client ids are ULIDs, as in MAS (its client lookup parses the id as a ULID; anything else is an
 *   unknown client). A client has ONE auth method (MAS config `client_auth_method`): a client set
 *   up for client_secret_basic is refused when it posts its secret in the form, and vice versa.
 * - Access tokens have MAS's format (`mat_` + 30 alphanumerics + `_` + base62 CRC-32) and the
 *   admin API checks that format before looking the token up.
 * - IDs are real ULIDs made the way MAS makes them (`Ulid::from_datetime_with_rng`): millisecond
 *   time from the injected clock plus 80 random bits — NOT monotonic, so two tokens made in the
 *   same millisecond sort in random order, as in MAS. ULIDs in paths and cursors are
 *   case-insensitive; responses always use the canonical upper-case form.
 * - `valid` (attribute) is false when revoked, when `now >= expires_at`, or when
 *   `times_used >= usage_limit`. The list filters use MAS's SQL, which differs at the exact expiry
 *   instant: `filter[expired]=true` is `expires_at < now` and `filter[valid]=true` keeps
 *   `expires_at >= now`. Both are reproduced.
 *
 * Known simplifications (deliberate):
 * - The response shape is the one without the newer username/email/passwordless/invite_url
 *   attributes (MAS ≤ 1.22); those request fields are ignored like any unknown field.
 * - Times have millisecond precision (MAS: microseconds); more precise `expires_at` input is
 *   truncated. chrono's date parse errors are approximated ("input contains invalid characters",
 *   "input is out of range").
 * - Error chains for query-string errors ("Invalid pagination parameters" / "Invalid filter
 *   parameters" → "Failed to deserialize query string" → detail, detail) are derived from the axum
 *   source; the first title is MAS's own and certain.
 * - A form body that serde cannot read (missing `grant_type`, an empty or malformed `scope`,
 *   a repeated known field) gets 500 `server_error` "Failed to deserialize form body": axum ≥ 0.6
 *   rejects form bodies with `FailedToDeserializeFormBody`, which MAS's client-authorization
 *   extractor does not match, so it becomes its `Internal` error.
 * - No refresh tokens, authorization codes, device codes, personal access tokens or compat
 *   tokens are ever issued, so those grants end in `invalid_grant` and those tokens are unknown.
 * - Not modelled: CORS, request-body limits other than axum's 2 MiB default, the requester ban and
 *   session-limit policy rules.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes, randomInt } from "node:crypto";

/** A registration token as the fake holds it (copies; times are `Date`s or null). */
export interface MasTokenRecord {
  id: string;
  token: string;
  usageLimit: number | null;
  timesUsed: number;
  createdAt: Date;
  lastUsedAt: Date | null;
  expiresAt: Date | null;
  revokedAt: Date | null;
}

/** `token` is /oauth2/token and `oauth-revoke` /oauth2/revoke; the rest are the registration-token admin API. */
export type MasEndpoint = "token" | "oauth-revoke" | "list" | "get" | "add" | "update" | "revoke" | "unrevoke" | "other";

const ENDPOINTS: readonly MasEndpoint[] = ["token", "oauth-revoke", "list", "get", "add", "update", "revoke", "unrevoke", "other"];

export interface FakeMasOptions {
  /** The clock for token times, ULID timestamps and access-token expiry. Default: the real clock. */
  now?: () => Date;
  /** Lifetime of issued access tokens (MAS `access_token_ttl`), default 300. */
  accessTokenLifetimeSeconds?: number;
  /**
   * Whether the listener serves the `adminapi` resource (default true). Without it, as in MAS,
   * its paths reach the fallback: 404 with the HTML "not found" page.
   */
  adminApi?: boolean;
}

export interface FakeMasClient {
  /** A ULID, as MAS requires for client ids (any case). */
  clientId: string;
  clientSecret: string;
  /** Listed in `policy.data.admin_clients`: may get the `urn:mas:admin` scope. */
  admin: boolean;
  /** The client's single token-endpoint auth method (MAS `client_auth_method`). Default client_secret_basic. */
  authMethod?: "client_secret_basic" | "client_secret_post";
}

// ---------------------------------------------------------------------------------------------
// ULIDs (ulid-rs: Crockford base32 without the I/L/O/U aliases, case-insensitive, 128-bit wrap)

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const MASK128 = (1n << 128n) - 1n;

function encodeUlid(value: bigint): string {
  let out = "";
  let v = value;
  for (let i = 0; i < 26; i++) {
    out = CROCKFORD.charAt(Number(v & 31n)) + out;
    v >>= 5n;
  }
  return out;
}

type UlidParse = { ok: true; value: bigint } | { ok: false; error: "invalid length" | "invalid character" };

function decodeUlid(s: string): UlidParse {
  if (Buffer.byteLength(s, "utf8") !== 26) return { ok: false, error: "invalid length" };
  let v = 0n;
  for (const ch of s) {
    const idx = /^[0-9A-Za-z]$/.test(ch) ? CROCKFORD.indexOf(ch.toUpperCase()) : -1;
    if (idx < 0) return { ok: false, error: "invalid character" };
    v = ((v << 5n) | BigInt(idx)) & MASK128;
  }
  return { ok: true, value: v };
}

function newUlid(ms: number): bigint {
  const time = BigInt(Math.max(0, Math.floor(ms))) & ((1n << 48n) - 1n);
  return (time << 80n) | BigInt(`0x${randomBytes(10).toString("hex")}`);
}

// ---------------------------------------------------------------------------------------------
// Times (chrono: RFC 3339, "Z", fraction only when non-zero)

function rfc3339(ms: number): string {
  const iso = new Date(ms).toISOString();
  return iso.endsWith(".000Z") ? `${iso.slice(0, -5)}Z` : iso;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))$/;

/** chrono's relaxed RFC 3339 parse (`DateTime<FixedOffset>::from_str`), to epoch milliseconds. */
function parseRfc3339(s: string): { ok: true; ms: number } | { ok: false; error: string } {
  const m = RFC3339.exec(s);
  if (!m) return { ok: false, error: "input contains invalid characters" };
  const [, y, mo, d, h, mi, sec, frac, , sign, oh, om] = m;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(sec);
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  const offH = Number(oh ?? "0");
  const offM = Number(om ?? "0");
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59 || offH > 23 || offM > 59) {
    return { ok: false, error: "input is out of range" };
  }
  const millis = frac === undefined ? 0 : Number(frac.slice(0, 3).padEnd(3, "0"));
  const utc = new Date(0);
  utc.setUTCFullYear(year, month - 1, day);
  utc.setUTCHours(hour, minute, second, millis);
  const offset = (offH * 60 + offM) * 60_000 * (sign === "-" ? -1 : 1);
  return { ok: true, ms: utc.getTime() - offset };
}

// ---------------------------------------------------------------------------------------------
// Access tokens (mas-data-model tokens.rs: `{prefix}_{30 alphanumerics}_{base62(crc32)}`)

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(s: string): number {
  let c = 0xffffffff;
  for (const byte of Buffer.from(s, "utf8")) c = (CRC_TABLE[(c ^ byte) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** MAS's base62: least significant digit first, then left-padded with "0" to 6 characters. */
function base62(num: number): string {
  let out = "";
  let n = num;
  while (n > 0) {
    out += BASE62.charAt(n % 62);
    n = Math.floor(n / 62);
  }
  return out.padStart(6, "0");
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const randomAlnum = (n: number): string => Array.from({ length: n }, () => ALNUM.charAt(randomInt(ALNUM.length))).join("");

function generateAccessToken(): string {
  const base = `mat_${randomAlnum(30)}`;
  return `${base}_${base62(crc32(base))}`;
}

type TokenKind = "access" | "refresh" | "compat-access" | "compat-refresh" | "personal";
const PREFIXES: Record<string, TokenKind> = {
  mat: "access",
  mar: "refresh",
  mct: "compat-access",
  syt: "compat-access",
  mcr: "compat-refresh",
  syr: "compat-refresh",
  mpt: "personal",
};

function isLikelySynapseMacaroon(token: string): boolean {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(token) || token.length % 4 !== 0) return false;
  const decoded = Buffer.from(token, "base64url");
  return decoded.subarray(4, 13).toString("latin1") === "location ";
}

/** `TokenType::check`: the kind, or the titles of the error chain (after "Invalid type of access token"). */
function checkTokenFormat(token: string): { ok: true; kind: TokenKind } | { ok: false; detail: string } {
  if (token.startsWith("syt_") || isLikelySynapseMacaroon(token)) return { ok: true, kind: "compat-access" };
  if (token.startsWith("syr_")) return { ok: true, kind: "compat-refresh" };
  const parts = token.split("_");
  const [prefix, random, crc] = parts;
  if (parts.length !== 3 || prefix === undefined || random === undefined || crc === undefined) return { ok: false, detail: "invalid token format" };
  if (prefix.length !== 3 || random.length !== 30 || crc.length !== 6) return { ok: false, detail: "invalid token format" };
  const kind = PREFIXES[prefix];
  if (kind === undefined) return { ok: false, detail: `unknown token prefix ${rustDebugString(prefix)}` };
  const expected = base62(crc32(`${prefix}_${random}`));
  if (crc !== expected) return { ok: false, detail: `invalid crc ${rustDebugString(crc)}, expected ${rustDebugString(expected)}` };
  return { ok: true, kind };
}

/** Close enough to Rust's `{:?}` for a `&str`. */
function rustDebugString(s: string): string {
  return JSON.stringify(s).replace(/\\u00([0-9a-f]{2})/g, (_m, hex: string) => `\\u{${hex.replace(/^0/, "")}}`);
}

// ---------------------------------------------------------------------------------------------
// JSON bodies the way axum's `Json` + serde_path_to_error + serde_json read them

class JsonSyntaxError extends Error {
  constructor(
    readonly code: string,
    readonly index: number,
    readonly path: string,
  ) {
    super(code);
  }
}

class JsonDataError extends Error {
  constructor(
    readonly code: string,
    readonly index: number,
    readonly path: string,
  ) {
    super(code);
  }
}

type JsonScalar =
  | { t: "null" }
  | { t: "bool"; v: boolean }
  | { t: "int"; v: bigint }
  | { t: "float"; v: number }
  | { t: "str"; v: string };

const joinPath = (parent: string, key: string): string => (parent === "" ? key : `${parent}.${key}`);
const seqPath = (parent: string, index: number): string => `${parent}[${index}]`;

/** A recursive-descent reader with serde_json's error codes and positions. */
class JsonReader {
  i = 0;
  private depth = 128;

  constructor(readonly s: string) {}

  /** `peek_position`: one past the peeked character. */
  peekIndex(): number {
    return Math.min(this.s.length, this.i + 1);
  }

  syntaxPeek(code: string, path: string): never {
    throw new JsonSyntaxError(code, this.peekIndex(), path);
  }

  syntaxHere(code: string, path: string): never {
    throw new JsonSyntaxError(code, this.i, path);
  }

  ws(): string | undefined {
    while (this.i < this.s.length) {
      const c = this.s.charAt(this.i);
      if (c === " " || c === "\n" || c === "\t" || c === "\r") this.i++;
      else return c;
    }
    return undefined;
  }

  peek(): string | undefined {
    return this.i < this.s.length ? this.s.charAt(this.i) : undefined;
  }

  /** Any value, discarded (serde's `IgnoredAny`), with the path tracked for error messages. */
  skipValue(path: string): void {
    const c = this.ws();
    if (c === "[") {
      this.enter(path);
      this.i++;
      let first = true;
      for (let index = 0; ; index++) {
        if (!this.nextSeqElement(first, path)) {
          this.i++;
          break;
        }
        first = false;
        this.skipValue(seqPath(path, index));
      }
      this.depth++;
      return;
    }
    if (c === "{") {
      this.enter(path);
      this.i++;
      let first = true;
      for (;;) {
        const key = this.nextMapKey(first, path);
        if (key === undefined) break;
        first = false;
        this.mapColon(joinPath(path, key.key));
        this.skipValue(joinPath(path, key.key));
      }
      this.depth++;
      return;
    }
    this.scalar(path);
  }

  enter(path: string): void {
    this.depth--;
    if (this.depth === 0) this.syntaxPeek("recursion limit exceeded", path);
  }

  /** serde_json `SeqAccess::has_next_element` (the `[` already eaten); leaves a final `]` unread. */
  nextSeqElement(first: boolean, path: string): boolean {
    let c = this.ws();
    if (c === "]") return false;
    if (!first) {
      if (c === ",") {
        this.i++;
        c = this.ws();
        if (c === "]") this.syntaxPeek("trailing comma", path);
      } else if (c === undefined) {
        this.syntaxPeek("EOF while parsing a list", path);
      } else {
        this.syntaxPeek("expected `,` or `]`", path);
      }
    }
    if (c === undefined) this.syntaxPeek("EOF while parsing a list", path);
    return true;
  }

  /** serde_json `MapAccess::next_key_seed` (the `{` already eaten); undefined at `}` (eaten). */
  nextMapKey(first: boolean, path: string): { key: string } | undefined {
    let c = this.ws();
    if (c === "}") {
      this.i++;
      return undefined;
    }
    if (c === "," && !first) {
      this.i++;
      c = this.ws();
    } else if (c !== undefined && !first) {
      this.syntaxPeek("expected `,` or `}`", path);
    } else if (c === undefined) {
      this.syntaxPeek("EOF while parsing an object", path);
    }
    if (c === '"') {
      this.i++;
      return { key: this.stringBody(path) };
    }
    if (c === "}") this.syntaxPeek("trailing comma", path);
    if (c === undefined) this.syntaxPeek("EOF while parsing a value", path);
    this.syntaxPeek("key must be a string", path);
  }

  /** `parse_object_colon`. */
  mapColon(path: string): void {
    const c = this.ws();
    if (c === ":") {
      this.i++;
      return;
    }
    if (c === undefined) this.syntaxPeek("EOF while parsing an object", path);
    this.syntaxPeek("expected `:`", path);
  }

  /** A scalar (null, bool, number, string); `[`/`{` are the caller's business. */
  scalar(path: string): JsonScalar {
    const c = this.ws();
    if (c === undefined) this.syntaxPeek("EOF while parsing a value", path);
    if (c === "n" || c === "t" || c === "f") {
      const word = c === "n" ? "null" : c === "t" ? "true" : "false";
      this.i++;
      for (const expected of word.slice(1)) {
        const got = this.peek();
        if (got === undefined) this.syntaxHere("EOF while parsing a value", path);
        this.i++;
        if (got !== expected) this.syntaxHere("expected ident", path);
      }
      return word === "null" ? { t: "null" } : { t: "bool", v: word === "true" };
    }
    if (c === "-" || (c >= "0" && c <= "9")) return this.number(path);
    if (c === '"') {
      this.i++;
      return { t: "str", v: this.stringBody(path) };
    }
    this.syntaxPeek("expected value", path);
  }

  private number(path: string): JsonScalar {
    const start = this.i;
    const negative = this.peek() === "-";
    if (negative) this.i++;
    const first = this.peek();
    if (first === undefined || first < "0" || first > "9") {
      if (first !== undefined) this.i++;
      this.syntaxHere("invalid number", path);
    }
    this.i++;
    if (first === "0") {
      const next = this.peek();
      if (next !== undefined && next >= "0" && next <= "9") this.syntaxPeek("invalid number", path);
    } else {
      while (this.isDigit(this.peek())) this.i++;
    }
    let isFloat = false;
    if (this.peek() === ".") {
      isFloat = true;
      this.i++;
      if (!this.isDigit(this.peek())) {
        if (this.peek() === undefined) this.syntaxPeek("EOF while parsing a value", path);
        this.syntaxPeek("invalid number", path);
      }
      while (this.isDigit(this.peek())) this.i++;
    }
    const e = this.peek();
    if (e === "e" || e === "E") {
      isFloat = true;
      this.i++;
      const sign = this.peek();
      if (sign === "+" || sign === "-") this.i++;
      const d = this.peek();
      if (d === undefined) this.syntaxHere("EOF while parsing a value", path);
      if (!this.isDigit(d)) {
        this.i++;
        this.syntaxHere("invalid number", path);
      }
      while (this.isDigit(this.peek())) this.i++;
    }
    const raw = this.s.slice(start, this.i);
    if (isFloat) return { t: "float", v: Number(raw) };
    const big = BigInt(raw);
    const fits = negative ? big >= -(1n << 63n) : big < 1n << 64n;
    return fits ? { t: "int", v: big } : { t: "float", v: Number(raw) };
  }

  private isDigit(c: string | undefined): boolean {
    return c !== undefined && c >= "0" && c <= "9";
  }

  /** The rest of a string after its opening quote. */
  stringBody(path: string): string {
    let out = "";
    for (;;) {
      const c = this.peek();
      if (c === undefined) this.syntaxHere("EOF while parsing a string", path);
      this.i++;
      if (c === '"') return out;
      if (c === "\\") {
        const e = this.peek();
        if (e === undefined) this.syntaxHere("EOF while parsing a string", path);
        this.i++;
        const simple: Record<string, string> = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
        const mapped = simple[e];
        if (mapped !== undefined) {
          out += mapped;
          continue;
        }
        if (e !== "u") this.syntaxHere("invalid escape", path);
        const unit = this.hex4(path);
        if (unit >= 0xd800 && unit <= 0xdbff) {
          if (this.s.slice(this.i, this.i + 2) !== "\\u") this.syntaxHere("lone leading surrogate in hex escape", path);
          this.i += 2;
          const low = this.hex4(path);
          if (low < 0xdc00 || low > 0xdfff) this.syntaxHere("lone leading surrogate in hex escape", path);
          out += String.fromCharCode(unit, low);
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          this.syntaxHere("lone leading surrogate in hex escape", path);
        } else {
          out += String.fromCharCode(unit);
        }
        continue;
      }
      if (c < " ") this.syntaxHere("control character (\\u0000-\\u001F) found while parsing a string", path);
      out += c;
    }
  }

  private hex4(path: string): number {
    let v = 0;
    for (let k = 0; k < 4; k++) {
      const c = this.peek();
      if (c === undefined) this.syntaxHere("EOF while parsing a string", path);
      this.i++;
      const d = parseInt(c, 16);
      if (Number.isNaN(d)) this.syntaxHere("invalid escape", path);
      v = v * 16 + d;
    }
    return v;
  }

  /** `Deserializer::end`: only whitespace may follow. */
  end(): void {
    if (this.ws() !== undefined) this.syntaxPeek("trailing characters", "");
  }
}

/** serde_json's `JsonUnexpected` display of a value that has the wrong type. */
function unexpected(v: JsonScalar): string {
  switch (v.t) {
    case "null":
      return "null";
    case "bool":
      return `boolean \`${v.v}\``;
    case "int":
      return `integer \`${v.v}\``;
    case "float": {
      const text = Number.isInteger(v.v) && Math.abs(v.v) < 1e16 ? `${v.v}.0` : String(v.v).replace("e+", "e");
      return `floating point \`${text}\``;
    }
    case "str":
      return `string ${rustDebugString(v.v)}`;
  }
}

/** How one struct field is read; returns the value or throws a `JsonDataError` message. */
type FieldReader = (v: JsonScalar) => unknown;

interface FieldSpec {
  name: string;
  /** Reader of a present, non-composite value. `expected` is serde's "expected …" for `[`/`{`. */
  read: FieldReader;
  expected: string;
  /** `Option<T>` without `deserialize_with`: null reads as absent. */
  nullIsNone: boolean;
  /** `#[serde(default)]`: may be missing in the array form too. */
  hasDefault: boolean;
}

class FieldError extends Error {}

const readU32: FieldReader = (v) => {
  if (v.t === "int") {
    if (v.v >= 0n && v.v <= 0xffffffffn) return Number(v.v);
    throw new FieldError(`invalid value: ${unexpected(v)}, expected u32`);
  }
  throw new FieldError(`invalid type: ${unexpected(v)}, expected u32`);
};

const readString: FieldReader = (v) => {
  if (v.t === "str") return v.v;
  throw new FieldError(`invalid type: ${unexpected(v)}, expected a string`);
};

const DATETIME_EXPECTED = "an RFC 3339 formatted date and time string";
const readDateTime: FieldReader = (v) => {
  if (v.t !== "str") throw new FieldError(`invalid type: ${unexpected(v)}, expected ${DATETIME_EXPECTED}`);
  const parsed = parseRfc3339(v.v);
  if (!parsed.ok) throw new FieldError(parsed.error);
  return parsed.ms;
};

/** Wraps a reader for `Option<T>` fields read with `deserialize_some` (null → Some(None)). */
const orNull =
  (inner: FieldReader): FieldReader =>
  (v) =>
    v.t === "null" ? null : inner(v);

type JsonBody = { ok: true; fields: Map<string, unknown> } | { ok: false; status: 400 | 422; text: string };

/**
 * Reads a request body into a serde-derived struct, streaming like serde_json does (the first
 * problem met wins, syntax or type). `fields` holds the present fields only.
 */
function readJsonStruct(text: string, structName: string, specs: readonly FieldSpec[]): JsonBody {
  const r = new JsonReader(text);
  const fields = new Map<string, unknown>();
  const readField = (spec: FieldSpec, path: string): void => {
    const c = r.ws();
    if (c === "[" || c === "{") {
      throw new JsonDataError(`invalid type: ${c === "[" ? "sequence" : "map"}, expected ${spec.expected}`, r.i, path);
    }
    const v = r.scalar(path);
    if (v.t === "null" && spec.nullIsNone) return;
    try {
      fields.set(spec.name, spec.read(v));
    } catch (e) {
      if (e instanceof FieldError) throw new JsonDataError(e.message, r.i, path);
      throw e;
    }
  };
  try {
    const c = r.ws();
    if (c === "{") {
      r.enter("");
      r.i++;
      const seen = new Set<string>();
      let first = true;
      for (;;) {
        const key = r.nextMapKey(first, "");
        if (key === undefined) break;
        first = false;
        const spec = specs.find((s) => s.name === key.key);
        if (spec && seen.has(spec.name)) throw new JsonDataError(`duplicate field \`${spec.name}\``, r.i, "");
        r.mapColon(key.key);
        if (spec) {
          seen.add(spec.name);
          readField(spec, key.key);
        } else {
          r.skipValue(key.key);
        }
      }
    } else if (c === "[") {
      r.enter("");
      r.i++;
      let first = true;
      for (const [index, spec] of specs.entries()) {
        if (!r.nextSeqElement(first, "")) {
          if (spec.hasDefault) break; // the remaining fields take their defaults
          // serde_json runs `end_seq` (eating the `]`) before it sets the error's position.
          r.i++;
          throw new JsonDataError(`invalid length ${index}, expected struct ${structName} with ${specs.length} elements`, r.i, "");
        }
        first = false;
        readField(spec, seqPath("", index));
      }
      // serde_json `end_seq`
      const e = r.ws();
      if (e === "]") r.i++;
      else if (e === ",") {
        r.i++;
        if (r.ws() === "]") r.syntaxPeek("trailing comma", "");
        r.syntaxPeek("trailing characters", "");
      } else if (e === undefined) r.syntaxPeek("EOF while parsing a list", "");
      else r.syntaxPeek("trailing characters", "");
    } else {
      const v = r.scalar("");
      throw new JsonDataError(`invalid type: ${unexpected(v)}, expected struct ${structName}`, r.i, "");
    }
    r.end();
    return { ok: true, fields };
  } catch (e) {
    if (e instanceof JsonSyntaxError || e instanceof JsonDataError) {
      const { line, column } = jsonPosition(text, e.index);
      const detail = `${e.path === "" ? "" : `${e.path}: `}${e.code} at line ${line} column ${column}`;
      return e instanceof JsonSyntaxError
        ? { ok: false, status: 400, text: `Failed to parse the request body as JSON: ${detail}` }
        : { ok: false, status: 422, text: `Failed to deserialize the JSON body into the target type: ${detail}` };
    }
    throw e;
  }
}

/** serde_json `position_of_index`: 1-based line, column = bytes consumed on that line. */
function jsonPosition(text: string, index: number): { line: number; column: number } {
  let line = 1;
  let column = 0;
  for (const ch of text.slice(0, index)) {
    if (ch === "\n") {
      line++;
      column = 0;
    } else {
      column += Buffer.byteLength(ch, "utf8");
    }
  }
  return { line, column };
}

const ADD_FIELDS: readonly FieldSpec[] = [
  { name: "token", read: readString, expected: "a string", nullIsNone: true, hasDefault: false },
  { name: "usage_limit", read: readU32, expected: "u32", nullIsNone: true, hasDefault: false },
  { name: "expires_at", read: readDateTime, expected: DATETIME_EXPECTED, nullIsNone: true, hasDefault: false },
];

const EDIT_FIELDS: readonly FieldSpec[] = [
  { name: "expires_at", read: orNull(readDateTime), expected: DATETIME_EXPECTED, nullIsNone: false, hasDefault: true },
  { name: "usage_limit", read: orNull(readU32), expected: "u32", nullIsNone: false, hasDefault: true },
];

// ---------------------------------------------------------------------------------------------
// Query strings (serde_urlencoded for pagination, serde_html_form for filters)

class QueryError extends Error {}

interface Pagination {
  before: bigint | undefined;
  after: bigint | undefined;
  direction: "forward" | "backward";
  count: number;
  includeCount: "true" | "false" | "only";
}

function parsePagination(query: URLSearchParams): Pagination | { error: string[] } {
  const chain = (detail: string): { error: string[] } => ({
    error: ["Invalid pagination parameters", "Failed to deserialize query string", detail, detail],
  });
  const seen = new Set<string>();
  let before: bigint | undefined;
  let after: bigint | undefined;
  let first: number | undefined;
  let last: number | undefined;
  let includeCount: Pagination["includeCount"] = "true";
  const nonZero = (key: string, value: string): number => {
    if (!/^\+?\d+$/.test(value)) {
      throw new QueryError(`${key}: ${value === "" ? "cannot parse integer from empty string" : "invalid digit found in string"}`);
    }
    const n = BigInt(value);
    if (n >= 1n << 64n) throw new QueryError(`${key}: number too large to fit in target type`);
    if (n === 0n) throw new QueryError(`${key}: invalid value: integer \`0\`, expected a nonzero usize`);
    return Number(n);
  };
  const ulid = (key: string, value: string): bigint => {
    const u = decodeUlid(value);
    if (!u.ok) throw new QueryError(`${key}: ${u.error}`);
    return u.value;
  };
  try {
    for (const [key, value] of query) {
      if (!["page[before]", "page[after]", "page[first]", "page[last]", "count"].includes(key)) continue;
      if (seen.has(key)) throw new QueryError(`duplicate field \`${key}\``);
      seen.add(key);
      if (key === "page[before]") before = ulid(key, value);
      else if (key === "page[after]") after = ulid(key, value);
      else if (key === "page[first]") first = nonZero(key, value);
      else if (key === "page[last]") last = nonZero(key, value);
      else if (value === "true" || value === "false" || value === "only") includeCount = value;
      else throw new QueryError(`count: unknown variant \`${value}\`, expected one of \`true\`, \`false\`, \`only\``);
    }
  } catch (e) {
    if (e instanceof QueryError) return chain(e.message);
    throw e;
  }
  if (first !== undefined && last !== undefined) return { error: ["Cannot specify both `page[first]` and `page[last]` parameters"] };
  const direction = last !== undefined ? "backward" : "forward";
  return { before, after, direction, count: last ?? first ?? 10, includeCount };
}

const FILTER_KEYS = ["used", "revoked", "expired", "valid"] as const;
type FilterKey = (typeof FILTER_KEYS)[number];
type Filters = Partial<Record<FilterKey, boolean>>;

function parseFilters(query: URLSearchParams): Filters | { error: string[] } {
  const grouped = new Map<string, string[]>();
  for (const [key, value] of query) grouped.set(key, [...(grouped.get(key) ?? []), value]);
  const filters: Filters = {};
  for (const [key, values] of grouped) {
    const name = FILTER_KEYS.find((k) => `filter[${k}]` === key);
    if (name === undefined) continue;
    let detail: string | undefined;
    if (values.length > 1) detail = `${key}: unsupported value`;
    else if (values[0] === "") continue;
    else if (values[0] === "true" || values[0] === "false") filters[name] = values[0] === "true";
    else detail = `${key}: provided string was not \`true\` or \`false\``;
    if (detail !== undefined) return { error: ["Invalid filter parameters", "Failed to deserialize query string", detail, detail] };
  }
  return filters;
}

// ---------------------------------------------------------------------------------------------
// The server

interface TokenRow {
  id: bigint;
  token: string;
  usageLimit: number | null;
  timesUsed: number;
  createdAt: number;
  lastUsedAt: number | null;
  expiresAt: number | null;
  revokedAt: number | null;
}

interface ClientRow {
  id: bigint;
  canonicalId: string;
  secret: string;
  admin: boolean;
  authMethod: "client_secret_basic" | "client_secret_post";
}

interface AccessTokenRow {
  clientId: string;
  scope: readonly string[];
  expiresAt: number;
  forcedExpired: boolean;
  /** Its session was ended at the revocation endpoint (each client-credentials grant is its own session). */
  sessionFinished: boolean;
}

type Reply =
  | { kind: "json"; status: number; body: unknown; headers?: Record<string, string> }
  | { kind: "text"; status: number; text: string }
  | { kind: "html"; status: number; html: string }
  | { kind: "empty"; status: number; headers?: Record<string, string> };

const TOKENS_PATH = "/api/admin/v1/user-registration-tokens";
const KIND = "user-registration_token";
const BODY_LIMIT = 2 * 1024 * 1024;

const OAUTH_DEFAULT_DESCRIPTION: Record<string, string> = {
  invalid_request:
    "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed.",
  invalid_client: "Client authentication failed.",
  invalid_grant: "The provided access grant is invalid, expired, or revoked.",
  unauthorized_client: "The client is not authorized to request an access token using this method.",
  unsupported_grant_type: "The authorization grant type is not supported by the authorization server.",
  unsupported_token_type: "The authorization server does not support the revocation of the presented token type.",
  invalid_scope: "The requested scope is invalid, unknown, or malformed.",
  server_error: "The authorization server encountered an unexpected condition that prevented it from fulfilling the request.",
};

const oauthError = (status: number, error: string, description?: string): Reply => ({
  kind: "json",
  status,
  body: { error, error_description: description ?? OAUTH_DEFAULT_DESCRIPTION[error] ?? "" },
});

const apiErrors = (status: number, titles: readonly string[]): Reply => ({
  kind: "json",
  status,
  body: { errors: titles.map((title) => ({ title })) },
});

/** RFC 6749 scope-token characters (NQCHAR). */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

export class FakeMas {
  readonly url: string;
  private readonly clock: () => Date;
  private readonly lifetimeSeconds: number;
  private readonly adminApi: boolean;
  private readonly registrationTokens = new Map<string, TokenRow>();
  private readonly clients = new Map<bigint, ClientRow>();
  private readonly accessTokens = new Map<string, AccessTokenRow>();
  private counts: Record<MasEndpoint, number> = FakeMas.zeroCounts();
  private failRules: { readonly target: "token" | "admin"; remaining: number; readonly status: number; readonly text: string; readonly headers: Record<string, string> }[] = [];
  private faultsServed = 0;

  private constructor(
    private readonly server: Server,
    opts: FakeMasOptions,
  ) {
    const { port } = server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
    this.clock = opts.now ?? (() => new Date());
    this.lifetimeSeconds = opts.accessTokenLifetimeSeconds ?? 300;
    this.adminApi = opts.adminApi ?? true;
  }

  static async start(opts: FakeMasOptions = {}): Promise<FakeMas> {
    const lifetime = opts.accessTokenLifetimeSeconds;
    if (lifetime !== undefined && (!Number.isInteger(lifetime) || lifetime <= 0)) {
      throw new Error(`accessTokenLifetimeSeconds must be a positive integer, got ${lifetime}`);
    }
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const mas = new FakeMas(server, opts);
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      mas.handle(req, res).catch((err: unknown) => {
        console.error("FakeMas: unhandled error", err);
        if (!res.headersSent) FakeMas.send(res, "GET", { kind: "text", status: 500, text: "internal error in FakeMas" });
      });
    });
    return mas;
  }

  /** Registers a client (MAS config `clients`); `admin` puts it in `policy.data.admin_clients`. */
  addClient(opts: FakeMasClient): void {
    const id = decodeUlid(opts.clientId);
    if (!id.ok) {
      throw new Error(`FakeMas: client ids are ULIDs in MAS (${id.error}): ${JSON.stringify(opts.clientId)}`);
    }
    this.clients.set(id.value, {
      id: id.value,
      canonicalId: encodeUlid(id.value),
      secret: opts.clientSecret,
      admin: opts.admin,
      authMethod: opts.authMethod ?? "client_secret_basic",
    });
  }

  /**
   * The next `count` requests to the token endpoint (`target: "token"`) or the admin API
   * (`"admin"`) are answered `status` with a plain-text body and `headers` (e.g. a 503 with
   * `Retry-After` from the proxy in front of MAS), without being processed or counted as
   * requests to an endpoint; `faultsAnswered()` counts them.
   */
  failNext(target: "token" | "admin", count: number, opts: { status: number; text?: string; headers?: Record<string, string> }): void {
    this.failRules.push({ target, remaining: count, status: opts.status, text: opts.text ?? "Service Unavailable", headers: opts.headers ?? {} });
  }

  /** Requests answered by `failNext`. */
  faultsAnswered(): number {
    return this.faultsServed;
  }

  /** Every access token issued so far is answered with 401 "Access token expired" from now on. */
  expireAccessTokens(): void {
    for (const t of this.accessTokens.values()) t.forcedExpired = true;
  }

  /**
   * Access tokens issued so far that the admin API would still accept (not expired by the clock
   * or by `expireAccessTokens()`, session not ended by revocation).
   */
  liveAccessTokens(): number {
    const now = this.now();
    return [...this.accessTokens.values()].filter((t) => !t.sessionFinished && !t.forcedExpired && t.expiresAt >= now).length;
  }

  /** Every access token issued so far, in the order issued (for tests that use one by hand). */
  issuedAccessTokens(): string[] {
    return [...this.accessTokens.keys()];
  }

  /** Access tokens whose session was ended at the revocation endpoint. */
  revokedAccessTokens(): number {
    return [...this.accessTokens.values()].filter((t) => t.sessionFinished).length;
  }

  /** All registration tokens, in ULID order (copies). */
  tokens(): MasTokenRecord[] {
    return this.sortedRows().map((r) => ({
      id: encodeUlid(r.id),
      token: r.token,
      usageLimit: r.usageLimit,
      timesUsed: r.timesUsed,
      createdAt: new Date(r.createdAt),
      lastUsedAt: r.lastUsedAt === null ? null : new Date(r.lastUsedAt),
      expiresAt: r.expiresAt === null ? null : new Date(r.expiresAt),
      revokedAt: r.revokedAt === null ? null : new Date(r.revokedAt),
    }));
  }

  /**
   * A registration that uses `token` (times_used + 1, last_used_at = now). Throws when no such token
   * exists or it is not valid, because MAS refuses such a registration.
   */
  useToken(token: string): void {
    const row = [...this.registrationTokens.values()].find((r) => r.token === token);
    if (!row) throw new Error(`FakeMas: no registration token ${JSON.stringify(token)}`);
    const now = this.now();
    if (!this.isValid(row, now)) throw new Error(`FakeMas: registration token ${JSON.stringify(token)} is not valid; MAS would refuse the registration`);
    row.timesUsed++;
    row.lastUsedAt = now;
  }

  requestCounts(): Record<MasEndpoint, number> {
    return { ...this.counts };
  }

  totalRequests(): number {
    return ENDPOINTS.reduce((sum, k) => sum + this.counts[k], 0);
  }

  /** Requests to `/oauth2/token` (any method). */
  tokenRequests(): number {
    return this.counts.token;
  }

  resetCounts(): void {
    this.counts = FakeMas.zeroCounts();
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // -------------------------------------------------------------------------------------------

  private static zeroCounts(): Record<MasEndpoint, number> {
    return Object.fromEntries(ENDPOINTS.map((k) => [k, 0])) as Record<MasEndpoint, number>;
  }

  private now(): number {
    return this.clock().getTime();
  }

  private sortedRows(): TokenRow[] {
    return [...this.registrationTokens.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** mas-data-model `UserRegistrationToken::is_valid`. */
  private isValid(r: TokenRow, now: number): boolean {
    if (r.revokedAt !== null) return false;
    if (r.expiresAt !== null && now >= r.expiresAt) return false;
    if (r.usageLimit !== null && r.timesUsed >= r.usageLimit) return false;
    return true;
  }

  /** storage-pg `UserRegistrationTokenFilter::generate_condition` (note `<` / `>=` on expires_at). */
  private matches(r: TokenRow, f: Filters, now: number): boolean {
    if (f.used !== undefined && f.used !== r.timesUsed > 0) return false;
    if (f.revoked !== undefined && f.revoked !== (r.revokedAt !== null)) return false;
    if (f.expired !== undefined && f.expired !== (r.expiresAt !== null && r.expiresAt < now)) return false;
    if (f.valid !== undefined) {
      const valid = (r.usageLimit === null || r.timesUsed < r.usageLimit) && r.revokedAt === null && (r.expiresAt === null || r.expiresAt >= now);
      if (f.valid !== valid) return false;
    }
    return true;
  }

  private resource(r: TokenRow, now: number, cursor: boolean): Record<string, unknown> {
    const id = encodeUlid(r.id);
    const out: Record<string, unknown> = {
      type: KIND,
      id,
      attributes: {
        token: r.token,
        valid: this.isValid(r, now),
        usage_limit: r.usageLimit,
        times_used: r.timesUsed,
        created_at: rfc3339(r.createdAt),
        last_used_at: r.lastUsedAt === null ? null : rfc3339(r.lastUsedAt),
        expires_at: r.expiresAt === null ? null : rfc3339(r.expiresAt),
        revoked_at: r.revokedAt === null ? null : rfc3339(r.revokedAt),
      },
      links: { self: `${TOKENS_PATH}/${id}` },
    };
    if (cursor) out["meta"] = { page: { cursor: id } };
    return out;
  }

  private single(r: TokenRow, now: number, self?: string): Reply {
    return { kind: "json", status: 200, body: { data: this.resource(r, now, false), links: { self: self ?? `${TOKENS_PATH}/${encodeUlid(r.id)}` } } };
  }

  private static send(res: ServerResponse, method: string, reply: Reply): void {
    const headers: Record<string, string> = {};
    let body = "";
    if (reply.kind === "json") {
      headers["content-type"] = "application/json";
      body = JSON.stringify(reply.body);
      Object.assign(headers, reply.headers);
    } else if (reply.kind === "text") {
      headers["content-type"] = "text/plain; charset=utf-8";
      body = reply.text;
    } else if (reply.kind === "html") {
      headers["content-type"] = "text/html; charset=utf-8";
      body = reply.html;
    } else {
      Object.assign(headers, reply.headers);
    }
    headers["content-length"] = String(Buffer.byteLength(body));
    res.writeHead(reply.status, headers);
    res.end(method === "HEAD" ? undefined : body);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    const rawUrl = req.url ?? "/";
    const q = rawUrl.indexOf("?");
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const query = new URLSearchParams(q < 0 ? "" : rawUrl.slice(q + 1));
    const bodyBytes = await readBody(req);
    const target = path === "/oauth2/token" ? "token" : path.startsWith("/api/admin/") ? "admin" : undefined;
    const fault = this.failRules.find((r) => r.remaining > 0 && r.target === target);
    if (fault) {
      fault.remaining--;
      this.faultsServed++;
      const text = fault.text;
      res.writeHead(fault.status, { "content-type": "text/plain; charset=utf-8", "content-length": String(Buffer.byteLength(text)), ...fault.headers });
      res.end(method === "HEAD" ? undefined : text);
      return;
    }
    const reply = this.route(method, path, query, req, bodyBytes);
    FakeMas.send(res, method, reply);
  }

  private route(method: string, path: string, query: URLSearchParams, req: IncomingMessage, body: Buffer | "too-large"): Reply {
    const get = method === "GET" || method === "HEAD";
    const notAllowed = (allow: string): Reply => ({ kind: "empty", status: 405, headers: { allow } });
    if (path === "/oauth2/token") {
      this.counts.token++;
      if (method !== "POST") return notAllowed("POST");
      return this.tokenEndpoint(req, body);
    }
    if (path === "/oauth2/revoke") {
      this.counts["oauth-revoke"]++;
      if (method !== "POST") return notAllowed("POST");
      return this.revocationEndpoint(req, body);
    }
    if (!this.adminApi && path.startsWith("/api/admin/")) {
      this.counts.other++;
      return notFoundPage(method, path);
    }
    if (path === TOKENS_PATH) {
      if (get) {
        this.counts.list++;
        return this.withAuth(req, () => this.list(query));
      }
      if (method === "POST") {
        this.counts.add++;
        return this.withAuth(req, () => this.add(req, body));
      }
      this.counts.other++;
      return notAllowed("GET,HEAD,POST");
    }
    if (path.startsWith(`${TOKENS_PATH}/`)) {
      const rest = path.slice(TOKENS_PATH.length + 1).split("/");
      const [rawId, action, ...extra] = rest;
      if (rawId !== undefined && rawId !== "" && extra.length === 0) {
        const id = decodePathParam(rawId);
        if (action === undefined) {
          if (get) {
            this.counts.get++;
            return this.withAuth(req, () => this.withId(id, (canonical) => this.withRow(canonical, (row) => this.single(row, this.now()))));
          }
          if (method === "PUT") {
            this.counts.update++;
            // Extractor order: CallContext, UlidPathParam, Json — then the lookup.
            return this.withAuth(req, () =>
              this.withId(id, (canonical) => {
                const fields = this.readJson(req, body, "EditUserRegistrationTokenRequest", EDIT_FIELDS);
                if (!(fields instanceof Map)) return fields;
                return this.withRow(canonical, (row) => this.update(row, fields));
              }),
            );
          }
          this.counts.other++;
          return notAllowed("GET,HEAD,PUT");
        }
        if (action === "revoke" || action === "unrevoke") {
          if (method !== "POST") {
            this.counts.other++;
            return notAllowed("POST");
          }
          this.counts[action]++;
          return this.withAuth(req, () =>
            this.withId(id, (canonical) => this.withRow(canonical, (row) => (action === "revoke" ? this.revoke(row) : this.unrevoke(row)))),
          );
        }
      }
    }
    this.counts.other++;
    return notFoundPage(method, path);
  }

  // --- admin API authentication (crates/handlers/src/admin/call_context.rs) -------------------

  private withAuth(req: IncomingMessage, then: () => Reply): Reply {
    const header = req.headers.authorization;
    if (header === undefined) return apiErrors(400, ["Missing authorization header"]);
    // headers' `Authorization<Bearer>`: the scheme in any case, a space, then the token (may be empty).
    if (header.length < 7 || header.slice(0, 7).toLowerCase() !== "bearer ") return apiErrors(400, ["Invalid authorization header"]);
    const token = header.slice(7).trimStart();
    const format = checkTokenFormat(token);
    if (!format.ok) return apiErrors(401, ["Invalid type of access token", format.detail]);
    if (format.kind !== "access" && format.kind !== "personal") return apiErrors(401, ["Invalid type of access token"]);
    const row = format.kind === "access" ? this.accessTokens.get(token) : undefined;
    if (!row) return apiErrors(401, ["Unknown access token"]);
    if (row.sessionFinished) return apiErrors(401, ["Access token revoked"]);
    if (row.forcedExpired || row.expiresAt < this.now()) return apiErrors(401, ["Access token expired"]);
    if (!row.scope.includes("urn:mas:admin")) return apiErrors(401, ["Missing urn:mas:admin scope"]);
    return then();
  }

  /** `UlidPathParam`: 400 with the ULID decode error; the canonical (upper-case) id otherwise. */
  private withId(rawId: string, then: (canonical: string) => Reply): Reply {
    const id = decodeUlid(rawId);
    if (!id.ok) return apiErrors(400, ["Invalid ULID in path", id.error]);
    return then(encodeUlid(id.value));
  }

  private withRow(canonical: string, then: (row: TokenRow) => Reply): Reply {
    const row = this.registrationTokens.get(canonical);
    if (!row) return apiErrors(404, [`Registration token with ID ${canonical} not found`]);
    return then(row);
  }

  // --- admin API handlers (crates/handlers/src/admin/v1/user_registration_tokens/*.rs) ---------

  private list(query: URLSearchParams): Reply {
    const pagination = parsePagination(query);
    if ("error" in pagination) return apiErrors(400, pagination.error);
    const f = parseFilters(query);
    if ("error" in f) return apiErrors(400, f.error);
    const now = this.now();
    let base = TOKENS_PATH;
    let sep = "?";
    for (const k of FILTER_KEYS) {
      const v = f[k];
      if (v !== undefined) {
        base += `${sep}filter[${k}]=${v}`;
        sep = "&";
      }
    }
    if (pagination.includeCount !== "true") base += `${sep}count=${pagination.includeCount}`;
    const all = this.sortedRows().filter((r) => this.matches(r, f, now));
    if (pagination.includeCount === "only") {
      return { kind: "json", status: 200, body: { meta: { count: all.length }, links: { self: base } } };
    }
    const window = all.filter(
      (r) => (pagination.after === undefined || r.id > pagination.after) && (pagination.before === undefined || r.id < pagination.before),
    );
    const n = pagination.count;
    let page: TokenRow[];
    let hasNext = false;
    let hasPrev = false;
    if (pagination.direction === "forward") {
      page = window.slice(0, n + 1);
      hasNext = page.length === n + 1;
      if (hasNext) page.pop();
    } else {
      page = window.slice(-(n + 1)).reverse();
      hasPrev = page.length === n + 1;
      if (hasPrev) page.pop();
      page.reverse();
    }
    const link = (p: { before?: bigint | undefined; after?: bigint | undefined; direction: "forward" | "backward" }): string => {
      const [pathPart, existing = ""] = base.split("?", 2) as [string, string?];
      let qs = existing;
      if (p.before !== undefined) qs += `&page[before]=${encodeUlid(p.before)}`;
      if (p.after !== undefined) qs += `&page[after]=${encodeUlid(p.after)}`;
      qs += p.direction === "forward" ? `&page[first]=${n}` : `&page[last]=${n}`;
      return `${pathPart}?${qs.replace(/^&+/, "")}`;
    };
    const links: Record<string, string> = {
      self: link(pagination),
      first: link({ direction: "forward" }),
      last: link({ direction: "backward" }),
    };
    const lastRow = page[page.length - 1];
    const firstRow = page[0];
    if (hasNext && lastRow) links["next"] = link({ after: lastRow.id, direction: pagination.direction });
    if (hasPrev && firstRow) links["prev"] = link({ before: firstRow.id, direction: pagination.direction });
    const body: Record<string, unknown> = {};
    if (pagination.includeCount === "true") body["meta"] = { count: all.length };
    body["data"] = page.map((r) => this.resource(r, now, true));
    body["links"] = links;
    return { kind: "json", status: 200, body };
  }

  /** axum's `Json` extractor: its rejections are plain text. */
  private readJson(req: IncomingMessage, body: Buffer | "too-large", structName: string, specs: readonly FieldSpec[]): Map<string, unknown> | Reply {
    if (!isJsonContentType(req.headers["content-type"])) {
      return { kind: "text", status: 415, text: "Expected request with `Content-Type: application/json`" };
    }
    if (body === "too-large") return { kind: "text", status: 413, text: "Failed to buffer the request body: length limit exceeded" };
    const parsed = readJsonStruct(body.toString("utf8"), structName, specs);
    if (!parsed.ok) return { kind: "text", status: parsed.status, text: parsed.text };
    return parsed.fields;
  }

  private add(req: IncomingMessage, body: Buffer | "too-large"): Reply {
    const fields = this.readJson(req, body, "AddUserRegistrationTokenRequest", ADD_FIELDS);
    if (!(fields instanceof Map)) return fields;
    const token = (fields.get("token") as string | undefined) ?? randomAlnum(12);
    if ([...this.registrationTokens.values()].some((r) => r.token === token)) {
      return apiErrors(409, ["A registration token with the same token already exists"]);
    }
    const now = this.now();
    const row: TokenRow = {
      id: newUlid(now),
      token,
      usageLimit: (fields.get("usage_limit") as number | undefined) ?? null,
      timesUsed: 0,
      createdAt: now,
      lastUsedAt: null,
      expiresAt: (fields.get("expires_at") as number | undefined) ?? null,
      revokedAt: null,
    };
    this.registrationTokens.set(encodeUlid(row.id), row);
    const reply = this.single(row, now);
    return { ...reply, status: 201 };
  }

  private update(row: TokenRow, fields: Map<string, unknown>): Reply {
    if (fields.has("expires_at")) row.expiresAt = fields.get("expires_at") as number | null;
    if (fields.has("usage_limit")) row.usageLimit = fields.get("usage_limit") as number | null;
    return this.single(row, this.now());
  }

  private revoke(row: TokenRow): Reply {
    const id = encodeUlid(row.id);
    if (row.revokedAt !== null) return apiErrors(400, [`Registration token with ID ${id} is already revoked`]);
    const now = this.now();
    row.revokedAt = now;
    return this.single(row, now, `${TOKENS_PATH}/${id}/revoke`);
  }

  private unrevoke(row: TokenRow): Reply {
    const id = encodeUlid(row.id);
    if (row.revokedAt === null) return apiErrors(400, [`Registration token with ID ${id} is not revoked`]);
    row.revokedAt = null;
    return this.single(row, this.now(), `${TOKENS_PATH}/${id}/unrevoke`);
  }

  // --- OAuth2 token endpoint (crates/handlers/src/oauth2/token.rs) ----------------------------

  private tokenEndpoint(req: IncomingMessage, body: Buffer | "too-large"): Reply {
    const auth = this.clientAuthorization(req, body, TOKEN_FORM_FIELDS, (form) => parseGrant(form) !== "bad-form");
    if (!("credentials" in auth)) return auth;
    const grant = auth.form === undefined ? undefined : parseGrant(auth.form);
    if (grant === "bad-form") return oauthError(500, "server_error", "Failed to deserialize form body");

    // The handler: find the client, check its credentials, then the grant.
    const client = this.authenticateClient(auth.credentials);
    if (!("canonicalId" in client)) return client;
    if (grant === undefined) return oauthError(400, "invalid_request");
    if (grant.type === "unsupported") return oauthError(400, "unsupported_grant_type");
    if (grant.type !== "client_credentials") return oauthError(400, "invalid_grant");

    const violations = policyViolations(grant.scope, client);
    if (violations.length > 0) return oauthError(403, "invalid_scope", violations.join(", "));
    const token = generateAccessToken();
    this.accessTokens.set(token, {
      clientId: client.canonicalId,
      scope: grant.scope,
      expiresAt: this.now() + this.lifetimeSeconds * 1000,
      forcedExpired: false,
      sessionFinished: false,
    });
    const reply: Record<string, unknown> = { access_token: token, token_type: "Bearer", expires_in: this.lifetimeSeconds };
    if (grant.scope.length > 0) reply["scope"] = grant.scope.join(" ");
    return { kind: "json", status: 200, body: reply, headers: { "cache-control": "no-store", pragma: "no-cache" } };
  }

  // --- OAuth2 revocation endpoint (crates/handlers/src/oauth2/revoke.rs) ----------------------

  private revocationEndpoint(req: IncomingMessage, body: Buffer | "too-large"): Reply {
    const auth = this.clientAuthorization(req, body, REVOKE_FORM_FIELDS, (form) => form.has("token"));
    if (!("credentials" in auth)) return auth;
    const client = this.authenticateClient(auth.credentials);
    if (!("canonicalId" in client)) return client;
    const form = auth.form;
    if (form === undefined) return oauthError(400, "invalid_request");
    const token = form.get("token") ?? "";
    const hint = form.get("token_type_hint");
    const done: Reply = { kind: "empty", status: 200 };
    // A malformed token is an unknown token: 200, nothing done.
    const format = checkTokenFormat(token);
    if (!format.ok) return done;
    const hintIsKnown = hint === undefined || hint === "access_token" || hint === "refresh_token";
    if (format.kind === "access" && (hint === undefined || hint === "access_token")) {
      const row = this.accessTokens.get(token);
      if (!row || row.forcedExpired || row.expiresAt < this.now() || row.sessionFinished) return done;
      if (row.clientId !== client.canonicalId) return oauthError(401, "unauthorized_client");
      row.sessionFinished = true;
      return done;
    }
    // Refresh tokens are never issued here, so they are all unknown; so is any other kind of
    // token under a known hint (or none). Only a hint MAS does not handle is an error.
    if (hintIsKnown) return done;
    return oauthError(400, "unsupported_token_type");
  }

  // --- Client authorization (crates/axum-utils/src/client_authorization.rs) -------------------

  /**
   * The credentials from the Authorization header and the form, and the form itself (absent
   * without a form content type). `innerFields` are the endpoint's own form fields (a repeated
   * one fails deserialization), `innerValid` whether serde could read the endpoint's struct.
   */
  private clientAuthorization(
    req: IncomingMessage,
    body: Buffer | "too-large",
    innerFields: readonly string[],
    innerValid: (form: Map<string, string>) => boolean,
  ): { credentials: Credentials; form: Map<string, string> | undefined } | Reply {
    // The Authorization header first
    type Header = { kind: "basic"; id: string; secret: string } | { kind: "bearer"; token: string };
    let header: Header | undefined;
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      if (auth.length >= 6 && auth.slice(0, 6).toLowerCase() === "basic ") {
        const decoded = decodeBasic(auth);
        if (!decoded) return oauthError(400, "invalid_request", "Invalid Authorization header");
        header = { kind: "basic", ...decoded };
      } else if (auth.length >= 7 && auth.slice(0, 7).toLowerCase() === "bearer ") {
        header = { kind: "bearer", token: auth.slice(7).trimStart() };
      } else {
        return oauthError(400, "invalid_request", "Invalid Authorization header");
      }
    }

    // ... then the form (not a form: no form, no credentials from it)
    let form: Map<string, string> | undefined;
    if (isFormContentType(req.headers["content-type"])) {
      if (body === "too-large") return oauthError(500, "server_error", "Failed to buffer the request body");
      form = new Map();
      const known = new Set([...CLIENT_AUTH_FORM_FIELDS, ...innerFields]);
      for (const [k, v] of new URLSearchParams(body.toString("utf8"))) {
        if (form.has(k) && known.has(k)) return oauthError(500, "server_error", "Failed to deserialize form body");
        if (!form.has(k)) form.set(k, v);
      }
      if (!innerValid(form)) return oauthError(500, "server_error", "Failed to deserialize form body");
    }

    const formId = form?.get("client_id");
    const formSecret = form?.get("client_secret");
    const assertionType = form?.get("client_assertion_type");
    const assertion = form?.get("client_assertion");
    let credentials: Credentials;
    if (header?.kind === "basic" && formSecret === undefined && assertionType === undefined && assertion === undefined) {
      if (formId !== undefined && formId !== header.id) {
        return oauthError(
          400,
          "invalid_grant",
          `client_id in form (${rustDebugString(formId)}) does not match credential (${rustDebugString(header.id)})`,
        );
      }
      credentials = { kind: "basic", id: header.id, secret: header.secret };
    } else if (header === undefined && formId !== undefined && assertionType === undefined && assertion === undefined) {
      credentials = formSecret !== undefined ? { kind: "post", id: formId, secret: formSecret } : { kind: "none", id: formId };
    } else if (header === undefined && formId === undefined && formSecret === undefined && assertionType !== undefined && assertion !== undefined) {
      if (assertionType === "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
        return oauthError(400, "invalid_request", "Invalid client_assertion");
      }
      return oauthError(400, "invalid_request", `Unsupported client_assertion_type: ${assertionType}`);
    } else if (header?.kind === "bearer" && formId === undefined && formSecret === undefined && assertionType === undefined && assertion === undefined) {
      credentials = { kind: "bearer" };
    } else if (header === undefined && formId === undefined && formSecret === undefined && assertionType === undefined && assertion === undefined) {
      return oauthError(400, "invalid_request", "No credentials were presented");
    } else {
      return oauthError(400, "invalid_request");
    }
    return { credentials, form };
  }

  /** The client the credentials name, if they are right for it and its one auth method; else 401 invalid_client. */
  private authenticateClient(credentials: Credentials): ClientRow | Reply {
    if (credentials.kind === "bearer") return oauthError(401, "invalid_client");
    const id = decodeUlid(credentials.id);
    const client = id.ok ? this.clients.get(id.value) : undefined;
    if (!client) return oauthError(401, "invalid_client");
    const methodMatches =
      (credentials.kind === "basic" && client.authMethod === "client_secret_basic") ||
      (credentials.kind === "post" && client.authMethod === "client_secret_post");
    if (!methodMatches || credentials.secret !== client.secret) return oauthError(401, "invalid_client");
    return client;
  }
}

type Credentials = { kind: "basic" | "post" | "none"; id: string; secret?: string } | { kind: "bearer" };

const CLIENT_AUTH_FORM_FIELDS = ["client_id", "client_secret", "client_assertion_type", "client_assertion"] as const;
const TOKEN_FORM_FIELDS = ["grant_type", "scope", "code", "redirect_uri", "code_verifier", "refresh_token", "device_code"] as const;
const REVOKE_FORM_FIELDS = ["token", "token_type_hint"] as const;

/** MAS's fallback handler: its "not found" page, HTML whatever was asked for. */
function notFoundPage(method: string, path: string): Reply {
  const escaped = path.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return {
    kind: "html",
    status: 404,
    html: `<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Page not found</title></head>\n<body><h1>Page not found</h1><p>${method} ${escaped} HTTP/1.1</p></body>\n</html>\n`,
  };
}

// ---------------------------------------------------------------------------------------------
// Token-endpoint helpers

type Grant = { type: "client_credentials"; scope: string[] } | { type: "authorization_code" | "refresh_token" | "device_code" } | { type: "unsupported" };

/** `AccessTokenRequest` (serde tag `grant_type`); "bad-form" where serde would fail. */
function parseGrant(form: Map<string, string>): Grant | "bad-form" {
  const grantType = form.get("grant_type");
  if (grantType === undefined) return "bad-form";
  const scope = form.get("scope");
  let scopes: string[] = [];
  if (scope !== undefined) {
    const tokens = scope.split(" ");
    if (!tokens.every((t) => SCOPE_TOKEN.test(t))) return "bad-form";
    scopes = [...new Set(tokens)].sort();
  }
  switch (grantType) {
    case "client_credentials":
      return { type: "client_credentials", scope: scopes };
    case "authorization_code": {
      const redirect = form.get("redirect_uri");
      if (form.get("code") === undefined) return "bad-form";
      if (redirect !== undefined && !URL.canParse(redirect)) return "bad-form";
      return { type: "authorization_code" };
    }
    case "refresh_token":
      return form.get("refresh_token") === undefined ? "bad-form" : { type: "refresh_token" };
    case "urn:ietf:params:oauth:grant-type:device_code":
      return form.get("device_code") === undefined ? "bad-form" : { type: "device_code" };
    default:
      return { type: "unsupported" };
  }
}

/** policies/authorization_grant.rego for `grant_type == "client_credentials"` (no user). */
function policyViolations(scopes: readonly string[], client: ClientRow): string[] {
  const list = scopes.length === 0 ? [""] : scopes;
  const allowed = (s: string): boolean =>
    s === "" || s === "openid" || s === "email" || s === "urn:mas:graphql:*" || (s === "urn:mas:admin" && client.admin);
  const out = new Set<string>();
  for (const s of list) if (!allowed(s)) out.add(`scope '${s}' not allowed`);
  const count = (prefix: string): number => list.filter((s) => s.startsWith(prefix)).length;
  if (count("urn:matrix:org.matrix.msc2967.client:device:") > 1 || count("urn:matrix:client:device:") > 1) {
    out.add("only one device scope is allowed at a time");
  }
  const hasDevice = count("urn:matrix:client:device:") + count("urn:matrix:org.matrix.msc2967.client:device:") > 0;
  const hasApi = count("urn:matrix:client:api:") + count("urn:matrix:org.matrix.msc2967.client:api:") > 0;
  if (hasDevice && !hasApi) out.add("device scopes are only allowed when the client-server API scope is requested");
  if (count("urn:matrix:client:") > 0 && count("urn:matrix:org.matrix.msc2967.client:") > 0) out.add("request cannot mix unstable and stable scopes");
  return [...out].sort();
}

/** headers' `Basic::decode`: base64 after the scheme and leading spaces, split at the first ':'. */
function decodeBasic(value: string): { id: string; secret: string } | undefined {
  const encoded = value.slice(6).replace(/^ +/, "");
  if (encoded === "" || !/^[A-Za-z0-9+/]*={0,2}$/.test(encoded) || encoded.length % 4 !== 0) return undefined;
  const bytes = Buffer.from(encoded, "base64");
  let decoded: string;
  try {
    decoded = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  return { id: decoded.slice(0, colon), secret: decoded.slice(colon + 1) };
}

function mimeEssence(value: string | undefined): string | undefined {
  return value?.split(";", 1)[0]?.trim().toLowerCase();
}

/** axum `json_content_type`: application/json or application/*+json. */
function isJsonContentType(value: string | undefined): boolean {
  const essence = mimeEssence(value);
  if (essence === undefined) return false;
  const [type, subtype = ""] = essence.split("/", 2);
  return type === "application" && (subtype === "json" || subtype.endsWith("+json"));
}

/** axum's `has_content_type` (used by `Form`): a plain prefix check on the header. */
function isFormContentType(value: string | undefined): boolean {
  return value !== undefined && value.startsWith("application/x-www-form-urlencoded");
}

/** Path parameters are percent-decoded (axum); undecodable ones are left as they are. */
function decodePathParam(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

async function readBody(req: IncomingMessage): Promise<Buffer | "too-large"> {
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > BODY_LIMIT) tooLarge = true;
    else chunks.push(chunk);
  }
  return tooLarge ? "too-large" : Buffer.concat(chunks);
}
