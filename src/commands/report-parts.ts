/**
 * A run report as a management-room reply: a summary line first, then per room a table of
 * what was (or would be) done and its notes. The words come from reconcile/words.ts, as the
 * terminal's do.
 */
import { incompleteLine, type RunReport } from "../reconcile/report.ts";
import { actionRow, changesText, HELD_TEXT, statusText } from "../reconcile/words.ts";
import { bold, list, paragraph, table, type Part } from "./render.ts";

export function reportParts(report: RunReport, prefix = "!"): Part[] {
  const head = report.dryRun
    ? "Dry run (nothing changed)"
    : report.outcome === "interrupted"
      ? "Sync interrupted"
      : report.outcome === "degraded"
        ? "Sync done, degraded"
        : report.outcome === "ok"
          ? "Sync done"
          : "Sync done, with failures";
  const parts: Part[] = [
    paragraph(bold(head), `: ${report.rooms.length} room(s), ${changesText(report.counts)}${report.runId !== null ? ` — run ${report.runId}` : ""}`),
  ];
  if (report.errors.length > 0) parts.push(list(report.errors.map((e) => `error: ${e}`)));
  if (report.incompleteGroups.length > 0) parts.push(list(report.incompleteGroups.map(incompleteLine)));
  if (report.notes.length > 0) parts.push(list(report.notes.map((n) => `directory: ${n}`)));
  for (const room of report.rooms) {
    const title = room.roomId !== null && room.roomId !== room.room ? `${room.room} (${room.roomId})` : room.room;
    parts.push(paragraph(bold(title)));
    if (room.error !== null) parts.push(paragraph(`error: ${room.error}`));
    const rows: string[][] = room.actions.map((a) => [...actionRow(a), statusText(a, report.dryRun)]);
    for (const h of room.held) rows.push(["held", h.user, HELD_TEXT, `release with ${prefix}release`]);
    if (rows.length > 0) parts.push(table(["action", "subject", "detail", "status"], rows));
    else if (room.error === null) parts.push(paragraph("nothing to do"));
    if (room.notes.length > 0) parts.push(list(room.notes));
  }
  return parts;
}

/** A stored summary's counts (untyped JSON, possibly from an older version) in the run report's words. */
export function storedChangesText(c: Record<string, unknown>): string {
  const n = (k: string): number => (typeof c[k] === "number" ? c[k] : 0);
  return changesText({
    created: n("created"),
    invites: n("invites"),
    kicks: n("kicks"),
    powerLevels: n("powerLevels"),
    permissions: n("permissions"),
    state: n("state"),
    links: n("links"),
    held: n("held"),
    failed: n("failed"),
    roomErrors: n("roomErrors"),
  });
}
