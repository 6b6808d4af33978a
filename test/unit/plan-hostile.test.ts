/**
 * Property tests over hostile room states: random `/state` answers (levels of every JSON type,
 * strings of integers in old and new room versions, memberships that are not memberships,
 * state keys that are not user ids, duplicated events, missing or duplicated power levels and
 * create events, v12 creators) go through the real decoder and the planner. Whatever comes in:
 *
 * - the plan never kicks, and never lowers or changes the level of, a user whose effective
 *   level under Synapse's reading of the room is at or above the bot's;
 * - it never names anything but a valid user id;
 * - a room that cannot be judged (an invalid level for its room version, no create event, two
 *   different events for one state key) gets no action at all, and an error.
 *
 * The oracle below reads levels the way Synapse does (Python `int()` of v1-9 strings, creators
 * in v12), written from the spec and Synapse's documented behaviour, not from levels.ts.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseUserId, type RoomId, type UserId } from "../../src/matrix/ids.ts";
import { decodeRoomState } from "../../src/matrix/room-state.ts";
import { planRoom } from "../../src/reconcile/plan.ts";
import type { DesiredMember, Policy, RoomPlan } from "../../src/reconcile/types.ts";

const RUNS = 2000;
const ROOM = "!hostile:example.org" as RoomId;
const BOT = "@bot:example.org" as UserId;
const USERS = ["@a:example.org", "@b:example.org", "@c:example.org", "@d:example.org", "@x:other.net", BOT] as const;
const JUNK_KEYS = ["", "bot", "@nocolon", "@:example.org", "@a:exa mple.org", "#room:example.org", "!room:example.org", "@a:b:c"];

// ---------------------------------------------------------------------------------------------
// The oracle: Synapse's reading of the state

interface RawEvent {
  type: string;
  state_key: string;
  sender: string;
  content: Record<string, unknown>;
}

const pyIntString = /^\s*[+-]?(?:\d+(?:_\d+)*)\s*$/;

/** Python `int(v)` as Synapse applies it to a stored level; undefined where Python would raise. */
function pyInt(v: unknown): number | undefined {
  if (typeof v === "number") return Number.isInteger(v) ? v : undefined;
  if (typeof v === "string" && pyIntString.test(v)) return Number(v.trim().replaceAll("_", ""));
  return undefined;
}

/** The same level under the strictest reading any room version has: an integer, or in v1-9 a plain decimal string. */
function strictLevel(v: unknown, version: string): boolean {
  const maxSafe = 2 ** 53 - 1;
  if (typeof v === "number") return Number.isInteger(v) && Math.abs(v) <= maxSafe;
  if (typeof v !== "string") return false;
  const n = Number.parseInt(v, 10);
  const old = /^[1-9]$/.test(version);
  return old && String(n) === v && Math.abs(n) <= maxSafe;
}

interface Oracle {
  /** False when the state is not one a correct homeserver could hold, or a level is invalid. */
  readonly judgeable: boolean;
  /** Effective level of a user, as Synapse computes it (Infinity for v12 creators). */
  level(user: string): number;
}

