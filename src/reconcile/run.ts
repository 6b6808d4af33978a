/**
 * One sync run: observe (directory snapshot, room state) → plan (pure) → apply or simulate
 * → record. A dry run is the same pipeline with the simulating executor. A run never stops
 * at the first failure: each room's outcome is collected and reported.
 */
import type { Clock } from "../clock.ts";
import type { IdentityProvider } from "../idp/types.ts";
import type { MatrixGateway } from "../matrix/gateway.ts";
import { serverNameOf, type RoomId, type UserId } from "../matrix/ids.ts";
import type { Logger } from "../log.ts";
import type { ActionRecord, RunTrigger, Store } from "../store/store.ts";
import { applyRoomPlan, simulateRoomPlan, type ActionResult } from "./apply.ts";
import { readDirectory, type DirectorySettings } from "./directory.ts";
import { mergeDesiredRooms } from "./desired.ts";
import { planNewSpaceChildren, planRoom } from "./plan.ts";
import { creatable, DEFAULT_CREATE_ROOM_INVITES, planCreation } from "./plan-create.ts";
import { countReport, reportActions, reportHeld, type ReportAction, type RoomReport, type RunReport } from "./report.ts";
import { desiredSpaces, incompleteSpaces, shapeDesired, type ShapeContext } from "./spaces.ts";
import type { RoomTemplate, SpaceSetting } from "./template.ts";
import type { DesiredRoom, Policy, RoomMemory, RoomPlan, SpaceLinkKey } from "./types.ts";
import { kickDecision, resolveKickOn, type KickOn } from "./kick-rule.ts";
import { findingText } from "./words.ts";

export interface SyncSettings extends DirectorySettings {
  /** Default: the bot's own server name. */
  readonly managedDomains?: readonly string[];
  readonly sync: DirectorySettings["sync"] & {
    /** Which runs may kick (kick-rule.ts); absent: `kick` decides. */
    readonly kickOn?: KickOn;
    /** The older form, used only when `kickOn` is absent: true (default) = always, false = never. */
    readonly kick?: boolean;
    readonly kickReason: string;
    readonly maxRemovals: { readonly count?: number; readonly share?: number };
    readonly ignoreUsers: readonly string[];
    /** Create a mapped alias of our server that does not resolve. */
    readonly createRooms: boolean;
    /** Most members invited in the createRoom request itself (default 10, Synapse's limit). */
    readonly createRoomInvites?: number;
  };
  /** Rooms processed at once. */
  readonly concurrency: number;
  /** The template of the room known by these references; absent: only members are managed. */
  readonly templateFor?: (refs: readonly string[]) => RoomTemplate;
  readonly spaces?: readonly SpaceSetting[];
}

export interface SyncDeps {
  readonly idp: IdentityProvider;
  readonly gateway: MatrixGateway;
  readonly store: Store;
  readonly clock: Clock;
  readonly log: Logger;
  /** Called after each room: rooms done, rooms in all. */
  readonly progress?: (done: number, total: number) => void;
}

/**
 * The reason a run's signal carries when it hit its time limit (`sync.maxRunMs`, or the next
 * scheduled slot under serve), as opposed to a shutdown.
 */
export class RunTimeLimit extends Error {
  override readonly name = "RunTimeLimit";
}

/** A signal that aborts with a RunTimeLimit after `ms`, joined with `signal` when given. */
export function withTimeLimit(ms: number, what: string, signal?: AbortSignal): { signal: AbortSignal; clear: () => void } {
  const limit = new AbortController();
  const end = Date.now() + ms;
  let timer: NodeJS.Timeout | undefined;
  // Node fires a timer of more than 2^31−1 ms (24.8 days; a yearly schedule's slot) at once:
  // a long limit is waited for in steps.
  const arm = (): void => {
    const left = end - Date.now();
    if (left <= 0) {
      limit.abort(new RunTimeLimit(`the run reached its time limit (${what}): no further room or action was started`));
      return;
    }
    timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
    timer.unref();
  };
  arm();
  return { signal: signal ? AbortSignal.any([signal, limit.signal]) : limit.signal, clear: () => clearTimeout(timer) };
}

