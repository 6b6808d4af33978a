/**
 * The words of the planner's vocabulary, once for every surface: a finding as a sentence, a
 * reported action as a table row (what, whom or what field, detail), the counts of a run as
 * one line. The terminal table, the management room's HTML and the JSON notes all use these,
 * so they cannot drift apart.
 */
import type { Finding } from "./findings.ts";
import type { RunKind } from "./kick-rule.ts";
import { fmtLevel } from "./plan.ts";
import type { ReportAction, RunReport } from "./report.ts";

/** How many users a note names before it only counts the rest. */
const NOTE_NAMES = 5;

function some(users: readonly string[]): string {
  if (users.length <= NOTE_NAMES) return users.join(", ");
  return `${users.length} users, among them ${users.slice(0, NOTE_NAMES).join(", ")} and ${users.length - NOTE_NAMES} more`;
}

const WHAT: Readonly<Record<"kick" | "invite" | "power_levels", string>> = { kick: "kick", invite: "invite", power_levels: "change power levels" };

function describeGuard(limit: { readonly count?: number; readonly share?: number }): string {
  const parts: string[] = [];
  if (limit.count !== undefined) parts.push(`at most ${limit.count}`);
  if (limit.share !== undefined) parts.push(`at most ${Math.round(limit.share * 100)}% of managed members`);
  return parts.join(", ");
}

/** Why a run made no kicks when only the other kind of run does, and how to get them. */
export const KICKS_ONLY_BY: Readonly<Record<RunKind, string>> = {
  manual: "kicks are made only by manual runs (sync.kickOn: manual): run !sync or matrix-group-sync sync",
  scheduled: "kicks are made only by scheduled runs (sync.kickOn: scheduled): the service's next scheduled run makes them",
};

export function findingText(f: Finding): string {
  switch (f.kind) {
    case "directory":
      return f.text;
    case "not-joined":
      return `not managed: ${f.bot} is not joined to this room`;
    case "bot-level-too-low": {
      const need = Math.max(...f.lacking.map((l) => l.need));
      const what = f.lacking.map((l) => `${WHAT[l.what]} (needs ${l.need})`).join(", ");
      return `our level ${fmtLevel(f.botLevel)} is too low to ${what}: raise ${f.bot} to at least ${need} in this room`;
    }
    case "incomplete":
      return `directory data incomplete (${f.groups.join(", ")}): no removals or demotions in this run`;
    case "foreign-user":
      return `${f.user}: not in a managed domain, left alone`;
    case "banned":
      return `${f.user}: banned, not re-invited`;
    case "clamped":
      return `${f.user}: role ${f.role} wants level ${f.wanted}, above ours (${fmtLevel(f.botLevel)}); set to ${fmtLevel(f.botLevel)}`;
    case "protected":
      return f.wanted === undefined
        ? `${f.user}: not in a mapped group, but level ${fmtLevel(f.level)} ≥ ours (${fmtLevel(f.botLevel)}), left alone`
        : `${f.user}: level ${fmtLevel(f.level)} ≥ ours (${fmtLevel(f.botLevel)}), left alone (wanted ${f.wanted})`;
    case "external-not-lowered":
      return `${f.user}: added by hand (external), not lowered from ${f.from} to ${f.to}`;
    case "not-lowered-incomplete":
      return `${f.user}: not lowered from ${f.from} to ${f.to}: directory data incomplete`;
    case "creator-left-alone":
      return `${f.user}: not in a mapped group, but a room creator (unlimited power), left alone`;
    case "kicking-off":
      return f.onlyBy === undefined
        ? `${f.user}: not in a mapped group; kicking is off (sync.kickOn: never), left in the room`
        : `${f.user}: not in a mapped group; left in the room: ${KICKS_ONLY_BY[f.onlyBy]}`;
    case "entry-kept":
      return `${f.user}: entry ${f.level} kept: removing it would raise them to users_default ${f.usersDefault}, above ours (${fmtLevel(f.botLevel)})`;
    case "not-removed-incomplete":
      return `not removed (directory data incomplete): ${some(f.users)}`;
    case "guard-held":
      return `${f.count} removals of ${f.managed} managed members exceed the limit (${describeGuard(f.limit)}): held for release`;
    case "cannot":
      return f.what === "power_levels"
        ? `cannot change power levels (${f.count} change(s)): our level ${fmtLevel(f.botLevel)} is below ${f.need}`
        : `cannot ${f.what} ${f.count} user(s): our level ${fmtLevel(f.botLevel)} is below the ${f.what} level ${f.need}`;
    case "creator-entry-dropped":
      return `${f.user}: creator listed in power levels users; entry dropped (room v12 forbids it)`;
    case "field-above-bot":
      return `permission ${f.field}: the template wants ${f.to}, but ${f.to > f.botLevel ? `${f.to} is` : `the current ${f.from ?? "?"} is`} above our level (${fmtLevel(f.botLevel)}); left as it is`;
    case "users-default-kept":
      return `permission users_default: not ${f.to < f.from ? "lowered" : "raised"} from ${f.from} to ${f.to}: it would change the level of users without an entry that this sync must not change now (the bot, users at or above its level, users it does not manage${f.to < f.from ? ", externals, anyone while the directory data is incomplete" : ""}): ${some(f.users)}; give them an entry or change it by hand`;
    case "cannot-set-state":
      return `cannot set ${f.type}: our level ${fmtLevel(f.botLevel)} is below ${f.need}`;
    case "join-rule-unsupported":
      return `join rule ${f.rule} needs room version ${f.since} or later; this room is version ${f.roomVersion}: left as it is (upgrade the room to use it)`;
    case "join-rule-space-unknown":
      return `join rule: space ${f.space} could not be resolved to a room id; the join rule is set once it resolves`;
    case "not-encrypted":
      return "the template asks for encryption, but this room is not encrypted: encryption is set only when a room is created (switch it on by hand if wanted; it cannot be switched off)";
    case "child-pending":
      return `${f.child}: not created yet; linked as a child once it exists`;
    case "child-unreachable":
      return `${f.child}: a child on another server that did not resolve: not linked (only rooms that exist, or aliases of ${f.server} that are created, are linked)`;
    case "link-not-ours":
      return `${f.type} ${f.room}: not added by this service, left alone`;
    default: {
      const never: never = f;
      throw new Error(`unknown finding ${JSON.stringify(never)}`);
    }
  }
}

