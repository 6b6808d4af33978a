/**
 * `matrix-group-sync serve`: the long-running service. It syncs on a schedule (node-cron)
 * and answers commands typed into the management room (a filtered `/sync` loop).
 *
 * - Only messages in the management room are commands, and only from people the allow list
 *   admits (everyone in the room when it is empty). In token rooms (rooms on the token allow
 *   list, from the config or added with `!token allow`) only token commands are heard. The
 *   router (commands/router.ts) decides, purely; the room surface (commands/room-surface.ts) runs and
 *   answers through the gateway.
 * - Whether a message is new is decided by the sync stream, not by its timestamp: nothing in
 *   the first sync (said before the service started, or while it was down) is executed, and a
 *   message already handled (the store records every command event) never again, so a restart
 *   does not replay `!sync` or `!kick-member` (see command-sync.ts).
 * - Runs never overlap (SerialRunner). On stop: no new commands or runs, the action under
 *   way finishes, the run is recorded as interrupted, and stop() resolves.
 */
import { schedule, setLogger, type ScheduledTask } from "node-cron";
import { openApp, type App } from "../app.ts";
import type { Clock } from "../clock.ts";
import type { TokenRooms } from "../commands/command.ts";
import { displayPrefix } from "../commands/help.ts";
import { commandTable } from "../commands/table.ts";
import type { Config, ServeConfig } from "../config/schema.ts";
import type { DirectoryRequestObserver } from "../idp/types.ts";
import { parseUserId, type RoomId, type UserId } from "../matrix/ids.ts";
import { describeError, fail, ok, type Result } from "../result.ts";
import { createTokenService, TOKEN_DM_SCOPE, TOKEN_SCOPE, type TokenService } from "../tokens/service.ts";
import type { RunReport } from "../reconcile/report.ts";
import { decide, hear, needsAllowList } from "../commands/router.ts";
import { ManagementRoomPort, runInRoom, type RoomSurface } from "../commands/room-surface.ts";
import { CommandSyncClient } from "./command-sync.ts";
import { EncryptedTimeline } from "./encrypted-timeline.ts";
import { EndToEnd, encryptingMessenger, RoomEncryptionState } from "../matrix/e2ee.ts";
import { paragraph } from "../commands/render.ts";
import { pruneHistory } from "../store/retention.ts";
import { Service } from "./service.ts";

export interface ServeHandle {
  readonly service: Service;
  readonly managementRoomId: RoomId;
  /**
   * Stops taking commands and runs; waits (up to serve.shutdownTimeoutMs) for the action under
   * way. (When the leader lock is lost, `ServeOptions.signal` has already stopped every
   * homeserver request, so that action fails at once.)
   */
  stop(): Promise<void>;
}

export interface ServeOptions {
  /** Tests: a clock other than the system's (the app's clock is used otherwise). */
  readonly clock?: Clock;
  /** Called when something outside a command fails in the background (logged in any case). */
  readonly onBackgroundError?: (err: unknown) => void;
  /** Called with every finished run's report (metrics). */
  readonly onRun?: (report: RunReport) => void;
  /** Called with every directory request (metrics). */
  readonly onDirectoryRequest?: DirectoryRequestObserver;
  /** Called after every directory change probe (serve.pollIntervalMs): metrics. */
  readonly onDirectoryProbe?: (outcome: ProbeOutcome) => void;
  /**
   * Aborted when this process may no longer act (the leader lock is lost): from then on not
   * one homeserver request is sent, even before `stop` is called.
   */
  readonly signal?: AbortSignal;
}

export class ServeError extends Error {}

// ---------------------------------------------------------------------------------------
// Start-up steps: each returns what it found, or why serving cannot start.

/** Runs a previous process left running are marked interrupted; the config's allow lists seeded. */
async function prepareStore(app: App, config: Config, serve: ServeConfig): Promise<{ interrupted: number }> {
  const interrupted = await app.store.interruptDanglingRuns(app.clock.now());
  await app.store.seedAllowed(
    "commands",
    serve.allow.map((entry) => ({ entry, kind: parseUserId(entry) !== undefined ? "user" : "regex", addedBy: "config" })),
    app.clock.now(),
  );
  await app.store.seedAllowed(
    TOKEN_SCOPE,
    (config.tokens?.allow ?? []).map((entry) => ({ entry, kind: parseUserId(entry) !== undefined ? "user" : entry.startsWith("!") ? "room" : "regex", addedBy: "config" })),
    app.clock.now(),
  );
  return { interrupted };
}

