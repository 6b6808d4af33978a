/**
 * Encrypted messages in the sync stream of `serve`: each `/sync` answer's crypto sections go to
 * the bot's device first (room keys arrive as to-device events, often in the same answer as the
 * message they open), then every `m.room.encrypted` event of a listened room's timeline is
 * replaced, in place, by what it decrypts to — the rest of the loop (backlog, router, commands)
 * sees an ordinary message.
 *
 * - A message whose key is missing is taken out of the timeline and waits (the key was asked
 *   for). When a later answer brings room keys it is tried again; decrypted, it is heard as if it
 *   had just arrived. After `keyWaitMs` it is given up: never executed, and its sender is told
 *   to send it again (at most once per sender and room in `keyWaitMs`, and in a minute at least).
 * - A message that cannot be read at all (malformed, a key of someone else's) is given up at once,
 *   with the same notice.
 * - Nothing from the first sync, and nothing up to the bot's own join in a newly joined room, is
 *   ever heard (it is backlog); neither are the bot's own messages.
 * - Without end-to-end encryption set up, encrypted messages are dropped (logged once per room).
 */
import type { Logger } from "../log.ts";
import type { EndToEnd, RoomEncryptionState } from "../matrix/e2ee.ts";
import { describeError } from "../result.ts";

export interface EncryptedTimelineOptions {
  readonly e2ee: EndToEnd | undefined;
  readonly rooms: RoomEncryptionState;
  readonly bot: string;
  readonly keyWaitMs: number;
  readonly log: Logger;
  /** A waiting message that could be decrypted after all: it is new. */
  readonly onLate: (roomId: string, event: Record<string, unknown>) => void;
  /** A message given up: tell its sender. */
  readonly onUndecryptable: (roomId: string, event: Record<string, unknown>, reason: string) => void;
}

/** At most this many messages wait for their keys (a flood drops the oldest). */
const MAX_WAITING = 200;

interface Waiting {
  readonly roomId: string;
  readonly event: Record<string, unknown>;
  readonly until: number;
}

type SyncAnswer = { rooms?: { join?: Record<string, { timeline?: { events?: unknown; limited?: unknown } }> } } | null;

export class EncryptedTimeline {
  readonly #waiting = new Map<string, Waiting>();
  /** `${room}\u0000${sender}` → when the last notice was sent. */
  readonly #told = new Map<string, number>();
  readonly #unreadable = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(private readonly opts: EncryptedTimelineOptions) {}

  /** Handles one sync answer before its rooms are processed (`isBacklog`: not to be heard). */
  async prepare(raw: unknown, initial: boolean, listened: (roomId: string) => boolean, isBacklog: (eventId: string) => boolean): Promise<void> {
    const { e2ee, rooms, log } = this.opts;
    if (this.#stopped) return;
    let keysCame = false;
    if (e2ee !== undefined) {
      const r = await e2ee.receiveSync(raw);
      if (!r.ok) log.error("end-to-end encryption: handling a sync answer failed", { error: r.error.message });
      else keysCame = r.value.toDevice > 0;
    }
    const join = (raw as SyncAnswer)?.rooms?.join ?? {};
    for (const [roomId, section] of Object.entries(join)) {
      const timeline = section.timeline;
      if (timeline === undefined || !Array.isArray(timeline.events)) continue;
      if (timeline.limited === true) {
        rooms.forget(roomId);
        e2ee?.forgetRoom(roomId);
      }
      const kept: unknown[] = [];
      for (const event of timeline.events as unknown[]) {
        rooms.note(roomId, event);
        e2ee?.noteTimelineEvent(roomId, event);
        if (!isEncrypted(event)) {
          kept.push(event);
          continue;
        }
        if (!listened(roomId) || event["sender"] === this.opts.bot) continue;
        if (e2ee === undefined) {
          if (!this.#unreadable.has(roomId)) {
            this.#unreadable.add(roomId);
            log.warn("an encrypted message arrived, but end-to-end encryption is not set up (serve.encryption): it is ignored", { room: roomId });
          }
          continue;
        }
        const backlog = initial || isBacklog(eventIdOf(event));
        const d = await e2ee.decrypt(roomId, event);
        if (d.kind === "ok") {
          kept.push(d.event);
          continue;
        }
        if (backlog) continue;
        log.info("an encrypted message cannot be decrypted yet", { room: roomId, sender: event["sender"], event: eventIdOf(event), reason: d.reason });
        if (d.kind === "failed") this.#giveUp(roomId, event, d.reason);
        else this.#wait(roomId, event);
      }
      timeline.events = kept;
    }
    if (keysCame && this.#waiting.size > 0) await this.#retry(false);
  }

  #wait(roomId: string, event: Record<string, unknown>): void {
    if (this.#waiting.size >= MAX_WAITING) {
      const oldest = this.#waiting.keys().next().value;
      if (oldest !== undefined) {
        const w = this.#waiting.get(oldest)!;
        this.#waiting.delete(oldest);
        this.#giveUp(w.roomId, w.event, "too many messages were waiting for their keys");
      }
    }
    this.#waiting.set(eventIdOf(event), { roomId, event, until: Date.now() + this.opts.keyWaitMs });
    this.#arm();
  }

  /** Tries the waiting messages again; with `expired`, gives up those whose time is over. */
  async #retry(expired: boolean): Promise<void> {
    const e2ee = this.opts.e2ee;
    if (e2ee === undefined) return;
    const now = Date.now();
    for (const [id, w] of [...this.#waiting]) {
      if (this.#stopped) return;
      const d = await e2ee.decrypt(w.roomId, w.event);
      if (!this.#waiting.has(id)) continue; // dropped meanwhile
      if (d.kind === "ok") {
        this.#waiting.delete(id);
        this.opts.log.info("a waiting encrypted message was decrypted", { room: w.roomId, event: id });
        this.opts.onLate(w.roomId, d.event);
      } else if (d.kind === "failed" || (expired && w.until <= now)) {
        this.#waiting.delete(id);
        this.#giveUp(w.roomId, w.event, d.reason);
      }
    }
  }

  #giveUp(roomId: string, event: Record<string, unknown>, reason: string): void {
    const sender = typeof event["sender"] === "string" ? event["sender"] : "";
    this.opts.log.warn("an encrypted message could not be decrypted; it is not executed", { room: roomId, sender, event: eventIdOf(event), reason });
    const key = `${roomId}\u0000${sender}`;
    const last = this.#told.get(key);
    const now = Date.now();
    if (last !== undefined && now - last < Math.max(this.opts.keyWaitMs, 60_000)) return;
    this.#told.set(key, now);
    this.opts.onUndecryptable(roomId, event, reason);
  }

  /** A timer for the earliest deadline. */
  #arm(): void {
    if (this.#timer !== undefined || this.#stopped) return;
    let next = Infinity;
    for (const w of this.#waiting.values()) next = Math.min(next, w.until);
    if (next === Infinity) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#retry(true)
        .catch((err: unknown) => this.opts.log.error("end-to-end encryption: retrying waiting messages failed", { error: describeError(err) }))
        .finally(() => this.#arm());
    }, Math.max(0, next - Date.now()));
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#waiting.clear();
  }
}

function isEncrypted(event: unknown): event is Record<string, unknown> {
  return event !== null && typeof event === "object" && !Array.isArray(event) && (event as { type?: unknown }).type === "m.room.encrypted";
}

function eventIdOf(event: unknown): string {
  const id = (event as { event_id?: unknown } | null)?.event_id;
  return typeof id === "string" ? id : "";
}
