/**
 * `matrix-group-sync serve`: the long-running service. It syncs on a schedule (node-cron)
 * and answers commands typed into the management room (matrix-bot-sdk's sync loop).
 *
 * - Only messages in the management room are commands, and only from people the allow list
 *   admits (everyone in the room when it is empty). In token rooms (rooms on the token allow
 *   list, from the config or added with `!token allow`) only token commands are heard.
 * - Whether a message is new is decided by the sync stream, not by its timestamp: nothing in
 *   the first sync (said before the service started, or while it was down) is executed, and a
 *   message already handled (the store records every command event) never again, so a restart
 *   does not replay `!sync` or `!kick-member` (see command-sync.ts).
 * - Runs never overlap (SerialRunner). On stop: no new commands or runs, the action under
 *   way finishes, the run is recorded as interrupted, and stop() resolves.
 */
import { randomBytes } from "node:crypto";
import type { MatrixClient } from "matrix-bot-sdk";
import { schedule, setLogger, type ScheduledTask } from "node-cron";
import { openApp, type App } from "../app.ts";
import type { Clock } from "../clock.ts";
import type { CommandContext } from "../commands/context.ts";
import { parseCommandLine } from "../commands/parse.ts";
import { paragraph, splitMessage, code, type Part } from "../commands/render.ts";
import { commandTable } from "../commands/table.ts";
import type { Config } from "../config/schema.ts";
import type { DirectoryRequestObserver } from "../idp/types.ts";
import { parseUserId, type RoomId, type UserId } from "../matrix/ids.ts";
import { describeError, ok } from "../result.ts";
import { createTokenService, TOKEN_SCOPE } from "../tokens/service.ts";
import type { RunReport } from "../reconcile/report.ts";
import { CommandSyncClient } from "./command-sync.ts";
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
  /**
   * Aborted when this process may no longer act (the leader lock is lost): from then on not
   * one homeserver request is sent, even before `stop` is called.
   */
  readonly signal?: AbortSignal;
}

