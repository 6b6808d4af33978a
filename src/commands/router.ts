/**
 * The management room's router, pure: a sync event → ignore, or a command heard; a heard
 * command and whether its sender is allowed → refuse / unknown / usage / run. Nothing here
 * does I/O: the service marks the event handled between the two steps (so a restart never
 * replays it) and looks the sender up in the allow list.
 */
import type { Command } from "./command.ts";
import { parseCommandLine, type ParseResult } from "./parse.ts";
import { code, paragraph, type Part } from "./render.ts";
import type { CommandTable, ParsedArgs } from "./spec.ts";
import { isTokenCommand } from "./table.ts";
import { displayPrefix } from "./help.ts";
import { parseUserId, type RoomId, type UserId } from "../matrix/ids.ts";

export interface Message {
  readonly eventId: string;
  readonly sender: UserId;
  readonly body: string;
  readonly formattedBody?: string;
}

/** A plain text message from a person; edits, notices and anything malformed are not commands. */
export function decodeMessage(event: unknown): Message | undefined {
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

export interface Place {
  readonly roomId: string;
  readonly managementRoomId: RoomId;
  /** Whether the service listens to this room (the management room or a token room). */
  readonly listening: boolean;
  readonly bot: UserId;
  readonly prefix: string;
  readonly table: CommandTable<Command>;
  /** The token commands' word (`tokens.command`). */
  readonly tokenWord: string;
}

export type Heard =
  | { readonly kind: "ignore" }
  | { readonly kind: "command"; readonly message: Message; readonly parsed: Exclude<ParseResult<Command>, { kind: "not-a-command" }> };

export function hear(place: Place, event: unknown): Heard {
  if (!place.listening) return { kind: "ignore" };
  const message = decodeMessage(event);
  if (message === undefined || message.sender === place.bot) return { kind: "ignore" };
  const parsed = parseCommandLine(place.table, message.body, {
    prefix: place.prefix,
    ...(message.formattedBody !== undefined ? { formattedBody: message.formattedBody } : {}),
  });
  if (parsed.kind === "not-a-command") return { kind: "ignore" };
  // Outside the management room only token commands are heard.
  if (place.roomId !== place.managementRoomId && (parsed.kind === "unknown" || !isTokenCommand(parsed.command, place.tokenWord))) return { kind: "ignore" };
  return { kind: "command", message, parsed };
}

export type Decision =
  | { readonly kind: "answer"; readonly parts: readonly Part[]; readonly why: "refused" | "unknown" | "usage" }
  | { readonly kind: "run"; readonly command: Command; readonly args: ParsedArgs };

/** Whether the command needs the sender on the command allow list. */
export function needsAllowList(heard: Extract<Heard, { kind: "command" }>): boolean {
  const p = heard.parsed;
  return p.kind === "unknown" || p.command.permission === "operator";
}

/**
 * `allowed`: whether the sender passes the command allow list (asked only when
 * `needsAllowList`). Operator commands and unknown ones are refused without it, so that the
 * bot does not tell strangers which commands exist.
 */
export function decide(heard: Extract<Heard, { kind: "command" }>, allowed: boolean, typedPrefix: string): Decision {
  const { parsed, message } = heard;
  // As answers write commands: `!gs sync` for a word prefix (which is how the parser wants them).
  const prefix = displayPrefix(typedPrefix);
  if (needsAllowList(heard) && !allowed) {
    return { kind: "answer", why: "refused", parts: [paragraph(`Sorry ${message.sender}, you are not on the allow list for commands here.`)] };
  }
  if (parsed.kind === "unknown") {
    const hint = parsed.suggestion !== undefined ? [" Did you mean ", code(`${prefix}${parsed.suggestion}`), "?"] : [];
    return { kind: "answer", why: "unknown", parts: [paragraph(`Unknown command ${prefix}${parsed.name}.`, ...hint, " Send ", code(`${prefix}help`), " for the list.")] };
  }
  if (!parsed.command.surfaces.includes("room")) {
    return { kind: "answer", why: "usage", parts: [paragraph(code(parsed.command.name), " is a command-line command: ", code(`matrix-group-sync ${parsed.command.name}`), ". Send ", code(`${prefix}help`), " for the commands here.")] };
  }
  if (parsed.kind === "usage-error") {
    return { kind: "answer", why: "usage", parts: [paragraph(parsed.message), paragraph("Usage: ", code(parsed.usage))] };
  }
  return { kind: "run", command: parsed.command, args: parsed.args };
}
