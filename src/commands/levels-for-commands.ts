/**
 * Pure decisions the hand-made room commands take about power levels, before any request:
 * whom `!unmanage` may hand a room to, and which level `!invite-admin` gives. Levels are read
 * by the planner's reader (reconcile/levels.ts), under the room version's auth rules.
 */
import type { UserId } from "../matrix/ids.ts";
import { readLevels, type RoomLevels } from "../reconcile/levels.ts";
import type { ObservedRoom } from "../reconcile/types.ts";

function levels(room: ObservedRoom): { ok: true; levels: RoomLevels } | { ok: false; reason: string } {
  const reading = readLevels(room);
  const problems = [...(room.problems ?? []), ...(reading.ok ? [] : reading.problems)];
  if (!reading.ok || problems.length > 0) return { ok: false, reason: `the room's state cannot be judged: ${problems.join("; ")}` };
  return { ok: true, levels: reading.levels };
}

export function formatLevel(level: number): string {
  return level === Infinity ? "creator (unlimited)" : String(level);
}

/**
 * Whom `!unmanage` may hand a room to (the caller has already made sure they have joined):
 * - never the bot itself: it lowers its own level and leaves, and the room would have no admin;
 * - a room v12 creator keeps unlimited power: nothing to raise;
 * - someone already at or above the bot's level, and able to change power levels, keeps what
 *   they have: they hold every power the bot held, and the bot could not raise them anyway;
 * - anyone else is raised to the admin role's level, at most the bot's own, and only when that
 *   level lets them change power levels (otherwise nobody could administer the room after us).
 *   Users of other servers may be raised like anyone.
 */
export type Handover =
  | { readonly kind: "refuse"; readonly reason: string }
  | { readonly kind: "keep"; readonly note: string }
  | { readonly kind: "raise"; readonly level: number };

export function planHandover(room: ObservedRoom, bot: UserId, successor: UserId, adminLevel: number): Handover {
  if (successor === bot) {
    return { kind: "refuse", reason: `${successor} is this bot: it lowers its own level and leaves, so the room would be left with no admin. Name the person who takes it over.` };
  }
  const read = levels(room);
  if (!read.ok) return { kind: "refuse", reason: read.reason };
  if (read.levels.creators.has(successor)) {
    return { kind: "keep", note: `${successor} is a creator of the room (unlimited power); no level change needed` };
  }
  const need = read.levels.required("power_levels");
  const ours = read.levels.of(bot);
  const theirs = read.levels.of(successor);
  if (theirs >= ours && theirs >= need) {
    return { kind: "keep", note: `${successor} is already at level ${formatLevel(theirs)}, at or above ours (${formatLevel(ours)}); no level change needed` };
  }
  if (ours < need) {
    return { kind: "refuse", reason: `our level ${formatLevel(ours)} is below ${need}, needed to change power levels, so we cannot raise ${successor}` };
  }
  if (theirs >= ours) {
    return { kind: "refuse", reason: `${successor} has level ${formatLevel(theirs)} ≥ ours (${formatLevel(ours)}), which we cannot change, and it does not let them change power levels (${need} needed)` };
  }
  const level = Math.min(adminLevel, ours);
  if (level < need) {
    return { kind: "refuse", reason: `the admin role's level ${adminLevel} (at most ours, ${formatLevel(ours)}) would not let ${successor} change power levels (${need} needed)` };
  }
  return { kind: "raise", level };
}

/**
 * The level `!invite-admin` gives: the admin role's, unless that is at or above the bot's own.
 * At the bot's own level `!kick-member` could never remove them again (the homeserver lets us
 * kick or lower only users below us), so that takes `equal` (the `--equal` flag); otherwise
 * they get one below ours. Undefined `note` when the role's level is given as configured.
 */
export function inviteAdminLevel(room: ObservedRoom, bot: UserId, adminLevel: number, equal: boolean): { level: number; note?: string } {
  const read = levels(room);
  if (!read.ok) return { level: adminLevel }; // planLevelChange refuses it, saying why
  const ours = read.levels.of(bot);
  if (ours === Infinity || adminLevel < ours) return { level: adminLevel };
  if (equal) {
    return {
      level: ours,
      note: `given our own level ${ours} (--equal): from now on !kick-member cannot remove them or lower their level; only someone above us can`,
    };
  }
  return {
    level: ours - 1,
    note: `given level ${ours - 1}, one below ours, rather than the admin role's ${adminLevel}: at our own level ${ours} !kick-member could never remove them. Run it again with --equal to give them ${ours} anyway`,
  };
}

/**
 * `!unmanage ROOM` with nobody named (the inviterbot's form): allowed only when someone else
 * who has joined already holds every power the bot holds — a creator (room version 12), or
 * someone at or above the bot's level who may change power levels — so that the room keeps
 * an admin when the bot lowers itself and leaves. Otherwise refused, saying why.
 */
export function planUnmanageAlone(room: ObservedRoom, bot: UserId): Handover {
  const read = levels(room);
  if (!read.ok) return { kind: "refuse", reason: read.reason };
  const need = read.levels.required("power_levels");
  const ours = read.levels.of(bot);
  const joined = Object.entries(room.members)
    .filter(([user, membership]) => membership === "join" && user !== bot)
    .map(([user]) => user as UserId)
    .sort();
  const holders = joined.filter((u) => read.levels.creators.has(u) || (read.levels.of(u) >= ours && read.levels.of(u) >= need));
  if (holders.length > 0) {
    const shown = holders.slice(0, 3).join(", ") + (holders.length > 3 ? ` and ${holders.length - 3} more` : "");
    return { kind: "keep", note: `${shown} already ${holders.length === 1 ? "has" : "have"} our level (${formatLevel(ours)}) or more; no level change needed` };
  }
  return {
    kind: "refuse",
    reason: `no other member who has joined has our level (${formatLevel(ours)}) and may change power levels (${need}), so the room would be left with no admin. Name who takes it over: unmanage ROOM @user:server`,
  };
}

/**
 * Whether the bot can keep a room in step: it must be able to invite, kick and change power
 * levels (each at the room's required level). Undefined when it can; otherwise why not, in
 * words an operator can act on.
 */
export function cannotSync(room: ObservedRoom, bot: UserId): string | undefined {
  const read = levels(room);
  if (!read.ok) return read.reason;
  const ours = read.levels.of(bot);
  const short = (["invite", "kick", "power_levels"] as const).filter((k) => ours < read.levels.required(k));
  if (short.length === 0) return undefined;
  const need = Math.max(...short.map((k) => read.levels.required(k)));
  return `the bot's level ${formatLevel(ours)} is below what ${short.map((k) => k.replace("_", " ")).join(", ")} need (${need}): raise the bot to ${need} or more in the room`;
}
