/**
 * Help, generated from the command table so it cannot drift from what the parser accepts.
 */
import { blocks, bold, code, list, paragraph, type Inline, type Part } from "./render.ts";
import type { AnySpec, CommandSpec, CommandTable, ParamKind, ParamSpec, Permission } from "./spec.ts";

/** What each kind of parameter accepts, in words. */
export const KIND_HINTS: Readonly<Record<ParamKind, string>> = {
  room: "a room id (!id:server), alias (#room:server) or matrix.to link",
  user: "a user id (@name:server), mention or matrix.to link",
  string: "text; quote it if it contains spaces",
  int: "a whole number, 0 or more",
  duration: "7d, 12h, 30m, 90s, 2w (or combined, like 1h30m), an ISO date like 2025-12-31, or never",
};

function paramUsage(param: ParamSpec): string {
  const name = param.variadic === true ? `${param.name}…` : param.name;
  return param.optional === true ? `[${name}]` : `<${name}>`;
}

/**
 * The prefix as commands are written after it: a word prefix (`!gs`, ending in a letter or
 * digit) needs a space before the name (`!gs sync`), a symbol (`!`) none.
 */
export function displayPrefix(prefix: string): string {
  return /[\p{L}\p{N}]$/u.test(prefix) ? `${prefix} ` : prefix;
}

/** `!sync [--dry] [room]`, `!release <room> [user…]`: the prefix, the name, flags, then parameters. */
export function usageLine(spec: AnySpec, prefix = "!"): string {
  const flags = (spec.flags ?? []).map((f) => `[--${f.name}]`);
  return [`${displayPrefix(prefix)}${spec.name}`, ...flags, ...spec.params.map(paramUsage)].join(" ");
}

const GROUPS: readonly { permission: CommandSpec<unknown, unknown>["permission"]; title: string }[] = [
  { permission: "operator", title: "Operator commands" },
  { permission: "token-users", title: "Token commands (operators, and whom the token allow list admits)" },
  { permission: "anyone-in-room", title: "Commands anyone in the management room may use" },
];

/**
 * All commands: a section per permission (operators first), commands sorted by name within
 * it, each with its usage line and summary. Ends with a pointer to `help <command>` when the
 * table has a `help` command.
 */
export function helpText<C extends AnySpec>(table: CommandTable<C>, prefix = "!", only: (command: C) => boolean = () => true): Part {
  const sections: Part[] = [];
  for (const group of GROUPS) {
    const commands = table.commands.filter((c) => c.permission === group.permission && only(c)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (commands.length === 0) continue;
    sections.push(paragraph(bold(`${group.title}:`)));
    sections.push(list(commands.map((c): Inline[] => [code(usageLine(c, prefix)), ` — ${c.summary}`])));
  }
  if (sections.length === 0) sections.push(paragraph("No commands."));
  const help = table.find("help");
  if (help !== undefined) {
    sections.push(paragraph("Send ", code(`${prefix}help <command>`), " for the details of a command."));
  }
  return blocks(sections);
}

const PERMISSION_TEXT: Readonly<Record<Permission, string>> = {
  operator: "Only operators may run this command.",
  "token-users": "Operators may run this command, and the users and rooms on the token allow list (see token allowed).",
  "anyone-in-room": "Anyone in the management room may run this command.",
};

/**
 * One command: usage, description, each parameter (with what its kind accepts) and flag, and
 * who may run it. `name` may carry the prefix and extra words (`"!token list"`,
 * `"token list foo"`); the longest matching command is described. An unknown name gives a
 * short text naming the nearest command when there is one.
 */
export function helpFor<C extends AnySpec>(table: CommandTable<C>, name: string, prefix = "!", only?: (command: C) => boolean): Part {
  const trimmed = name.trim();
  const bare = prefix !== "" && trimmed.startsWith(prefix) ? trimmed.slice(prefix.length) : trimmed;
  const words = bare.split(/\s+/).filter((w) => w !== "");
  const match = table.match(words);
  if (match === undefined) {
    const shown = words.slice(0, 4).join(" ").slice(0, 100);
    const suggestion = table.suggest(words);
    return paragraph(
      `There is no command ${JSON.stringify(shown)}.`,
      ...(suggestion === undefined ? [] : [" Did you mean ", code(`${prefix}${suggestion.name}`), "?"]),
    );
  }
  const spec = match.command;
  const parts: Part[] = [paragraph(bold("Usage:"), " ", code(usageLine(spec, prefix)))];
  parts.push(paragraph(spec.description ?? spec.summary));
  if ((spec.aliases ?? []).length > 0) parts.push(paragraph("Also: ", ...(spec.aliases ?? []).flatMap((a, i) => [...(i > 0 ? [", "] : []), code(`${prefix}${a}`)])));
  if (spec.params.length > 0) {
    parts.push(paragraph(bold("Arguments:")));
    parts.push(
      list(
        spec.params.map((p): Inline[] => {
          const notes =
            p.variadic === true ? (p.optional === true ? "optional; any number, separated by spaces" : "one or more, separated by spaces") : p.optional === true ? "optional" : "required";
          return [code(p.variadic === true ? `${p.name}…` : p.name), ` — ${p.description} (${notes}): ${KIND_HINTS[p.kind]}`];
        }),
      ),
    );
  }
  const flags = spec.flags ?? [];
  if (flags.length > 0) {
    parts.push(paragraph(bold("Flags:")));
    parts.push(list(flags.map((f): Inline[] => [code(`--${f.name}`), ...(f.aliases ?? []).flatMap((a) => [" or ", code(`--${a}`)]), ` — ${f.description}`])));
  }
  const subcommands = table.commands.filter((c) => c.name.startsWith(`${spec.name} `) && (only === undefined || only(c)));
  if (subcommands.length > 0) {
    parts.push(paragraph(bold(`The ${spec.name} commands:`)));
    parts.push(list(subcommands.map((c): Inline[] => [code(usageLine(c, prefix)), ` — ${c.summary}`])));
  }
  parts.push(paragraph(PERMISSION_TEXT[spec.permission]));
  return blocks(parts);
}
