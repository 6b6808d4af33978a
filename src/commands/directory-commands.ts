/** `!idp`, `!joined`, `!managed`: what the directory says, and which rooms the bot is in. */
import { directoryText, listDirectory } from "../reconcile/directory.ts";
import { parseRoomId, type RoomId } from "../matrix/ids.ts";
import { command, done, failure, refused, type Command, type Homeserver } from "./command.ts";
import { cannotSync } from "./levels-for-commands.ts";
import { bold, list, paragraph, table, type Part } from "./render.ts";
import { storedChangesText } from "./report-parts.ts";

const BOTH = ["room", "cli"] as const;

export const idpCommand: Command = command({
  name: "idp",
  summary: "Rooms and members as the directory defines them, with roles and group paths",
  params: [{ name: "room", kind: "room", description: "only these managed rooms (as configured, or by id)", optional: true, variadic: true }],
  permission: "operator",
  surfaces: BOTH,
  uses: ["directory"],
  async run(ctx, args) {
    const state = await ctx.directory.read();
    if (!state.ok) return failure(`The directory could not be read: ${state.error.message}`);
    const rooms: string[] = [];
    for (const ref of args.room) {
      const given = ref.kind === "id" ? ref.roomId : ref.alias;
      // As configured: no homeserver request needed.
      if (state.value.desired.some((d) => d.room === given)) {
        rooms.push(given);
        continue;
      }
      const room = await ctx.directory.managedRoom(ref, state.value);
      if (!room.ok) return refused(room.error.message);
      rooms.push(room.value.room);
    }
    const listing = listDirectory(state.value, rooms.length > 0 ? rooms : undefined);
    const parts: Part[] = [paragraph(bold(`${listing.rooms.length} room(s) from the directory (${ctx.directory.kind})`))];
    if (listing.notes.length > 0) parts.push(list(listing.notes));
    for (const room of listing.rooms) {
      const incomplete = room.incompleteGroups.length > 0 ? ` — INCOMPLETE (${room.incompleteGroups.join(", ")}): no removals` : "";
      parts.push(paragraph(bold(room.room), `: ${room.members.length} member(s)${incomplete}`));
      if (room.members.length > 0) {
        parts.push(table(["user", "role", "level", "via"], room.members.map((m) => [m.user, m.role, String(m.level), m.via.join("; ")])));
      }
      if (room.notes.length > 0) parts.push(list(room.notes));
    }
    return { status: "ok", parts, text: directoryText(listing), data: listing };
  },
});

export const joinedCommand: Command = command({
  name: "joined",
  summary: "Rooms the bot has joined",
  params: [],
  permission: "operator",
  surfaces: BOTH,
  uses: ["homeserver", "store"],
  async run(ctx) {
    const joined = await ctx.homeserver.joinedRooms();
    if (!joined.ok) return failure(`Cannot list the rooms the bot is in: ${joined.error.message}`);
    const managed = new Map((await ctx.store.listManagedRooms()).flatMap((r) => (r.roomId ? [[r.roomId, r] as const] : [])));
    const rows = [...joined.value].sort().map((id) => {
      const m = managed.get(id);
      return { roomId: id, managedAs: m?.room ?? null, state: m === undefined ? null : m.managed ? "managed" : "handed back" };
    });
    if (rows.length === 0) return done(paragraph("The bot has joined no room."), { rooms: rows });
    return done(
      [
        paragraph(`The bot is in ${rows.length} room(s):`),
        table(
          ["room id", "managed as", "state"],
          rows.map((r) => [r.roomId, r.managedAs ?? "", r.state === "handed back" ? `handed back (${ctx.prefix}manage to resume)` : (r.state ?? "")]),
        ),
      ],
      { rooms: rows },
    );
  },
});

