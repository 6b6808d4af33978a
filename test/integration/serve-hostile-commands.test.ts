/**
 * `serve` against commands that would leave the world worse than asked: a room handed to the
 * bot itself, an external raised out of `!kick-member`'s reach, commands replayed because of
 * their timestamp, token-room members widening the token allow list, and echoed control or
 * bidi characters. The real service against the test homeserver; the tests read the rooms'
 * power levels and memberships, the bot's replies and what the store holds.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { loadConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { runCli, type CliIo } from "../../src/main.ts";
import { startServe, type ServeHandle } from "../../src/service/serve.ts";
import { FakeHomeserver, presetPowerLevels, type FakeMessage } from "../fakes/homeserver.ts";

const BOT = "@mgs-bot:example.org";
const OP = "@op:example.org";
const HELPDESK = "@helpdesk:example.org";
const DAY_MS = 24 * 3600 * 1000;

let dir: string;
let hs: FakeHomeserver;
let token: string;
let mgmt: string;
let tokenRoom: string;
const rooms: Record<string, string> = {};
let handle: ServeHandle | undefined;

const MANAGED = ["#ext", "#hand-bot", "#hand-equal", "#hand-creator"] as const;

function configText(): string {
  return `homeserver: { url: ${hs.url}, accessToken: ${token}, maxRetries: 10 }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
${MANAGED.map((r) => `    - { room: "${r}:example.org", groups: [ { group: staff } ] }`).join("\n")}
tokens: { backend: synapse, defaults: { uses: 2, expiry: 3d }, allow: ["${tokenRoom}"] }
serve:
  managementRoom: "#mgmt:example.org"
  schedule: "0 0 1 1 *"
  allow: ["${OP}"]
  runAtStart: false
  shutdownTimeoutMs: 10000
log: { level: error }
`;
}

async function config(): Promise<Config> {
  const path = join(dir, "config.yaml");
  await writeFile(path, configText());
  const r = loadConfig({ path, env: {}, cwd: dir });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

const inReplyTo = (m: FakeMessage): string | undefined =>
  (m.content["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]?.event_id;

/** The bot's reply to one event (the first one that is not a "queued" notice). */
async function replyTo(room: string, eventId: string, timeoutMs = 20_000): Promise<FakeMessage> {
  return hs.waitForMessage(room, (m) => m.sender === BOT && m.type === "m.room.message" && inReplyTo(m) === eventId, timeoutMs, { since: eventId });
}

function repliesTo(room: string, eventId: string): FakeMessage[] {
  return hs.messages(room, { sender: BOT }).filter((m) => inReplyTo(m) === eventId);
}

/** Sends a command as `sender` in `room` and returns the bot's reply (plain body). */
async function command(body: string, sender = OP, room = mgmt): Promise<string> {
  const eventId = hs.sendMessage(room, sender, body);
  return String((await replyTo(room, eventId)).content["body"]);
}

/** A message whose `origin_server_ts` is `offsetMs` away from now: the sender's clock is skewed. */
function sendSkewed(room: string, sender: string, body: string, offsetMs: number): string {
  const now = Date.now();
  const spy = vi.spyOn(Date, "now").mockReturnValue(now + offsetMs);
  try {
    return hs.sendMessage(room, sender, body);
  } finally {
    spy.mockRestore();
  }
}

function levels(room: string): Record<string, number> {
  return (hs.powerLevels(room)?.["users"] ?? {}) as Record<string, number>;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-hostile-"));
  await writeFile(join(dir, "directory.yaml"), "users: [alice]\ngroups:\n  - { id: staff, members: [alice] }\n");
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  token = hs.registerUser(BOT, undefined, { admin: true });
  hs.registerUser(OP);
  mgmt = hs.createRoom({ creator: OP, alias: "#mgmt:example.org", members: { [BOT]: "invite" } });
  tokenRoom = hs.createRoom({ creator: HELPDESK, members: { [BOT]: "invite", [OP]: "join" } });
  for (const alias of ["#ext", "#hand-bot"]) rooms[alias] = hs.createRoom({ creator: BOT, alias: `${alias}:example.org`, members: { "@alice:example.org": "join" } });
  rooms["#hand-equal"] = hs.createRoom({
    creator: BOT,
    alias: "#hand-equal:example.org",
    members: { "@dana:partner.example": "join" },
    powerLevels: presetPowerLevels({ [BOT]: 100, "@dana:partner.example": 100 }),
  });
  rooms["#hand-creator"] = hs.createRoom({
    creator: "@founder:example.org",
    version: "12",
    alias: "#hand-creator:example.org",
    members: { [BOT]: "join" },
    powerLevels: presetPowerLevels({ [BOT]: 100 }),
  });
  handle = await startServe(await config());
});

