/**
 * Property tests for the planner over random rooms: a small pool of users across a managed and
 * an unmanaged server, random memberships and power levels (some at or above the bot's own),
 * random desired sets, externals, guard limits, v10 and v12 rooms, rooms with no power levels
 * event; and, for the template and space rules, random room templates (power-level fields,
 * history visibility, join rules, guest access, name, topic, encryption), other state, spaces
 * with child links and rooms with parent links (`richScenarioArb`). The helpers below (levels,
 * auth rules, the simulator) are written from the Matrix spec and Synapse's
 * `_check_power_levels`, not from plan.ts, so that they can disagree with it.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import { planRoom } from "../../src/reconcile/plan.ts";
import { GUEST_ACCESS, HISTORY_VISIBILITIES, type JoinRuleSetting, type RoomTemplate } from "../../src/reconcile/template.ts";
import type {
  Action,
  DesiredLink,
  DesiredMember,
  DesiredRoom,
  Membership,
  ObservedRoom,
  ObservedState,
  ObservedStateType,
  Policy,
  PowerLevelsContent,
  RoomMemory,
  RoomPlan,
  SpaceLinkKey,
} from "../../src/reconcile/types.ts";

const RUNS = 500;
/** Runs of the template and space properties (a richer state; kept modest for the file's time). */
const RICH_RUNS = 300;

const BOT = "@bot:example.org" as UserId;
const MANAGED_DOMAIN = "example.org";
const IGNORE_PATTERN = "@ign\\d+:example\\.org";
const POOL = [
  "@a:example.org",
  "@b:example.org",
  "@c:example.org",
  "@d:example.org",
  "@e:example.org",
  "@ign1:example.org",
  "@x:other.net",
  "@y:other.net",
] as UserId[];
const MANAGED_POOL = POOL.filter((u) => serverOf(u) === MANAGED_DOMAIN);
const MEMBERSHIPS: readonly Membership[] = ["join", "invite", "leave", "ban", "knock"];
const ROLES = [
  { role: "member", level: 0 },
  { role: "moderator", level: 50 },
  { role: "admin", level: 100 },
] as const;

interface Scenario {
  readonly desired: DesiredRoom;
  readonly observed: ObservedRoom;
  readonly memory: RoomMemory;
  readonly policy: Policy;
}

// ---------------------------------------------------------------------------------------------
// Facts about a room, from the spec (independent of plan.ts)

function serverOf(user: string): string {
  return user.slice(user.indexOf(":") + 1);
}

/** The generated rooms carry integer levels only (hostile values are in plan-hostile.test.ts). */
function plOf(room: ObservedRoom): PowerLevelsContent | undefined {
  return room.powerLevels;
}

/** The `users` map in force: with no power levels event, the create sender has 100 (not a v12 creator: infinite). */
function usersOf(room: ObservedRoom): Readonly<Record<string, number>> {
  const pl = plOf(room);
  if (pl) return pl.users ?? {};
  const sender = room.createSender;
  return sender !== undefined && !room.creators.includes(sender) ? { [sender]: 100 } : {};
}

function levelOf(room: ObservedRoom, user: string): number {
  if (room.creators.includes(user as UserId)) return Infinity;
  const users = usersOf(room);
  const entry = Object.hasOwn(users, user) ? users[user] : undefined;
  if (typeof entry === "number") return entry;
  const def = plOf(room)?.users_default;
  return typeof def === "number" ? def : 0;
}

function required(room: ObservedRoom, what: "kick" | "invite" | "power_levels"): number {
  const pl = plOf(room);
  if (!pl) return what === "kick" ? 50 : 0; // no event: state_default 0, invite 0, kick 50
  if (what === "kick") return pl.kick ?? 50;
  if (what === "invite") return pl.invite ?? 0;
  return pl.events?.["m.room.power_levels"] ?? pl.state_default ?? 50;
}

/** Users whose `users` entry differs between two rooms (added, changed or removed). */
function changedEntries(before: ObservedRoom, after: ObservedRoom): string[] {
  const a = usersOf(before);
  const b = usersOf(after);
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => a[k] !== b[k]).sort();
}

/** Every user either room knows of. */
function knownUsers(...rooms: ObservedRoom[]): string[] {
  const all = new Set<string>();
  for (const r of rooms) {
    for (const u of Object.keys(r.members)) all.add(u);
    for (const u of Object.keys(usersOf(r))) all.add(u);
    for (const u of r.creators) all.add(u);
  }
  return [...all].sort();
}

