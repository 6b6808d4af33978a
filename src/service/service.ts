/**
 * What the schedule and the management room share while `serve` runs: the wired app, the
 * bot's identity and the one-run-at-a-time runner. Commands do not see it: they get narrow
 * capabilities (commands/capabilities.ts, `capabilities` below).
 */
import { settingsFrom, type App } from "../app.ts";
import type { Capabilities, Runs, TokenRooms } from "../commands/command.ts";
import type { Config } from "../config/schema.ts";
import { serverNameOf, tryUserIdPattern, type RoomId, type UserId } from "../matrix/ids.ts";
import type { RunReport } from "../reconcile/report.ts";
import { runSync, withTimeLimit } from "../reconcile/run.ts";
import type { RunTrigger } from "../store/store.ts";
import type { TokenService } from "../tokens/service.ts";
import { directoryCapability, homeserverCapability } from "../commands/capabilities.ts";
import { ok } from "../result.ts";
import { SerialRunner, type RunRequest } from "./runner.ts";

export class Service {
  readonly runner = new SerialRunner<RunReport>();

  constructor(
    readonly config: Config,
    readonly app: App,
    readonly bot: UserId,
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
  requestSync(
    trigger: RunTrigger,
    opts: { dryRun: boolean; rooms?: readonly string[]; progress?: (done: number, total: number) => void },
  ): RunRequest<RunReport> {
    return this.runner.request(async () => {
      const limit = this.timeLimit();
      try {
        const report = await runSync({ ...this.app, ...(opts.progress ? { progress: opts.progress } : {}) }, settingsFrom(this.config), {
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

  /** Whether `user` may command: everyone in the management room when the allow list is empty. */
  async mayCommand(user: UserId): Promise<boolean> {
    const entries = await this.app.store.listAllowed("commands");
    if (entries.length === 0) return true;
    return entries.some((e) => (e.kind === "user" ? e.entry === user : tryUserIdPattern(e.entry)?.test(user) === true));
  }

  /** What commands from the room get: runs go through this service's runner ("command" trigger). */
  capabilities(tokens: { service: TokenService | undefined; managementRoomId: RoomId; rooms: TokenRooms }): Omit<Capabilities, "terminal" | "loaded"> {
    const runs: Runs = {
      request: (opts) => this.requestSync("command", opts),
      get busy() {
        return runner.busy;
      },
    };
    const runner = this.runner;
    const bot = this.bot;
    return {
      config: this.config,
      store: this.app.store,
      clock: this.app.clock,
      runs,
      directory: directoryCapability(this.app, this.config, () => Promise.resolve(ok(bot))),
      homeserver: homeserverCapability(this.app, bot),
      tokens,
    };
  }
}
