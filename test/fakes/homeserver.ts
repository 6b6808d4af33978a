/**
 * A test homeserver ("stand-in") speaking the Matrix Client-Server API over real HTTP.
 *
 * Rule: it is kind to no one. It rejects what a real Synapse rejects, with the same status and
 * errcode, and accepts what Synapse accepts. The membership and power-level checks follow the
 * room-version auth rules and Synapse's membership handler (`room_member.py`, `event_auth.py`),
 * in Synapse's order: request validation (400) → membership handler checks → event auth (403).
 *
 * Known simplifications (documented, deliberate):
 * - A user whose membership is not `join` cannot read `/state`, `/state/{type}/{key}` or `/members`
 *   (Synapse would give a departed user the state at the moment they left).
 * - No federation: remote users can be invited (as on Synapse) but nothing is sent anywhere.
 * - `/sync` is minimal: `{next_batch, rooms:{join:{}, invite:{}, leave:{}}}`. Every stored event gets
 *   a stream position (`this.stream`) so that a later version can compute deltas.
 *
 * Scale: memberships given at room creation are kept in a shared, read-only base map (rooms created
 * from the same Map/object share it); each room keeps only its own changes in a small overlay map.
 * Member events are generated when served, and `/state` is serialised straight to a JSON string.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
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
  | "sync"
  | "versions"
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
  "sync",
  "versions",
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
}

export interface AppliedChange {
  readonly kind: string;
  readonly roomId: string;
  readonly sender: string;
  readonly target?: string;
  readonly content?: Record<string, unknown>;
}

export interface SentEvent {
  readonly type: string;
  readonly sender: string;
  readonly content: Record<string, unknown>;
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

function joinRuleOf(room: Room): string {
  const rule = room.state.get(stateKeyOf("m.room.join_rules", ""))?.content.join_rule;
  return typeof rule === "string" ? rule : "invite";
}

const TOP_LEVEL_LEVELS = ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"] as const;

/** Synapse's POWER_LEVELS_SCHEMA (EventValidator.validate_new): 400 M_BAD_JSON. */
function validatePowerLevelsSchema(content: JsonObject): void {
  const checkInt = (path: string, v: unknown): void => {
    if (typeof v !== "number" || !Number.isInteger(v)) {
      throw new MatrixHttpError(400, "M_BAD_JSON", `"${path}": ${JSON.stringify(v)} is not of type 'integer'`);
    }
    if (v > MAX_SAFE) throw new MatrixHttpError(400, "M_BAD_JSON", `"${path}": ${v} is greater than the maximum of ${MAX_SAFE}`);
    if (v < -MAX_SAFE) throw new MatrixHttpError(400, "M_BAD_JSON", `"${path}": ${v} is less than the minimum of ${-MAX_SAFE}`);
  };
  for (const key of TOP_LEVEL_LEVELS) if (key in content) checkInt(key, content[key]);
  for (const key of ["users", "events", "notifications"]) {
    if (!(key in content)) continue;
    const v = content[key];
    if (!isObject(v)) throw new MatrixHttpError(400, "M_BAD_JSON", `"${key}": ${JSON.stringify(v)} is not of type 'object'`);
    for (const [k, level] of Object.entries(v)) checkInt(k, level);
  }
}

