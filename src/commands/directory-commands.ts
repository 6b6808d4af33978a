/** `!idp`, `!joined`, `!managed`: what the directory says, and which rooms the bot is in. */
import { changesText } from "../reconcile/words.ts";
import { listDirectory } from "../reconcile/directory.ts";
import type { Command } from "./context.ts";
import { bold, list, paragraph, table, type Part } from "./render.ts";
import { defineCommand, type RoomRef } from "./spec.ts";

export const idpCommand: Command = defineCommand({
  name: "idp",
  summary: "Rooms and members as the directory defines them, with roles and group paths",
  params: [{ name: "room", kind: "room", description: "only this managed room", optional: true }],
  permission: "operator",
  async run(ctx, args) {
    const state = await ctx.service.directory();
    if (!state.ok) return [paragraph(`The directory could not be read: ${state.error.message}`)];
    const ref = args.values["room"] as RoomRef | undefined;
    let rooms: string[] | undefined;
    if (ref !== undefined) {
      const room = await ctx.service.managedRoom(ref, state.value);
      if (!room.ok) return [paragraph(room.error.message)];
      rooms = [room.value.room];
    }
    const listing = listDirectory(state.value, rooms);
    const parts: Part[] = [paragraph(bold(`${listing.rooms.length} room(s) from the directory (${ctx.service.app.idp.kind})`))];
    if (listing.notes.length > 0) parts.push(list(listing.notes));
    for (const room of listing.rooms) {
      const incomplete = room.incompleteGroups.length > 0 ? ` — INCOMPLETE (${room.incompleteGroups.join(", ")}): no removals` : "";
      parts.push(paragraph(bold(room.room), `: ${room.members.length} member(s)${incomplete}`));
      if (room.members.length > 0) {
        parts.push(table(["user", "role", "level", "via"], room.members.map((m) => [m.user, m.role, String(m.level), m.via.join("; ")])));
      }
      if (room.notes.length > 0) parts.push(list(room.notes));
    }
    return parts;
  },
});

export const joinedCommand: Command = defineCommand({
  name: "joined",
  summary: "Rooms the bot has joined",
  params: [],
  permission: "operator",
  async run(ctx) {
    const joined = await ctx.service.client.getJoinedRooms();
    const managed = new Map((await ctx.service.app.store.listManagedRooms()).flatMap((r) => (r.roomId ? [[r.roomId, r] as const] : [])));
    if (joined.length === 0) return [paragraph("The bot has joined no room.")];
    return [
      paragraph(`The bot is in ${joined.length} room(s):`),
      table(
        ["room id", "managed as", "state"],
        [...joined].sort().map((id) => {
          const m = managed.get(id);
          return [id, m?.room ?? "", m === undefined ? "" : m.managed ? "managed" : "handed back (!manage to resume)"];
        }),
      ),
    ];
  },
});

export const managedCommand: Command = defineCommand({
  name: "managed",
  summary: "Rooms this service manages, with the result of their last sync",
  params: [],
  permission: "operator",
  async run(ctx) {
    const state = await ctx.service.directory();
    const records = new Map((await ctx.service.app.store.listManagedRooms()).map((r) => [r.room, r]));
    const configured = state.ok ? state.value.desired.map((d) => d.room) : [...records.keys()];
    const parts: Part[] = [];
    if (!state.ok) parts.push(paragraph(`The directory could not be read (${state.error.message}); showing the rooms seen before.`));
    if (configured.length === 0) return [...parts, paragraph("No room is mapped to a directory group.")];
    parts.push(
      table(
        ["room", "room id", "state", "last run", "last result"],
        configured.map((room) => {
          const r = records.get(room);
          const summary = r?.lastSummary as Record<string, unknown> | null | undefined;
          const result = summary && typeof summary === "object" ? (typeof summary["error"] === "string" ? `error: ${summary["error"]}` : countsText(summary)) : "";
          return [room, r?.roomId ?? "", r === undefined ? "not synced yet" : r.managed ? "managed" : "handed back", r?.lastRunId ? `${r.lastRunId} (${r.lastOutcome ?? "?"})` : "", result];
        }),
      ),
    );
    return parts;
  },
});

/** A stored summary (untyped JSON, possibly from an older version) in the run report's words. */
function countsText(c: Record<string, unknown>): string {
  const n = (k: string): number => (typeof c[k] === "number" ? c[k] : 0);
  const counts = { created: n("created"), invites: n("invites"), kicks: n("kicks"), powerLevels: n("powerLevels"), permissions: n("permissions"), state: n("state"), links: n("links"), held: n("held"), failed: n("failed"), roomErrors: n("roomErrors") };
  // One room's summary: its own error is shown instead when it had one.
  return changesText(counts).replace(/, 0 room error\(s\)$/, "");
}