export class ServeError extends Error {}

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
  try {
    const dangling = await app.store.interruptDanglingRuns(app.clock.now());
    if (dangling > 0) log.warn("runs left running by a previous process marked interrupted", { count: dangling });
    await app.store.seedAllowed(
      "commands",
      serveConfig.allow.map((entry) => ({ entry, kind: parseUserId(entry) !== undefined ? "user" : "regex", addedBy: "config" })),
      app.clock.now(),
    );

    const me = await app.gateway.whoami();
    if (!me.ok) throw new ServeError(`cannot start: ${me.error.message}`);
    const bot = me.value;

    client = new CommandSyncClient(config.homeserver.url, config.homeserver.accessToken);
    let roomId: RoomId;
    try {
      roomId = (await client.joinRoom(serveConfig.managementRoom)) as RoomId;
    } catch (err) {
      throw new ServeError(`cannot join the management room ${serveConfig.managementRoom}: ${describeError(err)}`);
    }
    if (await isEncrypted(client, roomId)) {
      throw new ServeError(
        `the management room ${serveConfig.managementRoom} is encrypted; matrix-group-sync cannot read encrypted messages. Use an unencrypted room for commands.`,
      );
    }

    const tokens = createTokenService(config, app.store, app.clock, app.log);
    const tokenService = tokens.ok ? tokens.value : undefined;
    const tokenAllow = config.tokens?.allow ?? [];
    await app.store.seedAllowed(
      TOKEN_SCOPE,
      tokenAllow.map((entry) => ({ entry, kind: parseUserId(entry) !== undefined ? "user" : entry.startsWith("!") ? "room" : "regex", addedBy: "config" })),
      app.clock.now(),
    );
    // Rooms where anyone present may use token commands (and only those), from the config and
    // from `!token allow !room`: the bot joins them and listens there.
    const tokenRooms = (await app.store.listAllowed(TOKEN_SCOPE)).filter((e) => e.kind === "room").map((e) => e.entry);
    client.listenJoined(roomId);
    for (const room of tokenRooms) {
      try {
        await client.listen(room);
      } catch (err) {
        log.warn("cannot join a token room", { room, error: describeError(err) });
      }
    }

    const abort = new AbortController();
    const service = new Service(config, app, bot, client, abort.signal, opts.onRun);
    const table = commandTable();
    const prefix = serveConfig.commandPrefix;
    let stopping = false;
    const inFlight = new Set<Promise<void>>();
    const mclient = client;
    const listenForTokens: CommandContext["tokenRooms"] = {
      listen: async (room) => {
        try {
          return ok((await mclient.listen(room)) as RoomId);
        } catch (err) {
          return { ok: false, error: describeError(err) };
        }
      },
      unlisten: (room) => {
        if (room !== roomId) mclient.unlisten(room);
      },
    };

    const send = async (parts: Part[], replyTo: string, inRoom: string = roomId): Promise<void> => {
      for (const content of splitMessage(parts)) {
        await mclient.sendMessage(inRoom, { ...content, "m.relates_to": { "m.in_reply_to": { event_id: replyTo } } });
      }
    };

    const handle = async (eventRoom: string, event: unknown): Promise<void> => {
      if (stopping || !mclient.listensTo(eventRoom)) return;
      const ev = decodeMessage(event);
      if (ev === undefined || ev.sender === bot) return;
      const parsed = parseCommandLine(table, ev.body, { prefix, ...(ev.formattedBody !== undefined ? { formattedBody: ev.formattedBody } : {}) });
      if (parsed.kind === "not-a-command") return;
      // Outside the management room only token commands are heard.
      if (eventRoom !== roomId && (parsed.kind === "unknown" || !(parsed.command.name === "token" || parsed.command.name.startsWith("token ")))) return;
      if (!(await app.store.markHandled(ev.eventId, eventRoom, app.clock.now()))) return; // already handled
      // Permission comes from the table: "operator" commands (and unknown ones) need the allow list.
      const openToRoom = parsed.kind !== "unknown" && parsed.command.permission === "anyone-in-room";
      if (!openToRoom && !(await service.mayCommand(ev.sender))) {
        log.info("command refused", { sender: ev.sender });
        await send([paragraph(`Sorry ${ev.sender}, you are not on the allow list for commands here.`)], ev.eventId, eventRoom);
        return;
      }
      if (parsed.kind === "unknown") {
        const hint = parsed.suggestion !== undefined ? [" Did you mean ", code(`${prefix}${parsed.suggestion}`), "?"] : [];
        await send([paragraph(`Unknown command ${prefix}${parsed.name}.`, ...hint, " Send ", code(`${prefix}help`), " for the list.")], ev.eventId, eventRoom);
        return;
      }
      if (parsed.kind === "usage-error") {
        await send([paragraph(parsed.message), paragraph("Usage: ", code(parsed.usage))], ev.eventId, eventRoom);
        return;
      }
      const ctx: CommandContext = {
        actor: ev.sender,
        place: eventRoom,
        tokens: tokenService,
        managementRoomId: roomId,
        isOperator: openToRoom ? await service.mayCommand(ev.sender) : true,
        tokenRooms: listenForTokens,
        sender: ev.sender,
        eventId: ev.eventId,
        prefix,
        service,
        table,
        ack: async () => {
          await mclient.sendEvent(eventRoom, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: ev.eventId, key: "⏳" } });
        },
        say: (parts) => send(parts, ev.eventId, eventRoom),
      };
      log.info("command", { sender: ev.sender, command: parsed.command.name });
      let reply: Part[];
      try {
        reply = await parsed.command.run(ctx, parsed.args);
      } catch (err) {
        const errorId = randomBytes(4).toString("hex");
        log.error("command failed", { errorId, command: parsed.command.name, error: describeError(err) });
        reply = [paragraph(`Something went wrong running ${prefix}${parsed.command.name} (error id ${errorId}); the details are in the log.`)];
      }
      await send(reply, ev.eventId, eventRoom);
    };

    client.on("room.message", (eventRoom: string, event: unknown) => {
      const job = handle(eventRoom, event).catch((err: unknown) => {
        log.error("handling a message failed", { error: describeError(err) });
        opts.onBackgroundError?.(err);
      });
      inFlight.add(job);
      void job.finally(() => inFlight.delete(job));
    });

    // Only the management room and the token rooms matter to the sync loop: its filter keeps it
    // small however many rooms the bot manages. Serving starts once the first sync is in: what
    // it brought is history, and a command sent from now on is heard.
    await client.start();
    await untilAborted(client.firstSync, opts.signal).catch((err: unknown) => {
      throw new ServeError(`cannot start: the first sync failed: ${describeError(err)}`);
    });
    log.info("serving", { bot, managementRoom: roomId, schedule: serveConfig.schedule, timezone: serveConfig.timezone });

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
    task = schedule(serveConfig.schedule, () => scheduledRun("schedule"), { timezone: serveConfig.timezone, noOverlap: true, name: "sync" });
    const slots = task;
    service.nextSlots = (count) => slots.getNextRuns(count);
    if (serveConfig.runAtStart) scheduledRun("startup");

    const theTask = task;
    let stopped: Promise<void> | undefined;
    return {
      service,
      managementRoomId: roomId,
      stop: () =>
        (stopped ??= (async () => {
          stopping = true;
          abort.abort(); // the run ends between actions
          await theTask.stop();
          mclient.stop();
          const drained = Promise.all([service.runner.close(), ...inFlight]).then(() => true);
          const timedOut = new Promise<boolean>((r) => setTimeout(() => r(false), serveConfig.shutdownTimeoutMs).unref());
          if (!(await Promise.race([drained, timedOut]))) {
            log.warn("shutdown timeout: the run under way is recorded as interrupted");
            await app.store.interruptDanglingRuns(app.clock.now());
          }
          await app.close();
          log.info("stopped");
        })()),
    };
  } catch (err) {
    await task?.stop();
    client?.stop();
    await app.close();
    throw err;
  }
}

