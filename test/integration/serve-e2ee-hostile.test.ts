/**
 * An encrypted management room under bad input and failures: the real service in-process
 * against the test homeserver, the operator a matrix-js-sdk client with Rust crypto, hostile
 * events and to-device messages sent over plain HTTP with a member's access token.
 *
 * What is checked is the end state of the world: what the bot sent into the room (and whether
 * the operator's client can decrypt it), what is in the store, whether `serve` started and what
 * it said when it did not. Never which functions were called; nothing of ours is mocked.
 *
 * Each test has its own bot user, operator user and data folder (one homeserver for the file;
 * each data folder a copy of one empty migrated store), so that no device, key or room of one
 * test is seen by another. Waits are on readiness signals (SDK events, the homeserver's log and
 * sync state, waitUntil); the only timers are hang guards, so that a hang of the code under test
 * fails its test with a name instead of running into vitest's timeout.
 *
 * Not covered, and why: an `m.room.encrypted` event whose content is not a JSON object cannot be
 * sent (the client-server API takes an object body; Synapse answers 400), so no homeserver of
 * ours serves one; the fields inside the content are attacked instead. The test homeserver hands
 * out every pending to-device message in one sync (Synapse: at most 100), so the flood below
 * reaches the bot in fewer, larger answers than Synapse would give it.
 */