/** Joins the management room; refuses an encrypted one when end-to-end encryption is not set up. */
async function joinManagementRoom(app: App, serve: ServeConfig, rooms: RoomEncryptionState): Promise<Result<{ roomId: RoomId; encrypted: boolean }>> {
  const joined = await app.gateway.joinRoom(serve.managementRoom);
  if (!joined.ok) return fail(`cannot join the management room ${serve.managementRoom}: ${joined.error.message}`);
  const encryption = await rooms.of(joined.value);
  if (!encryption.ok) return fail(`cannot read the management room's state: ${encryption.error.message}`);
  if (encryption.value !== null && serve.encryption === undefined) {
    return fail(
      `the management room ${serve.managementRoom} is encrypted, and end-to-end encryption is not set up: give serve.encryption.storeKeyFile ` +
        `(a secret that encrypts the bot's keys in the store; or MGS_SERVE_ENCRYPTION_STORE_KEY_FILE), or use an unencrypted room for commands`,
    );
  }
  return ok({ roomId: joined.value, encrypted: encryption.value !== null });
}

/**
 * The bot's device for end-to-end encryption (when `serve.encryption` is set): the access
 * token's device, its keys from the store (or new ones, uploaded).
 */
async function openEndToEnd(app: App, serve: ServeConfig, bot: UserId, rooms: RoomEncryptionState): Promise<Result<EndToEnd | undefined>> {
  if (serve.encryption === undefined) return ok(undefined);
  const device = await app.gateway.deviceId();
  if (!device.ok) return fail(`cannot start end-to-end encryption: ${device.error.message}`);
  if (device.value === undefined) {
    return fail("cannot start end-to-end encryption: the homeserver does not say which device the access token belongs to (whoami without device_id); use an access token from a login, which has a device");
  }
  return EndToEnd.open({ userId: bot, deviceId: device.value, storeKey: serve.encryption.storeKey, api: app.gateway, rooms, store: app.store, log: app.log.child("e2ee") });
}

/** Listens in the token rooms of the allow list (and the token DMs); those it cannot join are logged and skipped. */
async function listenInTokenRooms(app: App, client: CommandSyncClient, directMessages: boolean): Promise<{ listening: string[]; failed: string[] }> {
  const log = app.log.child("serve");
  const rooms = (await app.store.listAllowed(TOKEN_SCOPE)).filter((e) => e.kind === "room").map((e) => e.entry);
  if (directMessages) rooms.push(...(await app.store.listAllowed(TOKEN_DM_SCOPE)).map((e) => e.entry));
  const result = { listening: [] as string[], failed: [] as string[] };
  for (const room of rooms) {
    try {
      result.listening.push(await client.listen(room));
    } catch (err) {
      log.warn("cannot join a token room", { room, error: describeError(err) });
      result.failed.push(room);
    }
  }
  return result;
}

