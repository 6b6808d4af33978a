/**
 * `serve` end to end: the real service (matrix-bot-sdk sync loop, node-cron, the store)
 * against the test homeserver. Commands are typed as another user; the tests read the
 * bot's replies and the rooms' end state.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { ServeError, startServe, type ServeHandle } from "../../src/service/serve.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { HANG_GUARD_MS, startBin } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";

const BOT = "@mgs-bot:example.org";
const OP = "@op:example.org";
const u = (n: string): string => `@${n}:example.org`;

let dir: string;
let hs: FakeHomeserver;
let token: string;
let mgmt: string;
let eng: string;
let tokenRoom: string;
let handle: ServeHandle | undefined;

const directory = `
users: [alice, bob, carol, dave]
groups:
  - { id: engineers, members: [alice, bob, "group:leads"] }
  - { id: leads, members: [carol] }
`;

function configText(extra: { schedule?: string; allow?: string[]; runAtStart?: boolean; dataDir?: string } = {}): string {
  return `homeserver: { url: ${hs.url}, accessToken: ${token}, maxRetries: 10 }
dataDir: ${extra.dataDir ?? "./data"}
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - room: "#eng:example.org"
      groups: [ { group: engineers }, { group: leads, role: moderator } ]
sync: { maxRemovals: { count: 3 } }
tokens: { backend: synapse, defaults: { uses: 2, expiry: 3d }, allow: ["${tokenRoom}"] }
serve:
  managementRoom: "#mgmt:example.org"
  schedule: "${extra.schedule ?? "0 0 1 1 *"}"
  allow: ${JSON.stringify(extra.allow ?? [OP])}
  runAtStart: ${extra.runAtStart ?? false}
  shutdownTimeoutMs: 10000
  http: { port: 0 }
log: { level: error }
`;
}

async function config(extra: Parameters<typeof configText>[0] = {}): Promise<Config> {
  const path = join(dir, "config.yaml");
  await writeFile(path, configText(extra));
  const r = loadConfig({ path, env: {}, cwd: dir });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

/** A bot reply is awaited for up to REPLY_MS: a hang guard, not how long a reply takes. */
const REPLY_MS = 60_000;