/** One table row of a reported action: [what, subject, detail]. */
export function actionRow(a: ReportAction): [string, string, string] {
  switch (a.kind) {
    case "create-room":
      return [a.space === true ? "create space" : "create", a.alias, `${a.members} member(s) invited${a.roomId !== undefined ? `, ${a.roomId}` : ""}`];
    case "kick":
      return ["kick", a.user, a.reason];
    case "set-power-levels":
      return "user" in a
        ? ["level", a.user, `${a.from === null ? "creator" : a.from} → ${a.to}`]
        : ["permission", a.field, `${a.from ?? "unset"} → ${a.to}`];
    case "set-state":
      return ["state", a.stateKey === "" ? a.type : `${a.type} ${a.stateKey}`, `${a.from ?? "unset"} → ${a.to}`];
    case "add-child":
      return ["add child", a.child, a.childId ?? "once created"];
    case "remove-child":
      return ["remove child", a.child, "no longer mapped"];
    case "invite":
      return ["invite", a.user, ""];
    default: {
      const never: never = a;
      throw new Error(`unknown action ${JSON.stringify(never)}`);
    }
  }
}

/** The status of a reported action in words, for a run that was (`dryRun` false) or was not applied. */
export function statusText(a: ReportAction, dryRun: boolean): string {
  if (a.outcome === "failed") return `failed: ${a.error ?? "unknown error"}`;
  if (a.outcome === "applied") return "done";
  return dryRun ? "would do" : "not done";
}

export const HELD_TEXT = "kick held by the mass-removal guard";

/** "3 room(s): 2 invite(s), ..." — the one summary line of a run. */
export function countsLine(rooms: number, c: RunReport["counts"]): string {
  return `${rooms} room(s): ${changesText(c)}`;
}

/** "2 invite(s), 1 kick(s), ..., 0 room error(s)": what a run changed, without its room count. */
export function changesText(c: RunReport["counts"]): string {
  const extra = [
    c.created > 0 ? `${c.created} created` : "",
    c.permissions > 0 ? `${c.permissions} permission change(s)` : "",
    c.state > 0 ? `${c.state} state change(s)` : "",
    c.links > 0 ? `${c.links} space link change(s)` : "",
  ].filter((x) => x !== "");
  return `${extra.length > 0 ? `${extra.join(", ")}, ` : ""}${c.invites} invite(s), ${c.kicks} kick(s), ${c.powerLevels} level change(s), ${c.held} held, ${c.failed} failed, ${c.roomErrors} room error(s)`;
}