export async function startServe(config: Config, opts: ServeOptions = {}): Promise<ServeHandle> {
  const serveConfig = config.serve;
  if (serveConfig === undefined) {
    throw new ServeError("serve needs a `serve` section in the config, with at least `managementRoom`");
  }
  const opened = await openApp(config, { interactive: false, json: false, onDirectoryRequest: opts.onDirectoryRequest, signal: opts.signal });
  if (!opened.ok) throw new ServeError(opened.error.message);
  const app: App = opts.clock ? { ...opened.value, clock: opts.clock } : opened.value;
  const log = app.log.child("serve");
  let client: CommandSyncClient | undefined;
  let task: ScheduledTask | undefined;
  let e2ee: EndToEnd | undefined;
  let timeline: EncryptedTimeline | undefined;
  let poller: { stop(): void } | undefined;
  try {
    const prepared = await prepareStore(app, config, serveConfig);
    if (prepared.interrupted > 0) log.warn("runs left running by a previous process marked interrupted", { count: prepared.interrupted });

    const me = await app.gateway.whoami();
    if (!me.ok) throw new ServeError(`cannot start: ${me.error.message}`);
    const bot: UserId = me.value;
    const rooms = new RoomEncryptionState(app.gateway);
    const managementRoom = await joinManagementRoom(app, serveConfig, rooms);
    if (!managementRoom.ok) throw new ServeError(managementRoom.error.message);
    const roomId = managementRoom.value.roomId;
    const opened = await openEndToEnd(app, serveConfig, bot, rooms);
    if (!opened.ok) throw new ServeError(opened.error.message);
    e2ee = opened.value;

    const directMessages = config.tokens?.directMessages === true;
    const sync = new CommandSyncClient(
      config.homeserver.url,
      app.accessToken,
      async (room) => {
        const joined = await app.gateway.joinRoom(room);
        if (!joined.ok) throw new Error(joined.error.message);
        return joined.value;
      },
      directMessages,
    );
    client = sync;
    sync.listenJoined(roomId);
    await listenInTokenRooms(app, sync, directMessages);

    const tokens = createTokenService(config, app.store, app.clock, app.log, app.accessToken);
    const abort = new AbortController();
    let stopping = false;
    const inFlight = new Set<Promise<void>>();
    const track = (job: Promise<void>): void => {
      inFlight.add(job);
      void job.finally(() => inFlight.delete(job));
    };
    const prune = historyPruner(app, config);
    await prune();
    const service = new Service(config, app, bot, abort.signal, (report) => {
      opts.onRun?.(report);
      if (!stopping) track(prune());
    });
    const tokenRooms: TokenRooms = {
      listen: async (room) => {
        try {
          return ok((await sync.listen(room)) as RoomId);
        } catch (err) {
          return { ok: false, error: describeError(err) };
        }
      },
      unlisten: (room) => {
        if (room !== roomId) sync.unlisten(room);
      },
    };
    const tokenWord = config.tokens?.command ?? "token";
    const table = commandTable(tokenWord);
    const prefix = serveConfig.commandPrefix;
    /** How replies write a command: `!sync`, or `!gs sync` for a word prefix. */
    const shownPrefix = displayPrefix(prefix);
    const port = new ManagementRoomPort(encryptingMessenger(app.gateway, e2ee, rooms), log, app.clock);
    const surface: RoomSurface = {
      port,
      table,
      prefix: shownPrefix,
      log,
      caps: service.capabilities({ service: tokens.ok ? tokens.value : undefined, managementRoomId: roomId, rooms: tokenRooms }),
    };
    const handle = async (eventRoom: string, event: unknown): Promise<void> => {
      if (stopping) return;
      const heard = hear({ roomId: eventRoom, managementRoomId: roomId, listening: sync.listensTo(eventRoom), bot, prefix, table, tokenWord }, event);
      if (heard.kind === "ignore") return;
      const room = eventRoom as RoomId;
      if (!(await app.store.markHandled(heard.message.eventId, eventRoom, app.clock.now()))) return; // already handled
      const allowed = await service.mayCommand(heard.message.sender);
      const decision = decide(heard, allowed || !needsAllowList(heard), shownPrefix);
      if (decision.kind === "answer") {
        if (decision.why === "refused") log.info("command refused", { sender: heard.message.sender });
        await port.reply(room, heard.message.eventId, decision.parts);
        return;
      }
      await runInRoom(surface, { roomId: room, message: heard.message, command: decision.command, args: decision.args, isOperator: allowed });
    };

    if (directMessages && tokens.ok) {
      const tokenService = tokens.value;
      sync.on("room.invite", (invitedTo: string, event: unknown) => {
        if (stopping) return;
        track(
          acceptTokenDm(app, sync, tokenService, invitedTo, event).catch((err: unknown) => {
            log.error("handling an invite failed", { error: describeError(err) });
            opts.onBackgroundError?.(err);
          }),
        );
      });
    }

    timeline = new EncryptedTimeline({
      e2ee,
      rooms,
      bot,
      keyWaitMs: serveConfig.encryption?.keyWaitMs ?? 0,
      log: app.log.child("e2ee"),
      onLate: (eventRoom, event) => sync.emit("room.message", eventRoom, event),
      onUndecryptable: (eventRoom, event) => {
        if (stopping) return;
        const sender = typeof event["sender"] === "string" ? event["sender"] : "someone";
        const eventId = typeof event["event_id"] === "string" ? event["event_id"] : "";
        const parts = [paragraph(`I could not decrypt a message from ${sender}, so I did not act on it. If it was a command, please send it again.`)];
        track(port.reply(eventRoom as RoomId, eventId, parts).then(() => undefined));
      },
    });
    sync.decryption = timeline;
    // Leadership lost: not one more change to the crypto state in the store (the new leader's).
    const theE2ee = e2ee;
    opts.signal?.addEventListener("abort", () => theE2ee?.abandon(), { once: true });

    sync.on("room.message", (eventRoom: string, event: unknown) => {
      const job = handle(eventRoom, event).catch((err: unknown) => {
        log.error("handling a message failed", { error: describeError(err) });
        opts.onBackgroundError?.(err);
      });
      track(job);
    });

    // Only the management room and the token rooms matter to the sync loop: its filter keeps it
    // small however many rooms the bot manages. Serving starts once the first sync is in: what
    // it brought is history, and a command sent from now on is heard.
    await sync.start();
    await untilAborted(sync.firstSync, opts.signal).catch((err: unknown) => {
      throw new ServeError(`cannot start: the first sync failed: ${describeError(err)}`);
    });
    log.info("serving", { bot, managementRoom: roomId, encrypted: managementRoom.value.encrypted, schedule: serveConfig.schedule, timezone: serveConfig.timezone });

    task = startSchedule(service, serveConfig, log);
    poller = startDirectoryPoll(app, service, serveConfig, opts.onDirectoryProbe);
    const theTask = task;
    const theTimeline = timeline;
    const thePoller = poller;
    let stopped: Promise<void> | undefined;
    return {
      service,
      managementRoomId: roomId,
      stop: () =>
        (stopped ??= (async () => {
          stopping = true;
          abort.abort(); // the run ends between actions
          thePoller.stop();
          await theTask.stop();
          sync.stop();
          const drained = Promise.all([service.runner.close(), ...inFlight]).then(() => true);
          const timedOut = new Promise<boolean>((r) => setTimeout(() => r(false), serveConfig.shutdownTimeoutMs).unref());
          if (!(await Promise.race([drained, timedOut]))) {
            log.warn("shutdown timeout: the run under way is recorded as interrupted");
            await app.store.interruptDanglingRuns(app.clock.now());
          }
          if (tokens.ok) await tokens.value.close(); // revokes a MAS access token
          theTimeline.stop();
          await theE2ee?.close(); // saves the crypto state
          await app.close();
          log.info("stopped");
        })()),
    };
  } catch (err) {
    poller?.stop();
    await task?.stop();
    client?.stop();
    timeline?.stop();
    await e2ee?.close().catch(() => undefined);
    await app.close();
    throw err;
  }
}

