import { describe, expect, it } from "vitest";
import { helpFor, helpText, usageLine } from "../../src/commands/help.ts";
import { MAX_COMMAND_LENGTH, decodeDuration, decodeRoom, decodeUser, parseCommandLine, tokenize, type ParseOptions } from "../../src/commands/parse.ts";
import { CUT_MARKER, escapeHtml, list, paragraph, splitMessage, table, type MessageContent, type Part } from "../../src/commands/render.ts";
import { CommandTable, argOf, argsOf, defineCommand, type CommandSpec, type ParsedArgs } from "../../src/commands/spec.ts";

type Spec = CommandSpec<null, string>;
const run = (): Promise<string> => Promise.resolve("done");

const COMMANDS: Spec[] = [
  defineCommand({
    name: "sync",
    summary: "Sync a room (or all rooms) now",
    description: "Reads the directory and the room, and writes what differs.",
    params: [{ name: "room", kind: "room", description: "the room to sync", optional: true }],
    flags: [
      { name: "dry", description: "plan only, change nothing" },
      { name: "verbose", description: "list every action" },
    ],
    permission: "operator",
    run,
  }),
  defineCommand({
    name: "release",
    summary: "Release held removals",
    params: [
      { name: "room", kind: "room", description: "the room" },
      { name: "user", kind: "user", description: "users to release (all when none)", optional: true, variadic: true },
    ],
    permission: "operator",
    run,
  }),
  defineCommand({
    name: "kick",
    summary: "Kick users",
    params: [
      { name: "room", kind: "room", description: "the room" },
      { name: "user", kind: "user", description: "users", variadic: true },
    ],
    permission: "operator",
    run,
  }),
  defineCommand({ name: "token", summary: "Show the token commands", params: [], permission: "operator", run }),
  defineCommand({
    name: "token list",
    summary: "List registration tokens",
    params: [{ name: "limit", kind: "int", description: "how many", optional: true }],
    permission: "operator",
    run,
  }),
  defineCommand({
    name: "token create",
    summary: "Create a registration token",
    params: [
      { name: "expires", kind: "duration", description: "when it expires" },
      { name: "note", kind: "string", description: "a note", optional: true },
    ],
    flags: [{ name: "single-use", description: "valid for one registration" }],
    permission: "operator",
    run,
  }),
  defineCommand({
    name: "help",
    summary: "Show help",
    params: [{ name: "command", kind: "string", description: "a command", optional: true, variadic: true }],
    permission: "anyone-in-room",
    run,
  }),
  defineCommand({ name: "status", summary: "Show the last run", params: [], permission: "anyone-in-room", run }),
];
const TABLE = new CommandTable(COMMANDS);

function parse(body: string, opts: ParseOptions = {}) {
  return parseCommandLine(TABLE, body, opts);
}

function ok(body: string, opts: ParseOptions = {}): { name: string; args: ParsedArgs } {
  const r = parse(body, opts);
  if (r.kind !== "ok") throw new Error(`expected ok for ${body}, got ${JSON.stringify(r)}`);
  return { name: r.command.name, args: r.args };
}

function usageError(body: string, opts: ParseOptions = {}): { name: string; message: string; usage: string } {
  const r = parse(body, opts);
  if (r.kind !== "usage-error") throw new Error(`expected usage-error for ${body}, got ${JSON.stringify(r)}`);
  return { name: r.command.name, message: r.message, usage: r.usage };
}

