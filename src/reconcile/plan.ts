/**
 * The planner: `(desired, observed, memory, policy) → RoomPlan`. Pure: no I/O, no clock.
 * Every rule of the domain lives here (ARCHITECTURE.md, "Rules of the domain"):
 *
 * - Desired members are the union of the mapped groups' recursive members; a user's level is
 *   the highest role any group gives (computed upstream in desired.ts).
 * - Only users of the managed domains are touched; the bot itself, users matching
 *   `ignoreUsers`, recorded externals and v12 creators are never kicked or demoted.
 * - Nobody whose level is at or above the bot's is kicked, demoted or changed; no level is
 *   set above the bot's own (it is clamped, with a note).
 * - Pending invites count as membership; a stale invite is revoked by a kick. A banned user
 *   is reported, never unbanned or re-invited.
 * - All level changes of a room fold into one `m.room.power_levels` event that preserves the
 *   rest of the content; a user who loses every group has their `users` entry removed.
 * - Fail closed: when any group of the room is incomplete, no kicks and no demotions.
 * - Guard rail: when the removals of a room exceed `maxRemovals`, they are held (listed, not
 *   applied); removals held earlier stay held until an operator releases them.
 */
import { serverNameOf, userIdPattern, type UserId } from "../matrix/ids.ts";
import { readLevels, type RoomLevels } from "./levels.ts";
import type {
  Action,
  DesiredMember,
  DesiredRoom,
  HeldRemoval,
  Membership,
  ObservedRoom,
  Policy,
  PowerLevelChange,
  PowerLevelsContent,
  RoomMemory,
  RoomPlan,
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

function fmt(level: number): string {
  return level === Infinity ? "creator" : String(level);
}

/** Plans one room. Deterministic: the same input gives the same plan, sorted by user id. */
export function planRoom(desired: DesiredRoom, observed: ObservedRoom, memory: RoomMemory, policy: Policy): RoomPlan {
  const { domains, ignore } = compile(policy);
  const bot = policy.bot;
  const notes: string[] = [...desired.notes];
  const base = { room: desired.room, roomId: observed.roomId };

  // A room whose state or levels cannot be read as the auth rules read them is not judged:
  // we would not know who is above whom.
  const reading = readLevels(observed);
  if (!reading.ok) {
    return { ...base, actions: [], held: [], notes, error: `cannot judge this room, nothing changed: ${reading.problems.join("; ")}` };
  }
  const levels = reading.levels;
  const botLevel = levels.of(bot);

  if (observed.members[bot] !== "join") {
    notes.push(`not managed: ${bot} is not joined to this room`);
    return { ...base, actions: [], held: [], notes };
  }

  const lacking = (["invite", "kick", "power_levels"] as const).filter((k) => botLevel < levels.required(k));
  if (lacking.length > 0) {
    const need = Math.max(...lacking.map((k) => levels.required(k)));
    notes.push(
      `our level ${fmt(botLevel)} is too low to ${lacking.map((k) => `${k === "power_levels" ? "change power levels" : k} (needs ${levels.required(k)})`).join(", ")}: raise ${bot} to at least ${need} in this room`,
    );
  }

  const incomplete = desired.incompleteGroups.length > 0;
  if (incomplete) {
    notes.push(
      `directory data incomplete (${desired.incompleteGroups.join(", ")}): no removals or demotions in this run`,
    );
  }

  const externals = new Set<string>(memory.externals);
  const heldBefore = new Set<string>(memory.held);
  const released = new Set<string>(memory.released);

  const isManaged = (user: string): boolean =>
    user !== bot && domains.has(serverNameOf(user as UserId).toLowerCase()) && !ignore.some((re) => re.test(user));

  const desiredByUser = new Map<string, DesiredMember>();
  const foreign: string[] = [];
  for (const m of desired.members) {
    if (!isManaged(m.user)) {
      if (m.user !== bot && !domains.has(serverNameOf(m.user).toLowerCase())) foreign.push(m.user);
      continue;
    }
    desiredByUser.set(m.user, m);
  }
  for (const u of foreign.sort()) notes.push(`${u}: not in a managed domain, left alone`);

  const invites: UserId[] = [];
  const removalCandidates: UserId[] = [];
  const changes: PowerLevelChange[] = [];
  const notRemovedWhy: string[] = [];

  // Every user the directory or the room knows of, each once. The order of visiting does not
  // matter: everything collected per user is sorted below, so the plan is deterministic.
  const users: string[] = [...desiredByUser.keys()];
  for (const u of Object.keys(observed.members)) if (!desiredByUser.has(u)) users.push(u);
  for (const u of Object.keys(levels.users)) if (!desiredByUser.has(u) && !Object.hasOwn(observed.members, u)) users.push(u);
  const userNotes: [string, string][] = [];
  const note = (u: string, text: string): void => {
    userNotes.push([u, `${u}: ${text}`]);
  };

  /** Removes a user's entry, unless that would raise them to a users_default above our own level. */
  const dropEntry = (u: UserId, current: number): void => {
    if (levels.usersDefault > botLevel) {
      note(u, `entry ${current} kept: removing it would raise them to users_default ${levels.usersDefault}, above ours (${fmt(botLevel)})`);
      return;
    }
    changes.push({ user: u, from: current, to: levels.usersDefault, removeEntry: true });
  };

  let managedMembers = 0;
  for (const user of users) {
    if (!isManaged(user)) continue;
    const u = user as UserId;
    const membership: Membership | undefined = observed.members[u];
    const present = membership === "join" || membership === "invite";
    const want = desiredByUser.get(u);
    const current = levels.of(u);
    const isCreator = levels.creators.has(u);
    const protectedUser = current >= botLevel;

    if (want) {
      if (present) managedMembers++;
      if (membership === "ban") {
        note(u, `banned, not re-invited`);
        continue;
      }
      if (!present) invites.push(u);
      if (isCreator) continue; // infinite power; never written into `users`
      let target = want.level;
      if (target > botLevel) {
        note(u, `role ${want.role} wants level ${target}, above ours (${fmt(botLevel)}); set to ${fmt(botLevel)}`);
        target = botLevel;
      }
      if (target === current) continue;
      if (protectedUser) {
        note(u, `level ${fmt(current)} ≥ ours (${fmt(botLevel)}), left alone (wanted ${target})`);
        continue;
      }
      if (target < current && externals.has(u)) {
        note(u, `added by hand (external), not lowered from ${current} to ${target}`);
        continue;
      }
      if (target < current && incomplete) {
        note(u, `not lowered from ${current} to ${target}: directory data incomplete`);
        continue;
      }
      changes.push({ user: u, from: current, to: target, removeEntry: target === levels.usersDefault });
      continue;
    }

    // Not desired: a managed user the directory no longer puts in this room.
    if (externals.has(u)) continue; // added by hand: never removed by a sync
    const hasLevel = levels.hasEntry(u) && current !== levels.usersDefault;
    if (!present && !hasLevel) continue;
    if (isCreator) {
      note(u, `not in a mapped group, but a room creator (unlimited power), left alone`);
      continue;
    }
    if (protectedUser) {
      note(u, `not in a mapped group, but level ${fmt(current)} ≥ ours (${fmt(botLevel)}), left alone`);
      continue;
    }
    if (present) managedMembers++;
    if (incomplete) {
      notRemovedWhy.push(u);
      continue;
    }
    if (present && policy.kick) {
      removalCandidates.push(u);
    } else {
      if (present) note(u, `not in a mapped group; kicking is off, left in the room`);
      if (hasLevel) dropEntry(u, current);
    }
  }
  userNotes.sort((a, b) => compare(a[0], b[0]));
  for (const [, text] of userNotes) notes.push(text);
  if (notRemovedWhy.length > 0) notes.push(notRemovedNote(notRemovedWhy.sort(compare)));
  invites.sort(compare);
  removalCandidates.sort(compare);

  // Guard rail: a mass removal is held for an operator to release.
  const guarded = removalCandidates.filter((u) => !released.has(u));
  const tooMany = exceedsGuard(guarded.length, managedMembers, policy.maxRemovals);
  const heldUsers = new Set<string>(tooMany ? guarded : guarded.filter((u) => heldBefore.has(u)));
  if (tooMany) {
    notes.push(
      `${guarded.length} removals of ${managedMembers} managed members exceed the limit (${describeGuard(policy.maxRemovals)}): held for release`,
    );
  }

  const kicks: UserId[] = [];
  const held: HeldRemoval[] = [];
  for (const u of removalCandidates) {
    if (heldUsers.has(u)) {
      held.push({ kind: "kick", user: u, reason: policy.kickReason });
      continue;
    }
    kicks.push(u);
    if (levels.hasEntry(u) && levels.of(u) !== levels.usersDefault) dropEntry(u, levels.of(u));
  }

  // Permission checks: a room where we lack a level gets a clear note instead of failing actions.
  const actions: Action[] = [];
  if (kicks.length > 0) {
    const need = levels.required("kick");
    if (botLevel >= need) {
      for (const u of kicks) actions.push({ kind: "kick", user: u, reason: policy.kickReason });
    } else {
      notes.push(`cannot kick ${kicks.length} user(s): our level ${fmt(botLevel)} is below the kick level ${need}`);
    }
  }
  if (changes.length > 0) {
    const need = levels.required("power_levels");
    if (botLevel >= need) {
      changes.sort((a, b) => compare(a.user, b.user));
      actions.push({ kind: "set-power-levels", changes, content: newPowerLevels(levels, changes, notes) });
    } else {
      notes.push(`cannot change power levels of ${changes.length} user(s): our level ${fmt(botLevel)} is below ${need}`);
    }
  }
  if (invites.length > 0) {
    const need = levels.required("invite");
    if (botLevel >= need) {
      for (const u of invites) actions.push({ kind: "invite", user: u });
    } else {
      notes.push(`cannot invite ${invites.length} user(s): our level ${fmt(botLevel)} is below the invite level ${need}`);
    }
  }

  return { ...base, actions, held, notes };
}

/** How many users a note names before it only counts the rest. */
const NOTE_NAMES = 5;

/** "not removed" with a count and the first few: a 2,500-member group must not give a 60 KB note. */
function notRemovedNote(users: readonly string[]): string {
  if (users.length <= NOTE_NAMES) return `not removed (directory data incomplete): ${users.join(", ")}`;
  return `not removed (directory data incomplete): ${users.length} users, among them ${users.slice(0, NOTE_NAMES).join(", ")} and ${users.length - NOTE_NAMES} more`;
}

function exceedsGuard(n: number, managed: number, limit: Policy["maxRemovals"]): boolean {
  if (n === 0) return false;
  if (limit.count !== undefined && n > limit.count) return true;
  // The share limit always allows a single removal, so that small rooms can still shrink.
  if (limit.share !== undefined && n > 1 && n > limit.share * managed) return true;
  return false;
}

function describeGuard(limit: Policy["maxRemovals"]): string {
  const parts: string[] = [];
  if (limit.count !== undefined) parts.push(`at most ${limit.count}`);
  if (limit.share !== undefined) parts.push(`at most ${Math.round(limit.share * 100)}% of managed members`);
  return parts.join(", ");
}

/**
 * The current content with only the changed `users` entries touched (levels given as strings
 * in old rooms written as integers, as a new event must have them); v12 creators never written.
 */
function newPowerLevels(levels: RoomLevels, changes: readonly PowerLevelChange[], notes: string[]): PowerLevelsContent {
  const users: Record<string, unknown> = { ...(levels.content.users ?? {}) };
  for (const c of changes) {
    if (c.removeEntry) delete users[c.user];
    else users[c.user] = c.to;
  }
  for (const creator of levels.creators) {
    if (Object.hasOwn(users, creator)) {
      delete users[creator];
      notes.push(`${creator}: creator listed in power levels users; entry dropped (room v12 forbids it)`);
    }
  }
  return { ...levels.content, users: users as Record<string, number> };
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
  if (botLevel < need) return { ok: false, reason: `our level ${fmt(botLevel)} is below ${need}, needed to change power levels` };
  const current = levels.of(user);
  if (user !== bot && current >= botLevel) return { ok: false, reason: `${user} has level ${fmt(current)} ≥ ours (${fmt(botLevel)})` };
  const target = level === undefined ? levels.usersDefault : Math.min(level, botLevel);
  const change: PowerLevelChange = { user, from: current, to: target, removeEntry: level === undefined || target === levels.usersDefault };
  const notes: string[] = [];
  return { ok: true, content: newPowerLevels(levels, [change], notes), change };
}
