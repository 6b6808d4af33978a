/**
 * `tokens.directMessages`: token commands in a direct chat, as matrix-registration-bot takes
 * them. The real service against the test homeserver; the person is a client creating a direct
 * chat over the client-server API (`createRoom` with `is_direct`, as Element does).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { startServe, type ServeHandle } from "../../src/service/serve.ts";
import { FakeHomeserver, type FakeMessage } from "../fakes/homeserver.ts";
import { waitUntil } from "../helpers/wait.ts";

const BOT = "@mgs-bot:example.org";
const OP = "@op:example.org";
const HELPER = "@helper:example.org"; // on the token allow list
const STRANGER = "@stranger:example.org";

let dir: string;
let hs: FakeHomeserver;
let handle: ServeHandle | undefined;
const tokens: Record<string, string> = {};

async function config(): Promise<Config> {
  const path = join(dir, "config.yaml");
  await writeFile(
    path,
    `homeserver: { url: ${hs.url}, accessToken: ${tokens[BOT]}, maxRetries: 10 }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping: { rooms: [] }
tokens: { backend: synapse, allow: ["${HELPER}"], directMessages: true }
serve:
  managementRoom: "#mgmt:example.org"
  schedule: "0 0 1 1 *"
  allow: ["${OP}"]
  shutdownTimeoutMs: 10000
log: { level: error }
`,
  );
  const r = loadConfig({ path, env: {}, cwd: dir });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

/** A direct chat with the bot, created by `user` as a client does it. */
async function directChat(user: string, isDirect = true): Promise<string> {
  const res = await fetch(`${hs.url}/_matrix/client/v3/createRoom`, {
    method: "POST",
    headers: { authorization: `Bearer ${tokens[user]}`, "content-type": "application/json" },
    body: JSON.stringify({ preset: "private_chat", ...(isDirect ? { is_direct: true } : {}), invite: [BOT] }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { room_id: string }).room_id;
}

const inReplyTo = (m: FakeMessage): string | undefined =>
  (m.content["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]?.event_id;

async function command(room: string, sender: string, body: string): Promise<string> {
  const eventId = hs.sendMessage(room, sender, body);
  const reply = await hs.waitForMessage(room, (m) => m.sender === BOT && inReplyTo(m) === eventId, 20_000, { since: eventId });
  return String(reply.content["body"]);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-token-dm-"));
  await writeFile(join(dir, "directory.yaml"), "users: []\ngroups: []\n");
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  tokens[BOT] = hs.registerUser(BOT, undefined, { admin: true });
  for (const u of [OP, HELPER, STRANGER]) tokens[u] = hs.registerUser(u);
  hs.createRoom({ creator: OP, alias: "#mgmt:example.org", members: { [BOT]: "invite" } });
  handle = await startServe(await config());
});

afterAll(async () => {
  await handle?.stop();
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

describe("token commands in a direct chat (tokens.directMessages)", () => {
  it("joins a direct chat from someone on the token allow list and answers token commands there, and only those", async () => {
    const dm = await directChat(HELPER);
    await waitUntil("the bot has joined the direct chat", () => hs.members(dm)[BOT] === "join");
    const created = await command(dm, HELPER, "!token create 2 7d");
    expect(created).toMatch(/^New registration token: \S+ — 2 use\(s\), expires /);
    expect(await command(dm, HELPER, "!token list")).toMatch(/1 valid registration token\(s\)/);
    // Anything but token commands goes unheard in a direct chat, as in a token room.
    const sync = hs.sendMessage(dm, HELPER, "!sync");
    const marker = hs.sendMessage(dm, HELPER, "!token allowed");
    await hs.waitForMessage(dm, (m) => m.sender === BOT && inReplyTo(m) === marker, 20_000, { since: marker });
    expect(hs.messages(dm, { sender: BOT }).filter((m) => inReplyTo(m) === sync)).toEqual([]);
  });

  it("leaves a stranger's direct chat invite alone (not joined), and ignores an invite that is not a direct chat", async () => {
    const dm = await directChat(STRANGER);
    const plainRoom = await directChat(HELPER, false);
    // A later direct chat from an allowed user is joined: by then the two invites before it were seen and passed over.
    const later = await directChat(HELPER);
    await waitUntil("the bot has joined the later direct chat", () => hs.members(later)[BOT] === "join");
    expect(hs.members(dm)[BOT]).toBe("invite");
    expect(hs.members(plainRoom)[BOT]).toBe("invite");
  });

  it("keeps hearing a direct chat after a restart", async () => {
    const dm = await directChat(HELPER);
    await waitUntil("the bot has joined the direct chat", () => hs.members(dm)[BOT] === "join");
    await handle?.stop();
    handle = await startServe(await config());
    expect(await command(dm, HELPER, "!token allowed")).toMatch(new RegExp(HELPER.replace(/[.]/g, "\\.")));
  });
});