describe("tokenize", () => {
  const cases: [string, string[]][] = [
    ["", []],
    ["   \n\t ", []],
    ["a b  c", ["a", "b", "c"]],
    ["a\nb\r\nc\u00A0d\u3000e", ["a", "b", "c", "d", "e"]],
    [`"a b" c`, ["a b", "c"]],
    [`'a b' c`, ["a b", "c"]],
    [`"it's" 'say "hi"'`, ["it's", 'say "hi"']],
    [`"a \\"quoted\\" word"`, ['a "quoted" word']],
    [`"back\\\\slash"`, ["back\\slash"]],
    [`"C:\\path\\n"`, ["C:\\path\\n"]],
    [`'no \\' escapes`, ["no \\", "escapes"]],
    [`don't stop`, ["don't", "stop"]],
    [`a"b c"`, ['a"b', 'c"']],
    [`"a b"c d`, ["a bc", "d"]],
    [`"" ''`, ["", ""]],
    ["“smart quotes” too", ["smart quotes", "too"]],
    ["😀 𝕏 שלום", ["😀", "𝕏", "שלום"]],
  ];
  it.each(cases)("%j", (input, tokens) => {
    expect(tokenize(input)).toEqual({ ok: true, tokens });
  });

  it.each([`"open`, `'open`, `a "b c`, `"escaped end\\"`, "“never closed"])("unterminated quote in %j is an error", (input) => {
    const r = tokenize(input);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(/unterminated/);
  });
});

describe("command names", () => {
  it("is not a command without the prefix", () => {
    for (const body of ["sync", "hello !sync", "", "   ", "!", "! sync", "!!sync", "!1", "!!!", "!?"]) {
      expect(parse(body)).toEqual({ kind: "not-a-command" });
    }
  });

  it("allows leading whitespace and any case", () => {
    expect(ok("   \n !SYNC").name).toBe("sync");
    expect(ok("!Token List").name).toBe("token list");
  });

  it("takes the longest matching name", () => {
    expect(ok("!token list 5").name).toBe("token list");
    expect(ok("!token").name).toBe("token");
    expect(ok("!token   list").name).toBe("token list");
    expect(ok("!token\nlist").name).toBe("token list");
  });

  it("suggests the nearest command for an unknown one", () => {
    expect(parse("!snyc")).toEqual({ kind: "unknown", name: "snyc", suggestion: "sync" });
    expect(parse("!stauts --dry")).toEqual({ kind: "unknown", name: "stauts", suggestion: "status" });
    expect(parse("!frobnicate now")).toEqual({ kind: "unknown", name: "frobnicate" });
    expect(parse("!x")).toEqual({ kind: "unknown", name: "x" });
  });

  it("points at a longer command when the shorter one gets extra words", () => {
    expect(usageError("!token lsit").message).toMatch(/did you mean !token list\?/);
  });

  it("uses a custom prefix, which must end a word when it ends in a letter", () => {
    expect(ok("!gs sync", { prefix: "!gs" }).name).toBe("sync");
    expect(parse("!gssync", { prefix: "!gs" })).toEqual({ kind: "not-a-command" });
    expect(parse("!sync", { prefix: "!gs" })).toEqual({ kind: "not-a-command" });
    expect(ok("?sync", { prefix: "?" }).name).toBe("sync");
    expect(usageError("?sync --nope", { prefix: "?" }).usage).toBe("?sync [--dry] [--verbose] [room]");
  });

  it("ignores a reply fallback and treats newlines as whitespace", () => {
    const r = ok("> <@bob:example.org> can you sync?\n> second line\n\n!sync\n--dry\n#eng:example.org");
    expect(r.name).toBe("sync");
    expect(r.args.flags).toEqual({ dry: true, verbose: false });
    expect(argOf(r.args, "room", "room")).toEqual({ kind: "alias", alias: "#eng:example.org", via: [] });
  });

  it("rejects a command that is too long, without crashing", () => {
    const body = `!sync ${"x".repeat(MAX_COMMAND_LENGTH)}`;
    const e = usageError(body);
    expect(e.message).toMatch(/^command too long/);
    expect(e.usage).toBe("!sync [--dry] [--verbose] [room]");
    expect(parse(`!nosuch ${"y ".repeat(100_000)}`)).toEqual({ kind: "unknown", name: "nosuch" });
    expect(parse("z".repeat(1_000_000))).toEqual({ kind: "not-a-command" });
    const long = parse(`!${"a".repeat(5000)}`);
    expect(long.kind).toBe("unknown");
    if (long.kind === "unknown") expect(long.name.length).toBeLessThanOrEqual(101);
  });
});