const MAX_TIMER_MS = 2 ** 31 - 1;

export interface SyncOptions {
  readonly dryRun: boolean;
  readonly trigger: RunTrigger;
  /** Only these rooms (as configured, or their room ids). */
  readonly rooms?: readonly string[];
  /**
   * Shutdown: when aborted, the action under way finishes, no further room or action is
   * started, and the run is recorded as interrupted.
   */
  readonly signal?: AbortSignal;
}

export async function runSync(deps: SyncDeps, settings: SyncSettings, opts: SyncOptions): Promise<RunReport> {
  const { store, clock, log } = deps;
  const startedAt = clock.now();
  const runId = await store.startRun({ trigger: opts.trigger, dryRun: opts.dryRun, startedAt });
  const errors: string[] = [];
  const directoryNotes: string[] = [];
  let rooms: RoomReport[] = [];
  const managed = new ManagedRoomWrites(store);
  try {
    rooms = await syncRooms(deps, settings, opts, runId, errors, directoryNotes, managed);
    await managed.flush();
  } catch (err) {
    // A programmer error: still record the run as failed before rethrowing.
    await managed.flush().catch(() => undefined);
    await finish("failed", String(err));
    throw err;
  }
  const interrupted = opts.signal?.aborted === true;
  const reason: unknown = opts.signal?.reason;
  const timedOut = interrupted && reason instanceof RunTimeLimit;
  if (reason instanceof RunTimeLimit && interrupted) errors.push(`${reason.message}; the next run continues`);
  else if (interrupted) errors.push("interrupted: the service is shutting down; the next run continues");
  // A group that could not be read completely: the run worked, but not fully (no removals in
  // the rooms that depend on it). Said per group, so that a directory that keeps failing shows.
  const incomplete = incompleteGroupsOf(rooms);
  for (const [group, inRooms] of incomplete) log.warn("directory group incomplete", { group, rooms: inRooms });
  const report = await finish(
    interrupted && !timedOut ? "interrupted" : errors.length > 0 || rooms.some(failedRoom) ? "failed" : incomplete.size > 0 ? "degraded" : "ok",
    errors[0] ?? (incomplete.size > 0 ? `incomplete directory data: ${[...incomplete.keys()].join(", ")}` : null),
  );
  log.info("sync run finished", { runId, dryRun: opts.dryRun, outcome: report.outcome, ...report.counts });
  return report;

  async function finish(outcome: RunReport["outcome"], error: string | null): Promise<RunReport> {
    const finishedAt = clock.now();
    const report: RunReport = {
      dryRun: opts.dryRun,
      runId,
      trigger: opts.trigger,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      outcome,
      rooms,
      errors,
      notes: directoryNotes,
      incompleteGroups: [...incompleteGroupsOf(rooms).keys()],
      counts: countReport(rooms),
    };
    await store.finishRun(runId, { outcome, finishedAt, summary: { counts: report.counts, errors, incompleteGroups: report.incompleteGroups }, error });
    return report;
  }
}

type ManagedRoomUpsert = Parameters<Store["upsertManagedRoom"]>[0];

/**
 * A run's managed-room records, written a batch at a time (one statement per
 * MANAGED_BATCH rooms, and the rest when the run ends) instead of one per room.
 */
class ManagedRoomWrites {
  static readonly MANAGED_BATCH = 250;
  #rows: ManagedRoomUpsert[] = [];

  constructor(private readonly store: Pick<Store, "upsertManagedRooms">) {}

