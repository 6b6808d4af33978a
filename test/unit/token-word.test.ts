/** `tokens.command` (mas-token-bot's base_command): the token commands' word in the rooms. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";
import { parseCommandLine } from "../../src/commands/parse.ts";
import { commandTable } from "../../src/commands/table.ts";
import { decide, hear } from "../../src/commands/router.ts";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";

const CONFIG = (tokens: string): string => `
homeserver:
  url: http://127.0.0.1:8008
  accessToken: syt_minimal_token
idp:
  kind: static
  static:
    file: directory.yaml
tokens:
${tokens}
`;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-token-word-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function load(tokens: string): ReturnType<typeof loadConfig> {
  writeFileSync(join(dir, "config.yaml"), CONFIG(tokens));
  return loadConfig({ path: join(dir, "config.yaml"), env: {}, cwd: dir });
}

describe("tokens.command", () => {
  it("defaults to token; takes a word; refuses what is not a word or is another command's", () => {
    const plain = load("  backend: synapse");
    expect(plain.ok && plain.config.tokens?.command).toBe("token");
    const word = load("  command: regtoken");
    expect(word.ok && word.config.tokens?.command).toBe("regtoken");
    for (const [bad, why] of [
      ["Reg Token", /not a command word/],
      ["!token", /not a command word/],
      ["sync", /already a command/],
      ["help", /already a command/],
    ] as const) {
      const r = load(`  command: "${bad}"`);
      expect(r.ok, bad).toBe(false);
      if (!r.ok) expect(r.errors.map(formatConfigError).join("\n"), bad).toMatch(why);
    }
  });

  it("renames every token command in the room's table, aliases included; the rest keep their names", () => {
    const table = commandTable("regtoken");
    const names = table.commands.map((c) => c.name);
    expect(names).toContain("regtoken list");
    expect(names).toContain("regtoken");
    expect(names.some((n) => n === "token" || n.startsWith("token "))).toBe(false);
    expect(names).toContain("sync");
    const generate = parseCommandLine(table, "!regtoken generate 3 7d");
    expect(generate.kind === "ok" && generate.command.name).toBe("regtoken create");
    expect(parseCommandLine(table, "!token list").kind).toBe("unknown");
    // The default table is untouched.
    expect(commandTable().find("token list")?.name).toBe("token list");
  });

  it("in a token room only the renamed token commands are heard", () => {
    const table = commandTable("regtoken");
    const place = {
      roomId: "!desk:example.org",
      managementRoomId: "!mgmt:example.org" as RoomId,
      listening: true,
      bot: "@bot:example.org" as UserId,
      prefix: "!",
      table,
      tokenWord: "regtoken",
    };
    const event = (body: string) => ({ event_id: `$${body.length}`, sender: "@ann:example.org", origin_server_ts: 1, type: "m.room.message", content: { msgtype: "m.text", body } });
    const heard = hear(place, event("!regtoken list"));
    expect(heard.kind).toBe("command");
    if (heard.kind === "command") expect(decide(heard, false, "!").kind).toBe("run");
    expect(hear(place, event("!sync")).kind).toBe("ignore");
    expect(hear(place, event("!token list")).kind).toBe("ignore");
  });
});
