/**
 * Reading a room's power levels exactly as the auth rules of its room version do. Pure.
 *
 * - A level is an integer in canonical JSON's range (±(2^53−1)). In room versions 1–9 it may
 *   also be a string of an integer (Synapse reads `"100"` as 100); from version 10 only
 *   integers are valid. We accept canonical integer strings only (`"100"`, `"-5"`; not
 *   `" 100"`, `"+100"`, `"1e2"`, `"100.0"`).
 * - Anything else — a float, `"Infinity"`, `null`, a value out of range, `users` or `events`
 *   that is not an object — means the room cannot be judged: we do
 *   not know who is above whom, so the planner changes nothing there and reports which entry
 *   is wrong. A missing field takes the spec's default.
 * - Room version 12 (and `org.matrix.hydra.11`): the creators have infinite power.
 * - No power levels event: the creator has 100 (before v12), everyone else 0.
 */
import { parseUserId } from "../matrix/ids.ts";
import type { ObservedRoom, PowerLevelsContent } from "./types.ts";

/** Spec defaults for a room that has a power levels event without these fields. */
const DEFAULTS = {
  users_default: 0,
  events_default: 0,
  state_default: 50,
  ban: 50,
  kick: 50,
  redact: 50,
  invite: 0,
} as const;
type TopLevelKey = keyof typeof DEFAULTS;
const TOP_LEVEL_KEYS = Object.keys(DEFAULTS) as TopLevelKey[];

/** With no power levels event at all: the create sender has 100, everyone else 0, state_default 0. */
const NO_PL_CREATOR_LEVEL = 100;
const MAX_LEVEL = Number.MAX_SAFE_INTEGER;
const CANONICAL_INTEGER = /^(?:0|-?[1-9][0-9]*)$/;

export type LevelKind = "kick" | "invite" | "power_levels";

/** The view of a room's power levels the rules need, every value decoded. */
export interface RoomLevels {
  /** The decoded `users` entries of user ids (keys that are not user ids are left out). */
  readonly users: Readonly<Record<string, number>>;
  readonly usersDefault: number;
  readonly creators: ReadonlySet<string>;
  /** A user's effective level: Infinity for a v12 creator. */
  of(user: string): number;
  hasEntry(user: string): boolean;
  /** The level needed to kick, invite, or send `m.room.power_levels`. */
  required(kind: LevelKind): number;
  /** The level needed to send a state event of this type (`events[type]`, else `state_default`). */
  stateLevel(type: string): number;
  /**
   * The current content with every level as a number (string levels of v1–9 rooms made
   * integers, as Synapse itself requires of a new event) and everything else preserved.
   */
  readonly content: PowerLevelsContent;
}

export type LevelsReading = { readonly ok: true; readonly levels: RoomLevels } | { readonly ok: false; readonly problems: readonly string[] };

/** Room versions 12 and later (and the v12 preview) give creators infinite power and forbid them in `users`. */
export function hasCreatorPower(roomVersion: string): boolean {
  if (/^(?:0|[1-9][0-9]*)$/.test(roomVersion)) return Number(roomVersion) >= 12;
  return roomVersion === "org.matrix.hydra.11";
}

/** Room versions from which a join rule exists (numbered versions; later named ones have them all). */
export const JOIN_RULE_SINCE: Readonly<Record<string, number>> = { knock: 7, restricted: 8, knock_restricted: 10 };

/** A numbered room version as a number; a named one (a later preview) counts as newer than all. */
export function roomVersionNumber(version: string): number {
  return /^[1-9][0-9]*$/.test(version) ? Number(version) : Number.POSITIVE_INFINITY;
}

/** Whether this room version allows levels given as strings of integers (versions 1–9). */
export function allowsStringLevels(roomVersion: string): boolean {
  if (!CANONICAL_INTEGER.test(roomVersion)) return false;
  const n = Number(roomVersion);
  return n >= 1 && n <= 9;
}

