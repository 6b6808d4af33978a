/**
 * The planner: `(desired, observed, memory, policy) → RoomPlan`. Pure: no I/O, no clock.
 * Every rule of the domain lives here (ARCHITECTURE.md, "Rules of the domain"), each as one
 * named decision that returns actions and typed findings (findings.ts; words.ts says them):
 *
 * - judge: a room whose state or levels cannot be read as the auth rules read them, or that
 *   the bot is not joined to, is not planned.
 * - decideMember: only users of the managed domains are touched; the bot itself, users
 *   matching `ignoreUsers`, recorded externals and v12 creators are never kicked or demoted;
 *   nobody whose level is at or above the bot's is changed; no level is set above the bot's
 *   own (clamped). Pending invites count as membership; a stale invite is revoked by a kick;
 *   a banned user is reported, never unbanned or re-invited. Fail closed: when a group of
 *   the room is incomplete, no kicks and no demotions.
 * - guardRemovals: removals beyond `maxRemovals` are held; removals held earlier stay held
 *   until an operator releases them.
 * - templateFields: the template's power-level fields, under the auth rules (never set a
 *   field above our level, never change one whose value is above it).
 * - powerLevelsEvent: user levels and template fields fold into ONE `m.room.power_levels`
 *   event that preserves the rest of the content.
 * - templateState: history visibility, join rule, guest access, name and topic, one event
 *   each, only when different and only when the template sets them.
 * - spaceLinks: a space's `m.space.child` links to its managed children, a child's
 *   `m.space.parent`; only links this service added are ever removed.
 */
import { serverNameOf, userIdPattern, type RoomId, type UserId } from "../matrix/ids.ts";
import type { Finding } from "./findings.ts";
import { JOIN_RULE_SINCE, readLevels, roomVersionNumber, type LevelKind, type RoomLevels } from "./levels.ts";
import { creatable } from "./plan-create.ts";
import { POWER_LEVEL_FIELDS, type JoinRuleSetting, type PowerLevelField, type RoomTemplate } from "./template.ts";
import type {
  Action,
  ActionOf,
  DesiredLink,
  DesiredMember,
  DesiredRoom,
  HeldRemoval,
  Membership,
  ObservedRoom,
  ObservedStateType,
  Policy,
  PowerLevelChange,
  PowerLevelFieldChange,
  PowerLevelsContent,
  RoomMemory,
  RoomPlan,
  SpaceLinkKey,
} from "./types.ts";

export const EMPTY_MEMORY: RoomMemory = { externals: [], held: [], released: [] };

interface CompiledPolicy {
  readonly policy: Policy;
  readonly domains: ReadonlySet<string>;
  readonly ignore: readonly RegExp[];
}

const compiled = new WeakMap<Policy, CompiledPolicy>();

