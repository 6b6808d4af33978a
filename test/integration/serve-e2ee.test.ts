/**
 * An encrypted management room: the real service against the test homeserver, the operator a
 * matrix-js-sdk client with its Rust crypto (a client we did not write). Commands go in
 * encrypted; the bot's replies must arrive as `m.room.encrypted` and decrypt to the expected
 * text, and nothing the bot sends into the room is plaintext.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MatrixClient, MatrixEvent } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { startServe, type ServeHandle } from "../../src/service/serve.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { quietSdkLogger, startDevice, waitForDevice, waitForMembership, waitForReply } from "../helpers/js-sdk.ts";
import { RoomEvent } from "matrix-js-sdk";
import { runIn } from "../helpers/cli-world.ts";

const BOT = "@mgs-bot:example.org";
const OP = "@op:example.org";
const BOT_DEVICE = "MGSBOTDEVICE";

let dir: string;
let hs: FakeHomeserver;
let botToken: string;
let handle: ServeHandle | undefined;
const clients: MatrixClient[] = [];

async function config(managementRoom: string, opts: { dataDir?: string; token?: string; password?: string; tokens?: string } = {}): Promise<Config> {
  const path = join(dir, "config.yaml");
  const auth = opts.password !== undefined ? `user: mgs-login-bot, password: "${opts.password}"` : `accessToken: ${opts.token ?? botToken}`;
  await writeFile(
    path,
    `homeserver: { url: ${hs.url}, ${auth}, maxRetries: 10 }
dataDir: ${opts.dataDir ?? "./data"}
idp: { kind: static, static: { file: directory.yaml } }
mapping: { rooms: [] }
${opts.tokens ?? ""}
serve:
  managementRoom: "${managementRoom}"
  schedule: "0 0 1 1 *"
  allow: ["${OP}"]
  shutdownTimeoutMs: 10000
  encryption: { storeKey: "correct horse battery staple" }
log: { level: ${process.env["MGS_TEST_LOG"] ?? "error"} }
`,
  );
  const r = loadConfig({ path, env: {}, cwd: dir });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

/** The bot's decrypted reply to `eventId` in `roomId`. */
const botReplyTo = (client: MatrixClient, roomId: string, eventId: string): Promise<MatrixEvent> => waitForReply(client, BOT, roomId, eventId);

/** Sends `body` encrypted as `client` and waits for the bot's reply to it: its plain body. */
async function command(client: MatrixClient, roomId: string, body: string): Promise<MatrixEvent> {
  const { event_id } = await client.sendTextMessage(roomId, body);
  return botReplyTo(client, roomId, event_id);
}

