/** `sync`, `status`, `history`, `release`: runs and what they held back, in the room and on the CLI. */
import type { UserId } from "../matrix/ids.ts";
import { toJson, toText } from "../reconcile/report.ts";
import { actionRow } from "../reconcile/words.ts";
import type { Store } from "../store/store.ts";
import { auditParts, reportEntryOf } from "./audit-parts.ts";
import { command, done, refused, usageError, type Command, type Outcome } from "./command.ts";
import { decodeInt, decodeUser } from "./parse.ts";
import { reportParts, storedChangesText } from "./report-parts.ts";
import { list, paragraph, table } from "./render.ts";

const BOTH = ["room", "cli"] as const;

export const syncCommand: Command = command({
  name: "sync",
  summary: "Sync now (all managed rooms, or the ones named); --dry only reports what would change",
  description: "Runs a sync right away. A run already in progress is never overlapped: this one is queued behind it (once).",
  params: [{ name: "room", kind: "room", description: "only these managed rooms", optional: true, variadic: true }],
  flags: [{ name: "dry", aliases: ["dry-run"], description: "plan and report, change nothing (also as the word: !sync dry)", word: true }],
  permission: "operator",
  surfaces: BOTH,
  uses: ["directory", "runs"],
  async run(ctx, args) {
    const rooms: string[] = [];
    for (const ref of args.room) {
      const room = await ctx.directory.managedRoom(ref);
      if (!room.ok) return refused(room.error.message);
      rooms.push(room.value.room);
    }
    await ctx.ack();
    const request = ctx.runs.request({ dryRun: args.dry, ...(rooms.length > 0 ? { rooms } : {}), progress: (n, total) => ctx.progress(n, total, "rooms") });
    if (request.status === "skipped") return refused(`A run is in progress and another is already queued: not starting a third. See ${ctx.prefix}status.`);
    if (request.status === "queued") await ctx.say([paragraph("A run is in progress; this one is queued and starts when it ends.")]);
    const report = await request.done;
    if (report === undefined) return refused("The run was dropped: the service is shutting down.");
    const status: Outcome["status"] = report.outcome === "ok" ? "ok" : report.outcome === "degraded" ? "degraded" : "failed";
    return { status, parts: reportParts(report, ctx.prefix), text: toText(report), data: JSON.parse(toJson(report)) as unknown };
  },
});

export const statusCommand: Command = command({
  name: "status",
  summary: "The last runs (when, trigger, counts, failures) and removals held for release",
  params: [],
  permission: "operator",
  surfaces: BOTH,
  uses: ["store", "runs", "config"],
  async run(ctx) {
    const runs = await ctx.store.listRuns(10);
    const held = await ctx.store.listHeld();
    const schedule = ctx.config.serve?.schedule;
    const parts = [
      paragraph(
        ctx.surface === "cli" ? "" : ctx.runs.busy ? "A run is in progress now. " : "No run is in progress. ",
        `Schedule: ${schedule ?? "none"} (${ctx.config.serve?.timezone ?? "UTC"}).`,
      ),
    ];
    if (runs.length === 0) parts.push(paragraph("No run yet."));
    else {
      parts.push(
        table(
          ["run", "started", "trigger", "kind", "outcome", "changes", "error"],
          runs.map((r) => {
            const counts = (r.summary as { counts?: Record<string, unknown> } | null)?.counts;
            // In the run report's words, every kind counted (created, permissions, state, links too).
            const changes = counts !== undefined && counts !== null && typeof counts === "object" ? storedChangesText(counts) : "";
            return [String(r.id), isoSeconds(r.startedAt), r.trigger, r.dryRun ? "dry run" : "real", r.outcome, changes, r.error ?? ""];
          }),
        ),
      );
    }
    if (held.length === 0) parts.push(paragraph("No removals are held."));
    else {
      parts.push(paragraph(`${held.length} removal(s) held by the mass-removal guard (release with ${ctx.prefix}release ROOM [USER…]):`));
      parts.push(
        table(
          ["room", "user", "held since", "released"],
          held.map((h) => [h.room, h.userId, isoSeconds(h.heldAt), h.releasedAt ? "yes, applied by the next run" : "no"]),
        ),
      );
    }
    return done(parts, {
      busy: ctx.runs.busy,
      schedule: schedule ?? null,
      runs: runs.map((r) => ({ id: r.id, startedAt: r.startedAt.toISOString(), trigger: r.trigger, dryRun: r.dryRun, outcome: r.outcome, counts: (r.summary as { counts?: unknown } | null)?.counts ?? null, error: r.error })),
      held: held.map((h) => ({ room: h.room, roomId: h.roomId, user: h.userId, heldAt: h.heldAt.toISOString(), released: h.releasedAt !== null })),
    });
  },
});

function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, "Z");
}