describe("flags", () => {
  it("are accepted anywhere after the name", () => {
    expect(ok("!sync --dry #a:x.org").args.flags).toEqual({ dry: true, verbose: false });
    expect(ok("!sync #a:x.org --dry --verbose").args.flags).toEqual({ dry: true, verbose: true });
    expect(ok("!sync --DRY").args.flags.dry).toBe(true);
    expect(ok("!sync --dry --dry").args.flags.dry).toBe(true);
    expect(ok("!token create --single-use 7d").args.flags["single-use"]).toBe(true);
  });

  it("accept the em dash phones put in place of --", () => {
    expect(ok("!sync —dry").args.flags.dry).toBe(true);
  });

  it("are all present, false when not given", () => {
    expect(ok("!sync").args.flags).toEqual({ dry: false, verbose: false });
    expect(ok("!status").args.flags).toEqual({});
  });

  it("unknown flags are usage errors naming the flag", () => {
    const e = usageError("!sync --dyr");
    expect(e.message).toContain("'--dyr'");
    expect(e.message).toContain("did you mean --dry?");
    expect(usageError("!status --force").message).toMatch(/unknown flag '--force'; this command has no flags/);
  });

  it("a lone dash is text, and an unknown flag says how to pass it as text", () => {
    expect(argOf(ok("!token create 7d —").args, "note", "string")).toBe("—");
    expect(usageError("!token create 7d --draft").message).toMatch(/unknown flag '--draft'.*quote it or put it after --/);
  });

  it("take no value", () => {
    expect(usageError("!sync --dry=yes").message).toBe("flag --dry takes no value");
  });

  it("end at --, and quoted text is never a flag", () => {
    expect(argOf(ok('!token create 7d -- "--dry"').args, "note", "string")).toBe("--dry");
    expect(argOf(ok("!token create 7d -- --single-use").args, "note", "string")).toBe("--single-use");
    expect(ok("!token create 7d -- --single-use").args.flags["single-use"]).toBe(false);
    expect(argOf(ok('!token create 7d "--single-use"').args, "note", "string")).toBe("--single-use");
  });
});

describe("positional arguments", () => {
  it("optional ones are undefined, variadic ones arrays", () => {
    expect(ok("!sync").args.values).toEqual({ room: undefined });
    expect(Object.keys(ok("!sync").args.values)).toEqual(["room"]);
    expect(ok("!release !r:x.org").args.values).toEqual({ room: { kind: "id", roomId: "!r:x.org", via: [] }, user: [] });
    expect(argsOf(ok("!release !r:x.org @a:x.org @b:x.org").args, "user", "user")).toEqual(["@a:x.org", "@b:x.org"]);
  });

  it("missing and extra ones are usage errors", () => {
    expect(usageError("!release").message).toBe("missing room");
    expect(usageError("!kick #a:x.org").message).toBe("missing user (at least one)");
    expect(usageError("!status now").message).toBe("unexpected argument: 'now'");
    expect(usageError("!sync #a:x.org #b:x.org").message).toBe("unexpected argument: '#b:x.org'");
  });

  it("a quoted string keeps its spaces", () => {
    expect(argOf(ok(`!token create 7d "for the new team"`).args, "note", "string")).toBe("for the new team");
    expect(usageError(`!token create 7d "for the new team`).message).toMatch(/unterminated double quote/);
  });
});