function oracle(events: readonly RawEvent[]): Oracle {
  const byKey = new Map<string, RawEvent[]>();
  for (const e of events) {
    const k = `${e.type}|${e.state_key}`;
    byKey.set(k, [...(byKey.get(k) ?? []), e]);
  }
  let judgeable = true;
  for (const [k, list] of byKey) {
    const relevant = k.startsWith("m.room.power_levels|") || k.startsWith("m.room.create|") || k.startsWith("m.room.member|");
    if (relevant && new Set(list.map((e) => JSON.stringify([e.content, e.type === "m.room.create" ? e.sender : ""]))).size > 1) {
      // Only a conflict the decoder can see: member events count when their membership is readable.
      if (!k.startsWith("m.room.member|")) judgeable = false;
      else {
        const ms = new Set(list.map((e) => e.content["membership"]).filter((m) => typeof m === "string" && ["join", "invite", "leave", "ban", "knock"].includes(m)));
        if (ms.size > 1 && parseUserId(list[0]!.state_key) !== undefined) judgeable = false;
      }
    }
  }
  const create = byKey.get("m.room.create|")?.[0];
  const pl = byKey.get("m.room.power_levels|")?.[0]?.content;
  if (create === undefined) judgeable = false;
  const rawVersion = create?.content["room_version"];
  const version = rawVersion === undefined ? "1" : typeof rawVersion === "string" ? rawVersion : "";
  if (!/^[1-9][0-9]*$/.test(version) && version !== "org.matrix.hydra.11") judgeable = false;
  const v12 = version === "org.matrix.hydra.11" || (/^[0-9]+$/.test(version) && Number(version) >= 12);
  const creators = new Set<string>();
  if (v12 && create) {
    creators.add(create.sender);
    const extra = create.content["additional_creators"];
    if (extra !== undefined) {
      if (!Array.isArray(extra) || extra.some((x) => typeof x !== "string" || parseUserId(x) === undefined)) judgeable = false;
      else for (const x of extra as string[]) creators.add(x);
    }
  }
  if (create && parseUserId(create.sender) === undefined) judgeable = false;
  if (pl) {
    for (const key of ["users_default", "events_default", "state_default", "ban", "kick", "redact", "invite"]) {
      if (Object.hasOwn(pl, key) && !strictLevel(pl[key], version)) judgeable = false;
    }
    for (const dir of ["users", "events", "notifications"]) {
      if (!Object.hasOwn(pl, dir)) continue;
      const map = pl[dir];
      if (typeof map !== "object" || map === null || Array.isArray(map)) {
        judgeable = false;
        continue;
      }
      for (const [key, value] of Object.entries(map)) {
        if (dir === "users" && parseUserId(key) === undefined) continue; // not a user: never judged
        if (!strictLevel(value, version)) judgeable = false;
      }
    }
  }
  return {
    judgeable,
    level(user) {
      if (creators.has(user)) return Infinity;
      if (!pl) return create && user === create.sender ? 100 : 0;
      const users = (typeof pl["users"] === "object" && pl["users"] !== null ? pl["users"] : {}) as Record<string, unknown>;
      const own = Object.hasOwn(users, user) ? pyInt(users[user]) : undefined;
      if (own !== undefined) return own;
      return pyInt(pl["users_default"]) ?? 0;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Generators

const levelValue = fc.oneof(
  { weight: 30, arbitrary: fc.constantFrom(0, 10, 50, 75, 99, 100, 101, -1) },
  { weight: 6, arbitrary: fc.constantFrom("0", "50", "100", "101", "-1") },
  {
    weight: 1,
    arbitrary: fc.constantFrom<unknown>(" 100", "+100", "1_00", "100.0", "1e2", "Infinity", "NaN", "", "abc", 50.5, 1e300, -1e300, 2 ** 53, null, true, false, [], {}, [100], { level: 100 }),
  },
);
const userKey = fc.oneof({ weight: 6, arbitrary: fc.constantFrom<string>(...USERS) }, { weight: 1, arbitrary: fc.constantFrom(...JUNK_KEYS) });
const membershipValue = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom<unknown>("join", "join", "invite", "leave", "ban", "knock") },
  { weight: 1, arbitrary: fc.constantFrom<unknown>("JOIN", "joined", "", null, 1, ["join"], { membership: "join" }) },
);
const versionValue = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom<unknown>("1", "5", "9", "10", "11", "12", "org.matrix.hydra.11") },
  { weight: 1, arbitrary: fc.constantFrom<unknown>(undefined, 12, "", "12.0", "v9", "99999", null) },
);

const plContent = fc.record(
  {
    users: fc.oneof(
      { weight: 9, arbitrary: fc.dictionary(userKey, levelValue, { maxKeys: 7 }) },
      { weight: 1, arbitrary: fc.constantFrom<unknown>(null, [], "users", 100) },
    ),
    users_default: levelValue,
    kick: levelValue,
    invite: levelValue,
    state_default: levelValue,
    events: fc.oneof(
      { weight: 9, arbitrary: fc.record({ "m.room.power_levels": levelValue, "m.room.name": levelValue }, { requiredKeys: [] }) },
      { weight: 1, arbitrary: fc.constantFrom<unknown>(null, [], 5) },
    ),
  },
  { requiredKeys: [] },
);

const stateArb = fc
  .record({
    create: fc.oneof(
      { weight: 8, arbitrary: fc.constant(1) },
      { weight: 1, arbitrary: fc.constantFrom(0, 2) },
    ),
    version: versionValue,
    creator: fc.oneof({ weight: 4, arbitrary: fc.constantFrom<string>(BOT, ...USERS) }, { weight: 1, arbitrary: fc.constantFrom("", "bot") }),
    additional: fc.option(fc.oneof(fc.subarray([...USERS]), fc.constantFrom<unknown>("@a:example.org", [1], ["nope"])), { nil: undefined }),
    pl: fc.oneof({ weight: 1, arbitrary: fc.constant([]) }, { weight: 8, arbitrary: fc.array(plContent, { minLength: 1, maxLength: 1 }) }, { weight: 1, arbitrary: fc.array(plContent, { minLength: 2, maxLength: 2 }) }),
    members: fc.array(fc.tuple(userKey, membershipValue), { maxLength: 10 }),
    botMember: fc.oneof({ weight: 8, arbitrary: fc.constant<unknown>("join") }, { weight: 1, arbitrary: membershipValue }),
    duplicateMember: fc.boolean(),
    junk: fc.array(fc.constantFrom<unknown>(null, 1, "x", { type: "m.room.member" }, { type: "m.room.power_levels", state_key: "", content: [] }), { maxLength: 2 }),
  })
  .map((g) => {
    const events: RawEvent[] = [];
    for (let i = 0; i < g.create; i++) {
      const content: Record<string, unknown> = {};
      if (g.version !== undefined) content["room_version"] = i === 0 ? g.version : "1";
      if (g.additional !== undefined) content["additional_creators"] = g.additional;
      events.push({ type: "m.room.create", state_key: "", sender: g.creator, content });
    }
    for (const content of g.pl) events.push({ type: "m.room.power_levels", state_key: "", sender: BOT, content: content });
    events.push({ type: "m.room.member", state_key: BOT, sender: BOT, content: { membership: g.botMember } });
    for (const [key, membership] of g.members) {
      events.push({ type: "m.room.member", state_key: key, sender: key, content: { membership } });
    }
    if (g.duplicateMember && g.members.length > 0) {
      const [key] = g.members[0]!;
      events.push({ type: "m.room.member", state_key: key, sender: key, content: { membership: "leave" } });
    }
    return { events, raw: [...events, ...g.junk] as unknown[] };
  });