/** One level value under the room version's rules, or why it is not one. */
export function decodeLevel(value: unknown, roomVersion: string): { ok: true; level: number } | { ok: false; why: string } {
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return { ok: false, why: "not a finite number" };
    if (!Number.isInteger(value)) return { ok: false, why: "not an integer" };
    if (Math.abs(value) > MAX_LEVEL) return { ok: false, why: "outside the range of levels (±(2^53−1))" };
    return { ok: true, level: value };
  }
  if (typeof value === "string") {
    if (!allowsStringLevels(roomVersion)) return { ok: false, why: `a string; room version ${roomVersion} allows integers only` };
    if (!CANONICAL_INTEGER.test(value)) return { ok: false, why: "a string that is not an integer" };
    const n = Number(value);
    if (Math.abs(n) > MAX_LEVEL) return { ok: false, why: "outside the range of levels (±(2^53−1))" };
    return { ok: true, level: n };
  }
  return { ok: false, why: value === null ? "null" : `of type ${Array.isArray(value) ? "array" : typeof value}` };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const text = typeof v === "string" ? JSON.stringify(v) : typeof v === "number" ? String(v) : (JSON.stringify(v) ?? String(v));
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/** Decodes the power levels of an observed room; any invalid entry makes the room unjudgeable. */
export function readLevels(observed: ObservedRoom): LevelsReading {
  // State the decoder could not account for (no create event, conflicting duplicates) makes
  // the levels unknowable too: every caller gets one answer.
  if (observed.problems !== undefined && observed.problems.length > 0) return { ok: false, problems: observed.problems };
  const creators = new Set<string>(observed.creators);
  const raw = observed.powerLevels;
  if (raw === undefined) {
    // No power levels event: the creator has 100 (before v12; v12 creators are infinite and
    // must never be written into `users`).
    const users: Record<string, number> = {};
    if (observed.createSender && observed.creators.length === 0) users[observed.createSender] = NO_PL_CREATOR_LEVEL;
    return {
      ok: true,
      levels: makeLevels(users, 0, creators, { kick: DEFAULTS.kick, invite: 0, power_levels: 0 }, { users: { ...users } }, {}, 0),
    };
  }

  const version = observed.roomVersion;
  const problems: string[] = [];
  const normalized: Record<string, unknown> = { ...raw };
  const top: Record<TopLevelKey, number> = { ...DEFAULTS };
  for (const key of TOP_LEVEL_KEYS) {
    if (!Object.hasOwn(raw, key)) continue;
    const d = decodeLevel(raw[key], version);
    if (d.ok) {
      top[key] = d.level;
      normalized[key] = d.level;
    } else {
      problems.push(`power levels: ${key} is ${show(raw[key])} (${d.why})`);
    }
  }

  // The common case — every entry an integer, every key a user id — shares the event's own
  // object: a room of 10,000 members is not copied to be read.
  let users: Record<string, number> = {};
  if (Object.hasOwn(raw, "users")) {
    const rawUsers = raw["users"];
    if (!isObject(rawUsers)) {
      problems.push(`power levels: users is ${show(rawUsers)}, not an object`);
    } else {
      let clean = true;
      for (const user in rawUsers) {
        const value = rawUsers[user];
        if (typeof value === "number" && Number.isInteger(value) && Math.abs(value) <= MAX_LEVEL && parseUserId(user) !== undefined) continue;
        clean = false;
        break;
      }
      if (clean) {
        users = rawUsers as Record<string, number>;
      } else {
        const out: Record<string, unknown> = {};
        for (const [user, value] of Object.entries(rawUsers)) {
          if (parseUserId(user) === undefined) {
            // Not a user we could manage: kept in the content as it is, never judged or named.
            out[user] = value;
            continue;
          }
          const d = decodeLevel(value, version);
          if (d.ok) {
            users[user] = d.level;
            out[user] = d.level;
          } else {
            problems.push(`power levels: users[${show(user)}] is ${show(value)} (${d.why})`);
          }
        }
        normalized["users"] = out;
      }
    }
  }

  let powerLevelsEvent: number | undefined;
  const events: Record<string, number> = {};
  for (const dir of ["events", "notifications"] as const) {
    if (!Object.hasOwn(raw, dir)) continue;
    const map = raw[dir];
    if (!isObject(map)) {
      problems.push(`power levels: ${dir} is ${show(map)}, not an object`);
      continue;
    }
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(map)) {
      const d = decodeLevel(value, version);
      if (d.ok) {
        out[key] = d.level;
        if (dir === "events") events[key] = d.level;
        if (dir === "events" && key === "m.room.power_levels") powerLevelsEvent = d.level;
      } else {
        problems.push(`power levels: ${dir}[${show(key)}] is ${show(value)} (${d.why})`);
      }
    }
    normalized[dir] = out;
  }

  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    levels: makeLevels(
      users,
      top.users_default,
      creators,
      { kick: top.kick, invite: top.invite, power_levels: powerLevelsEvent ?? top.state_default },
      normalized,
      events,
      top.state_default,
    ),
  };
}

function makeLevels(
  users: Readonly<Record<string, number>>,
  usersDefault: number,
  creators: ReadonlySet<string>,
  required: Readonly<Record<LevelKind, number>>,
  content: PowerLevelsContent,
  events: Readonly<Record<string, number>>,
  stateDefault: number,
): RoomLevels {
  return {
    users,
    usersDefault,
    creators,
    content,
    of: (user) => (creators.has(user) ? Infinity : Object.hasOwn(users, user) ? (users[user] as number) : usersDefault),
    hasEntry: (user) => Object.hasOwn(users, user),
    required: (kind) => required[kind],
    stateLevel: (type) => (Object.hasOwn(events, type) ? (events[type] as number) : stateDefault),
  };
}
