/**
 * The management room as a surface, end to end: the real service (`startServe`, a real store)
 * against the test homeserver. What is checked is what the homeserver holds afterwards — the
 * bot's replies, its reactions and their redactions, progress messages and their edits, rooms'
 * memberships and power levels — and what the store says (managed rooms, runs after pruning).
 * Nothing of ours is mocked; the progress message is driven through the real gateway with a
 * clock the test moves.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Clock } from "../../src/clock.ts";
import { paragraph } from "../../src/commands/render.ts";
import { loadConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { silentLogger } from "../../src/log.ts";
import { createBotSdkGateway } from "../../src/matrix/bot-sdk-gateway.ts";
import type { RoomId } from "../../src/matrix/ids.ts";
import { startServe, type ServeHandle } from "../../src/service/serve.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import { ManagementRoomPort } from "../../src/commands/room-surface.ts";
import { FakeHomeserver, presetPowerLevels, type FakeMessage } from "../fakes/homeserver.ts";

const BOT = "@mgs-bot:example.org";
const OP = "@op:example.org";
const HELPDESK = "@helpdesk:example.org";
const u = (n: string): string => `@${n}:example.org`;
const DAY_MS = 86_400_000;

/** A hang guard for one awaited event, not how long it takes. */
const WAIT_MS = 60_000;

let dir: string;
let hs: FakeHomeserver;
let token: string;
let mgmt: string;
let tokenRoom: string;
const rooms: Record<string, string> = {};

const MAPPED = ["#eng", "#deg", "#locked", "#solo", "#pending", "#shared", "#founded"] as const;

function configText(dataDir = "./data"): string {
  return `homeserver: { url: ${hs.url}, accessToken: ${token}, maxRetries: 10 }
dataDir: ${dataDir}
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
${MAPPED.map((r) => `    - { room: "${r}:example.org", groups: [ { group: ${r === "#deg" ? "partial" : "engineers"} } ] }`).join("\n")}
sync: { maxRemovals: { count: 10 } }
retention: { runs: 90d, tokenAudit: 365d }
tokens: { backend: synapse, defaults: { uses: 2, expiry: 3d }, allow: ["${tokenRoom}"] }
serve:
  managementRoom: "#mgmt:example.org"
  schedule: "0 0 1 1 *"
  allow: ["${OP}"]
  runAtStart: false
  shutdownTimeoutMs: 10000
  http: { port: 0 }
log: { level: error }
`;
}