import { randomBytes } from "node:crypto";
import { cpSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { deserialize, serialize } from "node:v8";
import { join } from "node:path";
import type { MatrixClient, MatrixEvent } from "matrix-js-sdk";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { startServe, type ServeHandle } from "../../src/service/serve.ts";
import { openDatabase } from "../../src/store/database.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { runIn } from "../helpers/cli-world.ts";
import { quietSdkLogger, startDevice, waitForDecrypted, waitForDevice, waitForMembership, waitForReply } from "../helpers/js-sdk.ts";
import { waitUntil } from "../helpers/wait.ts";

const SERVER = "example.org";
const STORE_KEY = "correct horse battery staple";
const MEGOLM = "m.megolm.v1.aes-sha2";
const OLM = "m.olm.v1.curve25519-aes-sha2";
/** What the bot says about a message it gave up on (service/serve.ts). */
const couldNotDecrypt = (sender: string): string => `I could not decrypt a message from ${sender}, so I did not act on it. If it was a command, please send it again.`;
/** A guard against a hang of the code under test, not an expectation of how long it takes. */
const HANG_MS = 30_000;
/**
 * The same for a start that is to be refused: a refusal comes within a second or two (the store
 * opened, whoami, the crypto store read), so this is ample; it is shorter only to keep a hang of
 * the code under test from eating the file's time budget.
 */
const REFUSAL_MS = 6_000;

let root: string;
/** An empty, migrated data folder, copied into each world (creating a PGlite database takes seconds). */
let template: string;
let hs: FakeHomeserver;
let worlds = 0;
const handles: ServeHandle[] = [];
const clients: MatrixClient[] = [];

beforeAll(async () => {
  quietSdkLogger();
  root = await mkdtemp(join(tmpdir(), "mgs-serve-e2ee-hostile-"));
  template = join(root, "template-data");
  await (await openStore({ dataDir: template })).close();
  hs = await FakeHomeserver.start({ serverName: SERVER });
});

afterEach(async () => {
  for (const h of handles.splice(0)) await h.stop();
  for (const c of clients.splice(0)) c.stopClient();
});

afterAll(async () => {
  await hs.close();
  await rm(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------
// The world of one test.

interface World {
  readonly dir: string;
  readonly bot: string;
  readonly botDevice: string;
  readonly botToken: string;
  readonly op: string;
}

/** A copy of a stopped store's folder (synchronous: twice as fast as fs.promises.cp for PGlite's thousand files). */
function copyFolder(from: string, to: string): void {
  cpSync(from, to, { recursive: true });
}

async function newWorld(): Promise<World> {
  const n = ++worlds;
  const dir = join(root, `w${n}`);
  await mkdir(dir);
  await writeFile(join(dir, "directory.yaml"), "users: []\ngroups: []\n");
  copyFolder(template, join(dir, "data"));
  const bot = `@mgs-bot${n}:${SERVER}`;
  const botDevice = `MGSBOT${n}`;
  return { dir, bot, botDevice, botToken: hs.registerUser(bot, undefined, { deviceId: botDevice }), op: `@op${n}:${SERVER}` };
}

interface ConfigOptions {
  readonly storeKey?: string;
  readonly keyWaitMs?: number;
  readonly token?: string;
  readonly maxRetryWaitMs?: number;
}

async function configFor(w: World, managementRoom: string, o: ConfigOptions = {}): Promise<Config> {
  const path = join(w.dir, "config.yaml");
  const retryWait = o.maxRetryWaitMs === undefined ? "" : `, maxRetryWaitMs: ${o.maxRetryWaitMs}`;
  await writeFile(
    path,
    `homeserver: { url: ${hs.url}, accessToken: ${o.token ?? w.botToken}, maxRetries: 10${retryWait} }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping: { rooms: [] }
serve:
  managementRoom: "${managementRoom}"
  schedule: "0 0 1 1 *"
  allow: ["${w.op}"]
  shutdownTimeoutMs: 10000
  encryption: { storeKey: ${JSON.stringify(o.storeKey ?? STORE_KEY)}, keyWaitMs: ${o.keyWaitMs ?? 500} }
log: { level: ${process.env["MGS_TEST_LOG"] ?? "error"} }
`,
  );
  const r = loadConfig({ path, env: {}, cwd: w.dir });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
}

/** `p`, or a rejection naming `what` after `ms` (a hang of the code under test). */
function guard<T>(p: Promise<T>, what: string, ms = HANG_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([p, hang]).finally(() => clearTimeout(timer));
}

async function serve(config: Config): Promise<ServeHandle> {
  const h = await guard(startServe(config), "startServe");
  handles.push(h);
  return h;
}

async function stop(h: ServeHandle): Promise<void> {
  const at = handles.indexOf(h);
  if (at >= 0) handles.splice(at, 1);
  await h.stop();
}

/** startServe's rejection (an Error); fails the test when it starts after all (and stops it). */
async function startFails(config: Config): Promise<Error> {
  const outcome = await guard(
    startServe(config).then(
      (h) => {
        handles.push(h);
        return undefined;
      },
      (err: unknown) => err,
    ),
    "startServe (which should refuse to start)",
    REFUSAL_MS,
  );
  expect(outcome, "startServe should have refused to start").toBeInstanceOf(Error);
  return outcome as Error;
}

async function operatorDevice(userId: string, deviceId: string): Promise<MatrixClient> {
  const c = await startDevice(hs, userId, deviceId);
  clients.push(c);
  return c;
}

/** An encrypted room made by `op`'s client, `invite` invited (none: a room the bot is not in). */
async function encryptedRoom(op: MatrixClient, invite: string[]): Promise<string> {
  const { room_id } = await op.createRoom({
    preset: "private_chat" as never,
    invite,
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
  });
  return room_id;
}

interface Served {
  readonly w: World;
  readonly op: MatrixClient;
  readonly roomId: string;
  handle: ServeHandle;
}

/** A world with an encrypted management room, the operator's client in it and the bot serving. */
async function encryptedWorld(o: ConfigOptions = {}): Promise<Served> {
  const w = await newWorld();
  const op = await operatorDevice(w.op, "OPDEV1");
  const roomId = await encryptedRoom(op, [w.bot]);
  const botJoined = waitForMembership(op, roomId, w.bot, "join");
  const handle = await serve(await configFor(w, roomId, o));
  await botJoined;
  await waitForDevice(op, w.bot, w.botDevice);
  return { w, op, roomId, handle };
}

// ---------------------------------------------------------------------------------------
// Seeing what the bot sent.

/** Resolves with `eventId` in `roomId` as `client` sees it, once it is decrypted (or once it is clear it cannot be). */
async function seenBy(client: MatrixClient, roomId: string, eventId: string): Promise<MatrixEvent> {
  const ev = await waitUntil(`${client.getUserId()}/${client.getDeviceId()} has ${eventId}`, () => client.getRoom(roomId)?.findEventById(eventId));
  await client.decryptEventIfNeeded(ev);
  // A key that comes later (a to-device message in a later sync) makes the SDK decrypt it again.
  await waitUntil(
    `${client.getDeviceId()} decrypts ${eventId}`,
    () => !ev.isBeingDecrypted() && !ev.isDecryptionFailure(),
    () => `still: ${ev.decryptionFailureReason ?? "being decrypted"}`,
    { timeoutMs: 15_000 },
  ).catch(() => undefined);
  return ev;
}

/** Resolves with the first decrypted message from `bot` in `roomId` that replies to `eventId`. */
const botReplyTo = (client: MatrixClient, bot: string, roomId: string, eventId: string): Promise<MatrixEvent> => waitForReply(client, bot, roomId, eventId);

/** Sends `body` encrypted as `client` and waits for the bot's reply to it. */
async function command(s: Served, body: string, client = s.op): Promise<MatrixEvent> {
  const { event_id } = await client.sendTextMessage(s.roomId, body);
  return guard(botReplyTo(client, s.w.bot, s.roomId, event_id), `the bot's reply to ${body}`);
}

/** The text of every message the bot sent into the room (after `since`), as the operator's client decrypts it. */
async function botTexts(s: Served, since?: string, client = s.op): Promise<string[]> {
  const sent = hs.messages(s.roomId, { sender: s.w.bot, type: "m.room.encrypted", ...(since !== undefined ? { since } : {}) });
  const out: string[] = [];
  for (const m of sent) {
    const ev = await seenBy(client, s.roomId, m.eventId);
    if (ev.isDecryptionFailure()) out.push(`<undecryptable: ${ev.decryptionFailureReason}>`);
    else if (ev.getType() === "m.room.message") out.push(String(ev.getContent().body));
  }
  return out;
}

/** Nothing the bot sent into the encrypted room is plaintext (redactions aside). */
function botSentOnlyCiphertext(s: Served): void {
  const plain = hs.messages(s.roomId, { sender: s.w.bot }).filter((m) => m.type !== "m.room.encrypted" && m.type !== "m.room.redaction");
  expect(plain, "the bot sent plaintext into an encrypted room").toEqual([]);
}

// ---------------------------------------------------------------------------------------
// Hostile input over plain HTTP.

let txns = 0;

/** `PUT /rooms/{room}/send/{type}/{txn}` with `token`; the event id. */
async function putEvent(token: string, roomId: string, type: string, content: unknown): Promise<string> {
  const res = await fetch(`${hs.url}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/${encodeURIComponent(type)}/hostile.${++txns}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(content),
  });
  const body = (await res.json()) as { event_id?: string };
  if (res.status !== 200 || body.event_id === undefined) throw new Error(`PUT /send ${type}: ${res.status} ${JSON.stringify(body)}`);
  return body.event_id;
}

/** `PUT /sendToDevice/{type}/{txn}` with `token`. */
async function putToDevice(token: string, type: string, messages: Record<string, Record<string, unknown>>): Promise<void> {
  const res = await fetch(`${hs.url}/_matrix/client/v3/sendToDevice/${encodeURIComponent(type)}/flood.${++txns}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ messages }),
  });
  if (res.status !== 200) throw new Error(`PUT /sendToDevice ${type}: ${res.status} ${await res.text()}`);
}

const b64 = (n: number): string => randomBytes(n).toString("base64").replace(/=+$/, "");

/**
 * Real Megolm ciphertexts the bot never got the key of: `op` writes `bodies` into an encrypted
 * room of its own that the bot is not in. Each is the wire content of one message (its
 * sender_key and device_id filled in when the client leaves them out, as newer clients do).
 */
async function foreignCiphertexts(op: MatrixClient, bodies: string[]): Promise<Record<string, unknown>[]> {
  const elsewhere = await encryptedRoom(op, []);
  // The client encrypts once its sync has shown it the room's m.room.encryption.
  await waitUntil("the operator's client knows its new room is encrypted", () => op.getCrypto()!.isEncryptionEnabledInRoom(elsewhere));
  const ids: string[] = [];
  for (const body of bodies) ids.push((await op.sendTextMessage(elsewhere, body)).event_id);
  const own = op.getCrypto()!;
  const keys = await own.getOwnDeviceKeys();
  return ids.map((id) => {
    const m = hs.messages(elsewhere).find((e) => e.eventId === id)!;
    expect(m.type).toBe("m.room.encrypted");
    return { sender_key: keys.curve25519, device_id: op.getDeviceId(), ...m.content };
  });
}

/**
 * A crypto record with its encrypted payload altered and its framing intact: the library's
 * store cipher keeps `{ version, ciphertext, nonce }` objects (or, for its own key, bytes).
 */
function alterCiphertext(value: Uint8Array): Uint8Array {
  const v: unknown = deserialize(value);
  const flip = (text: string): string => {
    const at = Math.floor(text.length / 2);
    return text.slice(0, at) + (text[at] === "A" ? "B" : "A") + text.slice(at + 1);
  };
  if (v !== null && typeof v === "object" && typeof (v as { ciphertext?: unknown }).ciphertext === "string") {
    const o = v as { ciphertext: string };
    return new Uint8Array(serialize({ ...o, ciphertext: flip(o.ciphertext) }));
  }
  if (Array.isArray(v) && v.every((x): x is number => typeof x === "number")) {
    const bytes = [...v];
    const at = Math.floor(bytes.length / 2);
    bytes[at] = bytes[at]! ^ 0xff;
    return new Uint8Array(serialize(bytes));
  }
  if (v instanceof Uint8Array) {
    const bytes = Uint8Array.from(v);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = bytes[at]! ^ 0xff;
    return new Uint8Array(serialize(bytes));
  }
  return value;
}

/** Another member of the management room (no crypto of her own, not on the allow list): her id and access token. */
async function secondMember(s: Served, name: string): Promise<[string, string]> {
  const user = `@${name}-${s.w.bot.slice(1, s.w.bot.indexOf(":"))}:${SERVER}`;
  const token = hs.registerUser(user, undefined, { deviceId: `${name.toUpperCase()}DEV` });
  await s.op.invite(s.roomId, user);
  const joined = waitForMembership(s.op, s.roomId, user, "join");
  const res = await fetch(`${hs.url}/_matrix/client/v3/rooms/${encodeURIComponent(s.roomId)}/join`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  });
  expect(res.status).toBe(200);
  await joined;
  return [user, token];
}