describe("room arguments", () => {
  const good: [string, unknown][] = [
    ["!abc:example.org", { kind: "id", roomId: "!abc:example.org", via: [] }],
    ["!abcdefV12opaque", { kind: "id", roomId: "!abcdefV12opaque", via: [] }],
    ["#eng:example.org", { kind: "alias", alias: "#eng:example.org", via: [] }],
    ["https://matrix.to/#/!abc:example.org?via=a.org&via=b.org", { kind: "id", roomId: "!abc:example.org", via: ["a.org", "b.org"] }],
    ["https://matrix.to/#/%21abc%3Aexample.org?via=a.org", { kind: "id", roomId: "!abc:example.org", via: ["a.org"] }],
    ["https://matrix.to/#/%23eng:example.org", { kind: "alias", alias: "#eng:example.org", via: [] }],
    ["https://matrix.to/#/%23eng%3Aexample.org", { kind: "alias", alias: "#eng:example.org", via: [] }],
    ["https://matrix.to/#/#eng:example.org", { kind: "alias", alias: "#eng:example.org", via: [] }],
    ["http://MATRIX.TO/#/#eng:example.org", { kind: "alias", alias: "#eng:example.org", via: [] }],
    ["https://matrix.to/#/!abc:example.org/$event:example.org?via=a.org", { kind: "id", roomId: "!abc:example.org", via: ["a.org"] }],
    ["https://matrix.to/#/!abc:example.org/%24event?via=c.org:8448", { kind: "id", roomId: "!abc:example.org", via: ["c.org:8448"] }],
    ["matrix:r/eng:example.org", { kind: "alias", alias: "#eng:example.org", via: [] }],
    ["matrix:roomid/abc:example.org?via=a.org&via=b.org", { kind: "id", roomId: "!abc:example.org", via: ["a.org", "b.org"] }],
    ["matrix:roomid/abc:example.org/e/event?via=a.org&action=join", { kind: "id", roomId: "!abc:example.org", via: ["a.org"] }],
    ["matrix:r/%E2%9C%93:example.org", { kind: "alias", alias: "#✓:example.org", via: [] }],
  ];
  it.each(good)("%s", (raw, expected) => {
    expect(decodeRoom(raw)).toEqual({ ok: true, value: expected });
    expect(argOf(ok(`!sync ${raw}`).args, "room", "room")).toEqual(expected);
  });

  const bad: [string, RegExp][] = [
    ["foo", /^room: 'foo' is not a room id, alias or matrix\.to link$/],
    ["#noserver", /is not a room id, alias/],
    ["#eng:bad server", /is not a room id/],
    ["!", /is not a room id/],
    ["@alice:example.org", /is a user, not a room/],
    ["https://matrix.to/#/@alice:example.org", /is a user, not a room/],
    ["https://matrix.to/#/%E0%A4%A", /is not a room id/],
    ["https://matrix.to/#/!abc:example.org?via=bad%20server", /via parameter that is not a server name: 'bad server'/],
    ["https://example.org/#/!abc:example.org", /is not a room id/],
    ["matrix:u/alice:example.org", /is a user, not a room/],
    ["matrix:x/abc:example.org", /is not a room id/],
    ["matrix:roomid/abc:example.org/extra", /is not a room id/],
  ];
  it.each(bad)("rejects %s", (raw, message) => {
    expect(usageError(`!sync "${raw}"`).message).toMatch(message);
  });
});