/** Sends a command as `sender` and returns the bot's final reply to it (plain body). */
async function command(body: string, sender = OP, timeoutMs = REPLY_MS): Promise<string> {
  const eventId = hs.sendMessage(mgmt, sender, body);
  const reply = await hs.waitForMessage(
    mgmt,
    (m) =>
      m.sender === BOT &&
      m.type === "m.room.message" &&
      (m.content["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]?.event_id === eventId &&
      !String(m.content["body"]).startsWith("A run is in progress; this one is queued"),
    timeoutMs,
  );
  return String(reply.content["body"]);
}

/** The room's admin raises the bot to 100, as they would in their client. */
function raiseBot(room: string, admin: string): Promise<void> {
  const pl = hs.powerLevels(room) ?? {};
  hs.putLegacyState(room, "m.room.power_levels", "", { ...pl, users: { ...((pl["users"] ?? {}) as Record<string, number>), [BOT]: 100 } }, admin);
  return Promise.resolve();
}

function repliesTo(eventId: string): string[] {
  return hs
    .messages(mgmt, { sender: BOT })
    .filter((m) => (m.content["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]?.event_id === eventId)
    .map((m) => String(m.content["body"]));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-serve-"));
  await writeFile(join(dir, "directory.yaml"), directory);
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  token = hs.registerUser(BOT, undefined, { admin: true });
  hs.registerUser(OP);
  mgmt = hs.createRoom({ creator: OP, alias: "#mgmt:example.org", members: { [BOT]: "invite", "@intruder:example.org": "join" } });
  tokenRoom = hs.createRoom({ creator: "@helpdesk:example.org", members: { [BOT]: "invite" } });
  eng = hs.createRoom({
    creator: BOT,
    alias: "#eng:example.org",
    members: { [u("alice")]: "join", [u("carol")]: "join", [u("mallory")]: "join", [u("trent")]: "join", [u("victor")]: "join", [u("walter")]: "join" },
  });
  handle = await startServe(await config());
});

afterEach(() => undefined);

afterAll(async () => {
  await handle?.stop();
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

describe("serve: the management room", () => {
  it("answers !help from the command table, and explains one command", async () => {
    const help = await command("!help");
    for (const name of ["sync", "status", "idp", "joined", "managed", "release", "unmanage", "manage", "invite-member", "invite-admin", "kick-member"]) {
      expect(help).toContain(`!${name}`);
    }
    expect(await command("!help release")).toContain("!release <room> [user…]");
  });

  it("!idp shows who the directory puts in each room, with roles and group paths", async () => {
    const reply = await command("!idp");
    expect(reply).toMatch(/#eng:example.org: 3 member\(s\)/);
    expect(reply).toMatch(/@carol:example.org\s+\|\s+moderator\s+\|\s+50\s+\|\s+engineers > leads; leads/);
  });

  it("refuses people who are not on the allow list, with one short reply", async () => {
    const reply = await command("!sync", "@intruder:example.org");
    expect(reply).toBe("Sorry @intruder:example.org, you are not on the allow list for commands here.");
    // Help is for everyone in the room; what it lists stays operator-only.
    expect(await command("!help", "@intruder:example.org")).toContain("!sync");
  });

  it("answers a typo with the nearest command and wrong arguments with the usage line", async () => {
    expect(await command("!snyc")).toMatch(/Did you mean !sync\?/);
    const usage = await command("!release");
    expect(usage).toContain("Usage: !release <room> [user…]");
    expect(await command("!release not-a-room")).toMatch(/room: .*not-a-room/);
    // The room is named once, not "#x: #x: no such room alias".
    const missing = await command("!release #nope:example.org");
    expect(missing).toContain("#nope:example.org: no such room alias");
    expect(missing).not.toContain("#nope:example.org: #nope:example.org");
  });

  it("!sync --dry reports and changes nothing; !sync applies, holding the mass removal; !release lets it through", async () => {
    const dry = await command("!sync --dry");
    expect(dry).toMatch(/^Dry run \(nothing changed\): 1 room\(s\), 1 invite\(s\), 0 kick\(s\), 1 level change\(s\), 4 held/);
    expect(hs.members(eng)[u("bob")]).toBeUndefined();

    const real = await command("!sync");
    expect(real).toMatch(/^Sync done: 1 room\(s\), 1 invite\(s\), 0 kick\(s\), 1 level change\(s\), 4 held/);
    expect(hs.members(eng)[u("bob")]).toBe("invite");
    expect(hs.powerLevels(eng)!["users"]).toMatchObject({ [u("carol")]: 50 });
    expect(hs.members(eng)[u("mallory")]).toBe("join");

    const status = await command("!status");
    expect(status).toMatch(/4 removal\(s\) held by the mass-removal guard/);

    expect(await command("!release #eng:example.org @mallory:example.org")).toMatch(/Released 1 held removal/);
    await command("!sync #eng:example.org");
    expect(hs.members(eng)[u("mallory")]).toBe("leave");
    expect(hs.members(eng)[u("trent")]).toBe("join");
  });

  it("!invite-member adds an external that syncs leave alone; !kick-member removes them; directory users are refused", async () => {
    expect(await command("!invite-member #eng:example.org @bob:example.org")).toMatch(/Refused: @bob:example.org is managed by the directory/);
    expect(await command("!invite-member https://matrix.to/#/%23eng:example.org @guest:partner.example")).toMatch(/invited @guest:partner.example/);
    // An account of our own server that does not exist (a typo): refused, nothing recorded.
    expect(await command("!invite-member #eng:example.org @nobdoy:example.org")).toBe("Refused: there is no account @nobdoy:example.org on this homeserver (check the spelling).");
    expect(hs.members(eng)["@nobdoy:example.org"]).toBeUndefined();
    expect(hs.members(eng)["@guest:partner.example"]).toBe("invite");
    // One below our own level unless --equal: !kick-member must still be able to remove them.
    await command("!invite-admin #eng:example.org @boss:partner.example");
    expect(hs.powerLevels(eng)!["users"]).toMatchObject({ "@boss:partner.example": 99 });
    expect(await command("!kick-member #eng:example.org @boss:partner.example")).toMatch(/removed from the room/);
    expect(await command("!kick-member #eng:example.org @guest:partner.example")).toMatch(/removed from the room/);
    expect(hs.members(eng)["@guest:partner.example"]).toBe("leave");
    expect(await command("!kick-member #eng:example.org @alice:example.org")).toMatch(/Refused/);
  });

  it("!token commands work for operators in the management room, and are refused to others", async () => {
    const created = await command("!token create");
    const value = /New registration token: (\S+) — 2 use\(s\), expires/.exec(created)?.[1];
    expect(value, created).toBeDefined();
    expect(hs.registrationTokens().map((t) => t.token)).toContain(value);
    expect(await command("!token list")).toMatch(new RegExp(`${value}\\s+\\|\\s+valid\\s+\\|\\s+0 of 2 used`));
    expect(await command("!token list", "@intruder:example.org")).toBe("Sorry @intruder:example.org, token commands are not allowed for you here.");
    expect(await command(`!token delete ${value!}`)).toContain(`${value!}: deleted`);
    const audit = await handle!.service.app.store.listTokenAudit(5);
    expect(audit.map((a) => [a.action, a.actor, a.place])).toEqual([
      ["delete", OP, mgmt],
      ["list", OP, mgmt],
      ["create", OP, mgmt],
    ]);
  });

  it("in a room on the token allow list anyone present may use token commands, and nothing else", async () => {
    expect(hs.members(tokenRoom)[BOT]).toBe("join");
    const ask = hs.sendMessage(tokenRoom, "@helpdesk:example.org", "!token create 1 1d");
    const reply = await hs.waitForMessage(
      tokenRoom,
      (m) => m.sender === BOT && JSON.stringify(m.content).includes(ask),
      REPLY_MS,
    );
    expect(String(reply.content["body"])).toMatch(/New registration token: \S+ — 1 use\(s\)/);
    const sync = hs.sendMessage(tokenRoom, "@helpdesk:example.org", "!sync");
    // The next token reply proves the bot read past the !sync, which it must ignore here.
    const later = hs.sendMessage(tokenRoom, "@helpdesk:example.org", "!token allowed");
    await hs.waitForMessage(tokenRoom, (m) => m.sender === BOT && JSON.stringify(m.content).includes(later), REPLY_MS);
    expect(hs.messages(tokenRoom, { sender: BOT }).some((m) => JSON.stringify(m.content).includes(sync))).toBe(false);
    // `!token` alone is the token help, there too; it lists only token commands.
    const help = hs.sendMessage(tokenRoom, "@helpdesk:example.org", "!token");
    const helpReply = await hs.waitForMessage(tokenRoom, (m) => m.sender === BOT && JSON.stringify(m.content).includes(help), REPLY_MS);
    expect(String(helpReply.content["body"])).toContain("!token create");
    expect(String(helpReply.content["body"])).not.toContain("!sync");
  });

  it("!joined and !managed list the rooms", async () => {
    expect(await command("!joined")).toContain(eng);
    expect(await command("!managed")).toMatch(/#eng:example.org\s+\|\s+!/);
  });

  it("a run in progress is never overlapped: the next is queued, a third is skipped", async () => {
    // Slow the next runs down: the room reads wait for Retry-After.
    hs.rateLimit({ count: 2, retryAfterMs: 1_500, endpoints: ["state"] });
    const first = hs.sendMessage(mgmt, OP, "!sync --dry");
    await hs.waitForMessage(mgmt, (m) => m.type === "m.reaction" && m.sender === BOT, REPLY_MS);
    const second = hs.sendMessage(mgmt, OP, "!sync --dry");
    const third = hs.sendMessage(mgmt, OP, "!sync --dry");
    const isReply = (id: string) => (m: { sender: string; content: Record<string, unknown> }) =>
      m.sender === BOT && (m.content["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]?.event_id === id;
    await hs.waitForMessage(mgmt, (m) => isReply(third)(m), REPLY_MS);
    await hs.waitForMessage(mgmt, (m) => isReply(second)(m) && String(m.content["body"]).startsWith("Dry run"), REPLY_MS);
    expect(repliesTo(first).some((b) => b.startsWith("Dry run"))).toBe(true);
    expect(repliesTo(second)[0]).toMatch(/queued/);
    expect(repliesTo(third)).toEqual(["A run is in progress and another is already queued: not starting a third. See !status."]);
  });
});

describe("serve: restarts, schedule and shutdown", () => {
  it("never replays a command after a restart, nor runs one sent while it was down", async () => {
    const before = hs.sendMessage(mgmt, OP, "!invite-member #eng:example.org @early:partner.example");
    await hs.waitForMessage(mgmt, (m) => m.sender === BOT && JSON.stringify(m.content).includes(before), REPLY_MS);
    await handle!.stop();
    handle = undefined;
    const whileDown = hs.sendMessage(mgmt, OP, "!invite-member #eng:example.org @late:partner.example");
    handle = await startServe(await config());
    // A command after the restart is answered, which proves the bot is listening again.
    await command("!status");
    expect(repliesTo(before)).toHaveLength(1);
    expect(repliesTo(whileDown)).toEqual([]);
    expect(hs.members(eng)["@late:partner.example"]).toBeUndefined();
  });

  it("runs on the schedule", { timeout: 2 * HANG_GUARD_MS }, async () => {
    await handle!.stop();
    handle = await startServe(await config({ schedule: "*/1 * * * * *" }));
    const store = handle.service.app.store;
    // Every second: the first scheduled run is recorded soon; the cap only guards against a hang.
    const scheduled = await waitUntil("a scheduled run is recorded", async () => (await store.listRuns(20)).filter((r) => r.trigger === "schedule").length || undefined, undefined, { everyMs: 200 });
    expect(scheduled).toBeGreaterThan(0);
    await handle.stop();
    handle = await startServe(await config());
  });

  it("an encrypted management room without serve.encryption is refused with a clear message", async () => {
    hs.createRoom({ creator: OP, alias: "#secret:example.org", encrypted: true, members: { [BOT]: "invite" } });
    const cfg = await config({ dataDir: "./data-encrypted" });
    const withSecret = { ...cfg, serve: { ...cfg.serve!, managementRoom: "#secret:example.org" } };
    await expect(startServe(withSecret)).rejects.toThrow(ServeError);
    await expect(startServe(withSecret)).rejects.toThrow(/is encrypted, and end-to-end encryption is not set up: give serve\.encryption\.storeKeyFile/);
  });

  it("SIGTERM during a run: the process stops within a bounded time, exits 0, and the run is recorded", { timeout: 2 * HANG_GUARD_MS }, async () => {
    await handle!.stop();
    handle = undefined;
    try {
      await writeFile(join(dir, "child.yaml"), configText({ runAtStart: true, dataDir: "./data-child" }));
      // Make the start-up run slow: every room read waits 2 s first.
      hs.rateLimit({ count: 3, retryAfterMs: 2_000, endpoints: ["state"] });
      const limited = (): number => hs.requestLog().filter((e) => e.kind === "state" && e.status === 429 && decodeURIComponent(e.path).includes(eng)).length;
      const before = limited();
      const child = startBin(["serve", "--config", join(dir, "child.yaml")]);
      await child.waitForLine("is serving");
      // The start-up run is under way once one of its reads of the managed room was answered
      // 429: it now waits 2 s, and the SIGTERM comes in the middle of the run.
      await waitUntil("the start-up run reads the managed room", () => limited() > before, () => child.tail());
      const t0 = Date.now();
      child.signal("SIGTERM");
      const exit = await child.exit;
      expect(exit.code, child.stderr()).toBe(0);
      expect(exit.at - t0).toBeLessThan(15_000);
      const store = await openStore({ dataDir: join(dir, "data-child") });
      try {
        const runs = await store.listRuns(5);
        expect(runs[0]?.trigger).toBe("startup");
        expect(["interrupted", "ok"]).toContain(runs[0]?.outcome);
        expect(runs.every((r) => r.outcome !== "running")).toBe(true);
      } finally {
        await store.close();
      }
    } finally {
      // The child (if still running) is stopped when the test finishes; the next tests need serve.
      handle = await startServe(await config());
    }
  });
});

describe("serve: handing a room back", () => {
  it("!unmanage invites a new admin who is not there yet, then hands over; syncs leave the room alone until !manage", async () => {
    expect(await command("!unmanage #eng:example.org @dave:example.org")).toMatch(/has not joined #eng:example.org yet; they are invited/);
    expect(hs.members(eng)[u("dave")]).toBe("invite");
    hs.setMembership(eng, u("dave"), "join");

    const reply = await command("!unmanage #eng:example.org @dave:example.org");
    expect(reply).toMatch(/#eng:example.org handed over/);
    expect(reply).toMatch(/@dave:example.org: level 0 → 100/);
    expect(reply).toMatch(/left the room/);
    const pl = hs.powerLevels(eng)!["users"] as Record<string, number>;
    expect(pl[u("dave")]).toBe(100);
    expect(pl[BOT]).toBeUndefined();
    expect(hs.members(eng)[BOT]).toBe("leave");

    const dry = await command("!sync --dry");
    expect(dry).toMatch(/unmanaged: handed back by an operator; not synced/);
    expect(await command("!managed")).toMatch(/#eng:example.org\s+\|\s+!\S+\s+\|\s+handed back/);

    // !manage checks first: the bot left and has no level there any more.
    expect(await command("!manage #eng:example.org")).toMatch(/#eng:example.org stays handed back: the bot is not in the room and cannot join it .*invite it/);
    hs.setMembership(eng, BOT, "invite");
    expect(await command("!manage #eng:example.org")).toMatch(/#eng:example.org stays handed back: the bot's level 0 is below what invite, kick, power levels need \(50\)|stays handed back: the bot's level 0 is below/);
    expect(hs.members(eng)[BOT]).toBe("join"); // it joined on the invite, and checked its level
    await raiseBot(eng, u("dave"));
    expect(await command("!manage #eng:example.org")).toMatch(/#eng:example.org is managed again/);
    expect(await command("!managed")).toMatch(/#eng:example.org\s+\|\s+!\S+\s+\|\s+managed/);
  });
});