function accessToken(c: MatrixClient): string {
  const t = c.getAccessToken();
  if (t === null) throw new Error("no access token");
  return t;
}

/** Runs recorded in the world's store (serve must be stopped: PGlite is one process's). */
async function runsIn(w: World): Promise<number> {
  const store = await openStore({ dataDir: join(w.dir, "data") });
  try {
    return (await store.listRuns(100)).length;
  } finally {
    await store.close();
  }
}

/**
 * Every `matrix-group-sync <command>` a message tells the operator to run is a command the CLI
 * has: `<command> --help` does not end in a usage error.
 */
async function suggestedCommandsExist(w: World, message: string): Promise<void> {
  const suggested = [...message.matchAll(/`matrix-group-sync ([a-z][a-z-]*)/g)].map((m) => m[1]!);
  for (const name of suggested) {
    const r = await runIn(w.dir, [name, "--help"]);
    expect(r.code, `the message tells the operator to run \`matrix-group-sync ${name}\`, which the CLI does not have:\n${r.err}${r.out}`).toBe(0);
  }
}

// =======================================================================================

describe("messages the bot cannot decrypt", () => {
  it("a message whose room key never comes: one encrypted notice after keyWaitMs, nothing executed, the next command works", async () => {
    const s = await encryptedWorld({ keyWaitMs: 500 });
    const [foreign] = await foreignCiphertexts(s.op, ["!sync"]);
    const sentAt = Date.now();
    const badId = await putEvent(accessToken(s.op), s.roomId, "m.room.encrypted", foreign);

    const notice = await guard(botReplyTo(s.op, s.w.bot, s.roomId, badId), "the could-not-decrypt notice");
    expect(Date.now() - sentAt, "the key is waited for keyWaitMs before the message is given up").toBeGreaterThanOrEqual(500);
    expect(notice.getWireType()).toBe("m.room.encrypted");
    expect(String(notice.getContent().body)).toBe(couldNotDecrypt(s.w.op));

    const reply = await command(s, "!help");
    expect(reply.getWireType()).toBe("m.room.encrypted");
    expect(String(reply.getContent().body)).toMatch(/sync/);
    // Between the bad message and the command: the notice only (nothing ran, nothing else was said).
    const texts = await botTexts(s, badId);
    expect(texts).toHaveLength(2);
    expect(texts[0]).toBe(couldNotDecrypt(s.w.op));
    botSentOnlyCiphertext(s);

    await stop(s.handle);
    expect(await runsIn(s.w), "the undecryptable !sync must not have run").toBe(0);
  });

  it("two undecryptable messages in quick succession give one notice per sender; another sender gets their own", async () => {
    const s = await encryptedWorld({ keyWaitMs: 500 });
    const [alice, aliceToken] = await secondMember(s, "alice");

    const foreign = await foreignCiphertexts(s.op, ["!sync", "!status", "!help"]);
    const first = await putEvent(accessToken(s.op), s.roomId, "m.room.encrypted", foreign[0]);
    await putEvent(accessToken(s.op), s.roomId, "m.room.encrypted", foreign[1]);
    // Alice's comes last: when her notice is out, both of the operator's have been given up.
    const aliceBad = await putEvent(aliceToken, s.roomId, "m.room.encrypted", foreign[2]);
    await guard(botReplyTo(s.op, s.w.bot, s.roomId, aliceBad), "the notice to alice");
    await command(s, "!help");

    const texts = await botTexts(s, first);
    expect(texts.filter((t) => t === couldNotDecrypt(s.w.op))).toHaveLength(1);
    expect(texts.filter((t) => t === couldNotDecrypt(alice))).toHaveLength(1);
    expect(texts.filter((t) => /could not decrypt/.test(t))).toHaveLength(2);
    botSentOnlyCiphertext(s);
  });
});

