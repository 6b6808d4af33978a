/**
 * A test homeserver ("stand-in") speaking the Matrix Client-Server API over real HTTP.
 *
 * Rule: it is kind to no one. It rejects what a real Synapse rejects, with the same status and
 * errcode, and accepts what Synapse accepts. The membership and power-level checks follow the
 * room-version auth rules and Synapse's membership handler (`room_member.py`, `event_auth.py`),
 * in Synapse's order: request validation (400) → membership handler checks → event auth (403).
 * Client paths are served under both `/_matrix/client/v3` and `/_matrix/client/r0`.
 *
 * Rooms are made by the `createRoom` test helper or over HTTP with `POST /createRoom` (and
 * `PUT /createRoom/{txnId}`), modelled on Synapse's `RoomCreationHandler.create_room` and
 * `_send_events_for_new_room` (synapse/handlers/room.py): the request's checks and their messages,
 * the presets (private_chat, trusted_private_chat, public_chat; default room version 11), the default
 * power levels (`historical: 100`, v12 creators not in `users`, tombstone 150 in v12) shallow-updated by
 * `power_level_content_override`, `initial_state`, name, topic, spaces (`creation_content.type`), v12
 * `additional_creators`, the events in Synapse's order and checked as one batch, then the invites — and
 * what a failure half-way leaves behind (a room with only its create and join events, an alias that is
 * taken). The room directory: `GET`, `PUT` and `DELETE /directory/room/{alias}` (synapse/rest/client/
 * directory.py, synapse/handlers/directory.py), with the alias' creator and stored servers. A state PUT
 * goes through Synapse's `EventValidator` (name/topic strings, tombstone, canonical JSON from v6,
 * power-levels schema, retention, server ACL, `m.mentions`, relations), deduplication, size limits, the
 * auth rules and the canonical alias check. Join rules are applied by room version (`knock` from 7,
 * `restricted` from 8 with its `allow` rooms and authorising user, `knock_restricted` from 10).
 *
 * Known simplifications (documented, deliberate):
 * - A user whose membership is not `join` cannot read `/state`, `/state/{type}/{key}` or `/members`
 *   (Synapse would give a departed user the state at the moment they left).
 * - No federation: remote users can be invited (as on Synapse) but nothing is sent anywhere. A remote
 *   alias is never found; a join that Synapse would make through another server (a restricted room
 *   whose only inviters are remote) fails as if no server answered.
 * - Member events carry no profile data (Synapse adds the user's displayname and avatar_url to joins
 *   and invites).
 * - `createRoom`: `visibility: "public"` publishes nothing (there is no public room list); `invite_3pid`
 *   entries are validated, and a valid one is refused (no identity server); Synapse's experimental
 *   `org.matrix.*` room versions count as unsupported; where Synapse's Python would fail on a malformed
 *   field with a TypeError or KeyError the answer is a 500, also for a few such fields (a non-string
 *   `room_alias_name`, an `initial_state` content that is no object) that Synapse handles in odder
 *   ways. Synapse's room-creation rate limit is not modelled; its default invite burst (more than 10
 *   invitees at once: 400) is.
 * - `/sync` (v2) follows the spec and Synapse's sync handler: `since` tokens (`s<stream>`), long-poll
 *   `timeout` (woken by any event the user can see; ended at once by `close()`), filters (inline JSON or
 *   uploaded with `POST /user/{id}/filter`; timeline/state/account_data `limit`, `types`, `not_types`
 *   with `*` wildcards, `senders`, `not_senders`, `rooms`, `not_rooms`, `contains_url`,
 *   `lazy_load_members`, `include_leave`, `event_fields`), `full_state`, `set_presence` (validated,
 *   otherwise ignored). History visibility is "shared" (a joined user sees the whole history).
 *   Not modelled: presence, typing, receipts as ephemeral events, unread counts, room summaries (all
 *   served as empty structures), `/messages` pagination.
 * - End-to-end encryption (synapse/rest/client/keys.py, sendtodevice.py, handlers/e2e_keys.py,
 *   devicemessage.py, and the sync handler's device-list and to-device sections): every access token
 *   belongs to a device (`registerUser(..., { deviceId })`; `/account/whoami` gives `device_id`).
 *   `POST /keys/upload` (the pydantic body checks, `user_id`/`device_id` against the requester, one-time
 *   key clashes, one fallback key per algorithm; answers `one_time_key_counts`), `POST /keys/query`,
 *   `POST /keys/claim` (oldest one-time key, else the fallback key, marked used), `GET /keys/changes`,
 *   `PUT /sendToDevice/{type}/{txnId}` (idempotent per token; `*` for every device). `/sync` serves the
 *   device's `to_device.events` (kept until a later `since` passes them), `device_one_time_keys_count`,
 *   `device_unused_fallback_key_types`, and in incremental syncs `device_lists.changed` (the user and
 *   room-mates whose device list changed — a new device or new device keys, not one-time keys — members
 *   of a newly joined room, users who joined or were invited since) and `left` (users no longer sharing
 *   a room); these wake long-polls. `m.room.encryption` and `m.room.encrypted` are ordinary events.
 *   `GET /room_keys/version` is always 404 "No backup found"; `GET /pushrules/` serves the spec's
 *   predefined rules; `GET /capabilities` Synapse's defaults (both for clients such as matrix-js-sdk).
 *   Not modelled: signatures are checked for shape, never verified (nor does Synapse verify device
 *   signatures); cross-signing (`/keys/device_signing/upload`, `/keys/signatures/upload`; query answers
 *   carry empty `master_keys` etc.); key backup; device management (`/devices`, display names, deletion);
 *   Synapse's limit of 100 to-device messages per sync (all pending ones are sent at once);
 *   the to-device rate limit; remote users (listed in `failures` with 503, messages to them dropped).
 * - Password login (synapse/rest/client/login.py): `GET /login` offers `m.login.password`; `POST /login`
 *   for users given a password (`setPassword`), a device of the given `device_id` reused or made;
 *   `revokeToken` ends one access token (an expiry, a logout elsewhere) and leaves the device.
 *   Not modelled: the failed-login rate limit, other login types.
 * - Every stored event (membership, state, power levels, messages, reactions) is recorded in its room's
 *   timeline with a stream position. Memberships given at room creation (the shared base map) are
 *   not timeline events: they are state from before the first sync, served in `state` sections.
 * - Event size: Synapse measures the canonical JSON of the whole signed PDU (limit 65,536 bytes); here
 *   the PDU is approximated (hashes, signatures, three auth events and one prev event of realistic
 *   length: about 610 bytes besides the content for a message), so the boundary is close to, not
 *   exactly at, Synapse's.
 *
 * Synapse admin API: only the registration-token endpoints (`/_synapse/admin/v1/registration_tokens`,
 * from `synapse/rest/admin/registration_tokens.py` and the registration store), for server admins
 * (`registerUser(..., { admin: true })`, `setAdmin`). Token expiry is judged by the server's clock
 * (`clock` option of `start`, `setNow`), which governs only this API: event timestamps keep real time.
 * `delegateAuthToMas(true)` unregisters these endpoints, as Synapse does when auth is delegated to MAS.
 *
 * Scale: memberships given at room creation are kept in a shared, read-only base map (rooms created
 * from the same Map/object share it); each room keeps only its own changes in a small overlay map.
 * Member events are generated when served, and `/state` is serialised straight to a JSON string.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { isIPv4, isIPv6, type AddressInfo } from "node:net";
import { randomBytes, randomInt } from "node:crypto";
import type { Membership } from "../../src/reconcile/types.ts";

export type EndpointKind =
  | "whoami"
  | "directory"
  | "state"
  | "state_event"
  | "put_state"
  | "invite"
  | "kick"
  | "ban"
  | "unban"
  | "join"
  | "leave"
  | "joined_rooms"
  | "members"
  | "joined_members"
  | "send"
  | "redact"
  | "sync"
  | "versions"
  /** `GET` and `POST /login`. */
  | "login"
  | "filter"
  | "account_data"
  | "profile"
  | "event"
  | "receipt"
  /** `POST /createRoom` and `PUT /createRoom/{txnId}`. */
  | "create_room"
  /** Synapse admin API: `/_synapse/admin/v1/registration_tokens[/…]`. */
  | "admin_registration_tokens"
  /** End-to-end encryption: `POST /keys/upload`, `/keys/query`, `/keys/claim`, `GET /keys/changes`. */
  | "keys_upload"
  | "keys_query"
  | "keys_claim"
  | "keys_changes"
  /** `PUT /sendToDevice/{eventType}/{txnId}`. */
  | "send_to_device"
  /** `GET /room_keys/version` (server-side key backup; none is ever stored here). */
  | "room_keys"
  /** `GET /pushrules/` (the predefined rules only). */
  | "push_rules"
  /** `GET /capabilities`. */
  | "capabilities"
  | "other";

const ENDPOINT_KINDS: readonly EndpointKind[] = [
  "whoami",
  "directory",
  "state",
  "state_event",
  "put_state",
  "invite",
  "kick",
  "ban",
  "unban",
  "join",
  "leave",
  "joined_rooms",
  "members",
  "joined_members",
  "send",
  "redact",
  "sync",
  "versions",
  "login",
  "filter",
  "account_data",
  "profile",
  "event",
  "receipt",
  "create_room",
  "admin_registration_tokens",
  "keys_upload",
  "keys_query",
  "keys_claim",
  "keys_changes",
  "send_to_device",
  "room_keys",
  "push_rules",
  "capabilities",
  "other",
];

export type JoinRule = "public" | "invite" | "knock" | "restricted" | "knock_restricted" | "private";

export interface FakeRoomOptions {
  /** User id, sender of m.room.create; always joined. */
  creator: string;
  /** Room version, default "10". "12": creators have infinite power, room id has no server part. */
  version?: string;
  /** v12 only (content.additional_creators). */
  additionalCreators?: string[];
  /** "#name:server" registered in the room directory (server must be this server). */
  alias?: string;
  /**
   * Full m.room.power_levels content. Default: the usual preset
   * `{users:{[creator]:100} (creator omitted in v12), users_default:0, events:{}, events_default:0,
   * state_default:50, ban:50, kick:50, redact:50, invite:0}`. `null`: no power levels event at all.
   */
  powerLevels?: Record<string, unknown> | null;
  /** Initial memberships (the creator is always joined). Rooms given the same Map/object share it. */
  members?: Readonly<Record<string, Membership>> | ReadonlyMap<string, Membership>;
  /** Addition to the brief: the room's join rule (m.room.join_rules), default "invite". */
  joinRule?: JoinRule;
  /**
   * Adds an m.room.encryption state event (`{algorithm: "m.megolm.v1.aes-sha2"}`). Messages sent into
   * the room with the `sendMessage` helper then arrive as `m.room.encrypted` events, as they would
   * from a real client: a bot without end-to-end encryption cannot read them.
   */
  encrypted?: boolean;
  /** Adds an m.room.name state event. */
  name?: string;
}

/** A non-state timeline event, as the `messages()` and `waitForMessage()` helpers return it. */
export interface FakeMessage {
  readonly eventId: string;
  readonly sender: string;
  readonly type: string;
  readonly content: Record<string, unknown>;
}

/** One request, as `requestLog()` returns it. `user` is set once the access token was accepted. */
export interface RequestLogEntry {
  readonly method: string;
  readonly path: string;
  /** The raw query string including `?`, or "". */
  readonly query: string;
  readonly kind: EndpointKind;
  readonly user: string | null;
  /** The device of the access token used (each `registerUser` call is a device); null before auth. */
  readonly device: string | null;
  /** null while the request is still pending (a long-poll). */
  readonly status: number | null;
  /** Wall-clock milliseconds when the request arrived and when its answer was finished (null while pending). */
  readonly receivedAt: number;
  readonly finishedAt: number | null;
}

export interface AppliedChange {
  readonly kind: string;
  readonly roomId: string;
  readonly sender: string;
  readonly target?: string;
  readonly content?: Record<string, unknown>;
}

/** A room directory entry, as `directoryEntry()` returns it. `creator` is null for aliases added with `addAlias`. */
export interface AliasRecord {
  readonly roomId: string;
  readonly creator: string | null;
  readonly servers: readonly string[];
}

export interface SentEvent {
  readonly type: string;
  readonly sender: string;
  readonly content: Record<string, unknown>;
}

/**
 * A registration token as Synapse's admin API serves it (`registrationTokens()` returns copies).
 * `uses_allowed` null: unlimited; `expiry_time` (ms since the epoch) null: never expires.
 */
export interface RegistrationTokenInfo {
  readonly token: string;
  readonly uses_allowed: number | null;
  readonly pending: number;
  readonly completed: number;
  readonly expiry_time: number | null;
}

type JsonObject = Record<string, unknown>;

const MEMBERSHIPS: ReadonlySet<string> = new Set(["join", "invite", "leave", "ban", "knock"]);
const MAX_SAFE = Number.MAX_SAFE_INTEGER; // canonical JSON: integers in [-(2^53)+1, 2^53-1]

/** An error answered as `{errcode, error}` with the given status. */
class MatrixHttpError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly extra: JsonObject = {},
  ) {
    super(message);
  }
}

const forbidden = (message: string): MatrixHttpError => new MatrixHttpError(403, "M_FORBIDDEN", message);

// ---------------------------------------------------------------------------------------------
// Identifier grammar (Synapse's UserID/RoomAlias parsing plus the spec's server-name grammar).

const SERVER_NAME = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::[0-9]{1,5})?$/;
// Historical user ids: any printable ASCII but ':' in the localpart.
const USER_LOCALPART = /^[\x21-\x39\x3B-\x7E]+$/;

function isValidUserId(raw: unknown): boolean {
  if (typeof raw !== "string" || raw.length > 255 || !raw.startsWith("@")) return false;
  const colon = raw.indexOf(":");
  if (colon < 2) return false;
  return USER_LOCALPART.test(raw.slice(1, colon)) && SERVER_NAME.test(raw.slice(colon + 1));
}

function isValidAlias(raw: string): boolean {
  if (raw.length > 255 || !raw.startsWith("#")) return false;
  const colon = raw.indexOf(":");
  if (colon < 2) return false;
  return !/\s/.test(raw.slice(1, colon)) && SERVER_NAME.test(raw.slice(colon + 1));
}

function isRoomIdShape(raw: string): boolean {
  return raw.startsWith("!") && raw.length > 1 && raw.length <= 255;
}

function randomLetters(n: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  const bytes = randomBytes(n);
  let out = "";
  for (let i = 0; i < n; i++) out += alphabet[bytes[i]! % alphabet.length];
  return out;
}

// ---------------------------------------------------------------------------------------------
// JSON helpers.

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Canonical JSON (sorted keys), used to compare contents the way Synapse does. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (isObject(v)) {
    const keys = Object.keys(v).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

/** True when the raw JSON text holds a number literal with a fraction or exponent (a float). */
function containsFloatLiteral(text: string): boolean {
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) {
      inString = true;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      let j = i;
      for (; j < text.length; j++) {
        const d = text.charCodeAt(j);
        if (d === 0x2e || d === 0x65 || d === 0x45) return true;
        if (!(d === 0x2d || d === 0x2b || (d >= 0x30 && d <= 0x39))) break;
      }
      i = j - 1;
    }
  }
  return false;
}

/** Synapse `validate_canonicaljson`: no floats, integers within the canonical range. */
function assertCanonicalJson(raw: string, value: unknown): void {
  if (containsFloatLiteral(raw)) throw new MatrixHttpError(400, "M_BAD_JSON", "Bad JSON value: float");
  const walk = (v: unknown): void => {
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new MatrixHttpError(400, "M_BAD_JSON", "JSON integer out of range");
    } else if (Array.isArray(v)) {
      v.forEach(walk);
    } else if (isObject(v)) {
      for (const k of Object.keys(v)) walk(v[k]);
    }
  };
  walk(value);
}

/**
 * The source text of each member value of a JSON object text (already parsed, so valid), by key; the
 * last of duplicate keys wins, as in Python's `json` and `JSON.parse`. Lets a handler tell `5` (a
 * Python int) from `5.0` or `5e0` (Python floats), which `JSON.parse` cannot.
 */
function memberSources(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const isWs = (c: string | undefined): boolean => c === " " || c === "\t" || c === "\n" || c === "\r";
  let i = 0;
  const skipWs = (): void => {
    while (isWs(text[i])) i++;
  };
  const skipString = (): void => {
    i++; // opening quote
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++; // closing quote
  };
  const skipValue = (): void => {
    const c = text[i];
    if (c === '"') {
      skipString();
      return;
    }
    if (c === "{" || c === "[") {
      let depth = 0;
      while (i < text.length) {
        const d = text[i];
        if (d === '"') {
          skipString();
          continue;
        }
        i++;
        if (d === "{" || d === "[") depth++;
        else if ((d === "}" || d === "]") && --depth === 0) return;
      }
      return;
    }
    while (i < text.length && !isWs(text[i]) && text[i] !== "," && text[i] !== "}") i++;
  };
  skipWs();
  if (text[i] !== "{") return out;
  i++;
  skipWs();
  while (i < text.length && text[i] === '"') {
    const keyStart = i;
    skipString();
    const key = JSON.parse(text.slice(keyStart, i)) as string;
    skipWs();
    i++; // ':'
    skipWs();
    const valueStart = i;
    skipValue();
    out.set(key, text.slice(valueStart, i));
    skipWs();
    if (text[i] === ",") {
      i++;
      skipWs();
    }
  }
  return out;
}

/** Python `type(v) is int` for a JSON value, given its source text (a float literal is not an int; nor is a boolean). */
function isPyInt(v: unknown, source: string | undefined): v is number {
  return typeof v === "number" && !/[.eE]/.test(source ?? "");
}

/** Python `urllib.parse.unquote` (Synapse unquotes path parameters with it): bad escapes stay, bad UTF-8 becomes U+FFFD. */
function pyUnquote(s: string): string {
  if (!s.includes("%")) return s;
  return s.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => Buffer.from(run.replace(/%/g, ""), "hex").toString("utf8"));
}

// ---------------------------------------------------------------------------------------------
// Synapse admin API: registration tokens (synapse/rest/admin/registration_tokens.py).

const REG_TOKENS_PATH = "/_synapse/admin/v1/registration_tokens";
/** `string.ascii_letters + string.digits + "._~-"`: what Synapse accepts in, and generates for, a token. */
const REG_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~-";
const REG_TOKEN_CHARS = /^[A-Za-z0-9._~-]*$/;
/** Column types of `registration_tokens` on PostgreSQL: `uses_allowed INT`, `expiry_time BIGINT`. */
const PG_INT4_MAX = 2_147_483_647n;
const PG_INT8_MAX = 9_223_372_036_854_775_807n;

interface RegistrationTokenRow {
  token: string;
  uses_allowed: number | null;
  pending: number;
  completed: number;
  expiry_time: number | null;
}

/** A copy with Synapse's key order (token, uses_allowed, pending, completed, expiry_time). */
function tokenInfo(t: RegistrationTokenRow): RegistrationTokenInfo {
  return { token: t.token, uses_allowed: t.uses_allowed, pending: t.pending, completed: t.completed, expiry_time: t.expiry_time };
}

/**
 * The admin list's `valid=true` condition (Synapse `get_registration_tokens`, SQL):
 * `(uses_allowed > pending + completed OR uses_allowed IS NULL) AND (expiry_time > now OR expiry_time IS NULL)`.
 * `valid=false` lists exactly the others (`uses_allowed <= pending + completed OR expiry_time <= now`).
 */
function isListedValid(t: RegistrationTokenRow, now: number): boolean {
  return (t.uses_allowed === null || t.uses_allowed > t.pending + t.completed) && (t.expiry_time === null || t.expiry_time > now);
}

/**
 * Whether a registration may start with the token (Synapse `registration_token_is_valid`). Not quite
 * the list's condition: Python truthiness makes `uses_allowed: 0` unlimited here and lets a token be
 * used at the very millisecond of its `expiry_time`.
 */
function registrationTokenUsable(t: RegistrationTokenRow, now: number): { ok: true } | { ok: false; why: string } {
  if (t.expiry_time !== null && t.expiry_time !== 0 && t.expiry_time < now) return { ok: false, why: `expired at ${t.expiry_time} (now ${now})` };
  if (t.uses_allowed !== null && t.uses_allowed !== 0 && t.pending + t.completed >= t.uses_allowed) {
    return { ok: false, why: `used up (uses_allowed ${t.uses_allowed}, pending ${t.pending}, completed ${t.completed})` };
  }
  return { ok: true };
}

const invalidParam = (message: string): MatrixHttpError => new MatrixHttpError(400, "M_INVALID_PARAM", message);
const internalError = (): MatrixHttpError => new MatrixHttpError(500, "M_UNKNOWN", "Internal server error");

/** `uses_allowed` (when present): a non-negative Python int or null. */
function parseUsesAllowed(v: unknown, source: string | undefined): number | null {
  if (v === null) return null;
  if (isPyInt(v, source) && v >= 0) return v;
  throw invalidParam("uses_allowed must be a non-negative integer or null");
}

/** `expiry_time` (when present): a Python int not before `now`, or null. */
function parseExpiryTime(v: unknown, source: string | undefined, now: number): number | null {
  if (v === null) return null;
  if (!isPyInt(v, source)) throw invalidParam("expiry_time must be an integer or null");
  if (v < now) throw invalidParam("expiry_time must not be in the past");
  return v;
}

/**
 * PostgreSQL refuses values beyond the column types ("integer out of range" / "bigint out of range"),
 * which Synapse answers with a 500. Checked on the exact literal, as the JSON number may be rounded.
 */
function assertFitsColumns(values: { uses_allowed?: number | null; expiry_time?: number | null }, sources: ReadonlyMap<string, string>): void {
  const exceeds = (key: "uses_allowed" | "expiry_time", max: bigint): boolean => {
    if (values[key] === undefined || values[key] === null) return false;
    const source = sources.get(key);
    if (source === undefined || !/^-?[0-9]+$/.test(source)) return false;
    return BigInt(source) > max;
  };
  if (exceeds("uses_allowed", PG_INT4_MAX) || exceeds("expiry_time", PG_INT8_MAX)) throw internalError();
}

// ---------------------------------------------------------------------------------------------
// Synapse's identifier parsing and Python's value semantics, as `createRoom`, the directory and
// the event validator apply them to whatever JSON a client sends.

/** Python's `string.whitespace`. */
const PY_WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x0c"] as const;

/**
 * Synapse `parse_and_validate_server_name`: a host (a DNS-like name, or an IPv6 literal in
 * brackets) and an optional port that Python's `int()` accepts (no range check).
 */
function isSynapseServerName(name: string): boolean {
  let host = name;
  if (!name.endsWith("]")) {
    const colon = name.lastIndexOf(":");
    if (colon >= 0) {
      host = name.slice(0, colon);
      if (!/^\s*[+-]?\d+(?:_\d+)*\s*$/.test(name.slice(colon + 1))) return false;
    }
  }
  if (host.startsWith("[")) {
    if (!host.endsWith("]")) return false;
    const address = host.slice(1, -1);
    return address !== "" && isIPv6(address);
  }
  return /^[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*$/.test(host);
}

/** Synapse `DomainSpecificString.from_string`: the sigil, then anything, a `:` and anything (nothing else is checked). */
function parsesAsId(s: unknown, sigil: "@" | "#"): boolean {
  return typeof s === "string" && s.startsWith(sigil) && s.indexOf(":", 1) > 0;
}

/** Synapse `DomainSpecificString.is_valid` (`UserID.is_valid`, `RoomAlias.is_valid`): `from_string` plus a valid server name. */
function isSynapseId(s: unknown, sigil: "@" | "#"): s is string {
  return parsesAsId(s, sigil) && isSynapseServerName(domainOfId(s as string));
}

/** The error `from_string` raises for `s` (which does not parse). */
function idParseError(s: string, kind: "UserID" | "RoomAlias"): MatrixHttpError {
  const sigil = kind === "UserID" ? "@" : "#";
  if (!s.startsWith(sigil)) return new MatrixHttpError(400, "M_INVALID_PARAM", `Expected ${kind} string to start with '${sigil}'`);
  return new MatrixHttpError(400, "M_INVALID_PARAM", `Expected ${kind} of the form '${sigil}localname:domain'`);
}

const domainOfId = (id: string): string => id.slice(id.indexOf(":") + 1);

/** Python's repr of a string: single quotes unless it holds one and no double quote. */
function pyStrRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === quote || ch === "\\") out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out + quote;
}

/** Python's repr of a JSON value (`%r`, and what jsonschema's messages show). */
function pyRepr(v: unknown): string {
  if (typeof v === "string") return pyStrRepr(v);
  if (v === true) return "True";
  if (v === false) return "False";
  if (v === null || v === undefined) return "None";
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  if (isObject(v)) return `{${Object.entries(v).map(([k, x]) => `${pyStrRepr(k)}: ${pyRepr(x)}`).join(", ")}}`;
  return typeof v === "number" ? String(v) : (JSON.stringify(v) ?? "None");
}

/** Python's `str()` of a JSON value (what `%s` shows). */
const pyStr = (v: unknown): string => (typeof v === "string" ? v : pyRepr(v));

/** Python's truthiness of a JSON value. */
function pyTruthy(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === "") return false;
  if (Array.isArray(v)) return v.length > 0;
  if (isObject(v)) return Object.keys(v).length > 0;
  return true;
}

/** Python's `for x in v` over a JSON value: a list's items, a string's characters, a dict's keys; else a TypeError (500). */
function pyIter(v: unknown): unknown[] {
  if (Array.isArray(v)) return v;
  if (typeof v === "string") return [...v];
  if (isObject(v)) return Object.keys(v);
  throw internalError();
}

/** Python's `item in container` for JSON values, with its TypeErrors (500). */
function pyContains(container: unknown, item: unknown): boolean {
  if (typeof container === "string") {
    if (typeof item !== "string") throw internalError();
    return container.includes(item);
  }
  if (Array.isArray(container)) return container.some((x) => canonicalJson(x) === canonicalJson(item));
  if (isObject(container)) {
    if (Array.isArray(item) || isObject(item)) throw internalError(); // unhashable
    return typeof item === "string" && Object.hasOwn(container, item);
  }
  throw internalError();
}

/** Python's `len()` of a JSON value (code points for a string), with its TypeError (500). */
function pyLen(v: unknown): number {
  return pyIter(v).length;
}

/** Whether Python could hash the value (a list or dict cannot be a set member or dict key). */
const pyHashable = (v: unknown): boolean => !Array.isArray(v) && !isObject(v);

/**
 * The syntax tree of a JSON text, reduced to what `JSON.parse` loses: whether a number was written as
 * a float (`1.0`, `1e3`: Python floats) and the order of an object's members (a repeated key keeps
 * its first position and takes its last value, as in Python's `dict`).
 */
type Shape =
  | { readonly kind: "object"; readonly members: ReadonlyMap<string, Shape> }
  | { readonly kind: "array"; readonly items: readonly Shape[] }
  | { readonly kind: "number"; readonly float: boolean; readonly value: number }
  | { readonly kind: "other" };

const OTHER_SHAPE: Shape = { kind: "other" };

/** The shape of a JSON text that `JSON.parse` accepted. */
function jsonShape(text: string): Shape {
  let i = 0;
  const skipWs = (): void => {
    while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) i++;
  };
  const readString = (): string => {
    const start = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (): Shape => {
    skipWs();
    const c = text[i];
    if (c === "{" || c === "[") {
      i++;
      const members = new Map<string, Shape>();
      const items: Shape[] = [];
      skipWs();
      const close = c === "{" ? "}" : "]";
      if (text[i] === close) {
        i++;
      } else {
        for (;;) {
          skipWs();
          if (c === "{") {
            const key = readString();
            skipWs();
            i++; // ':'
            members.set(key, value());
          } else {
            items.push(value());
          }
          skipWs();
          if (text[i++] !== ",") break;
        }
      }
      return c === "{" ? { kind: "object", members } : { kind: "array", items };
    }
    if (c === '"') {
      readString();
      return OTHER_SHAPE;
    }
    if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) {
      const start = i;
      while (i < text.length && /[0-9eE+\-.]/.test(text[i]!)) i++;
      const literal = text.slice(start, i);
      return { kind: "number", float: /[.eE]/.test(literal), value: Number(literal) };
    }
    i += c === "f" ? 5 : 4; // false, true, null
    return OTHER_SHAPE;
  };
  return value();
}

/** The shape of a member or item inside `shape` (undefined when the path does not exist). */
function shapeAt(shape: Shape | undefined, ...path: readonly (string | number)[]): Shape | undefined {
  let s = shape;
  for (const step of path) {
    if (s?.kind === "object" && typeof step === "string") s = s.members.get(step);
    else if (s?.kind === "array" && typeof step === "number") s = s.items[step];
    else return undefined;
  }
  return s;
}

