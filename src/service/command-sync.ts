/**
 * The sync loop that carries commands to `serve`: matrix-bot-sdk's `MatrixClient`, told which
 * rooms to listen to and which of their messages are new.
 *
 * - New is decided by the position in the sync stream, never by the sender's clock
 *   (`origin_server_ts`). matrix-bot-sdk hands the timelines of the first `/sync` (no `since`:
 *   what was said before we started, or while we were down) to `room.message` listeners like
 *   any other; here they are emitted as `room.backlog` instead, so nothing from the first sync
 *   runs. Everything from a later sync is new, whatever its timestamp says.
 * - The rooms are those of the sync filter, which goes inline with every `/sync` request, so a
 *   room added while running (`!token allow !room`) is in the very next one. A long-poll in
 *   flight when a room is added is sent again at once, from the same position, with the new
 *   filter; the answer to the old request is dropped. Nothing said in the room is missed.
 * - A room joined while running can come with history from before the join in its first
 *   timeline (a newly joined room gets the latest events): up to and including the bot's own
 *   join event, that is backlog too.
 */
import { MatrixClient, MemoryStorageProvider } from "matrix-bot-sdk";
import { describeError } from "../result.ts";

type Emit = (type: string, ...payload: unknown[]) => Promise<unknown>;

/** The event matrix-bot-sdk's `room.message` becomes for a message that is not new. */
export const BACKLOG_EVENT = "room.backlog";

/**
 * Timeline events per room and sync: messages (encrypted ones too), member events to see the
 * bot's own join (and, in encrypted rooms, who gets the room key), and `m.room.encryption`.
 */
const TIMELINE = { limit: 20, types: ["m.room.message", "m.room.encrypted", "m.room.member", "m.room.encryption"] };

/** What turns the encrypted events of a sync answer into plain ones (service/encrypted-timeline.ts). */
export interface TimelineDecryption {
  prepare(raw: unknown, initial: boolean, listened: (roomId: string) => boolean, isBacklog: (eventId: string) => boolean): Promise<void>;
}
/** matrix-bot-sdk's request timeouts for a long-poll `/sync` and for the first (slow) one. */
const SYNC_TIMEOUT_MS = 40_000;
const INITIAL_SYNC_TIMEOUT_MS = 600_000;

interface TimelineEvent {
  readonly event_id?: unknown;
  readonly type?: unknown;
  readonly state_key?: unknown;
  readonly content?: { readonly membership?: unknown };
}

export class CommandSyncClient extends MatrixClient {
  readonly #rooms = new Set<string>();
  /** Rooms listened to while running whose first timeline has not arrived yet. */
  readonly #fresh = new Set<string>();
  /** Sends the long-poll in flight again (with the current filter); undefined when none is. */
  #resend: (() => void) | undefined;
  /** Whether the answer now being processed is the first sync's (no `since`). */
  #answerIsInitial = false;
  #firstSyncDone = false;
  /** Set before the loop starts when end-to-end encryption may be met. */
  decryption: TimelineDecryption | undefined;
  readonly #firstSync: Promise<void>;
  #settleFirstSync: { resolve: () => void; reject: (err: unknown) => void } = { resolve: () => undefined, reject: () => undefined };

  /**
   * `join` joins a room for `listen` (the gateway's: its rate-limit policy and halt signal);
   * this client itself only syncs.
   */
  constructor(
    homeserverUrl: string,
    accessToken: string,
    private readonly join: (room: string) => Promise<string>,
    /** Also hear invites (`room.invite`), to any room: the listened rooms are then named per section. */
    private readonly invites = false,
  ) {
    super(homeserverUrl, accessToken, new MemoryStorageProvider());
    this.#firstSync = new Promise<void>((resolve, reject) => (this.#settleFirstSync = { resolve, reject }));
    this.#firstSync.catch(() => undefined); // observed by whoever awaits `firstSync`
  }

  /**
   * Resolves once the first sync's answer has been processed: from then on every message is a
   * new one. Rejects when the homeserver refuses the first sync for good (a 4xx other than 429);
   * other failures are retried by matrix-bot-sdk's loop.
   */
  get firstSync(): Promise<void> {
    return this.#firstSync;
  }

  /** Whether commands are heard in this room. */
  listensTo(room: string): boolean {
    return this.#rooms.has(room);
  }

  /** Listens to a room the bot has joined already, before the sync loop starts. */
  listenJoined(room: string): void {
    this.#rooms.add(room);
  }