describe("malformed encrypted events", () => {
  it("are given up without a crash: one notice, other commands keep working, nothing plaintext from the bot", async () => {
    const s = await encryptedWorld({ keyWaitMs: 500 });
    const opToken = accessToken(s.op);
    const { event_id: helpId } = await s.op.sendTextMessage(s.roomId, "!help");
    await guard(botReplyTo(s.op, s.w.bot, s.roomId, helpId), "the reply to !help");
    const real = hs.messages(s.roomId).find((m) => m.eventId === helpId)!.content;
    const { curve25519 } = await s.op.getCrypto()!.getOwnDeviceKeys();
    const megolm = { algorithm: MEGOLM, sender_key: curve25519, device_id: s.op.getDeviceId(), session_id: b64(32) };
    const ciphertext = String(real["ciphertext"]);
    const tampered = ciphertext.slice(0, 20) + (ciphertext[20] === "A" ? "B" : "A") + ciphertext.slice(21);

    const malformed: Record<string, unknown>[] = [
      { ...megolm }, // no ciphertext
      {},
      { ciphertext: b64(64), session_id: b64(32) }, // no algorithm
      { ...megolm, algorithm: OLM, ciphertext: { [curve25519]: { type: 0, body: b64(100) } } }, // Olm in a room
      { ...megolm, algorithm: "org.example.rot13", ciphertext: b64(64) },
      { algorithm: 42, ciphertext: 12345, session_id: ["x"], sender_key: { a: 1 }, device_id: null },
      { ...megolm, ciphertext: { nested: [1, 2, 3] } },
      { ...megolm, ciphertext: "!!! not base64 at all !!!" },
      { ...megolm, ciphertext: b64(200) }, // base64 of nothing Megolm can parse
      { ...real, ciphertext: tampered }, // the session the bot has, one character changed
      { ...megolm, ciphertext: b64(44_000), junk: "x".repeat(1000) }, // near the event size limit
    ];
    const badIds: string[] = [];
    for (const content of malformed) badIds.push(await putEvent(opToken, s.roomId, "m.room.encrypted", content));
    const firstNotice = await guard(Promise.race(badIds.map((id) => botReplyTo(s.op, s.w.bot, s.roomId, id))), "a could-not-decrypt notice");
    expect(String(firstNotice.getContent().body)).toBe(couldNotDecrypt(s.w.op));

    const after = await command(s, "!status");
    expect(after.getWireType()).toBe("m.room.encrypted");
    expect(String(after.getContent().body)).not.toMatch(/could not decrypt/);
    const again = await command(s, "!help");
    expect(String(again.getContent().body)).toMatch(/sync/);

    const texts = await botTexts(s, badIds[0]);
    expect(texts.filter((t) => /could not decrypt/.test(t)), "one notice per sender in the window").toEqual([couldNotDecrypt(s.w.op)]);
    expect(texts.filter((t) => t.startsWith("<undecryptable"))).toEqual([]);
    botSentOnlyCiphertext(s);
  });

  it("an operator's ciphertext replayed by another member is not heard as that member's message", async () => {
    const s = await encryptedWorld({ keyWaitMs: 500 });
    const [alice, aliceToken] = await secondMember(s, "alice");

    const { event_id: helpId } = await s.op.sendTextMessage(s.roomId, "!help");
    await guard(botReplyTo(s.op, s.w.bot, s.roomId, helpId), "the reply to !help");
    const real = hs.messages(s.roomId).find((m) => m.eventId === helpId)!.content;
    const replayId = await putEvent(aliceToken, s.roomId, "m.room.encrypted", real);
    const answer = await guard(botReplyTo(s.op, s.w.bot, s.roomId, replayId), "the bot's answer to the replay");
    expect(String(answer.getContent().body), "the Megolm session is the operator's, the event alice's: not to be read as alice's").toBe(couldNotDecrypt(alice));
    botSentOnlyCiphertext(s);
  });
});

