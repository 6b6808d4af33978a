/** Every management-room command, in one table: parsing, permissions and help come from it. */
import type { Command } from "./context.ts";
import { idpCommand, joinedCommand, managedCommand } from "./directory-commands.ts";
import { helpFor, helpText } from "./help.ts";
import { inviteAdminCommand, inviteMemberCommand, kickMemberCommand, manageCommand, unmanageCommand } from "./room-commands.ts";
import { CommandTable, defineCommand } from "./spec.ts";
import { historyCommand, releaseCommand, statusCommand, syncCommand } from "./sync-commands.ts";
import { tokenCommands } from "./token-commands.ts";
import type { CommandContext } from "./context.ts";
import type { Part } from "./render.ts";

const helpCommand: Command = defineCommand({
  name: "help",
  // The inviterbot's help command.
  aliases: ["inviter"],
  summary: "List the commands, or explain one",
  params: [{ name: "command", kind: "string", description: "a command name, e.g. sync", optional: true, variadic: true }],
  // Everyone in the management room may learn what the bot does; the commands stay operator-only.
  permission: "anyone-in-room",
  run(ctx, args) {
    const words = (args.values["command"] as string[] | undefined) ?? [];
    return Promise.resolve([words.length > 0 ? helpFor(ctx.table, words.join(" "), ctx.prefix) : helpText(ctx.table, ctx.prefix)]);
  },
});

/** `!token` alone: the token commands (who may run them is said per command). */
const tokenHelpCommand: Command = defineCommand({
  name: "token",
  summary: "The registration-token commands",
  params: [],
  permission: "anyone-in-room",
  run(ctx) {
    return Promise.resolve([helpText(ctx.table, ctx.prefix, (name) => name.startsWith("token "))]);
  },
});

export function commandTable(): CommandTable<CommandContext, Part[]> {
  return new CommandTable<CommandContext, Part[]>([
    helpCommand,
    tokenHelpCommand,
    idpCommand,
    joinedCommand,
    managedCommand,
    syncCommand,
    statusCommand,
    historyCommand,
    releaseCommand,
    unmanageCommand,
    manageCommand,
    inviteMemberCommand,
    inviteAdminCommand,
    kickMemberCommand,
    ...tokenCommands,
  ]);
}