/**
 * An invite to a direct chat (`is_direct`) from someone on the token allow list: the bot joins
 * and hears token commands there, now and after restarts. Any other invite is left alone (an
 * operator may be inviting the bot to a room to manage).
 */
async function acceptTokenDm(app: App, sync: CommandSyncClient, tokens: TokenService, roomId: string, event: unknown): Promise<void> {
  const log = app.log.child("serve");
  const e = event as { sender?: unknown; content?: { is_direct?: unknown } } | null;
  const inviter = typeof e?.sender === "string" ? parseUserId(e.sender) : undefined;
  if (inviter === undefined || e?.content?.is_direct !== true || sync.listensTo(roomId)) return;
  // The token allow list's user and regex entries (no room entry names a chat not joined yet).
  if (!(await tokens.mayUse(inviter, roomId, undefined, false))) {
    log.info("direct chat invite not accepted: the inviter is not on the token allow list", { room: roomId, inviter });
    return;
  }
  try {
    await sync.listen(roomId);
  } catch (err) {
    log.warn("cannot join a direct chat for token commands", { room: roomId, inviter, error: describeError(err) });
    return;
  }
  await app.store.addAllowed({ scope: TOKEN_DM_SCOPE, entry: roomId, kind: "room", source: "command", addedBy: inviter, addedAt: app.clock.now() });
  await tokens.audit(inviter, roomId, "direct-chat", null, "ok");
  log.info("joined a direct chat for token commands", { room: roomId, inviter });
}

/** Pruning the audit history more often than this is not worth its queries. */
const PRUNE_EVERY_MS = 3_600_000;

/**
 * Prunes runs, their actions, the token audit and handled events past `retention` — at start
 * and after a run, at most once an hour. Failures are logged and tried again next time.
 */
function historyPruner(app: App, config: Config): () => Promise<void> {
  const log = app.log.child("retention");
  let last = Number.NEGATIVE_INFINITY;
  return async () => {
    const now = app.clock.now();
    if (now.getTime() - last < PRUNE_EVERY_MS) return;
    last = now.getTime();
    const r = await pruneHistory(app.store, config.retention, now);
    if (!r.ok) log.warn("pruning the history failed", { error: r.error.message });
    else if (r.value.runs + r.value.tokenAudit + r.value.handledEvents > 0) log.info("history pruned", { ...r.value });
  };
}

