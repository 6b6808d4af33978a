/**
 * Reports: the per-room outcome of a run, as JSON (machine-readable) and as a table for a
 * terminal or a management room. A dry run's report lists exactly the actions a real run
 * with the same input would apply.
 */
import type { ActionResult } from "./apply.ts";
import type { ActionKind, HeldRemoval } from "./types.ts";
import { actionRow, countsLine, HELD_TEXT } from "./words.ts";

/**
 * One entry per change, named by the kind of the action it belongs to (the one vocabulary of
 * types.ts): the one power-levels event becomes one entry per changed user and per changed
 * template field; a created room is one entry.
 */
export type ReportAction = (
  | { kind: "create-room"; alias: string; roomId?: string; members: number; space?: true }
  | { kind: "kick"; user: string; reason: string }
  | { kind: "set-power-levels"; user: string; from: number | null; to: number }
  | { kind: "set-power-levels"; field: string; from: number | null; to: number }
  | { kind: "set-state"; type: string; stateKey: string; from: string | null; to: string }
  | { kind: "add-child"; child: string; childId?: string }
  | { kind: "remove-child"; child: string }
  | { kind: "invite"; user: string }
) & { outcome?: ActionOutcomeText; error?: string };

// Every action kind has report entries of its own kind.
type Covered = ReportAction["kind"] extends ActionKind ? (ActionKind extends ReportAction["kind"] ? true : never) : never;
const covered: Covered = true;
void covered;

export type ActionOutcomeText = "applied" | "failed";

export interface RoomReport {
  /** The room as configured (alias or id). */
  room: string;
  roomId: string | null;
  actions: ReportAction[];
  held: { kind: "kick"; user: string; reason: string }[];
  notes: string[];
  /** Why the room could not be synced at all (unknown alias, not joined, unreachable...). */
  error: string | null;
  /** When several configured references (aliases, the room id) are this one room: all of them. */
  references?: string[];
  /** Groups mapped to this room that could not be read completely (no removals then). */
  incompleteGroups?: string[];
}

export interface RunReport {
  dryRun: boolean;
  runId: number | null;
  trigger: string;
  startedAt: string;
  finishedAt: string;
  /** `degraded`: nothing failed, but a mapped group was incomplete or missing (see incompleteGroups). */
  outcome: "ok" | "degraded" | "failed" | "interrupted";
  rooms: RoomReport[];
  /** Run-wide failures (the directory could not be read, the homeserver is unreachable...). */
  errors: string[];
  /** Findings about the directory as a whole (members that are neither users nor groups...). */
  notes: string[];
  /** Mapped groups that could not be read completely in this run (their rooms got no removals). */
  incompleteGroups: string[];
  counts: {
    created: number;
    invites: number;
    kicks: number;
    /** Users whose level changes. */
    powerLevels: number;
    /** Template fields of the power levels that change. */
    permissions: number;
    /** Other state events (history visibility, join rule, name...). */
    state: number;
    /** Space children added or removed. */
    links: number;
    held: number;
    failed: number;
    roomErrors: number;
  };
}

/** The report entries of applied, failed or planned actions. */
export function reportActions(results: readonly ActionResult[]): ReportAction[] {
  const out: ReportAction[] = [];
  for (const r of results) {
    const outcome = r.outcome === "planned" ? {} : { outcome: r.outcome, ...(r.error !== undefined ? { error: r.error } : {}) };
    const a = r.action;
    switch (a.kind) {
      case "create-room":
        out.push({
          kind: "create-room",
          alias: a.alias,
          ...(r.roomId !== undefined ? { roomId: r.roomId } : {}),
          members: a.request.invite.length,
          ...(a.request.creation_content?.type === "m.space" ? { space: true as const } : {}),
          ...outcome,
        });
        break;
      case "invite":
        out.push({ kind: "invite", user: a.user, ...outcome });
        break;
      case "kick":
        out.push({ kind: "kick", user: a.user, reason: a.reason, ...outcome });
        break;
      case "set-power-levels":
        for (const f of a.fields) out.push({ kind: "set-power-levels", field: f.field, from: f.from ?? null, to: f.to, ...outcome });
        for (const c of a.changes) {
          out.push({ kind: "set-power-levels", user: c.user, from: Number.isFinite(c.from) ? c.from : null, to: c.to, ...outcome });
        }
        break;
      case "set-state":
        out.push({ kind: "set-state", type: a.type, stateKey: a.stateKey, from: a.from, to: a.to, ...outcome });
        break;
      case "add-child":
        out.push({ kind: "add-child", child: a.child, ...(a.childId !== undefined ? { childId: a.childId } : {}), ...outcome });
        break;
      case "remove-child":
        out.push({ kind: "remove-child", child: a.child, ...outcome });
        break;
      default: {
        const never: never = a;
        throw new Error(`unknown action ${JSON.stringify(never)}`);
      }
    }
  }
  return out;
}

