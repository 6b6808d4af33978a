/**
 * The per-action audit of one run (`run_actions`) as a reply: per room, every action with
 * its outcome, in the words of the run report (reconcile/words.ts). Rows are read back from
 * the store, so they are decoded, not trusted: a row an older version wrote, or one whose
 * detail does not have the fields its kind needs, is shown plainly instead.
 */
import type { ReportAction } from "../reconcile/report.ts";
import { actionRow, HELD_TEXT } from "../reconcile/words.ts";
import type { ActionRecord, RunRecord } from "../store/store.ts";
import { bold, list, paragraph, table, type Part } from "./render.ts";

/** Most rows shown in one reply; the rest are counted. */
export const AUDIT_ROWS = 200;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const str = (v: unknown): v is string => typeof v === "string";
const levelOrNull = (v: unknown): v is number | null => v === null || typeof v === "number";

/** A stored row as the report entry it was written from, when it has every field its kind needs. */
export function reportEntryOf(row: ActionRecord): ReportAction | undefined {
  const d = isRecord(row.detail) ? row.detail : {};
  const user = row.userId;
  switch (row.kind) {
    case "invite":
      return user !== null ? { kind: "invite", user } : undefined;
    case "kick":
      return user !== null && str(d["reason"]) ? { kind: "kick", user, reason: d["reason"] } : undefined;
    case "set-power-levels":
      if (!levelOrNull(d["from"]) || typeof d["to"] !== "number") return undefined;
      if (user !== null) return { kind: "set-power-levels", user, from: d["from"], to: d["to"] };
      return str(d["field"]) ? { kind: "set-power-levels", field: d["field"], from: d["from"], to: d["to"] } : undefined;
    case "set-state":
      return str(d["type"]) && str(d["stateKey"]) && (d["from"] === null || str(d["from"])) && str(d["to"])
        ? { kind: "set-state", type: d["type"], stateKey: d["stateKey"], from: d["from"], to: d["to"] }
        : undefined;
    case "create-room":
      return str(d["alias"]) && typeof d["members"] === "number"
        ? { kind: "create-room", alias: d["alias"], members: d["members"], ...(str(d["roomId"]) ? { roomId: d["roomId"] } : {}), ...(d["space"] === true ? { space: true as const } : {}) }
        : undefined;
    case "add-child":
      return str(d["child"]) ? { kind: "add-child", child: d["child"], ...(str(d["childId"]) ? { childId: d["childId"] } : {}) } : undefined;
    case "remove-child":
      return str(d["child"]) ? { kind: "remove-child", child: d["child"] } : undefined;
    case "room-error":
      return undefined;
    default:
      return undefined;
  }
}

function outcomeText(row: ActionRecord, prefix: string): string {
  if (row.outcome === "failed") return `failed: ${row.error ?? "?"}`;
  if (row.outcome === "applied") return "done";
  if (row.outcome === "held") return `held (${prefix}release)`;
  return row.outcome;
}

function rowOf(row: ActionRecord, prefix: string): string[] {
  if (row.kind === "room-error") return ["error", "", row.error ?? "", "not synced"];
  if (row.outcome === "held") return ["held", row.userId ?? "", HELD_TEXT, outcomeText(row, prefix)];
  const entry = reportEntryOf(row);
  if (entry !== undefined) return [...actionRow(entry), outcomeText(row, prefix)];
  // Written by an older version, or not readable: shown as stored.
  return [String(row.kind), row.userId ?? "", JSON.stringify(row.detail ?? null).slice(0, 200), outcomeText(row, prefix)];
}

export function auditParts(run: RunRecord | undefined, runId: number, rows: readonly ActionRecord[], prefix = "!"): Part[] {
  if (run === undefined) return [paragraph(`There is no run ${runId}. ${prefix}status lists the last runs.`)];
  const when = run.startedAt.toISOString().replace(/\.\d+Z$/, "Z");
  const parts: Part[] = [
    paragraph(bold(`Run ${run.id}`), `: ${run.dryRun ? "dry run" : "real run"}, ${run.trigger}, started ${when}, ${run.outcome}${run.error !== null ? ` (${run.error})` : ""}`),
  ];
  if (rows.length === 0) return [...parts, paragraph(run.outcome === "running" ? "No action recorded yet." : "No action: every room was in step.")];
  const byRoom = new Map<string, ActionRecord[]>();
  for (const r of rows) {
    const list = byRoom.get(r.room);
    if (list) list.push(r);
    else byRoom.set(r.room, [r]);
  }
  let shown = 0;
  for (const [room, list] of [...byRoom].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (shown >= AUDIT_ROWS) break;
    const take = list.slice(0, AUDIT_ROWS - shown);
    shown += take.length;
    const roomId = list.find((r) => r.roomId !== null)?.roomId;
    parts.push(paragraph(bold(roomId !== undefined && roomId !== null && roomId !== room ? `${room} (${roomId})` : room)));
    parts.push(table(["action", "subject", "detail", "outcome"], take.map((r) => rowOf(r, prefix))));
  }
  if (rows.length > shown) parts.push(list([`${rows.length - shown} more action(s) not shown (the run_actions table holds them all)`]));
  return parts;
}