  async add(row: ManagedRoomUpsert): Promise<void> {
    this.#rows.push(row);
    if (this.#rows.length >= ManagedRoomWrites.MANAGED_BATCH) await this.flush();
  }

  async flush(): Promise<void> {
    const rows = this.#rows;
    this.#rows = [];
    await this.store.upsertManagedRooms(rows);
  }
}

/** Group → the rooms it made incomplete, groups sorted. */
function incompleteGroupsOf(rooms: readonly RoomReport[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const room of rooms) {
    for (const group of room.incompleteGroups ?? []) {
      const list = out.get(group);
      if (list) list.push(room.room);
      else out.set(group, [room.room]);
    }
  }
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function failedRoom(room: RoomReport): boolean {
  return room.error !== null || room.actions.some((a) => a.outcome === "failed");
}

async function syncRooms(
  deps: SyncDeps,
  settings: SyncSettings,
  opts: SyncOptions,
  runId: number,
  errors: string[],
  directoryNotes: string[],
  managedWrites: ManagedRoomWrites,
): Promise<RoomReport[]> {
  const { idp, gateway, store, clock, log } = deps;

  const me = await gateway.whoami();
  if (!me.ok) {
    errors.push(`homeserver: ${me.error.message}`);
    return [];
  }
  const bot = me.value;
  const botServer = serverNameOf(bot);

  const directory = await readDirectory(idp, settings, botServer);
  if (!directory.ok) {
    // Nothing is known about the directory: touch no room at all.
    errors.push(`${directory.error.message}; no room was changed`);
    return [];
  }
  const spaceDrafts = directory.value.spaces;
  const spaceRefs = new Set(spaceDrafts.map((d) => d.setting.space));
  // Spaces are desired rooms too; their members are filled in from their children below.
  const desired: DesiredRoom[] = [
    ...directory.value.desired.filter((d) => !spaceRefs.has(d.room)),
    ...spaceDrafts.map((d): DesiredRoom => ({ room: d.setting.space, members: [], incompleteGroups: [], notes: [], space: { children: [] } })),
  ];
  directoryNotes.push(...directory.value.notes);
  for (const n of directory.value.notes) log.info("directory note", { note: n });

  const managedRooms = await store.listManagedRooms();
  /** Where each reference pointed when it last resolved. */
  const lastRoomId = new Map(managedRooms.flatMap((r) => (r.roomId ? [[r.room, r.roomId] as const] : [])));
  /** References that could not be resolved this run (not "no such alias"): the room they reach is not fully known. */
  const unresolved: { ref: string; roomId: string | undefined }[] = [];
  const unmanaged = new Set(
    managedRooms.filter((r) => !r.managed).flatMap((r) => (r.roomId ? [r.room, r.roomId] : [r.room])),
  );
  // `--room`: a reference as configured, or a room id. Every reference is resolved, so that
  // the room is synced with the groups of all references that reach it.
  const wanted = opts.rooms && opts.rooms.length > 0 ? new Set(opts.rooms) : undefined;

  // sync.kickOn: whether this run kicks depends on who started it.
  const kicks = kickDecision(resolveKickOn(settings.sync), opts.trigger);
  const policy: Policy = {
    bot,
    managedDomains: settings.managedDomains ?? [botServer],
    kick: kicks.kick,
    ...(!kicks.kick && kicks.onlyBy !== undefined ? { kicksOnlyBy: kicks.onlyBy } : {}),
    kickReason: settings.sync.kickReason,
    ignoreUsers: settings.sync.ignoreUsers,
    maxRemovals: settings.sync.maxRemovals,
  };

  const externals = groupBy(await store.listExternals(), (e) => e.roomId, (e) => e.userId as UserId);
  const heldRows = await store.listHeld();
  /** Rooms with held-removal rows (held or released): the only ones whose held set a run may have to rewrite when it holds nothing. */
  const withHeldRows = new Set(heldRows.map((h) => h.roomId));
  const held = groupBy(heldRows.filter((h) => h.releasedAt === null), (h) => h.roomId, (h) => h.userId as UserId);
  const released = groupBy(heldRows.filter((h) => h.releasedAt !== null), (h) => h.roomId, (h) => h.userId as UserId);
  const links = groupBy(await store.listSpaceLinks(), (l) => l.roomId, (l): SpaceLinkKey => ({ type: l.type, stateKey: l.stateKey as RoomId }));

  /** Every reference's room id once known (resolved, or created in this run). */
  const idOf = new Map<string, RoomId>();
  const resolving = new Map<string, ReturnType<typeof gateway.resolveRoom>>();
  const resolve = (ref: string): ReturnType<typeof gateway.resolveRoom> => {
    let r = resolving.get(ref);
    if (r === undefined) {
      r = gateway.resolveRoom(ref);
      resolving.set(ref, r);
    }
    return r;
  };

  // Resolve every reference first: two references to one room (two aliases, or an alias and
  // the room's id) are one room, planned once with their groups merged — planned apart, each
  // would kick the other's members, and the next run invite them back.
  const targets = await mapConcurrent(desired, settings.concurrency, async (room): Promise<Target | Missing | RoomReport | undefined> => {
    if (opts.signal?.aborted) return undefined;
    const report = emptyReport(room.room);
    if (unmanaged.has(room.room)) {
      report.notes.push("unmanaged: handed back by an operator; not synced");
      return report;
    }
    const resolved = await resolve(room.room);
    if (!resolved.ok) {
      if (wanted && !wanted.has(room.room)) return undefined;
      if (resolved.error.code === "M_NOT_FOUND" && settings.sync.createRooms) {
        const check = creatable(room.room, bot);
        if (check.ok) return { missing: room };
        return await recordRoomError(report, check.reason);
      }
      if (resolved.error.code !== "M_NOT_FOUND") unresolved.push({ ref: room.room, roomId: lastRoomId.get(room.room) });
      const why = resolved.error.code === "M_NOT_FOUND" && !settings.sync.createRooms ? `${resolved.error.message} (sync.createRooms is off: not created)` : resolved.error.message;
      return await recordRoomError(report, why);
    }
    const roomId: RoomId = resolved.value;
    idOf.set(room.room, roomId);
    report.roomId = roomId;
    if (unmanaged.has(roomId)) {
      report.notes.push("unmanaged: handed back by an operator; not synced");
      return report;
    }
    return { room: room.room, roomId, desired: room };
  });
  const early: RoomReport[] = [];
  const missing: DesiredRoom[] = [];
  const byId = new Map<RoomId, DesiredRoom[]>();
  const wantedIds = new Set<string>(wanted ?? []);
  for (const t of targets) if (t !== undefined && "roomId" in t && t.roomId !== null && wanted?.has(t.room) === true) wantedIds.add(t.roomId);
  for (const t of targets) {
    if (t === undefined) continue;
    if ("missing" in t) {
      missing.push(t.missing);
      continue;
    }
    if (wanted && !(wanted.has(t.room) || (t.roomId !== null && wantedIds.has(t.roomId)))) continue;
    if (!("desired" in t)) {
      early.push(t);
      continue;
    }
    const list = byId.get(t.roomId);
    if (list) list.push(t.desired);
    else byId.set(t.roomId, [t.desired]);
  }
  const merged = [...byId].map(([roomId, parts]): { roomId: RoomId | null; refs: string[]; desired: DesiredRoom } => {
    // Aliases first (a readable name for the merged room), then ids; each sorted.
    const refs = parts.map((p) => p.room).sort((a, b) => Number(a.startsWith("!")) - Number(b.startsWith("!")) || (a < b ? -1 : a > b ? 1 : 0));
    const room = mergeDesiredRooms(refs[0] as string, parts);
    // A reference that may reach this room could not be resolved: its groups' members are not
    // known to be unwanted here, so no removals in it (fail closed). A reference whose last
    // room is unknown may reach any room.
    const unsure = unresolved.filter((u) => u.roomId === undefined || u.roomId === roomId).map((u) => `(reference ${u.ref}: not resolved)`);
    return { roomId, refs, desired: unsure.length === 0 ? room : { ...room, incompleteGroups: [...room.incompleteGroups, ...unsure] } };
  });
  for (const m of missing) merged.push({ roomId: null, refs: [m.room], desired: m });

  // Each room's template once; the spaces its restricted join rule names are resolved once
  // (one that neither resolves nor is created in this run is left out of the rule).
  const templates = new Map(merged.map((m) => [m, settings.templateFor?.(m.refs)] as const));
  const ruleRefs = new Set<string>();
  for (const template of templates.values()) {
    const rule = template?.joinRule;
    if (rule !== undefined && "spaces" in rule) for (const s of rule.spaces) if (!s.startsWith("!")) ruleRefs.add(s);
  }
  await Promise.all(
    [...ruleRefs].filter((r) => !idOf.has(r)).map(async (r) => {
      const x = await resolve(r);
      if (x.ok) idOf.set(r, x.value);
    }),
  );

  // Spaces' members come from their children's desired rooms (by reference, or by room id).
  const byRef = new Map<string, DesiredRoom>();
  const byRoomId = new Map<string, DesiredRoom>();
  for (const m of merged) {
    for (const ref of m.refs) byRef.set(ref, m.desired);
    if (m.roomId !== null) byRoomId.set(m.roomId, m.desired);
  }
  const roomsForSpaces = new Map<string, DesiredRoom>();
  for (const d of spaceDrafts) {
    for (const child of d.children) {
      const id = idOf.get(child);
      const room = byRef.get(child) ?? (id !== undefined ? byRoomId.get(id) : undefined);
      if (room !== undefined && room.space === undefined) roomsForSpaces.set(child, room);
    }
  }
  const spaceRooms = new Map(desiredSpaces(spaceDrafts, roomsForSpaces, settings.roles).map((r) => [r.room, r]));
  const creating = new Set(missing.map((m) => m.room));
  const shapeContext = (keepParents: readonly RoomId[]): ShapeContext => ({ drafts: spaceDrafts, spaceRooms, idOf, creating, keepParents });

  // Rooms that do not exist yet: spaces first (their ids go into their children's parent
  // links and join rules), then rooms; each in one createRoom request.
  const toCreate = merged.filter((m) => m.roomId === null).sort((a, b) => Number(b.desired.space !== undefined) - Number(a.desired.space !== undefined));
  const created: RoomReport[] = [];
  const createdSpaces: { ref: string; report: RoomReport; roomId: RoomId | null }[] = [];
  for (const m of toCreate) {
    if (opts.signal?.aborted) break;
    // A room that does not exist has no links to keep.
    const desiredRoom = shapeDesired(shapeContext([]), m.refs, null, m.desired, templates.get(m));
    const parentIds = (desiredRoom.parents ?? []).flatMap((p) => (p.roomId !== undefined ? [p.roomId] : []));
    const plan = planCreation({
      desired: desiredRoom,
      template: desiredRoom.template ?? { powerLevels: {}, encryption: false },
      policy,
      parents: parentIds,
      maxInvites: settings.sync.createRoomInvites ?? DEFAULT_CREATE_ROOM_INVITES,
    });
    const report = emptyReport(m.desired.room);
    if (plan.error !== undefined) {
      report.notes.push(...plan.findings.map(findingText));
      created.push(await recordRoomError(report, plan.error));
      continue;
    }
    const results = opts.dryRun ? simulateRoomPlan(plan) : await applyRoomPlan(gateway, plan, opts.signal);
    const creation = results[0];
    if (creation?.outcome === "failed") {
      // Not created (the alias was taken meanwhile, M_ROOM_IN_USE, or the server refused):
      // a room error, nothing else was sent.
      report.notes.push(...plan.findings.map(findingText));
      created.push(await recordRoomError(report, creation.error ?? `${m.desired.room} was not created`));
      continue;
    }
    const roomId = creation?.roomId ?? null;
    if (roomId !== null) {
      idOf.set(m.desired.room, roomId);
      report.roomId = roomId;
    }
    report.actions = reportActions(results);
    report.notes.push(...plan.findings.map(findingText));
    if (desiredRoom.incompleteGroups.length > 0) report.incompleteGroups = [...desiredRoom.incompleteGroups];
    await record(report, report.actions, m.desired.room, roomId, [m.desired.room], results, plan);
    if (roomId !== null && !opts.dryRun) {
      for (const p of parentIds) await store.addSpaceLink({ roomId, type: "m.space.parent", stateKey: p, runId, addedAt: clock.now() });
    }
    if (desiredRoom.space !== undefined && (roomId !== null || opts.dryRun)) createdSpaces.push({ ref: m.desired.room, report, roomId });
    else created.push(report);
  }
  // A space created in this run gets its children now that they exist (one event each).
  for (const s of createdSpaces) {
    const space = shapeDesired(shapeContext([]), [s.ref], s.roomId, spaceRooms.get(s.ref) ?? { room: s.ref, members: [], incompleteGroups: [], notes: [] }, undefined);
    const links = planNewSpaceChildren(space, policy);
    const plan: RoomPlan = { room: s.ref, roomId: s.roomId, actions: links.actions, held: [], findings: links.findings };
    const results = opts.dryRun || s.roomId === null ? simulateRoomPlan(plan) : await applyRoomPlan(gateway, plan, opts.signal);
    const entries = reportActions(results);
    s.report.actions.push(...entries);
    s.report.notes.push(...links.findings.map(findingText));
    await record(s.report, entries, s.ref, s.roomId, [], results, plan);
    created.push(s.report);
  }
  const existingContext = shapeContext(incompleteSpaces(spaceDrafts, spaceRooms, idOf));

  const existing = merged.filter((m): m is typeof m & { roomId: RoomId } => m.roomId !== null);
  const total = early.length + created.length + existing.length;
  let done = early.length + created.length;
  const reports = await mapConcurrent(existing, settings.concurrency, async (room) => {
    if (opts.signal?.aborted) return undefined;
    const report = await syncRoom(room.roomId, room.refs, shapeDesired(existingContext, room.refs, room.roomId, room.desired, templates.get(room)));
    deps.progress?.(++done, total);
    return report;
  });
  // Sorted by the name each room is reported under.
  const selected = [...early, ...created, ...reports.filter((r): r is RoomReport => r !== undefined)].sort((a, b) =>
    a.room < b.room ? -1 : a.room > b.room ? 1 : 0,
  );
  if (wanted && opts.signal?.aborted !== true) {
    for (const r of wanted) {
      if (!selected.some((x) => x.room === r || x.roomId === r || x.references?.includes(r) === true)) errors.push(`${r}: not a managed room`);
    }
  }
  return selected;

  async function syncRoom(roomId: RoomId, refs: readonly string[], room: DesiredRoom): Promise<RoomReport> {
    const report: RoomReport = { ...emptyReport(room.room), roomId };
    if (refs.length > 1) {
      report.references = [...refs];
      report.notes.push(`${refs.join(", ")} are one room (${roomId}): planned once, with the groups of every reference (highest role wins)`);
    }
    const observed = await gateway.readRoom(roomId);
    if (!observed.ok) return await recordRoomError(report, observed.error.message, refs);
    if (room.space !== undefined && observed.value.roomType !== "m.space" && observed.value.problems === undefined) {
      return await recordRoomError(report, `configured as a space, but ${roomId} is not one (its m.room.create has no type m.space): nothing changed; create a space, or list this room as a child instead`, refs);
    }

    const memory: RoomMemory = {
      externals: externals.get(roomId) ?? [],
      held: held.get(roomId) ?? [],
      released: released.get(roomId) ?? [],
      ...(links.has(roomId) ? { links: links.get(roomId) ?? [] } : {}),
    };
    const plan = planRoom(room, observed.value, memory, policy);
    if (plan.error !== undefined) {
      // Not judged: nothing planned, and what was held stays held.
      report.notes.push(...plan.findings.map(findingText));
      return await recordRoomError(report, plan.error, refs);
    }
    const results: ActionResult[] = opts.dryRun ? simulateRoomPlan(plan) : await applyRoomPlan(gateway, plan, opts.signal);

    report.actions = reportActions(results);
    report.held = reportHeld(plan.held);
    report.notes.push(...plan.findings.map(findingText));
    if (room.incompleteGroups.length > 0) report.incompleteGroups = [...room.incompleteGroups];
    await record(report, report.actions, room.room, roomId, refs, results, plan);
    return report;
  }

  /**
   * The audit rows of one room (`entries`: the report entries of `results`), its held set,
   * the links it added and its managed-room record.
   */
  async function record(
    report: RoomReport,
    entries: readonly ReportAction[],
    room: string,
    roomId: RoomId | null,
    refs: readonly string[],
    results: readonly ActionResult[],
    plan: RoomPlan,
  ): Promise<void> {
    const at = clock.now();
    const rows: ActionRecord[] = [
      ...entries.map((a): ActionRecord => {
        const { kind, outcome, error, ...detail } = a;
        const userId = "user" in detail ? detail.user : null;
        return { runId, room, roomId, kind, userId, detail, outcome: outcome ?? "planned", error: error ?? null, at };
      }),
      ...reportHeld(plan.held).map((h): ActionRecord => ({ runId, room, roomId, kind: h.kind, userId: h.user, detail: { reason: h.reason }, outcome: "held", error: null, at })),
    ];
    await store.recordActions(rows);
    if (opts.dryRun || roomId === null) return;
    for (const r of results) {
      if (r.outcome !== "applied") continue;
      const a = r.action;
      if (a.kind === "add-child" && a.childId !== undefined) await store.addSpaceLink({ roomId, type: "m.space.child", stateKey: a.childId, runId, addedAt: at });
      if (a.kind === "remove-child") await store.removeSpaceLink(roomId, "m.space.child", a.childId);
      if (a.kind === "set-state" && a.type === "m.space.parent") {
        if (Object.keys(a.content).length > 0) await store.addSpaceLink({ roomId, type: "m.space.parent", stateKey: a.stateKey, runId, addedAt: at });
        else await store.removeSpaceLink(roomId, "m.space.parent", a.stateKey);
      }
    }
    // Nothing held now and nothing held or released before: the held set is empty already.
    if (plan.roomId !== null && plan.heldKept !== true && (plan.held.length > 0 || withHeldRows.has(roomId))) {
      await store.replaceHeld(roomId, room, plan.held.map((h) => ({ userId: h.user, reason: h.reason })), runId, at);
    }
    const failed = report.actions.filter((a) => a.outcome === "failed").length;
    for (const ref of refs) {
      await managedWrites.add({ room: ref, roomId, lastRunId: runId, lastOutcome: failed > 0 ? "failed" : "ok", lastSummary: countReport([report]), now: at });
    }
  }

  async function recordRoomError(report: RoomReport, message: string, refs: readonly string[] = [report.room]): Promise<RoomReport> {
    report.error = message;
    log.warn("room not synced", { room: report.room, error: message });
    const at = clock.now();
    await store.recordActions([
      { runId, room: report.room, roomId: report.roomId, kind: "room-error", userId: null, detail: {}, outcome: "failed", error: message, at },
    ]);
    if (!opts.dryRun) {
      for (const ref of refs) {
        await managedWrites.add({ room: ref, roomId: report.roomId, lastRunId: runId, lastOutcome: "failed", lastSummary: { error: message }, now: at });
      }
    }
    return report;
  }
}

interface Target {
  readonly room: string;
  readonly roomId: RoomId;
  readonly desired: DesiredRoom;
}

/** A mapped alias that does not resolve and may be created. */
interface Missing {
  readonly missing: DesiredRoom;
}

function emptyReport(room: string): RoomReport {
  return { room, roomId: null, actions: [], held: [], notes: [], error: null };
}

function groupBy<T, V>(items: readonly T[], key: (t: T) => string, value: (t: T) => V): Map<string, V[]> {
  const out = new Map<string, V[]>();
  for (const item of items) {
    const k = key(item);
    const list = out.get(k);
    if (list) list.push(value(item));
    else out.set(k, [value(item)]);
  }
  return out;
}

/** Runs `fn` over `items` with at most `limit` at once; results keep the input order. */
export async function mapConcurrent<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}