export function reportHeld(held: readonly HeldRemoval[]): RoomReport["held"] {
  return held.map((h) => ({ kind: h.kind, user: h.user, reason: h.reason }));
}

export function countReport(rooms: readonly RoomReport[]): RunReport["counts"] {
  const counts = { created: 0, invites: 0, kicks: 0, powerLevels: 0, permissions: 0, state: 0, links: 0, held: 0, failed: 0, roomErrors: 0 };
  for (const room of rooms) {
    if (room.error !== null) counts.roomErrors++;
    counts.held += room.held.length;
    for (const a of room.actions) {
      if (a.outcome === "failed") counts.failed++;
      switch (a.kind) {
        case "create-room":
          counts.created++;
          break;
        case "invite":
          counts.invites++;
          break;
        case "kick":
          counts.kicks++;
          break;
        case "set-power-levels":
          if ("user" in a) counts.powerLevels++;
          else counts.permissions++;
          break;
        case "set-state":
          counts.state++;
          break;
        case "add-child":
        case "remove-child":
          counts.links++;
          break;
        default: {
          const never: never = a;
          throw new Error(`unknown action ${JSON.stringify(never)}`);
        }
      }
    }
  }
  return counts;
}

/** The JSON form (`--json`): stable field names, one object. */
export function toJson(report: RunReport): string {
  return JSON.stringify(report, null, 2);
}

/** One line per mapped group that could not be read completely (every surface says the same). */
export function incompleteLine(group: string): string {
  return `directory group ${group} was incomplete or missing: no removals in the rooms mapped to it`;
}

/** A readable per-room table. */
export function toText(report: RunReport): string {
  const lines: string[] = [];
  const mode = report.dryRun ? "Dry run: nothing was changed. A real run would do this:" : "Sync run:";
  lines.push(`${mode}${report.runId !== null ? ` (run ${report.runId})` : ""}`);
  for (const err of report.errors) lines.push(`  ERROR ${err}`);
  for (const group of report.incompleteGroups) lines.push(`  DEGRADED ${incompleteLine(group)}`);
  for (const note of report.notes) lines.push(`  directory: ${note}`);
  for (const room of report.rooms) {
    const id = room.roomId && room.roomId !== room.room ? ` (${room.roomId})` : "";
    lines.push("");
    lines.push(`${room.room}${id}`);
    if (room.error !== null) lines.push(`  ERROR  ${room.error}`);
    const rows: [string, string, string][] = [];
    for (const a of room.actions) {
      const status = a.outcome === "failed" ? `FAILED: ${a.error ?? "unknown error"}` : a.outcome === "applied" ? "done" : "";
      const [what, subject, detail] = actionRow(a);
      rows.push([what, subject, [detail, status].filter((x) => x !== "").join("  ")]);
    }
    for (const h of room.held) rows.push(["held", h.user, `${HELD_TEXT}; release it with matrix-group-sync release ${room.room} ${h.user} (or !release in the management room)`]);
    if (rows.length === 0 && room.error === null) lines.push("  nothing to do");
    const w0 = Math.max(4, ...rows.map((r) => r[0].length));
    const w1 = Math.max(0, ...rows.map((r) => r[1].length));
    for (const [k, u, d] of rows) lines.push(`  ${k.padEnd(w0)}  ${u.padEnd(w1)}  ${d}`.trimEnd());
    for (const n of room.notes) lines.push(`  ${"note".padEnd(w0)}  ${n}`);
  }
  lines.push("");
  lines.push(countsLine(report.rooms.length, report.counts));
  return lines.join("\n");
}
