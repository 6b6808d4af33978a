/**
 * The management room as a surface: replies (HTML + plain, split to fit events) in reply to
 * the command, the ⏳ on a long command replaced by ✅ or ❌ when it ends, and one progress
 * message edited in place. Everything goes through the gateway (one rate-limit policy, one
 * halt signal with the runs).
 */
import { randomBytes } from "node:crypto";
import type { Capabilities, Command, Context, Outcome } from "./command.ts";
import { usageLine } from "./help.ts";
import { code, paragraph, splitMessage, toContent, type Part } from "./render.ts";
import type { CommandTable, ParsedArgs } from "./spec.ts";
import type { Logger } from "../log.ts";
import type { Messenger } from "../matrix/gateway.ts";
import type { RoomId } from "../matrix/ids.ts";
import type { Clock } from "../clock.ts";
import type { Message } from "./router.ts";

/** A command that ends sooner shows no progress message; a longer one edits one at most this often. */
const PROGRESS_EVERY_MS = 2_000;

export class ManagementRoomPort {
  constructor(
    private readonly messenger: Messenger,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  /** The parts as replies to `replyTo`; false when a message could not be sent (logged). */
  async reply(roomId: RoomId, replyTo: string, parts: readonly Part[]): Promise<boolean> {
    for (const content of splitMessage([...parts])) {
      const sent = await this.messenger.sendEvent(roomId, "m.room.message", { ...content, "m.relates_to": { "m.in_reply_to": { event_id: replyTo } } });
      if (!sent.ok) {
        this.log.warn("cannot reply in the room", { room: roomId, error: sent.error.message });
        return false;
      }
    }
    return true;
  }

  /** A reaction on the event: its event id, or undefined when it could not be sent (logged). */
  async react(roomId: RoomId, eventId: string, key: string): Promise<string | undefined> {
    const sent = await this.messenger.sendEvent(roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: eventId, key } });
    if (!sent.ok) this.log.warn("cannot react in the room", { room: roomId, error: sent.error.message });
    return sent.ok ? sent.value : undefined;
  }

  async unreact(roomId: RoomId, reactionId: string): Promise<void> {
    const r = await this.messenger.redact(roomId, reactionId);
    if (!r.ok) this.log.warn("cannot remove a reaction", { room: roomId, error: r.error.message });
  }

  /**
   * One progress message for a long command: once it has run PROGRESS_EVERY_MS, the next
   * count is sent (a reply) and later ones edit it (`m.replace`), at most every
   * PROGRESS_EVERY_MS, and the last (done = total) always. A quick command shows none.
   */
  progress(roomId: RoomId, replyTo: string): (done: number, total: number, what: string) => void {
    let messageId: Promise<string | undefined> | undefined;
    /** Set when the first message is queued (not when it is sent): later calls edit it. */
    let started = false;
    let lastAt = this.clock.now().getTime();
    let chain: Promise<unknown> = Promise.resolve();
    return (done, total, what) => {
      const now = this.clock.now().getTime();
      const final = done >= total;
      if (started ? !final && now - lastAt < PROGRESS_EVERY_MS : now - lastAt < PROGRESS_EVERY_MS) return;
      lastAt = now;
      const first = !started;
      started = true;
      const content = toContent(paragraph(`${what} ${done}/${total}`));
      chain = chain.then(async () => {
        if (first) {
          messageId = this.messenger
            .sendEvent(roomId, "m.room.message", { ...content, "m.relates_to": { "m.in_reply_to": { event_id: replyTo } } })
            .then((r) => (r.ok ? r.value : undefined));
          return messageId;
        }
        const id = await messageId;
        if (id === undefined) return undefined;
        return this.messenger.sendEvent(roomId, "m.room.message", {
          ...content,
          body: `* ${content.body}`,
          "m.new_content": content,
          "m.relates_to": { rel_type: "m.replace", event_id: id },
        });
      });
    };
  }
}

export interface RoomCommand {
  readonly roomId: RoomId;
  readonly message: Message;
  readonly command: Command;
  readonly args: ParsedArgs;
  readonly isOperator: boolean;
}

/** What a command from the room is run with. */
export interface RoomSurface {
  readonly port: ManagementRoomPort;
  readonly table: CommandTable<Command>;
  readonly prefix: string;
  readonly caps: Omit<Capabilities, "terminal" | "loaded">;
  readonly log: Logger;
}

const REACTION: Readonly<Record<Outcome["status"], string>> = { ok: "✅", degraded: "❌", failed: "❌", refused: "❌", usage: "❌" };

/** Runs one command and answers in the room: the reply, and ✅ / ❌ in place of a ⏳ it put. */
export async function runInRoom(surface: RoomSurface, cmd: RoomCommand): Promise<void> {
  const { port, log } = surface;
  const { roomId, message } = cmd;
  let ackId: Promise<string | undefined> | undefined;
  const ctx: Context = {
    ...(surface.caps as Capabilities),
    actor: message.sender,
    surface: "room",
    place: roomId,
    isOperator: cmd.isOperator,
    prefix: surface.prefix,
    table: surface.table,
    say: async (parts) => {
      await port.reply(roomId, message.eventId, parts);
    },
    ack: async () => {
      ackId ??= port.react(roomId, message.eventId, "⏳");
      await ackId;
    },
    progress: port.progress(roomId, message.eventId),
  };
  log.info("command", { sender: message.sender, command: cmd.command.name });
  let outcome: Outcome;
  try {
    outcome = await cmd.command.run(ctx, cmd.args);
  } catch (err) {
    const errorId = randomBytes(4).toString("hex");
    log.error("command failed", { errorId, command: cmd.command.name, error: err instanceof Error ? err.message : String(err) });
    outcome = { status: "failed", parts: [paragraph(`Something went wrong running ${surface.prefix}${cmd.command.name} (error id ${errorId}); the details are in the log.`)] };
  }
  const usage = outcome.status === "usage" ? [paragraph("Usage: ", code(usageLine(cmd.command, surface.prefix)))] : [];
  await port.reply(roomId, message.eventId, [...outcome.parts, ...usage]);
  if (ackId !== undefined) {
    const id = await ackId;
    if (id !== undefined) await port.unreact(roomId, id);
    await port.react(roomId, message.eventId, REACTION[outcome.status]);
  }
}