/** An encrypted room made by the operator's client, the bot invited. */
async function encryptedRoom(op: MatrixClient): Promise<string> {
  const { room_id } = await op.createRoom({
    preset: "private_chat" as never,
    invite: [BOT],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  return room_id;
}

/** Nothing the bot sent into `roomId` is plaintext (reactions and messages alike); redactions aside. */
function botSentOnlyCiphertext(roomId: string, bot = BOT): void {
  const plain = hs.messages(roomId, { sender: bot }).filter((m) => m.type !== "m.room.encrypted" && m.type !== "m.room.redaction");
  expect(plain).toEqual([]);
}

beforeAll(async () => {
  quietSdkLogger();
  dir = await mkdtemp(join(tmpdir(), "mgs-serve-e2ee-"));
  await writeFile(join(dir, "directory.yaml"), "users: []\ngroups: []\n");
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  botToken = hs.registerUser(BOT, undefined, { deviceId: BOT_DEVICE });
});

afterEach(async () => {
  await handle?.stop();
  handle = undefined;
  for (const c of clients.splice(0)) c.stopClient();
});

afterAll(async () => {
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

async function operatorDevice(deviceId: string): Promise<MatrixClient> {
  const c = await startDevice(hs, OP, deviceId);
  clients.push(c);
  return c;
}

describe("an encrypted management room", () => {
  it("first contact: the bot joins, reads an encrypted command and answers encrypted; a second device of the operator gets the keys", async () => {
    const op = await operatorDevice("OPDEV1");
    const roomId = await encryptedRoom(op);
    const botJoined = waitForMembership(op, roomId, BOT, "join");
    handle = await startServe(await config(roomId));
    await botJoined;
    await waitForDevice(op, BOT, BOT_DEVICE);

    const reply = await command(op, roomId, "!help");
    expect(reply.getWireType()).toBe("m.room.encrypted");
    expect(String(reply.getContent().body)).toMatch(/sync/);
    botSentOnlyCiphertext(roomId);

    // A second device of the operator, logged in later: the bot shares the room key with it for its next reply.
    const op2 = await operatorDevice("OPDEV2");
    const second = await command(op, roomId, "!status");
    expect(second.getWireType()).toBe("m.room.encrypted");
    const onOp2 = op2.getRoom(roomId)?.findEventById(second.getId()!);
    const seen = onOp2 ?? (await new Promise<MatrixEvent>((resolve) => op2.on(RoomEvent.Timeline, (ev) => ev.getId() === second.getId() && resolve(ev))));
    await op2.decryptEventIfNeeded(seen);
    expect(seen.isDecryptionFailure()).toBe(false);
    expect(seen.getContent().body).toBe(second.getContent().body);
    botSentOnlyCiphertext(roomId);
  });

  it("after a restart the bot is the same device, with the same keys, and still reads and answers", async () => {
    const op = await operatorDevice("OPDEV3");
    const roomId = await encryptedRoom(op);
    const botJoined = waitForMembership(op, roomId, BOT, "join");
    handle = await startServe(await config(roomId));
    await botJoined;
    const before = (await op.getCrypto()!.getUserDeviceInfo([BOT], true)).get(BOT)!;
    expect([...before.keys()]).toEqual([BOT_DEVICE]);
    const keyBefore = before.get(BOT_DEVICE)!.getIdentityKey();
    expect((await command(op, roomId, "!help")).getWireType()).toBe("m.room.encrypted");

    await handle.stop();
    handle = await startServe(await config(roomId));
    const reply = await command(op, roomId, "!help");
    expect(reply.getWireType()).toBe("m.room.encrypted");
    const after = (await op.getCrypto()!.getUserDeviceInfo([BOT], true)).get(BOT)!;
    expect([...after.keys()]).toEqual([BOT_DEVICE]);
    expect(after.get(BOT_DEVICE)!.getIdentityKey()).toBe(keyBefore);
    botSentOnlyCiphertext(roomId);
  });

  it("a lost crypto store is named as such; crypto-reset and a new device's token start the bot as a new device", async () => {
    const op = await operatorDevice("OPDEV4");
    const roomId = await encryptedRoom(op);
    // A fresh data folder, the same access token (device): the homeserver already has that device's keys.
    await expect(startServe(await config(roomId, { dataDir: "./data-lost" }))).rejects.toThrow(
      new RegExp(`the store holds no end-to-end encryption keys, but the homeserver already has keys for the bot's device ${BOT_DEVICE}`),
    );
    // crypto-reset asks to be sure, then forgets the keys of the original folder.
    const cfgPath = join(dir, "config.yaml");
    const unsure = await runIn(dir, ["crypto-reset", "--config", cfgPath]);
    expect(unsure.code, unsure.err).toBe(4);
    expect(unsure.out + unsure.err).toMatch(/--yes/);
    await config(roomId);
    const reset = await runIn(dir, ["crypto-reset", "--yes", "--config", cfgPath]);
    expect(reset.code, reset.err).toBe(0);
    expect(reset.out).toMatch(/Deleted the end-to-end encryption state \(\d+ record\(s\)\)/);
    // A new login of the bot: a new device, which answers.
    const newToken = hs.registerUser(BOT, undefined, { deviceId: "MGSBOTDEVICE2" });
    const botJoined = waitForMembership(op, roomId, BOT, "join");
    handle = await startServe(await config(roomId, { token: newToken }));
    await botJoined;
    await waitForDevice(op, BOT, "MGSBOTDEVICE2");
    const reply = await command(op, roomId, "!help");
    expect(reply.getWireType()).toBe("m.room.encrypted");
    botSentOnlyCiphertext(roomId);
  });

  it("password login: one device across restarts; a revoked token means a new login with the same device and keys", async () => {
    const LOGIN_BOT = "@mgs-login-bot:example.org";
    hs.setPassword(LOGIN_BOT, "s3cret pass");
    const op = await operatorDevice("OPDEV5");
    const { room_id: roomId } = await op.createRoom({
      preset: "private_chat" as never,
      invite: [LOGIN_BOT],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    const cfg = { dataDir: "./data-login", password: "s3cret pass" };
    const joined = waitForMembership(op, roomId, LOGIN_BOT, "join");
    handle = await startServe(await config(roomId, cfg));
    await joined;
    expect(hs.loginCount()).toBe(1);
    const devices = async (): Promise<string[]> => [...((await op.getCrypto()!.getUserDeviceInfo([LOGIN_BOT], true)).get(LOGIN_BOT)?.keys() ?? [])];
    const first = await devices();
    expect(first).toHaveLength(1);
    const replyOf = async (): Promise<MatrixEvent> => {
      const { event_id } = await op.sendTextMessage(roomId, "!help");
      return waitForReply(op, LOGIN_BOT, roomId, event_id);
    };
    expect((await replyOf()).getWireType()).toBe("m.room.encrypted");

    // A restart reuses the saved session: no new login.
    await handle.stop();
    handle = await startServe(await config(roomId, cfg));
    expect(hs.loginCount()).toBe(1);
    expect((await replyOf()).getWireType()).toBe("m.room.encrypted");

    // The token stops working (an expiry, a logout elsewhere): the next start logs in again, as the same device.
    await handle.stop();
    for (const token of hs.tokensOf(LOGIN_BOT)) hs.revokeToken(token);
    handle = await startServe(await config(roomId, cfg));
    expect(hs.loginCount()).toBe(2);
    expect(await devices()).toEqual(first);
    expect((await replyOf()).getWireType()).toBe("m.room.encrypted");
    botSentOnlyCiphertext(roomId, LOGIN_BOT);
  });

  it("rotates the room key as the room's m.room.encryption says (rotation_period_msgs)", async () => {
    const op = await operatorDevice("OPDEV6");
    const { room_id: roomId } = await op.createRoom({
      preset: "private_chat" as never,
      invite: [BOT],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2", rotation_period_msgs: 2 } }],
    });
    const joined = waitForMembership(op, roomId, BOT, "join");
    // Its own device and store (the tests before it reset the shared one).
    handle = await startServe(await config(roomId, { dataDir: "./data-rotation", token: hs.registerUser(BOT, undefined, { deviceId: "MGSROTATION" }) }));
    await joined;
    for (let i = 0; i < 3; i++) expect((await command(op, roomId, "!status")).getWireType()).toBe("m.room.encrypted");
    const sessions = hs.messages(roomId, { sender: BOT, type: "m.room.encrypted" }).map((m) => String(m.content["session_id"]));
    // Replies and reactions alike count as messages: never more than two under one session.
    const counts = new Map<string, number>();
    for (const id of sessions) counts.set(id, (counts.get(id) ?? 0) + 1);
    expect(sessions.length).toBeGreaterThanOrEqual(3);
    expect(counts.size).toBeGreaterThanOrEqual(Math.ceil(sessions.length / 2));
    expect(Math.max(...counts.values())).toBeLessThanOrEqual(2);
  });

  it("an encrypted direct chat for token commands (tokens.directMessages) is answered encrypted", async () => {
    hs.setAdmin(BOT, true); // the Synapse token admin API needs a server admin
    const helper = await startDevice(hs, "@helper:example.org", "HELPERDEV");
    clients.push(helper);
    const op = await operatorDevice("OPDEV7");
    const mgmt = await encryptedRoom(op);
    const joined = waitForMembership(op, mgmt, BOT, "join");
    handle = await startServe(
      await config(mgmt, {
        dataDir: "./data-dm",
        token: hs.registerUser(BOT, undefined, { deviceId: "MGSDM" }),
        tokens: `tokens: { backend: synapse, allow: ["@helper:example.org"], directMessages: true }`,
      }),
    );
    await joined;
    // A direct chat as Element makes it: encrypted, is_direct.
    const { room_id: dm } = await helper.createRoom({
      preset: "trusted_private_chat" as never,
      is_direct: true,
      invite: [BOT],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await waitForMembership(helper, dm, BOT, "join");
    await waitForDevice(helper, BOT, "MGSDM");
    const reply = await command(helper, dm, "!token create 1 1d");
    expect(reply.getWireType()).toBe("m.room.encrypted");
    expect(String(reply.getContent().body)).toMatch(/^New registration token: \S+ — 1 use\(s\), expires /);
    botSentOnlyCiphertext(dm);
    hs.setAdmin(BOT, false);
  });
});