describe("a to-device flood", () => {
  it("many junk to-device messages for the bot's device: it keeps answering encrypted commands", async () => {
    const s = await encryptedWorld();
    expect((await command(s, "!help")).getWireType()).toBe("m.room.encrypted");
    const botKey = (await s.op.getCrypto()!.getUserDeviceInfo([s.w.bot])).get(s.w.bot)!.get(s.w.botDevice)!.getIdentityKey()!;
    const { curve25519 } = await s.op.getCrypto()!.getOwnDeviceKeys();
    const stranger = hs.registerUser(`@stranger-${s.w.bot.slice(1, s.w.bot.indexOf(":"))}:${SERVER}`, undefined, { deviceId: "STRANGER" });
    const opToken = accessToken(s.op);
    const junk: [string, () => Record<string, unknown>][] = [
      ["m.room.encrypted", () => ({ algorithm: OLM, sender_key: curve25519, ciphertext: { [botKey]: { type: 0, body: b64(300) } } })],
      ["m.room.encrypted", () => ({ algorithm: OLM, sender_key: curve25519, ciphertext: { [botKey]: { type: 1, body: b64(120) } } })],
      ["m.room.encrypted", () => ({ algorithm: OLM, sender_key: b64(32), ciphertext: "junk" })],
      ["m.room.encrypted", () => ({ algorithm: MEGOLM, ciphertext: b64(50), session_id: b64(32) })],
      ["m.room_key", () => ({ algorithm: MEGOLM, room_id: s.roomId, session_id: b64(32), session_key: b64(200) })],
      ["m.forwarded_room_key", () => ({ algorithm: MEGOLM, room_id: s.roomId, session_id: b64(32), session_key: b64(200), sender_key: curve25519 })],
      ["m.room_key_request", () => ({ action: "request", requesting_device_id: "OPDEV1", request_id: b64(8), body: { algorithm: MEGOLM, room_id: s.roomId, session_id: b64(32), sender_key: botKey } })],
      ["m.room_key.withheld", () => ({ algorithm: MEGOLM, room_id: s.roomId, session_id: b64(32), sender_key: curve25519, code: "m.unverified" })],
      ["m.key.verification.request", () => ({ from_device: "OPDEV1", methods: ["m.sas.v1"], transaction_id: b64(8), timestamp: Date.now() })],
      ["m.secret.request", () => ({ action: "request", name: "m.megolm_backup.v1", requesting_device_id: "OPDEV1", request_id: b64(8) })],
      ["m.dummy", () => ({})],
      ["org.example.junk", () => ({ blob: b64(2000), nested: { a: [1, { b: null }] } })],
    ];
    const total = 1_200;
    const sends: (() => Promise<void>)[] = [];
    for (let i = 0; i < total; i++) {
      const [type, content] = junk[i % junk.length]!;
      const token = i % 3 === 0 ? stranger : opToken;
      sends.push(() => putToDevice(token, type, { [s.w.bot]: { [i % 5 === 0 ? "*" : s.w.botDevice]: content() } }));
    }
    for (let i = 0; i < sends.length; i += 100) await Promise.all(sends.slice(i, i + 100).map((f) => f()));
    // The bot has taken in everything sent to it: its long-poll is pending with nothing to deliver.
    await hs.waitForSyncIdle(s.w.bot, HANG_MS);

    const reply = await command(s, "!status");
    expect(reply.getWireType()).toBe("m.room.encrypted");
    // A second device of the operator, new after the flood, gets the bot's room key too.
    const op2 = await operatorDevice(s.w.op, "OPDEV2");
    await waitForDevice(s.op, s.w.op, "OPDEV2");
    const second = await command(s, "!help");
    expect((await seenBy(op2, s.roomId, second.getId()!)).isDecryptionFailure()).toBe(false);
    botSentOnlyCiphertext(s);
  });
});