interface Message {
  eventId: string;
  sender: UserId;
  body: string;
  formattedBody?: string;
}

/** A plain text message from a person; edits, notices and anything malformed are not commands. */
function decodeMessage(event: unknown): Message | undefined {
  if (event === null || typeof event !== "object") return undefined;
  const e = event as { event_id?: unknown; sender?: unknown; origin_server_ts?: unknown; content?: unknown };
  const c = e.content as { msgtype?: unknown; body?: unknown; format?: unknown; formatted_body?: unknown; "m.relates_to"?: unknown } | undefined;
  if (typeof e.event_id !== "string" || typeof e.sender !== "string" || typeof e.origin_server_ts !== "number" || !c) return undefined;
  if (c.msgtype !== "m.text" || typeof c.body !== "string") return undefined;
  const relation = c["m.relates_to"] as { rel_type?: unknown } | undefined;
  if (relation?.rel_type === "m.replace") return undefined;
  const sender = parseUserId(e.sender);
  if (sender === undefined) return undefined;
  return {
    eventId: e.event_id,
    sender,
    body: c.body,
    ...(c.format === "org.matrix.custom.html" && typeof c.formatted_body === "string" ? { formattedBody: c.formatted_body } : {}),
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

async function isEncrypted(client: MatrixClient, roomId: string): Promise<boolean> {
  try {
    await client.getRoomStateEvent(roomId, "m.room.encryption", "");
    return true;
  } catch (err) {
    const status = (err as { statusCode?: unknown }).statusCode;
    if (status === 404) return false;
    throw new ServeError(`cannot read the management room's state: ${describeError(err)}`);
  }
}