async function config(dataDir?: string): Promise<Config> {
  const path = join(dir, "config.yaml");
  await writeFile(path, configText(dataDir));
  const r = loadConfig({ path, env: {}, cwd: dir });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

const relation = (m: FakeMessage): { rel_type?: string; event_id?: string; key?: string; "m.in_reply_to"?: { event_id?: string } } | undefined =>
  m.content["m.relates_to"] as { rel_type?: string; event_id?: string; key?: string; "m.in_reply_to"?: { event_id?: string } } | undefined;
const inReplyTo = (m: FakeMessage): string | undefined => relation(m)?.["m.in_reply_to"]?.event_id;
const isReaction = (m: FakeMessage, target: string, key?: string): boolean =>
  m.sender === BOT && m.type === "m.reaction" && relation(m)?.event_id === target && (key === undefined || relation(m)?.key === key);

/** The bot's first reply to `eventId` that is not a "queued" notice. */
async function replyTo(room: string, eventId: string): Promise<FakeMessage> {
  return hs.waitForMessage(
    room,
    (m) => m.sender === BOT && m.type === "m.room.message" && inReplyTo(m) === eventId && !String(m.content["body"]).startsWith("A run is in progress; this one is queued"),
    WAIT_MS,
    { since: eventId },
  );
}

/** Sends a command and returns the bot's reply (plain body). */
async function command(body: string, sender = OP, room = mgmt): Promise<string> {
  const eventId = hs.sendMessage(room, sender, body);
  return String((await replyTo(room, eventId)).content["body"]);
}

function levels(room: string): Record<string, number> {
  return (hs.powerLevels(room)?.["users"] ?? {}) as Record<string, number>;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-surface-"));
  await writeFile(
    join(dir, "directory.yaml"),
    `users: [alice, bob, carol]
groups:
  - { id: engineers, members: [alice, bob] }
  - { id: partial, members: [carol], incomplete: "simulated page limit" }
`,
  );
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  token = hs.registerUser(BOT, undefined, { admin: true });
  hs.registerUser(OP);
  mgmt = hs.createRoom({ creator: OP, alias: "#mgmt:example.org", members: { [BOT]: "invite", "@intruder:example.org": "join" } });
  tokenRoom = hs.createRoom({ creator: HELPDESK, members: { [BOT]: "invite", [OP]: "join" } });
  rooms["#eng"] = hs.createRoom({ creator: BOT, alias: "#eng:example.org", members: { [u("alice")]: "join", [u("mallory")]: "join" } });
  rooms["#deg"] = hs.createRoom({ creator: BOT, alias: "#deg:example.org", members: { [u("carol")]: "join", [u("zed")]: "join" } });
  // The bot is not in this room: its state cannot be read.
  rooms["#locked"] = hs.createRoom({ creator: u("owner"), alias: "#locked:example.org", members: { [u("alice")]: "join" } });
  rooms["#solo"] = hs.createRoom({ creator: BOT, alias: "#solo:example.org", members: { [u("alice")]: "join" } });
  // Someone at our level, but only invited.
  rooms["#pending"] = hs.createRoom({
    creator: BOT,
    alias: "#pending:example.org",
    members: { [u("alice")]: "join", "@dana:partner.example": "invite" },
    powerLevels: presetPowerLevels({ [BOT]: 100, "@dana:partner.example": 100, [u("alice")]: 50 }),
  });
  rooms["#shared"] = hs.createRoom({
    creator: BOT,
    alias: "#shared:example.org",
    members: { [u("alice")]: "join", "@dana:partner.example": "join" },
    powerLevels: presetPowerLevels({ [BOT]: 100, "@dana:partner.example": 100 }),
  });
  rooms["#founded"] = hs.createRoom({
    creator: u("founder"),
    version: "12",
    alias: "#founded:example.org",
    members: { [BOT]: "join", [u("alice")]: "join" },
    powerLevels: presetPowerLevels({ [BOT]: 100 }),
  });
});