describe("the homeserver refuses the bot's key traffic", () => {
  /**
   * A served world where the operator has a second device that already has the operator's own
   * room key (so the operator's client needs no claim or to-device message from now on) and
   * that the bot has not sent its room key to yet: the bot's next reply needs a key claim and a
   * to-device message, and nobody else's does.
   */
  async function withSecondDevice(): Promise<Served & { op2: MatrixClient }> {
    const s = await encryptedWorld({ maxRetryWaitMs: 1_000 });
    expect((await command(s, "!help")).getWireType()).toBe("m.room.encrypted");
    const op2 = await operatorDevice(s.w.op, "OPDEV2");
    await waitForDevice(s.op, s.w.op, "OPDEV2");
    await s.op.sendTextMessage(s.roomId, "hello from the first device");
    await guard(waitForDecrypted(op2, s.roomId, "hello from the first device"), "the second device reads the first one's message");
    return { ...s, op2 };
  }

  const since = (t: number) => hs.requestLog().filter((e) => e.receivedAt >= t);

  it("a key claim refused (429 beyond homeserver.maxRetryWaitMs): no plaintext; once it clears, the reply reaches the new device", async () => {
    const s = await withSecondDevice();
    const armed = Date.now();
    hs.rateLimit({ count: 1, retryAfterMs: 120_000, endpoints: ["keys_claim"] });
    const first = await command(s, "!help");
    expect(first.getWireType()).toBe("m.room.encrypted");
    expect(since(armed).filter((e) => e.kind === "keys_claim").map((e) => e.status)[0], "the bot's claim was refused").toBe(429);

    const second = await command(s, "!status");
    expect(second.getWireType()).toBe("m.room.encrypted");
    const onOp2 = await seenBy(s.op2, s.roomId, second.getId()!);
    expect(onOp2.isDecryptionFailure(), `the second device cannot read the reply: ${onOp2.decryptionFailureReason}`).toBe(false);
    expect(onOp2.getContent().body).toBe(second.getContent().body);
    botSentOnlyCiphertext(s);
  });

  it("a to-device message refused (429 beyond homeserver.maxRetryWaitMs): no plaintext reply; once it clears, a command is answered encrypted", async () => {
    const s = await withSecondDevice();
    const armed = Date.now();
    hs.rateLimit({ count: 1, retryAfterMs: 120_000, endpoints: ["send_to_device"] });
    const { event_id: refusedId } = await s.op.sendTextMessage(s.roomId, "!help");
    await waitUntil("the bot's room key share was refused", () => since(armed).some((e) => e.kind === "send_to_device" && e.status === 429));

    const after = await command(s, "!status");
    expect(after.getWireType()).toBe("m.room.encrypted");
    const onOp2 = await seenBy(s.op2, s.roomId, after.getId()!);
    expect(onOp2.isDecryptionFailure(), `the second device cannot read the reply: ${onOp2.decryptionFailureReason}`).toBe(false);
    // The reply to the refused command, if any, is encrypted like everything else.
    for (const m of hs.messages(s.roomId, { sender: s.w.bot, since: refusedId })) expect(m.type).toBe("m.room.encrypted");
    botSentOnlyCiphertext(s);
  });
});