  /**
   * Joins the room and listens to it from now on: messages after the join are new. The room is
   * in the filter before the join, so that no sync answer can pass the join without it. Throws
   * what `join` throws (then the room is not listened to).
   */
  async listen(room: string): Promise<string> {
    const added = !this.#rooms.has(room);
    if (added) {
      this.#rooms.add(room);
      this.#fresh.add(room);
      this.#resend?.();
    }
    try {
      const joined = await this.join(room);
      if (joined !== room && !this.#rooms.has(joined)) {
        this.#rooms.add(joined);
        this.#fresh.add(joined);
        this.#resend?.();
      }
      return joined;
    } catch (err) {
      if (added) {
        this.#rooms.delete(room);
        this.#fresh.delete(room);
      }
      throw err;
    }
  }

  /** Stops listening to the room (from the next sync on it is not even asked for). */
  unlisten(room: string): void {
    this.#rooms.delete(room);
    this.#fresh.delete(room);
  }

  /**
   * Only the listened rooms, their messages and member events; no presence, receipts or state.
   * With invites on, `room.rooms` (which would hide invites to other rooms) gives way to the
   * same list on the timeline: the other joined rooms then bring nothing, and are left out of
   * incremental answers.
   */
  #filter(): Record<string, unknown> {
    const rooms = [...this.#rooms];
    return {
      room: {
        ...(this.invites ? {} : { rooms }),
        timeline: this.invites ? { ...TIMELINE, rooms } : TIMELINE,
        state: { lazy_load_members: true, types: [], ...(this.invites ? { rooms } : {}) },
        ephemeral: { types: [] },
        account_data: { types: [] },
      },
      presence: { types: [] },
      account_data: { types: [] },
    };
  }

  protected override doSync(token: string | null | undefined): Promise<unknown> {
    const initial = token === null || token === undefined || token === "";
    return new Promise<unknown>((resolve, reject) => {
      let attempt = 0;
      const send = (): void => {
        const mine = ++attempt;
        const qs = { full_state: false, timeout: Math.max(0, this.syncingTimeout), filter: JSON.stringify(this.#filter()), ...(initial ? {} : { since: token }) };
        this.doRequest("GET", "/_matrix/client/v3/sync", qs, null, initial ? INITIAL_SYNC_TIMEOUT_MS : SYNC_TIMEOUT_MS).then(
          (body: unknown) => {
            if (mine !== attempt) return; // superseded by a request with a newer filter
            this.#resend = undefined;
            this.#answerIsInitial = initial;
            resolve(body);
          },
          (err: unknown) => {
            if (mine !== attempt) return;
            this.#resend = undefined;
            const error = err instanceof Error ? err : new Error(describeError(err));
            if (initial && isPermanent(err)) this.#settleFirstSync.reject(error);
            reject(error);
          },
        );
      };
      this.#resend = send;
      send();
    });
  }

  protected override async processSync(raw: unknown, emitFn?: Emit): Promise<unknown> {
    const emit: Emit = emitFn ?? ((type, ...payload) => Promise.resolve(this.emit(type, ...payload)));
    const initial = this.#answerIsInitial;
    this.#answerIsInitial = false;
    const backlog = initial ? new Set<string>() : this.#backlogOfFreshRooms(raw, await this.getUserId());
    try {
      await this.decryption?.prepare(raw, initial, (room) => this.#rooms.has(room), (id) => backlog.has(id));
      return await super.processSync(raw, (type: string, ...payload: unknown[]) => {
        if (type === "room.message" && (initial || backlog.has(eventIdOf(payload[1])))) return emit(BACKLOG_EVENT, ...payload);
        return emit(type, ...payload);
      });
    } finally {
      // Rooms joined before or during the first sync: all they had then was in it.
      if (initial) this.#fresh.clear();
      if (!this.#firstSyncDone) {
        this.#firstSyncDone = true;
        this.#settleFirstSync.resolve();
      }
    }
  }

  /** Event ids up to the bot's own join in the first timeline of each fresh room of this answer. */
  #backlogOfFreshRooms(raw: unknown, me: string): Set<string> {
    const backlog = new Set<string>();
    if (this.#fresh.size === 0) return backlog;
    const join = (raw as { rooms?: { join?: Record<string, { timeline?: { events?: unknown } }> } } | null)?.rooms?.join ?? {};
    for (const [roomId, section] of Object.entries(join)) {
      if (!this.#fresh.delete(roomId)) continue;
      const events = Array.isArray(section.timeline?.events) ? (section.timeline.events as TimelineEvent[]) : [];
      let joinedAt = -1;
      events.forEach((e, i) => {
        if (e.type === "m.room.member" && e.state_key === me && e.content?.membership === "join") joinedAt = i;
      });
      for (const e of events.slice(0, joinedAt + 1)) backlog.add(eventIdOf(e));
    }
    return backlog;
  }
}

function eventIdOf(event: unknown): string {
  const id = (event as { event_id?: unknown } | null)?.event_id;
  return typeof id === "string" ? id : "";
}

/** A refusal that retrying will not change: a 4xx other than 429. */
function isPermanent(err: unknown): boolean {
  const status = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === "number" && status >= 400 && status < 500 && status !== 429;
}