/** Synapse `validate_canonicaljson` over a value's shape, in document order: no floats, integers within ±(2^53-1). */
function assertCanonicalShape(shape: Shape | undefined): void {
  if (shape === undefined) return;
  if (shape.kind === "number") {
    if (shape.float) throw new MatrixHttpError(400, "M_BAD_JSON", "Bad JSON value: float");
    if (!(Math.abs(shape.value) <= MAX_SAFE)) throw new MatrixHttpError(400, "M_BAD_JSON", "JSON integer out of range");
  } else if (shape.kind === "object") {
    for (const s of shape.members.values()) assertCanonicalShape(s);
  } else if (shape.kind === "array") {
    for (const s of shape.items) assertCanonicalShape(s);
  }
}

/** Python `type(v) is int`, from the value's shape (or, without one, the value). */
function isPyIntAt(v: unknown, shape: Shape | undefined): boolean {
  if (shape !== undefined) return shape.kind === "number" && !shape.float;
  return typeof v === "number" && Number.isInteger(v);
}

/** Python's type name of a JSON value (pydantic's `input_type`). */
function pyTypeName(v: unknown): string {
  if (typeof v === "string") return "str";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (v === null || v === undefined) return "NoneType";
  return Array.isArray(v) ? "list" : "dict";
}

interface PydanticIssue {
  readonly loc: string;
  readonly type: "missing" | "string_type" | "list_type" | "dict_type" | "bool_type" | "model_type" | "value_error";
  readonly input: unknown;
  /** For `model_type`: the model's class name; for `value_error`: the validator's message. */
  readonly detail?: string;
}

const PYDANTIC_MESSAGES: Record<PydanticIssue["type"], string> = {
  missing: "Field required",
  string_type: "Input should be a valid string",
  list_type: "Input should be a valid list",
  dict_type: "Input should be a valid dictionary",
  bool_type: "Input should be a valid boolean",
  model_type: "Input should be a valid dictionary or instance of ",
  value_error: "Value error, ",
};

/**
 * Synapse `validate_json_object`: pydantic 2.12's `str(ValidationError)` as the message; M_MISSING_PARAM
 * for a single missing field, M_BAD_JSON otherwise. pydantic shortens an `input_value` repr longer than
 * 50 characters to its first 25, `...` and its last 24.
 */
function pydanticError(model: string, issues: readonly PydanticIssue[]): MatrixHttpError {
  const lines = [`${issues.length} validation error${issues.length === 1 ? "" : "s"} for ${model}`];
  for (const issue of issues) {
    const chars = [...pyRepr(issue.input)];
    const input = chars.length > 50 ? `${chars.slice(0, 25).join("")}...${chars.slice(-24).join("")}` : chars.join("");
    lines.push(issue.loc);
    lines.push(`  ${PYDANTIC_MESSAGES[issue.type]}${issue.detail ?? ""} [type=${issue.type}, input_value=${input}, input_type=${pyTypeName(issue.input)}]`);
    lines.push(`    For further information visit https://errors.pydantic.dev/2.12/v/${issue.type}`);
  }
  const errcode = issues.length === 1 && issues[0]!.type === "missing" ? "M_MISSING_PARAM" : "M_BAD_JSON";
  return new MatrixHttpError(400, errcode, lines.join("\n"));
}

/** A glob of a server ACL (`*`, `?`), matched whole and case-insensitively (Synapse's `glob_to_regex`). */
function aclGlobMatches(glob: string, server: string): boolean {
  const source = glob.replace(/[.*+?^${}()|[\]\\-]/g, (c) => (c === "*" ? ".*" : c === "?" ? "." : `\\${c}`));
  return new RegExp(`^${source}$`, "i").test(server);
}

/** Synapse `server_acl_evaluator_from_event(...).server_matches_acl_event(server)`. */
function serverAllowedByAcl(content: JsonObject, server: string): boolean {
  const allowIp = typeof content.allow_ip_literals === "boolean" ? content.allow_ip_literals : true;
  const globs = (key: string): string[] => {
    const v = content[key];
    return Array.isArray(v) ? v.filter((s): s is string => typeof s === "string") : [];
  };
  if (!allowIp && (server.startsWith("[") || isIPv4(server))) return false;
  if (globs("deny").some((g) => aclGlobMatches(g, server))) return false;
  return globs("allow").some((g) => aclGlobMatches(g, server));
}

/**
 * Synapse's MENTIONS_SCHEMA (`EventValidator.validate_new`, for any event whose content has
 * `m.mentions`): 400 M_BAD_JSON. A wrong item in `user_ids` has an integer at the end of its error
 * path, which Synapse's message building cannot concatenate: a 500.
 */
function validateMentions(v: unknown): void {
  if (!isObject(v)) throw new MatrixHttpError(400, "M_BAD_JSON", `${pyRepr(v)} is not of type 'object'`);
  if (Object.hasOwn(v, "user_ids") && !Array.isArray(v.user_ids)) {
    throw new MatrixHttpError(400, "M_BAD_JSON", `"user_ids": ${pyRepr(v.user_ids)} is not of type 'array'`);
  }
  if (Object.hasOwn(v, "room") && typeof v.room !== "boolean") {
    throw new MatrixHttpError(400, "M_BAD_JSON", `"room": ${pyRepr(v.room)} is not of type 'boolean'`);
  }
  if (Array.isArray(v.user_ids) && v.user_ids.some((u) => typeof u !== "string")) throw internalError();
}

/** Synapse's room presets (`RoomCreationHandler._presets_dict`), with no preset encrypted (the default config). */
interface RoomPreset {
  readonly joinRule: string;
  readonly historyVisibility: string;
  readonly inviteesHaveOps: boolean;
  readonly guestCanJoin: boolean;
  /** Applied to the default power levels with `dict.update` (note public_chat's top-level `m.call.invite`). */
  readonly powerLevels: Readonly<JsonObject>;
}

const ROOM_PRESETS: Readonly<Record<string, RoomPreset>> = {
  private_chat: { joinRule: "invite", historyVisibility: "shared", inviteesHaveOps: false, guestCanJoin: true, powerLevels: { invite: 0 } },
  trusted_private_chat: { joinRule: "invite", historyVisibility: "shared", inviteesHaveOps: true, guestCanJoin: true, powerLevels: { invite: 0 } },
  public_chat: { joinRule: "public", historyVisibility: "shared", inviteesHaveOps: false, guestCanJoin: false, powerLevels: { "m.call.invite": 50 } },
};