/** The schedule (and the run at start, when configured). */
function startSchedule(service: Service, serveConfig: ServeConfig, log: App["log"]): ScheduledTask {
  setLogger({
    info: (m) => log.debug("cron", { detail: m }),
    warn: (m) => log.warn("cron", { detail: m }),
    error: (m) => log.error("cron", { detail: describeError(m) }),
    debug: (m) => log.debug("cron", { detail: describeError(m) }),
  });
  const scheduledRun = (trigger: "schedule" | "startup"): void => {
    const request = service.requestSync(trigger, { dryRun: false });
    log.info("run requested", { trigger, status: request.status });
    request.done.catch((err: unknown) => log.error("scheduled run failed", { error: describeError(err) }));
  };
  const task = schedule(serveConfig.schedule, () => scheduledRun("schedule"), { timezone: serveConfig.timezone, noOverlap: true, name: "sync" });
  service.nextSlots = (count) => task.getNextRuns(count);
  if (serveConfig.runAtStart) scheduledRun("startup");
  return task;
}

export type ProbeOutcome = "unchanged" | "changed" | "failed";

/**
 * `serve.pollIntervalMs`: asks the directory for its change marker every interval; a marker
 * other than the last one seen starts a run (trigger `directory`), at once. The last one seen
 * is kept in the store, so a change made while serve was down starts a run at the first probe;
 * the first probe of all sets the baseline. A probe that fails falls back to the full path: a
 * run, which reads the directory (and keeps the fail-closed rules) — once per streak of failed
 * probes. A directory that offers no marker is not polled (said once). Probes never overlap.
 */
function startDirectoryPoll(app: App, service: Service, serveConfig: ServeConfig, onProbe: ((outcome: ProbeOutcome) => void) | undefined): { stop(): void } {
  const log = app.log.child("poll");
  const interval = serveConfig.pollIntervalMs;
  const probe = app.idp.changeMarker?.bind(app.idp);
  if (interval === 0) return { stop: () => undefined };
  if (probe === undefined) {
    log.info("the directory offers no change marker: it is read on the schedule and on command only", { kind: app.idp.kind });
    return { stop: () => undefined };
  }
  /** The marker seen last (kept in the store: a change while serve was down counts too). */
  let last: string | undefined;
  let loaded = false;
  let stopped = false;
  let failing = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = async (): Promise<void> => {
    const marker = await probe();
    if (stopped) return;
    if (!marker.ok) {
      onProbe?.("failed");
      // Once per failure streak: a directory that stays down would otherwise fill the history
      // with a failed run every interval (the schedule keeps trying in any case).
      if (failing) return;
      failing = true;
      log.warn("the directory change probe failed: a full run instead (once, until a probe works again)", { error: marker.error.message });
      service.requestSync("directory", { dryRun: false }).done.catch((err: unknown) => log.error("run after a failed probe failed", { error: describeError(err) }));
      return;
    }
    if (failing) log.info("the directory change probe works again");
    failing = false;
    if (marker.value === undefined) {
      log.info("the directory keeps no change marker (contextCSN, highestCommittedUSN, lastusn): it is read on the schedule and on command only");
      stopped = true;
      return;
    }
    if (!loaded) {
      last = await app.store.getDirectoryMarker(app.idp.kind);
      loaded = true;
    }
    // No marker seen before (a first start): the baseline, not a change.
    const changed = last !== undefined && marker.value !== last;
    if (marker.value !== last) await app.store.putDirectoryMarker(app.idp.kind, marker.value, app.clock.now());
    last = marker.value;
    onProbe?.(changed ? "changed" : "unchanged");
    if (changed) {
      const request = service.requestSync("directory", { dryRun: false });
      log.info("the directory changed: run requested", { status: request.status });
      request.done.catch((err: unknown) => log.error("run after a directory change failed", { error: describeError(err) }));
    }
  };
  const schedule = (): void => {
    if (stopped) return;
    timer = setTimeout(() => {
      tick()
        .catch((err: unknown) => log.error("the directory change probe failed", { error: describeError(err) }))
        .finally(schedule);
    }, interval);
    timer.unref();
  };
  // The baseline at once, then every interval.
  void tick()
    .catch((err: unknown) => log.error("the directory change probe failed", { error: describeError(err) }))
    .finally(schedule);
  return {
    stop: () => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}

/** `promise`, or a rejection once `signal` is aborted. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new Error("this replica may no longer act"));
    if (signal.aborted) onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
