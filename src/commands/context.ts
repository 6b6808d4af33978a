/**
 * What a management-room command gets: who asked, the service, and ways to answer early.
 * A command returns the parts of its reply; the router sends them (split to fit events).
 */
import type { UserId } from "../matrix/ids.ts";
import type { Service } from "../service/service.ts";
import type { Part } from "./render.ts";
import type { CommandSpec, CommandTable } from "./spec.ts";
import type { TokenContext } from "./token-commands.ts";

export interface CommandContext extends TokenContext {
  readonly sender: UserId;
  readonly eventId: string;
  readonly prefix: string;
  readonly service: Service;
  readonly table: CommandTable<CommandContext, Part[]>;
  /** Acknowledges a long-running command at once (a reaction on the command). */
  ack(): Promise<void>;
  /** Sends a reply before the final one (e.g. "queued behind the current run"). */
  say(parts: Part[]): Promise<void>;
}

export type Command = CommandSpec<CommandContext, Part[]>;