/** Synapse's `DEFAULT_ROOM_VERSION` (synapse/config/server.py), used when `createRoom` names none. */
const CREATE_ROOM_DEFAULT_VERSION = "11";
/** Room versions this stand-in knows (Synapse's experimental `org.matrix.*` versions are not modelled). */
const KNOWN_ROOM_VERSIONS: ReadonlySet<string> = new Set(["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]);
/** Synapse `MAX_ALIAS_LENGTH`. */
const MAX_ALIAS_LENGTH = 255;
/** Synapse's default `rc_invites.per_room.burst_count`: `createRoom` refuses more invitees at once. */
const CREATE_ROOM_MAX_INVITES = 10;

/** The default m.room.power_levels of a new room (Synapse `_send_events_for_new_room`), before the preset and the override. */
function defaultPowerLevels(creator: string, versionNumber: number): JsonObject {
  return {
    users: versionNumber >= 12 ? {} : { [creator]: 100 },
    users_default: 0,
    events: {
      "m.room.name": 50,
      "m.room.power_levels": 100,
      "m.room.history_visibility": 100,
      "m.room.canonical_alias": 50,
      "m.room.avatar": 50,
      "m.room.tombstone": versionNumber >= 12 ? 150 : 100,
      "m.room.server_acl": 100,
      "m.room.encryption": 100,
    },
    events_default: 0,
    state_default: 50,
    ban: 50,
    kick: 50,
    redact: 50,
    invite: 50,
    historical: 100,
  };
}

// ---------------------------------------------------------------------------------------------
// Rooms.

interface MemberRecord {
  readonly membership: Membership;
  readonly sender: string;
  readonly content: JsonObject;
  readonly eventId: string;
  readonly ts: number;
  readonly stream: number;
}

interface StateRecord {
  readonly type: string;
  readonly stateKey: string;
  readonly content: JsonObject;
  readonly sender: string;
  readonly eventId: string;
  readonly ts: number;
  readonly stream: number;
}

/** Memberships given at creation: read-only, possibly shared by many rooms. */
interface BaseMembers {
  readonly map: ReadonlyMap<string, Membership>;
  /** JSON-quoted user ids in iteration order, built on first serve. */
  quoted?: string[];
  /** Position of each user in `map` (their event id is `$<tag>_m<index>`), built on first need. */
  index?: Map<string, number>;
  /** Joined users per server, built on first need (room directory `servers`). */
  hostCounts?: Map<string, number>;
}

/** What a state event replaced (for `unsigned.prev_content` / `replaces_state`). */
type PrevState =
  | { readonly eventId: string; readonly sender: string; readonly content: JsonObject }
  | { readonly baseMembership: Membership };

/** A stored event: everything that happens in a room is one, in stream order. */
interface TimelineEvent {
  readonly stream: number;
  readonly eventId: string;
  readonly type: string;
  readonly sender: string;
  readonly content: JsonObject;
  readonly ts: number;
  /** Present for state events. */
  readonly stateKey?: string;
  readonly prev?: PrevState;
  /** The access token and transaction id of a `PUT /send` (echoed as `unsigned.transaction_id`). */
  readonly txn?: { readonly token: string; readonly id: string };
}

/** A membership from the creation-time base map (no timeline event of its own). */
interface BaseMemberEntry {
  readonly base: true;
  readonly user: string;
  readonly membership: Membership;
}

type StateEntry = TimelineEvent | BaseMemberEntry;

const isBaseEntry = (e: StateEntry): e is BaseMemberEntry => "base" in e;

/** How events are serialised for one client request. */
interface EventFormat {
  /** The requester's access token (`unsigned.transaction_id` goes to the sender's own token only). */
  readonly token: string;
  readonly nowMs: number;
  /** Filter `event_fields`. */
  readonly fields: readonly string[] | undefined;
  readonly withRoomId: boolean;
}

/** Index of the first event with a stream position above `pos` (timelines are in stream order). */
function firstAfter(timeline: readonly TimelineEvent[], pos: number): number {
  let lo = 0;
  let hi = timeline.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (timeline[mid]!.stream <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const EMPTY_BASE: BaseMembers = { map: new Map() };

interface Room {
  readonly id: string;
  readonly version: string;
  readonly versionNumber: number;
  readonly creator: string;
  /** v12+: the create sender and additional creators (infinite power). Empty before v12. */
  readonly creators: ReadonlySet<string>;
  readonly createdTs: number;
  /** Prefix for this room's event ids. */
  readonly tag: string;
  readonly base: BaseMembers;
  /** This room's own membership changes (overlay on `base`). */
  readonly delta: Map<string, MemberRecord>;
  /** Non-member state, keyed `type\u0000stateKey`, in insertion order. */
  readonly state: Map<string, StateRecord>;
  readonly sent: SentEvent[];
  eventSeq: number;
  /** Stream position of the m.room.create event; the base memberships count from here. */
  readonly createdStream: number;
  /** Every event since creation (base memberships excepted), in stream order. */
  readonly timeline: TimelineEvent[];
  /** Read receipts: user → receipt type → event id. */
  readonly receipts: Map<string, Map<string, string>>;
}

const stateKeyOf = (type: string, stateKey: string): string => `${type}\u0000${stateKey}`;

function membershipOf(room: Room, user: string): Membership | undefined {
  if (room.delta.size > 0) {
    const d = room.delta.get(user);
    if (d) return d.membership;
  }
  return room.base.map.get(user);
}

function baseSender(room: Room, user: string, m: Membership): string {
  return m === "invite" || m === "ban" ? room.creator : user;
}

function memberRecord(room: Room, user: string): MemberRecord | undefined {
  const d = room.delta.get(user);
  if (d) return d;
  const m = room.base.map.get(user);
  if (m === undefined) return undefined;
  let index = 0;
  for (const key of room.base.map.keys()) {
    if (key === user) break;
    index++;
  }
  return {
    membership: m,
    sender: baseSender(room, user, m),
    content: { membership: m },
    eventId: `$${room.tag}_m${index.toString(36)}`,
    ts: room.createdTs,
    stream: 0,
  };
}

function powerLevelsOf(room: Room): JsonObject | undefined {
  return room.state.get(stateKeyOf("m.room.power_levels", ""))?.content;
}

/** Python `int(v)` as Synapse applies it to stored levels (only integers reach the store here). */
function toLevel(v: unknown, fallback: number): number {
  if (v === undefined || v === null) return fallback;
  if (typeof v === "number") return Math.trunc(v);
  if (typeof v === "string" && /^\s*[+-]?\d+\s*$/.test(v)) return Number.parseInt(v, 10);
  return fallback;
}

function ownValue(obj: unknown, key: string): unknown {
  return isObject(obj) && Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/** A user's level (Synapse `get_user_power_level`, with MSC4289 creators in v12). */
function userLevel(room: Room, user: string): number {
  if (room.creators.has(user)) return Number.POSITIVE_INFINITY;
  const pl = powerLevelsOf(room);
  if (pl) {
    const own = ownValue(pl.users, user);
    if (own !== undefined && own !== null) return toLevel(own, 0);
    return toLevel(pl.users_default, 0);
  }
  return user === room.creator ? 100 : 0;
}

/** Synapse `get_named_level`. */
function namedLevel(room: Room, name: string, fallback: number): number {
  const pl = powerLevelsOf(room);
  if (!pl) return fallback;
  return toLevel(pl[name], fallback);
}

/** Synapse `get_send_level`: note state_default falls back to 50 even with no power levels event. */
function sendLevel(room: Room, type: string, isState: boolean): number {
  const pl = powerLevelsOf(room) ?? {};
  const specific = ownValue(pl.events, type);
  if (specific !== undefined && specific !== null) return toLevel(specific, 0);
  return isState ? toLevel(pl.state_default, 50) : toLevel(pl.events_default, 0);
}

/** `join_rule_event.content.get("join_rule", "invite")`, or "invite" without a join rules event (any JSON value). */
function joinRuleOf(room: Room): unknown {
  const content = room.state.get(stateKeyOf("m.room.join_rules", ""))?.content;
  return content && Object.hasOwn(content, "join_rule") ? content.join_rule : "invite";
}

/** Synapse `has_restricted_join_rules`: `restricted` from room version 8, `knock_restricted` from 10. */
function hasRestrictedJoinRules(room: Room): boolean {
  if (room.versionNumber < 8 || !room.state.has(stateKeyOf("m.room.join_rules", ""))) return false;
  const rule = joinRuleOf(room);
  return rule === "restricted" || (room.versionNumber >= 10 && rule === "knock_restricted");
}

/** Synapse `get_rooms_that_allow_join`: the `room_id` of each well-formed `m.room_membership` entry of `allow`. */
function roomsThatAllowJoin(room: Room): string[] {
  const allow = room.state.get(stateKeyOf("m.room.join_rules", ""))?.content.allow;
  if (!Array.isArray(allow)) return [];
  const out: string[] = [];
  for (const entry of allow) {
    if (isObject(entry) && entry.type === "m.room_membership" && typeof entry.room_id === "string") out.push(entry.room_id);
  }
  return out;
}

/** Joined users, creation-time ones first (base order), then the room's own joins. */
function joinedUsers(room: Room): string[] {
  const out: string[] = [];
  for (const [user, m] of room.base.map) if ((room.delta.get(user)?.membership ?? m) === "join") out.push(user);
  for (const [user, d] of room.delta) if (!room.base.map.has(user) && d.membership === "join") out.push(user);
  return out;
}

/** Synapse `get_users_which_can_issue_invite`: joined users at or above the invite level (v12 creators always). */
function usersWhichCanIssueInvite(room: Room): string[] {
  const pl = powerLevelsOf(room);
  const inviteLevel = namedLevel(room, "invite", 0);
  const usersDefault = namedLevel(room, "users_default", 0);
  const users = pl && isObject(pl.users) ? pl.users : {};
  return joinedUsers(room).filter((u) => room.creators.has(u) || toLevel(Object.hasOwn(users, u) ? users[u] : usersDefault, usersDefault) >= inviteLevel);
}

/** Synapse `_can_federate`: a user of another server than the creator's needs `m.federate` absent or exactly `true`. */
function checkFederate(room: Room, user: string): void {
  if (domainOfId(user) === domainOfId(room.creator)) return;
  const create = room.state.get(stateKeyOf("m.room.create", ""))?.content;
  if (create && Object.hasOwn(create, "m.federate") && create["m.federate"] !== true) throw forbidden("This room has been marked as unfederatable.");
}

/** Synapse `check_valid_additional_creators` (the create event's auth rule in room version 12): AuthError 400, errcode M_FORBIDDEN. */
function checkValidAdditionalCreators(v: unknown): void {
  const refuse = (message: string): MatrixHttpError => new MatrixHttpError(400, "M_FORBIDDEN", message);
  if (!Array.isArray(v)) throw refuse("additional_creators must be an array");
  for (const entry of v) {
    if (typeof entry !== "string") throw refuse("entry in additional_creators is not a string");
    if (!isSynapseId(entry, "@")) throw refuse("entry in additional_creators is not a valid user ID");
    if ([...entry].length > 255 || Buffer.byteLength(entry, "utf8") > 255) throw refuse("entry in additional_creators too long");
  }
}

/** Python's repr of a member event, as `_check_joined_room` puts it in its message (`None` without one). */
function memberEventRepr(user: string, rec: MemberRecord | undefined): string {
  return rec ? `<Event event_id=${rec.eventId}, type=m.room.member, state_key=${user}, membership=${rec.membership}>` : "None";
}

/** Synapse `_check_joined_room`: 403 "User … not in room … (<event repr>)". */
function checkJoinedRoom(room: Room, user: string): void {
  const rec = memberRecord(room, user);
  if (!rec || rec.membership !== "join") throw forbidden(`User ${user} not in room ${room.id} (${memberEventRepr(user, rec)})`);
}

/**
 * The membership auth rule (Synapse `_is_membership_change_allowed`, room-version rules): who may
 * change whose membership to what. `content` is the event content (with `membership`).
 */
function membershipAuth(room: Room, sender: string, target: string, membership: Membership, content: JsonObject): void {
  checkFederate(room, sender);
  if (!target.includes(":")) throw new MatrixHttpError(400, "M_UNKNOWN", `Invalid ID: ${pyRepr(target)}`);
  checkFederate(room, target);
  const v = room.versionNumber;
  const caller = membershipOf(room, sender);
  const callerInRoom = caller === "join";
  const callerInvited = caller === "invite";
  const callerKnocked = v >= 7 && caller === "knock";
  const targetM = membershipOf(room, target);
  const targetInRoom = targetM === "join";
  const targetBanned = targetM === "ban";
  const joinRule = joinRuleOf(room);
  const senderLevel = userLevel(room, sender);
  const targetLevel = userLevel(room, target);
  const inviteLevel = namedLevel(room, "invite", 0);
  const banLevel = namedLevel(room, "ban", 50);

  if (membership !== "join" && membership !== "knock") {
    const selfLeaveAllowed = (callerInvited || callerKnocked) && membership === "leave" && target === sender;
    if (selfLeaveAllowed) return;
    if (!callerInRoom) throw forbidden(`${sender} not in room ${room.id}.`);
  }
  switch (membership) {
    case "invite":
      if (targetBanned) throw forbidden(`${target} is banned from the room`);
      if (targetInRoom) throw forbidden(`${target} is already in the room.`);
      if (senderLevel < inviteLevel) throw forbidden("You don't have permission to invite users");
      return;
    case "join":
      if (sender !== target) throw forbidden("Cannot force another user to join.");
      if (targetBanned) throw forbidden("You are banned from this room");
      if (joinRule === "public") return;
      if ((v >= 8 && joinRule === "restricted") || (v >= 10 && joinRule === "knock_restricted")) {
        if (callerInRoom || callerInvited) return;
        const authorising = content.join_authorised_via_users_server;
        if (authorising === undefined || authorising === null) throw forbidden("Join event is missing authorising user.");
        const rec = typeof authorising === "string" ? memberRecord(room, authorising) : undefined;
        if (!rec || rec.membership !== "join") {
          throw forbidden(`User ${pyStr(authorising)} not in room ${room.id} (${memberEventRepr(pyStr(authorising), rec)})`);
        }
        if (userLevel(room, authorising as string) < inviteLevel) throw forbidden("Join event authorised by invalid server.");
        return;
      }
      if (joinRule === "invite" || (v >= 7 && joinRule === "knock") || (v >= 10 && joinRule === "knock_restricted")) {
        if (!callerInRoom && !callerInvited) throw forbidden("You are not invited to this room.");
        return;
      }
      throw forbidden("You are not allowed to join this room");
    case "leave":
      if (targetBanned && senderLevel < banLevel) throw forbidden(`You cannot unban user ${target}.`);
      if (!targetBanned && target !== sender) {
        const kickLevel = namedLevel(room, "kick", 50);
        if (senderLevel < kickLevel || senderLevel <= targetLevel) throw forbidden(`You cannot kick user ${target}.`);
      }
      return;
    case "ban":
      if (senderLevel < banLevel) throw forbidden("You don't have permission to ban");
      if (senderLevel <= targetLevel) throw forbidden("You don't have permission to ban this user");
      return;
    case "knock":
      // Before room version 7 `knock` falls through every branch: AuthError(500), errcode M_FORBIDDEN.
      if (v < 7) throw new MatrixHttpError(500, "M_FORBIDDEN", `Unknown membership ${membership}`);
      if (joinRule !== "knock" && !(v >= 10 && joinRule === "knock_restricted")) throw forbidden("You don't have permission to knock");
      if (target !== sender) throw forbidden("You cannot knock for other users");
      if (targetInRoom) throw forbidden("You cannot knock on a room you are already in");
      if (callerInvited) throw forbidden("You are already invited to this room");
      if (targetBanned) throw forbidden("You are banned from this room");
      return;
  }
}

const TOP_LEVEL_LEVELS = ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"] as const;

/** POWER_LEVELS_SCHEMA's properties, in the schema's order (jsonschema walks them so). */
const POWER_LEVELS_SCHEMA_PROPERTIES: readonly (readonly [string, "int" | "objectOfInts"])[] = [
  ["ban", "int"],
  ["events", "objectOfInts"],
  ["events_default", "int"],
  ["invite", "int"],
  ["kick", "int"],
  ["notifications", "objectOfInts"],
  ["redact", "int"],
  ["state_default", "int"],
  ["users", "objectOfInts"],
  ["users_default", "int"],
];

/**
 * Synapse's POWER_LEVELS_SCHEMA (EventValidator.validate_new): 400 M_BAD_JSON, the message as
 * `_validation_error_to_api_error` builds it (`"<last path element>": <jsonschema message>`). Of
 * several errors jsonschema's `best_match` reports the shallowest, the first in schema order among
 * equals. Draft 7 counts a whole float (`50.0`) as an integer.
 */
function validatePowerLevelsSchema(content: JsonObject): void {
  const intError = (path: string, v: unknown): MatrixHttpError | undefined => {
    if (typeof v !== "number" || !Number.isInteger(v)) return new MatrixHttpError(400, "M_BAD_JSON", `"${path}": ${pyRepr(v)} is not of type 'integer'`);
    if (v > MAX_SAFE) return new MatrixHttpError(400, "M_BAD_JSON", `"${path}": ${v} is greater than the maximum of ${MAX_SAFE}`);
    if (v < -MAX_SAFE) return new MatrixHttpError(400, "M_BAD_JSON", `"${path}": ${v} is less than the minimum of ${-MAX_SAFE}`);
    return undefined;
  };
  const present = POWER_LEVELS_SCHEMA_PROPERTIES.filter(([key]) => Object.hasOwn(content, key));
  for (const [key, kind] of present) {
    const v = content[key];
    const err = kind === "int" ? intError(key, v) : isObject(v) ? undefined : new MatrixHttpError(400, "M_BAD_JSON", `"${key}": ${pyRepr(v)} is not of type 'object'`);
    if (err) throw err;
  }
  for (const [key, kind] of present) {
    const v = content[key];
    if (kind !== "objectOfInts" || !isObject(v)) continue;
    for (const [k, level] of Object.entries(v)) {
      const err = intError(k, level);
      if (err) throw err;
    }
  }
}

/**
 * `_check_power_levels`' content rules (Synapse: SynapseError 400, errcode M_UNKNOWN): every `users`
 * key must parse as a user id (`UserID.from_string`: an `@` and a `:`, nothing more), and in room
 * version 12 (MSC4289) neither the creator nor an additional creator may appear in `users`.
 */
function validatePowerLevelUsers(room: Room, content: JsonObject): void {
  const users = isObject(content.users) ? content.users : {};
  for (const key of Object.keys(users)) {
    if (!parsesAsId(key, "@")) throw new MatrixHttpError(400, "M_UNKNOWN", `Not a valid user_id: ${key}`);
  }
  if (room.versionNumber < 12) return;
  if (Object.hasOwn(users, room.creator)) {
    throw new MatrixHttpError(400, "M_UNKNOWN", `Creator user ${room.creator} must not appear in content.users`);
  }
  for (const creator of room.creators) {
    if (creator !== room.creator && Object.hasOwn(users, creator)) {
      throw new MatrixHttpError(400, "M_UNKNOWN", "Additional creators users must not appear in content.users");
    }
  }
}

/** The diff rules of the power-levels auth rule (Synapse `_check_power_levels`), 403 M_FORBIDDEN. */
function checkPowerLevelsChange(room: Room, sender: string, next: JsonObject): void {
  const current = powerLevelsOf(room);
  if (!current) return;
  const senderLevel = userLevel(room, sender);
  const checks: { key: string; dir: "" | "users" | "events" | "notifications" }[] = TOP_LEVEL_LEVELS.map((key) => ({ key, dir: "" }));
  const dirs: ("users" | "events" | "notifications")[] = room.versionNumber >= 6 ? ["users", "events", "notifications"] : ["users", "events"];
  for (const dir of dirs) {
    const keys = new Set([...Object.keys(isObject(current[dir]) ? current[dir] : {}), ...Object.keys(isObject(next[dir]) ? next[dir] : {})]);
    for (const key of keys) checks.push({ key, dir });
  }
  for (const { key, dir } of checks) {
    const oldLoc = dir === "" ? current : isObject(current[dir]) ? current[dir] : {};
    const newLoc = dir === "" ? next : isObject(next[dir]) ? next[dir] : {};
    const oldLevel = Object.hasOwn(oldLoc, key) ? toLevel(oldLoc[key], 0) : undefined;
    const newLevel = Object.hasOwn(newLoc, key) ? toLevel(newLoc[key], 0) : undefined;
    if (oldLevel !== undefined && newLevel !== undefined && oldLevel === newLevel) continue;
    if (dir === "users" && key !== sender && oldLevel === senderLevel) {
      throw forbidden("You don't have permission to remove ops level equal to your own");
    }
    if ((oldLevel !== undefined && oldLevel > senderLevel) || (newLevel !== undefined && newLevel > senderLevel)) {
      throw forbidden("You don't have permission to add ops level greater than your own");
    }
  }
}

/** Room version rules for power levels given to createRoom (Synapse would refuse such a room). */
function validateInitialPowerLevels(room: Room, content: JsonObject): void {
  try {
    validatePowerLevelsSchema(content);
    validatePowerLevelUsers(room, content);
  } catch (err) {
    if (err instanceof MatrixHttpError) throw new Error(`createRoom: invalid powerLevels: ${err.message}`, { cause: err });
    throw err;
  }
}

/**
 * The auth rules for a non-member state event (Synapse `check_state_dependent_auth_rules`:
 * `_check_event_sender_in_room`, `_can_send_event`, `_check_power_levels`): 403 M_FORBIDDEN, or 400
 * for power levels whose `users` are not acceptable.
 */
function stateEventAuth(room: Room, sender: string, type: string, stateKey: string, content: JsonObject): void {
  checkFederate(room, sender);
  checkJoinedRoom(room, sender);
  const needed = sendLevel(room, type, true);
  const have = userLevel(room, sender);
  if (have < needed) {
    throw forbidden(`You don't have permission to post that to the room. user_level (${have}) < send_level (${needed})`);
  }
  if (stateKey.startsWith("@") && stateKey !== sender) throw forbidden("You are not allowed to set others state");
  if (type === "m.room.power_levels") {
    validatePowerLevelUsers(room, content);
    if (stateKey === "") checkPowerLevelsChange(room, sender, content);
  }
}

/** Synapse `relation_from_event`: `m.relates_to` with a string `rel_type` and `event_id`. */
function relationOf(content: JsonObject): { relType: string; parent: string; key: string | undefined } | undefined {
  const rel = content["m.relates_to"];
  if (!isObject(rel) || typeof rel.rel_type !== "string" || typeof rel.event_id !== "string") return undefined;
  return { relType: rel.rel_type, parent: rel.event_id, key: typeof rel.key === "string" ? rel.key : undefined };
}

function toFakeMessage(ev: TimelineEvent): FakeMessage {
  return { eventId: ev.eventId, sender: ev.sender, type: ev.type, content: structuredClone(ev.content) };
}

/** One line per event for error messages: `$id @sender type "body"`. */
function describeMessage(m: FakeMessage): string {
  const body = typeof m.content.body === "string" ? ` ${JSON.stringify(m.content.body.length > 120 ? `${m.content.body.slice(0, 120)}…` : m.content.body)}` : "";
  return `${m.eventId} ${m.sender} ${m.type}${body}`;
}

// ---------------------------------------------------------------------------------------------
// Sync filters (Synapse `synapse/api/filtering.py`: USER_FILTER_SCHEMA, FilterCollection, Filter).

interface EventFilter {
  readonly limit: number;
  readonly types: readonly string[] | undefined;
  readonly notTypes: readonly string[];
  readonly senders: readonly string[] | undefined;
  readonly notSenders: readonly string[];
  readonly rooms: readonly string[] | undefined;
  readonly notRooms: readonly string[];
  readonly containsUrl: boolean | undefined;
  readonly lazyLoadMembers: boolean;
}

interface SyncFilter {
  /** `room.rooms` / `room.not_rooms`: which rooms appear at all. */
  readonly rooms: readonly string[] | undefined;
  readonly notRooms: readonly string[];
  readonly includeLeave: boolean;
  readonly timeline: EventFilter;
  readonly state: EventFilter;
  readonly roomAccountData: EventFilter;
  readonly accountData: EventFilter;
  /** `event_fields`: dotted paths to keep in timeline and state events. */
  readonly eventFields: readonly string[] | undefined;
  readonly federationFormat: boolean;
}

/** Synapse's `filter_timeline_limit` default: a larger `room.timeline.limit` is lowered to it. */
const FILTER_TIMELINE_LIMIT = 100;
const DEFAULT_TIMELINE_LIMIT = 10;

/** Synapse `check_valid_filter`: a jsonschema ValidationError becomes 400 M_UNKNOWN. */
const filterError = (message: string): MatrixHttpError => new MatrixHttpError(400, "M_UNKNOWN", message);

function checkSchemaType(v: unknown, type: "number" | "boolean" | "string" | "array" | "object"): void {
  const ok =
    type === "number"
      ? typeof v === "number"
      : type === "boolean"
        ? typeof v === "boolean"
        : type === "string"
          ? typeof v === "string"
          : type === "array"
            ? Array.isArray(v)
            : isObject(v);
  if (!ok) throw filterError(`${pyRepr(v)} is not of type '${type}'`);
}

function checkStringArray(v: unknown, format?: "matrix_user_id" | "matrix_room_id"): void {
  checkSchemaType(v, "array");
  for (const item of v as unknown[]) {
    checkSchemaType(item, "string");
    const s = item as string;
    if (format === "matrix_user_id" && !isValidUserId(s)) throw filterError(`${pyRepr(s)} is not a '${format}'`);
    if (format === "matrix_room_id" && !isRoomIdShape(s)) throw filterError(`${pyRepr(s)} is not a '${format}'`);
  }
}

function validateEventFilter(v: unknown, roomEvents: boolean): void {
  checkSchemaType(v, "object");
  const o = v as JsonObject;
  if ("limit" in o) checkSchemaType(o.limit, "number");
  for (const key of ["senders", "not_senders"]) if (key in o) checkStringArray(o[key], "matrix_user_id");
  for (const key of ["types", "not_types"]) if (key in o) checkStringArray(o[key]);
  if (!roomEvents) return;
  for (const key of ["rooms", "not_rooms"]) if (key in o) checkStringArray(o[key], "matrix_room_id");
  for (const key of ["contains_url", "lazy_load_members", "include_redundant_members", "unread_thread_notifications"]) {
    if (key in o) checkSchemaType(o[key], "boolean");
  }
}

function validateFilter(filter: JsonObject): void {
  for (const key of ["presence", "account_data"]) if (key in filter) validateEventFilter(filter[key], false);
  if ("room" in filter) {
    checkSchemaType(filter.room, "object");
    const room = filter.room as JsonObject;
    for (const key of ["rooms", "not_rooms"]) if (key in room) checkStringArray(room[key], "matrix_room_id");
    for (const key of ["ephemeral", "state", "timeline", "account_data"]) if (key in room) validateEventFilter(room[key], true);
    if ("include_leave" in room) checkSchemaType(room.include_leave, "boolean");
  }
  if ("event_format" in filter) {
    checkSchemaType(filter.event_format, "string");
    if (filter.event_format !== "client" && filter.event_format !== "federation") {
      throw filterError(`${pyRepr(filter.event_format)} is not one of ['client', 'federation']`);
    }
  }
  if ("event_fields" in filter) checkStringArray(filter.event_fields);
}

/** Synapse `set_timeline_upper_limit` (applied to a valid filter). */
function capTimelineLimit(filter: JsonObject): void {
  const timeline = isObject(filter.room) && isObject(filter.room.timeline) ? filter.room.timeline : undefined;
  if (timeline && typeof timeline.limit === "number") timeline.limit = Math.min(timeline.limit, FILTER_TIMELINE_LIMIT);
}

function stringList(o: JsonObject, key: string): string[] | undefined {
  const v = o[key];
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : undefined;
}

function parseEventFilter(v: unknown): EventFilter {
  const o = isObject(v) ? v : {};
  return {
    limit: typeof o.limit === "number" ? Math.max(0, Math.floor(o.limit)) : DEFAULT_TIMELINE_LIMIT,
    types: stringList(o, "types"),
    notTypes: stringList(o, "not_types") ?? [],
    senders: stringList(o, "senders"),
    notSenders: stringList(o, "not_senders") ?? [],
    rooms: stringList(o, "rooms"),
    notRooms: stringList(o, "not_rooms") ?? [],
    containsUrl: typeof o.contains_url === "boolean" ? o.contains_url : undefined,
    lazyLoadMembers: o.lazy_load_members === true,
  };
}

function parseFilter(filter: JsonObject): SyncFilter {
  const room = isObject(filter.room) ? filter.room : {};
  return {
    rooms: stringList(room, "rooms"),
    notRooms: stringList(room, "not_rooms") ?? [],
    includeLeave: room.include_leave === true,
    timeline: parseEventFilter(room.timeline),
    state: parseEventFilter(room.state),
    roomAccountData: parseEventFilter(room.account_data),
    accountData: parseEventFilter(filter.account_data),
    eventFields: stringList(filter, "event_fields"),
    federationFormat: filter.event_format === "federation",
  };
}

const DEFAULT_FILTER: SyncFilter = parseFilter({});

function matchesWildcard(actual: string, pattern: string): boolean {
  return pattern.endsWith("*") ? actual.startsWith(pattern.slice(0, -1)) : actual === pattern;
}

/** Synapse `Filter._check`: a disallowed value rejects, then an allow list must match. */
function eventMatches(f: EventFilter, roomId: string | undefined, type: string, sender: string | undefined, content: unknown): boolean {
  const passes = (allowed: readonly string[] | undefined, disallowed: readonly string[], match: (v: string) => boolean): boolean =>
    !disallowed.some(match) && (allowed === undefined || allowed.some(match));
  if (!passes(f.rooms, f.notRooms, (v) => v === roomId)) return false;
  if (!passes(f.senders, f.notSenders, (v) => v === sender)) return false;
  if (!passes(f.types, f.notTypes, (v) => matchesWildcard(type, v))) return false;
  if (f.containsUrl !== undefined) {
    const hasUrl = isObject(content) && typeof content.url === "string";
    if (hasUrl !== f.containsUrl) return false;
  }
  return true;
}

function roomAllowed(f: SyncFilter, roomId: string): boolean {
  return !f.notRooms.includes(roomId) && (f.rooms === undefined || f.rooms.includes(roomId));
}

/** Synapse `only_fields`: keep the dotted paths (`\.` escapes a dot) that exist. */
function onlyFields(event: JsonObject, fields: readonly string[]): JsonObject {
  if (fields.length === 0) return event;
  const out: JsonObject = {};
  for (const field of fields) {
    const path: string[] = [];
    let current = "";
    for (let i = 0; i < field.length; i++) {
      const c = field[i]!;
      if (c === "\\" && (field[i + 1] === "." || field[i + 1] === "\\")) {
        current += field[i + 1]!;
        i++;
      } else if (c === ".") {
        path.push(current);
        current = "";
      } else {
        current += c;
      }
    }
    path.push(current);
    let src: unknown = event;
    let dst = out;
    for (let i = 0; i < path.length; i++) {
      const key = path[i]!;
      if (!isObject(src) || !Object.hasOwn(src, key)) break;
      if (i === path.length - 1) {
        dst[key] = src[key];
      } else {
        if (!isObject(src[key])) break;
        if (!isObject(dst[key])) dst[key] = {};
        dst = dst[key] as JsonObject;
        src = src[key];
      }
    }
  }
  return out;
}

/** Prejoin state sent with an invite or knock (Synapse's default `room_prejoin_state`). */
const PREJOIN_STATE_TYPES: ReadonlySet<string> = new Set([
  "m.room.join_rules",
  "m.room.canonical_alias",
  "m.room.avatar",
  "m.room.encryption",
  "m.room.name",
  "m.room.create",
  "m.room.topic",
]);

const MAX_PDU_SIZE = 65_536;
/** Longest timer Node accepts; a longer /sync timeout waits this long. */
const MAX_TIMER_MS = 2_147_483_647;

// ---------------------------------------------------------------------------------------------
// Routing.

type Method = "GET" | "PUT" | "POST" | "DELETE";

interface Route {
  readonly kind: EndpointKind;
  /** "late": the handler calls `ctx.authenticate()` itself, where Synapse's servlet does (after some checks). */
  readonly auth: boolean | "late";
  readonly handler: (ctx: RequestContext) => Reply | Promise<Reply>;
}

interface RequestContext {
  readonly method: string;
  readonly path: string;
  readonly params: readonly string[];
  readonly query: URLSearchParams;
  readonly rawBody: string;
  /** Set when the route needs auth. */
  user: string;
  token: string;
  /** Aborted when the client goes away before the answer (a long-poll then stops waiting). */
  readonly signal: AbortSignal;
  /** Checks the access token and sets `user`/`token` (done before the handler unless the route says "late"). */
  readonly authenticate: () => void;
}

/** A pending long-poll `/sync`. */
interface SyncWaiter {
  readonly user: string;
  /** Answers now if there is something to deliver; returns true when it answered. */
  readonly check: () => boolean;
  /** Answers with whatever there is (timeout, close, client gone). */
  readonly finish: () => void;
}

interface MessageWaiter {
  readonly roomId: string;
  readonly consider: (m: FakeMessage) => void;
  readonly fail: (err: Error) => void;
}

interface SyncRequest {
  readonly user: string;
  readonly token: string;
  readonly since: number | undefined;
  readonly fullState: boolean;
  readonly filter: SyncFilter;
}

interface AccountDataRecord {
  readonly content: JsonObject;
  readonly stream: number;
}

/** A fallback key as stored (Synapse `e2e_fallback_keys_json`): one per algorithm. */
interface FallbackKey {
  readonly keyId: string;
  readonly key: unknown;
  used: boolean;
}

/** One device of a local user (Synapse `devices`, `e2e_device_keys_json`, `e2e_one_time_keys_json`, `device_inbox`). */
interface DeviceState {
  readonly userId: string;
  readonly deviceId: string;
  /** The uploaded `device_keys` object, as given; undefined before the first upload. */
  deviceKeys: JsonObject | undefined;
  /** `<algorithm>:<key id>` → key (a string or a signed key object), oldest first (the order claims take them). */
  readonly oneTimeKeys: Map<string, unknown>;
  /** algorithm → the device's fallback key. */
  readonly fallbackKeys: Map<string, FallbackKey>;
  /** To-device messages not yet acknowledged, in stream order. */
  readonly inbox: { readonly stream: number; readonly event: JsonObject }[];
}

/** A JSON reply; `raw` is an already-serialised JSON body. */
interface Reply {
  readonly status: number;
  readonly body?: unknown;
  readonly raw?: string;
}

const ok = (body: unknown): Reply => ({ status: 200, body });

/**
 * The spec's predefined push rules (client-server API "Predefined rules", v1.11) for `user`, as
 * `GET /pushrules/` returns them to a user who changed none. Synapse also serves a few unstable rules.
 */
function predefinedPushRules(user: string): JsonObject {
  const match = (key: string, pattern: string): JsonObject => ({ kind: "event_match", key, pattern });
  const sound = (value: string): JsonObject => ({ set_tweak: "sound", value });
  const highlight: JsonObject = { set_tweak: "highlight" };
  const rule = (ruleId: string, conditions: JsonObject[], actions: unknown[], enabled = true): JsonObject => ({
    rule_id: ruleId,
    default: true,
    enabled,
    conditions,
    actions,
  });
  const permission: JsonObject = { kind: "sender_notification_permission", key: "room" };
  return {
    override: [
      rule(".m.rule.master", [], [], false),
      rule(".m.rule.suppress_notices", [match("content.msgtype", "m.notice")], []),
      rule(".m.rule.invite_for_me", [match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", user)], ["notify", sound("default")]),
      rule(".m.rule.member_event", [match("type", "m.room.member")], []),
      rule(".m.rule.is_user_mention", [{ kind: "event_property_contains", key: "content.m\\.mentions.user_ids", value: user }], ["notify", sound("default"), highlight]),
      rule(".m.rule.contains_display_name", [{ kind: "contains_display_name" }], ["notify", sound("default"), highlight]),
      rule(".m.rule.is_room_mention", [{ kind: "event_property_is", key: "content.m\\.mentions.room", value: true }, permission], ["notify", highlight]),
      rule(".m.rule.roomnotif", [permission, match("content.body", "@room")], ["notify", highlight]),
      rule(".m.rule.tombstone", [match("type", "m.room.tombstone"), match("state_key", "")], ["notify", highlight]),
      rule(".m.rule.reaction", [match("type", "m.reaction")], []),
      rule(".m.rule.room.server_acl", [match("type", "m.room.server_acl"), match("state_key", "")], []),
      rule(".m.rule.suppress_edits", [{ kind: "event_property_is", key: "content.m\\.relates_to.rel_type", value: "m.replace" }], []),
    ],
    content: [
      {
        rule_id: ".m.rule.contains_user_name",
        default: true,
        enabled: true,
        pattern: user.slice(1, user.indexOf(":")),
        actions: ["notify", sound("default"), highlight],
      },
    ],
    room: [],
    sender: [],
    underride: [
      rule(".m.rule.call", [match("type", "m.call.invite")], ["notify", sound("ring")]),
      rule(".m.rule.encrypted_room_one_to_one", [{ kind: "room_member_count", is: "2" }, match("type", "m.room.encrypted")], ["notify", sound("default")]),
      rule(".m.rule.room_one_to_one", [{ kind: "room_member_count", is: "2" }, match("type", "m.room.message")], ["notify", sound("default")]),
      rule(".m.rule.message", [match("type", "m.room.message")], ["notify"]),
      rule(".m.rule.encrypted", [match("type", "m.room.encrypted")], ["notify"]),
    ],
  };
}

/** Synapse `_one_time_keys_match`: strings must be equal; objects are compared without `signatures`. */
function oneTimeKeysMatch(old: unknown, fresh: unknown): boolean {
  if (!isObject(old) || !isObject(fresh)) return canonicalJson(old) === canonicalJson(fresh);
  const strip = (o: JsonObject): JsonObject => Object.fromEntries(Object.entries(o).filter(([k]) => k !== "signatures"));
  return canonicalJson(strip(old)) === canonicalJson(strip(fresh));
}

/** Synapse `count_e2e_one_time_keys`: per algorithm, always with `signed_curve25519`. */
function oneTimeKeyCounts(device: DeviceState): Record<string, number> {
  const counts: Record<string, number> = { signed_curve25519: 0 };
  for (const id of device.oneTimeKeys.keys()) {
    const algorithm = id.slice(0, id.indexOf(":"));
    counts[algorithm] = (counts[algorithm] ?? 0) + 1;
  }
  return counts;
}

interface RateLimitRule {
  remaining: number;
  readonly retryAfterMs: number;
  readonly endpoints: ReadonlySet<EndpointKind> | undefined;
  readonly header: boolean;
  /** The `Retry-After` text to send instead of the seconds (e.g. an HTTP-date). */
  readonly headerText: string | undefined;
  readonly body: boolean;
}

interface FailRule {
  readonly endpoint: EndpointKind;
  remaining: number;
  readonly status: number;
  readonly body: unknown;
  readonly headers: Record<string, string>;
}

interface RedirectRule {
  readonly endpoint: EndpointKind;
  remaining: number;
  readonly status: 301 | 302 | 303 | 307 | 308;
  readonly location: string;
}

interface DripRule {
  readonly endpoint: EndpointKind;
  remaining: number;
  readonly intervalMs: number;
}

interface StallRule {
  readonly endpoint: EndpointKind;
  remaining: number;
  /** Process the request (its effect stays) before withholding the answer. */
  readonly apply: boolean;
}

const MEMBER_CONTENT: Record<Membership, string> = {
  join: `,"content":{"membership":"join"},"sender":`,
  invite: `,"content":{"membership":"invite"},"sender":`,
  leave: `,"content":{"membership":"leave"},"sender":`,
  ban: `,"content":{"membership":"ban"},"sender":`,
  knock: `,"content":{"membership":"knock"},"sender":`,
};

/** The power levels of a room created without any (Synapse's private_chat preset), with `users`. */
export function presetPowerLevels(users: Record<string, number>): JsonObject {
  return { users: { ...users }, users_default: 0, events: {}, events_default: 0, state_default: 50, ban: 50, kick: 50, redact: 50, invite: 0 };
}

export class FakeHomeserver {
  readonly url: string;
  readonly serverName: string;

  private readonly server: Server;
  private readonly tokens = new Map<string, { userId: string; deviceId: string }>();
  /** Password login: user id → password (`setPassword`). */
  private readonly passwords = new Map<string, string>();
  private logins = 0;
  /** user → device id → device (every access token belongs to one). */
  private readonly devices = new Map<string, Map<string, DeviceState>>();
  /** user → stream position of the last change to the user's device list (new device, changed device keys). */
  private readonly deviceListStream = new Map<string, number>();
  private readonly rooms = new Map<string, Room>();
  /** The room directory (Synapse's `room_aliases` and `room_alias_servers` tables). */
  private readonly aliases = new Map<string, AliasRecord>();
  /** Rooms stored by a `createRoom` that failed before its create event was persisted (Synapse keeps the `rooms` row). */
  private readonly roomsWithoutEvents = new Set<string>();
  private readonly baseCache = new WeakMap<object, BaseMembers>();
  private readonly txns = new Map<string, Reply>();
  private readonly changes: AppliedChange[] = [];
  private counts: Record<EndpointKind, number> = FakeHomeserver.zeroCounts();
  private total = 0;
  private rateRules: RateLimitRule[] = [];
  private failRules: FailRule[] = [];
  private stallRules: StallRule[] = [];
  private redirectRules: RedirectRule[] = [];
  private dripRules: DripRule[] = [];
  private hooks: { readonly endpoint: EndpointKind; readonly fn: () => void }[] = [];
  /** Answers withheld by `stallNext` whose connection is still open. */
  private readonly stalled = new Set<ServerResponse>();
  /** Answers being drip-fed (`dripNext`): their timers, stopped when the client gives up or on `close()`. */
  private readonly dripping = new Map<ServerResponse, NodeJS.Timeout>();
  /** Stream position: incremented for every stored event and account data change. */
  private stream = 0;
  /** Every stored event by id. */
  private readonly eventIndex = new Map<string, { readonly room: Room; readonly ev: TimelineEvent }>();
  /** Event ids that are the target of a relation (Synapse `event_is_target_of_relation`). */
  private readonly relationTargets = new Set<string>();
  /** `parent\0type\0key\0sender` of every annotation (Synapse `has_user_annotated_event`). */
  private readonly annotations = new Set<string>();
  /** Uploaded filters per user; the filter id is the index (Synapse counts from 0). */
  private readonly filters = new Map<string, { json: JsonObject; canonical: string }[]>();
  private readonly accountData = new Map<string, Map<string, AccountDataRecord>>();
  /** user → room → type → record. */
  private readonly roomAccountData = new Map<string, Map<string, Map<string, AccountDataRecord>>>();
  private readonly profiles = new Map<string, { displayname?: string; avatar_url?: string }>();
  private readonly syncWaiters = new Set<SyncWaiter>();
  private readonly messageWaiters = new Set<MessageWaiter>();
  private readonly idleListeners = new Set<{ readonly user: string; readonly resolve: () => void; readonly fail: (err: Error) => void }>();
  private wakeScheduled = false;
  private closed = false;
  private log: {
    method: string;
    path: string;
    query: string;
    kind: EndpointKind;
    user: string | null;
    device: string | null;
    status: number | null;
    receivedAt: number;
    finishedAt: number | null;
  }[] = [];
  /** Server admins (Synapse `users.admin`). */
  private readonly admins = new Set<string>();
  /** Registration tokens in creation order (Synapse lists them in table order, with no ORDER BY). */
  private readonly regTokens = new Map<string, RegistrationTokenRow>();
  /** When on, the registration-token admin endpoints are not registered (auth delegated to MAS). */
  private masDelegated = false;
  /** The server's clock (ms since the epoch), used by the registration-token API. */
  private clock: () => number;

  private constructor(server: Server, serverName: string, clock: () => number) {
    this.server = server;
    this.serverName = serverName;
    this.clock = clock;
    const address = server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${address.port}`;
  }

  /**
   * `clock`: the server's time in ms since the epoch (default `Date.now`); it governs the
   * registration-token API only (see also `setNow`).
   */
  static async start(opts: { serverName?: string; clock?: () => number } = {}): Promise<FakeHomeserver> {
    const serverName = opts.serverName ?? "example.org";
    if (!SERVER_NAME.test(serverName)) throw new Error(`invalid server name ${serverName}`);
    const server = createServer();
    server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const hs = new FakeHomeserver(server, serverName, opts.clock ?? Date.now);
    server.on("request", (req, res) => {
      hs.handle(req, res).catch((err: unknown) => {
        // Last resort: never leave a request hanging.
        console.error("FakeHomeserver: unhandled error", err);
        if (!res.headersSent) FakeHomeserver.send(res, 500, { errcode: "M_UNKNOWN", error: "Internal server error" });
      });
    });
    return hs;
  }

  /**
   * Stops the server. Pending long-poll `/sync` requests are answered at once (with whatever they
   * have, usually nothing) and every connection is then closed, those of stalled requests
   * (`stallNext`) included; pending `waitForMessage` and `waitForSyncIdle` calls are rejected.
   * Does not wait for clients.
   */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      for (const res of this.stalled) res.destroy();
      this.stalled.clear();
      for (const [res, timer] of this.dripping) {
        clearInterval(timer);
        res.destroy();
      }
      this.dripping.clear();
      for (const w of [...this.syncWaiters]) w.finish();
      for (const w of [...this.messageWaiters]) w.fail(new Error("FakeHomeserver closed"));
      for (const l of [...this.idleListeners]) l.fail(new Error("FakeHomeserver closed"));
      // Let the answers reach the sockets before they are closed.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // -------------------------------------------------------------------------------------------
  // Test helpers.

  /**
   * Gives `userId` an access token, returned, for a new device (`opts.deviceId`, or a random id; an id the
   * user already has gives another token for that device, keeping its keys). A new device is a change of
   * the user's device list. `opts.admin` sets (true) or clears (false) the user's server-admin flag, as
   * `setAdmin` does; omitted, the flag is left as it is.
   */
  registerUser(userId: string, accessToken?: string, opts: { admin?: boolean; deviceId?: string } = {}): string {
    if (!isValidUserId(userId)) throw new Error(`registerUser: invalid user id ${userId}`);
    const token = accessToken ?? `syt_${randomBytes(18).toString("base64url")}`;
    if (this.tokens.has(token)) throw new Error("registerUser: access token already in use");
    const deviceId = opts.deviceId ?? randomLetters(10).toUpperCase();
    if (deviceId === "" || deviceId.length > 512) throw new Error(`registerUser: invalid device id ${deviceId}`);
    this.tokens.set(token, { userId, deviceId });
    let mine = this.devices.get(userId);
    if (!mine) this.devices.set(userId, (mine = new Map<string, DeviceState>()));
    if (!mine.has(deviceId)) {
      // Synapse `check_device_registered` → `notify_device_update`: a new device changes the user's device list.
      mine.set(deviceId, { userId, deviceId, deviceKeys: undefined, oneTimeKeys: new Map(), fallbackKeys: new Map(), inbox: [] });
      this.noteDeviceListChange(userId);
    }
    if (opts.admin !== undefined) this.setAdmin(userId, opts.admin);
    // Synapse gives a new account its localpart as display name.
    if (!this.profiles.has(userId)) this.profiles.set(userId, { displayname: userId.slice(1, userId.indexOf(":")) });
    return token;
  }

  /** Lets `userId` log in with `password` (`POST /login`); registers the user when new. */
  setPassword(userId: string, password: string): void {
    if (!isValidUserId(userId)) throw new Error(`setPassword: invalid user id ${userId}`);
    if (!this.devices.has(userId)) this.devices.set(userId, new Map());
    if (!this.profiles.has(userId)) this.profiles.set(userId, { displayname: userId.slice(1, userId.indexOf(":")) });
    this.passwords.set(userId, password);
  }

  /** How many logins succeeded. */
  loginCount(): number {
    return this.logins;
  }

  /** The access tokens `userId` has now. */
  tokensOf(userId: string): string[] {
    return [...this.tokens.entries()].filter(([, t]) => t.userId === userId).map(([token]) => token);
  }

  /** Invalidates an access token, as an expiry or a logout elsewhere would (the device stays). */
  revokeToken(accessToken: string): void {
    this.tokens.delete(accessToken);
  }

  /** The device an access token (from `registerUser`) belongs to. */
  deviceIdOf(accessToken: string): string {
    const who = this.tokens.get(accessToken);
    if (!who) throw new Error("deviceIdOf: unknown access token");
    return who.deviceId;
  }

  createRoom(opts: FakeRoomOptions): string {
    const version = opts.version ?? "10";
    if (!/^(?:[1-9]|1[0-2])$/.test(version)) throw new Error(`createRoom: unsupported room version ${version}`);
    const versionNumber = Number(version);
    if (!isValidUserId(opts.creator)) throw new Error(`createRoom: invalid creator ${opts.creator}`);
    if (opts.additionalCreators && versionNumber < 12) throw new Error("createRoom: additionalCreators needs room version 12");
    for (const c of opts.additionalCreators ?? []) if (!isValidUserId(c)) throw new Error(`createRoom: invalid additional creator ${c}`);
    if (opts.alias !== undefined) {
      if (!isValidAlias(opts.alias)) throw new Error(`createRoom: invalid alias ${opts.alias}`);
      if (opts.alias.slice(opts.alias.indexOf(":") + 1) !== this.serverName) throw new Error(`createRoom: alias ${opts.alias} is not on ${this.serverName}`);
      if (this.aliases.has(opts.alias)) throw new Error(`createRoom: alias ${opts.alias} already exists`);
    }

    const roomToken = randomBytes(32).toString("base64url");
    const id = versionNumber >= 12 ? `!${roomToken}` : `!${randomLetters(18)}:${this.serverName}`;
    const creators = versionNumber >= 12 ? new Set([opts.creator, ...(opts.additionalCreators ?? [])]) : new Set<string>();
    const room = this.newRoomObject(id, version, opts.creator, creators, this.baseFor(opts.members));

    const createContent: JsonObject = { room_version: version };
    if (versionNumber <= 10) createContent.creator = opts.creator;
    if (versionNumber >= 12 && opts.additionalCreators) createContent.additional_creators = [...opts.additionalCreators];
    this.putState(room, "m.room.create", "", createContent, opts.creator, versionNumber >= 12 ? `$${roomToken}` : undefined);

    if (room.base.map.get(opts.creator) !== "join") {
      this.putMember(room, opts.creator, "join", opts.creator, { membership: "join" });
    }

    if (opts.powerLevels !== null) {
      const content: JsonObject =
        opts.powerLevels !== undefined
          ? structuredClone(opts.powerLevels)
          : presetPowerLevels(versionNumber >= 12 ? {} : { [opts.creator]: 100 });
      validateInitialPowerLevels(room, content);
      this.putState(room, "m.room.power_levels", "", content, opts.creator);
    }
    this.putState(room, "m.room.join_rules", "", { join_rule: opts.joinRule ?? "invite" }, opts.creator);
    if (opts.name !== undefined) this.putState(room, "m.room.name", "", { name: opts.name }, opts.creator);
    if (opts.encrypted === true) this.putState(room, "m.room.encryption", "", { algorithm: "m.megolm.v1.aes-sha2" }, opts.creator);
    if (opts.alias !== undefined) {
      this.putState(room, "m.room.canonical_alias", "", { alias: opts.alias }, opts.creator);
      this.aliases.set(opts.alias, { roomId: id, creator: opts.creator, servers: [this.serverName] });
    }
    this.rooms.set(id, room);
    return id;
  }

  /** Current membership per user (a copy). */
  members(roomId: string): Record<string, string> {
    const room = this.mustRoom(roomId);
    const out: Record<string, string> = {};
    for (const [user, m] of room.base.map) out[user] = m;
    for (const [user, d] of room.delta) out[user] = d.membership;
    return out;
  }

  /** Current m.room.power_levels content (a copy), undefined when the room has none. */
  powerLevels(roomId: string): Record<string, unknown> | undefined {
    const pl = powerLevelsOf(this.mustRoom(roomId));
    return pl === undefined ? undefined : structuredClone(pl);
  }

  /**
   * Test helper: the current content of one state event (a copy; members too), undefined when the
   * room has no such state.
   */
  stateOf(roomId: string, type: string, stateKey = ""): Record<string, unknown> | undefined {
    const room = this.mustRoom(roomId);
    const content = type === "m.room.member" ? memberRecord(room, stateKey)?.content : room.state.get(stateKeyOf(type, stateKey))?.content;
    return content === undefined ? undefined : structuredClone(content);
  }

  /** Test helper: every current state event of the room as `/state` serves it (copies), whoever may read it. */
  roomState(roomId: string): { type: string; state_key: string; content: Record<string, unknown>; sender: string; event_id: string }[] {
    const room = this.mustRoom(roomId);
    const parts = [...Array.from(room.state.values(), (s) => this.stateEventJson(room, s)), ...this.memberEventsJson(room)];
    return parts.map((p) => {
      const e = JSON.parse(p) as { type: string; state_key: string; content: Record<string, unknown>; sender: string; event_id: string };
      return { type: e.type, state_key: e.state_key, content: e.content, sender: e.sender, event_id: e.event_id };
    });
  }

  /** Test helper: the room's type (`type` of its m.room.create content, e.g. "m.space"), undefined for none. */
  roomType(roomId: string): string | undefined {
    const type = this.mustRoom(roomId).state.get(stateKeyOf("m.room.create", ""))?.content.type;
    return typeof type === "string" ? type : undefined;
  }

  /**
   * Test helper: the room directory's entry for an alias (room id, the user who created it — null
   * for `addAlias` — and the stored servers), undefined when there is none. A failed `createRoom`
   * can leave an alias whose room has no events at all, as on Synapse.
   */
  directoryEntry(alias: string): AliasRecord | undefined {
    const rec = this.aliases.get(alias);
    return rec === undefined ? undefined : { roomId: rec.roomId, creator: rec.creator, servers: [...rec.servers] };
  }

  /**
   * Test helper: runs `fn` once, when the next request to `endpoint` arrives — after it is counted and
   * logged, before anything else (fault rules, auth, processing) — to change the world between a
   * client's look-up and its next call (an alias taken meanwhile). Hooks for one endpoint run in the
   * order given; an exception in `fn` answers that request with a 500.
   */
  beforeNext(endpoint: EndpointKind, fn: () => void): void {
    this.hooks.push({ endpoint, fn });
  }

  /**
   * Test helper: a second alias for an existing room (as `PUT /directory/room/{alias}` would
   * add). A room may have many aliases; each resolves to the same room id. The alias has no creator:
   * only a server admin or a member with the level for `m.room.canonical_alias` may delete it.
   */
  addAlias(alias: string, roomId: string): void {
    this.mustRoom(roomId);
    if (!isValidAlias(alias)) throw new Error(`addAlias: invalid alias ${alias}`);
    if (alias.slice(alias.indexOf(":") + 1) !== this.serverName) throw new Error(`addAlias: alias ${alias} is not on ${this.serverName}`);
    if (this.aliases.has(alias)) throw new Error(`addAlias: alias ${alias} already exists`);
    this.aliases.set(alias, { roomId, creator: null, servers: [this.serverName] });
  }

  /**
   * Test helper: a state event as an old room can hold it, without the checks a new event
   * gets — e.g. power levels given as strings of integers (valid in room versions 1-9, and
   * still found in rooms created by early servers or received over federation). Synapse
   * reads such a room with its own rules (`toLevel` here); a new event must still pass them.
   */
  putLegacyState(roomId: string, type: string, stateKey: string, content: Record<string, unknown>, sender: string): void {
    const room = this.mustRoom(roomId);
    if (type === "m.room.member") throw new Error("putLegacyState: use setMembership for members");
    this.putState(room, type, stateKey, structuredClone(content), sender);
  }

  /** Test helper, no auth checks: the user's membership changes as if they did it themselves. */
  setMembership(roomId: string, userId: string, membership: string): void {
    const room = this.mustRoom(roomId);
    if (!MEMBERSHIPS.has(membership)) throw new Error(`setMembership: unknown membership ${membership}`);
    if (!isValidUserId(userId)) throw new Error(`setMembership: invalid user id ${userId}`);
    const m = membership as Membership;
    const sender = baseSender(room, userId, m);
    this.putMember(room, userId, m, sender, { membership: m });
    this.changes.push({ kind: m, roomId, sender, target: userId, content: { membership: m } });
  }

  /** Events sent with PUT /send (copies). */
  sentEvents(roomId: string): SentEvent[] {
    return this.mustRoom(roomId).sent.map((e) => ({ type: e.type, sender: e.sender, content: structuredClone(e.content) }));
  }

  /**
   * Test helper: `senderUserId` sends a message into the room, as their client would (`m.text`
   * unless `msgtype` says otherwise; `formattedBody` adds `org.matrix.custom.html`). In an encrypted
   * room the event is an `m.room.encrypted` one with opaque content, as from a real client. The
   * event goes through the same checks as `PUT /send` (joined, send level, size) — a failing check
   * throws — lands in the timeline and wakes long-polls. Not listed by `sentEvents()`, which
   * keeps to events sent over HTTP. Returns the event id.
   */
  sendMessage(roomId: string, senderUserId: string, body: string, opts: { formattedBody?: string; msgtype?: string } = {}): string {
    const room = this.mustRoom(roomId);
    if (room.state.has(stateKeyOf("m.room.encryption", ""))) {
      const b64 = (n: number): string => randomBytes(n).toString("base64").replace(/=+$/, "");
      return this.sendEvent(roomId, senderUserId, "m.room.encrypted", {
        algorithm: "m.megolm.v1.aes-sha2",
        ciphertext: b64(Math.max(48, body.length + 32)),
        device_id: "FAKEDEVICE",
        sender_key: b64(32),
        session_id: b64(32),
      });
    }
    const content: Record<string, unknown> = { msgtype: opts.msgtype ?? "m.text", body };
    if (opts.formattedBody !== undefined) {
      content.format = "org.matrix.custom.html";
      content.formatted_body = opts.formattedBody;
    }
    return this.sendEvent(roomId, senderUserId, "m.room.message", content);
  }

  /** Test helper: an `m.reaction` (annotation `key` on `targetEventId`) from `senderUserId`. */
  sendReaction(roomId: string, senderUserId: string, targetEventId: string, key: string): string {
    return this.sendEvent(roomId, senderUserId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: targetEventId, key } });
  }

  /** Test helper: any non-state event from `senderUserId`, with the checks of `PUT /send`. */
  sendEvent(roomId: string, senderUserId: string, type: string, content: Record<string, unknown>): string {
    const room = this.mustRoom(roomId);
    if (!isValidUserId(senderUserId)) throw new Error(`sendEvent: invalid user id ${senderUserId}`);
    try {
      return this.newEvent(room, senderUserId, type, structuredClone(content)).eventId;
    } catch (err) {
      if (err instanceof MatrixHttpError) {
        throw new Error(`sendEvent: ${senderUserId} cannot send ${type} to ${roomId}: ${err.status} ${err.errcode} ${err.message}`, { cause: err });
      }
      throw err;
    }
  }

  /**
   * Non-state events of the room (messages, notices, reactions, encrypted events …), oldest first,
   * whoever sent them and however (HTTP or helper). `since`: only those after that event id.
   */
  messages(roomId: string, opts: { sender?: string; since?: string; type?: string } = {}): FakeMessage[] {
    const room = this.mustRoom(roomId);
    let start = 0;
    if (opts.since !== undefined) {
      const at = room.timeline.findIndex((e) => e.eventId === opts.since);
      if (at < 0) throw new Error(`messages: no event ${opts.since} in ${roomId}`);
      start = at + 1;
    }
    const out: FakeMessage[] = [];
    for (let i = start; i < room.timeline.length; i++) {
      const ev = room.timeline[i]!;
      if (ev.stateKey !== undefined) continue;
      if (opts.sender !== undefined && ev.sender !== opts.sender) continue;
      if (opts.type !== undefined && ev.type !== opts.type) continue;
      out.push(toFakeMessage(ev));
    }
    return out;
  }

  /**
   * Resolves with the first non-state event sent to the room from now on (or, with `since`, after
   * that event — race-free when the event may already be there) for which `predicate` is true.
   * Rejects after `timeoutMs` with the list of what was sent meanwhile, or when the server closes.
   */
  waitForMessage(roomId: string, predicate: (m: FakeMessage) => boolean, timeoutMs = 5000, opts: { since?: string } = {}): Promise<FakeMessage> {
    const room = this.mustRoom(roomId);
    if (this.closed) return Promise.reject(new Error("FakeHomeserver closed"));
    let startIndex = room.timeline.length;
    if (opts.since !== undefined) {
      for (const m of this.messages(roomId, { since: opts.since })) if (predicate(m)) return Promise.resolve(m);
      startIndex = room.timeline.findIndex((e) => e.eventId === opts.since) + 1;
    }
    return new Promise<FakeMessage>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.messageWaiters.delete(waiter);
      };
      const waiter: MessageWaiter = {
        roomId,
        consider: (m) => {
          let hit: boolean;
          try {
            hit = predicate(m);
          } catch (err) {
            done();
            reject(err instanceof Error ? err : new Error(String(err)));
            return;
          }
          if (hit) {
            done();
            resolve(m);
          }
        },
        fail: (err) => {
          done();
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        done();
        const messageLike = (e: TimelineEvent): boolean => e.stateKey === undefined;
        const meanwhile = room.timeline.slice(startIndex).filter(messageLike).map(toFakeMessage);
        const before = room.timeline.slice(0, startIndex).filter(messageLike).slice(-5).map(toFakeMessage);
        const list = (ms: FakeMessage[]): string => ms.map((m) => `\n  ${describeMessage(m)}`).join("");
        const detail =
          meanwhile.length > 0
            ? `Sent meanwhile (${meanwhile.length}):${list(meanwhile)}`
            : before.length > 0
              ? `Nothing was sent meanwhile; the last events before the wait:${list(before)}`
              : "Nothing was sent meanwhile, and the room has no messages at all.";
        reject(new Error(`waitForMessage: no matching event in ${roomId} within ${timeoutMs} ms. ${detail}`));
      }, timeoutMs);
      this.messageWaiters.add(waiter);
    });
  }

  /** Rooms the user is joined to (ids). */
  joinedRooms(userId: string): string[] {
    const out: string[] = [];
    for (const room of this.rooms.values()) if (membershipOf(room, userId) === "join") out.push(room.id);
    return out;
  }

  /** Read receipts (m.read, m.read.private) per user: user → receipt type → event id (copies). */
  readReceipts(roomId: string): Record<string, Record<string, string>> {
    const out: Record<string, Record<string, string>> = {};
    for (const [user, receipts] of this.mustRoom(roomId).receipts) out[user] = Object.fromEntries(receipts);
    return out;
  }

  /** Pending long-poll `/sync` requests (of one user, or all). */
  pendingLongPolls(userId?: string): number {
    let n = 0;
    for (const w of this.syncWaiters) if (userId === undefined || w.user === userId) n++;
    return n;
  }

  /**
   * Resolves once the user's client has caught up: one of its long-poll `/sync` requests is pending
   * with nothing left to deliver. A client processes a sync answer before it asks again, so this
   * means every event so far was handed to it (matrix-bot-sdk: emitted and awaited).
   */
  waitForSyncIdle(userId: string, timeoutMs = 10_000): Promise<void> {
    if (this.closed) return Promise.reject(new Error("FakeHomeserver closed"));
    this.flushWakes();
    for (const w of this.syncWaiters) if (w.user === userId) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.idleListeners.delete(listener);
        const syncs = this.log.filter((e) => e.kind === "sync" && e.user === userId).length;
        reject(new Error(`waitForSyncIdle: ${userId} has no long-poll /sync pending after ${timeoutMs} ms (${syncs} /sync requests by that user so far)`));
      }, timeoutMs);
      const listener = {
        user: userId,
        resolve: (): void => {
          clearTimeout(timer);
          this.idleListeners.delete(listener);
          resolve();
        },
        fail: (err: Error): void => {
          clearTimeout(timer);
          this.idleListeners.delete(listener);
          reject(err);
        },
      };
      this.idleListeners.add(listener);
    });
  }

  /**
   * The next `count` matching requests get 429 M_LIMIT_EXCEEDED. `header`: send `Retry-After`
   * (whole seconds of `retryAfterMs`, or `headerText` as it is, e.g. an HTTP-date); `body`:
   * send the deprecated `retry_after_ms`.
   */
  rateLimit(opts: { count: number; retryAfterMs: number; endpoints?: EndpointKind[]; header?: boolean; headerText?: string; body?: boolean }): void {
    this.rateRules.push({
      remaining: opts.count,
      retryAfterMs: opts.retryAfterMs,
      endpoints: opts.endpoints ? new Set(opts.endpoints) : undefined,
      header: opts.header ?? true,
      headerText: opts.headerText,
      body: opts.body ?? true,
    });
  }

  /**
   * The next `count` requests to `endpoint` are answered `status` with `body` (a string is sent
   * as text/plain, as a proxy in front of the server would) and `headers` (e.g. a 503's
   * `Retry-After`), without being processed.
   */
  failNext(
    endpoint: EndpointKind,
    count: number,
    status = 500,
    body: unknown = { errcode: "M_UNKNOWN", error: "Internal server error" },
    headers: Record<string, string> = {},
  ): void {
    this.failRules.push({ endpoint, remaining: count, status, body, headers });
  }

  /**
   * The next `count` requests to `endpoint` are answered with a redirect (`status`, `Location:
   * location`) without being processed, as a misconfigured or hostile proxy in front of the
   * server would. Checked after `failNext`, before `stallNext`.
   */
  redirectNext(endpoint: EndpointKind, count: number, opts: { status: 301 | 302 | 303 | 307 | 308; location: string }): void {
    this.redirectRules.push({ endpoint, remaining: count, status: opts.status, location: opts.location });
  }

  /**
   * The next `count` requests to `endpoint` are processed as usual, but their answer is
   * drip-fed: the headers at once (with the true Content-Length), then one byte of the body
   * every `intervalMs`, as a slow or hostile server would. The connection stays open until the
   * body is complete, the client gives up, or `close()`.
   */
  dripNext(endpoint: EndpointKind, count: number, opts: { intervalMs: number }): void {
    this.dripRules.push({ endpoint, remaining: count, intervalMs: opts.intervalMs });
  }

  /** Answers being drip-fed (`dripNext`) whose client has not given up yet. */
  drippingRequests(): number {
    return this.dripping.size;
  }

  /**
   * Stalls the next `count` requests to `endpoint`: no answer is ever sent, so the client runs
   * into its own timeout (a hung server, or an answer lost on the way back).
   * - `apply: true`: the request is processed as usual first and whatever it did stays done (a
   *   real server that made the change and whose answer was lost); an error it would have
   *   answered with is withheld the same way.
   * - `apply: false`: it hangs before anything is processed (nothing happens).
   * Checked after `failNext` and before `rateLimit` (a stalled request is never rate-limited);
   * rules for one endpoint are used in the order given. A stalled request is counted and logged
   * like any other; its log entry keeps `status` and `finishedAt` null. Its connection stays open
   * until the client gives up or `close()` destroys it.
   */
  stallNext(endpoint: EndpointKind, count: number, opts: { apply: boolean }): void {
    this.stallRules.push({ endpoint, remaining: count, apply: opts.apply });
  }

  /** Stalled requests (`stallNext`) whose client has not given up yet. */
  stalledRequests(): number {
    return this.stalled.size;
  }

  requestCounts(): Record<EndpointKind, number> {
    return { ...this.counts };
  }

  totalRequests(): number {
    return this.total;
  }

  /** Resets `requestCounts()`, `totalRequests()` and `requestLog()`. */
  resetCounts(): void {
    this.counts = FakeHomeserver.zeroCounts();
    this.total = 0;
    this.log = [];
  }

  /** Every request since start (or the last `resetCounts()`), oldest first (copies). */
  requestLog(): RequestLogEntry[] {
    return this.log.map((e) => ({ ...e }));
  }

  /**
   * Every change a client made, oldest first: memberships (`invite`, `join`, `leave`, `kick`, `ban`,
   * `unban`, `knock`), `state`, `power_levels`, `create_room` (content: the request body; the room's
   * initial events are not listed one by one, its invites are), `alias_create` and `alias_delete`
   * (target: the alias).
   */
  appliedChanges(): ReadonlyArray<AppliedChange> {
    return [...this.changes];
  }

  /** Makes `userId` a server admin or not (Synapse `users.admin`); the user need not have a token yet. */
  setAdmin(userId: string, admin: boolean): void {
    if (!isValidUserId(userId)) throw new Error(`setAdmin: invalid user id ${userId}`);
    if (admin) this.admins.add(userId);
    else this.admins.delete(userId);
  }

  /** Stops the server's clock at `ms` (ms since the epoch) until the next call; see `start({ clock })`. */
  setNow(ms: number): void {
    if (!Number.isFinite(ms)) throw new Error(`setNow: not a time: ${ms}`);
    this.clock = () => ms;
  }

  /** Every registration token (copies), in creation order. */
  registrationTokens(): RegistrationTokenInfo[] {
    return Array.from(this.regTokens.values(), tokenInfo);
  }

  /**
   * Simulates a registration with the token, as Synapse's two-stage flow counts it: the
   * `m.login.registration_token` stage checks the token (Synapse `registration_token_is_valid`) and
   * increments `pending`; finishing the registration moves that use from `pending` to `completed`.
   * `complete: false`: a registration that started and is not finished (pending + 1);
   * `complete: true`: a whole registration (completed + 1). Throws, as Synapse answers 401
   * `M_UNAUTHORIZED` "Invalid registration token", when the token is unknown, expired or used up.
   * Returns the token afterwards (a copy).
   */
  useRegistrationToken(token: string, opts: { complete: boolean }): RegistrationTokenInfo {
    const row = this.regTokens.get(token);
    if (!row) throw new Error(`useRegistrationToken: no registration token ${JSON.stringify(token)} (Synapse: 401 Invalid registration token)`);
    const usable = registrationTokenUsable(row, this.clock());
    if (!usable.ok) throw new Error(`useRegistrationToken: ${JSON.stringify(token)} is ${usable.why} (Synapse: 401 Invalid registration token)`);
    row.pending++;
    if (opts.complete) {
      row.pending--;
      row.completed++;
    }
    return tokenInfo(row);
  }

  /**
   * On: Synapse delegates auth to MAS (`matrix_authentication_service.enabled`, or experimental
   * MSC3861), and does not register the registration-token admin servlets at all, so every method on
   * their paths answers 404 `M_UNRECOGNIZED` "Unrecognized request", before any auth check. The tokens
   * are kept (the table stays) and reappear when switched off. Such requests still count as
   * `admin_registration_tokens`.
   */
  delegateAuthToMas(on: boolean): void {
    this.masDelegated = on;
  }

  // -------------------------------------------------------------------------------------------
  // Storage.

  private static zeroCounts(): Record<EndpointKind, number> {
    return Object.fromEntries(ENDPOINT_KINDS.map((k) => [k, 0])) as Record<EndpointKind, number>;
  }

  private mustRoom(roomId: string): Room {
    const room = this.rooms.get(roomId);
    if (!room) throw new Error(`unknown room ${roomId}`);
    return room;
  }

  /**
   * The shared base for a members Map/object. Rooms given the same object share one base; the
   * source is compared entry by entry on reuse, so a source changed in between gets a new base.
   */
  private baseFor(source: FakeRoomOptions["members"]): BaseMembers {
    if (source === undefined) return EMPTY_BASE;
    const cached = this.baseCache.get(source);
    if (cached && FakeHomeserver.sameEntries(source, cached.map)) return cached;
    const map = new Map<string, Membership>();
    const entries: Iterable<[string, Membership]> = FakeHomeserver.isMap(source) ? source : Object.entries(source);
    for (const [user, m] of entries) {
      if (!isValidUserId(user)) throw new Error(`createRoom: invalid member user id ${user}`);
      if (!MEMBERSHIPS.has(m)) throw new Error(`createRoom: invalid membership ${String(m)} for ${user}`);
      map.set(user, m);
    }
    const base: BaseMembers = { map };
    this.baseCache.set(source, base);
    return base;
  }

  private static isMap(source: NonNullable<FakeRoomOptions["members"]>): source is ReadonlyMap<string, Membership> {
    return source instanceof Map;
  }

  private static sameEntries(source: NonNullable<FakeRoomOptions["members"]>, map: ReadonlyMap<string, Membership>): boolean {
    const it = map.entries();
    if (FakeHomeserver.isMap(source)) {
      if (source.size !== map.size) return false;
      for (const [user, m] of source) {
        const next = it.next();
        if (next.done || next.value[0] !== user || next.value[1] !== m) return false;
      }
      return true;
    }
    const users = Object.keys(source);
    if (users.length !== map.size) return false;
    for (const user of users) {
      const next = it.next();
      if (next.done || next.value[0] !== user || next.value[1] !== source[user]) return false;
    }
    return true;
  }

  /** A room with no events yet (not registered); its first event must be stored before any other. */
  private newRoomObject(id: string, version: string, creator: string, creators: ReadonlySet<string>, base: BaseMembers): Room {
    return {
      id,
      version,
      versionNumber: Number(version),
      creator,
      creators,
      createdTs: Date.now(),
      tag: randomBytes(9).toString("base64url"),
      base,
      delta: new Map(),
      state: new Map(),
      sent: [],
      eventSeq: 0,
      createdStream: this.stream + 1,
      timeline: [],
      receipts: new Map(),
    };
  }

  private nextEventId(room: Room): string {
    return `$${room.tag}_e${(room.eventSeq++).toString(36)}`;
  }

  private putState(room: Room, type: string, stateKey: string, content: JsonObject, sender: string, eventId?: string): StateRecord {
    const key = stateKeyOf(type, stateKey);
    const old = room.state.get(key);
    const prev: PrevState | undefined = old ? { eventId: old.eventId, sender: old.sender, content: old.content } : undefined;
    const ev = this.appendEvent(room, { type, sender, content, stateKey, ...(prev ? { prev } : {}), ...(eventId !== undefined ? { eventId } : {}) });
    const record: StateRecord = { type, stateKey, content, sender, eventId: ev.eventId, ts: ev.ts, stream: ev.stream };
    room.state.set(key, record);
    return record;
  }

  private putMember(room: Room, user: string, membership: Membership, sender: string, content: JsonObject): MemberRecord {
    const old = room.delta.get(user);
    const baseMembership = old ? undefined : room.base.map.get(user);
    const prev: PrevState | undefined = old
      ? { eventId: old.eventId, sender: old.sender, content: old.content }
      : baseMembership !== undefined
        ? { baseMembership }
        : undefined;
    const ev = this.appendEvent(room, { type: "m.room.member", sender, content, stateKey: user, ...(prev ? { prev } : {}) });
    const record: MemberRecord = { membership, sender, content, eventId: ev.eventId, ts: ev.ts, stream: ev.stream };
    room.delta.set(user, record);
    return record;
  }

  /**
   * Stores an event in the room's timeline (the single place where events are born), records its
   * relation, and wakes whoever waits for it: long-poll `/sync`s and `waitForMessage` calls.
   */
  private appendEvent(
    room: Room,
    e: { type: string; sender: string; content: JsonObject; stateKey?: string; prev?: PrevState; txn?: TimelineEvent["txn"]; eventId?: string },
  ): TimelineEvent {
    const ev: TimelineEvent = {
      stream: ++this.stream,
      eventId: e.eventId ?? this.nextEventId(room),
      type: e.type,
      sender: e.sender,
      content: e.content,
      ts: Date.now(),
      ...(e.stateKey !== undefined ? { stateKey: e.stateKey } : {}),
      ...(e.prev ? { prev: e.prev } : {}),
      ...(e.txn ? { txn: e.txn } : {}),
    };
    room.timeline.push(ev);
    this.eventIndex.set(ev.eventId, { room, ev });
    const relation = relationOf(ev.content);
    if (relation) {
      this.relationTargets.add(relation.parent);
      if (relation.relType === "m.annotation" && relation.key !== undefined) {
        this.annotations.add(`${relation.parent}\u0000${ev.type}\u0000${relation.key}\u0000${ev.sender}`);
      }
    }
    if (ev.stateKey === undefined && this.messageWaiters.size > 0) {
      const message = toFakeMessage(ev);
      for (const w of [...this.messageWaiters]) if (w.roomId === room.id) w.consider(message);
    }
    this.wake();
    return ev;
  }

  // -------------------------------------------------------------------------------------------
  // Serialisation.

  private stateEventJson(room: Room, s: StateRecord): string {
    return JSON.stringify({
      type: s.type,
      state_key: s.stateKey,
      content: s.content,
      sender: s.sender,
      event_id: s.eventId,
      origin_server_ts: s.ts,
      room_id: room.id,
      unsigned: {},
    });
  }

  private memberEventJson(room: Room, user: string, d: MemberRecord): string {
    return JSON.stringify({
      type: "m.room.member",
      state_key: user,
      content: d.content,
      sender: d.sender,
      event_id: d.eventId,
      origin_server_ts: d.ts,
      room_id: room.id,
      unsigned: {},
    });
  }

  /** Member events as JSON strings, optionally filtered by membership. */
  private memberEventsJson(room: Room, keep?: (m: Membership) => boolean): string[] {
    const parts: string[] = [];
    const base = room.base;
    const quoted = (base.quoted ??= Array.from(base.map.keys(), (u) => JSON.stringify(u)));
    const roomQ = JSON.stringify(room.id);
    const creatorQ = JSON.stringify(room.creator);
    const head = `{"type":"m.room.member","state_key":`;
    const idHead = `,"event_id":"$${room.tag}_m`;
    const tail = `","origin_server_ts":${room.createdTs},"room_id":${roomQ},"unsigned":{}}`;
    const delta = room.delta;
    const hasDelta = delta.size > 0;
    let i = 0;
    for (const [user, m] of base.map) {
      if (hasDelta) {
        const d = delta.get(user);
        if (d !== undefined) {
          if (!keep || keep(d.membership)) parts.push(this.memberEventJson(room, user, d));
          i++;
          continue;
        }
      }
      if (!keep || keep(m)) {
        const q = quoted[i]!;
        parts.push(head + q + MEMBER_CONTENT[m] + (m === "invite" || m === "ban" ? creatorQ : q) + idHead + i.toString(36) + tail);
      }
      i++;
    }
    if (hasDelta) {
      for (const [user, d] of delta) {
        if (!base.map.has(user) && (!keep || keep(d.membership))) parts.push(this.memberEventJson(room, user, d));
      }
    }
    return parts;
  }

  // -------------------------------------------------------------------------------------------
  // HTTP.

  private static send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}, raw?: string): void {
    const text = raw ?? (typeof body === "string" ? body : JSON.stringify(body));
    const contentType = raw === undefined && typeof body === "string" ? "text/plain; charset=utf-8" : "application/json";
    const bytes = Buffer.from(text, "utf8");
    res.writeHead(status, { "Content-Type": contentType, "Content-Length": String(bytes.length), ...headers });
    res.end(bytes);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rawBody = await FakeHomeserver.readBody(req);
    const url = new URL(req.url ?? "/", "http://localhost");
    const method = req.method ?? "GET";
    this.total++;

    let matched: { route: Route; params: string[] } | undefined;
    let error: MatrixHttpError | undefined;
    try {
      matched = this.route(method, url.pathname);
    } catch (err) {
      if (!(err instanceof MatrixHttpError)) throw err;
      error = err;
    }
    const kind: EndpointKind = matched?.route.kind ?? "other";
    this.counts[kind]++;
    const entry: (typeof this.log)[number] = {
      method,
      path: url.pathname,
      query: url.search,
      kind,
      user: null,
      device: null,
      status: null,
      receivedAt: Date.now(),
      finishedAt: null,
    };
    this.log.push(entry);
    res.on("finish", () => {
      entry.status = res.statusCode;
      entry.finishedAt = Date.now();
    });

    const hook = this.hooks.findIndex((h) => h.endpoint === kind);
    if (hook >= 0) {
      const { fn } = this.hooks.splice(hook, 1)[0]!;
      try {
        fn();
      } catch (err) {
        console.error("FakeHomeserver: beforeNext hook failed", err);
        FakeHomeserver.send(res, 500, { errcode: "M_UNKNOWN", error: "Internal server error" });
        return;
      }
    }

    // Injected faults come first. A failure or a rate limit is answered without processing the
    // request; a stall withholds the answer, before processing (apply: false) or after it.
    const fail = this.failRules.find((r) => r.remaining > 0 && r.endpoint === kind);
    if (fail) {
      fail.remaining--;
      FakeHomeserver.send(res, fail.status, fail.body, fail.headers);
      return;
    }
    const redirect = this.redirectRules.find((r) => r.remaining > 0 && r.endpoint === kind);
    if (redirect) {
      redirect.remaining--;
      FakeHomeserver.send(res, redirect.status, "Moved", { Location: redirect.location });
      return;
    }
    const stall = this.stallRules.find((r) => r.remaining > 0 && r.endpoint === kind);
    if (stall) {
      stall.remaining--;
      this.stalled.add(res);
      res.on("close", () => this.stalled.delete(res));
      if (!stall.apply) return;
    }
    const limit = stall ? undefined : this.rateRules.find((r) => r.remaining > 0 && (r.endpoints === undefined || r.endpoints.has(kind)));
    if (limit) {
      limit.remaining--;
      const body: JsonObject = { errcode: "M_LIMIT_EXCEEDED", error: "Too Many Requests" };
      if (limit.body) body.retry_after_ms = limit.retryAfterMs;
      const headers: Record<string, string> = limit.header ? { "Retry-After": limit.headerText ?? String(Math.ceil(limit.retryAfterMs / 1000)) } : {};
      FakeHomeserver.send(res, 429, body, headers);
      return;
    }

    if (method === "OPTIONS") {
      if (!stall) {
        res.writeHead(204, { "Access-Control-Allow-Origin": "*" });
        res.end();
      }
      return;
    }
    const gone = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) gone.abort();
    });
    // A stalled answer (`stallNext`, apply: true) is never sent, whatever it would have been.
    const alive = (): boolean => !stall && !gone.signal.aborted && !res.destroyed && !res.writableEnded;
    try {
      if (error) throw error;
      if (!matched) throw new MatrixHttpError(404, "M_UNRECOGNIZED", "Unrecognized request");
      const ctx: RequestContext = {
        method,
        path: url.pathname,
        params: matched.params,
        query: url.searchParams,
        rawBody,
        user: "",
        token: "",
        signal: gone.signal,
        authenticate: () => {
          this.authenticate(req, url.searchParams, ctx);
          entry.user = ctx.user;
          entry.device = this.tokens.get(ctx.token)?.deviceId ?? null;
        },
      };
      if (matched.route.auth === true) ctx.authenticate();
      const reply = await matched.route.handler(ctx);
      const drip = this.dripRules.find((r) => r.remaining > 0 && r.endpoint === kind);
      if (drip && alive()) {
        drip.remaining--;
        this.drip(res, reply, drip.intervalMs);
        return;
      }
      if (alive()) FakeHomeserver.send(res, reply.status, reply.body, {}, reply.raw);
    } catch (err) {
      if (!alive()) return;
      if (err instanceof MatrixHttpError) {
        FakeHomeserver.send(res, err.status, { errcode: err.errcode, error: err.message, ...err.extra });
        return;
      }
      console.error("FakeHomeserver: internal error", err);
      FakeHomeserver.send(res, 500, { errcode: "M_UNKNOWN", error: "Internal server error" });
    }
  }

  /** `dripNext`: the headers now, then the body one byte per `intervalMs`. */
  private drip(res: ServerResponse, reply: Reply, intervalMs: number): void {
    const text = reply.raw ?? (typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body));
    const bytes = Buffer.from(text, "utf8");
    res.writeHead(reply.status, { "Content-Type": "application/json", "Content-Length": String(bytes.length) });
    res.flushHeaders();
    let sent = 0;
    const stop = (): void => {
      const timer = this.dripping.get(res);
      if (timer !== undefined) clearInterval(timer);
      this.dripping.delete(res);
    };
    res.on("close", stop);
    this.dripping.set(
      res,
      setInterval(() => {
        if (res.destroyed) return stop();
        res.write(bytes.subarray(sent, sent + 1));
        sent++;
        if (sent >= bytes.length) {
          stop();
          res.end();
        }
      }, intervalMs),
    );
  }

  private static readBody(req: IncomingMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      req.on("error", reject);
    });
  }

  /** Access token from `Authorization: Bearer` or `?access_token=` (Synapse's rules). */
  private authenticate(req: IncomingMessage, query: URLSearchParams, ctx: RequestContext): void {
    const header = req.headers.authorization;
    const queryToken = query.get("access_token");
    let token: string | undefined;
    if (header !== undefined) {
      if (queryToken !== null) {
        throw new MatrixHttpError(400, "M_MISSING_PARAM", "Mixing Authorization headers and access_token query parameters.");
      }
      const parts = header.split(" ");
      if (parts.length !== 2 || parts[0] !== "Bearer") throw new MatrixHttpError(401, "M_MISSING_TOKEN", "Invalid Authorization header.");
      token = parts[1];
    } else if (queryToken !== null) {
      token = queryToken;
    }
    if (token === undefined || token === "") throw new MatrixHttpError(401, "M_MISSING_TOKEN", "Missing access token.");
    const who = this.tokens.get(token);
    if (!who) throw new MatrixHttpError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token.", { soft_logout: false });
    ctx.user = who.userId;
    ctx.token = token;
  }

  private route(method: string, pathname: string): { route: Route; params: string[] } | undefined {
    if (pathname === "/_matrix/client/versions") {
      return this.pick(method, { GET: { kind: "versions", auth: false, handler: () => this.versions() } }, []);
    }
    if (pathname.startsWith(REG_TOKENS_PATH)) return this.registrationTokenRoute(method, pathname);
    // Synapse registers its client servlets under both r0 and v3 (`client_patterns`).
    const prefix = ["/_matrix/client/v3/", "/_matrix/client/r0/"].find((p) => pathname.startsWith(p));
    if (prefix === undefined) return undefined;
    let segs: string[];
    try {
      segs = pathname.slice(prefix.length).split("/").map(decodeURIComponent);
    } catch {
      throw new MatrixHttpError(400, "M_UNRECOGNIZED", "Invalid percent-encoding in path");
    }
    const [a, b, c, d, e] = segs;
    const n = segs.length;
    if (n === 1 && a === "login") {
      return this.pick(
        method,
        {
          GET: { kind: "login", auth: false, handler: () => ok({ flows: [{ type: "m.login.password" }] }) },
          POST: { kind: "login", auth: false, handler: (ctx) => this.login(ctx) },
        },
        [],
      );
    }
    if (n === 2 && a === "account" && b === "whoami") {
      return this.pick(method, { GET: { kind: "whoami", auth: true, handler: (ctx) => this.whoami(ctx) } }, []);
    }
    if (n === 3 && a === "directory" && b === "room") {
      return this.pick(
        method,
        {
          GET: { kind: "directory", auth: false, handler: (ctx) => this.directory(ctx) },
          PUT: { kind: "directory", auth: "late", handler: (ctx) => this.putDirectory(ctx) },
          DELETE: { kind: "directory", auth: "late", handler: (ctx) => this.deleteDirectory(ctx) },
        },
        [c!],
      );
    }
    if (n === 1 && a === "createRoom") {
      return this.pick(method, { POST: { kind: "create_room", auth: true, handler: (ctx) => this.createRoomEndpoint(ctx) } }, []);
    }
    if (n === 2 && a === "createRoom") {
      return this.pick(method, { PUT: { kind: "create_room", auth: true, handler: (ctx) => this.createRoomTxn(ctx) } }, [b!]);
    }
    if (n === 1 && a === "joined_rooms") {
      return this.pick(method, { GET: { kind: "joined_rooms", auth: true, handler: (ctx) => this.joinedRoomsEndpoint(ctx) } }, []);
    }
    if (n === 1 && a === "sync") {
      return this.pick(method, { GET: { kind: "sync", auth: true, handler: (ctx) => this.sync(ctx) } }, []);
    }
    if (n === 2 && a === "join") {
      return this.pick(method, { POST: { kind: "join", auth: true, handler: (ctx) => this.joinByIdOrAlias(ctx) } }, [b!]);
    }
    if (a === "user" && n >= 3) {
      const userId = b!;
      if (n === 3 && c === "filter") {
        return this.pick(method, { POST: { kind: "filter", auth: true, handler: (ctx) => this.createFilter(ctx) } }, [userId]);
      }
      if (n === 4 && c === "filter") {
        return this.pick(method, { GET: { kind: "filter", auth: true, handler: (ctx) => this.getFilter(ctx) } }, [userId, d!]);
      }
      if (n === 4 && c === "account_data") {
        const params = [userId, "", d!];
        return this.pick(
          method,
          {
            GET: { kind: "account_data", auth: true, handler: (ctx) => this.getAccountData(ctx) },
            PUT: { kind: "account_data", auth: true, handler: (ctx) => this.putAccountData(ctx) },
          },
          params,
        );
      }
      if (n === 6 && c === "rooms" && segs[4] === "account_data") {
        const params = [userId, d!, segs[5]!];
        return this.pick(
          method,
          {
            GET: { kind: "account_data", auth: true, handler: (ctx) => this.getAccountData(ctx) },
            PUT: { kind: "account_data", auth: true, handler: (ctx) => this.putAccountData(ctx) },
          },
          params,
        );
      }
      return undefined;
    }
    if (a === "profile" && (n === 2 || n === 3)) {
      const params = n === 3 ? [b!, c!] : [b!];
      return this.pick(
        method,
        {
          GET: { kind: "profile", auth: false, handler: (ctx) => this.getProfile(ctx) },
          ...(n === 3 ? { PUT: { kind: "profile", auth: true, handler: (ctx: RequestContext) => this.putProfileField(ctx) } } : {}),
        },
        params,
      );
    }
    if (n === 2 && a === "keys") {
      switch (b) {
        case "upload":
          return this.pick(method, { POST: { kind: "keys_upload", auth: true, handler: (ctx) => this.keysUpload(ctx) } }, []);
        case "query":
          return this.pick(method, { POST: { kind: "keys_query", auth: true, handler: (ctx) => this.keysQuery(ctx) } }, []);
        case "claim":
          return this.pick(method, { POST: { kind: "keys_claim", auth: true, handler: (ctx) => this.keysClaim(ctx) } }, []);
        case "changes":
          return this.pick(method, { GET: { kind: "keys_changes", auth: true, handler: (ctx) => this.keysChanges(ctx) } }, []);
        default:
          return undefined;
      }
    }
    if (n === 3 && a === "sendToDevice") {
      return this.pick(method, { PUT: { kind: "send_to_device", auth: true, handler: (ctx) => this.sendToDevice(ctx) } }, [b!, c!]);
    }
    if (n === 2 && a === "pushrules" && b === "") {
      return this.pick(method, { GET: { kind: "push_rules", auth: true, handler: (ctx) => ok({ global: predefinedPushRules(ctx.user) }) } }, []);
    }
    if (n === 1 && a === "capabilities") {
      return this.pick(method, { GET: { kind: "capabilities", auth: true, handler: () => this.capabilities() } }, []);
    }
    if (n === 2 && a === "room_keys" && b === "version") {
      return this.pick(method, { GET: { kind: "room_keys", auth: true, handler: () => this.roomKeysVersion() } }, []);
    }
    if (a !== "rooms" || n < 3) return undefined;
    const roomId = b!;
    if (n === 3) {
      switch (c) {
        case "state":
          return this.pick(method, { GET: { kind: "state", auth: true, handler: (ctx) => this.getState(ctx) } }, [roomId]);
        case "members":
          return this.pick(method, { GET: { kind: "members", auth: true, handler: (ctx) => this.getMembers(ctx) } }, [roomId]);
        case "joined_members":
          return this.pick(method, { GET: { kind: "joined_members", auth: true, handler: (ctx) => this.getJoinedMembers(ctx) } }, [roomId]);
        case "invite":
        case "kick":
        case "ban":
        case "unban":
        case "join":
        case "leave": {
          const action = c;
          return this.pick(method, { POST: { kind: action, auth: true, handler: (ctx) => this.membershipEndpoint(ctx, action) } }, [roomId]);
        }
        default:
          return undefined;
      }
    }
    if (c === "state" && (n === 4 || n === 5)) {
      const params = [roomId, d!, n === 5 ? e! : ""];
      return this.pick(
        method,
        {
          GET: { kind: "state_event", auth: true, handler: (ctx) => this.getStateEvent(ctx) },
          PUT: { kind: "put_state", auth: true, handler: (ctx) => this.putStateEndpoint(ctx) },
        },
        params,
      );
    }
    if (c === "event" && n === 4) {
      return this.pick(method, { GET: { kind: "event", auth: true, handler: (ctx) => this.getEvent(ctx) } }, [roomId, d!]);
    }
    if (c === "receipt" && n === 5) {
      return this.pick(method, { POST: { kind: "receipt", auth: true, handler: (ctx) => this.postReceipt(ctx) } }, [roomId, d!, e!]);
    }
    if (c === "send" && n === 5) {
      return this.pick(method, { PUT: { kind: "send", auth: true, handler: (ctx) => this.sendEndpoint(ctx) } }, [roomId, d!, e!]);
    }
    if (c === "redact" && n === 5) {
      return this.pick(method, { PUT: { kind: "redact", auth: true, handler: (ctx) => this.redactEndpoint(ctx) } }, [roomId, d!, e!]);
    }
    if (c === "send" && n === 4) {
      return this.pick(method, { POST: { kind: "send", auth: true, handler: (ctx) => this.sendEndpoint(ctx) } }, [roomId, d!]);
    }
    return undefined;
  }

  /**
   * Synapse's three servlet patterns, tried in registration order against the raw path:
   * `registration_tokens$`, `registration_tokens/new$`, `registration_tokens/(?P<token>[^/]*)$` — so
   * `GET|PUT|DELETE …/new` is a 405 (the `new` pattern matches first) and `…/registration_tokens/`
   * names the empty token. The token is unquoted with Python's `urllib.parse.unquote`.
   */
  private registrationTokenRoute(method: string, pathname: string): { route: Route; params: string[] } | undefined {
    const rest = pathname.slice(REG_TOKENS_PATH.length);
    const kind: EndpointKind = "admin_registration_tokens";
    let routes: Partial<Record<Method, Route>>;
    let params: string[] = [];
    if (rest === "") {
      routes = { GET: { kind, auth: true, handler: (ctx) => this.listRegistrationTokens(ctx) } };
    } else if (rest === "/new") {
      routes = { POST: { kind, auth: true, handler: (ctx) => this.newRegistrationToken(ctx) } };
    } else if (rest.startsWith("/") && !rest.includes("/", 1)) {
      params = [pyUnquote(rest.slice(1))];
      routes = {
        GET: { kind, auth: true, handler: (ctx) => this.getRegistrationToken(ctx) },
        PUT: { kind, auth: true, handler: (ctx) => this.putRegistrationToken(ctx) },
        DELETE: { kind, auth: true, handler: (ctx) => this.deleteRegistrationToken(ctx) },
      };
    } else {
      return undefined;
    }
    if (this.masDelegated) {
      const unregistered: Route = {
        kind,
        auth: false,
        handler: () => {
          throw new MatrixHttpError(404, "M_UNRECOGNIZED", "Unrecognized request");
        },
      };
      return { route: unregistered, params };
    }
    return this.pick(method, routes, params);
  }

  /** A known path: the route for the method, or 405 for another method. */
  private pick(method: string, routes: Partial<Record<Method, Route>>, params: string[]): { route: Route; params: string[] } {
    const route = routes[method as Method];
    if (route) return { route, params };
    return {
      route: {
        kind: "other",
        auth: false,
        handler: () => {
          throw new MatrixHttpError(405, "M_UNRECOGNIZED", "Unrecognized request");
        },
      },
      params,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Request bodies.

  /** Synapse `parse_json_object_from_request`. */
  private static jsonObject(raw: string): JsonObject {
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      throw new MatrixHttpError(400, "M_NOT_JSON", "Content not JSON.");
    }
    if (!isObject(value)) throw new MatrixHttpError(400, "M_BAD_JSON", "Content must be a JSON object.");
    return value;
  }

  /** Membership endpoints ignore an unparsable body (Synapse: "some clients cheekily send invalid bodies"). */
  private static lenientJsonObject(raw: string): JsonObject {
    try {
      const value: unknown = JSON.parse(raw);
      return isObject(value) ? value : {};
    } catch {
      return {};
    }
  }

  // -------------------------------------------------------------------------------------------
  // Endpoints.

  private versions(): Reply {
    return ok({ versions: ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"], unstable_features: {} });
  }

  /**
   * `POST /login` with `m.login.password` (synapse/rest/client/login.py `LoginRestServlet`,
   * handlers/auth.py): `identifier` `m.id.user` (or the deprecated top-level `user`), a localpart
   * or a user id of this server (case-insensitive, as Synapse looks it up); a wrong password and an
   * unknown user are the same 403; `device_id` reuses the user's device of that id (or creates it),
   * else a new device. Synapse's failed-login rate limit is not modelled.
   */
  private login(ctx: RequestContext): Reply {
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    const type = body["type"];
    if (type === undefined) throw new MatrixHttpError(400, "M_UNKNOWN", "Missing JSON keys.");
    if (type !== "m.login.password") throw new MatrixHttpError(400, "M_UNKNOWN", "Unknown login type");
    let identifier = body["identifier"] as Record<string, unknown> | undefined;
    if (identifier === undefined && typeof body["user"] === "string") identifier = { type: "m.id.user", user: body["user"] };
    if (identifier === null || typeof identifier !== "object") throw new MatrixHttpError(400, "M_MISSING_PARAM", "Missing param: identifier");
    if (identifier["type"] !== "m.id.user") throw new MatrixHttpError(400, "M_UNKNOWN", "Unknown login identifier type");
    const user = identifier["user"];
    if (typeof user !== "string") throw new MatrixHttpError(400, "M_INVALID_PARAM", "User identifier is missing 'user' key");
    const password = body["password"];
    if (typeof password !== "string") throw new MatrixHttpError(400, "M_INVALID_PARAM", "Bad parameter: password");
    const deviceId = body["device_id"];
    if (deviceId !== undefined && deviceId !== null && (typeof deviceId !== "string" || deviceId === "" || deviceId.length > 512)) {
      throw new MatrixHttpError(400, "M_INVALID_PARAM", "Invalid device_id");
    }
    const wanted = (user.startsWith("@") ? user : `@${user}:${this.serverName}`).toLowerCase();
    const match = [...this.passwords.entries()].find(([u]) => u.toLowerCase() === wanted);
    if (match === undefined || match[1] !== password) throw forbidden("Invalid username or password");
    const userId = match[0];
    const token = this.registerUser(userId, undefined, typeof deviceId === "string" ? { deviceId } : {});
    this.logins++;
    return ok({ user_id: userId, access_token: token, home_server: this.serverName, device_id: this.tokens.get(token)!.deviceId });
  }

  private whoami(ctx: RequestContext): Reply {
    const who = this.tokens.get(ctx.token)!;
    return ok({ user_id: who.userId, device_id: who.deviceId, is_guest: false });
  }

  /**
   * `GET /directory/room/{alias}` (Synapse `ClientDirectoryServer.on_GET` + `DirectoryHandler.get_association`):
   * no auth; `RoomAlias.is_valid` (a `#`, a `:`, a valid server name: an empty or spaced localpart
   * passes); `servers` is the stored servers and the servers of the joined members, this server first.
   * A remote alias is not found (no federation here).
   */
  private directory(ctx: RequestContext): Reply {
    const alias = ctx.params[0]!;
    if (!isSynapseId(alias, "#")) throw new MatrixHttpError(400, "M_INVALID_PARAM", "Room alias invalid");
    const rec = domainOfId(alias) === this.serverName ? this.aliases.get(alias) : undefined;
    if (!rec) throw new MatrixHttpError(404, "M_NOT_FOUND", `Room alias ${alias} not found`);
    const room = this.rooms.get(rec.roomId);
    const servers = new Set([...(room ? this.hostsInRoom(room) : []), ...rec.servers]);
    const ordered = servers.has(this.serverName) ? [this.serverName, ...[...servers].filter((h) => h !== this.serverName)] : [...servers];
    return ok({ room_id: rec.roomId, servers: ordered });
  }

  /**
   * `PUT /directory/room/{alias}` with `{room_id, servers?}` (Synapse `ClientDirectoryServer.on_PUT`, then
   * `DirectoryHandler.create_association`), in Synapse's order: the alias (400 M_INVALID_PARAM), the body
   * (pydantic: 400), the room (400 "Room does not exist"), only then the access token; then the alias
   * length (400), membership of the room unless a server admin (403), the localpart's whitespace (400),
   * a local alias (400), the servers (given, else those of the joined members), and a free alias (409).
   */
  private putDirectory(ctx: RequestContext): Reply {
    const alias = ctx.params[0]!;
    if (!isSynapseId(alias, "#")) throw new MatrixHttpError(400, "M_INVALID_PARAM", "Room alias invalid");
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    const issues: PydanticIssue[] = [];
    if (!Object.hasOwn(body, "room_id")) issues.push({ loc: "room_id", type: "missing", input: body });
    else if (typeof body.room_id !== "string") issues.push({ loc: "room_id", type: "string_type", input: body.room_id });
    const servers = body.servers;
    if (servers !== undefined && servers !== null) {
      if (!Array.isArray(servers)) issues.push({ loc: "servers", type: "list_type", input: servers });
      else servers.forEach((sv, i) => typeof sv !== "string" && issues.push({ loc: `servers.${i}`, type: "string_type", input: sv }));
    }
    if (issues.length > 0) throw pydanticError("PutBody", issues);
    const roomId = body.room_id as string;
    const room = this.rooms.get(roomId);
    if (!room && !this.roomsWithoutEvents.has(roomId)) throw new MatrixHttpError(400, "M_UNKNOWN", "Room does not exist");
    ctx.authenticate();
    const given = Array.isArray(servers) ? (servers as string[]) : [];
    this.createAssociation(ctx.user, alias, roomId, given, true);
    this.changes.push({ kind: "alias_create", roomId, sender: ctx.user, target: alias });
    return ok({});
  }

  /**
   * Synapse `DirectoryHandler.create_association` + `_create_association` for a user (no application
   * services here; the default `alias_creation_rules` allow everything).
   */
  private createAssociation(user: string, alias: string, roomId: string, servers: readonly string[], checkMembership: boolean): void {
    if ([...alias].length > MAX_ALIAS_LENGTH) {
      throw new MatrixHttpError(400, "M_INVALID_PARAM", `Can't create aliases longer than ${MAX_ALIAS_LENGTH} characters`);
    }
    const room = this.rooms.get(roomId);
    if (checkMembership && !this.admins.has(user) && (!room || membershipOf(room, user) !== "join")) {
      throw forbidden("You must be in the room to create an alias for it");
    }
    const localpart = alias.slice(1, alias.indexOf(":"));
    if (PY_WHITESPACE.some((w) => localpart.includes(w))) throw new MatrixHttpError(400, "M_UNKNOWN", "Invalid characters in room alias");
    if (domainOfId(alias) !== this.serverName) throw new MatrixHttpError(400, "M_UNKNOWN", "Room alias must be local");
    const hosts = servers.length > 0 ? [...servers] : room ? this.hostsInRoom(room) : [];
    if (hosts.length === 0) throw new MatrixHttpError(400, "M_UNKNOWN", "Failed to get server list");
    if (this.aliases.has(alias)) throw new MatrixHttpError(409, "M_UNKNOWN", `Room alias ${alias} already exists`);
    this.aliases.set(alias, { roomId, creator: user, servers: hosts });
  }

  /**
   * `DELETE /directory/room/{alias}` (Synapse `ClientDirectoryServer.on_DELETE`: the alias is checked
   * before the access token; then `DirectoryHandler.delete_association`): the alias' creator,
   * a server admin, or a member joined to the room with the level to send `m.room.canonical_alias`
   * (`check_can_change_room_list`) may delete it. An unknown alias is a 404. Afterwards the canonical
   * alias event loses the alias (`alias` and `alt_aliases`), sent as the deleting user — silently not
   * when that user may not send it.
   */
  private deleteDirectory(ctx: RequestContext): Reply {
    const alias = ctx.params[0]!;
    if (!isSynapseId(alias, "#")) throw new MatrixHttpError(400, "M_INVALID_PARAM", "Room alias invalid");
    ctx.authenticate();
    const rec = this.aliases.get(alias);
    if (!rec) throw new MatrixHttpError(404, "M_NOT_FOUND", "Unknown room alias");
    if (rec.creator !== ctx.user && !this.admins.has(ctx.user)) {
      const room = this.rooms.get(rec.roomId);
      if (!room || membershipOf(room, ctx.user) !== "join") throw forbidden(`User ${ctx.user} not in room ${rec.roomId}`);
      if (userLevel(room, ctx.user) < sendLevel(room, "m.room.canonical_alias", true)) {
        throw forbidden("You don't have permission to delete the alias.");
      }
    }
    this.aliases.delete(alias);
    this.changes.push({ kind: "alias_delete", roomId: rec.roomId, sender: ctx.user, target: alias });
    const room = this.rooms.get(rec.roomId);
    const current = room?.state.get(stateKeyOf("m.room.canonical_alias", ""))?.content;
    if (room && current) {
      const content: JsonObject = { ...current };
      let changed = false;
      if (content.alias === alias) {
        delete content.alias;
        changed = true;
      }
      if (Array.isArray(content.alt_aliases) && content.alt_aliases.includes(alias)) {
        const rest = content.alt_aliases.filter((a) => a !== alias);
        if (rest.length > 0) content.alt_aliases = rest;
        else delete content.alt_aliases;
        changed = true;
      }
      if (changed) {
        try {
          this.sendStateEvent(room, ctx.user, "m.room.canonical_alias", "", content, undefined);
        } catch (err) {
          // Synapse logs an AuthError here and answers 200; anything else reaches the client.
          if (!(err instanceof MatrixHttpError && err.status === 403)) throw err;
        }
      }
    }
    return ok({});
  }

  /** The servers of the room's joined members, in first-join order (Synapse `get_current_hosts_in_room`). */
  private hostsInRoom(room: Room): string[] {
    const base = room.base;
    if (!base.hostCounts) {
      const counts = new Map<string, number>();
      for (const [user, m] of base.map) if (m === "join") counts.set(domainOfId(user), (counts.get(domainOfId(user)) ?? 0) + 1);
      base.hostCounts = counts;
    }
    const counts = new Map(base.hostCounts);
    for (const [user, d] of room.delta) {
      const host = domainOfId(user);
      if (base.map.get(user) === "join") counts.set(host, (counts.get(host) ?? 0) - 1);
      if (d.membership === "join") counts.set(host, (counts.get(host) ?? 0) + 1);
    }
    return [...counts].filter(([, n]) => n > 0).map(([host]) => host);
  }

  /** `PUT /createRoom/{txnId}`: as `POST`, its answer kept per access token and path (a failure is not kept). */
  private createRoomTxn(ctx: RequestContext): Reply {
    const key = `${ctx.token}\u0000${ctx.path}`;
    const seen = this.txns.get(key);
    if (seen) return seen;
    const reply = this.createRoomEndpoint(ctx);
    this.txns.set(key, reply);
    return reply;
  }

  /**
   * `POST /createRoom` (Synapse `RoomCreateRestServlet`, `RoomCreationHandler.create_room` and
   * `_send_events_for_new_room`), step by step as Synapse takes them:
   * 1. the request: `invite_3pid` entries, `room_version` (default "11"), `room_alias_name` (no
   *    whitespace, no `:`, not taken), each invitee (`UserID.from_string` and a valid server name), at
   *    most 10 invitees (the default `rc_invites.per_room` burst), `power_level_content_override.users`
   *    holding the creator (before room version 12), the preset (default by `visibility`: anything but
   *    "private" gives public_chat), and `creation_content` — all before anything is stored;
   * 2. the room is stored (v12: after its create event was validated, the room id being that event's
   *    hash), then the alias is registered — from here a failure leaves a room without events and a
   *    taken alias behind, as on Synapse;
   * 3. the create event (v≤10 with `creator`; v12: `additional_creators` checked) and the creator's
   *    join are persisted — a later failure leaves the room with just those two;
   * 4. one batch: power levels (an `initial_state` entry as it is, else the defaults shallow-updated by
   *    the preset and the override), canonical alias, join rules, history visibility, guest access
   *    (preset), the `initial_state` events (the last of a repeated type/state key wins, at the first's
   *    place), name, topic. Every event is validated first (400), then each is checked in order
   *    against the state the batch has built so far — deduplication against persisted state (an
   *    identical one drops the rest of the batch silently), size (413), auth (403) — and the canonical
   *    aliases are checked (400); any failure drops the whole batch;
   * 5. the invites (`is_direct` carried), each through the membership handler; a failure is answered
   *    and the rest are not sent.
   * Answers `{room_id}` (Synapse stopped sending `room_alias` in 1.79). Where Synapse's Python raises a
   * TypeError or KeyError on a malformed field, the answer is a 500.
   */
  private createRoomEndpoint(ctx: RequestContext): Reply {
    const config = FakeHomeserver.jsonObject(ctx.rawBody);
    const shape = jsonShape(ctx.rawBody);
    const user = ctx.user;
    const get = (key: string, fallback: unknown): unknown => (Object.hasOwn(config, key) ? config[key] : fallback);

    // 1. The request.
    const invite3pid = pyIter(get("invite_3pid", []));
    for (const entry of invite3pid) {
      for (const key of ["medium", "address", "id_server", "id_access_token"]) {
        if (!pyContains(entry, key)) {
          throw new MatrixHttpError(
            400,
            "M_MISSING_PARAM",
            "all of `medium`, `address`, `id_server` and `id_access_token` are required when making a 3pid invite",
          );
        }
      }
    }
    const version = get("room_version", CREATE_ROOM_DEFAULT_VERSION);
    if (typeof version !== "string") throw new MatrixHttpError(400, "M_BAD_JSON", "room_version must be a string");
    if (!KNOWN_ROOM_VERSIONS.has(version)) {
      throw new MatrixHttpError(400, "M_UNSUPPORTED_ROOM_VERSION", "Your homeserver does not support this room version");
    }
    const v = Number(version);
    let alias: string | undefined;
    if (Object.hasOwn(config, "room_alias_name")) {
      const name = config.room_alias_name;
      if (PY_WHITESPACE.some((w) => pyContains(name, w))) throw new MatrixHttpError(400, "M_UNKNOWN", "Invalid characters in room alias");
      if (pyContains(name, ":")) {
        throw new MatrixHttpError(
          400,
          "M_UNKNOWN",
          "':' is not permitted in the room alias name. Please note this expects a local part — 'wombat', not '#wombat:example.com'.",
        );
      }
      if (typeof name !== "string") throw internalError(); // a list or dict would make a nonsense alias: not modelled
      alias = `#${name}:${this.serverName}`;
      if (this.aliases.has(alias)) throw new MatrixHttpError(400, "M_ROOM_IN_USE", "Room alias already taken");
    }
    const inviteValue = get("invite", []);
    const invites = pyIter(inviteValue);
    for (const i of invites) if (!isSynapseId(i, "@")) throw new MatrixHttpError(400, "M_UNKNOWN", `Invalid user_id: ${pyStr(i)}`);
    const invitees = invites as string[];
    if (invitees.length + invite3pid.length > CREATE_ROOM_MAX_INVITES) throw new MatrixHttpError(400, "M_UNKNOWN", "Cannot invite so many users at once");
    if (invite3pid.length > 0) throw new MatrixHttpError(400, "M_UNKNOWN", "FakeHomeserver: invite_3pid (identity servers) is not modelled");
    const plco = get("power_level_content_override", undefined);
    if (pyTruthy(plco) && v < 12 && pyContains(plco, "users")) {
      if (!isObject(plco)) throw internalError(); // plco["users"] on a list or string
      if (!pyContains(plco.users, user)) {
        throw new MatrixHttpError(400, "M_UNKNOWN", `Not a valid power_level_content_override: 'users' did not contain ${user}`);
      }
    }
    const visibility = get("visibility", "private");
    const presetName = get("preset", visibility === "private" ? "private_chat" : "public_chat");
    if (!pyHashable(presetName)) throw internalError();
    const preset = typeof presetName === "string" && Object.hasOwn(ROOM_PRESETS, presetName) ? ROOM_PRESETS[presetName] : undefined;
    if (!preset) throw new MatrixHttpError(400, "M_BAD_JSON", `'${pyStr(presetName)}' is not a valid preset`);
    // _validate_room_config looks for an m.room.encryption entry: `s.get("type")` on each entry up to it.
    const rawInitial = get("initial_state", []);
    for (const entry of pyIter(rawInitial)) {
      if (!isObject(entry)) throw internalError();
      if (entry.type === "m.room.encryption") break;
    }
    const creationRaw = get("creation_content", {});
    if (!isObject(creationRaw)) throw internalError(); // creation_content["room_version"] = … on a non-dict
    const creation: JsonObject = structuredClone(creationRaw);
    creation.room_version = version;
    if (v >= 12 && config.preset === "trusted_private_chat" && pyLen(inviteValue) > 0) {
      // The invitees become additional creators (Synapse takes a set union: its order is arbitrary).
      const existing = Object.hasOwn(creation, "additional_creators") ? pyIter(creation.additional_creators) : [];
      if (!existing.every(pyHashable)) throw internalError();
      const merged = new Map<string, unknown>();
      for (const c of [...existing, ...invitees]) if (!merged.has(canonicalJson(c))) merged.set(canonicalJson(c), c);
      creation.additional_creators = [...merged.values()];
    }

    // 2. The room is stored, then its alias.
    const token = randomBytes(32).toString("base64url");
    const roomId = v >= 12 ? `!${token}` : `!${randomLetters(18)}:${this.serverName}`;
    const additional = v >= 12 && Array.isArray(creation.additional_creators) ? creation.additional_creators.filter((c): c is string => typeof c === "string") : [];
    const room = this.newRoomObject(roomId, version, user, v >= 12 ? new Set([user, ...additional]) : new Set(), EMPTY_BASE);
    const createShape = shapeAt(shape, "creation_content");
    if (v >= 12) this.validateNewStateEvent(room, user, "m.room.create", creation, createShape);
    this.roomsWithoutEvents.add(roomId);
    if (alias !== undefined) this.createAssociation(user, alias, roomId, [this.serverName], false);
    const initial = new Map<string, { type: unknown; stateKey: unknown; content: unknown; shape: Shape | undefined }>();
    pyIter(rawInitial).forEach((val, index) => {
      if (!isObject(val) || !Object.hasOwn(val, "content") || !Object.hasOwn(val, "type")) throw internalError();
      const stateKey = Object.hasOwn(val, "state_key") ? val.state_key : "";
      if (!pyHashable(val.type) || !pyHashable(stateKey)) throw internalError();
      initial.set(JSON.stringify([val.type, stateKey]), { type: val.type, stateKey, content: val.content, shape: shapeAt(shape, "initial_state", index, "content") });
    });

    // 3. The create event and the creator's join.
    if (v <= 10) creation.creator = user;
    if (v < 12) this.validateNewStateEvent(room, user, "m.room.create", creation, createShape);
    this.checkSizeLimits(room, user, "m.room.create", creation, "");
    if (v >= 12 && Object.hasOwn(creation, "additional_creators")) checkValidAdditionalCreators(creation.additional_creators);
    this.putState(room, "m.room.create", "", creation, user, v >= 12 ? `$${token}` : undefined);
    this.rooms.set(roomId, room);
    this.roomsWithoutEvents.delete(roomId);
    this.putMember(room, user, "join", user, { membership: "join" });
    this.changes.push({ kind: "create_room", roomId, sender: user, content: structuredClone(config) });

    // 4. The batch.
    const batch: { type: unknown; stateKey: unknown; content: unknown; shape: Shape | undefined }[] = [];
    const inInitial = (type: string): boolean => initial.has(JSON.stringify([type, ""]));
    const plKey = JSON.stringify(["m.room.power_levels", ""]);
    const initialPl = initial.get(plKey);
    if (initialPl) {
      initial.delete(plKey);
      batch.push(initialPl);
    } else {
      const pl = defaultPowerLevels(user, v);
      if (preset.inviteesHaveOps && v < 12) for (const invitee of invitees) (pl.users as JsonObject)[invitee] = 100;
      Object.assign(pl, structuredClone(preset.powerLevels));
      if (pyTruthy(plco)) {
        if (!isObject(plco)) throw internalError(); // dict.update with a list or string
        Object.assign(pl, structuredClone(plco));
      }
      const plcoShape = shapeAt(shape, "power_level_content_override");
      batch.push({ type: "m.room.power_levels", stateKey: "", content: pl, shape: plcoShape?.kind === "object" ? plcoShape : undefined });
    }
    const simple = (type: string, content: JsonObject): void => void batch.push({ type, stateKey: "", content, shape: undefined });
    if (alias !== undefined && !inInitial("m.room.canonical_alias")) simple("m.room.canonical_alias", { alias });
    if (!inInitial("m.room.join_rules")) simple("m.room.join_rules", { join_rule: preset.joinRule });
    if (!inInitial("m.room.history_visibility")) simple("m.room.history_visibility", { history_visibility: preset.historyVisibility });
    if (preset.guestCanJoin && !inInitial("m.room.guest_access")) simple("m.room.guest_access", { guest_access: "can_join" });
    for (const e of initial.values()) batch.push(e);
    if (Object.hasOwn(config, "name")) simple("m.room.name", { name: config.name });
    if (Object.hasOwn(config, "topic")) simple("m.room.topic", { topic: config.topic, "m.topic": { "m.text": [{ body: config.topic }] } });

    // Every event is created (validated) before any is checked.
    const events: { type: string; stateKey: string; content: JsonObject }[] = [];
    for (const e of batch) {
      if (typeof e.type !== "string") throw new MatrixHttpError(400, "M_UNKNOWN", "Not 'type' a string type");
      if (typeof e.stateKey !== "string") throw new MatrixHttpError(400, "M_UNKNOWN", "Not 'state_key' a string type");
      if (!isObject(e.content)) throw internalError(); // content that is no object: not modelled
      if (e.type === "m.room.create" && e.stateKey === "") FakeHomeserver.refuseCreateEvent(e.content);
      this.validateNewStateEvent(room, user, e.type, e.content, e.shape);
      events.push({ type: e.type, stateKey: e.stateKey, content: e.content });
    }
    // handle_new_client_event: each event against the state so far (the batch's own events included).
    const scratch: Room = { ...room, state: new Map(room.state), delta: new Map(room.delta) };
    let persist = true;
    for (const e of events) {
      const key = stateKeyOf(e.type, e.stateKey);
      const prev = e.type === "m.room.member" ? memberRecord(scratch, e.stateKey) : scratch.state.get(key);
      const persisted = e.type === "m.room.member" ? room.delta.get(e.stateKey) : room.state.get(key);
      if (prev && prev === persisted && prev.sender === user && canonicalJson(prev.content) === canonicalJson(e.content)) {
        persist = false; // a duplicate of persisted state: Synapse returns it and persists none of the batch
        break;
      }
      this.checkSizeLimits(scratch, user, e.type, e.content, e.stateKey);
      if (e.type === "m.room.member") {
        const membership = e.content.membership as Membership;
        membershipAuth(scratch, user, e.stateKey, membership, e.content);
        scratch.delta.set(e.stateKey, { membership, sender: user, content: e.content, eventId: "", ts: 0, stream: 0 });
      } else {
        stateEventAuth(scratch, user, e.type, e.stateKey, e.content);
        scratch.state.set(key, { type: e.type, stateKey: e.stateKey, content: e.content, sender: user, eventId: "", ts: 0, stream: 0 });
      }
    }
    if (persist) {
      for (const e of events) if (e.type === "m.room.canonical_alias" && e.stateKey === "") this.validateCanonicalAlias(room, e.content, undefined);
      for (const e of events) {
        if (e.type === "m.room.member") this.putMember(room, e.stateKey, e.content.membership as Membership, user, e.content);
        else this.putState(room, e.type, e.stateKey, e.content, user);
      }
    }

    // 5. The invites.
    const isDirect = get("is_direct", null);
    for (const invitee of invitees) this.updateMembership(roomId, user, invitee, "invite", pyTruthy(isDirect) ? { is_direct: isDirect } : {});
    return ok({ room_id: roomId });
  }

  private joinedRoomsEndpoint(ctx: RequestContext): Reply {
    const joined: string[] = [];
    for (const room of this.rooms.values()) if (membershipOf(room, ctx.user) === "join") joined.push(room.id);
    return ok({ joined_rooms: joined });
  }

  /** Synapse `check_user_in_room_or_world_readable` (no world-readable rooms here; departed users refused). */
  private roomForReader(ctx: RequestContext, roomId: string): Room {
    const room = this.rooms.get(roomId);
    if (!room || membershipOf(room, ctx.user) !== "join") {
      throw forbidden(`User ${ctx.user} not in room ${roomId}, and room previews are disabled`);
    }
    return room;
  }

  private getState(ctx: RequestContext): Reply {
    const room = this.roomForReader(ctx, ctx.params[0]!);
    const parts: string[] = [];
    for (const s of room.state.values()) parts.push(this.stateEventJson(room, s));
    for (const p of this.memberEventsJson(room)) parts.push(p);
    return { status: 200, raw: `[${parts.join(",")}]` };
  }

  private getStateEvent(ctx: RequestContext): Reply {
    const [roomId, type, stateKey] = ctx.params as [string, string, string];
    const format = ctx.query.get("format") ?? "content";
    if (format !== "content" && format !== "event") {
      throw new MatrixHttpError(400, "M_INVALID_PARAM", `Query parameter "format" must be one of [content, event]`);
    }
    const room = this.roomForReader(ctx, roomId);
    if (type === "m.room.member") {
      const rec = memberRecord(room, stateKey);
      if (!rec) throw new MatrixHttpError(404, "M_NOT_FOUND", "Event not found.");
      return format === "content" ? ok(rec.content) : { status: 200, raw: this.memberEventJson(room, stateKey, rec) };
    }
    const s = room.state.get(stateKeyOf(type, stateKey));
    if (!s) throw new MatrixHttpError(404, "M_NOT_FOUND", "Event not found.");
    return format === "content" ? ok(s.content) : { status: 200, raw: this.stateEventJson(room, s) };
  }

  private getMembers(ctx: RequestContext): Reply {
    const room = this.roomForReader(ctx, ctx.params[0]!);
    const membership = ctx.query.get("membership");
    const notMembership = ctx.query.get("not_membership");
    // Synapse skips an event when either filter excludes it (both filters must pass).
    const keep =
      membership || notMembership
        ? (m: Membership): boolean => !((membership && m !== membership) || (notMembership && m === notMembership))
        : undefined;
    return { status: 200, raw: `{"chunk":[${this.memberEventsJson(room, keep).join(",")}]}` };
  }

  private getJoinedMembers(ctx: RequestContext): Reply {
    const roomId = ctx.params[0]!;
    const room = this.rooms.get(roomId);
    const mine = room ? membershipOf(room, ctx.user) : undefined;
    if (!room || (mine !== "join" && mine !== "leave" && mine !== "ban")) {
      throw forbidden(`User ${ctx.user} not in room ${roomId}, and room previews are disabled`);
    }
    if (mine !== "join") throw forbidden("Getting joined members while not being a current member of the room is forbidden.");
    const joined: Record<string, { display_name: unknown; avatar_url: unknown }> = {};
    const add = (user: string, content: JsonObject | undefined): void => {
      joined[user] = { display_name: content?.displayname ?? null, avatar_url: content?.avatar_url ?? null };
    };
    for (const [user, m] of room.base.map) {
      const d = room.delta.get(user);
      if (d) {
        if (d.membership === "join") add(user, d.content);
      } else if (m === "join") {
        add(user, undefined);
      }
    }
    for (const [user, d] of room.delta) if (!room.base.map.has(user) && d.membership === "join") add(user, d.content);
    return ok({ joined });
  }

  private membershipEndpoint(ctx: RequestContext, action: "invite" | "kick" | "ban" | "unban" | "join" | "leave"): Reply {
    const roomId = ctx.params[0]!;
    const body = FakeHomeserver.lenientJsonObject(ctx.rawBody);
    let target = ctx.user;
    if (action === "invite" || action === "kick" || action === "ban" || action === "unban") {
      if (!("user_id" in body)) throw new MatrixHttpError(400, "M_MISSING_PARAM", "Missing params: ['user_id']");
      const userId = body.user_id;
      if (typeof userId !== "string" || !isValidUserId(userId)) {
        throw new MatrixHttpError(400, "M_INVALID_PARAM", `Invalid user id: ${JSON.stringify(userId)}`);
      }
      target = userId;
    }
    // Invite/kick/ban/unban/leave: only the reason goes into the event; join takes the whole body.
    const content: JsonObject = action === "join" ? { ...body } : "reason" in body ? { reason: body.reason } : {};
    this.updateMembership(roomId, ctx.user, target, action, content);
    return ok(action === "join" ? { room_id: roomId } : {});
  }

  private joinByIdOrAlias(ctx: RequestContext): Reply {
    const idOrAlias = ctx.params[0]!;
    let roomId: string;
    if (idOrAlias.startsWith("!") && isRoomIdShape(idOrAlias)) {
      roomId = idOrAlias;
    } else if (isValidAlias(idOrAlias)) {
      const found = this.aliases.get(idOrAlias);
      if (found === undefined) throw new MatrixHttpError(404, "M_NOT_FOUND", `Room alias ${idOrAlias} not found`);
      roomId = found.roomId;
    } else {
      throw new MatrixHttpError(400, "M_UNKNOWN", `${idOrAlias} was not legal room ID or room alias`);
    }
    const body = FakeHomeserver.lenientJsonObject(ctx.rawBody);
    this.updateMembership(roomId, ctx.user, ctx.user, "join", { ...body });
    return ok({ room_id: roomId });
  }

  /**
   * Synapse `update_membership_locked` + `_is_membership_change_allowed`.
   * `content` is the request's content without `membership` (as Synapse compares it for dedupe).
   * Returns the event id (an existing one when Synapse deduplicates the request).
   */
  private updateMembership(roomId: string, sender: string, target: string, action: string, content: JsonObject): string {
    const effective = action === "kick" || action === "unban" ? "leave" : action;
    if (!MEMBERSHIPS.has(effective)) throw new MatrixHttpError(400, "M_UNKNOWN", "Invalid membership key");
    const membership = effective as Membership;
    // Synapse strips the authorising user from any membership content a client sends.
    if (Object.hasOwn(content, "join_authorised_via_users_server")) {
      content = { ...content };
      delete content.join_authorised_via_users_server;
    }
    const room = this.rooms.get(roomId);
    if (!room) {
      // The server is not in the room: leave/kick/unban look for a local membership, a join
      // would go over federation, anything else fails to find the room version.
      if (membership === "leave") throw new MatrixHttpError(404, "M_UNKNOWN", "Not a known room");
      if (membership === "join") throw new MatrixHttpError(404, "M_UNKNOWN", "No known servers");
      throw new MatrixHttpError(404, "M_NOT_FOUND", `Could not find room_version for ${roomId}`);
    }

    // Membership handler checks (before event auth).
    const old = memberRecord(room, target);
    if (old) {
      if (action === "unban" && old.membership !== "ban") {
        throw new MatrixHttpError(403, "M_BAD_STATE", `Cannot unban user who was not banned (membership=${old.membership})`);
      }
      if (old.membership === "ban" && action !== "ban" && action !== "unban" && action !== "leave") {
        throw new MatrixHttpError(403, "M_BAD_STATE", `Cannot ${action} user who was banned`);
      }
      if (sender === old.sender && old.membership === membership && canonicalJson(content) === canonicalJson(old.content)) {
        return old.eventId; // duplicate: Synapse returns the existing event
      }
      if ((old.membership === "ban" || old.membership === "leave") && action === "kick") {
        throw forbidden("The target user is not in the room");
      }
    } else if (action === "kick") {
      throw forbidden("The target user is not in the room");
    }

    // Restricted join rules (Synapse `_should_perform_remote_join`): someone not yet joined or invited
    // joins locally only when a local user could have invited them (named in the event as
    // `join_authorised_via_users_server`) and they are joined to a room of the `allow` list.
    if (membership === "join" && old?.membership !== "join" && old?.membership !== "invite" && hasRestrictedJoinRules(room)) {
      const inviters = usersWhichCanIssueInvite(room);
      const localInviter = inviters.find((u) => domainOfId(u) === this.serverName);
      if (localInviter === undefined) {
        // A remote join through the servers of those who could invite; no federation here.
        if (inviters.length === 0) throw new MatrixHttpError(404, "M_UNKNOWN", "No known servers");
        throw new MatrixHttpError(502, "M_UNKNOWN", "Failed to make_join via any server");
      }
      const inAllowedRoom = roomsThatAllowJoin(room).some((id) => {
        const r = this.rooms.get(id);
        return r !== undefined && membershipOf(r, target) === "join";
      });
      if (!inAllowedRoom) throw forbidden("You do not belong to any of the required rooms/spaces to join this room.");
      content = { ...content, join_authorised_via_users_server: localInviter };
    }

    membershipAuth(room, sender, target, membership, { ...content, membership });

    const eventContent: JsonObject = { ...content, membership };
    const record = this.putMember(room, target, membership, sender, eventContent);
    const kind = action === "kick" || action === "unban" ? action : membership === "leave" && target !== sender ? "kick" : membership;
    this.changes.push({ kind, roomId, sender, target, content: structuredClone(eventContent) });
    return record.eventId;
  }

  /**
   * `PUT /rooms/{id}/state/{type}/{key}` (Synapse `RoomStateEventRestServlet.on_PUT`): members go to
   * the membership handler; anything else to `create_and_send_nonmember_event`, which refuses an
   * unknown room before anything else (its rate-limit step looks the room version up).
   */
  private putStateEndpoint(ctx: RequestContext): Reply {
    const [roomId, type, stateKey] = ctx.params as [string, string, string];
    const content = FakeHomeserver.jsonObject(ctx.rawBody);
    if (type === "m.room.member") {
      const membership = content.membership;
      if (typeof membership !== "string") throw new MatrixHttpError(400, "M_UNKNOWN", "Invalid membership (must be a string)");
      if (!parsesAsId(stateKey, "@")) throw idParseError(stateKey, "UserID");
      return ok({ event_id: this.updateMembership(roomId, ctx.user, stateKey, membership, content) });
    }
    const room = this.rooms.get(roomId);
    if (!room) throw forbidden(`User ${ctx.user} not in room ${roomId}`);
    if (type === "m.room.create" && stateKey === "") FakeHomeserver.refuseCreateEvent(content);
    const record = this.sendStateEvent(room, ctx.user, type, stateKey, content, jsonShape(ctx.rawBody));
    return ok({ event_id: record.eventId });
  }

  /**
   * A new `m.room.create` (state key "") in an existing room (Synapse `create_event` then
   * `create_new_client_event`): the room version named in the content is looked up first (missing:
   * a KeyError, 500; unknown: `UnsupportedRoomVersionError` with the version as its message), then
   * "Cannot resend m.room.create event".
   */
  private static refuseCreateEvent(content: JsonObject): never {
    if (!Object.hasOwn(content, "room_version")) throw internalError();
    const version = content.room_version;
    if (typeof version !== "string" || !KNOWN_ROOM_VERSIONS.has(version)) {
      throw new MatrixHttpError(400, "M_UNSUPPORTED_ROOM_VERSION", pyStr(version));
    }
    throw new MatrixHttpError(400, "M_INVALID_PARAM", "Cannot resend m.room.create event");
  }

  /**
   * A local user's new non-member state event, in Synapse's order (`create_and_send_nonmember_event`):
   * validation (400), deduplication (an identical event from the same sender: the existing one is
   * returned and nothing is stored), size limits (413), event auth (403), the canonical alias check
   * of `persist_and_notify_client_events` (400), then stored. `shape`: the content's JSON shape when
   * it came from a client (floats are refused from room version 6).
   */
  private sendStateEvent(room: Room, sender: string, type: string, stateKey: string, content: JsonObject, shape: Shape | undefined): StateRecord {
    this.validateNewStateEvent(room, sender, type, content, shape);
    const prev = room.state.get(stateKeyOf(type, stateKey));
    if (prev && prev.sender === sender && canonicalJson(prev.content) === canonicalJson(content)) return prev;
    this.checkSizeLimits(room, sender, type, content, stateKey);
    stateEventAuth(room, sender, type, stateKey, content);
    if (type === "m.room.canonical_alias" && stateKey === "") this.validateCanonicalAlias(room, content, prev?.content);
    const record = this.putState(room, type, stateKey, content, sender);
    this.changes.push({
      kind: type === "m.room.power_levels" && stateKey === "" ? "power_levels" : "state",
      roomId: room.id,
      sender,
      content: structuredClone(content),
    });
    return record;
  }

  /**
   * Synapse's `EventValidator` for a new state event (`validate_builder`, then `validate_new`), and the
   * relation check of `create_new_client_event`. 400 unless noted.
   */
  private validateNewStateEvent(room: Room, sender: string, type: string, content: JsonObject, shape: Shape | undefined): void {
    const ensureStrings = (...keys: string[]): void => {
      for (const key of keys) {
        if (!Object.hasOwn(content, key)) throw new MatrixHttpError(400, "M_UNKNOWN", `'${key}' not in content`);
        if (typeof content[key] !== "string") throw new MatrixHttpError(400, "M_UNKNOWN", `'${key}' not a string type`);
      }
    };
    // validate_builder
    switch (type) {
      case "m.room.message":
        ensureStrings("body", "msgtype");
        break;
      case "m.room.topic":
        ensureStrings("topic");
        break;
      case "m.room.name":
        ensureStrings("name");
        break;
      case "m.room.member":
        if (!Object.hasOwn(content, "membership")) throw new MatrixHttpError(400, "M_UNKNOWN", "Content has not membership key");
        if (typeof content.membership !== "string" || !MEMBERSHIPS.has(content.membership)) {
          throw new MatrixHttpError(400, "M_UNKNOWN", "Invalid membership key");
        }
        break;
      case "m.room.tombstone":
        if (!Object.hasOwn(content, "replacement_room")) throw new MatrixHttpError(400, "M_UNKNOWN", "Content has no replacement_room key");
        if (content.replacement_room === room.id) throw new MatrixHttpError(400, "M_UNKNOWN", "Tombstone cannot reference the room it was sent in");
        break;
    }
    // create_event: `m.room.aliases` needs the sender in the room (require_membership_for_aliases, default on).
    if (type === "m.room.aliases" && membershipOf(room, sender) !== "join") throw forbidden("You must be in the room to create an alias for it");
    // validate_new
    if (room.versionNumber >= 6) assertCanonicalShape(shape);
    if (type === "m.room.aliases" && Object.hasOwn(content, "aliases")) {
      for (const alias of pyIter(content.aliases)) {
        if (pyLen(alias) > MAX_ALIAS_LENGTH) {
          throw new MatrixHttpError(400, "M_INVALID_PARAM", `Can't create aliases longer than ${MAX_ALIAS_LENGTH} characters`);
        }
      }
    } else if (type === "m.room.retention") {
      const lifetime = (key: string): unknown => {
        const v = content[key];
        if (v !== undefined && v !== null && !isPyIntAt(v, shapeAt(shape, key))) throw new MatrixHttpError(400, "M_BAD_JSON", `'${key}' must be an integer`);
        return v;
      };
      const min = lifetime("min_lifetime");
      const max = lifetime("max_lifetime");
      if (typeof min === "number" && typeof max === "number" && min > max) {
        throw new MatrixHttpError(400, "M_BAD_JSON", "'min_lifetime' can't be greater than 'max_lifetime");
      }
    } else if (type === "m.room.server_acl") {
      if (!serverAllowedByAcl(content, this.serverName)) throw new MatrixHttpError(400, "M_UNKNOWN", "Can't create an ACL event that denies the local server");
    } else if (type === "m.room.power_levels") {
      validatePowerLevelsSchema(content);
    }
    if (Object.hasOwn(content, "m.mentions")) validateMentions(content["m.mentions"]);
    this.validateRelation(room, sender, type, content);
  }

  /**
   * Synapse `persist_and_notify_client_events` for `m.room.canonical_alias`: a new `alias` and each new
   * `alt_aliases` entry must be an alias of this server that points to the room (`_validate_canonical_alias`:
   * 400 M_BAD_ALIAS). A remote alias counts as not found (no federation here).
   */
  private validateCanonicalAlias(room: Room, content: JsonObject, previous: JsonObject | undefined): void {
    const originalAlias = previous?.alias;
    const alias = content.alias;
    if (pyTruthy(alias) && canonicalJson(alias) !== canonicalJson(originalAlias ?? null)) {
      if (typeof alias !== "string") throw new MatrixHttpError(400, "M_INVALID_PARAM", "The alias must be of type string.");
      this.checkAliasPointsTo(alias, room.id);
    }
    const alt = Object.hasOwn(content, "alt_aliases") ? content.alt_aliases : [];
    if (!Array.isArray(alt)) throw new MatrixHttpError(400, "M_INVALID_PARAM", "The alt_aliases property must be a list.");
    const originalAlt = previous && Array.isArray(previous.alt_aliases) ? previous.alt_aliases : [];
    if (!alt.every(pyHashable) || !originalAlt.every(pyHashable)) throw internalError(); // set() of a list or dict
    const before = new Set(originalAlt.map((a) => canonicalJson(a)));
    const added = new Map<string, unknown>();
    for (const a of alt) if (!before.has(canonicalJson(a))) added.set(canonicalJson(a), a);
    for (const a of added.values()) {
      if (typeof a !== "string") throw new MatrixHttpError(400, "M_INVALID_PARAM", "Each alt_alias must be of type string.");
      this.checkAliasPointsTo(a, room.id);
    }
  }

  /** Synapse `_validate_canonical_alias` (with `RoomAlias.from_string`'s errors first). */
  private checkAliasPointsTo(alias: string, roomId: string): void {
    if (!parsesAsId(alias, "#")) throw idParseError(alias, "RoomAlias");
    const rec = domainOfId(alias) === this.serverName ? this.aliases.get(alias) : undefined;
    if (rec?.roomId !== roomId) throw new MatrixHttpError(400, "M_BAD_ALIAS", `Room alias ${alias} does not point to the room`);
  }

  // -------------------------------------------------------------------------------------------
  // End-to-end encryption: device keys, one-time and fallback keys, to-device messages, device
  // lists (Synapse `rest/client/keys.py`, `handlers/e2e_keys.py`, `rest/client/sendtodevice.py`,
  // `handlers/devicemessage.py`, the e2e and device-inbox stores).

  private deviceOfToken(token: string): DeviceState {
    const who = this.tokens.get(token)!;
    return this.devices.get(who.userId)!.get(who.deviceId)!;
  }

  /** Synapse `notify_device_update`: the user's device list changed now; long-polls of users sharing a room wake. */
  private noteDeviceListChange(userId: string): void {
    this.deviceListStream.set(userId, ++this.stream);
    this.wake();
  }

  /**
   * `POST /keys/upload`, as `KeyUploadServlet.on_POST` and `upload_keys_for_user`: the body through the
   * pydantic model (device keys field by field; one-time and fallback key names `<algorithm>:<id>`), the
   * device keys' `user_id`/`device_id` against the requester, then device keys (a change is a device-list
   * update), one-time keys (an id already held with another key is a 400), fallback keys (one per
   * algorithm; a different key is stored unused). Answers the device's one-time key counts.
   */
  private keysUpload(ctx: RequestContext): Reply {
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    const issues: PydanticIssue[] = [];
    if (Object.hasOwn(body, "device_keys")) {
      const dk = body.device_keys;
      if (dk === null) {
        issues.push({ loc: "device_keys", type: "value_error", input: dk, detail: "device_keys must not be null" });
      } else if (!isObject(dk)) {
        issues.push({ loc: "device_keys", type: "model_type", input: dk, detail: "DeviceKeys" });
      } else {
        const field = (name: string, check: (v: unknown) => PydanticIssue[]): void => {
          if (!Object.hasOwn(dk, name)) issues.push({ loc: `device_keys.${name}`, type: "missing", input: dk });
          else issues.push(...check(dk[name]));
        };
        const str = (loc: string) => (v: unknown): PydanticIssue[] => (typeof v === "string" ? [] : [{ loc, type: "string_type", input: v }]);
        const strMap = (loc: string, value: (l: string) => (v: unknown) => PydanticIssue[]) => (v: unknown): PydanticIssue[] => {
          if (!isObject(v)) return [{ loc, type: "dict_type", input: v }];
          return Object.entries(v).flatMap(([k, x]) => value(`${loc}.${k}`)(x));
        };
        field("algorithms", (v) =>
          Array.isArray(v) ? v.flatMap((x, i) => str(`device_keys.algorithms.${i}`)(x)) : [{ loc: "device_keys.algorithms", type: "list_type", input: v }],
        );
        field("device_id", str("device_keys.device_id"));
        field("keys", strMap("device_keys.keys", str));
        field("signatures", strMap("device_keys.signatures", (l) => strMap(l, str)));
        field("user_id", str("device_keys.user_id"));
      }
    }
    for (const name of ["fallback_keys", "one_time_keys"] as const) {
      const keys = body[name];
      if (keys === undefined || keys === null) continue;
      if (!isObject(keys)) throw internalError(); // the validator's TypeError is not a ValidationError
      for (const k of Object.keys(keys)) {
        if (k.split(":").length !== 2) {
          throw new MatrixHttpError(400, "M_BAD_JSON", `Invalid ${name} key ${pyStrRepr(k)}. Expected "<algorithm>:<device_id>".`);
        }
      }
      for (const [k, v] of Object.entries(keys)) {
        if (typeof v === "string") continue;
        const loc = `${name}.${k}`;
        if (!isObject(v)) {
          issues.push({ loc: `${loc}.str`, type: "string_type", input: v }, { loc: `${loc}.KeyObject`, type: "model_type", input: v, detail: "KeyObject" });
          continue;
        }
        const objectIssues: PydanticIssue[] = [];
        if (!Object.hasOwn(v, "key")) objectIssues.push({ loc: `${loc}.KeyObject.key`, type: "missing", input: v });
        else if (typeof v.key !== "string") objectIssues.push({ loc: `${loc}.KeyObject.key`, type: "string_type", input: v.key });
        if (Object.hasOwn(v, "fallback") && v.fallback !== null && typeof v.fallback !== "boolean") {
          objectIssues.push({ loc: `${loc}.KeyObject.fallback`, type: "bool_type", input: v.fallback });
        }
        if (!Object.hasOwn(v, "signatures")) {
          objectIssues.push({ loc: `${loc}.KeyObject.signatures`, type: "missing", input: v });
        } else if (!isObject(v.signatures)) {
          objectIssues.push({ loc: `${loc}.KeyObject.signatures`, type: "dict_type", input: v.signatures });
        } else {
          for (const [u, byKey] of Object.entries(v.signatures)) {
            if (!isObject(byKey)) objectIssues.push({ loc: `${loc}.KeyObject.signatures.${u}`, type: "dict_type", input: byKey });
            else for (const [kid, sig] of Object.entries(byKey)) if (typeof sig !== "string") objectIssues.push({ loc: `${loc}.KeyObject.signatures.${u}.${kid}`, type: "string_type", input: sig });
          }
        }
        if (objectIssues.length > 0) issues.push({ loc: `${loc}.str`, type: "string_type", input: v }, ...objectIssues);
      }
    }
    if (issues.length > 0) throw pydanticError("KeyUploadRequestBody", issues);

    const device = this.deviceOfToken(ctx.token);
    const dk = body.device_keys;
    if (isObject(dk)) {
      if (dk.user_id !== device.userId) {
        throw new MatrixHttpError(400, "M_BAD_JSON", "Provided `user_id` in `device_keys` does not match that of the authenticated user");
      }
      if (dk.device_id !== device.deviceId) {
        throw new MatrixHttpError(400, "M_BAD_JSON", "Provided `device_id` in `device_keys` does not match that of the authenticated user device");
      }
      // `set_e2e_device_keys` reports a change only when the canonical JSON differs.
      if (device.deviceKeys === undefined || canonicalJson(device.deviceKeys) !== canonicalJson(dk)) {
        device.deviceKeys = structuredClone(dk);
        this.noteDeviceListChange(device.userId);
      }
    }
    const otks = body.one_time_keys;
    if (isObject(otks) && Object.keys(otks).length > 0) {
      const fresh: [string, unknown][] = [];
      for (const [id, key] of Object.entries(otks)) {
        if (device.oneTimeKeys.has(id)) {
          const old = device.oneTimeKeys.get(id);
          if (!oneTimeKeysMatch(old, key)) {
            throw new MatrixHttpError(400, "M_UNKNOWN", `One time key ${id} already exists. Old key: ${canonicalJson(old)}; new key: ${pyRepr(key)}`);
          }
        } else {
          fresh.push([id, structuredClone(key)]);
        }
      }
      for (const [id, key] of fresh) device.oneTimeKeys.set(id, key);
    }
    const fallback = isObject(body.fallback_keys) && Object.keys(body.fallback_keys).length > 0 ? body.fallback_keys : body["org.matrix.msc2732.fallback_keys"];
    if (isObject(fallback)) {
      for (const [id, key] of Object.entries(fallback)) {
        const algorithm = id.slice(0, id.indexOf(":"));
        const old = device.fallbackKeys.get(algorithm);
        // The same key again keeps its `used` flag (`set_e2e_fallback_keys` compares the key JSON only).
        if (old === undefined || canonicalJson(old.key) !== canonicalJson(key)) {
          device.fallbackKeys.set(algorithm, { keyId: id.slice(id.indexOf(":") + 1), key: structuredClone(key), used: false });
        }
      }
    }
    return ok({ one_time_key_counts: oneTimeKeyCounts(device) });
  }

  /**
   * `POST /keys/query` (`KeyQueryServlet`, `query_devices`): `device_keys` must map user ids to lists of
   * device ids (empty: all). Every local user asked for gets an entry, holding the devices that have
   * uploaded keys, each with `unsigned: {}`. Remote servers are never reached (listed in `failures`).
   * No cross-signing keys are stored here.
   */
  private keysQuery(ctx: RequestContext): Reply {
    FakeHomeserver.intParam(ctx.query, "timeout", 10_000);
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    const query = body.device_keys;
    if (!isObject(query)) throw new MatrixHttpError(400, "M_BAD_JSON", "'device_keys' must be a JSON object");
    const lists = Object.values(query);
    if (lists.some((l) => !Array.isArray(l) || l.some((d) => typeof d !== "string"))) {
      throw new MatrixHttpError(400, "M_BAD_JSON", "'device_keys' values must be a list of strings");
    }
    const deviceKeys: Record<string, Record<string, JsonObject>> = {};
    const failures: Record<string, JsonObject> = {};
    for (const [userId, wanted] of Object.entries(query) as [string, string[]][]) {
      if (!parsesAsId(userId, "@")) throw idParseError(userId, "UserID");
      if (domainOfId(userId) !== this.serverName) {
        failures[domainOfId(userId)] = { status: 503, message: "Not ready for retry" };
        continue;
      }
      const out: Record<string, JsonObject> = {};
      deviceKeys[userId] = out;
      const mine = this.devices.get(userId);
      if (!mine) continue;
      const ids = wanted.length === 0 ? [...mine.keys()] : wanted;
      for (const id of ids) {
        const keys = mine.get(id)?.deviceKeys;
        if (keys !== undefined) out[id] = { ...structuredClone(keys), unsigned: {} };
      }
    }
    return ok({ device_keys: deviceKeys, failures, master_keys: {}, self_signing_keys: {}, user_signing_keys: {} });
  }

  /**
   * `POST /keys/claim` (`OneTimeKeyServlet`, `claim_one_time_keys`): one key per device and algorithm,
   * the oldest one-time key (removed), else the device's fallback key (kept, marked used). Devices with
   * neither are left out.
   */
  private keysClaim(ctx: RequestContext): Reply {
    FakeHomeserver.intParam(ctx.query, "timeout", 10_000);
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    const query = Object.hasOwn(body, "one_time_keys") ? body.one_time_keys : {};
    if (!isObject(query)) throw internalError(); // `.items()` of a non-dict
    const wanted: [string, string, unknown][] = [];
    for (const [userId, byDevice] of Object.entries(query)) {
      if (!isObject(byDevice)) throw internalError();
      for (const [deviceId, algorithm] of Object.entries(byDevice)) wanted.push([userId, deviceId, algorithm]);
    }
    const result: Record<string, Record<string, Record<string, unknown>>> = {};
    const failures: Record<string, JsonObject> = {};
    // `get_domain_from_id` splits local from remote before anything is claimed.
    for (const [userId] of wanted) if (!userId.includes(":")) throw new MatrixHttpError(400, "M_INVALID_PARAM", `Invalid ID: ${userId}`);
    for (const [userId, deviceId, algorithm] of wanted) {
      if (domainOfId(userId) !== this.serverName) {
        failures[domainOfId(userId)] = { status: 503, message: "Not ready for retry" };
        continue;
      }
      const device = this.devices.get(userId)?.get(deviceId);
      if (!device || typeof algorithm !== "string") continue;
      let claimed: [string, unknown] | undefined;
      for (const [id, key] of device.oneTimeKeys) {
        if (id.slice(0, id.indexOf(":")) === algorithm) {
          device.oneTimeKeys.delete(id);
          claimed = [id, key];
          break;
        }
      }
      if (!claimed) {
        const fb = device.fallbackKeys.get(algorithm);
        if (fb) {
          fb.used = true;
          claimed = [`${algorithm}:${fb.keyId}`, fb.key];
        }
      }
      if (!claimed) continue;
      ((result[userId] ??= {})[deviceId] ??= {})[claimed[0]] = structuredClone(claimed[1]);
    }
    return ok({ one_time_keys: result, failures });
  }

  /** `GET /keys/changes?from=&to=` (`KeyChangesServlet`): `to` is required by the spec but ignored, as Synapse does. */
  private keysChanges(ctx: RequestContext): Reply {
    const from = ctx.query.get("from");
    if (from === null) throw new MatrixHttpError(400, "M_MISSING_PARAM", "Missing string query parameter 'from'");
    return ok(this.deviceListChanges(ctx.user, this.parseStreamToken(from)));
  }

  /**
   * `PUT /sendToDevice/{eventType}/{txnId}` (`SendToDeviceRestServlet`, `send_device_message`):
   * idempotent per access token and path; `messages` maps user ids to device ids (or `*`, every device
   * of the user) to contents. Messages for unknown devices are dropped; remote users are not reached.
   */
  private sendToDevice(ctx: RequestContext): Reply {
    const [eventType] = ctx.params as [string, string];
    const txnKey = `${ctx.token}\u0000${ctx.path}`;
    const seen = this.txns.get(txnKey);
    if (seen) return seen;
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    if (!Object.hasOwn(body, "messages")) throw new MatrixHttpError(400, "M_MISSING_PARAM", "Missing params: ['messages']");
    const messages = body.messages;
    if (!isObject(messages)) throw internalError();
    const deliveries: [DeviceState, JsonObject][] = [];
    for (const [userId, byDevice] of Object.entries(messages)) {
      if (!isObject(byDevice) || Object.values(byDevice).some((c) => !isObject(c))) throw internalError();
      if (!parsesAsId(userId, "@")) throw idParseError(userId, "UserID");
      if (domainOfId(userId) !== this.serverName) continue;
      const mine = this.devices.get(userId);
      if (!mine) continue;
      for (const [deviceId, content] of Object.entries(byDevice)) {
        const targets = deviceId === "*" ? [...mine.values()] : [mine.get(deviceId)].filter((d) => d !== undefined);
        for (const d of targets) deliveries.push([d, { content: structuredClone(content), type: eventType, sender: ctx.user }]);
      }
    }
    if (deliveries.length > 0) {
      // One stream position for the whole request, as Synapse's `add_messages_to_device_inbox`.
      const stream = ++this.stream;
      for (const [d, event] of deliveries) d.inbox.push({ stream, event });
      this.wake();
    }
    const reply = ok({});
    this.txns.set(txnKey, reply);
    return reply;
  }

  /** `GET /capabilities` (Synapse `CapabilitiesRestServlet`, default config). */
  private capabilities(): Reply {
    const available = Object.fromEntries([...KNOWN_ROOM_VERSIONS].map((v) => [v, "stable"]));
    return ok({
      capabilities: {
        "m.room_versions": { default: CREATE_ROOM_DEFAULT_VERSION, available },
        "m.change_password": { enabled: true },
        "m.set_displayname": { enabled: true },
        "m.set_avatar_url": { enabled: true },
        "m.3pid_changes": { enabled: true },
        "m.get_login_token": { enabled: false },
      },
    });
  }

  /** `GET /room_keys/version`: no key backup is ever stored here (Synapse `get_version_info`). */
  private roomKeysVersion(): Reply {
    throw new MatrixHttpError(404, "M_NOT_FOUND", "No backup found");
  }

  /** Joined users of a room (creation-time memberships and later changes). */
  private joinedUsers(room: Room): string[] {
    const out: string[] = [];
    for (const [user, m] of room.base.map) if ((room.delta.get(user)?.membership ?? m) === "join") out.push(user);
    for (const [user, d] of room.delta) if (!room.base.map.has(user) && d.membership === "join") out.push(user);
    return out;
  }

  private sharesRoom(a: string, b: string): boolean {
    for (const room of this.rooms.values()) if (membershipOf(room, a) === "join" && membershipOf(room, b) === "join") return true;
    return false;
  }

  /**
   * `device_lists` of an incremental sync, as Synapse's `_generate_sync_entry_for_device_list`:
   * `changed` holds the user and the users sharing a room with them whose device list changed after
   * `since`, every member of a room the user joined since, and users who joined (or were invited to)
   * one of the user's rooms since; `left` holds users who no longer share any room, having left one
   * of the user's rooms or been in one the user left.
   */
  private deviceListChanges(user: string, since: number): { changed: string[]; left: string[] } {
    const changed = new Set<string>();
    const gone = new Set<string>();
    for (const [u, pos] of this.deviceListStream) {
      if (pos > since && (u === user || this.sharesRoom(user, u))) changed.add(u);
    }
    for (const room of this.rooms.values()) {
      const tl = room.timeline;
      const from = firstAfter(tl, since);
      if (from >= tl.length) continue;
      const wasJoined = this.membershipAt(room, user, since) === "join";
      const isJoined = membershipOf(room, user) === "join";
      if (isJoined && (!wasJoined || this.leftSince(room, user, since))) {
        for (const u of this.joinedUsers(room)) if (u !== user) changed.add(u);
        continue;
      }
      if (wasJoined && !isJoined) {
        for (const u of this.joinedUsers(room)) if (u !== user) gone.add(u);
        continue;
      }
      if (!isJoined) continue;
      const looked = new Set<string>();
      for (let i = from; i < tl.length; i++) {
        const ev = tl[i]!;
        const u = ev.stateKey;
        if (ev.type !== "m.room.member" || u === undefined || u === user || looked.has(u)) continue;
        looked.add(u);
        const before = this.membershipAt(room, u, since);
        const now = membershipOf(room, u);
        if (now === "join" || now === "invite" || now === "knock") {
          if (before !== now || this.leftSince(room, u, since)) changed.add(u);
        } else if (before === "join") {
          gone.add(u);
        }
      }
    }
    const left = [...gone].filter((u) => !changed.has(u) && !this.sharesRoom(user, u));
    return { changed: [...changed], left };
  }

  // -------------------------------------------------------------------------------------------
  // /sync (Synapse `SyncRestServlet` + `SyncHandler`).

  private async sync(ctx: RequestContext): Promise<Reply> {
    const q = ctx.query;
    if (q.has("from")) throw new MatrixHttpError(400, "M_UNKNOWN", "'from' is not a valid query parameter. Did you mean 'since'?");
    const timeout = FakeHomeserver.intParam(q, "timeout", 0);
    const sinceRaw = q.get("since");
    const presence = q.get("set_presence");
    if (presence !== null && presence !== "online" && presence !== "offline" && presence !== "unavailable") {
      throw new MatrixHttpError(400, "M_INVALID_PARAM", "Query parameter 'set_presence' must be one of ['online', 'offline', 'unavailable']");
    }
    const fullState = FakeHomeserver.boolParam(q, "full_state", false);
    const filter = this.resolveFilter(ctx.user, q.get("filter"));
    const since = sinceRaw === null ? undefined : this.parseStreamToken(sinceRaw);
    const request: SyncRequest = { user: ctx.user, token: ctx.token, since, fullState, filter };
    // Synapse `delete_messages_for_device`: a `since` acknowledges the to-device messages up to it.
    if (since !== undefined) {
      const inbox = this.deviceOfToken(ctx.token).inbox;
      const acknowledged = inbox.findIndex((m) => m.stream > since);
      inbox.splice(0, acknowledged < 0 ? inbox.length : acknowledged);
    }
    const first = this.buildSync(request);
    // Synapse answers at once without `since`, with full_state, with timeout 0, or when there is news.
    if (timeout === 0 || since === undefined || fullState || !first.empty || this.closed || ctx.signal.aborted) return ok(first.body);
    return await new Promise<Reply>((resolve) => {
      let answered = false;
      const answer = (body: JsonObject): void => {
        if (answered) return;
        answered = true;
        clearTimeout(timer);
        ctx.signal.removeEventListener("abort", onGone);
        this.syncWaiters.delete(waiter);
        resolve(ok(body));
      };
      const waiter: SyncWaiter = {
        user: ctx.user,
        check: () => {
          const result = this.buildSync(request);
          if (result.empty) return false;
          answer(result.body);
          return true;
        },
        finish: () => answer(this.buildSync(request).body),
      };
      const onGone = (): void => waiter.finish();
      const timer = setTimeout(() => waiter.finish(), Math.min(timeout, MAX_TIMER_MS));
      ctx.signal.addEventListener("abort", onGone);
      this.syncWaiters.add(waiter);
      for (const l of [...this.idleListeners]) if (l.user === ctx.user) l.resolve();
    });
  }

  /** Schedules a re-check of the pending long-polls (once per event-loop turn). */
  private wake(): void {
    if (this.syncWaiters.size === 0 || this.wakeScheduled || this.closed) return;
    this.wakeScheduled = true;
    setImmediate(() => this.flushWakes());
  }

  /** Answers every pending long-poll that now has something to deliver. */
  private flushWakes(): void {
    this.wakeScheduled = false;
    for (const w of [...this.syncWaiters]) w.check();
  }

  private static intParam(q: URLSearchParams, name: string, fallback: number): number {
    const raw = q.get(name);
    if (raw === null) return fallback;
    if (!/^\s*[+-]?\d+\s*$/.test(raw)) throw new MatrixHttpError(400, "M_INVALID_PARAM", `Query parameter ${name} must be an integer`);
    const value = Number.parseInt(raw, 10);
    if (value < 0) throw new MatrixHttpError(400, "M_INVALID_PARAM", `Query parameter ${name} must be a positive integer.`);
    return value;
  }

  private static boolParam(q: URLSearchParams, name: string, fallback: boolean): boolean {
    const raw = q.get(name);
    if (raw === null) return fallback;
    if (raw === "true") return true;
    if (raw === "false") return false;
    throw new MatrixHttpError(400, "M_INVALID_PARAM", `Boolean query parameter '${name}' must be one of ['true', 'false']`);
  }

  /** `s<stream>`; a position beyond the current one counts as now. */
  private parseStreamToken(raw: string): number {
    const m = /^s(\d{1,15})$/.exec(raw);
    if (!m) throw new MatrixHttpError(400, "M_INVALID_PARAM", "Invalid stream token");
    return Math.min(Number(m[1]), this.stream);
  }

  /** The `filter` query parameter: inline JSON (starts with `{`) or an uploaded filter's id. */
  private resolveFilter(user: string, raw: string | null): SyncFilter {
    if (raw === null) return DEFAULT_FILTER;
    if (raw.startsWith("{")) {
      let value: unknown;
      try {
        value = JSON.parse(raw);
      } catch {
        throw new MatrixHttpError(400, "M_NOT_JSON", "Invalid filter JSON");
      }
      if (!isObject(value)) throw new MatrixHttpError(400, "M_NOT_JSON", "Invalid filter JSON");
      validateFilter(value);
      capTimelineLimit(value);
      return parseFilter(value);
    }
    if (!/^\s*[+-]?\d+\s*$/.test(raw)) throw new MatrixHttpError(400, "M_INVALID_PARAM", "Invalid filter ID");
    const stored = this.filters.get(user)?.[Number.parseInt(raw, 10)];
    if (!stored) throw new MatrixHttpError(400, "M_INVALID_PARAM", "No such filter");
    return parseFilter(stored.json);
  }

  /** One sync answer; `empty` when there is nothing new (Synapse's `SyncResult.__bool__`). */
  private buildSync(r: SyncRequest): { body: JsonObject; empty: boolean } {
    const now = this.stream;
    const since = r.since === undefined ? undefined : Math.min(r.since, now);
    const f = r.filter;
    const fmt: EventFormat = { token: r.token, nowMs: Date.now(), fields: f.eventFields, withRoomId: f.federationFormat };
    const join: Record<string, JsonObject> = {};
    const invite: Record<string, JsonObject> = {};
    const leave: Record<string, JsonObject> = {};
    const knock: Record<string, JsonObject> = {};
    for (const room of this.rooms.values()) {
      const current = membershipOf(room, r.user);
      if (current === undefined || !roomAllowed(f, room.id)) continue;
      const memberStream = room.delta.get(r.user)?.stream ?? room.createdStream;
      if (current === "join") {
        // Fast path for a quiet room (long-polls re-check every room on every event).
        if (since !== undefined && !r.fullState && (room.timeline.at(-1)?.stream ?? 0) <= since && memberStream <= since) {
          const roomData = this.roomAccountData.get(r.user)?.get(room.id);
          if (!roomData || [...roomData.values()].every((rec) => rec.stream <= since)) continue;
        }
        // A room joined (or re-joined) since the token gets its full state and a limited timeline.
        const newlyJoined = since === undefined || this.membershipAt(room, r.user, since) !== "join" || this.leftSince(room, r.user, since);
        const section = this.roomSection(room, r, fmt, {
          upTo: now,
          from: newlyJoined ? undefined : since,
          previous: newlyJoined || r.fullState ? undefined : since,
          limited: newlyJoined && since !== undefined,
          always: newlyJoined || r.fullState,
          joined: true,
        });
        if (section) join[room.id] = section;
      } else if (current === "invite" || current === "knock") {
        if (since !== undefined && memberStream <= since) continue;
        const own = this.memberEntry(room, r.user);
        const events = this.strippedState(room);
        if (own) events.push(this.clientEvent(room, own, { ...fmt, fields: undefined }));
        if (current === "invite") invite[room.id] = { invite_state: { events } };
        else knock[room.id] = { knock_state: { events } };
      } else {
        // leave or ban: shown once, after it happened (on an initial sync only with include_leave).
        if (since === undefined ? !f.includeLeave : memberStream <= since) continue;
        if (since === undefined || this.membershipAt(room, r.user, since) === "join") {
          const section = this.roomSection(room, r, fmt, {
            upTo: memberStream,
            from: since,
            previous: r.fullState ? undefined : since,
            limited: false,
            always: true,
            joined: false,
          });
          if (section) leave[room.id] = section;
        } else {
          // Not joined before (an invite withdrawn or refused): only the membership event itself.
          const own = this.memberEntry(room, r.user);
          leave[room.id] = {
            timeline: { events: own ? [this.clientEvent(room, own, fmt)] : [], limited: false, prev_batch: `s${memberStream - 1}` },
            state: { events: [] },
            account_data: { events: [] },
          };
        }
      }
    }
    const accountSince = since === undefined || r.fullState ? undefined : since;
    const accountData = FakeHomeserver.accountDataEvents(this.accountData.get(r.user), accountSince, f.accountData, undefined);
    const rooms: JsonObject = { join, invite, leave };
    if (Object.keys(knock).length > 0) rooms.knock = knock;
    const device = this.deviceOfToken(r.token);
    const toDevice = device.inbox.filter((m) => m.stream <= now).map((m) => structuredClone(m.event));
    // Device lists only in an incremental sync (Synapse: none in an initial one).
    const deviceLists = since === undefined ? { changed: [], left: [] } : this.deviceListChanges(r.user, since);
    const unusedFallback = [...device.fallbackKeys].filter(([, k]) => !k.used).map(([algorithm]) => algorithm);
    const empty =
      accountData.length === 0 &&
      toDevice.length === 0 &&
      deviceLists.changed.length === 0 &&
      deviceLists.left.length === 0 &&
      [join, invite, leave, knock].every((m) => Object.keys(m).length === 0);
    return {
      empty,
      body: {
        next_batch: `s${now}`,
        rooms,
        account_data: { events: accountData },
        presence: { events: [] },
        to_device: { events: toDevice },
        device_lists: deviceLists,
        device_one_time_keys_count: oneTimeKeyCounts(device),
        "org.matrix.msc2732.device_unused_fallback_key_types": unusedFallback,
        device_unused_fallback_key_types: [...unusedFallback],
      },
    };
  }

  /**
   * A joined or left room's section: the timeline events in (`from`, `upTo`] that pass the filter
   * (the last `limit` of them), and the state as Synapse computes it — state at the start of the
   * timeline and at its end, minus what the client had at `previous`, minus what is in the timeline.
   * Undefined when there is nothing to say and `always` is false.
   */
  private roomSection(
    room: Room,
    r: SyncRequest,
    fmt: EventFormat,
    o: { upTo: number; from: number | undefined; previous: number | undefined; limited: boolean; always: boolean; joined: boolean },
  ): JsonObject | undefined {
    const f = r.filter;
    const tl = room.timeline;
    const hi = firstAfter(tl, o.upTo);
    const matching: TimelineEvent[] = [];
    for (let i = o.from === undefined ? 0 : firstAfter(tl, o.from); i < hi; i++) {
      const ev = tl[i]!;
      if (eventMatches(f.timeline, room.id, ev.type, ev.sender, ev.content)) matching.push(ev);
    }
    let events = matching;
    let limited = o.limited;
    if (matching.length > f.timeline.limit) {
      events = matching.slice(matching.length - f.timeline.limit);
      limited = true;
    }
    const blocksAll = f.timeline.types?.length === 0 || f.timeline.notTypes.includes("*") || f.timeline.senders?.length === 0 || f.timeline.notSenders.includes("*");
    if (blocksAll) limited = false;
    const startPos = events.length > 0 ? events[0]!.stream - 1 : o.upTo;
    const inTimeline = new Set(events.map((e) => e.eventId));
    const lazy = f.state.lazyLoadMembers ? new Set([r.user, ...events.map((e) => e.sender)]) : undefined;
    const state = this.stateDelta(room, startPos, o.upTo, o.previous, inTimeline, f.state, lazy);
    const accountData = FakeHomeserver.accountDataEvents(this.roomAccountData.get(r.user)?.get(room.id), o.previous, f.roomAccountData, room.id);
    if (!o.always && events.length === 0 && state.length === 0 && accountData.length === 0) return undefined;
    const section: JsonObject = {
      timeline: { events: events.map((ev) => this.clientEvent(room, ev, fmt)), limited, prev_batch: `s${startPos}` },
      state: { events: state.map((e) => this.clientEvent(room, e, fmt)) },
      account_data: { events: accountData },
    };
    if (o.joined) {
      section.ephemeral = { events: [] };
      section.unread_notifications = { highlight_count: 0, notification_count: 0 };
      section.summary = {};
    }
    return section;
  }

  /** Synapse `_calculate_state`: (state at timeline start ∪ state at end) − state at `previous` − timeline. */
  private stateDelta(
    room: Room,
    startPos: number,
    endPos: number,
    previous: number | undefined,
    exclude: ReadonlySet<string>,
    filter: EventFilter,
    lazy: ReadonlySet<string> | undefined,
  ): StateEntry[] {
    const baseAt = (pos: number): boolean => pos >= room.createdStream;
    const startOv = this.overlayAt(room, startPos);
    const endOv = this.overlayAt(room, endPos);
    const prevOv = previous === undefined ? undefined : this.overlayAt(room, previous);
    const prevBase = previous !== undefined && baseAt(previous);
    const memberPrefix = stateKeyOf("m.room.member", "");
    const entryAt = (ov: ReadonlyMap<string, TimelineEvent>, withBase: boolean, key: string): StateEntry | undefined => {
      const ev = ov.get(key);
      if (ev) return ev;
      if (!withBase || !key.startsWith(memberPrefix)) return undefined;
      const user = key.slice(memberPrefix.length);
      const membership = room.base.map.get(user);
      return membership === undefined ? undefined : { base: true, user, membership };
    };
    const same = (a: StateEntry, b: StateEntry): boolean =>
      isBaseEntry(a) ? isBaseEntry(b) && a.user === b.user : !isBaseEntry(b) && a.eventId === b.eventId;
    const out = new Map<string, StateEntry>();
    const consider = (key: string, entry: StateEntry | undefined): void => {
      if (!entry) return;
      if (!isBaseEntry(entry) && exclude.has(entry.eventId)) return;
      if (prevOv) {
        const before = entryAt(prevOv, prevBase, key);
        if (before && same(before, entry)) return;
      }
      const type = isBaseEntry(entry) ? "m.room.member" : entry.type;
      const stateKey = isBaseEntry(entry) ? entry.user : (entry.stateKey ?? "");
      if (lazy && type === "m.room.member" && !lazy.has(stateKey)) return;
      const sender = isBaseEntry(entry) ? baseSender(room, entry.user, entry.membership) : entry.sender;
      const content = isBaseEntry(entry) ? { membership: entry.membership } : entry.content;
      if (!eventMatches(filter, room.id, type, sender, content)) return;
      out.set(isBaseEntry(entry) ? `base\u0000${entry.user}` : entry.eventId, entry);
    };
    const keys = new Set([...startOv.keys(), ...endOv.keys()]);
    for (const key of keys) {
      consider(key, entryAt(startOv, baseAt(startPos), key));
      consider(key, entryAt(endOv, baseAt(endPos), key));
    }
    // Creation-time memberships nobody changed: the client has them if it saw the room at `previous`.
    if ((baseAt(startPos) || baseAt(endPos)) && !prevBase) {
      const users: Iterable<string> = lazy ? [...lazy].filter((u) => room.base.map.has(u)) : room.base.map.keys();
      for (const user of users) {
        const key = stateKeyOf("m.room.member", user);
        if (!keys.has(key)) consider(key, { base: true, user, membership: room.base.map.get(user)! });
      }
    }
    return [...out.values()];
  }

  /** The latest timeline state event per key at stream position `pos` (base memberships aside). */
  private overlayAt(room: Room, pos: number): Map<string, TimelineEvent> {
    const ov = new Map<string, TimelineEvent>();
    for (const ev of room.timeline) {
      if (ev.stream > pos) break;
      if (ev.stateKey !== undefined) ov.set(stateKeyOf(ev.type, ev.stateKey), ev);
    }
    return ov;
  }

  /** A user's membership at stream position `pos`. */
  private membershipAt(room: Room, user: string, pos: number): Membership | undefined {
    const tl = room.timeline;
    for (let i = firstAfter(tl, pos) - 1; i >= 0; i--) {
      const ev = tl[i]!;
      if (ev.type === "m.room.member" && ev.stateKey === user) return ev.content.membership as Membership;
    }
    return pos >= room.createdStream ? room.base.map.get(user) : undefined;
  }

  /** True when the user's membership was something other than join at some point after `pos`. */
  private leftSince(room: Room, user: string, pos: number): boolean {
    const tl = room.timeline;
    for (let i = firstAfter(tl, pos); i < tl.length; i++) {
      const ev = tl[i]!;
      if (ev.type === "m.room.member" && ev.stateKey === user && ev.content.membership !== "join") return true;
    }
    return false;
  }

  /** The user's current m.room.member event (a timeline event or a creation-time membership). */
  private memberEntry(room: Room, user: string): StateEntry | undefined {
    const d = room.delta.get(user);
    if (d) return this.eventIndex.get(d.eventId)?.ev;
    const membership = room.base.map.get(user);
    return membership === undefined ? undefined : { base: true, user, membership };
  }

  /** Stripped prejoin state for invite_state / knock_state. */
  private strippedState(room: Room): JsonObject[] {
    const out: JsonObject[] = [];
    for (const s of room.state.values()) {
      if (PREJOIN_STATE_TYPES.has(s.type)) out.push({ type: s.type, state_key: s.stateKey, content: s.content, sender: s.sender });
    }
    return out;
  }

  private static accountDataEvents(
    map: ReadonlyMap<string, AccountDataRecord> | undefined,
    since: number | undefined,
    filter: EventFilter,
    roomId: string | undefined,
  ): JsonObject[] {
    const out: JsonObject[] = [];
    for (const [type, rec] of map ?? []) {
      if (since !== undefined && rec.stream <= since) continue;
      if (!eventMatches(filter, roomId, type, undefined, rec.content)) continue;
      out.push({ type, content: rec.content });
    }
    return out;
  }

  private baseEventId(room: Room, user: string): string {
    const base = room.base;
    if (!base.index) {
      const index = new Map<string, number>();
      let i = 0;
      for (const u of base.map.keys()) index.set(u, i++);
      base.index = index;
    }
    return `$${room.tag}_m${(base.index.get(user) ?? 0).toString(36)}`;
  }

  /** Client format (Synapse `format_event_for_client_v2_without_room_id`). */
  private clientEvent(room: Room, entry: StateEntry, fmt: EventFormat): JsonObject {
    let event: JsonObject;
    if (isBaseEntry(entry)) {
      event = {
        type: "m.room.member",
        state_key: entry.user,
        content: { membership: entry.membership },
        sender: baseSender(room, entry.user, entry.membership),
        event_id: this.baseEventId(room, entry.user),
        origin_server_ts: room.createdTs,
        unsigned: { age: Math.max(0, fmt.nowMs - room.createdTs) },
      };
    } else {
      const unsigned: JsonObject = { age: Math.max(0, fmt.nowMs - entry.ts) };
      if (entry.txn && entry.txn.token === fmt.token) unsigned.transaction_id = entry.txn.id;
      const prev = entry.prev;
      if (entry.stateKey !== undefined && prev) {
        if ("baseMembership" in prev) {
          unsigned.prev_content = { membership: prev.baseMembership };
          unsigned.prev_sender = baseSender(room, entry.stateKey, prev.baseMembership);
          unsigned.replaces_state = this.baseEventId(room, entry.stateKey);
        } else {
          unsigned.prev_content = prev.content;
          unsigned.prev_sender = prev.sender;
          unsigned.replaces_state = prev.eventId;
        }
      }
      event = { type: entry.type, content: entry.content, sender: entry.sender, event_id: entry.eventId, origin_server_ts: entry.ts, unsigned };
      if (entry.stateKey !== undefined) event.state_key = entry.stateKey;
    }
    if (fmt.withRoomId) event.room_id = room.id;
    return fmt.fields ? onlyFields(event, fmt.fields) : event;
  }

  // -------------------------------------------------------------------------------------------
  // Filters, account data, profiles, events, receipts.

  /** Synapse's filter servlets: the path's user must be the requester, and local. */
  private checkFilterOwner(ctx: RequestContext, userId: string, verb: "create" | "get"): void {
    if (!isValidUserId(userId)) throw new MatrixHttpError(400, "M_INVALID_PARAM", "Invalid user id");
    if (userId !== ctx.user) throw forbidden(`Cannot ${verb} filters for other users`);
    if (userId.slice(userId.indexOf(":") + 1) !== this.serverName) throw forbidden(`Can only ${verb} filters for local users`);
  }

  private createFilter(ctx: RequestContext): Reply {
    this.checkFilterOwner(ctx, ctx.params[0]!, "create");
    const content = FakeHomeserver.jsonObject(ctx.rawBody);
    validateFilter(content);
    capTimelineLimit(content);
    const canonical = canonicalJson(content);
    let list = this.filters.get(ctx.user);
    if (!list) this.filters.set(ctx.user, (list = []));
    // Synapse returns the existing id for an identical filter.
    let id = list.findIndex((f) => f.canonical === canonical);
    if (id < 0) {
      id = list.length;
      list.push({ json: content, canonical });
    }
    return ok({ filter_id: String(id) });
  }

  private getFilter(ctx: RequestContext): Reply {
    const [userId, filterId] = ctx.params as [string, string];
    this.checkFilterOwner(ctx, userId, "get");
    if (!/^\s*[+-]?\d+\s*$/.test(filterId)) throw new MatrixHttpError(400, "M_UNKNOWN", "Invalid filter_id");
    const stored = this.filters.get(userId)?.[Number.parseInt(filterId, 10)];
    if (!stored) throw new MatrixHttpError(404, "M_NOT_FOUND", "No such filter");
    return ok(stored.json);
  }

  /** Params `[userId, roomId ("" for global), type]`. */
  private accountDataTarget(ctx: RequestContext, verb: "get" | "add"): { userId: string; roomId: string; type: string } {
    const [userId, roomId, type] = ctx.params as [string, string, string];
    if (userId !== ctx.user) throw forbidden(`Cannot ${verb} account data for other users.`);
    if (roomId !== "" && !isRoomIdShape(roomId)) throw new MatrixHttpError(400, "M_INVALID_PARAM", `${roomId} is not a valid room ID`);
    return { userId, roomId, type };
  }

  private getAccountData(ctx: RequestContext): Reply {
    const { userId, roomId, type } = this.accountDataTarget(ctx, "get");
    const rec = roomId === "" ? this.accountData.get(userId)?.get(type) : this.roomAccountData.get(userId)?.get(roomId)?.get(type);
    if (!rec) throw new MatrixHttpError(404, "M_NOT_FOUND", roomId === "" ? "Account data not found" : "Room account data not found");
    return ok(rec.content);
  }

  private putAccountData(ctx: RequestContext): Reply {
    const { userId, roomId, type } = this.accountDataTarget(ctx, "add");
    if (type === "m.fully_read") {
      throw new MatrixHttpError(405, "M_BAD_JSON", "Cannot set m.fully_read through this API. Use /rooms/!roomId:server.name/read_markers");
    }
    if (type === "m.push_rules") throw new MatrixHttpError(405, "M_BAD_JSON", "Cannot set m.push_rules through this API. Use /pushrules");
    const content = FakeHomeserver.jsonObject(ctx.rawBody);
    this.setAccountData(userId, roomId === "" ? undefined : roomId, type, content);
    return ok({});
  }

  private setAccountData(userId: string, roomId: string | undefined, type: string, content: JsonObject): void {
    const rec: AccountDataRecord = { content, stream: ++this.stream };
    if (roomId === undefined) {
      let map = this.accountData.get(userId);
      if (!map) this.accountData.set(userId, (map = new Map<string, AccountDataRecord>()));
      map.delete(type); // re-insert: iteration order follows the latest change
      map.set(type, rec);
    } else {
      let rooms = this.roomAccountData.get(userId);
      if (!rooms) this.roomAccountData.set(userId, (rooms = new Map<string, Map<string, AccountDataRecord>>()));
      let map = rooms.get(roomId);
      if (!map) rooms.set(roomId, (map = new Map<string, AccountDataRecord>()));
      map.delete(type);
      map.set(type, rec);
    }
    this.wake();
  }

  /** Params `[userId]` (whole profile) or `[userId, field]`. No auth needed (Synapse's default). */
  private getProfile(ctx: RequestContext): Reply {
    const [userId, field] = ctx.params as [string, string | undefined];
    if (!isValidUserId(userId)) throw new MatrixHttpError(400, "M_INVALID_PARAM", "Invalid user id");
    if (field === "") throw new MatrixHttpError(400, "M_INVALID_PARAM", "Field name too short");
    const profile = this.profiles.get(userId);
    if (!profile) throw new MatrixHttpError(404, "M_NOT_FOUND", "Profile was not found");
    if (field === undefined) return ok({ ...profile });
    if (field === "displayname" || field === "avatar_url") return ok({ [field]: profile[field] ?? null });
    throw new MatrixHttpError(404, "M_NOT_FOUND", "The requested profile key does not exist.");
  }

  /** PUT displayname / avatar_url; the change goes out to the user's joined rooms as member events. */
  private putProfileField(ctx: RequestContext): Reply {
    const [userId, field] = ctx.params as [string, string];
    if (!isValidUserId(userId)) throw new MatrixHttpError(400, "M_INVALID_PARAM", "Invalid user id");
    if (field !== "displayname" && field !== "avatar_url") throw new MatrixHttpError(404, "M_UNRECOGNIZED", "Unrecognized request");
    const content = FakeHomeserver.jsonObject(ctx.rawBody);
    if (!(field in content)) throw new MatrixHttpError(400, "M_MISSING_PARAM", `Missing key '${field}'`);
    const value = content[field];
    if (value === null) throw new MatrixHttpError(400, "M_INVALID_PARAM", `'${field}' can not be \`null\`.`);
    if (typeof value !== "string") throw new MatrixHttpError(400, "M_INVALID_PARAM", `'${field}' must be a string`);
    if (userId.slice(userId.indexOf(":") + 1) !== this.serverName) throw new MatrixHttpError(400, "M_UNKNOWN", "User is not hosted on this homeserver");
    if (userId !== ctx.user) throw new MatrixHttpError(400, "M_FORBIDDEN", `Cannot set another user's ${field}`);
    if (field === "displayname" && value.length > 256) throw new MatrixHttpError(400, "M_BAD_JSON", "Displayname is too long (max 256)");
    const profile = { ...this.profiles.get(userId) };
    if (value === "") delete profile[field];
    else profile[field] = value;
    this.profiles.set(userId, profile);
    for (const room of this.rooms.values()) {
      if (membershipOf(room, userId) !== "join") continue;
      const memberContent: JsonObject = { ...(room.delta.get(userId)?.content ?? {}), membership: "join" };
      if (value === "") delete memberContent[field];
      else memberContent[field] = value;
      this.putMember(room, userId, "join", userId, memberContent);
    }
    return ok({});
  }

  private getEvent(ctx: RequestContext): Reply {
    const [roomId, eventId] = ctx.params as [string, string];
    const room = this.roomForReader(ctx, roomId);
    const found = this.eventIndex.get(eventId);
    if (!found || found.room !== room) throw new MatrixHttpError(404, "M_NOT_FOUND", "Event not found.");
    return ok(this.clientEvent(room, found.ev, { token: ctx.token, nowMs: Date.now(), fields: undefined, withRoomId: true }));
  }

  private postReceipt(ctx: RequestContext): Reply {
    const [roomId, receiptType, eventId] = ctx.params as [string, string, string];
    if (!isRoomIdShape(roomId) || !eventId.startsWith("$")) throw new MatrixHttpError(400, "M_UNKNOWN", "A valid room ID and event ID must be specified");
    if (receiptType !== "m.read" && receiptType !== "m.read.private" && receiptType !== "m.fully_read") {
      throw new MatrixHttpError(400, "M_UNKNOWN", "Receipt type must be m.read, m.read.private, m.fully_read");
    }
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    if ("thread_id" in body) {
      if (typeof body.thread_id !== "string" || body.thread_id === "") {
        throw new MatrixHttpError(400, "M_INVALID_PARAM", "thread_id field must be a non-empty string");
      }
      if (receiptType === "m.fully_read") throw new MatrixHttpError(400, "M_INVALID_PARAM", "thread_id is not compatible with m.fully_read receipts.");
    }
    const room = this.rooms.get(roomId);
    if (room) {
      if (receiptType === "m.fully_read") {
        this.setAccountData(ctx.user, roomId, "m.fully_read", { event_id: eventId });
      } else {
        let mine = room.receipts.get(ctx.user);
        if (!mine) room.receipts.set(ctx.user, (mine = new Map<string, string>()));
        mine.set(receiptType, eventId);
      }
    }
    return ok({});
  }

  private sendEndpoint(ctx: RequestContext): Reply {
    const [roomId, type, txnId] = ctx.params as [string, string, string | undefined];
    // Transactions are idempotent per access token and request path.
    const txnKey = txnId === undefined ? undefined : `${ctx.token}\u0000${ctx.path}`;
    if (txnKey !== undefined) {
      const seen = this.txns.get(txnKey);
      if (seen) return seen;
    }
    const content = FakeHomeserver.jsonObject(ctx.rawBody);
    const room = this.rooms.get(roomId);
    if (!room) throw new MatrixHttpError(404, "M_NOT_FOUND", `Could not find room_version for ${roomId}`);
    if (room.versionNumber >= 6) assertCanonicalJson(ctx.rawBody, content);
    const ev = this.newEvent(room, ctx.user, type, content, txnId === undefined ? undefined : { token: ctx.token, id: txnId });
    room.sent.push({ type, sender: ctx.user, content });
    const reply = ok({ event_id: ev.eventId });
    if (txnKey !== undefined) this.txns.set(txnKey, reply);
    return reply;
  }

  /**
   * `PUT /rooms/{roomId}/redact/{eventId}/{txnId}` as Synapse does it: idempotent per
   * transaction; the sender must have joined; redacting someone else's event needs the room's
   * `redact` level. The target's content is stripped (a reaction loses its relation, so the
   * same key may be sent again) and an `m.room.redaction` event joins the timeline.
   */
  private redactEndpoint(ctx: RequestContext): Reply {
    const [roomId, eventId] = ctx.params as [string, string, string];
    const txnKey = `${ctx.token}\u0000${ctx.path}`;
    const seen = this.txns.get(txnKey);
    if (seen) return seen;
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    const room = this.rooms.get(roomId);
    if (!room) throw new MatrixHttpError(404, "M_NOT_FOUND", `Could not find room_version for ${roomId}`);
    if (membershipOf(room, ctx.user) !== "join") throw forbidden(`User ${ctx.user} not in room ${room.id}`);
    const target = this.eventIndex.get(eventId);
    if (target !== undefined && target.room === room && target.ev.sender !== ctx.user) {
      const needed = namedLevel(room, "redact", 50);
      const have = userLevel(room, ctx.user);
      if (have < needed) throw forbidden(`You don't have permission to redact events`);
    }
    const content: JsonObject = { redacts: eventId, ...(typeof body["reason"] === "string" ? { reason: body["reason"] } : {}) };
    const ev = this.appendEvent(room, { type: "m.room.redaction", sender: ctx.user, content });
    if (target !== undefined && target.room === room && target.ev.stateKey === undefined) {
      const relation = relationOf(target.ev.content);
      if (relation?.relType === "m.annotation" && relation.key !== undefined) {
        this.annotations.delete(`${relation.parent}\u0000${target.ev.type}\u0000${relation.key}\u0000${target.ev.sender}`);
      }
      const stripped: TimelineEvent = { ...target.ev, content: {} };
      const at = room.timeline.indexOf(target.ev);
      if (at >= 0) room.timeline[at] = stripped;
      this.eventIndex.set(eventId, { room, ev: stripped });
    }
    const reply = ok({ event_id: ev.eventId });
    this.txns.set(txnKey, reply);
    return reply;
  }

  /**
   * A new non-state event, checked in Synapse's order — content validation and relations (400),
   * size limits (413), then event auth: membership and send level (403) — and stored.
   */
  private newEvent(room: Room, sender: string, type: string, content: JsonObject, txn?: TimelineEvent["txn"]): TimelineEvent {
    if (type === "m.room.message") {
      for (const key of ["body", "msgtype"]) {
        if (!(key in content)) throw new MatrixHttpError(400, "M_UNKNOWN", `'${key}' not in content`);
        if (typeof content[key] !== "string") throw new MatrixHttpError(400, "M_UNKNOWN", `'${key}' not a string type`);
      }
    }
    this.validateRelation(room, sender, type, content);
    this.checkSizeLimits(room, sender, type, content, undefined);
    if (membershipOf(room, sender) !== "join") throw forbidden(`User ${sender} not in room ${room.id}`);
    const needed = sendLevel(room, type, false);
    const have = userLevel(room, sender);
    if (have < needed) {
      throw forbidden(`You don't have permission to post that to the room. user_level (${have}) < send_level (${needed})`);
    }
    return this.appendEvent(room, { type, sender, content, ...(txn ? { txn } : {}) });
  }

  /** Synapse `_validate_event_relation`. */
  private validateRelation(room: Room, sender: string, type: string, content: JsonObject): void {
    const relation = relationOf(content);
    if (!relation) return;
    const parent = this.eventIndex.get(relation.parent);
    if (parent) {
      if (parent.room !== room) throw new MatrixHttpError(400, "M_UNKNOWN", "Relations must be in the same room");
    } else if (!this.relationTargets.has(relation.parent)) {
      throw new MatrixHttpError(400, "M_UNKNOWN", "Can't send relation to unknown event");
    }
    if (relation.relType === "m.annotation") {
      if (relation.key === undefined) throw new MatrixHttpError(400, "M_UNKNOWN", "Missing aggregation key");
      if (relation.key.length > 500) throw new MatrixHttpError(400, "M_UNKNOWN", "Aggregation key is too long");
      if (this.annotations.has(`${relation.parent}\u0000${type}\u0000${relation.key}\u0000${sender}`)) {
        throw new MatrixHttpError(400, "M_DUPLICATE_ANNOTATION", "Can't send same reaction twice");
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Synapse admin API: registration tokens. Each handler first asserts a server admin (Synapse
  // `assert_requester_is_admin`), then parses, in the order of `registration_tokens.py`.

  private requireServerAdmin(ctx: RequestContext): void {
    if (!this.admins.has(ctx.user)) throw forbidden("You are not a server admin");
  }

  private noSuchRegistrationToken(token: string): MatrixHttpError {
    return new MatrixHttpError(404, "M_NOT_FOUND", `No such registration token: ${token}`);
  }

  private listRegistrationTokens(ctx: RequestContext): Reply {
    this.requireServerAdmin(ctx);
    const raw = ctx.query.get("valid");
    let valid: boolean | undefined;
    if (raw !== null) {
      if (raw === "true") valid = true;
      else if (raw === "false") valid = false;
      else throw invalidParam("Boolean query parameter 'valid' must be one of ['true', 'false']");
    }
    const now = this.clock();
    const out: RegistrationTokenInfo[] = [];
    for (const t of this.regTokens.values()) if (valid === undefined || isListedValid(t, now) === valid) out.push(tokenInfo(t));
    return ok({ registration_tokens: out });
  }

  private newRegistrationToken(ctx: RequestContext): Reply {
    this.requireServerAdmin(ctx);
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    const sources = memberSources(ctx.rawBody);
    let token: string;
    if (Object.hasOwn(body, "token")) {
      const t = body.token;
      if (typeof t !== "string") throw invalidParam("token must be a string");
      const length = [...t].length; // Python len(): code points
      if (!(length > 0 && length <= 64)) throw invalidParam("token must not be empty and must not be longer than 64 characters");
      // Synapse's message names a narrower regex than the characters it accepts ([A-Za-z0-9._~-]).
      if (!REG_TOKEN_CHARS.test(t)) throw invalidParam("token must consist only of characters matched by the regex [A-Za-z0-9-_]");
      token = t;
    } else {
      const length = Object.hasOwn(body, "length") ? body.length : 16;
      if (!isPyInt(length, sources.get("length"))) throw invalidParam("length must be an integer");
      if (!(length > 0 && length <= 64)) throw invalidParam("length must be greater than zero and not greater than 64");
      token = this.generateRegistrationToken(length);
    }
    const usesAllowed = Object.hasOwn(body, "uses_allowed") ? parseUsesAllowed(body.uses_allowed, sources.get("uses_allowed")) : null;
    const expiryTime = Object.hasOwn(body, "expiry_time") ? parseExpiryTime(body.expiry_time, sources.get("expiry_time"), this.clock()) : null;
    if (this.regTokens.has(token)) throw invalidParam(`Token already exists: ${token}`);
    assertFitsColumns({ uses_allowed: usesAllowed, expiry_time: expiryTime }, sources);
    const row: RegistrationTokenRow = { token, uses_allowed: usesAllowed, pending: 0, completed: 0, expiry_time: expiryTime };
    this.regTokens.set(token, row);
    return ok(tokenInfo(row));
  }

  /** Synapse `generate_registration_token`: three tries at a random unused token, then a 500. */
  private generateRegistrationToken(length: number): string {
    for (let attempt = 0; attempt < 3; attempt++) {
      let token = "";
      for (let i = 0; i < length; i++) token += REG_TOKEN_ALPHABET[randomInt(REG_TOKEN_ALPHABET.length)];
      if (!this.regTokens.has(token)) return token;
    }
    throw new MatrixHttpError(500, "M_UNKNOWN", "Unable to generate a unique registration token. Try again with a greater length");
  }

  private getRegistrationToken(ctx: RequestContext): Reply {
    this.requireServerAdmin(ctx);
    const token = ctx.params[0]!;
    const row = this.regTokens.get(token);
    if (!row) throw this.noSuchRegistrationToken(token);
    return ok(tokenInfo(row));
  }

  private putRegistrationToken(ctx: RequestContext): Reply {
    this.requireServerAdmin(ctx);
    const token = ctx.params[0]!;
    const body = FakeHomeserver.jsonObject(ctx.rawBody);
    const sources = memberSources(ctx.rawBody);
    const updates: { uses_allowed?: number | null; expiry_time?: number | null } = {};
    if (Object.hasOwn(body, "uses_allowed")) updates.uses_allowed = parseUsesAllowed(body.uses_allowed, sources.get("uses_allowed"));
    if (Object.hasOwn(body, "expiry_time")) updates.expiry_time = parseExpiryTime(body.expiry_time, sources.get("expiry_time"), this.clock());
    // The UPDATE fails on out-of-range values whether or not the row exists.
    assertFitsColumns(updates, sources);
    const row = this.regTokens.get(token);
    if (!row) throw this.noSuchRegistrationToken(token);
    if (updates.uses_allowed !== undefined) row.uses_allowed = updates.uses_allowed;
    if (updates.expiry_time !== undefined) row.expiry_time = updates.expiry_time;
    return ok(tokenInfo(row));
  }

  private deleteRegistrationToken(ctx: RequestContext): Reply {
    this.requireServerAdmin(ctx);
    const token = ctx.params[0]!;
    if (!this.regTokens.delete(token)) throw this.noSuchRegistrationToken(token);
    return ok({});
  }

  /**
   * Synapse `_check_size_limits` (EventSizeError: 413 M_TOO_LARGE "<field> too large"). The event is
   * measured as the canonical JSON of a PDU with hashes, signatures and auth/prev events of the
   * usual length.
   */
  private checkSizeLimits(room: Room, sender: string, type: string, content: JsonObject, stateKey: string | undefined): void {
    const tooBig = (field: string): MatrixHttpError => new MatrixHttpError(413, "M_TOO_LARGE", `${field} too large`);
    if (sender.length > 255) throw tooBig("user_id");
    if (room.id.length > 255) throw tooBig("room_id");
    if (stateKey !== undefined && stateKey.length > 255) throw tooBig("state_key");
    if (type.length > 255) throw tooBig("type");
    const eventId = (c: string): string => `$${c.repeat(43)}`;
    const now = Date.now();
    const pdu: JsonObject = {
      auth_events: [eventId("a"), eventId("b"), eventId("c")],
      content,
      depth: 100,
      hashes: { sha256: "h".repeat(43) },
      origin_server_ts: now,
      prev_events: [eventId("p")],
      room_id: room.id,
      sender,
      signatures: { [this.serverName]: { "ed25519:a_AAAA": "s".repeat(86) } },
      type,
      unsigned: { age_ts: now },
    };
    if (stateKey !== undefined) pdu.state_key = stateKey;
    if (Buffer.byteLength(canonicalJson(pdu), "utf8") > MAX_PDU_SIZE) throw tooBig("event");
  }
}
