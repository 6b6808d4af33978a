/**
 * The management room's router, pure: which sync events are commands (`hear`), and what is
 * done with a heard command given whether its sender passes the allow list (`decide`). Run
 * against the real command table; the answers are read as the plain text a person would see.
 */
import { describe, expect, it } from "vitest";
import { blocks } from "../../src/commands/render.ts";
import { commandTable } from "../../src/commands/table.ts";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import { decide, hear, needsAllowList, type Decision, type Heard, type Place } from "../../src/commands/router.ts";

const BOT = "@mgs-bot:example.org" as UserId;
const OP = "@op:example.org";
const MGMT = "!mgmt:example.org" as RoomId;
const TOKEN_ROOM = "!desk:example.org";

const place = (over: Partial<Place> = {}): Place => ({
  roomId: MGMT,
  managementRoomId: MGMT,
  listening: true,
  bot: BOT,
  prefix: "!",
  table: commandTable(),
  tokenWord: "token",
  ...over,
});

let seq = 0;
/** A sync timeline event as the homeserver serves it. */
function event(body: string, opts: { sender?: string; msgtype?: string; content?: Record<string, unknown> } = {}): Record<string, unknown> {
  seq += 1;
  return {
    event_id: `$ev${seq}`,
    sender: opts.sender ?? OP,
    origin_server_ts: 1_700_000_000_000 + seq,
    type: "m.room.message",
    content: { msgtype: opts.msgtype ?? "m.text", body, ...opts.content },
  };
}

function heardCommand(h: Heard): Extract<Heard, { kind: "command" }> {
  if (h.kind !== "command") throw new Error(`expected a command, got ${h.kind}`);
  return h;
}

const text = (d: Decision): string => (d.kind === "answer" ? blocks([...d.parts]).text : `run ${d.command.name}`);

describe("hear: what is a command", () => {
  it("ignores everything in a room it does not listen to, even a good command from an operator", () => {
    expect(hear(place({ roomId: "!elsewhere:example.org", listening: false }), event("!sync"))).toEqual({ kind: "ignore" });
    expect(hear(place({ listening: false }), event("!help"))).toEqual({ kind: "ignore" });
  });

  it("ignores the bot's own messages, notices, edits and text that is not a command", () => {
    expect(hear(place(), event("!sync", { sender: BOT }))).toEqual({ kind: "ignore" });
    expect(hear(place(), event("!sync", { msgtype: "m.notice" }))).toEqual({ kind: "ignore" });
    const edit = event("* !sync", { content: { "m.new_content": { msgtype: "m.text", body: "!sync" }, "m.relates_to": { rel_type: "m.replace", event_id: "$old" } } });
    expect(hear(place(), edit)).toEqual({ kind: "ignore" });
    // The edit's body without the "* " is still an edit.
    const bareEdit = event("!sync", { content: { "m.relates_to": { rel_type: "m.replace", event_id: "$old" } } });
    expect(hear(place(), bareEdit)).toEqual({ kind: "ignore" });
    for (const body of ["hello", "sync please", "", "!", "! sync", "!!", "!123"]) expect(hear(place(), event(body)), body).toEqual({ kind: "ignore" });
  });

  it("ignores malformed events: no sender, no body, a sender that is not a user id", () => {
    expect(hear(place(), null)).toEqual({ kind: "ignore" });
    expect(hear(place(), "!sync")).toEqual({ kind: "ignore" });
    expect(hear(place(), { event_id: "$x", origin_server_ts: 1, content: { msgtype: "m.text", body: "!sync" } })).toEqual({ kind: "ignore" });
    expect(hear(place(), { event_id: "$x", sender: OP, origin_server_ts: 1, content: { msgtype: "m.text" } })).toEqual({ kind: "ignore" });
    expect(hear(place(), event("!sync", { sender: "op" }))).toEqual({ kind: "ignore" });
  });

  it("a reply that quotes a command is heard by its own text, not the quoted one", () => {
    const reply = event("> <@op:example.org> !sync\n\nthanks", { content: { "m.relates_to": { "m.in_reply_to": { event_id: "$cmd" } } } });
    expect(hear(place(), reply)).toEqual({ kind: "ignore" });
  });

  it("outside the management room only token commands are heard; anything else, unknown ones too, is ignored", () => {
    const desk = place({ roomId: TOKEN_ROOM });
    for (const body of ["!sync", "!help", "!status", "!unmanage #eng:example.org", "!snyc", "!frobnicate", "!serve"]) {
      expect(hear(desk, event(body, { sender: "@helpdesk:example.org" })), body).toEqual({ kind: "ignore" });
    }
    const token = heardCommand(hear(desk, event("!token list", { sender: "@helpdesk:example.org" })));
    expect(token.parsed.kind === "ok" && token.parsed.command.name).toBe("token list");
    const bare = heardCommand(hear(desk, event("!token", { sender: "@helpdesk:example.org" })));
    expect(bare.parsed.kind === "ok" && bare.parsed.command.name).toBe("token");
    // A token command with bad arguments is still heard there (and answered with its usage).
    expect(heardCommand(hear(desk, event("!token show", { sender: "@helpdesk:example.org" }))).parsed.kind).toBe("usage-error");
  });

  it("hears the message's sender and event id, and keeps an HTML body for pills", () => {
    const ev = event("!history Alice", {
      content: { format: "org.matrix.custom.html", formatted_body: '!history <a href="https://matrix.to/#/@alice:example.org">Alice</a>' },
    });
    const h = heardCommand(hear(place(), ev));
    expect(h.message).toMatchObject({ eventId: ev["event_id"], sender: OP, body: "!history Alice" });
    expect(h.parsed.kind === "ok" && h.parsed.args.values["run-or-user"]).toBe("@alice:example.org");
  });

  it("a configured word prefix: `!gs sync` is a command, `!sync` is not", () => {
    const p = place({ prefix: "!gs" });
    expect(heardCommand(hear(p, event("!gs sync"))).parsed.kind).toBe("ok");
    expect(hear(p, event("!sync"))).toEqual({ kind: "ignore" });
    expect(hear(p, event("!gssync"))).toEqual({ kind: "ignore" });
  });
});