describe("user arguments", () => {
  const good: [string, string][] = [
    ["@alice:example.org", "@alice:example.org"],
    ["@alice:example.org:8448", "@alice:example.org:8448"],
    ["https://matrix.to/#/@alice:example.org", "@alice:example.org"],
    ["https://matrix.to/#/%40alice%3Aexample.org", "@alice:example.org"],
    ["https://matrix.to/#/@alice:example.org?via=example.org", "@alice:example.org"],
    ["https://matrix.to/#/@a/b:example.org", "@a/b:example.org"],
    ["matrix:u/alice:example.org", "@alice:example.org"],
    ["matrix:u/alice:example.org?action=chat", "@alice:example.org"],
  ];
  it.each(good)("%s", (raw, expected) => {
    expect(decodeUser(raw)).toEqual({ ok: true, value: expected });
    expect(argsOf(ok(`!release #r:x.org ${raw}`).args, "user", "user")).toEqual([expected]);
  });

  it.each(["alice", "@alice", "@:example.org", "@alice:", "#alice:example.org", "https://matrix.to/#/alice", "@al ice:x.org", "matrix:u/alice:example.org/e/x"])(
    "rejects %j",
    (raw) => {
      expect(usageError(`!release #r:x.org @ok:x.org "${raw}"`).message).toMatch(/^user: '.*' is not a user id \(@name:server\) or matrix\.to link$/);
    },
  );

  it("pills in the formatted body become ids", () => {
    const body = "!release #r:example.org Alice Smith Bob";
    const formattedBody =
      '!release #r:example.org <a href="https://matrix.to/#/@alice:example.org">Alice Smith</a> <a href="https://matrix.to/#/%40bob%3Aexample.org">Bob</a>';
    expect(argsOf(ok(body, { formattedBody }).args, "user", "user")).toEqual(["@alice:example.org", "@bob:example.org"]);
    // Without the formatted body, the display names are not ids.
    expect(usageError(body).message).toMatch(/^user: 'Alice' is not a user id/);
  });

  it("pills: entities in names, matrix: links, rooms with via, the reply fallback ignored", () => {
    const body = "> <@x:example.org> Carol & Dave\n\n!release Engineering Carol & Dave";
    const formattedBody =
      '<mx-reply><blockquote><a href="https://matrix.to/#/@x:example.org">x</a> <a href="https://matrix.to/#/@carol:example.org">Carol &amp; Dave</a></blockquote></mx-reply>' +
      '!release <a href="https://matrix.to/#/!eng:example.org?via=example.org&amp;via=other.org">Engineering</a> <a href=\'matrix:u/carol:example.org\'><b>Carol</b> &amp; Dave</a>';
    const r = ok(body, { formattedBody });
    expect(argOf(r.args, "room", "room")).toEqual({ kind: "id", roomId: "!eng:example.org", via: ["example.org", "other.org"] });
    expect(argsOf(r.args, "user", "user")).toEqual(["@carol:example.org"]);
  });

  it("pills whose text is not in the body, and other links, are ignored", () => {
    const formattedBody = '!release #r:x.org <a href="https://matrix.to/#/@zed:x.org">Zed</a> <a href="https://example.org">@b:x.org</a>';
    expect(argsOf(ok("!release #r:x.org @a:x.org @b:x.org", { formattedBody }).args, "user", "user")).toEqual(["@a:x.org", "@b:x.org"]);
  });

  it("a pill is only replaced at word boundaries", () => {
    const formattedBody = '!release #r:x.org @al:x.org <a href="https://matrix.to/#/@al:x.org">al</a>';
    expect(argsOf(ok("!release #r:x.org @al:x.org al", { formattedBody }).args, "user", "user")).toEqual(["@al:x.org", "@al:x.org"]);
  });
});