/** `users` keys must be user ids (Synapse `_check_power_levels`: SynapseError 400, errcode M_UNKNOWN). */
function validatePowerLevelUsers(room: Room, content: JsonObject): void {
  const users = isObject(content.users) ? content.users : {};
  for (const key of Object.keys(users)) {
    if (!isValidUserId(key)) throw new MatrixHttpError(400, "M_UNKNOWN", `Not a valid user_id: ${key}`);
  }
  // MSC4289 (room v12): creators must not appear in `users`. Synapse: 400 M_UNKNOWN.
  for (const creator of room.creators) {
    if (Object.hasOwn(users, creator)) {
      throw new MatrixHttpError(400, "M_UNKNOWN", `Creator user ${creator} must not appear in content.users`);
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
    const where = dir === "" ? key : `${dir}.${key}`;
    if (dir === "users" && key !== sender && oldLevel === senderLevel) {
      throw forbidden(`You don't have permission to remove ops level equal to your own (${where})`);
    }
    if ((oldLevel !== undefined && oldLevel > senderLevel) || (newLevel !== undefined && newLevel > senderLevel)) {
      throw forbidden(`You don't have permission to add ops level greater than your own (${where})`);
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

// ---------------------------------------------------------------------------------------------
// Routing.

type Method = "GET" | "PUT" | "POST";

interface Route {
  readonly kind: EndpointKind;
  readonly auth: boolean;
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
}

/** A JSON reply; `raw` is an already-serialised JSON body. */
interface Reply {
  readonly status: number;
  readonly body?: unknown;
  readonly raw?: string;
}

const ok = (body: unknown): Reply => ({ status: 200, body });

interface RateLimitRule {
  remaining: number;
  readonly retryAfterMs: number;
  readonly endpoints: ReadonlySet<EndpointKind> | undefined;
  readonly header: boolean;
  readonly body: boolean;
}

interface FailRule {
  readonly endpoint: EndpointKind;
  remaining: number;
  readonly status: number;
  readonly body: unknown;
}

const MEMBER_CONTENT: Record<Membership, string> = {
  join: `,"content":{"membership":"join"},"sender":`,
  invite: `,"content":{"membership":"invite"},"sender":`,
  leave: `,"content":{"membership":"leave"},"sender":`,
  ban: `,"content":{"membership":"ban"},"sender":`,
  knock: `,"content":{"membership":"knock"},"sender":`,
};

export class FakeHomeserver {
  readonly url: string;
  readonly serverName: string;

  private readonly server: Server;
  private readonly tokens = new Map<string, { userId: string; deviceId: string }>();
  private readonly rooms = new Map<string, Room>();
  private readonly aliases = new Map<string, string>();
  private readonly baseCache = new WeakMap<object, BaseMembers>();
  private readonly txns = new Map<string, Reply>();
  private readonly changes: AppliedChange[] = [];
  private counts: Record<EndpointKind, number> = FakeHomeserver.zeroCounts();
  private total = 0;
  private rateRules: RateLimitRule[] = [];
  private failRules: FailRule[] = [];
  /** Stream position: incremented for every stored event (ready for an incremental /sync). */
  private stream = 0;

  private constructor(server: Server, serverName: string) {
    this.server = server;
    this.serverName = serverName;
    const address = server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${address.port}`;
  }

  static async start(opts: { serverName?: string } = {}): Promise<FakeHomeserver> {
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
    const hs = new FakeHomeserver(server, serverName);
    server.on("request", (req, res) => {
      hs.handle(req, res).catch((err: unknown) => {
        // Last resort: never leave a request hanging.
        console.error("FakeHomeserver: unhandled error", err);
        if (!res.headersSent) FakeHomeserver.send(res, 500, { errcode: "M_UNKNOWN", error: "Internal server error" });
      });
    });
    return hs;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // -------------------------------------------------------------------------------------------
  // Test helpers.

  registerUser(userId: string, accessToken?: string): string {
    if (!isValidUserId(userId)) throw new Error(`registerUser: invalid user id ${userId}`);
    const token = accessToken ?? `syt_${randomBytes(18).toString("base64url")}`;
    if (this.tokens.has(token)) throw new Error("registerUser: access token already in use");
    this.tokens.set(token, { userId, deviceId: randomLetters(10).toUpperCase() });
    return token;
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
    const room: Room = {
      id,
      version,
      versionNumber,
      creator: opts.creator,
      creators,
      createdTs: Date.now(),
      tag: randomBytes(9).toString("base64url"),
      base: this.baseFor(opts.members),
      delta: new Map(),
      state: new Map(),
      sent: [],
      eventSeq: 0,
    };

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
          : {
              users: versionNumber >= 12 ? {} : { [opts.creator]: 100 },
              users_default: 0,
              events: {},
              events_default: 0,
              state_default: 50,
              ban: 50,
              kick: 50,
              redact: 50,
              invite: 0,
            };
      validateInitialPowerLevels(room, content);
      this.putState(room, "m.room.power_levels", "", content, opts.creator);
    }
    this.putState(room, "m.room.join_rules", "", { join_rule: opts.joinRule ?? "invite" }, opts.creator);
    if (opts.alias !== undefined) {
      this.putState(room, "m.room.canonical_alias", "", { alias: opts.alias }, opts.creator);
      this.aliases.set(opts.alias, id);
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

  rateLimit(opts: { count: number; retryAfterMs: number; endpoints?: EndpointKind[]; header?: boolean; body?: boolean }): void {
    this.rateRules.push({
      remaining: opts.count,
      retryAfterMs: opts.retryAfterMs,
      endpoints: opts.endpoints ? new Set(opts.endpoints) : undefined,
      header: opts.header ?? true,
      body: opts.body ?? true,
    });
  }

  failNext(endpoint: EndpointKind, count: number, status = 500, body: unknown = { errcode: "M_UNKNOWN", error: "Internal server error" }): void {
    this.failRules.push({ endpoint, remaining: count, status, body });
  }

  requestCounts(): Record<EndpointKind, number> {
    return { ...this.counts };
  }

  totalRequests(): number {
    return this.total;
  }

  resetCounts(): void {
    this.counts = FakeHomeserver.zeroCounts();
    this.total = 0;
  }

  appliedChanges(): ReadonlyArray<AppliedChange> {
    return [...this.changes];
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

  private nextEventId(room: Room): string {
    return `$${room.tag}_e${(room.eventSeq++).toString(36)}`;
  }

  private putState(room: Room, type: string, stateKey: string, content: JsonObject, sender: string, eventId?: string): StateRecord {
    const record: StateRecord = {
      type,
      stateKey,
      content,
      sender,
      eventId: eventId ?? this.nextEventId(room),
      ts: Date.now(),
      stream: ++this.stream,
    };
    room.state.set(stateKeyOf(type, stateKey), record);
    return record;
  }

  private putMember(room: Room, user: string, membership: Membership, sender: string, content: JsonObject): MemberRecord {
    const record: MemberRecord = { membership, sender, content, eventId: this.nextEventId(room), ts: Date.now(), stream: ++this.stream };
    room.delta.set(user, record);
    return record;
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

    // Injected faults come first: the request is not processed at all.
    const fail = this.failRules.find((r) => r.remaining > 0 && r.endpoint === kind);
    if (fail) {
      fail.remaining--;
      FakeHomeserver.send(res, fail.status, fail.body);
      return;
    }
    const limit = this.rateRules.find((r) => r.remaining > 0 && (r.endpoints === undefined || r.endpoints.has(kind)));
    if (limit) {
      limit.remaining--;
      const body: JsonObject = { errcode: "M_LIMIT_EXCEEDED", error: "Too Many Requests" };
      if (limit.body) body.retry_after_ms = limit.retryAfterMs;
      const headers: Record<string, string> = limit.header ? { "Retry-After": String(Math.ceil(limit.retryAfterMs / 1000)) } : {};
      FakeHomeserver.send(res, 429, body, headers);
      return;
    }

    if (method === "OPTIONS") {
      res.writeHead(204, { "Access-Control-Allow-Origin": "*" });
      res.end();
      return;
    }
    try {
      if (error) throw error;
      if (!matched) throw new MatrixHttpError(404, "M_UNRECOGNIZED", "Unrecognized request");
      const ctx: RequestContext = { method, path: url.pathname, params: matched.params, query: url.searchParams, rawBody, user: "", token: "" };
      if (matched.route.auth) this.authenticate(req, url.searchParams, ctx);
      const reply = await matched.route.handler(ctx);
      FakeHomeserver.send(res, reply.status, reply.body, {}, reply.raw);
    } catch (err) {
      if (err instanceof MatrixHttpError) {
        FakeHomeserver.send(res, err.status, { errcode: err.errcode, error: err.message, ...err.extra });
        return;
      }
      console.error("FakeHomeserver: internal error", err);
      FakeHomeserver.send(res, 500, { errcode: "M_UNKNOWN", error: "Internal server error" });
    }
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
    const prefix = "/_matrix/client/v3/";
    if (!pathname.startsWith(prefix)) return undefined;
    let segs: string[];
    try {
      segs = pathname.slice(prefix.length).split("/").map(decodeURIComponent);
    } catch {
      throw new MatrixHttpError(400, "M_UNRECOGNIZED", "Invalid percent-encoding in path");
    }
    const [a, b, c, d, e] = segs;
    const n = segs.length;
    if (n === 2 && a === "account" && b === "whoami") {
      return this.pick(method, { GET: { kind: "whoami", auth: true, handler: (ctx) => this.whoami(ctx) } }, []);
    }
    if (n === 3 && a === "directory" && b === "room") {
      return this.pick(method, { GET: { kind: "directory", auth: false, handler: (ctx) => this.directory(ctx) } }, [c!]);
    }
    if (n === 1 && a === "joined_rooms") {
      return this.pick(method, { GET: { kind: "joined_rooms", auth: true, handler: (ctx) => this.joinedRooms(ctx) } }, []);
    }
    if (n === 1 && a === "sync") {
      return this.pick(method, { GET: { kind: "sync", auth: true, handler: (ctx) => this.sync(ctx) } }, []);
    }
    if (n === 2 && a === "join") {
      return this.pick(method, { POST: { kind: "join", auth: true, handler: (ctx) => this.joinByIdOrAlias(ctx) } }, [b!]);
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
    if (c === "send" && n === 5) {
      return this.pick(method, { PUT: { kind: "send", auth: true, handler: (ctx) => this.sendEndpoint(ctx) } }, [roomId, d!, e!]);
    }
    if (c === "send" && n === 4) {
      return this.pick(method, { POST: { kind: "send", auth: true, handler: (ctx) => this.sendEndpoint(ctx) } }, [roomId, d!]);
    }
    return undefined;
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

  private whoami(ctx: RequestContext): Reply {
    const who = this.tokens.get(ctx.token)!;
    return ok({ user_id: who.userId, device_id: who.deviceId, is_guest: false });
  }

  private directory(ctx: RequestContext): Reply {
    const alias = ctx.params[0]!;
    if (!isValidAlias(alias)) throw new MatrixHttpError(400, "M_INVALID_PARAM", "Room alias invalid");
    const roomId = this.aliases.get(alias);
    if (roomId === undefined) throw new MatrixHttpError(404, "M_NOT_FOUND", `Room alias ${alias} not found`);
    return ok({ room_id: roomId, servers: [this.serverName] });
  }

  private joinedRooms(ctx: RequestContext): Reply {
    const joined: string[] = [];
    for (const room of this.rooms.values()) if (membershipOf(room, ctx.user) === "join") joined.push(room.id);
    return ok({ joined_rooms: joined });
  }

  private sync(_ctx: RequestContext): Reply {
    return ok({ next_batch: `s${this.stream}`, rooms: { join: {}, invite: {}, leave: {} } });
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
      roomId = found;
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

    // Event auth (room-version rules).
    const caller = membershipOf(room, sender);
    const callerInRoom = caller === "join";
    const callerInvited = caller === "invite";
    const callerKnocked = room.versionNumber >= 7 && caller === "knock";
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
      if (!selfLeaveAllowed && !callerInRoom) throw forbidden(`${sender} not in room ${roomId}.`);
    }
    switch (membership) {
      case "invite":
        if (targetBanned) throw forbidden(`${target} is banned from the room`);
        if (targetInRoom) throw forbidden(`${target} is already in the room.`);
        if (senderLevel < inviteLevel) throw forbidden("You don't have permission to invite users");
        break;
      case "join":
        if (sender !== target) throw forbidden("Cannot force another user to join.");
        if (targetBanned) throw forbidden("You are banned from this room");
        if (joinRule === "public") break;
        if (["invite", "knock", "restricted", "knock_restricted"].includes(joinRule)) {
          // Restricted rooms: the allow rules (space membership) are not modelled; invited or joined only.
          if (!callerInRoom && !callerInvited) throw forbidden("You are not invited to this room.");
          break;
        }
        throw forbidden("You are not allowed to join this room");
      case "leave":
        if (targetBanned && senderLevel < banLevel) throw forbidden(`You cannot unban user ${target}.`);
        if (!targetBanned && target !== sender) {
          const kickLevel = namedLevel(room, "kick", 50);
          if (senderLevel < kickLevel || senderLevel <= targetLevel) throw forbidden(`You cannot kick user ${target}.`);
        }
        break;
      case "ban":
        if (senderLevel < banLevel) throw forbidden("You don't have permission to ban");
        if (senderLevel <= targetLevel) throw forbidden("You don't have permission to ban this user");
        break;
      case "knock":
        if (room.versionNumber < 7) throw new MatrixHttpError(400, "M_UNKNOWN", "Invalid membership key");
        if (joinRule !== "knock" && !(room.versionNumber >= 10 && joinRule === "knock_restricted")) {
          throw forbidden("You don't have permission to knock");
        }
        if (target !== sender) throw forbidden("You cannot knock for other users");
        if (targetInRoom) throw forbidden("You cannot knock on a room you are already in");
        if (callerInvited) throw forbidden("You are already invited to this room");
        if (targetBanned) throw forbidden("You are banned from this room");
        break;
    }

    const eventContent: JsonObject = { ...content, membership };
    const record = this.putMember(room, target, membership, sender, eventContent);
    const kind = action === "kick" || action === "unban" ? action : membership === "leave" && target !== sender ? "kick" : membership;
    this.changes.push({ kind, roomId, sender, target, content: structuredClone(eventContent) });
    return record.eventId;
  }

  private putStateEndpoint(ctx: RequestContext): Reply {
    const [roomId, type, stateKey] = ctx.params as [string, string, string];
    const content = FakeHomeserver.jsonObject(ctx.rawBody);
    if (type === "m.room.member") {
      if (!isValidUserId(stateKey)) throw new MatrixHttpError(400, "M_INVALID_PARAM", `Invalid user id: ${stateKey}`);
      const membership = content.membership;
      if (typeof membership !== "string") throw new MatrixHttpError(400, "M_UNKNOWN", "Invalid membership key");
      return ok({ event_id: this.updateMembership(roomId, ctx.user, stateKey, membership, content) });
    }
    const room = this.rooms.get(roomId);
    if (!room) throw new MatrixHttpError(404, "M_NOT_FOUND", `Could not find room_version for ${roomId}`);
    // EventValidator.validate_new
    if (room.versionNumber >= 6) assertCanonicalJson(ctx.rawBody, content);
    if (type === "m.room.power_levels") validatePowerLevelsSchema(content);
    // Synapse deduplicates an identical state event from the same sender (before auth).
    const prev = room.state.get(stateKeyOf(type, stateKey));
    if (prev && prev.sender === ctx.user && canonicalJson(prev.content) === canonicalJson(content)) return ok({ event_id: prev.eventId });
    if (type === "m.room.create") throw forbidden("Changing the room create event is forbidden");

    // Event auth.
    if (membershipOf(room, ctx.user) !== "join") throw forbidden(`User ${ctx.user} not in room ${roomId}`);
    const needed = sendLevel(room, type, true);
    const have = userLevel(room, ctx.user);
    if (have < needed) {
      throw forbidden(`You don't have permission to post that to the room. user_level (${have}) < send_level (${needed})`);
    }
    if (stateKey.startsWith("@") && stateKey !== ctx.user) throw forbidden("You are not allowed to set others state");
    if (type === "m.room.power_levels") {
      validatePowerLevelUsers(room, content);
      if (stateKey === "") checkPowerLevelsChange(room, ctx.user, content);
    }

    const record = this.putState(room, type, stateKey, content, ctx.user);
    this.changes.push({
      kind: type === "m.room.power_levels" && stateKey === "" ? "power_levels" : "state",
      roomId,
      sender: ctx.user,
      content: structuredClone(content),
    });
    return ok({ event_id: record.eventId });
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
    if (type === "m.room.message") {
      for (const key of ["body", "msgtype"]) {
        if (!(key in content)) throw new MatrixHttpError(400, "M_UNKNOWN", `'${key}' not in content`);
        if (typeof content[key] !== "string") throw new MatrixHttpError(400, "M_UNKNOWN", `'${key}' not a string type`);
      }
    }
    if (membershipOf(room, ctx.user) !== "join") throw forbidden(`User ${ctx.user} not in room ${roomId}`);
    const needed = sendLevel(room, type, false);
    const have = userLevel(room, ctx.user);
    if (have < needed) {
      throw forbidden(`You don't have permission to post that to the room. user_level (${have}) < send_level (${needed})`);
    }
    room.sent.push({ type, sender: ctx.user, content });
    this.stream++;
    const reply = ok({ event_id: this.nextEventId(room) });
    if (txnKey !== undefined) this.txns.set(txnKey, reply);
    return reply;
  }
}