afterAll(async () => {
  await hs?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("serve: the management room surface", () => {
  let handle: ServeHandle | undefined;

  beforeAll(async () => {
    handle = await startServe(await config());
  });

  afterAll(async () => {
    await handle?.stop();
  });

  describe("reactions on a long command", () => {
    /**
     * Sends `body`, and resolves with the command's id, the ⏳ the bot put on it (seen as it
     * was sent: a waiter set before the command) and the reaction that replaced it.
     */
    async function runWithReaction(body: string, final: "✅" | "❌"): Promise<{ cmd: string; hourglass: FakeMessage; done: FakeMessage; reply: string }> {
      const hourglass = hs.waitForMessage(mgmt, (m) => m.sender === BOT && m.type === "m.reaction" && relation(m)?.key === "⏳", WAIT_MS);
      const cmd = hs.sendMessage(mgmt, OP, body);
      const seen = await hourglass;
      expect(relation(seen)?.event_id).toBe(cmd);
      const done = await hs.waitForMessage(mgmt, (m) => isReaction(m, cmd) && relation(m)?.key !== "⏳", WAIT_MS, { since: cmd });
      expect(relation(done)?.key, `the command ended with ${String(relation(done)?.key)}`).toBe(final);
      const reply = String((await replyTo(mgmt, cmd)).content["body"]);
      return { cmd, hourglass: seen, done, reply };
    }

    /** What the homeserver holds about the bot's reactions on `cmd`: live ones by key, and what it redacted. */
    function reactionsOn(cmd: string, hourglassId: string): { live: string[]; hourglassContent: Record<string, unknown> | undefined; redactions: string[] } {
      const since = hs.messages(mgmt, { since: cmd });
      return {
        live: since.filter((m) => isReaction(m, cmd)).map((m) => String(relation(m)?.key)),
        hourglassContent: since.find((m) => m.eventId === hourglassId)?.content,
        redactions: since.filter((m) => m.sender === BOT && m.type === "m.room.redaction").map((m) => String(m.content["redacts"])),
      };
    }

    it("an ok !sync ends with its ⏳ redacted and a ✅ on the command, after the reply", async () => {
      const { cmd, hourglass, done, reply } = await runWithReaction("!sync #eng:example.org", "✅");
      expect(reply).toMatch(/^Sync done: 1 room\(s\), 1 invite\(s\), 1 kick\(s\)/);
      const state = reactionsOn(cmd, hourglass.eventId);
      expect(state.live).toEqual(["✅"]);
      expect(state.hourglassContent).toEqual({}); // redacted: Synapse strips the content
      expect(state.redactions).toEqual([hourglass.eventId]);
      // The ✅ comes last: after the reply and the redaction.
      const order = hs.messages(mgmt, { since: cmd }).filter((m) => m.sender === BOT).map((m) => m.eventId);
      expect(order.at(-1)).toBe(done.eventId);
      expect(order.indexOf(hourglass.eventId)).toBe(0);
      expect((await handle!.service.app.store.listRuns(1))[0]?.outcome).toBe("ok");
    });

    it("a degraded !sync (an incomplete directory group) ends with ❌ in place of the ⏳", async () => {
      const { cmd, hourglass, reply } = await runWithReaction("!sync #deg:example.org", "❌");
      expect(reply).toMatch(/^Sync done, degraded:/);
      expect(reply).toContain("partial: simulated page limit");
      const state = reactionsOn(cmd, hourglass.eventId);
      expect(state.live).toEqual(["❌"]);
      expect(state.hourglassContent).toEqual({});
      expect(state.redactions).toEqual([hourglass.eventId]);
      expect((await handle!.service.app.store.listRuns(1))[0]?.outcome).toBe("degraded");
      // Degraded: nobody was removed from the room depending on that group.
      expect(hs.members(rooms["#deg"]!)[u("zed")]).toBe("join");
    });

    it("a failed !sync (a room whose state cannot be read) ends with ❌ in place of the ⏳", async () => {
      const { cmd, hourglass, reply } = await runWithReaction("!sync #locked:example.org", "❌");
      expect(reply).toMatch(/1 room error\(s\)/);
      expect(reply).toMatch(/#locked:example.org .*\n.*error: reading the state of .*403 M_FORBIDDEN/);
      const state = reactionsOn(cmd, hourglass.eventId);
      expect(state.live).toEqual(["❌"]);
      expect(state.redactions).toEqual([hourglass.eventId]);
      expect((await handle!.service.app.store.listRuns(1))[0]?.outcome).toBe("failed");
    });

    it("a refused !sync (a room we do not manage) gets its reply and no reaction at all", async () => {
      const cmd = hs.sendMessage(mgmt, OP, "!sync #not-managed:example.org");
      const reply = String((await replyTo(mgmt, cmd)).content["body"]);
      expect(reply).toMatch(/#not-managed:example.org/);
      // The reply is the last thing a refused command sends: nothing can follow it.
      const after = hs.messages(mgmt, { since: cmd }).filter((m) => m.sender === BOT);
      expect(after.filter((m) => m.type === "m.reaction" || m.type === "m.room.redaction")).toEqual([]);
      expect(after.map((m) => inReplyTo(m))).toEqual([cmd]);
    });

    it("a command refused by the allow list gets only the refusal, no ⏳", async () => {
      const cmd = hs.sendMessage(mgmt, "@intruder:example.org", "!sync");
      expect(String((await replyTo(mgmt, cmd)).content["body"])).toBe("Sorry @intruder:example.org, you are not on the allow list for commands here.");
      expect(hs.messages(mgmt, { since: cmd }).filter((m) => m.sender === BOT && m.type !== "m.room.message")).toEqual([]);
    });
  });

  describe("!managed", () => {
    it("shows a room the bot is not in, and one where its level is too low, as errors", async () => {
      const before = hs.powerLevels(rooms["#eng"]!) ?? {};
      // Someone above the bot takes its power away in #eng.
      hs.putLegacyState(rooms["#eng"]!, "m.room.power_levels", "", { ...before, users: { ...((before["users"] ?? {}) as Record<string, number>), [BOT]: 0 } }, BOT);
      try {
        const managed = String((await replyTo(mgmt, hs.sendMessage(mgmt, OP, "!managed"))).content["body"]);
        expect(managed).toMatch(/#eng:example\.org\s+\|\s+!\S+\s+\|\s+error: the bot's level 0 is below what kick, power levels need \(50\): raise the bot to 50/);
        expect(managed).toMatch(/#locked:example\.org\s+\|\s+!\S+\s+\|\s+error: the bot is not in this room/);
        expect(managed).toMatch(/#deg:example\.org\s+\|\s+!\S+\s+\|\s+managed/);
        expect(managed).toMatch(/\n2 room\(s\) cannot be synced as they are: see the errors above\.$/);
      } finally {
        hs.putLegacyState(rooms["#eng"]!, "m.room.power_levels", "", before, BOT);
      }
    });
  });

  describe("!history @user and !token audit", () => {
    it("!history @user lists what the last run did to that user: the kick and the invite", async () => {
      // The first sync of #eng (here, or in the reaction tests above) kicked mallory, who is not
      // in the directory, and invited bob; a second one finds the room in step and does nothing.
      expect(await command("!sync #eng:example.org")).toMatch(/^Sync done: 1 room\(s\)/);
      expect(hs.members(rooms["#eng"]!)[u("mallory")]).toBe("leave");
      const kicked = await command("!history @mallory:example.org");
      expect(kicked).toMatch(/^1 action\(s\) on @mallory:example.org, newest first:/);
      expect(kicked).toMatch(/#eng:example.org\s+\|\s+kick\s+\|.*\|\s+applied/);
      const invited = await command("!history @bob:example.org");
      expect(invited).toMatch(/#eng:example.org\s+\|\s+invite\s+\|.*applied/);
      expect(await command("!history @nobody:example.org")).toBe("No run has done anything to @nobody:example.org (in the history kept).");
    });

    it("!token audit: an operator in the management room sees token commands with masked tokens; others are refused", async () => {
      const created = await command("!token create 1 1d");
      const value = /New registration token: (\S+) —/.exec(created)?.[1];
      expect(value, created).toBeDefined();
      const masked = `${value!.slice(0, 3)}…(${value!.length})`;

      // Not an operator, in a token room: refused by the allow list, nothing shown.
      const stranger = await command("!token audit", HELPDESK, tokenRoom);
      expect(stranger).toBe(`Sorry ${HELPDESK}, you are not on the allow list for commands here.`);
      expect(stranger).not.toContain(masked);
      // An operator, but in the token room: the audit is for the management room only.
      const elsewhere = await command("!token audit", OP, tokenRoom);
      expect(elsewhere).toBe(`Sorry ${OP}, only operators in the management room may read the token audit.`);

      const audit = await command("!token audit");
      expect(audit).toMatch(/token action\(s\), newest first:/);
      expect(audit).toMatch(new RegExp(`${OP}\\s+\\|\\s+${mgmt.replace(/[.$]/g, "\\$&")}\\s+\\|\\s+create\\s+\\|\\s+${masked.replace(/[()]/g, "\\$&")} #[0-9a-f]{6}\\s+\\|\\s+ok`));
      expect(audit).toMatch(new RegExp(`${OP}\\s+\\|\\s+${tokenRoom.replace(/[.$]/g, "\\$&")}\\s+\\|\\s+audit\\s+\\|.*refused: not an operator in the management room`));
      expect(audit).not.toContain(value);
      // One token: the rows about it only.
      const one = await command(`!token audit ${value!}`);
      expect(one).toMatch(/^1 token action\(s\)/);
      expect(one).not.toContain(value);
    });
  });

  describe("!unmanage ROOM without an admin", () => {
    it("is refused, saying why, when nobody else who has joined has our level; the room stays managed and the bot stays", async () => {
      const reply = await command("!unmanage #solo:example.org");
      expect(reply).toMatch(/^Cannot hand #solo:example.org over: no other member who has joined has our level \(100\) and may change power levels \(50\)/);
      expect(reply).toMatch(/unmanage ROOM @user:server/);
      const room = rooms["#solo"]!;
      expect(hs.members(room)[BOT]).toBe("join");
      expect(levels(room)[BOT]).toBe(100);
      const managed = (await handle!.service.app.store.listManagedRooms()).find((r) => r.room === "#solo:example.org");
      expect(managed?.managed ?? true).toBe(true);
    });

    it("is refused when the one at our level has only been invited", async () => {
      const reply = await command("!unmanage #pending:example.org");
      expect(reply).toMatch(/^Cannot hand #pending:example.org over: no other member who has joined has our level/);
      const room = rooms["#pending"]!;
      expect(hs.members(room)[BOT]).toBe("join");
      expect(levels(room)).toMatchObject({ [BOT]: 100, "@dana:partner.example": 100 });
      expect((await handle!.service.app.store.listManagedRooms()).find((r) => r.room === "#pending:example.org")?.managed ?? true).toBe(true);
    });

    it("hands the room back when another joined member has our level: unmanaged in the store, the bot lowered and gone", async () => {
      const reply = await command("!unmanage #shared:example.org");
      expect(reply).toMatch(/^#shared:example.org handed over:/);
      expect(reply).toMatch(/@dana:partner.example already has our level \(100\) or more; no level change needed/);
      const room = rooms["#shared"]!;
      expect(levels(room)["@dana:partner.example"]).toBe(100);
      expect(levels(room)[BOT]).toBeUndefined();
      expect(hs.members(room)[BOT]).toBe("leave");
      const managed = (await handle!.service.app.store.listManagedRooms()).find((r) => r.room === "#shared:example.org");
      expect(managed?.managed).toBe(false);
      // And a sync leaves it alone from now on.
      expect(await command("!sync --dry #shared:example.org")).toMatch(/unmanaged: handed back by an operator; not synced/);
    });

    it("hands a room version 12 room back to its creator, who has unlimited power", async () => {
      const reply = await command("!unmanage #founded:example.org");
      expect(reply).toMatch(/^#founded:example.org handed over:/);
      expect(reply).toMatch(/@founder:example.org already has our level/);
      const room = rooms["#founded"]!;
      expect(hs.members(room)[BOT]).toBe("leave");
      expect(levels(room)[BOT]).toBeUndefined();
      expect((await handle!.service.app.store.listManagedRooms()).find((r) => r.room === "#founded:example.org")?.managed).toBe(false);
    });
  });

  describe("!help", () => {
    it("lists only the commands offered in the room, with the token commands under who may run them", async () => {
      const help = await command("!help");
      for (const cli of ["!check-config", "!migrate", "!serve", "!import"]) expect(help).not.toContain(cli);
      for (const name of ["!sync", "!status", "!history", "!unmanage", "!manage", "!token create", "!token audit", "!help"]) expect(help).toContain(name);
      const sections = help.split("\n").reduce<Record<string, string[]>>((acc, line) => {
        if (/:$/.test(line) && !line.startsWith("•")) acc[line] = [];
        else if (line.startsWith("• ")) Object.values(acc).at(-1)?.push(line.slice(2).split(" — ")[0]!);
        return acc;
      }, {});
      const tokenHeading = "Token commands (operators, and whom the token allow list admits):";
      expect(Object.keys(sections)).toEqual(["Operator commands:", tokenHeading, "Commands anyone in the management room may use:"]);
      const tokenUsers = sections[tokenHeading]!.map((l) => l.split(" ").slice(0, 2).join(" "));
      expect(tokenUsers.sort()).toEqual(["!token allowed", "!token create", "!token delete", "!token list", "!token show", "!token unrevoke", "!token update"]);
      // Token commands that change who may use them, delete every token or read the audit are operators'.
      for (const op of ["!token allow <entry>", "!token audit [token]", "!token delete-all [--yes]", "!token disallow <entry>"]) expect(sections["Operator commands:"]).toContain(op);
      expect(sections["Commands anyone in the management room may use:"]).toEqual(["!help [command…]", "!token"]);
      // Someone not on the allow list sees the same list.
      expect(await command("!help", "@intruder:example.org")).toBe(help);
    });

    it("says who may run one command, and calls a command-line command one", async () => {
      expect(await command("!help token create")).toContain("Operators may run this command, and the users and rooms on the token allow list (see token allowed).");
      expect(await command("!help token audit")).toContain("Only operators may run this command.");
      expect(await command("!help help")).toContain("Anyone in the management room may run this command.");
      expect(await command("!help check-config")).toBe("check-config is not offered in the room; it is a command-line command.");
      expect(await command("!migrate")).toBe("migrate is a command-line command: matrix-group-sync migrate. Send !help for the commands here.");
    });
  });
});

describe("the progress message, through the real gateway", () => {
  let room: RoomId;
  let port: ManagementRoomPort;
  let now = 0;
  const clock: Clock = { now: () => new Date(now) };

  beforeAll(() => {
    const gateway = createBotSdkGateway({ homeserverUrl: hs.url, accessToken: token, requestTimeoutMs: 10_000, maxRetries: 3, log: silentLogger });
    port = new ManagementRoomPort(gateway, silentLogger, clock);
    room = hs.createRoom({ creator: BOT, members: { [OP]: "join" } }) as RoomId;
  });

  /** The bot's progress messages after `cmd`: the first (a reply to it), then the edits of it. */
  function progressEvents(cmd: string): { first: FakeMessage | undefined; edits: FakeMessage[] } {
    const bot = hs.messages(room, { since: cmd, sender: BOT, type: "m.room.message" });
    const first = bot.find((m) => inReplyTo(m) === cmd && String(m.content["body"]) !== "marker");
    return { first, edits: bot.filter((m) => relation(m)?.rel_type === "m.replace") };
  }

  const newBody = (m: FakeMessage): string => String((m.content["m.new_content"] as { body?: unknown } | undefined)?.body);

  it("a quick command shows none, not even its final count", async () => {
    now = 1_000_000;
    const cmd = hs.sendMessage(room, OP, "!sync");
    const progress = port.progress(room, cmd);
    for (const [t, done] of [[100, 1], [900, 2], [1_999, 3]] as const) {
      now = 1_000_000 + t;
      progress(done, 3, "rooms");
    }
    // A message sent afterwards through the same gateway: it lands after anything sent before it.
    expect(await port.reply(room, cmd, [paragraph("marker")])).toBe(true);
    expect(hs.messages(room, { since: cmd, sender: BOT }).map((m) => String(m.content["body"]))).toEqual(["marker"]);
  });

  it("a long one: one message once it has run 2 s, then edits at most every 2 s, and the final count always", async () => {
    now = 2_000_000;
    const cmd = hs.sendMessage(room, OP, "!sync");
    const progress = port.progress(room, cmd);
    const at = (t: number, done: number): void => {
      now = 2_000_000 + t;
      progress(done, 10, "rooms");
    };
    at(500, 1); // too soon
    at(2_000, 2); // the message
    const first = await hs.waitForMessage(room, (m) => m.sender === BOT && inReplyTo(m) === cmd, WAIT_MS, { since: cmd });
    at(3_000, 3); // 1 s after: throttled
    at(3_999, 4); // still throttled
    at(4_000, 5); // an edit
    at(4_500, 6);
    at(5_999, 7);
    at(6_000, 8); // an edit
    at(6_100, 10); // the final count, however soon
    await hs.waitForMessage(room, (m) => m.sender === BOT && relation(m)?.rel_type === "m.replace" && newBody(m) === "rooms 10/10", WAIT_MS, { since: cmd });

    const { first: shown, edits } = progressEvents(cmd);
    expect(shown?.eventId).toBe(first.eventId);
    expect(String(first.content["body"])).toBe("rooms 2/10");
    expect(edits.map(newBody)).toEqual(["rooms 5/10", "rooms 8/10", "rooms 10/10"]);
    for (const e of edits) {
      expect(relation(e)).toEqual({ rel_type: "m.replace", event_id: first.eventId });
      expect(String(e.content["body"])).toBe(`* ${newBody(e)}`);
    }
    // One progress message, edited in place: nothing else was sent.
    expect(hs.messages(room, { since: cmd, sender: BOT })).toHaveLength(4);
  });

  // Found by this test (fixed): the throttle asked whether the first message was sent before the
  // queued send had even started, so a final count given in the same tick as the one that
  // triggered the first message was dropped: the room was left showing "rooms 1/2".
  it("the final count is shown even when it comes in the same tick as the first message", async () => {
    now = 3_000_000;
    const cmd = hs.sendMessage(room, OP, "!sync");
    const progress = port.progress(room, cmd);
    now = 3_002_000;
    progress(1, 2, "rooms");
    now = 3_002_100;
    progress(2, 2, "rooms");
    await hs.waitForMessage(room, (m) => m.sender === BOT && inReplyTo(m) === cmd, WAIT_MS, { since: cmd });
    // A later final count is queued behind anything the calls above queued: once it is in, the
    // earlier ones are too.
    now = 3_002_200;
    progress(2, 2, "marker");
    await hs.waitForMessage(room, (m) => m.sender === BOT && newBody(m) === "marker 2/2", WAIT_MS, { since: cmd });
    expect(progressEvents(cmd).edits.map(newBody)).toEqual(["rooms 2/2", "marker 2/2"]);
  });
});

describe("retention at start", () => {
  it("runs older than retention.runs are pruned with their actions when serve starts; a recent run stays", async () => {
    const dataDir = join(dir, "data-retention");
    const now = Date.now();
    const store = await openStore({ dataDir });
    let oldRun: number;
    let recentRun: number;
    try {
      const run = async (startedAt: Date, user: string): Promise<number> => {
        const id = await store.startRun({ trigger: "schedule", dryRun: false, startedAt });
        await store.recordActions([
          { runId: id, room: "#eng:example.org", roomId: rooms["#eng"]!, kind: "invite", userId: user, detail: {}, outcome: "applied", error: null, at: new Date(startedAt.getTime() + 1) },
        ]);
        await store.finishRun(id, { outcome: "ok", finishedAt: new Date(startedAt.getTime() + 60_000), summary: { counts: { invites: 1 } } });
        return id;
      };
      oldRun = await run(new Date(now - 200 * DAY_MS), u("oldie"));
      recentRun = await run(new Date(now - 10 * DAY_MS), u("newbie"));
      await store.recordTokenAudit({ at: new Date(now - 400 * DAY_MS), actor: OP, place: mgmt, action: "create", tokenRef: "old…(16)", result: "ok", detail: null });
      await store.recordTokenAudit({ at: new Date(now - 5 * DAY_MS), actor: OP, place: mgmt, action: "create", tokenRef: "new…(16)", result: "ok", detail: null });
      expect(await store.listRuns(10)).toHaveLength(2);
    } finally {
      await store.close();
    }

    let handle: ServeHandle | undefined;
    try {
      handle = await startServe(await config("./data-retention"));
      const s = handle.service.app.store;
      expect((await s.listRuns(10)).map((r) => r.id)).toEqual([recentRun]);
      expect(await s.getRun(oldRun)).toBeUndefined();
      expect(await s.listActions(oldRun)).toEqual([]);
      expect(await s.listUserActions(u("oldie"))).toEqual([]);
      expect((await s.listUserActions(u("newbie"))).map((a) => a.runId)).toEqual([recentRun]);
      expect((await s.listTokenAudit(10)).map((a) => a.tokenRef)).toEqual(["new…(16)"]);
    } finally {
      await handle?.stop();
    }
  });
});