describe("int arguments", () => {
  it.each([
    ["0", 0],
    ["42", 42],
    ["007", 7],
    [String(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER],
  ])("%s", (raw, value) => {
    expect(argOf(ok(`!token list ${raw}`).args, "limit", "int")).toBe(value);
  });
  it.each(["-1", "1.5", "1e3", "0x10", "ten", "٣", String(Number.MAX_SAFE_INTEGER + 2)])("rejects %s", (raw) => {
    expect(usageError(`!token list ${raw}`).message).toMatch(/^limit: '.*' is (not a whole number \(0 or more\)|too large)$/);
  });
});

describe("duration arguments", () => {
  it.each([
    ["7d", 7 * 86_400_000],
    ["12h", 12 * 3_600_000],
    ["30m", 30 * 60_000],
    ["90s", 90_000],
    ["2w", 14 * 86_400_000],
    ["1h30m", 90 * 60_000],
    ["1D", 86_400_000],
  ])("%s", (raw, ms) => {
    expect(decodeDuration(raw)).toEqual({ ok: true, value: { kind: "relative", ms } });
  });

  it("never and ISO dates", () => {
    expect(decodeDuration("never")).toEqual({ ok: true, value: { kind: "never" } });
    expect(decodeDuration("NEVER")).toEqual({ ok: true, value: { kind: "never" } });
    expect(decodeDuration("2025-12-31")).toEqual({ ok: true, value: { kind: "absolute", at: new Date("2025-12-31T00:00:00Z") } });
    expect(decodeDuration("2024-02-29T18:30")).toEqual({ ok: true, value: { kind: "absolute", at: new Date("2024-02-29T18:30:00Z") } });
    expect(decodeDuration("2025-06-01T08:00:00+02:00")).toEqual({ ok: true, value: { kind: "absolute", at: new Date("2025-06-01T06:00:00Z") } });
    expect(decodeDuration("2025-06-01T08:00:00.250Z")).toEqual({ ok: true, value: { kind: "absolute", at: new Date("2025-06-01T08:00:00.250Z") } });
    const parsed = ok("!token create 2025-06-01").args;
    expect(argOf(parsed, "expires", "duration")).toEqual({ kind: "absolute", at: new Date("2025-06-01T00:00:00Z") });
  });

  it.each([
    ["0d", /must be longer than zero/],
    ["0s0m", /must be longer than zero/],
    ["-1d", /must be longer than zero/],
    ["1.5h", /is not a duration/],
    ["7", /is not a duration/],
    ["7y", /is not a duration/],
    ["soon", /is not a duration/],
    ["2025-02-29", /is not a duration/],
    ["2025-13-01", /is not a duration/],
    ["2025-01-01T24:00", /is not a duration/],
    ["2025-1-1", /is not a duration/],
    ["999999999999w", /too long/],
  ])("rejects %s", (raw, message) => {
    const e = usageError(`!token create ${raw}`);
    expect(e.message).toMatch(/^expires: /);
    expect(e.message).toMatch(message);
  });
});

describe("the command table", () => {
  const cmd = (over: Partial<Spec>): Spec => ({ name: "x", summary: "x", params: [], permission: "operator", run, ...over });

  it("throws on programmer errors", () => {
    expect(() => new CommandTable([cmd({}), cmd({})])).toThrow(/duplicate command name 'x'/);
    expect(
      () =>
        new CommandTable([
          cmd({
            params: [
              { name: "a", kind: "user", description: "", variadic: true },
              { name: "b", kind: "room", description: "" },
            ],
          }),
        ]),
    ).toThrow(/variadic parameter 'a' must be the last one/);
    expect(
      () =>
        new CommandTable([
          cmd({
            params: [
              { name: "a", kind: "room", description: "", optional: true },
              { name: "b", kind: "room", description: "" },
            ],
          }),
        ]),
    ).toThrow(/required parameter 'b' follows an optional one/);
    expect(() => new CommandTable([cmd({ name: "Sync" })])).toThrow(/lowercase/);
    expect(() => new CommandTable([cmd({ name: "token  list" })])).toThrow(/single spaces/);
    expect(() => new CommandTable([cmd({ flags: [{ name: "d", description: "" }, { name: "d", description: "" }] })])).toThrow(/duplicate flag/);
    expect(() => new CommandTable([cmd({ summary: " " })])).toThrow(/empty summary/);
  });

  it("finds, matches and lists", () => {
    expect(TABLE.find(" Token   LIST ")?.name).toBe("token list");
    expect(TABLE.find("token lis")).toBeUndefined();
    expect(TABLE.match(["token", "list", "5"])?.wordCount).toBe(2);
    expect(TABLE.names()).toEqual([...TABLE.names()].sort());
    expect(TABLE.names()).toHaveLength(COMMANDS.length);
  });

  it("argOf refuses a kind the spec does not give", () => {
    const args = ok("!token list 5").args;
    expect(() => argOf(args, "limit", "string")).toThrow(TypeError);
    expect(argOf(args, "nothing", "int")).toBeUndefined();
  });
});

describe("help", () => {
  it("usage lines: prefix, name, flags, then parameters", () => {
    const byName = (n: string): Spec => TABLE.find(n)!;
    expect(usageLine(byName("sync"), "!")).toBe("!sync [--dry] [--verbose] [room]");
    expect(usageLine(byName("release"), "!")).toBe("!release <room> [user…]");
    expect(usageLine(byName("kick"), "!")).toBe("!kick <room> <user…>");
    expect(usageLine(byName("token create"), "!gs ")).toBe("!gs token create [--single-use] <expires> [note]");
    expect(usageLine(byName("status"))).toBe("!status");
  });

  it("every usage error carries its command's usage line", () => {
    for (const spec of COMMANDS) {
      const r = parse(`!${spec.name} --no-such-flag`);
      expect(r.kind).toBe("usage-error");
      if (r.kind === "usage-error") expect(r.usage).toBe(usageLine(spec, "!"));
    }
  });

  it("the overview lists every command with usage and summary, operators first, sorted", () => {
    const help = helpText(TABLE, "!");
    for (const spec of COMMANDS) {
      expect(help.text).toContain(`${usageLine(spec, "!")} — ${spec.summary}`);
      expect(help.html).toContain(`<code>${escapeHtml(usageLine(spec, "!"))}</code>`);
    }
    const order = COMMANDS.filter((c) => c.permission === "operator")
      .map((c) => c.name)
      .sort()
      .concat(
        COMMANDS.filter((c) => c.permission === "anyone-in-room")
          .map((c) => c.name)
          .sort(),
      );
    const positions = order.map((name) => help.text.indexOf(`!${name} `) >= 0 ? help.text.indexOf(`!${name} `) : help.text.indexOf(`!${name}\n`));
    expect(positions.every((p) => p >= 0)).toBe(true);
    expect([...positions].sort((a, b) => a - b)).toEqual(positions);
    expect(help.text).toContain("!help <command>");
    expect(help.html).toContain("&lt;command&gt;");
    expect(help.html).not.toMatch(/<(?!\/?(p|strong|ul|li|code)>)/);
  });

  it("describes every command: usage, description, parameters, flags, permission", () => {
    for (const spec of COMMANDS) {
      const help = helpFor(TABLE, spec.name, "!");
      expect(help.text).toContain(`Usage: ${usageLine(spec, "!")}`);
      expect(help.text).toContain(spec.description ?? spec.summary);
      for (const p of spec.params) expect(help.text).toContain(`${p.variadic === true ? `${p.name}…` : p.name} — ${p.description}`);
      for (const f of spec.flags ?? []) expect(help.text).toContain(`--${f.name} — ${f.description}`);
      expect(help.text).toMatch(spec.permission === "operator" ? /Only operators/ : /Anyone in the management room/);
      expect(help.html).toContain(`<code>${escapeHtml(usageLine(spec, "!"))}</code>`);
    }
    expect(helpFor(TABLE, "!token list", "!").text).toContain("Usage: !token list [limit]");
    expect(helpFor(TABLE, "snyc", "!").text).toBe('There is no command "snyc". Did you mean !sync?');
    expect(helpFor(TABLE, "<script>", "!").html).toBe("<p>There is no command &quot;&lt;script&gt;&quot;.</p>");
  });
});

describe("render", () => {
  it("escapes HTML", () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    expect(paragraph("a < b\nc").html).toBe("<p>a &lt; b<br>c</p>");
    expect(list(["<i>", "two"]).html).toBe("<ul><li>&lt;i&gt;</li><li>two</li></ul>");
    expect(list(["<i>", "two"]).text).toBe("• <i>\n• two");
  });

  it("builds aligned plain tables and HTML tables", () => {
    const t = table(["room", "members"], [["#eng:x.org", "12"], ["#ops", "3"], ["#ü<", ""]]);
    expect(t.text).toBe(["room       | members", "-----------+--------", "#eng:x.org | 12", "#ops       | 3", "#ü<"].join("\n"));
    expect(t.html).toBe(
      "<table><thead><tr><th>room</th><th>members</th></tr></thead><tbody>" +
        "<tr><td>#eng:x.org</td><td>12</td></tr><tr><td>#ops</td><td>3</td></tr><tr><td>#ü&lt;</td><td></td></tr></tbody></table>",
    );
  });
});