/** The simulator: what the homeserver state looks like after an action. */
function apply(room: ObservedRoom, action: Action): ObservedRoom {
  switch (action.kind) {
    case "kick":
      return { ...room, members: { ...room.members, [action.user]: "leave" } };
    case "invite":
      return { ...room, members: { ...room.members, [action.user]: "invite" } };
    case "set-power-levels":
      return { ...room, powerLevels: action.content };
    case "set-state":
      if (action.pending !== undefined) return room; // names a room not created yet: shown, never sent
      return { ...room, state: { ...room.state, [action.type]: { ...room.state?.[action.type as ObservedStateType], [action.stateKey]: action.content } } };
    case "add-child":
      return { ...room, state: { ...room.state, "m.space.child": { ...room.state?.["m.space.child"], [action.childId ?? action.child]: { via: action.via } } } };
    case "remove-child":
      return { ...room, state: { ...room.state, "m.space.child": { ...room.state?.["m.space.child"], [action.childId]: {} } } };
    case "create-room":
      throw new Error("a plan of an existing room never creates it");
  }
}

function applyAll(room: ObservedRoom, actions: readonly Action[]): ObservedRoom {
  return actions.reduce(apply, room);
}

/**
 * The Matrix auth rules for the bot sending this action in this state (room v10+ rules, v12
 * creators): undefined when allowed, else why the server would refuse it.
 */
