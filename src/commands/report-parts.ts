/**
 * A run report as a management-room reply: a summary line first, then per room a table of
 * what was (or would be) done and its notes.
 */
import { incompleteLine, type RunReport } from "../reconcile/report.ts";
import { bold, list, paragraph, table, type Part } from "./render.ts";

export function reportParts(report: RunReport): Part[] {
  const c = report.counts;
  const head = report.dryRun
    ? "Dry run (nothing changed)"
    : report.outcome === "interrupted"
      ? "Sync interrupted"
      : report.outcome === "degraded"
        ? "Sync done, degraded"
        : "Sync done";
  const parts: Part[] = [
    paragraph(
      bold(head),
      `: ${report.rooms.length} room(s), ${c.invites} invite(s), ${c.kicks} kick(s), ${c.powerLevels} level change(s), ${c.held} held, ${c.failed} failed, ${c.roomErrors} room error(s)${report.runId !== null ? ` — run ${report.runId}` : ""}`,
    ),
  ];
  if (report.errors.length > 0) parts.push(list(report.errors.map((e) => `error: ${e}`)));
  if (report.incompleteGroups.length > 0) parts.push(list(report.incompleteGroups.map(incompleteLine)));
  if (report.notes.length > 0) parts.push(list(report.notes.map((n) => `directory: ${n}`)));
  for (const room of report.rooms) {
    const title = room.roomId !== null && room.roomId !== room.room ? `${room.room} (${room.roomId})` : room.room;
    parts.push(paragraph(bold(title)));
    if (room.error !== null) parts.push(paragraph(`error: ${room.error}`));
    const rows: string[][] = [];
    for (const a of room.actions) {
      const status = a.outcome === "failed" ? `failed: ${a.error ?? "?"}` : a.outcome === "applied" ? "done" : report.dryRun ? "would do" : "not done";
      if (a.kind === "power-level") rows.push(["level", a.user, `${a.from ?? "creator"} → ${a.to}`, status]);
      else rows.push([a.kind, a.user, a.kind === "kick" ? a.reason : "", status]);
    }
    for (const h of room.held) rows.push(["held", h.user, "kick held by the mass-removal guard", "release with !release"]);
    if (rows.length > 0) parts.push(table(["action", "user", "detail", "status"], rows));
    else if (room.error === null) parts.push(paragraph("nothing to do"));
    if (room.notes.length > 0) parts.push(list(room.notes));
  }
  return parts;
}