describe("splitMessage", () => {
  const size = (m: MessageContent): number => Buffer.byteLength(JSON.stringify(m));
  const allText = (messages: MessageContent[]): string => messages.map((m) => m.body).join("\n").split(`${CUT_MARKER}\n`).join("");

  it("keeps a small reply in one message", () => {
    const parts = [paragraph("hello"), list(["a", "b"])];
    expect(splitMessage(parts)).toEqual([
      { msgtype: "m.notice", body: "hello\n• a\n• b", format: "org.matrix.custom.html", formatted_body: "<p>hello</p>\n<ul><li>a</li><li>b</li></ul>" },
    ]);
    expect(splitMessage([])).toEqual([]);
    expect(splitMessage([paragraph("x")], 1000, { msgtype: "m.text" })[0]?.msgtype).toBe("m.text");
  });

  it("splits at part boundaries and keeps every part under the limit", () => {
    const parts = Array.from({ length: 200 }, (_, i) => paragraph(`part ${i}: ${"é😀ש".repeat(i % 17)} "quoted" <b> & \\`));
    const messages = splitMessage(parts, 2000);
    expect(messages.length).toBeGreaterThan(1);
    for (const m of messages) expect(size(m)).toBeLessThanOrEqual(2000);
    expect(messages.map((m) => m.body).join("\n")).toBe(parts.map((p) => p.text).join("\n"));
    expect(messages.map((m) => m.formatted_body).join("\n")).toBe(parts.map((p) => p.html).join("\n"));
  });

  it("splits a huge table at rows, repeating the header", () => {
    const rows = Array.from({ length: 3000 }, (_, i) => [`@user${i}:example.org`, "😀".repeat(i % 5), `<${i}>`]);
    const messages = splitMessage([paragraph("Members:"), table(["user", "mood", "n"], rows)]);
    expect(messages.length).toBeGreaterThan(1);
    for (const m of messages) {
      expect(size(m)).toBeLessThanOrEqual(60_000);
      expect(m.formatted_body).toMatch(/<table><thead><tr><th>user<\/th>/);
      expect(m.formatted_body).toMatch(/<\/tbody><\/table>$/);
      expect(m.body).toMatch(/^(Members:\n)?user +\| mood \| n\n/);
    }
    const body = messages.map((m) => m.body).join("\n");
    for (let i = 0; i < rows.length; i += 1) expect(body).toContain(`@user${i}:example.org `);
  });

  it("splits a huge plain part at lines, and marks a cut line", () => {
    const lines = Array.from({ length: 400 }, (_, i) => `line ${i} ${"ש😀€a\"<".repeat(i % 40)}`);
    const huge = "x😀".repeat(5000);
    const part: Part = { text: [...lines, huge, "after"].join("\n"), html: "<p>ignored when split</p>" };
    const messages = splitMessage([part], 3000);
    for (const m of messages) {
      expect(size(m)).toBeLessThanOrEqual(3000);
      expect(m.formatted_body).toMatch(/^<pre>[^]*<\/pre>$/);
    }
    const text = allText(messages);
    for (const line of lines) expect(text).toContain(line);
    expect(text).toContain(huge);
    expect(text).toContain("after");
    expect(messages.filter((m) => m.body.includes(CUT_MARKER)).length).toBeGreaterThan(1);
  });

  it("never splits a surrogate pair and refuses a budget too small to work with", () => {
    const messages = splitMessage([{ text: "😀".repeat(1000), html: "" }], 300);
    for (const m of messages) {
      expect(size(m)).toBeLessThanOrEqual(300);
      expect(m.body).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/);
    }
    expect(() => splitMessage([paragraph("x")], 100)).toThrow(RangeError);
  });
});
