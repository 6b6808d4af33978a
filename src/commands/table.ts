/**
 * Every command, in one table: parsing, permissions, help and the CLI's usage come from it.
 * Each command says which surfaces offer it (the management room, the CLI, or both).
 */
import { importCommand } from "../import/command.ts";
import { checkConfigCommand, cryptoResetCommand, migrateCommand, serveCommand } from "./cli-commands.ts";
import { command, done, type Command } from "./command.ts";
import { idpCommand, joinedCommand, managedCommand } from "./directory-commands.ts";
import { helpFor, helpText } from "./help.ts";
import { code, paragraph, type Part } from "./render.ts";
import { inviteAdminCommand, inviteMemberCommand, kickMemberCommand, manageCommand, unmanageCommand } from "./room-commands.ts";
import { CommandTable } from "./spec.ts";
import { historyCommand, releaseCommand, statusCommand, syncCommand } from "./sync-commands.ts";
import { tokenCommands } from "./token-commands.ts";

/** What the terminal adds to every command, and what its exit codes mean. */
export const CLI_OPTIONS: readonly Part[] = [
  paragraph("Usage: ", code("matrix-group-sync <command> [arguments] [--config FILE] [--json]"), "; ", code("matrix-group-sync <command> --help"), " explains one."),
  paragraph("Options for every command: ", code("--config FILE"), " (default: $MGS_CONFIG), ", code("--json"), " (print the outcome as JSON), ", code("--help"), "."),
  paragraph(
    "Any argument may also be given by name: ",
    code("--room ROOM"),
    " (repeat it for a list). Exit codes: 0 done, 1 failed, 2 bad usage or config, 3 degraded (a mapped group was incomplete or missing: no removals in its rooms), 4 refused (understood, but not done: no such token, run or room; nothing changed).",
  ),
];

const helpCommand: Command = command({
  name: "help",
  // The inviterbot's help command.
  aliases: ["inviter"],
  summary: "List the commands, or explain one",
  params: [{ name: "command", kind: "string", description: "a command name, e.g. sync", optional: true, variadic: true }],
  // Everyone in the management room may learn what the bot does; the commands stay operator-only.
  permission: "anyone-in-room",
  surfaces: ["room", "cli"],
  uses: [],
  // eslint-disable-next-line @typescript-eslint/require-await -- the table's executors are async
  async run(ctx, args) {
    const here = (c: Command): boolean => c.surfaces.includes(ctx.surface);
    if (args.command.length > 0) {
      const name = args.command.join(" ");
      const match = ctx.table.match(args.command);
      if (match !== undefined && !here(match.command)) {
        return done(paragraph(`${match.command.name} is not offered ${ctx.surface === "cli" ? "on the command line" : "in the room"}; it is a ${ctx.surface === "cli" ? "management-room" : "command-line"} command.`));
      }
      // An unknown name is a usage error (the nearest command is named).
      if (match === undefined) return { status: "usage", parts: [helpFor(ctx.table, name, ctx.prefix)] };
      return done([helpFor(ctx.table, name, ctx.prefix, here), ...(ctx.surface === "cli" ? CLI_OPTIONS : [])]);
    }
    return done([helpText(ctx.table, ctx.prefix, here), ...(ctx.surface === "cli" ? CLI_OPTIONS : [])]);
  },
});

/** `!token` alone: the token commands (who may run them is said per command). */
const tokenHelpCommand: Command = command({
  name: "token",
  summary: "The registration-token commands",
  params: [],
  permission: "anyone-in-room",
  surfaces: ["room", "cli"],
  uses: [],
  // eslint-disable-next-line @typescript-eslint/require-await -- the table's executors are async
  async run(ctx) {
    // The token commands are the ones that use the token service (whatever their word).
    return done(helpText(ctx.table, ctx.prefix, (c) => c.uses.includes("tokens") && c.surfaces.includes(ctx.surface)));
  },
});

const COMMANDS: readonly Command[] = [
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
  checkConfigCommand,
  migrateCommand,
  serveCommand,
  cryptoResetCommand,
  importCommand,
];

const tables = new Map<string, CommandTable<Command>>();

/**
 * The one table (built and checked once per token word). `tokenWord` renames the token
 * commands (`tokens.command`, mas-token-bot's base_command): `!regtoken list`.
 */
export function commandTable(tokenWord = "token"): CommandTable<Command> {
  let table = tables.get(tokenWord);
  if (table === undefined) {
    const rename = (name: string): string => (name === "token" || name.startsWith("token ") ? tokenWord + name.slice("token".length) : name);
    const commands = tokenWord === "token" ? COMMANDS : COMMANDS.map((c) => ({ ...c, name: rename(c.name), ...(c.aliases ? { aliases: c.aliases.map(rename) } : {}) }));
    table = new CommandTable<Command>(commands);
    tables.set(tokenWord, table);
  }
  return table;
}

/** Whether a command is one of the token commands (named with `tokenWord`). */
export function isTokenCommand(c: Command, tokenWord: string): boolean {
  return c.name === tokenWord || c.name.startsWith(`${tokenWord} `);
}
