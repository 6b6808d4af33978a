/**
 * What commands and the schedule share while `serve` runs: the wired app, the bot's
 * identity, the one-run-at-a-time runner, and lookups of managed rooms and of what the
 * directory says.
 */
import type { MatrixClient } from "matrix-bot-sdk";
import { settingsFrom, type App } from "../app.ts";
import type { Config } from "../config/schema.ts";
import type { RoomRef } from "../commands/spec.ts";
import { serverNameOf, tryUserIdPattern, type RoomId, type UserId } from "../matrix/ids.ts";
import { readDirectory, type DirectoryState } from "../reconcile/directory.ts";
import type { RunReport } from "../reconcile/report.ts";
import { runSync, withTimeLimit } from "../reconcile/run.ts";
import { fail, ok, type Result } from "../result.ts";
import type { RunTrigger } from "../store/store.ts";
import { SerialRunner, type RunRequest } from "./runner.ts";

export interface ManagedRoom {
  /** As configured (alias or id). */
  readonly room: string;
  readonly roomId: RoomId;
}

export class Service {
  readonly runner = new SerialRunner<RunReport>();

  constructor(
    readonly config: Config,
    readonly app: App,
    readonly bot: UserId,
    /** The bot's own client, for what the sync gateway does not do (joined rooms, leaving, replies). */
    readonly client: MatrixClient,
    /** Aborted at shutdown: a run in progress stops after its current action. */
    readonly shutdown: AbortSignal,
    private readonly onRun?: (report: RunReport) => void,
  ) {}

  get serverName(): string {
    return serverNameOf(this.bot);
  }

  /** The schedule's next slots from now (set by serve once the schedule runs). */
  nextSlots: ((count: number) => readonly Date[]) | undefined;

  /**
   * A sync run, never two at once (see SerialRunner). A run cannot outlive its schedule slot:
   * it stops starting rooms and actions at the next scheduled slot (the slot after, when the
   * next one is less than half an interval away), or after `sync.maxRunMs` if that is sooner.
   */
  requestSync(trigger: RunTrigger, opts: { dryRun: boolean; rooms?: readonly string[] }): RunRequest<RunReport> {
    return this.runner.request(async () => {
      const limit = this.timeLimit();
      try {
        const report = await runSync(this.app, settingsFrom(this.config), {
          dryRun: opts.dryRun,
          trigger,
          signal: limit?.signal ?? this.shutdown,
          ...(opts.rooms && opts.rooms.length > 0 ? { rooms: opts.rooms } : {}),
        });
        this.onRun?.(report);
        return report;
      } finally {
        limit?.clear();
      }
    });
  }

  private timeLimit(): ReturnType<typeof withTimeLimit> | undefined {
    const now = this.app.clock.now().getTime();
    const [next, after] = this.nextSlots?.(2) ?? [];
    let slotMs: number | undefined;
    if (next !== undefined) {
      slotMs = next.getTime() - now;
      if (after !== undefined && slotMs < (after.getTime() - next.getTime()) / 2) slotMs = after.getTime() - now;
    }
    const maxRunMs = this.config.sync.maxRunMs;
    if (slotMs === undefined && maxRunMs === undefined) return undefined;
    if (slotMs !== undefined && (maxRunMs === undefined || slotMs < maxRunMs)) {
      return withTimeLimit(Math.max(0, slotMs), "the next scheduled slot", this.shutdown);
    }
    return withTimeLimit(maxRunMs as number, `sync.maxRunMs ${String(maxRunMs)} ms`, this.shutdown);
  }

  async directory(): Promise<Result<DirectoryState>> {
    return readDirectory(this.app.idp, settingsFrom(this.config), this.config.users.domain ?? this.serverName);
  }

  /**
   * The managed room a command names: by the alias or id it is configured with, or by the
   * room id its alias resolves to. Anything else is an error naming the argument.
   */
  async managedRoom(ref: RoomRef, state?: DirectoryState): Promise<Result<ManagedRoom>> {
    const given = ref.kind === "id" ? ref.roomId : ref.alias;
    let rooms: string[];
    if (state !== undefined) rooms = state.desired.map((d) => d.room);
    else {
      const dir = await this.directory();
      if (!dir.ok) return dir;
      rooms = dir.value.desired.map((d) => d.room);
    }
    const resolved = await this.app.gateway.resolveRoom(given);
    // The gateway's message names the room already (never "#x: #x: no such room alias").
    if (!resolved.ok) return fail(resolved.error.message, resolved.error.code !== undefined ? { code: resolved.error.code } : {});
    if (rooms.includes(given)) return ok({ room: given, roomId: resolved.value });
    // Configured by alias, named by id (or the other way round): compare resolved ids.
    const known = new Map((await this.app.store.listManagedRooms()).map((r) => [r.room, r.roomId]));
    for (const room of rooms) {
      let id = known.get(room) ?? (room.startsWith("!") ? room : undefined);
      if (id === undefined || id === null) {
        const r = await this.app.gateway.resolveRoom(room);
        id = r.ok ? r.value : undefined;
      }
      if (id === resolved.value) return ok({ room, roomId: resolved.value });
    }
    return fail(`${given} is not a room this service manages (see !managed)`);
  }

  /** Whether `user` may command: everyone in the management room when the allow list is empty. */
  async mayCommand(user: UserId): Promise<boolean> {
    const entries = await this.app.store.listAllowed("commands");
    if (entries.length === 0) return true;
    return entries.some((e) => (e.kind === "user" ? e.entry === user : tryUserIdPattern(e.entry)?.test(user) === true));
  }
}