export const historyCommand: Command = command({
  name: "history",
  summary: "The audit: a run's actions per room with their outcome (default: the last real run), or everything done to one user",
  description:
    "With a run number (or nothing: the last real run), shows what that run did or planned, room by room: creations, kicks, level and permission changes, state, space links, invites and held removals, each with its outcome; the status command lists the runs. With a user, shows everything runs did or planned to that user across rooms and runs, newest first (dry runs marked).",
  params: [{ name: "run-or-user", kind: "string", description: "a run number from status, or a user id", optional: true }],
  permission: "operator",
  surfaces: BOTH,
  uses: ["store"],
  async run(ctx, args) {
    const given = args["run-or-user"];
    if (given !== undefined && !/^\d+$/.test(given)) {
      const user = decodeUser(given);
      if (!user.ok) return usageError(`run-or-user: "${given}" is neither a run number nor a user id (${user.error})`);
      return userHistory(ctx.store, user.value);
    }
    let runId: number | undefined;
    if (given !== undefined) {
      const n = decodeInt(given);
      if (!n.ok) return usageError(`run-or-user: ${n.error}`);
      runId = n.value;
    }
    if (runId === undefined) {
      const runs = await ctx.store.listRuns(100);
      const last = runs.find((r) => !r.dryRun && r.outcome !== "running") ?? runs[0];
      if (last === undefined) return done(paragraph("No run yet."), { run: null, actions: [] });
      runId = last.id;
    }
    const run = await ctx.store.getRun(runId);
    if (run === undefined) return refused(`There is no run ${runId} (${ctx.prefix}status lists the runs).`);
    const actions = await ctx.store.listActions(runId);
    return done(auditParts(run, runId, actions, ctx.prefix), {
      run: { id: run.id, startedAt: run.startedAt.toISOString(), trigger: run.trigger, dryRun: run.dryRun, outcome: run.outcome },
      actions: actions.map((a) => ({ room: a.room, roomId: a.roomId, kind: a.kind, user: a.userId, outcome: a.outcome, error: a.error, detail: a.detail })),
    });
  },
});

async function userHistory(store: Store, user: UserId): Promise<Outcome> {
  const rows = await store.listUserActions(user, { limit: AUDIT_USER_ROWS });
  const data = {
    user,
    actions: rows.map((r) => ({
      at: r.at.toISOString(),
      run: r.runId,
      dryRun: r.run.dryRun,
      trigger: r.run.trigger,
      room: r.room,
      kind: r.kind,
      outcome: r.outcome,
      error: r.error,
      detail: r.detail,
    })),
  };
  if (rows.length === 0) return done(paragraph(`No run has done anything to ${user} (in the history kept).`), data);
  return done(
    [
      paragraph(`${rows.length === AUDIT_USER_ROWS ? `The last ${rows.length}` : rows.length} action(s) on ${user}, newest first:`),
      table(
        ["when", "run", "room", "action", "detail", "outcome"],
        rows.map((r) => {
          const entry = reportEntryOf(r);
          const [what, , detail] = entry !== undefined ? actionRow(entry) : [r.kind, "", ""];
          return [isoSeconds(r.at), `${r.runId}${r.run.dryRun ? " (dry run)" : ""}`, r.room, what, detail, r.error !== null ? `${r.outcome}: ${r.error}` : r.outcome];
        }),
      ),
    ],
    data,
  );
}

/** Most rows `history @user` shows. */
const AUDIT_USER_ROWS = 50;

export const releaseCommand: Command = command({
  name: "release",
  summary: "Release removals the mass-removal guard held in a room (all, or the users named)",
  description: "Released removals are applied by the next run (start one with sync ROOM).",
  params: [
    { name: "room", kind: "room", description: "the managed room" },
    { name: "user", kind: "user", description: "only these users", optional: true, variadic: true },
  ],
  permission: "operator",
  surfaces: BOTH,
  uses: ["directory", "store", "clock"],
  async run(ctx, args) {
    const room = await ctx.directory.managedRoom(args.room);
    if (!room.ok) return refused(room.error.message);
    const heldHere = (await ctx.store.listHeld(room.value.roomId)).filter((h) => h.releasedAt === null);
    if (heldHere.length === 0) return done(paragraph(`Nothing is held in ${room.value.room}.`), { room: room.value.room, released: 0 });
    const notHeld = args.user.filter((u) => !heldHere.some((h) => h.userId === u));
    if (args.user.length > 0 && notHeld.length === args.user.length) {
      return refused(`Nothing is held in ${room.value.room} for ${args.user.join(", ")} (${heldHere.length} other removal(s) are: ${ctx.prefix}status lists them).`);
    }
    const count = await ctx.store.releaseHeld(room.value.roomId, args.user.length > 0 ? args.user : "all", ctx.clock.now());
    const parts = [paragraph(`Released ${count} held removal(s) in ${room.value.room}. The next run applies them; ${ctx.prefix}sync ${room.value.room} runs now.`)];
    if (notHeld.length > 0) parts.push(list(notHeld.map((u) => `${u}: nothing held for this user`)));
    return done(parts, { room: room.value.room, released: count, notHeld });
  },
});