describe("decide: refuse, answer or run", () => {
  const heardHere = (body: string, sender = OP): Extract<Heard, { kind: "command" }> => heardCommand(hear(place(), event(body, { sender })));

  it("refuses an operator command from someone not on the allow list, naming them, and runs it for an operator", () => {
    const h = heardHere("!sync", "@intruder:example.org");
    expect(needsAllowList(h)).toBe(true);
    const d = decide(h, false, "!");
    expect(d).toMatchObject({ kind: "answer", why: "refused" });
    expect(text(d)).toBe("Sorry @intruder:example.org, you are not on the allow list for commands here.");
    const ok = decide(heardHere("!sync"), true, "!");
    expect(ok.kind === "run" && ok.command.name).toBe("sync");
  });

  it("an unknown command from a stranger is refused like any operator command: it does not tell them what exists", () => {
    const h = heardHere("!snyc", "@intruder:example.org");
    expect(needsAllowList(h)).toBe(true);
    const d = decide(h, false, "!");
    expect(d).toMatchObject({ kind: "answer", why: "refused" });
    expect(text(d)).not.toContain("!sync");
  });

  it("an unknown command from an operator is answered with the nearest one, or pointed at help", () => {
    const typo = decide(heardHere("!snyc"), true, "!");
    expect(typo).toMatchObject({ kind: "answer", why: "unknown" });
    expect(text(typo)).toBe("Unknown command !snyc. Did you mean !sync? Send !help for the list.");
    const nothing = decide(heardHere("!frobnicate"), true, "!");
    expect(nothing).toMatchObject({ kind: "answer", why: "unknown" });
    expect(text(nothing)).toBe("Unknown command !frobnicate. Send !help for the list.");
  });

  it("help (anyone-in-room) and token commands (token-users) pass without the allow list; the command sees the decoded args", () => {
    const help = heardHere("!help sync", "@intruder:example.org");
    expect(needsAllowList(help)).toBe(false);
    const d = decide(help, false, "!");
    expect(d.kind).toBe("run");
    if (d.kind === "run") {
      expect(d.command.name).toBe("help");
      expect(d.args.values["command"]).toEqual(["sync"]);
    }
    for (const body of ["!token list", "!token create 2 3d", "!token", "!inviter"]) {
      const h = heardHere(body, "@intruder:example.org");
      expect(needsAllowList(h), body).toBe(false);
      expect(decide(h, false, "!").kind, body).toBe("run");
    }
    // Operator-only token commands still need the list.
    for (const body of ["!token audit", "!token allow @x:example.org", "!token delete-all --yes"]) {
      const h = heardHere(body, "@intruder:example.org");
      expect(needsAllowList(h), body).toBe(true);
      expect(decide(h, false, "!")).toMatchObject({ kind: "answer", why: "refused" });
    }
  });

  it("a usage error gives the message and the usage line; a stranger is refused before the usage is shown", () => {
    const d = decide(heardHere("!release"), true, "!");
    expect(d).toMatchObject({ kind: "answer", why: "usage" });
    expect(text(d)).toMatch(/Usage: !release <room> \[user…\]$/);
    const bad = decide(heardHere("!release not-a-room"), true, "!");
    expect(text(bad)).toMatch(/not-a-room/);
    expect(text(bad)).toContain("Usage: !release <room> [user…]");
    expect(decide(heardHere("!release", "@intruder:example.org"), false, "!")).toMatchObject({ kind: "answer", why: "refused" });
    // A prefix ending in a space (`!gs `) is written as it is typed.
    const spaced = heardCommand(hear(place({ prefix: "!gs " }), event("!gs release")));
    expect(text(decide(spaced, true, "!gs "))).toContain("Usage: !gs release <room> [user…]");
  });

  // Found by this test (fixed): with a word prefix (`commandPrefix: "!gs"`, which the parser
  // supports: `!gs sync` is heard, `!gssync` is not), the answers glued the prefix to the name —
  // "Usage: !gsrelease …", "Did you mean !gssync?" — commands the router then ignored.
  it("with a word prefix, every command an answer tells the person to send is one the router hears", () => {
    const p = place({ prefix: "!gs" });
    const answers = [decide(heardCommand(hear(p, event("!gs release"))), true, "!gs"), decide(heardCommand(hear(p, event("!gs snyc"))), true, "!gs")];
    const suggested = answers.flatMap((d) => [...text(d).matchAll(/(?:Usage: |Did you mean |Send )(!gs ?[a-z-]+)/g)].map((m) => m[1]!));
    expect(suggested.length).toBeGreaterThanOrEqual(3);
    for (const cmd of suggested) expect(hear(p, event(cmd)).kind, cmd).toBe("command");
  });

  it("a command-line command is answered as one, whatever its arguments, and never run", () => {
    for (const name of ["serve", "check-config", "migrate", "import"]) {
      const d = decide(heardHere(`!${name}`), true, "!");
      expect(d, name).toMatchObject({ kind: "answer", why: "usage" });
      expect(text(d)).toBe(`${name} is a command-line command: matrix-group-sync ${name}. Send !help for the commands here.`);
    }
    // With (wrong) arguments too: the surface is judged before the arguments.
    expect(text(decide(heardHere("!import inviterbot"), true, "!"))).toMatch(/^import is a command-line command/);
    // And a stranger still gets only the refusal.
    expect(decide(heardHere("!serve", "@intruder:example.org"), false, "!")).toMatchObject({ kind: "answer", why: "refused" });
  });

  it("a good command runs with its arguments decoded: rooms as refs, users as ids, flags as booleans", () => {
    const sync = decide(heardHere("!sync --dry #eng:example.org https://matrix.to/#/!abc:example.org?via=example.org"), true, "!");
    expect(sync.kind).toBe("run");
    if (sync.kind === "run") {
      expect(sync.command.name).toBe("sync");
      expect(sync.args.flags["dry"]).toBe(true);
      expect(sync.args.values["room"]).toEqual([
        { kind: "alias", alias: "#eng:example.org", via: [] },
        { kind: "id", roomId: "!abc:example.org", via: ["example.org"] },
      ]);
    }
    const dryWord = decide(heardHere("!sync dry"), true, "!");
    expect(dryWord.kind === "run" && dryWord.args.flags["dry"]).toBe(true);
    const unmanage = decide(heardHere("!unmanage #eng:example.org @dave:example.org"), true, "!");
    expect(unmanage.kind === "run" && unmanage.args.values).toEqual({ room: { kind: "alias", alias: "#eng:example.org", via: [] }, admin: "@dave:example.org" });
    const alone = decide(heardHere("!unmanage #eng:example.org"), true, "!");
    expect(alone.kind === "run" && alone.args.values).toEqual({ room: { kind: "alias", alias: "#eng:example.org", via: [] }, admin: undefined });
  });
});
