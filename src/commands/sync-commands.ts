/** `!sync`, `!status`, `!release`: runs and what they held back. */
import type { UserId } from "../matrix/ids.ts";
import type { Command } from "./context.ts";
import { auditParts } from "./audit-parts.ts";
import { reportParts } from "./report-parts.ts";
import { list, paragraph, table } from "./render.ts";
import { defineCommand, type RoomRef } from "./spec.ts";

export const syncCommand: Command = defineCommand({
  name: "sync",
  summary: "Sync now (all managed rooms, or one); --dry only reports what would change",
  description: "Runs a sync right away. A run already in progress is never overlapped: this one is queued behind it (once).",
  params: [{ name: "room", kind: "room", description: "only this managed room", optional: true }],
  flags: [{ name: "dry", description: "plan and report, change nothing (also as the word: !sync dry)", word: true }],
  permission: "operator",
  async run(ctx, args) {
    const ref = args.values["room"] as RoomRef | undefined;
    let rooms: string[] | undefined;
    if (ref !== undefined) {
      const room = await ctx.service.managedRoom(ref);
      if (!room.ok) return [paragraph(room.error.message)];
      rooms = [room.value.room];
    }
    await ctx.ack();
    const dryRun = args.flags["dry"] === true;
    const request = ctx.service.requestSync("command", { dryRun, ...(rooms ? { rooms } : {}) });
    if (request.status === "skipped") {
      return [paragraph("A run is in progress and another is already queued: not starting a third. See !status.")];
    }
    if (request.status === "queued") await ctx.say([paragraph("A run is in progress; this one is queued and starts when it ends.")]);
    const report = await request.done;
    if (report === undefined) return [paragraph("The run was dropped: the service is shutting down.")];
    return reportParts(report);
  },
});

export const statusCommand: Command = defineCommand({
  name: "status",
  summary: "The last runs (when, trigger, counts, failures) and removals held for release",
  params: [],
  permission: "operator",
  async run(ctx) {
    const { store } = ctx.service.app;
    const runs = await store.listRuns(10);
    const parts = [
      paragraph(
        ctx.service.runner.busy ? "A run is in progress now." : "No run is in progress.",
        ` Schedule: ${ctx.service.config.serve?.schedule ?? "none"} (${ctx.service.config.serve?.timezone ?? "UTC"}).`,
      ),
    ];
    if (runs.length === 0) parts.push(paragraph("No run yet."));
    else {
      parts.push(
        table(
          ["run", "started", "trigger", "kind", "outcome", "changes", "error"],
          runs.map((r) => {
            const counts = (r.summary as { counts?: Record<string, number> } | null)?.counts;
            const changes = counts ? `${counts["invites"] ?? 0} inv, ${counts["kicks"] ?? 0} kick, ${counts["powerLevels"] ?? 0} lvl, ${counts["held"] ?? 0} held, ${counts["failed"] ?? 0} failed` : "";
            return [String(r.id), r.startedAt.toISOString().replace(/\.\d+Z$/, "Z"), r.trigger, r.dryRun ? "dry run" : "real", r.outcome, changes, r.error ?? ""];
          }),
        ),
      );
    }
    const held = await store.listHeld();
    if (held.length === 0) parts.push(paragraph("No removals are held."));
    else {
      parts.push(paragraph(`${held.length} removal(s) held by the mass-removal guard:`));
      parts.push(
        table(
          ["room", "user", "held since", "released"],
          held.map((h) => [h.room, h.userId, h.heldAt.toISOString().replace(/\.\d+Z$/, "Z"), h.releasedAt ? "yes, applied by the next run" : "no"]),
        ),
      );
    }
    return parts;
  },
});

export const historyCommand: Command = defineCommand({
  name: "history",
  summary: "The audit of a run: every action per room with its outcome (default: the last real run)",
  description: "Shows what one run did or planned, room by room: creations, kicks, level and permission changes, state, space links, invites and held removals, each with its outcome. Without a run number: the last real run. !status lists the runs.",
  params: [{ name: "run", kind: "int", description: "a run number from !status", optional: true }],
  permission: "operator",
  async run(ctx, args) {
    const { store } = ctx.service.app;
    let runId = args.values["run"] as number | undefined;
    if (runId === undefined) {
      const runs = await store.listRuns(100);
      const last = runs.find((r) => !r.dryRun && r.outcome !== "running") ?? runs[0];
      if (last === undefined) return [paragraph("No run yet.")];
      runId = last.id;
    }
    return auditParts(await store.getRun(runId), runId, await store.listActions(runId));
  },
});

export const releaseCommand: Command = defineCommand({
  name: "release",
  summary: "Release removals the mass-removal guard held in a room (all, or the users named)",
  description: "Released removals are applied by the next run (start one with !sync <room>).",
  params: [
    { name: "room", kind: "room", description: "the managed room" },
    { name: "user", kind: "user", description: "only these users", optional: true, variadic: true },
  ],
  permission: "operator",
  async run(ctx, args) {
    const room = await ctx.service.managedRoom(args.values["room"] as RoomRef);
    if (!room.ok) return [paragraph(room.error.message)];
    const users = (args.values["user"] as UserId[] | undefined) ?? [];
    const { store, clock } = ctx.service.app;
    const heldHere = (await store.listHeld(room.value.roomId)).filter((h) => h.releasedAt === null);
    if (heldHere.length === 0) return [paragraph(`Nothing is held in ${room.value.room}.`)];
    const notHeld = users.filter((u) => !heldHere.some((h) => h.userId === u));
    const count = await store.releaseHeld(room.value.roomId, users.length > 0 ? users : "all", clock.now());
    const parts = [paragraph(`Released ${count} held removal(s) in ${room.value.room}. The next run applies them; !sync ${room.value.room} runs now.`)];
    if (notHeld.length > 0) parts.push(list(notHeld.map((u) => `${u}: nothing held for this user`)));
    return parts;
  },
});