afterAll(async () => {
  await handle?.stop();
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

describe("!unmanage: the room keeps an admin", () => {
  it("refuses to hand a room to the bot itself: it stays in the room, at its level, and the room stays managed", async () => {
    const reply = await command("!unmanage #hand-bot:example.org @mgs-bot:example.org");
    expect(reply).toMatch(/^Cannot hand #hand-bot:example.org over: @mgs-bot:example.org is this bot/);
    const room = rooms["#hand-bot"]!;
    expect(levels(room)[BOT]).toBe(100);
    expect(hs.members(room)[BOT]).toBe("join");
    const managed = (await handle!.service.app.store.listManagedRooms()).find((r) => r.room === "#hand-bot:example.org");
    expect(managed?.managed ?? true).toBe(true);
  });

  it("hands a room to someone already at our level (another server) without changing their level", async () => {
    const reply = await command("!unmanage #hand-equal:example.org @dana:partner.example");
    expect(reply).toMatch(/#hand-equal:example.org handed over/);
    expect(reply).toMatch(/@dana:partner.example is already at level 100, at or above ours \(100\); no level change needed/);
    const room = rooms["#hand-equal"]!;
    expect(levels(room)["@dana:partner.example"]).toBe(100);
    expect(hs.members(room)[BOT]).toBe("leave");
  });

  it("hands a room version 12 room to one of its creators, who keeps unlimited power", async () => {
    const reply = await command("!unmanage #hand-creator:example.org @founder:example.org");
    expect(reply).toMatch(/@founder:example.org is a creator of the room \(unlimited power\); no level change needed/);
    const room = rooms["#hand-creator"]!;
    expect(levels(room)["@founder:example.org"]).toBeUndefined(); // a v12 creator must not appear in users
    expect(hs.members(room)[BOT]).toBe("leave");
  });
});

describe("!invite-admin stays within !kick-member's reach", () => {
  it("gives one below our level and says so; !kick-member can then remove them", async () => {
    const room = rooms["#ext"]!;
    const reply = await command("!invite-admin #ext:example.org @boss:partner.example");
    expect(reply).toMatch(/level 0 → 99/);
    expect(reply).toMatch(/one below ours, rather than the admin role's 100/);
    expect(reply).toMatch(/--equal/);
    expect(levels(room)["@boss:partner.example"]).toBe(99);
    expect(await command("!kick-member #ext:example.org @boss:partner.example")).toMatch(/removed from the room/);
    expect(hs.members(room)["@boss:partner.example"]).toBe("leave");
    expect(levels(room)["@boss:partner.example"]).toBeUndefined();
  });

  it("gives our own level only with --equal, warning that !kick-member cannot remove them afterwards", async () => {
    const room = rooms["#ext"]!;
    const reply = await command("!invite-admin --equal #ext:example.org @chief:partner.example");
    expect(reply).toMatch(/level 0 → 100/);
    expect(reply).toMatch(/!kick-member cannot remove them/);
    expect(levels(room)["@chief:partner.example"]).toBe(100);
    expect(await command("!help invite-admin")).toContain("--equal");
  });
});

describe("commands are new by the sync stream, not by their timestamp", () => {
  it("a command stamped in the future, typed while the service was down, is not run at start-up", async () => {
    const room = rooms["#ext"]!;
    await handle!.stop();
    handle = undefined;
    const future = sendSkewed(mgmt, OP, "!invite-member #ext:example.org @future:partner.example", DAY_MS);
    handle = await startServe(await config());
    // The same command sent after the restart is answered: the bot is listening past the first
    // sync (and would have handled the earlier one by now).
    expect(await command("!invite-member #ext:example.org @probe:partner.example")).toMatch(/invited @probe:partner.example/);
    expect(repliesTo(mgmt, future)).toEqual([]);
    expect(hs.members(room)["@future:partner.example"]).toBeUndefined();
  });

  it("a command stamped in the past that arrives while running is run", async () => {
    const room = rooms["#ext"]!;
    const past = sendSkewed(mgmt, OP, "!invite-member #ext:example.org @past:partner.example", -DAY_MS);
    expect(String((await replyTo(mgmt, past)).content["body"])).toMatch(/invited @past:partner.example/);
    expect(hs.members(room)["@past:partner.example"]).toBe("invite");
  });
});

describe("token allow list: only operators in the management room change it", () => {
  it("anyone in a token room may use tokens, but not widen the allow list nor delete every token", async () => {
    const created = await command("!token create 1 1d", HELPDESK, tokenRoom);
    const value = /New registration token: (\S+) —/.exec(created)?.[1];
    expect(value, created).toBeDefined();
    expect(await command("!token allow .*", HELPDESK, tokenRoom)).toMatch(/not on the allow list for commands here/);
    expect(await command("!token delete-all --yes", HELPDESK, tokenRoom)).toMatch(/not on the allow list for commands here/);
    // An operator, but outside the management room.
    expect(await command("!token allow @friend:example.org", OP, tokenRoom)).toMatch(/only operators in the management room may change the token allow list/);
    const entries = (await handle!.service.app.store.listAllowed("tokens")).map((e) => e.entry);
    expect(entries).not.toContain(".*");
    expect(entries).not.toContain("@friend:example.org");
    expect(hs.registrationTokens().map((t) => t.token)).toContain(value);
  });

  it("!token allow !room joins the room and listens there at once; what was said there before is not run", async () => {
    const desk = hs.createRoom({ creator: HELPDESK, members: { [BOT]: "invite", "@clerk:example.org": "join" } });
    const before = hs.sendMessage(desk, "@clerk:example.org", "!token create 1 1d");
    expect(await command(`!token allow ${desk}`)).toMatch(/Token commands are now allowed for room .*I have joined it and listen there now/);
    expect(hs.members(desk)[BOT]).toBe("join");
    expect(await command("!token list", "@clerk:example.org", desk)).toMatch(/registration token/);
    expect(repliesTo(desk, before)).toEqual([]);
    expect((await handle!.service.app.store.listAllowed("tokens")).map((e) => e.entry)).toContain(desk);

    // After a restart the room added by command is still listened to.
    await handle!.stop();
    handle = undefined;
    handle = await startServe(await config());
    expect(await command("!token allowed", "@clerk:example.org", desk)).toContain(desk);
  });

  it("a room the bot cannot join is refused and not added", async () => {
    const closed = hs.createRoom({ creator: HELPDESK });
    expect(await command(`!token allow ${closed}`)).toMatch(/Cannot join .*Invite the bot to the room and try again; the allow list is unchanged/);
    expect((await handle!.service.app.store.listAllowed("tokens")).map((e) => e.entry)).not.toContain(closed);
  });

  it("the CLI operator still changes the allow list", async () => {
    const out: string[] = [];
    const io: CliIo = { out: (t) => out.push(t), err: (t) => out.push(t), env: {}, cwd: dir, interactive: false };
    await writeFile(join(dir, "cli.yaml"), configText().replace("dataDir: ./data", "dataDir: ./data-cli"));
    const code = await runCli(["token", "allow", "@deputy:example.org", "--config", join(dir, "cli.yaml")], io);
    expect(code, out.join("\n")).toBe(0);
    expect(out.join("\n")).toContain("Token commands are now allowed for user @deputy:example.org.");
  });
});

describe("echoed text", () => {
  it("carries no control or bidi characters, in the body or the HTML", async () => {
    const eventId = hs.sendMessage(mgmt, OP, '!release "ab\u202Ecd\u0000e\u2066f\u200Fg\u001B[2Jh"');
    const reply = await replyTo(mgmt, eventId);
    const body = String(reply.content["body"]);
    const html = String(reply.content["formatted_body"]);
    expect(body).toContain("abcdef");
    // eslint-disable-next-line no-control-regex -- finding control characters is the point
    for (const text of [body, html]) expect(text).not.toMatch(/[\u0000-\u0009\u000B-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/);
  });
});
