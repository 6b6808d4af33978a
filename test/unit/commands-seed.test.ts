/**
 * The habits operators bring from the bots they replace, on the real command table: the
 * inviterbot's `!inviter` (help) and `!sync dry`, mas-token-bot's `!token generate` and
 * `!token list TOKEN`. Aliases are names of the same command, so parsing, usage and help
 * come from the one table.
 */
import { describe, expect, it } from "vitest";
import { helpFor } from "../../src/commands/help.ts";
import { parseCommandLine } from "../../src/commands/parse.ts";

import { CommandTable, defineCommand } from "../../src/commands/spec.ts";
import { usesAndExpiry } from "../../src/commands/token-commands.ts";
import { commandTable } from "../../src/commands/table.ts";

const table = commandTable();

function parsed(line: string) {
  const r = parseCommandLine(table, line);
  if (r.kind !== "ok") throw new Error(`${line}: ${JSON.stringify(r)}`);
  return r;
}

describe("seed bots' command habits", () => {
  it("!inviter is help, with the same arguments", () => {
    expect(parsed("!inviter").command.name).toBe("help");
    expect(parsed("!inviter sync").args.values["command"]).toEqual(["sync"]);
  });

  it("!sync dry is !sync --dry; a room may come with it; quoted, dry is an argument (and not a room)", () => {
    expect(parsed("!sync dry").args.flags["dry"]).toBe(true);
    const both = parsed("!sync #eng:example.org DRY");
    expect(both.args.flags["dry"]).toBe(true);
    expect(both.args.values["room"]).toMatchObject([{ kind: "alias", alias: "#eng:example.org" }]);
    expect(parsed("!sync").args.flags["dry"]).toBe(false);
    const quoted = parseCommandLine(table, '!sync "dry"');
    expect(quoted.kind).toBe("usage-error");
  });

  it("!token generate is token create, and takes its arguments", () => {
    const r = parsed("!token generate 3 7d");
    expect(r.command.name).toBe("token create");
    expect(r.args.values["uses"]).toBe("3");
    expect(r.args.values["expiry"]).toBe("7d");
    // Uses and expiry are told apart by their form, in either order.
    expect(usesAndExpiry(["3", "7d"])).toEqual({ ok: true, uses: "3", expiry: { kind: "relative", ms: 7 * 24 * 3600 * 1000 } });
    expect(usesAndExpiry(["7d", "3"])).toEqual({ ok: true, uses: "3", expiry: { kind: "relative", ms: 7 * 24 * 3600 * 1000 } });
    expect(usesAndExpiry(["12h", undefined])).toEqual({ ok: true, expiry: { kind: "relative", ms: 12 * 3600 * 1000 } });
    expect(usesAndExpiry(["3", "4"]).ok).toBe(false);
    expect(usesAndExpiry(["soon", undefined])).toEqual({ ok: false, error: expect.stringMatching(/^uses: "soon" is not a number of uses/) as unknown });
    expect(usesAndExpiry(["-1", undefined])).toEqual({ ok: false, error: expect.stringMatching(/^uses: "-1" is not a number of uses/) as unknown });
  });

  it("help names the aliases of a command, and help of an alias explains the command", () => {
    const text = helpFor(table, "help").text;
    expect(text).toContain("Also: !inviter");
    expect(helpFor(table, "token generate").text).toContain("Usage: !token create");
  });

  it("a table refuses an alias that another command already has", () => {
    const run = (): Promise<string> => Promise.resolve("");
    const a = defineCommand({ name: "one", summary: "one", params: [], permission: "operator", run });
    const b = defineCommand({ name: "two", aliases: ["one"], summary: "two", params: [], permission: "operator", run });
    expect(() => new CommandTable([a, b])).toThrow(/duplicate command name 'one'/);
  });
});

describe("!token alone", () => {
  it("is the token commands' help; a typo after it still names the nearest token command", () => {
    expect(parsed("!token").command.name).toBe("token");
    const typo = parseCommandLine(table, "!token lsit");
    expect(typo.kind).toBe("usage-error");
    if (typo.kind === "usage-error") expect(typo.message).toContain("did you mean !token list?");
  });
});