function refusal(room: ObservedRoom, action: Action, bot: UserId): string | undefined {
  const own = levelOf(room, bot);
  if (room.members[bot] !== "join") return "sender not joined";
  switch (action.kind) {
    case "kick": {
      const m = room.members[action.user];
      if (m !== "join" && m !== "invite") return `kick of ${action.user} who is ${m ?? "absent"}`;
      if (own < required(room, "kick")) return `kick needs ${required(room, "kick")}, sender has ${own}`;
      if (levelOf(room, action.user) >= own) return `kick of ${action.user} at ${levelOf(room, action.user)} ≥ ${own}`;
      return undefined;
    }
    case "invite": {
      const m = room.members[action.user];
      if (m === "join" || m === "ban" || m === "invite") return `invite of ${action.user} who is ${m}`;
      if (own < required(room, "invite")) return `invite needs ${required(room, "invite")}, sender has ${own}`;
      return undefined;
    }
    case "set-power-levels": {
      if (own < required(room, "power_levels")) return `power levels need ${required(room, "power_levels")}, sender has ${own}`;
      const next = action.content;
      const written = next.users ?? {};
      for (const [user, value] of Object.entries(written)) {
        if (!Number.isInteger(value)) return `non-integer level for ${user}`;
        if (room.creators.includes(user as UserId)) return `creator ${user} written into users`;
      }
      if (!room.powerLevels) return undefined; // the first power levels event is always allowed
      const before = plOf(room)?.users ?? {};
      for (const user of changedEntries(room, { ...room, powerLevels: next })) {
        const old = before[user];
        const now = written[user];
        if (user !== bot && old !== undefined && old >= own) return `changes ${user}'s entry ${old} ≥ sender's ${own}`;
        if (now !== undefined && now > own) return `sets ${user} to ${now} > sender's ${own}`;
      }
      const { users: _u1, ...restBefore } = room.powerLevels;
      const { users: _u2, ...restAfter } = next;
      if (JSON.stringify(sortKeys(restBefore)) !== JSON.stringify(sortKeys(restAfter))) {
        return "fields other than users changed";
      }
      return undefined;
    }
  }
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/** The level a state event of `type` needs (spec: `events[type]`, else `state_default`; 0 with no power levels event). */
function stateLevelOf(room: ObservedRoom, type: string): number {
  const pl = plOf(room);
  if (!pl) return 0;
  const entry = pl.events?.[type];
  if (typeof entry === "number") return entry;
  return pl.state_default ?? 50;
}

/** The event type an action sends, for the actions that are state events other than power levels. */
function stateTypeOf(action: Action): string | undefined {
  if (action.kind === "set-state") return action.type;
  if (action.kind === "add-child" || action.kind === "remove-child") return "m.space.child";
  return undefined;
}

/** The power levels as the auth rules compare them: the event's content, or with none, the creator's implied 100. */
function rawLevels(room: ObservedRoom): Readonly<Record<string, unknown>> {
  return plOf(room) ?? { users: usersOf(room) };
}

/**
 * Synapse `_check_power_levels`, for the bot sending `next` in `room`: every level key (the
 * seven top-level fields, and each key of `users`, `events`, `notifications`) whose value
 * differs is refused when its old or its new value is above the sender's level; another
 * user's entry equal to the sender's level may not be changed either. The first power levels
 * event is compared with the creator's implied level (the rule "never above our own" holds
 * for it too). Returns every refusal.
 */
function powerLevelRefusals(room: ObservedRoom, next: PowerLevelsContent, bot: UserId): string[] {
  const own = levelOf(room, bot);
  const before = rawLevels(room);
  const out: string[] = [];
  const check = (where: string, oldValue: unknown, newValue: unknown, isOtherUser: boolean): void => {
    const o = typeof oldValue === "number" ? oldValue : undefined;
    const n = typeof newValue === "number" ? newValue : undefined;
    if (o === n) return;
    if (isOtherUser && o === own) out.push(`${where}: changes an entry equal to the sender's ${own}`);
    if (o !== undefined && o > own) out.push(`${where}: changes ${o}, above the sender's ${own}, to ${n ?? "absent"}`);
    if (n !== undefined && n > own) out.push(`${where}: sets ${n}, above the sender's ${own}`);
  };
  for (const key of ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"]) check(key, before[key], next[key], false);
  for (const dir of ["users", "events", "notifications"] as const) {
    const a = (before[dir] ?? {}) as Record<string, unknown>;
    const b = (next[dir] ?? {}) as Record<string, unknown>;
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) check(`${dir}[${key}]`, a[key], b[key], dir === "users" && key !== bot);
  }
  return out;
}

/** An action that names a room not created yet (a pending space, a child without an id): never sent. */
function waitsForARoom(action: Action): boolean {
  return (action.kind === "set-state" && action.pending !== undefined) || (action.kind === "add-child" && action.childId === undefined);
}

/** What the store remembers after the actions: links added by us recorded, removed ones forgotten. */
function remember(memory: RoomMemory, actions: readonly Action[]): RoomMemory {
  let links: SpaceLinkKey[] = [...(memory.links ?? [])];
  const forget = (type: SpaceLinkKey["type"], key: string): void => {
    links = links.filter((l) => !(l.type === type && l.stateKey === key));
  };
  for (const a of actions) {
    if (a.kind === "add-child" && a.childId !== undefined) {
      forget("m.space.child", a.childId);
      links.push({ type: "m.space.child", stateKey: a.childId });
    } else if (a.kind === "remove-child") {
      forget("m.space.child", a.childId);
    } else if (a.kind === "set-state" && a.type === "m.space.parent" && a.pending === undefined) {
      forget("m.space.parent", a.stateKey);
      if (Object.keys(a.content).length > 0) links.push({ type: "m.space.parent", stateKey: a.stateKey as RoomId });
    }
  }
  return { ...memory, links };
}

// ---------------------------------------------------------------------------------------------
// Who the plan may name

function isIgnored(policy: Policy, user: string): boolean {
  return policy.ignoreUsers.some((src) => new RegExp(`^(?:${src})$`).test(user));
}

function isUnmanaged(policy: Policy, user: string): boolean {
  return user === policy.bot || !policy.managedDomains.includes(serverOf(user)) || isIgnored(policy, user);
}

interface Touch {
  readonly user: string;
  readonly kind: "kick" | "invite" | "level";
  /** Effective levels before and after, for "level". */
  readonly from: number;
  readonly to: number;
}

/**
 * Everyone the plan touches. Level touches come from the content itself (every `users` entry
 * that differs, every effective level that differs), not only from the `changes` list.
 */
function touches(s: Scenario, plan: RoomPlan): Touch[] {
  const out: Touch[] = [];
  let room = s.observed;
  for (const action of plan.actions) {
    const next = apply(room, action);
    if (action.kind === "set-power-levels") {
      const affected = new Set(changedEntries(room, next));
      for (const u of knownUsers(room, next)) if (levelOf(room, u) !== levelOf(next, u)) affected.add(u);
      for (const c of action.changes) affected.add(c.user);
      for (const u of [...affected].sort()) out.push({ user: u, kind: "level", from: levelOf(room, u), to: levelOf(next, u) });
    } else if (action.kind === "kick" || action.kind === "invite") {
      out.push({ user: action.user, kind: action.kind, from: levelOf(room, action.user), to: levelOf(room, action.user) });
    }
    room = next;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Generators

const levelArb = fc.constantFrom(0, 10, 50, 50, 75, 100);
const membershipArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Membership>("join") },
  { weight: 3, arbitrary: fc.constantFrom(...MEMBERSHIPS) },
);
const subsetOf = <T>(items: readonly T[]) => fc.subarray([...items]);

interface GenOptions {
  /** Complete directory data, kicking on, no guard, no held/released memory. */
  readonly converging?: boolean;
  readonly incomplete?: boolean;
}

function scenarioArb(opts: GenOptions = {}): fc.Arbitrary<Scenario> {
  const plArb = fc.record(
    {
      users: fc.dictionary(fc.constantFrom(...POOL), levelArb, { maxKeys: POOL.length }),
      bot: fc.option(fc.constantFrom(0, 50, 75, 100, 100, 100), { nil: undefined, freq: 8 }),
      users_default: fc.constantFrom(0, 0, 0, 10),
      kick: fc.constantFrom(0, 50, 50, 50, 75, 100),
      invite: fc.constantFrom(0, 0, 50),
      plLevel: fc.constantFrom(50, 75, 100, 100),
      state_default: fc.constantFrom(0, 50, 100),
      custom: fc.boolean(),
    },
    { requiredKeys: ["users", "bot", "plLevel", "state_default", "custom"] },
  );
  return fc
    .record({
      v12: fc.boolean(),
      botCreator: fc.boolean(),
      otherCreators: fc.shuffledSubarray([...POOL], { maxLength: 1 }),
      hasPl: fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      createSenderIndex: fc.nat(POOL.length),
      pl: plArb,
      members: fc.dictionary(fc.constantFrom(...POOL), membershipArb, { maxKeys: POOL.length }),
      botMembership: fc.oneof(
        { weight: 9, arbitrary: fc.constant<Membership>("join") },
        { weight: 1, arbitrary: fc.constantFrom<Membership>("invite", "leave") },
      ),
      desired: fc.dictionary(fc.constantFrom(...POOL, BOT), fc.constantFrom(...ROLES), { maxKeys: 5 }),
      desiredOrder: fc.integer(),
      incomplete: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      ignore: fc.boolean(),
      kick: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      maxRemovals: fc.oneof(
        { weight: 3, arbitrary: fc.constant({}) },
        fc.record({ count: fc.nat(3) }),
        fc.record({ share: fc.constantFrom(0.25, 0.5) }),
        fc.record({ count: fc.nat(3), share: fc.constantFrom(0.25, 0.5) }),
      ),
      externals: fc.shuffledSubarray([...MANAGED_POOL], { maxLength: 2 }),
      held: subsetOf(MANAGED_POOL),
      released: subsetOf(MANAGED_POOL),
    })
    .map((g): Scenario => {
      const creators: UserId[] = [];
      if (g.v12) {
        if (g.botCreator) creators.push(BOT);
        creators.push(...g.otherCreators);
        if (creators.length === 0) creators.push(POOL[g.createSenderIndex % POOL.length]!);
      }
      let powerLevels: PowerLevelsContent | undefined;
      let createSender: UserId | undefined;
      if (g.hasPl) {
        const users: Record<string, number> = { ...g.pl.users };
        if (g.pl.bot !== undefined) users[BOT] = g.pl.bot;
        for (const c of creators) delete users[c]; // a v12 room cannot hold them
        const content: Record<string, unknown> = {
          users,
          events: { "m.room.name": 50, "m.room.power_levels": g.pl.plLevel },
          events_default: 0,
          state_default: g.pl.state_default,
          ban: 50,
          redact: 50,
        };
        if (g.pl.users_default !== undefined) content["users_default"] = g.pl.users_default;
        if (g.pl.kick !== undefined) content["kick"] = g.pl.kick;
        if (g.pl.invite !== undefined) content["invite"] = g.pl.invite;
        if (g.pl.custom) content["org.example.custom"] = { keep: [1, 2] };
        powerLevels = content;
      } else {
        createSender = g.v12 ? creators[0]! : ([BOT, ...POOL][g.createSenderIndex] ?? BOT);
      }
      const members: Record<string, Membership> = { ...g.members, [BOT]: g.botMembership };
      const desiredMembers: DesiredMember[] = shuffle(
        Object.entries(g.desired).map(([user, r]) => ({
          user: user as UserId,
          level: r.level,
          role: r.role,
          via: [`g-${r.role}`],
        })),
        g.desiredOrder,
      );
      const incomplete = opts.incomplete ?? (opts.converging ? false : g.incomplete);
      const observed: ObservedRoom = {
        roomId: (g.v12 ? "!Q7nLx2VbTfWp" : "!r:example.org") as RoomId,
        roomVersion: g.v12 ? "12" : "10",
        creators,
        members,
        ...(powerLevels ? { powerLevels } : {}),
        ...(createSender ? { createSender } : {}),
      };
      return {
        desired: {
          room: "#r:example.org",
          members: desiredMembers,
          incompleteGroups: incomplete ? ["g-broken"] : [],
          notes: [],
        },
        observed,
        memory: opts.converging
          ? { externals: g.externals, held: [], released: [] }
          : { externals: g.externals, held: g.held, released: g.released },
        policy: {
          bot: BOT,
          managedDomains: [MANAGED_DOMAIN],
          kick: opts.converging ? true : g.kick,
          kickReason: "not in a mapped group",
          ignoreUsers: g.ignore ? [IGNORE_PATTERN] : [],
          maxRemovals: opts.converging ? {} : g.maxRemovals,
        },
      };
    });
}

/** A deterministic Fisher–Yates shuffle driven by a seed (mulberry32). */
function shuffle<T>(items: readonly T[], seed: number): T[] {
  let a = seed >>> 0;
  const rand = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function shuffleKeys<V>(record: Readonly<Record<string, V>>, seed: number): Record<string, V> {
  return Object.fromEntries(shuffle(Object.entries(record), seed));
}

// Templates and spaces: extras laid over a scenario.

const CHILDREN = ["!c1:example.org", "!c2:example.org", "!c3:example.org"] as RoomId[];
const PARENTS = ["!p1:example.org", "!p2:example.org"] as RoomId[];
const RESTRICT_SPACES = ["!p1:example.org", "!s9:example.org", "#unresolved:example.org"];
const TEMPLATE_STATE_TYPES = ["m.room.history_visibility", "m.room.join_rules", "m.room.guest_access", "m.room.name", "m.room.topic", "m.space.child", "m.space.parent"];
const fieldLevelArb = fc.constantFrom(0, 0, 10, 25, 50, 75, 100);
const refOf = (id: RoomId): string => `#${id.slice(1, id.indexOf(":"))}:example.org`;
/** A link's content: counts (a via list), or does not (empty content, an empty via list). */
const linkContentArb = fc.constantFrom<Record<string, unknown>>({ via: ["example.org"] }, { via: ["other.net"] }, {}, { via: [] });

const joinRuleArb: fc.Arbitrary<JoinRuleSetting> = fc.oneof(
  fc.record({ rule: fc.constantFrom("invite" as const, "knock" as const, "public" as const) }),
  fc.record({
    rule: fc.constantFrom("restricted" as const, "knock_restricted" as const),
    spaces: fc.subarray(RESTRICT_SPACES, { minLength: 1 }),
  }),
);

const templateArb: fc.Arbitrary<RoomTemplate> = fc.record(
  {
    powerLevels: fc.record(
      {
        users_default: fc.constantFrom(0, 0, 10, 50),
        events_default: fieldLevelArb,
        state_default: fieldLevelArb,
        invite: fieldLevelArb,
        kick: fieldLevelArb,
        ban: fieldLevelArb,
        redact: fieldLevelArb,
        notifications: fc.record({ room: fieldLevelArb }),
        events: fc.dictionary(fc.constantFrom(...TEMPLATE_STATE_TYPES, "m.room.power_levels", "m.room.name"), fieldLevelArb, { maxKeys: 3 }),
      },
      { requiredKeys: [] },
    ),
    historyVisibility: fc.constantFrom(...HISTORY_VISIBILITIES),
    joinRule: joinRuleArb,
    guestAccess: fc.constantFrom(...GUEST_ACCESS),
    name: fc.constantFrom("Engineering", "Ops"),
    topic: fc.constantFrom("All of engineering", "On call"),
    encryption: fc.boolean(),
  },
  { requiredKeys: ["powerLevels", "encryption"] },
);

/** The other state of the room as observed: each type present or not, with values a template may or may not want. */
const observedStateArb: fc.Arbitrary<ObservedState> = fc.record(
  {
    "m.room.history_visibility": fc.constantFrom(...HISTORY_VISIBILITIES).map((v) => ({ "": { history_visibility: v } })),
    "m.room.join_rules": fc
      .oneof(
        fc.constantFrom("invite", "knock", "public").map((r) => ({ join_rule: r })),
        fc.subarray(RESTRICT_SPACES.filter((r) => r.startsWith("!")), { minLength: 1 }).map((ids) => ({
          join_rule: "restricted",
          allow: ids.map((room_id) => ({ type: "m.room_membership", room_id })),
        })),
      )
      .map((c) => ({ "": c })),
    "m.room.guest_access": fc.constantFrom(...GUEST_ACCESS).map((v) => ({ "": { guest_access: v } })),
    "m.room.name": fc.constantFrom("Engineering", "old name").map((v) => ({ "": { name: v } })),
    "m.room.topic": fc.constantFrom("On call", "old topic").map((v) => ({ "": { topic: v } })),
    "m.room.encryption": fc.constant({ "": { algorithm: "m.megolm.v1.aes-sha2" } }),
    "m.space.child": fc.dictionary(fc.constantFrom(...CHILDREN), linkContentArb, { maxKeys: CHILDREN.length }),
    "m.space.parent": fc.dictionary(fc.constantFrom(...PARENTS), linkContentArb, { maxKeys: PARENTS.length }),
  },
  { requiredKeys: [] },
);

interface RichExtras {
  readonly template: RoomTemplate | undefined;
  readonly state: ObservedState;
  readonly plEvents: Readonly<Record<string, number>>;
  readonly notificationsRoom: number | undefined;
  readonly roomVersion: string;
  readonly space: boolean;
  readonly children: readonly { readonly id: RoomId; readonly pending: boolean }[];
  readonly parents: readonly RoomId[] | undefined;
  readonly links: readonly SpaceLinkKey[] | undefined;
}

const allLinkKeys: SpaceLinkKey[] = [
  ...CHILDREN.map((stateKey): SpaceLinkKey => ({ type: "m.space.child", stateKey })),
  ...PARENTS.map((stateKey): SpaceLinkKey => ({ type: "m.space.parent", stateKey })),
];

const richExtrasArb: fc.Arbitrary<RichExtras> = fc.record({
  template: fc.option(templateArb, { nil: undefined, freq: 6 }),
  state: observedStateArb,
  plEvents: fc.dictionary(fc.constantFrom(...TEMPLATE_STATE_TYPES), fc.constantFrom(0, 50, 75, 100), { maxKeys: 3 }),
  notificationsRoom: fc.option(fc.constantFrom(0, 50, 100), { nil: undefined }),
  roomVersion: fc.constantFrom("7", "9", "10", "10"),
  space: fc.boolean(),
  children: fc.subarray(CHILDREN).chain((ids) => fc.tuple(...ids.map((id) => fc.record({ id: fc.constant(id), pending: fc.boolean() })))),
  parents: fc.option(fc.subarray(PARENTS), { nil: undefined }),
  links: fc.option(fc.subarray(allLinkKeys), { nil: undefined }),
});

/**
 * A scenario with a template, other state and space links laid over it. `converging`: every
 * child already has its room id (a pending child is linked each run until it is created).
 */
function richScenarioArb(opts: GenOptions = {}): fc.Arbitrary<Scenario> {
  return fc.tuple(scenarioArb(opts), richExtrasArb).map(([s, x]): Scenario => {
    const pl = s.observed.powerLevels as PowerLevelsContent | undefined;
    const powerLevels: PowerLevelsContent | undefined =
      pl === undefined
        ? undefined
        : {
            ...pl,
            events: { ...x.plEvents, ...pl.events },
            ...(x.notificationsRoom === undefined ? {} : { notifications: { room: x.notificationsRoom } }),
          };
    const { powerLevels: _dropped, ...observedRest } = s.observed;
    const observed: ObservedRoom = {
      ...observedRest,
      roomVersion: s.observed.roomVersion === "12" ? "12" : x.roomVersion,
      ...(powerLevels ? { powerLevels } : {}),
      state: x.state,
      ...(x.space ? { roomType: "m.space" } : {}),
    };
    const children: DesiredLink[] = x.children.map((c) => (c.pending && !opts.converging ? { ref: refOf(c.id) } : { ref: refOf(c.id), roomId: c.id }));
    const parents: DesiredLink[] | undefined = x.parents?.map((id) => ({ ref: refOf(id), roomId: id }));
    const desired: DesiredRoom = {
      ...s.desired,
      ...(x.template ? { template: x.template } : {}),
      ...(x.space ? { space: { children } } : {}),
      ...(parents ? { parents } : {}),
    };
    return { ...s, desired, observed, memory: { ...s.memory, ...(x.links ? { links: x.links } : {}) } };
  });
}

function planOf(s: Scenario): RoomPlan {
  return planRoom(s.desired, s.observed, s.memory, s.policy);
}

const params = { numRuns: RUNS };

// ---------------------------------------------------------------------------------------------

describe("planner properties", () => {
  it("converges: applying the plan gives a room whose next plan has no actions", () => {
    fc.assert(
      fc.property(scenarioArb({ converging: true }), (s) => {
        const first = planOf(s);
        expect(first.held).toEqual([]);
        const after = applyAll(s.observed, first.actions);
        const second = planRoom(s.desired, after, s.memory, s.policy);
        expect(second.actions).toEqual([]);
        expect(second.held).toEqual([]);
      }),
      params,
    );
  });

  it("plans only actions the Matrix auth rules allow, in order", () => {
    fc.assert(
      fc.property(scenarioArb(), (s) => {
        let room = s.observed;
        for (const action of planOf(s).actions) {
          expect(refusal(room, action, s.policy.bot), JSON.stringify(action)).toBeUndefined();
          room = apply(room, action);
        }
      }),
      params,
    );
  });

  it("orders actions kicks, then at most one power levels event, then invites; each kind sorted by user, once each", () => {
    const rank = { "create-room": -1, kick: 0, "set-power-levels": 1, "set-state": 2, "remove-child": 3, "add-child": 4, invite: 5 } as const;
    fc.assert(
      fc.property(scenarioArb(), (s) => {
        const { actions } = planOf(s);
        const ranks = actions.map((a) => rank[a.kind]);
        expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
        expect(actions.filter((a) => a.kind === "set-power-levels").length).toBeLessThanOrEqual(1);
        const kicked = actions.flatMap((a) => (a.kind === "kick" ? [a.user] : []));
        const invited = actions.flatMap((a) => (a.kind === "invite" ? [a.user] : []));
        const changed = actions.flatMap((a) => (a.kind === "set-power-levels" ? a.changes.map((c) => c.user) : []));
        for (const list of [kicked, invited, changed]) expect([...list].sort()).toEqual(list.length ? unique(list) : []);
        expect(kicked.filter((u) => invited.includes(u))).toEqual([]);
      }),
      params,
    );
  });

  it("describes every level change it writes: `changes` is exactly the content's difference", () => {
    fc.assert(
      fc.property(scenarioArb(), (s) => {
        const plan = planOf(s);
        let room = s.observed;
        for (const action of plan.actions) {
          const next = apply(room, action);
          if (action.kind === "set-power-levels") {
            const differing = knownUsers(room, next).filter((u) => levelOf(room, u) !== levelOf(next, u));
            expect(action.changes.map((c) => c.user)).toEqual(differing);
            expect(changedEntries(room, next)).toEqual(differing);
            for (const c of action.changes) {
              expect({ from: c.from, to: c.to }).toEqual({ from: levelOf(room, c.user), to: levelOf(next, c.user) });
              expect(c.removeEntry).toBe(!Object.hasOwn(next.powerLevels?.users ?? {}, c.user));
            }
            expect(action.changes.length).toBeGreaterThan(0);
          }
          room = next;
        }
      }),
      params,
    );
  });

  describe("never names an unmanaged or protected user", () => {
    it("the bot, users of unmanaged servers and ignored users are never kicked, invited or changed", () => {
      fc.assert(
        fc.property(scenarioArb(), (s) => {
          for (const t of touches(s, planOf(s))) {
            expect(isUnmanaged(s.policy, t.user), `${t.kind} ${t.user}`).toBe(false);
          }
        }),
        params,
      );
    });

    it("v12 creators are never kicked and never get a level change", () => {
      fc.assert(
        fc.property(scenarioArb(), (s) => {
          for (const t of touches(s, planOf(s))) {
            if (t.kind === "invite") continue; // a creator who left may be invited back
            expect(s.observed.creators, `${t.kind} ${t.user}`).not.toContain(t.user);
          }
        }),
        params,
      );
    });

    it("recorded externals are never kicked or demoted", () => {
      fc.assert(
        fc.property(scenarioArb(), (s) => {
          for (const t of touches(s, planOf(s))) {
            if (!s.memory.externals.includes(t.user as UserId)) continue;
            expect(t.kind, `kick of external ${t.user}`).not.toBe("kick");
            expect(t.to, `external ${t.user} demoted from ${t.from}`).toBeGreaterThanOrEqual(t.from);
          }
        }),
        params,
      );
    });

    it("a user at or above the bot's level is never kicked and never has their level changed", () => {
      fc.assert(
        fc.property(scenarioArb(), (s) => {
          const botLevel = levelOf(s.observed, s.policy.bot);
          for (const t of touches(s, planOf(s))) {
            if (t.kind === "invite") continue;
            expect(levelOf(s.observed, t.user), `${t.kind} ${t.user}`).toBeLessThan(botLevel);
          }
        }),
        params,
      );
    });
  });

  describe("determinism", () => {
    it("planning twice, with an equal policy object, gives deep-equal plans", () => {
      fc.assert(
        fc.property(scenarioArb(), (s) => {
          const a = planOf(s);
          const b = planOf(s);
          const c = planRoom(s.desired, s.observed, s.memory, structuredClone(s.policy));
          expect(b).toEqual(a);
          expect(c).toEqual(a);
        }),
        params,
      );
    });

    it("the order of desired members and of observed members / users keys does not change the actions or held", () => {
      fc.assert(
        fc.property(scenarioArb(), fc.integer(), (s, seed) => {
          const shuffled = reorder(s, seed);
          const a = planOf(s);
          const b = planOf(shuffled);
          expect(b.actions).toEqual(a.actions);
          expect(b.held).toEqual(a.held);
        }),
        params,
      );
    });

    it("the order of desired members and of observed members / users keys does not change the plan at all (notes included)", () => {
      fc.assert(
        fc.property(scenarioArb(), fc.integer(), (s, seed) => {
          expect(planOf(reorder(s, seed))).toEqual(planOf(s));
        }),
        params,
      );
    });
  });

  it("never writes a level above the bot's own, and never writes a v12 creator into users", () => {
    fc.assert(
      fc.property(scenarioArb(), (s) => {
        const botLevel = levelOf(s.observed, s.policy.bot);
        let room = s.observed;
        for (const action of planOf(s).actions) {
          const next = apply(room, action);
          if (action.kind === "set-power-levels") {
            const written = action.content.users ?? {};
            for (const c of action.changes) expect(c.to, c.user).toBeLessThanOrEqual(botLevel);
            for (const u of changedEntries(room, next)) {
              const value = written[u];
              if (value !== undefined) expect(value, u).toBeLessThanOrEqual(botLevel);
            }
            for (const creator of s.observed.creators) expect(Object.keys(written)).not.toContain(creator);
          }
          room = next;
        }
      }),
      params,
    );
  });

  it("with incomplete groups, plans no kick, holds nothing and lowers no level", () => {
    fc.assert(
      fc.property(scenarioArb({ incomplete: true }), (s) => {
        const plan = planOf(s);
        expect(plan.actions.filter((a) => a.kind === "kick")).toEqual([]);
        expect(plan.held).toEqual([]);
        for (const t of touches(s, plan)) {
          if (t.kind === "level") expect(t.to, `${t.user} lowered from ${t.from}`).toBeGreaterThanOrEqual(t.from);
        }
      }),
      params,
    );
  });

  it("the guard: unreleased kicks stay within the count, earlier holds stay held, cautious mode kicks nobody", () => {
    fc.assert(
      fc.property(scenarioArb(), (s) => {
        const plan = planOf(s);
        const kicked = plan.actions.flatMap((a) => (a.kind === "kick" ? [a.user] : []));
        const released = new Set<string>(s.memory.released);
        const heldUsers = plan.held.map((h) => h.user);
        expect(kicked.filter((u) => heldUsers.includes(u))).toEqual([]);
        if (!s.policy.kick) {
          expect(kicked).toEqual([]);
          expect(plan.held).toEqual([]);
        }
        const { count } = s.policy.maxRemovals;
        if (count !== undefined) {
          expect(kicked.filter((u) => !released.has(u)).length).toBeLessThanOrEqual(count);
        }
        for (const u of s.memory.held) {
          if (!released.has(u)) expect(kicked).not.toContain(u);
        }
      }),
      params,
    );
  });

  describe("templates and spaces", () => {
    const rich = { numRuns: RICH_RUNS };

    it("converge: applying the plan gives a room whose next plan has no template, space or membership action", () => {
      fc.assert(
        fc.property(richScenarioArb({ converging: true }), (s) => {
          const first = planOf(s);
          const after = applyAll(s.observed, first.actions);
          const second = planRoom(s.desired, after, remember(s.memory, first.actions), s.policy);
          // What names a room that does not exist yet is shown each run until it does.
          expect(second.actions.filter((a) => !waitsForARoom(a))).toEqual([]);
          expect(second.held).toEqual([]);
        }),
        rich,
      );
    });

    it("no power-level field (template field or user entry) is set above the bot's level, and none whose current value is above it is changed", () => {
      fc.assert(
        fc.property(richScenarioArb(), (s) => {
          let room = s.observed;
          for (const action of planOf(s).actions) {
            if (action.kind === "set-power-levels") expect(powerLevelRefusals(room, action.content, s.policy.bot), JSON.stringify(action.fields)).toEqual([]);
            room = apply(room, action);
          }
        }),
        rich,
      );
    });

    it("remove-child (and an emptied m.space.parent) only names links in memory.links, and never while groups are incomplete", () => {
      fc.assert(
        fc.property(richScenarioArb(), (s) => {
          const ours = (type: SpaceLinkKey["type"], key: string): boolean => (s.memory.links ?? []).some((l) => l.type === type && l.stateKey === key);
          const incomplete = s.desired.incompleteGroups.length > 0;
          for (const a of planOf(s).actions) {
            if (a.kind === "remove-child") {
              expect(ours("m.space.child", a.childId), `remove-child ${a.childId}`).toBe(true);
              expect(incomplete, `remove-child ${a.childId} while incomplete`).toBe(false);
            }
            if (a.kind === "set-state" && a.type === "m.space.parent" && Object.keys(a.content).length === 0) {
              expect(ours("m.space.parent", a.stateKey), `parent link ${a.stateKey} removed`).toBe(true);
              expect(incomplete, `parent link ${a.stateKey} removed while incomplete`).toBe(false);
            }
          }
        }),
        rich,
      );
    });

    it("every state event of the plan needs at most the bot's level under the levels in force when it is sent (after the power levels event)", () => {
      fc.assert(
        fc.property(richScenarioArb(), (s) => {
          let room = s.observed;
          for (const action of planOf(s).actions) {
            const type = stateTypeOf(action);
            if (type !== undefined) {
              const need = stateLevelOf(room, type);
              expect(need, `${type} needs ${need}, the bot has ${levelOf(room, s.policy.bot)}`).toBeLessThanOrEqual(levelOf(room, s.policy.bot));
            }
            room = apply(room, action);
          }
        }),
        rich,
      );
    });
  });
});

/** Sorted, without duplicates. */
function unique(list: readonly string[]): string[] {
  return [...new Set(list)].sort();
}

function reorder(s: Scenario, seed: number): Scenario {
  const pl = s.observed.powerLevels;
  const observed: ObservedRoom = {
    ...s.observed,
    members: shuffleKeys(s.observed.members, seed),
    ...(pl ? { powerLevels: { ...pl, users: shuffleKeys((pl as PowerLevelsContent).users ?? {}, seed + 1) } } : {}),
  };
  return { ...s, desired: { ...s.desired, members: shuffle(s.desired.members, seed + 2) }, observed };
}