function compile(policy: Policy): CompiledPolicy {
  let c = compiled.get(policy);
  if (!c) {
    c = {
      policy,
      domains: new Set(policy.managedDomains.map((d) => d.toLowerCase())),
      ignore: policy.ignoreUsers.map(userIdPattern),
    };
    compiled.set(policy, c);
  }
  return c;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** What every decision of one room reads. */
interface RoomContext {
  readonly desired: DesiredRoom;
  readonly observed: ObservedRoom;
  readonly memory: RoomMemory;
  readonly policy: Policy;
  readonly levels: RoomLevels;
  readonly botLevel: number;
  readonly incomplete: boolean;
  readonly isManaged: (user: string) => boolean;
  readonly isManagedDomain: (user: string) => boolean;
}

/** Plans one room. Deterministic: the same input gives the same plan, sorted by user id. */
export function planRoom(desired: DesiredRoom, observed: ObservedRoom, memory: RoomMemory, policy: Policy): RoomPlan {
  const findings: Finding[] = desired.notes.map((text) => ({ kind: "directory", text }));
  const base = { room: desired.room, roomId: observed.roomId };

  // judge: we would not know who is above whom.
  const reading = readLevels(observed);
  if (!reading.ok) {
    return { ...base, actions: [], held: [], findings, error: `cannot judge this room, nothing changed: ${reading.problems.join("; ")}` };
  }
  if (observed.members[policy.bot] !== "join") {
    findings.push({ kind: "not-joined", bot: policy.bot });
    return { ...base, actions: [], held: [], findings };
  }
  const { domains, ignore } = compile(policy);
  const levels = reading.levels;
  const botLevel = levels.of(policy.bot);
  const isManagedDomain = (user: string): boolean => domains.has(serverNameOf(user as UserId).toLowerCase());
  const ctx: RoomContext = {
    desired,
    observed,
    memory,
    policy,
    levels,
    botLevel,
    incomplete: desired.incompleteGroups.length > 0,
    isManaged: (user) => user !== policy.bot && isManagedDomain(user) && !ignore.some((re) => re.test(user)),
    isManagedDomain,
  };

  findings.push(...botCapabilities(ctx));
  if (ctx.incomplete) findings.push({ kind: "incomplete", groups: desired.incompleteGroups });

  // users_default first tentatively as the template wants it: the members' entries are
  // planned against it, and it is kept as it is when it would still change the level of
  // someone it must not (usersDefaultChange).
  let fields = templateFields(ctx);
  let members = decideMembers(ctx, fields.usersDefault);
  if (fields.usersDefault !== levels.usersDefault) {
    const blocked = usersDefaultBlocked(ctx, members.changes, fields.usersDefault);
    if (blocked.length > 0) {
      fields = {
        ...fields,
        changes: fields.changes.filter((c) => c.field !== "users_default"),
        findings: [...fields.findings, { kind: "users-default-kept", from: levels.usersDefault, to: fields.usersDefault, users: blocked }],
        usersDefault: levels.usersDefault,
      };
      members = decideMembers(ctx, fields.usersDefault);
    }
  }
  findings.push(...fields.findings);
  findings.push(...members.findings);
  const guard = guardRemovals(ctx, members.removalCandidates, members.managedMembers);
  findings.push(...guard.findings);

  // A kicked user's stale level entry goes too (in the same power-levels event).
  const changes = [...members.changes];
  for (const u of guard.kicks) {
    if (levels.hasEntry(u) && levels.of(u) !== fields.usersDefault) {
      const drop = dropEntry(ctx, u, levels.of(u), fields.usersDefault);
      if (drop.kind === "change") changes.push(drop.change);
      else findings.push(drop.finding);
    }
  }

  const actions: Action[] = [];
  const permitted = (what: LevelKind, count: number): boolean => {
    if (count === 0) return false;
    const need = levels.required(what);
    if (botLevel >= need) return true;
    findings.push({ kind: "cannot", what, count, botLevel, need });
    return false;
  };
  if (permitted("kick", guard.kicks.length)) {
    for (const u of guard.kicks) actions.push({ kind: "kick", user: u, reason: policy.kickReason });
  }
  const event = powerLevelsEvent(ctx, changes, fields.changes);
  findings.push(...event.findings);
  const sent = event.action !== undefined && permitted("power_levels", changes.length + fields.changes.length);
  if (sent && event.action) actions.push(event.action);

  // Other state: judged against the levels after the power-levels event, when it is sent (the
  // bot never sets a field above its own level, so what it could do before it can still do).
  const stateNeed = (type: string): number => levelAfter(levels, sent ? fields.changes : [], type);
  const state = [...templateState(ctx), ...parentLinks(ctx)];
  const children = spaceChildren(ctx);
  findings.push(...state.flatMap((s) => s.findings), ...children.findings);
  const stateActions = [...state.flatMap((s) => s.actions), ...children.actions];
  for (const a of stateActions) {
    const type = a.kind === "set-state" ? a.type : "m.space.child";
    const need = stateNeed(type);
    if (botLevel >= need) actions.push(a);
    else if (!findings.some((f) => f.kind === "cannot-set-state" && f.type === type)) findings.push({ kind: "cannot-set-state", type, botLevel, need });
  }

  if (permitted("invite", members.invites.length)) {
    for (const u of members.invites) actions.push({ kind: "invite", user: u });
  }
  // A run that may not kick because of its kind judges no removal: what is held stays held.
  return { ...base, actions, held: guard.held, ...(policy.kicksOnlyBy !== undefined ? { heldKept: true as const } : {}), findings };
}

/** What the bot cannot do here at all, said once at the top. */
function botCapabilities(ctx: RoomContext): Finding[] {
  const { levels, botLevel, policy } = ctx;
  const lacking = (["invite", "kick", "power_levels"] as const).filter((k) => botLevel < levels.required(k)).map((what) => ({ what, need: levels.required(what) }));
  return lacking.length > 0 ? [{ kind: "bot-level-too-low", bot: policy.bot, botLevel, lacking }] : [];
}

interface MemberDecisions {
  readonly invites: UserId[];
  readonly removalCandidates: UserId[];
  readonly changes: PowerLevelChange[];
  readonly findings: Finding[];
  readonly managedMembers: number;
}

/**
 * Every user the directory or the room knows of, each once, through the membership rules.
 * `usersDefault` is the users_default the power-levels event will carry.
 */
function decideMembers(ctx: RoomContext, usersDefault: number): MemberDecisions {
  const { desired, observed, levels, botLevel, memory, policy } = ctx;
  const externals = new Set<string>(memory.externals);
  const desiredByUser = new Map<string, DesiredMember>();
  const foreign: UserId[] = [];
  for (const m of desired.members) {
    if (!ctx.isManaged(m.user)) {
      if (m.user !== policy.bot && !ctx.isManagedDomain(m.user)) foreign.push(m.user);
      continue;
    }
    desiredByUser.set(m.user, m);
  }
  const perUser: { user: string; finding: Finding }[] = [];
  const out: MemberDecisions = { invites: [], removalCandidates: [], changes: [], findings: [], managedMembers: 0 };
  for (const u of foreign.sort(compare)) out.findings.push({ kind: "foreign-user", user: u });
  const notRemoved: UserId[] = [];
  let managedMembers = 0;

  // The order of visiting does not matter: everything collected is sorted below.
  const users: string[] = [...desiredByUser.keys()];
  for (const u of Object.keys(observed.members)) if (!desiredByUser.has(u)) users.push(u);
  for (const u of Object.keys(levels.users)) if (!desiredByUser.has(u) && !Object.hasOwn(observed.members, u)) users.push(u);

  // Defined once, not per user: a closure made per iteration costs more than the rule itself.
  const note = (finding: Finding & { readonly user: string }): void => {
    perUser.push({ user: finding.user, finding });
  };
  for (const user of users) {
    if (!ctx.isManaged(user)) continue;
    const u = user as UserId;
    const membership: Membership | undefined = observed.members[u];
    const present = membership === "join" || membership === "invite";
    const want = desiredByUser.get(u);
    const current = levels.of(u);

    if (want) {
      if (present) managedMembers++;
      if (membership === "ban") {
        note({ kind: "banned", user: u });
        continue;
      }
      if (!present) out.invites.push(u);
      if (levels.creators.has(u)) continue; // infinite power; never written into `users`
      let target = want.level;
      if (target > botLevel) {
        note({ kind: "clamped", user: u, role: want.role, wanted: target, botLevel });
        target = botLevel;
      }
      // Their level once the event is sent: their entry, or the (new) users_default.
      const after = levels.hasEntry(u) ? current : usersDefault;
      if (target === after) continue;
      if (current >= botLevel) {
        if (target !== current) note({ kind: "protected", user: u, level: current, botLevel, wanted: target });
        continue;
      }
      if (target < current && externals.has(u)) {
        note({ kind: "external-not-lowered", user: u, from: current, to: target });
        continue;
      }
      if (target < current && ctx.incomplete) {
        note({ kind: "not-lowered-incomplete", user: u, from: current, to: target });
        continue;
      }
      out.changes.push({ user: u, from: current, to: target, removeEntry: target === usersDefault });
      continue;
    }

    // Not desired: a managed user the directory no longer puts in this room.
    if (externals.has(u)) continue; // added by hand: never removed by a sync
    const hasLevel = levels.hasEntry(u) && current !== usersDefault;
    if (!present && !hasLevel) continue;
    if (levels.creators.has(u)) {
      note({ kind: "creator-left-alone", user: u });
      continue;
    }
    if (current >= botLevel) {
      note({ kind: "protected", user: u, level: current, botLevel });
      continue;
    }
    if (present) managedMembers++;
    if (ctx.incomplete) {
      notRemoved.push(u);
      continue;
    }
    if (present && policy.kick) {
      out.removalCandidates.push(u);
    } else {
      if (present) note({ kind: "kicking-off", user: u, ...(policy.kicksOnlyBy !== undefined ? { onlyBy: policy.kicksOnlyBy } : {}) });
      if (hasLevel) {
        const drop = dropEntry(ctx, u, current, usersDefault);
        if (drop.kind === "change") out.changes.push(drop.change);
        else note(drop.finding);
      }
    }
  }
  perUser.sort((a, b) => compare(a.user, b.user));
  out.findings.push(...perUser.map((p) => p.finding));
  if (notRemoved.length > 0) out.findings.push({ kind: "not-removed-incomplete", users: notRemoved.sort(compare) });
  out.invites.sort(compare);
  out.removalCandidates.sort(compare);
  return { ...out, managedMembers };
}

/** Removes a user's entry, unless that would raise them to a users_default above our own level. */
function dropEntry(
  ctx: RoomContext,
  u: UserId,
  current: number,
  usersDefault: number,
): { kind: "change"; change: PowerLevelChange } | { kind: "kept"; finding: Extract<Finding, { kind: "entry-kept" }> } {
  if (usersDefault > ctx.botLevel) return { kind: "kept", finding: { kind: "entry-kept", user: u, level: current, usersDefault, botLevel: ctx.botLevel } };
  return { kind: "change", change: { user: u, from: current, to: usersDefault, removeEntry: true } };
}

/** Guard rail: a mass removal is held for an operator to release. */
function guardRemovals(ctx: RoomContext, candidates: readonly UserId[], managed: number): { kicks: UserId[]; held: HeldRemoval[]; findings: Finding[] } {
  const { memory, policy } = ctx;
  const released = new Set<string>(memory.released);
  const heldBefore = new Set<string>(memory.held);
  const guarded = candidates.filter((u) => !released.has(u));
  const tooMany = exceedsGuard(guarded.length, managed, policy.maxRemovals);
  const heldUsers = new Set<string>(tooMany ? guarded : guarded.filter((u) => heldBefore.has(u)));
  const findings: Finding[] = tooMany ? [{ kind: "guard-held", count: guarded.length, managed, limit: policy.maxRemovals }] : [];
  const kicks: UserId[] = [];
  const held: HeldRemoval[] = [];
  for (const u of candidates) {
    if (heldUsers.has(u)) held.push({ kind: "kick", user: u, reason: policy.kickReason });
    else kicks.push(u);
  }
  return { kicks, held, findings };
}

function exceedsGuard(n: number, managed: number, limit: Policy["maxRemovals"]): boolean {
  if (n === 0) return false;
  if (limit.count !== undefined && n > limit.count) return true;
  // The share limit always allows a single removal, so that small rooms can still shrink.
  if (limit.share !== undefined && n > 1 && n > limit.share * managed) return true;
  return false;
}

/** Spec defaults of the top-level fields when the content lacks them. */
const FIELD_DEFAULTS: Readonly<Record<PowerLevelField, number>> = {
  users_default: 0,
  events_default: 0,
  state_default: 50,
  invite: 0,
  kick: 50,
  ban: 50,
  redact: 50,
};
const NOTIFICATIONS_ROOM_DEFAULT = 50;

function levelIn(map: unknown, key: string): number | undefined {
  if (typeof map !== "object" || map === null || !Object.hasOwn(map, key)) return undefined;
  const v = (map as Record<string, unknown>)[key];
  return typeof v === "number" ? v : undefined;
}

/**
 * The template's power-level fields that differ from the room's, under the auth rules
 * (Synapse `_check_power_levels`): a field whose current or wanted value is above our level
 * is left with a finding. Lowering users_default is left too when it would lower members
 * this sync does not manage, or while the directory data is incomplete (no demotions).
 */
function templateFields(ctx: RoomContext): { changes: PowerLevelFieldChange[]; findings: Finding[]; usersDefault: number } {
  const { levels, botLevel } = ctx;
  const template = ctx.desired.template?.powerLevels;
  const changes: PowerLevelFieldChange[] = [];
  const findings: Finding[] = [];
  let usersDefault = levels.usersDefault;
  if (template === undefined) return { changes, findings, usersDefault };
  const content = levels.content;
  const consider = (field: string, from: number | undefined, effective: number, to: number): boolean => {
    if (from === undefined ? effective === to : from === to) return false;
    if ((from !== undefined && from > botLevel) || to > botLevel) {
      findings.push({ kind: "field-above-bot", field, ...(from !== undefined ? { from } : {}), to, botLevel });
      return false;
    }
    changes.push({ field, ...(from !== undefined ? { from } : {}), to });
    return true;
  };
  for (const field of POWER_LEVEL_FIELDS) {
    const to = template[field];
    if (to === undefined) continue;
    const from = levelIn(content, field);
    // Without any power levels event, state events need level 0 (the spec), not 50.
    const effective = from ?? (field === "state_default" && ctx.observed.powerLevels === undefined ? 0 : FIELD_DEFAULTS[field]);
    if (consider(field, from, effective, to) && field === "users_default") usersDefault = to;
  }
  const room = template.notifications?.room;
  if (room !== undefined) {
    const from = levelIn(content.notifications, "room");
    consider("notifications.room", from, from ?? NOTIFICATIONS_ROOM_DEFAULT, room);
  }
  for (const [type, to] of Object.entries(template.events ?? {}).sort(([a], [b]) => compare(a, b))) {
    // An absent entry falls back to state_default or events_default, which one depends on
    // whether the type is sent as state: the entry is always written.
    consider(`events.${type}`, levelIn(content.events, type), Number.NaN, to);
  }
  return { changes, findings, usersDefault };
}

/**
 * Who a users_default change would move that it must not: everyone the room knows of (any
 * membership) and the bot, who has no `users` entry once the event is sent (`changes` are the
 * members' entries it writes or removes) — the bot itself, anyone at or above the bot's level,
 * users this sync does not manage; when lowering also externals, and anyone while the
 * directory data is incomplete (no demotions then).
 */
function usersDefaultBlocked(ctx: RoomContext, changes: readonly PowerLevelChange[], to: number): UserId[] {
  const { levels, botLevel, policy } = ctx;
  const lowering = to < levels.usersDefault;
  const entry = new Map<string, boolean>();
  for (const c of changes) entry.set(c.user, !c.removeEntry);
  const hasEntryAfter = (u: string): boolean => entry.get(u) ?? levels.hasEntry(u);
  const externals = new Set<string>(ctx.memory.externals);
  const out: UserId[] = [];
  for (const u of new Set([...Object.keys(ctx.observed.members), policy.bot])) {
    if (levels.creators.has(u) || hasEntryAfter(u)) continue;
    const stays =
      u === policy.bot ||
      levels.of(u) >= botLevel ||
      !ctx.isManaged(u) ||
      (lowering && (externals.has(u) || ctx.incomplete));
    if (stays) out.push(u as UserId);
  }
  return out.sort(compare);
}

/** The level a state event of `type` needs once the template's field changes are applied. */
function levelAfter(levels: RoomLevels, fields: readonly PowerLevelFieldChange[], type: string): number {
  const entry = fields.find((f) => f.field === `events.${type}`);
  if (entry) return entry.to;
  const current = levels.stateLevel(type);
  if (levelIn(levels.content.events, type) !== undefined) return current;
  return fields.find((f) => f.field === "state_default")?.to ?? current;
}

/**
 * The one `m.room.power_levels` event: the current content with only the changed `users`
 * entries and template fields touched (levels given as strings in old rooms written as
 * integers, as a new event must have them); v12 creators never written.
 */
function powerLevelsEvent(
  ctx: RoomContext,
  changes: readonly PowerLevelChange[],
  fields: readonly PowerLevelFieldChange[],
): { action?: ActionOf<"set-power-levels">; findings: Finding[] } {
  if (changes.length === 0 && fields.length === 0) return { findings: [] };
  const sorted = [...changes].sort((a, b) => compare(a.user, b.user));
  const findings: Finding[] = [];
  const content = withChanges(ctx.levels, sorted, fields, findings);
  // A room without a power levels event requires level 0 for state events; an event without
  // state_default would make it 50 (the spec's default): the first event keeps it at 0.
  const first = ctx.observed.powerLevels === undefined && !Object.hasOwn(content, "state_default") ? { state_default: 0 } : {};
  return { action: { kind: "set-power-levels", changes: sorted, fields, content: { ...content, ...first } }, findings };
}

function withChanges(levels: RoomLevels, changes: readonly PowerLevelChange[], fields: readonly PowerLevelFieldChange[], findings: Finding[]): PowerLevelsContent {
  const users: Record<string, unknown> = { ...(levels.content.users ?? {}) };
  for (const c of changes) {
    if (c.removeEntry) delete users[c.user];
    else users[c.user] = c.to;
  }
  for (const creator of levels.creators) {
    if (Object.hasOwn(users, creator)) {
      delete users[creator];
      findings.push({ kind: "creator-entry-dropped", user: creator as UserId });
    }
  }
  const content: Record<string, unknown> = { ...levels.content, users };
  for (const f of fields) {
    const dot = f.field.indexOf(".");
    if (dot < 0) {
      content[f.field] = f.to;
      continue;
    }
    const dir = f.field.slice(0, dot);
    const key = f.field.slice(dot + 1);
    const map = content[dir];
    content[dir] = { ...(typeof map === "object" && map !== null ? map : {}), [key]: f.to };
  }
  return content;
}

type StateDecision = { readonly actions: ActionOf<"set-state">[]; readonly findings: Finding[] };

function stateContent(ctx: RoomContext, type: ObservedStateType, stateKey = ""): Readonly<Record<string, unknown>> | undefined {
  return ctx.observed.state?.[type]?.[stateKey];
}

function stringField(content: Readonly<Record<string, unknown>> | undefined, key: string): string | undefined {
  const v = content?.[key];
  return typeof v === "string" ? v : undefined;
}


/** History visibility, join rule, guest access, name and topic: one event each, when different. */
function templateState(ctx: RoomContext): StateDecision[] {
  const t: RoomTemplate | undefined = ctx.desired.template;
  if (t === undefined) return [];
  const out: StateDecision[] = [];
  const simple = (type: ObservedStateType, key: string, want: string | undefined, absent: string | null): void => {
    if (want === undefined) return;
    const now = stringField(stateContent(ctx, type), key) ?? absent;
    if (now === want) return;
    out.push({ actions: [{ kind: "set-state", type, stateKey: "", content: { [key]: want }, from: now, to: want }], findings: [] });
  };
  // Absent events mean: history "shared", guests "forbidden" (the spec's defaults).
  simple("m.room.history_visibility", "history_visibility", t.historyVisibility, "shared");
  if (t.joinRule !== undefined) out.push(joinRule(ctx, t.joinRule));
  simple("m.room.guest_access", "guest_access", t.guestAccess, "forbidden");
  simple("m.room.name", "name", t.name, null);
  simple("m.room.topic", "topic", t.topic, null);
  if (t.encryption && stateContent(ctx, "m.room.encryption") === undefined) out.push({ actions: [], findings: [{ kind: "not-encrypted" }] });
  return out;
}

function joinRule(ctx: RoomContext, want: JoinRuleSetting): StateDecision {
  const since = JOIN_RULE_SINCE[want.rule];
  const version = ctx.observed.roomVersion;
  if (since !== undefined && roomVersionNumber(version) < since) {
    return { actions: [], findings: [{ kind: "join-rule-unsupported", rule: want.rule, roomVersion: version, since }] };
  }
  const current = stateContent(ctx, "m.room.join_rules");
  const rule = stringField(current, "join_rule") ?? "invite";
  const spaces = "spaces" in want ? [...new Set(want.spaces)].sort(compare) : [];
  const allowed = allowedRooms(current);
  const findings: Finding[] = [];
  const ids = spaces.filter((s) => s.startsWith("!"));
  const unknown = spaces.filter((s) => !s.startsWith("!"));
  if (unknown.length > 0) {
    // Spaces without an id yet (a dry run before their creation): shown as the run would
    // send it, naming them by reference.
    const to = `${want.rule} (members of ${spaces.join(", ")})`;
    return {
      actions: [{ kind: "set-state", type: "m.room.join_rules", stateKey: "", content: { join_rule: want.rule }, from: rule, to, pending: unknown.join(", ") }],
      findings,
    };
  }
  const same = rule === want.rule && (!("spaces" in want) || (allowed.length === ids.length && allowed.every((r, i) => r === ids[i])));
  if (same) return { actions: [], findings };
  const content: Record<string, unknown> = { join_rule: want.rule };
  if ("spaces" in want) content["allow"] = ids.map((room_id) => ({ type: "m.room_membership", room_id }));
  const to = "spaces" in want ? `${want.rule} (members of ${ids.join(", ")})` : want.rule;
  const from = rule === "restricted" || rule === "knock_restricted" ? `${rule} (members of ${allowed.join(", ")})` : rule;
  return { actions: [{ kind: "set-state", type: "m.room.join_rules", stateKey: "", content, from: current === undefined ? null : from, to }], findings };
}

function allowedRooms(content: Readonly<Record<string, unknown>> | undefined): string[] {
  const allow = content?.["allow"];
  if (!Array.isArray(allow)) return [];
  const ids = allow.flatMap((a: unknown) => {
    if (typeof a !== "object" || a === null) return [];
    const e = a as Record<string, unknown>;
    return e["type"] === "m.room_membership" && typeof e["room_id"] === "string" ? [e["room_id"]] : [];
  });
  return [...new Set(ids)].sort(compare);
}

/** A link that counts: `via` is a non-empty list of server names (the spec ignores others). */
function linked(content: Readonly<Record<string, unknown>> | undefined): boolean {
  const via = content?.["via"];
  return Array.isArray(via) && via.length > 0 && via.every((v) => typeof v === "string");
}

function ours(ctx: RoomContext, type: "m.space.child" | "m.space.parent", stateKey: string): boolean {
  return (ctx.memory.links ?? []).some((l) => l.type === type && l.stateKey === stateKey);
}

function via(ctx: RoomContext): string[] {
  return [serverNameOf(ctx.policy.bot)];
}

/** What the child-link rule reads: the space's desired children, its `m.space.child` state, our links. */
interface ChildLinkInput {
  readonly desired: DesiredRoom;
  readonly children: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  readonly links: readonly SpaceLinkKey[];
  readonly incomplete: boolean;
  readonly bot: UserId;
}

function spaceChildren(ctx: RoomContext): { actions: Action[]; findings: Finding[] } {
  return childLinks({
    desired: ctx.desired,
    children: ctx.observed.state?.["m.space.child"] ?? {},
    links: ctx.memory.links ?? [],
    incomplete: ctx.incomplete,
    bot: ctx.policy.bot,
  });
}

/**
 * The child links of a space created in this run (it has no state yet): every desired child
 * linked, by the same rule as an existing space's.
 */
export function planNewSpaceChildren(desired: DesiredRoom, policy: Policy): { actions: Action[]; findings: Finding[] } {
  return childLinks({ desired, children: {}, links: [], incomplete: desired.incompleteGroups.length > 0, bot: policy.bot });
}

/**
 * A space's children: linked when managed and missing (a child without an id yet is shown
 * pending when this service will create it, and left with a finding when it cannot: an alias
 * of another server that does not resolve); unlinked only when ours and no longer wanted.
 */
function childLinks(input: ChildLinkInput): { actions: Action[]; findings: Finding[] } {
  const space = input.desired.space;
  if (space === undefined) return { actions: [], findings: [] };
  const via = [serverNameOf(input.bot)];
  const actions: Action[] = [];
  const findings: Finding[] = [];
  const wanted = new Set<string>();
  // By reference: the same order whether the ids are known yet (a dry run before creation) or not.
  const sorted = [...space.children].sort((a, b) => compare(a.ref, b.ref));
  for (const child of sorted) {
    if (child.roomId === undefined) {
      if (!creatable(child.ref, input.bot).ok) {
        findings.push({ kind: "child-unreachable", child: child.ref, server: serverNameOf(input.bot) });
        continue;
      }
      actions.push({ kind: "add-child", child: child.ref, via });
      findings.push({ kind: "child-pending", child: child.ref });
      continue;
    }
    wanted.add(child.roomId);
    if (!linked(input.children[child.roomId])) actions.push({ kind: "add-child", child: child.ref, childId: child.roomId, via });
  }
  const removals: Action[] = [];
  for (const [key, content] of Object.entries(input.children).sort(([a], [b]) => compare(a, b))) {
    if (wanted.has(key) || !linked(content)) continue;
    if (!input.links.some((l) => l.type === "m.space.child" && l.stateKey === key)) findings.push({ kind: "link-not-ours", type: "m.space.child", room: key });
    else if (input.incomplete) continue; // the directory may still want it: no removals on partial knowledge
    else removals.push({ kind: "remove-child", child: key, childId: key as RoomId });
  }
  return { actions: [...removals, ...actions], findings };
}

/** A child's `m.space.parent` links to the spaces that list it. */
function parentLinks(ctx: RoomContext): StateDecision[] {
  const parents: readonly DesiredLink[] | undefined = ctx.desired.parents;
  const observed = ctx.observed.state?.["m.space.parent"] ?? {};
  if (parents === undefined && ctx.memory.links === undefined) return [];
  const actions: ActionOf<"set-state">[] = [];
  const wanted = new Set<string>();
  for (const p of [...(parents ?? [])].sort((a, b) => compare(a.ref, b.ref))) {
    if (p.roomId === undefined) {
      // A space to be created first (a dry run): shown as the run would send it.
      actions.push({ kind: "set-state", type: "m.space.parent", stateKey: p.ref, content: { via: via(ctx) }, from: null, to: `parent ${p.ref}`, pending: p.ref });
      continue;
    }
    wanted.add(p.roomId);
    if (linked(observed[p.roomId])) continue;
    actions.push({ kind: "set-state", type: "m.space.parent", stateKey: p.roomId, content: { via: via(ctx) }, from: null, to: `parent ${p.ref}` });
  }
  const keep = new Set<string>(ctx.desired.keepParents ?? []);
  for (const [key, content] of Object.entries(observed).sort(([a], [b]) => compare(a, b))) {
    if (wanted.has(key) || !linked(content) || !ours(ctx, "m.space.parent", key) || ctx.incomplete || keep.has(key)) continue;
    actions.push({ kind: "set-state", type: "m.space.parent", stateKey: key, content: {}, from: `parent ${key}`, to: "none" });
  }
  return [{ actions, findings: [] }];
}

/** Plans many rooms with the same policy. */
export function plan(
  rooms: readonly { desired: DesiredRoom; observed: ObservedRoom; memory?: RoomMemory }[],
  policy: Policy,
): RoomPlan[] {
  return rooms.map((r) => planRoom(r.desired, r.observed, r.memory ?? EMPTY_MEMORY, policy));
}

/**
 * One level change asked for by an operator command (`!invite-admin`, `!unmanage`), under the
 * same rules as a sync: never above the bot's own level (clamped), never for a user at or
 * above it (unless it is the bot lowering itself), never for a v12 creator, and the rest of
 * the content preserved. `level` undefined removes the user's entry.
 */
export function planLevelChange(
  observed: ObservedRoom,
  bot: UserId,
  user: UserId,
  level: number | undefined,
): { ok: true; content: PowerLevelsContent; change: PowerLevelChange } | { ok: false; reason: string } {
  const reading = readLevels(observed);
  if (!reading.ok) return { ok: false, reason: `the room's state cannot be judged: ${reading.problems.join("; ")}` };
  const levels = reading.levels;
  const botLevel = levels.of(bot);
  if (levels.creators.has(user)) return { ok: false, reason: `${user} is a creator of this room (unlimited power); levels do not apply` };
  const need = levels.required("power_levels");
  if (botLevel < need) return { ok: false, reason: `our level ${fmtLevel(botLevel)} is below ${need}, needed to change power levels` };
  const current = levels.of(user);
  if (user !== bot && current >= botLevel) return { ok: false, reason: `${user} has level ${fmtLevel(current)} ≥ ours (${fmtLevel(botLevel)})` };
  const target = level === undefined ? levels.usersDefault : Math.min(level, botLevel);
  const change: PowerLevelChange = { user, from: current, to: target, removeEntry: level === undefined || target === levels.usersDefault };
  return { ok: true, content: withChanges(levels, [change], [], []), change };
}

/** A level in words: "creator" for a v12 creator's unlimited power. */
export function fmtLevel(level: number): string {
  return level === Infinity ? "creator" : String(level);
}