describe("crypto state problems at start", () => {
  /** A world whose bot has served once (keys made, stored, an Olm session with the operator) and is stopped. */
  async function servedOnce(): Promise<Served & { identity: string }> {
    const s = await encryptedWorld();
    expect((await command(s, "!help")).getWireType()).toBe("m.room.encrypted");
    const identity = (await s.op.getCrypto()!.getUserDeviceInfo([s.w.bot], true)).get(s.w.bot)!.get(s.w.botDevice)!.getIdentityKey()!;
    await stop(s.handle);
    return { ...s, identity };
  }

  /** After a refused start: no sync loop of the bot is left, and it sent nothing. */
  function leftNothingRunning(s: Served, sentBefore: number): void {
    expect(hs.pendingLongPolls(s.w.bot)).toBe(0);
    expect(hs.messages(s.roomId, { sender: s.w.bot })).toHaveLength(sentBefore);
  }

  /** Starts again with the right key and token: the same device, with the same identity key, answers. */
  async function startsAsBefore(s: Served & { identity: string }): Promise<void> {
    s.handle = await serve(await configFor(s.w, s.roomId));
    const reply = await command(s, "!help");
    expect(reply.getWireType()).toBe("m.room.encrypted");
    const devices = (await s.op.getCrypto()!.getUserDeviceInfo([s.w.bot], true)).get(s.w.bot)!;
    expect(devices.get(s.w.botDevice)?.getIdentityKey()).toBe(s.identity);
    botSentOnlyCiphertext(s);
  }

  it("a wrong serve.encryption.storeKey: serve refuses to start, naming the setting; the right key still opens the keys", async () => {
    const s = await servedOnce();
    const sent = hs.messages(s.roomId, { sender: s.w.bot }).length;
    const err = await startFails(await configFor(s.w, s.roomId, { storeKey: "the wrong key" }));
    expect(err.message).toMatch(/serve\.encryption\.storeKey/);
    expect(err.message).not.toMatch(/another device/);
    leftNothingRunning(s, sent);
    await startsAsBefore(s);
    await suggestedCommandsExist(s.w, err.message);
  });

  it("corrupt rows in crypto_records: serve refuses to start with a clear error, whatever the corruption; the process lives on", async () => {
    // (A process that died would end this test file; the hang guard turns a start that never ends into a failure.)
    const s = await servedOnce();
    const sent = hs.messages(s.roomId, { sender: s.w.bot }).length;
    const corruptions: [string, (value: Uint8Array) => Uint8Array][] = [
      ["bytes that are no structured clone", () => Buffer.from("this is not a record")],
      ["a structured clone of the wrong shape", () => new Uint8Array(serialize("junk"))],
      ["the ciphertext inside each record altered (bit rot)", alterCiphertext],
    ];
    // Each corruption in a copy of the data folder, tried at once: a start that hangs keeps its copy locked, not the others.
    const outcomes = await Promise.all(
      corruptions.map(async ([what, corrupt], i) => {
        const copy: World = { ...s.w, dir: join(s.w.dir, `corrupt${i}`) };
        await mkdir(copy.dir);
        copyFolder(join(s.w.dir, "directory.yaml"), join(copy.dir, "directory.yaml"));
        copyFolder(join(s.w.dir, "data"), join(copy.dir, "data"));
        const db = await openDatabase({ dataDir: join(copy.dir, "data") });
        try {
          const rows = await db.db.selectFrom("crypto_records").selectAll().where("owner", "=", s.w.bot).execute();
          expect(rows.length).toBeGreaterThan(0);
          for (const r of rows) {
            await db.db
              .updateTable("crypto_records")
              .set({ value: Buffer.from(corrupt(r.value)) })
              .where("owner", "=", r.owner)
              .where("database", "=", r.database)
              .where("store", "=", r.store)
              .where("key", "=", Buffer.from(r.key))
              .execute();
          }
        } finally {
          await db.close();
        }
        const outcome = await startFails(await configFor(copy, s.roomId)).then(
          (err) => err.message,
          (err: unknown) => `NOT REFUSED CLEANLY: ${err instanceof Error ? err.message : String(err)}`,
        );
        return `${what}: ${outcome}`;
      }),
    );
    for (const outcome of outcomes) expect.soft(outcome).toMatch(/^[^:]+: (cannot load|cannot open|cannot start)[^]*end-to-end encryption/);
    leftNothingRunning(s, sent);
  });

  it("the access token now belongs to another device than the stored keys: a clear error saying what to do, and doing it works", async () => {
    const s = await servedOnce();
    const sent = hs.messages(s.roomId, { sender: s.w.bot }).length;
    const otherToken = hs.registerUser(s.w.bot, undefined, { deviceId: "OTHERDEVICE" });
    const err = await startFails(await configFor(s.w, s.roomId, { token: otherToken }));
    expect(err.message).toMatch(/OTHERDEVICE/);
    expect(err.message, "names the device the keys belong to").toContain(s.w.botDevice);
    leftNothingRunning(s, sent);
    // Advice one: the token of the device the keys belong to.
    await startsAsBefore(s);
    await stop(s.handle);

    // Advice two: the command that starts over as a new device, run as the message says, with the new token's config.
    const reset = /`matrix-group-sync ([^`]+)`/.exec(err.message)?.[1];
    expect(reset, "the message names a command that starts over as a new device").toBeDefined();
    await configFor(s.w, s.roomId, { token: otherToken });
    const ran = await runIn(s.w.dir, [...reset!.split(" "), "--config", join(s.w.dir, "config.yaml")]);
    expect(ran.code, `\`matrix-group-sync ${reset}\`, as the message says to run it:\n${ran.err}${ran.out}`).toBe(0);
    const handle = await serve(await configFor(s.w, s.roomId, { token: otherToken }));
    const fresh: Served = { ...s, handle };
    await waitForDevice(s.op, s.w.bot, "OTHERDEVICE");
    const reply = await command(fresh, "!help");
    expect(reply.getWireType()).toBe("m.room.encrypted");
    botSentOnlyCiphertext(fresh);
  });
});

