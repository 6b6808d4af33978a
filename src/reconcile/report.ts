/**
 * Reports: the per-room outcome of a run, as JSON (machine-readable) and as a table for a
 * terminal or a management room. A dry run's report lists exactly the actions a real run
 * with the same input would apply.
 */
import type { ActionResult } from "./apply.ts";
import type { HeldRemoval } from "./types.ts";

export type ReportAction =
  | { kind: "invite"; user: string; outcome?: ActionOutcomeText; error?: string }
  | { kind: "kick"; user: string; reason: string; outcome?: ActionOutcomeText; error?: string }
  | { kind: "power-level"; user: string; from: number | null; to: number; outcome?: ActionOutcomeText; error?: string };

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
  counts: { invites: number; kicks: number; powerLevels: number; held: number; failed: number; roomErrors: number };
}

/** One report entry per user: the one power-levels event becomes one line per changed user. */
export function reportActions(results: readonly ActionResult[]): ReportAction[] {
  const out: ReportAction[] = [];
  for (const r of results) {
    const outcome = r.outcome === "planned" ? {} : { outcome: r.outcome, ...(r.error !== undefined ? { error: r.error } : {}) };
    const a = r.action;
    switch (a.kind) {
      case "invite":
        out.push({ kind: "invite", user: a.user, ...outcome });
        break;
      case "kick":
        out.push({ kind: "kick", user: a.user, reason: a.reason, ...outcome });
        break;
      case "set-power-levels":
        for (const c of a.changes) {
          out.push({ kind: "power-level", user: c.user, from: Number.isFinite(c.from) ? c.from : null, to: c.to, ...outcome });
        }
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
  const counts = { invites: 0, kicks: 0, powerLevels: 0, held: 0, failed: 0, roomErrors: 0 };
  for (const room of rooms) {
    if (room.error !== null) counts.roomErrors++;
    counts.held += room.held.length;
    for (const a of room.actions) {
      if (a.outcome === "failed") counts.failed++;
      if (a.kind === "invite") counts.invites++;
      else if (a.kind === "kick") counts.kicks++;
      else counts.powerLevels++;
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
      switch (a.kind) {
        case "invite":
          rows.push(["invite", a.user, status]);
          break;
        case "kick":
          rows.push(["kick", a.user, status]);
          break;
        case "power-level":
          rows.push(["level", a.user, `${a.from ?? "creator"} → ${a.to}${status ? `  ${status}` : ""}`]);
          break;
      }
    }
    for (const h of room.held) rows.push(["held", h.user, "kick held by the mass-removal guard; release to apply"]);
    if (rows.length === 0 && room.error === null) lines.push("  nothing to do");
    const w0 = Math.max(4, ...rows.map((r) => r[0].length));
    const w1 = Math.max(0, ...rows.map((r) => r[1].length));
    for (const [k, u, d] of rows) lines.push(`  ${k.padEnd(w0)}  ${u.padEnd(w1)}  ${d}`.trimEnd());
    for (const n of room.notes) lines.push(`  ${"note".padEnd(w0)}  ${n}`);
  }
  const c = report.counts;
  lines.push("");
  lines.push(
    `${report.rooms.length} room(s): ${c.invites} invite(s), ${c.kicks} kick(s), ${c.powerLevels} level change(s), ${c.held} held, ${c.failed} failed, ${c.roomErrors} room error(s)`,
  );
  return lines.join("\n");
}
