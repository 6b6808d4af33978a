/**
 * `matrix-group-sync serve`: the long-running service. It syncs on a schedule (node-cron)
 * and answers commands typed into the management room (matrix-bot-sdk's sync loop).
 *
 * - Only messages in the management room are commands, and only from people the allow list
 *   admits (everyone in the room when it is empty).
 * - A message from before the service started, or one already handled (the store records
 *   every command event), is never executed: a restart does not replay `!sync` or
 *   `!kick-member`.
 * - Runs never overlap (SerialRunner). On stop: no new commands or runs, the action under
 *   way finishes, the run is recorded as interrupted, and stop() resolves.
 */
import { randomBytes } from "node:crypto";
import { MatrixClient, MemoryStorageProvider } from "matrix-bot-sdk";
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
import { describeError } from "../result.ts";
import { createTokenService, TOKEN_SCOPE } from "../tokens/service.ts";
import type { RunReport } from "../reconcile/report.ts";
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
  let client: MatrixClient | undefined;
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

    client = new MatrixClient(config.homeserver.url, config.homeserver.accessToken, new MemoryStorageProvider());
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
    // Rooms where anyone present may use token commands (and only those): the bot joins them.
    const tokenRooms = new Set<string>();
    for (const room of tokenAllow.filter((e) => e.startsWith("!"))) {
      try {
        tokenRooms.add(await client.joinRoom(room));
      } catch (err) {
        log.warn("cannot join a token room", { room, error: describeError(err) });
      }
    }

    const abort = new AbortController();
    const service = new Service(config, app, bot, client, abort.signal, opts.onRun);
    const table = commandTable();
    const prefix = serveConfig.commandPrefix;
    const startedAtMs = service.startedAt.getTime();
    let stopping = false;
    const inFlight = new Set<Promise<void>>();
    const mclient = client;

    const send = async (parts: Part[], replyTo: string, inRoom: string = roomId): Promise<void> => {
      for (const content of splitMessage(parts)) {
        await mclient.sendMessage(inRoom, { ...content, "m.relates_to": { "m.in_reply_to": { event_id: replyTo } } });
      }
    };

    const handle = async (eventRoom: string, event: unknown): Promise<void> => {
      if (stopping || (eventRoom !== roomId && !tokenRooms.has(eventRoom))) return;
      const ev = decodeMessage(event);
      if (ev === undefined || ev.sender === bot) return;
      if (ev.ts < startedAtMs) return; // from before we started: never executed
      const parsed = parseCommandLine(table, ev.body, { prefix, ...(ev.formattedBody !== undefined ? { formattedBody: ev.formattedBody } : {}) });
      if (parsed.kind === "not-a-command") return;
      // Outside the management room only token commands are heard.
      if (eventRoom !== roomId && (parsed.kind === "unknown" || !parsed.command.name.startsWith("token "))) return;
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

    // Only the management room matters to the sync loop: a filter keeps it small however many
    // rooms the bot manages (room state with lazy-loaded members, no presence or receipts).
    await client.start({
      room: {
        rooms: [roomId, ...tokenRooms],
        timeline: { limit: 20, types: ["m.room.message"] },
        state: { lazy_load_members: true, types: [] },
        ephemeral: { types: [] },
        account_data: { types: [] },
      },
      presence: { types: [] },
      account_data: { types: [] },
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
  ts: number;
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
    ts: e.origin_server_ts,
    body: c.body,
    ...(c.format === "org.matrix.custom.html" && typeof c.formatted_body === "string" ? { formattedBody: c.formatted_body } : {}),
  };
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