describe("an unencrypted management room", () => {
  it("with serve.encryption configured, replies are plain m.room.message as before; once the room turns encryption on, they are encrypted", async () => {
    const w = await newWorld();
    const op = await operatorDevice(w.op, "OPDEV1");
    const { room_id: roomId } = await op.createRoom({ preset: "private_chat" as never, invite: [w.bot] });
    const botJoined = waitForMembership(op, roomId, w.bot, "join");
    const handle = await serve(await configFor(w, roomId));
    await botJoined;
    const s: Served = { w, op, roomId, handle };

    const reply = await command(s, "!help");
    expect(reply.getWireType()).toBe("m.room.message");
    expect(String(reply.getContent().body)).toMatch(/sync/);
    expect(hs.messages(roomId, { sender: w.bot }).map((m) => m.type)).not.toContain("m.room.encrypted");

    await op.sendStateEvent(roomId, "m.room.encryption" as never, { algorithm: MEGOLM } as never, "");
    await waitUntil("the operator's client knows the room is encrypted now", () => op.getCrypto()!.isEncryptionEnabledInRoom(roomId));
    const since = hs.messages(roomId).at(-1)!.eventId;
    const encrypted = await command(s, "!status");
    expect(encrypted.getWireType()).toBe("m.room.encrypted");
    expect(hs.messages(roomId, { sender: w.bot, since }).filter((m) => m.type !== "m.room.encrypted" && m.type !== "m.room.redaction")).toEqual([]);
  });
});