export const managedCommand: Command = command({
  name: "managed",
  summary: "Rooms this service manages, with the result of their last sync; a room the bot cannot sync (not in it, too little power) as an error",
  params: [],
  permission: "operator",
  surfaces: BOTH,
  uses: ["directory", "store", "homeserver"],
  async run(ctx) {
    const state = await ctx.directory.read();
    const records = new Map((await ctx.store.listManagedRooms()).map((r) => [r.room, r]));
    // One request for all rooms: a room the bot is not in cannot be synced, whatever its last run said.
    const joined = await ctx.homeserver.joinedRooms();
    const inRoom = joined.ok ? new Set<string>(joined.value) : undefined;
    const configured = state.ok ? state.value.desired.map((d) => d.room) : [...records.keys()];
    const parts: Part[] = [];
    if (!state.ok) parts.push(paragraph(`The directory could not be read (${state.error.message}); showing the rooms seen before.`));
    // One state read per room the bot is in: whether its level lets it invite, kick and change levels.
    const why = await cannotSyncAll(ctx.homeserver, configured.flatMap((room) => {
      const r = records.get(room);
      const id = r?.roomId != null && r.managed && inRoom?.has(r.roomId) === true ? parseRoomId(r.roomId) : undefined;
      return id !== undefined ? [id] : [];
    }));
    const rows = configured.map((room) => {
      const r = records.get(room);
      const summary = r?.lastSummary as Record<string, unknown> | null | undefined;
      const result = summary && typeof summary === "object" ? (typeof summary["error"] === "string" ? `error: ${summary["error"]}` : countsText(summary)) : "";
      const notJoined = inRoom !== undefined && r?.roomId != null && r.managed && !inRoom.has(r.roomId);
      const blocked = r?.roomId != null ? why.get(r.roomId as RoomId) : undefined;
      return {
        room,
        roomId: r?.roomId ?? null,
        state: notJoined ? "error: the bot is not in this room (invite it)" : blocked !== undefined ? `error: ${blocked}` : r === undefined ? "not synced yet" : r.managed ? "managed" : "handed back",
        lastRun: r?.lastRunId ?? null,
        lastOutcome: r?.lastOutcome ?? null,
        lastResult: result,
        error: notJoined || blocked !== undefined || result.startsWith("error: "),
      };
    });
    const data = { directoryRead: state.ok, rooms: rows };
    if (!joined.ok) parts.push(paragraph(`Cannot tell which rooms the bot is in (${joined.error.message}).`));
    if (configured.length === 0) return done([...parts, paragraph("No room is mapped to a directory group.")], data);
    parts.push(
      table(
        ["room", "room id", "state", "last run", "last result"],
        rows.map((r) => [r.room, r.roomId ?? "", r.state, r.lastRun !== null ? `${r.lastRun} (${r.lastOutcome ?? "?"})` : "", r.lastResult]),
      ),
    );
    const errors = rows.filter((r) => r.error).length;
    if (errors > 0) parts.push(paragraph(`${errors} room(s) cannot be synced as they are: see the errors above.`));
    return { status: state.ok ? "ok" : "failed", parts, data };
  },
});

/** Rooms read at once by `!managed`. */
const READ_AT_ONCE = 8;

/** Why the bot cannot sync each room (absent: it can, or its state could not be read now). */
async function cannotSyncAll(homeserver: Homeserver, rooms: readonly RoomId[]): Promise<Map<RoomId, string>> {
  const out = new Map<RoomId, string>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < rooms.length) {
      const roomId = rooms[next++] as RoomId;
      const observed = await homeserver.readRoom(roomId);
      const why = observed.ok ? cannotSync(observed.value, homeserver.bot) : observed.error.code === "M_FORBIDDEN" ? "the bot is not in this room (invite it)" : undefined;
      if (why !== undefined) out.set(roomId, why);
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_AT_ONCE, rooms.length) }, worker));
  return out;
}

/** One room's stored summary: its own error is shown instead when it had one. */
function countsText(c: Record<string, unknown>): string {
  return storedChangesText(c).replace(/, 0 room error\(s\)$/, "");
}