const desiredArb = fc.dictionary(fc.constantFrom<string>(...USERS), fc.constantFrom(0, 50, 100), { maxKeys: 5 });
const policyArb = fc.record({ kick: fc.boolean(), incomplete: fc.boolean() });

function policyOf(kick: boolean): Policy {
  return { bot: BOT, managedDomains: ["example.org"], kick, kickReason: "not in a mapped group", ignoreUsers: [], maxRemovals: {} };
}

function planFor(raw: unknown[], desired: Record<string, number>, kick: boolean, incomplete: boolean): RoomPlan | string {
  const decoded = decodeRoomState(ROOM, raw);
  if (!decoded.ok) return decoded.error.message;
  const members: DesiredMember[] = Object.entries(desired).map(([user, level]) => ({
    user: user as UserId,
    level,
    role: level === 100 ? "admin" : level === 50 ? "moderator" : "member",
    via: ["g"],
  }));
  return planRoom(
    { room: "#hostile:example.org", members, incompleteGroups: incomplete ? ["g-broken"] : [], notes: [] },
    decoded.value,
    { externals: [], held: [], released: [] },
    policyOf(kick),
  );
}

// ---------------------------------------------------------------------------------------------

describe("planner under hostile room states", () => {
  it("never kicks or changes the level of a user at or above the bot's level (Synapse's reading)", () => {
    fc.assert(
      fc.property(stateArb, desiredArb, policyArb, (state, desired, p) => {
        const plan = planFor(state.raw, desired, p.kick, p.incomplete);
        if (typeof plan === "string") return;
        const o = oracle(state.events);
        const bot = o.level(BOT);
        for (const action of plan.actions) {
          if (action.kind === "kick") {
            expect(o.level(action.user), `kick of ${action.user}`).toBeLessThan(bot);
          }
          if (action.kind === "set-power-levels") {
            for (const c of action.changes) {
              expect(o.level(c.user), `level change of ${c.user}`).toBeLessThan(bot);
              expect(c.to, `level written for ${c.user}`).toBeLessThanOrEqual(bot);
            }
            // Every entry the new content changes belongs to a user below us (or is the bot's own).
            const after = action.content.users ?? {};
            for (const user of new Set([...Object.keys(after)])) {
              const before = o.level(user);
              const now = after[user];
              if (user !== BOT && now !== before && parseUserId(user) !== undefined && Object.hasOwn(after, user)) {
                expect(before, `entry of ${user} rewritten`).toBeLessThan(bot);
              }
            }
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("names nothing but valid user ids", () => {
    fc.assert(
      fc.property(stateArb, desiredArb, policyArb, (state, desired, p) => {
        const plan = planFor(state.raw, desired, p.kick, p.incomplete);
        if (typeof plan === "string") return;
        for (const action of plan.actions) {
          const named = action.kind === "set-power-levels" ? action.changes.map((c) => c.user) : action.kind === "kick" || action.kind === "invite" ? [action.user] : [];
          for (const u of named) expect(parseUserId(u), `named ${JSON.stringify(u)}`).toBeDefined();
        }
        for (const h of plan.held) expect(parseUserId(h.user)).toBeDefined();
      }),
      { numRuns: RUNS },
    );
  });

  it("does nothing at all in a room it cannot judge, and says why", () => {
    let unjudgeable = 0;
    fc.assert(
      fc.property(stateArb, desiredArb, policyArb, (state, desired, p) => {
        const plan = planFor(state.raw, desired, p.kick, p.incomplete);
        if (typeof plan === "string") return;
        if (!oracle(state.events).judgeable) {
          unjudgeable++;
          expect(plan.actions).toEqual([]);
          expect(plan.held).toEqual([]);
          expect(plan.error).toMatch(/^cannot judge this room/);
        }
      }),
      { numRuns: RUNS },
    );
    // The generator must actually reach hostile rooms, or the property proves nothing.
    expect(unjudgeable).toBeGreaterThan(RUNS / 10);
  });

  it("judges a well-formed room: with valid levels and one of each event it plans as usual", () => {
    let judged = 0;
    fc.assert(
      fc.property(stateArb, desiredArb, policyArb, (state, desired, p) => {
        const plan = planFor(state.raw, desired, p.kick, p.incomplete);
        if (typeof plan === "string") return;
        if (oracle(state.events).judgeable) {
          judged++;
          expect(plan.error, JSON.stringify(state.events)).toBeUndefined();
        }
      }),
      { numRuns: RUNS },
    );
    expect(judged).toBeGreaterThan(RUNS / 20);
  });
});
