/**
 * End-to-end encryption through the test homeserver, with two real matrix-js-sdk clients and the
 * Rust crypto (matrix-sdk-crypto-wasm, in memory): device keys, one-time key claims, to-device room
 * keys, device lists, encrypted rooms and events. Every wait is on an SDK event, never a sleep.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { MatrixClient } from "matrix-js-sdk";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { quietSdkLogger, startDevice as startSdkDevice, waitForDecrypted, waitForDevice, waitForInvite, waitForMembership } from "../helpers/js-sdk.ts";

const ALICE = "@alice:example.org";
const BOB = "@bob:example.org";

let hs: FakeHomeserver;
const clients: MatrixClient[] = [];

beforeEach(async () => {
  quietSdkLogger();
  hs = await FakeHomeserver.start();
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.stopClient();
  await hs.close();
});

/** A new device of `userId`, stopped after the test. */
async function startDevice(userId: string, deviceId: string): Promise<MatrixClient> {
  const client = await startSdkDevice(hs, userId, deviceId);
  clients.push(client);
  return client;
}

describe("end-to-end encryption through the test homeserver (matrix-js-sdk + Rust crypto)", () => {
  it("a message sent into an encrypted room arrives as m.room.encrypted and decrypts; a device added later gets the keys of later messages", async () => {
    const alice = await startDevice(ALICE, "ALICEDEV");
    const bob = await startDevice(BOB, "BOBDEV1");

    const invited = waitForInvite(bob);
    const { room_id: roomId } = await alice.createRoom({
      preset: "private_chat" as never,
      invite: [BOB],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    expect(await invited).toBe(roomId);
    const bobJoinSeen = waitForMembership(alice, roomId, BOB, "join");
    await bob.joinRoom(roomId);
    await bobJoinSeen;
    expect(await alice.getCrypto()!.isEncryptionEnabledInRoom(roomId)).toBe(true);

    const first = waitForDecrypted(bob, roomId, "hello, Bob");
    const { event_id: firstId } = await alice.sendTextMessage(roomId, "hello, Bob");
    const got = await first;
    expect(got.getId()).toBe(firstId);
    expect(got.getWireType()).toBe("m.room.encrypted");
    expect(got.getContent()).toMatchObject({ msgtype: "m.text", body: "hello, Bob" });
    // On the server, only ciphertext.
    const stored = hs.messages(roomId, { type: "m.room.encrypted" });
    expect(stored.map((m) => m.eventId)).toEqual([firstId]);
    expect(JSON.stringify(stored[0]!.content)).not.toContain("hello");

    // Bob logs in on a second device: Alice learns of it through device_lists and /keys/query.
    const aliceKnowsBob2 = waitForDevice(alice, BOB, "BOBDEV2");
    const bob2 = await startDevice(BOB, "BOBDEV2");
    await aliceKnowsBob2;
    // The new device was not there when the first message's key was shared (and there is no key backup).
    const earlier = bob2.getRoom(roomId)!.findEventById(firstId)!;
    await bob2.decryptEventIfNeeded(earlier);
    expect(earlier.isDecryptionFailure()).toBe(true);

    const onBob1 = waitForDecrypted(bob, roomId, "second message");
    const onBob2 = waitForDecrypted(bob2, roomId, "second message");
    const { event_id: secondId } = await alice.sendTextMessage(roomId, "second message");
    expect((await onBob2).getId()).toBe(secondId);
    expect((await onBob1).getId()).toBe(secondId);
    expect(hs.messages(roomId, { type: "m.room.message" })).toEqual([]);
  });
});

describe("the test homeserver's key and to-device endpoints, over plain HTTP", () => {
  interface Answer {
    status: number;
    body: Record<string, unknown>;
  }
  async function call(token: string, method: string, path: string, body?: unknown): Promise<Answer> {
    const res = await fetch(`${hs.url}/_matrix/client/v3${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }
  const deviceKeys = (user: string, device: string, ed: string): Record<string, unknown> => ({
    user_id: user,
    device_id: device,
    algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
    keys: { [`curve25519:${device}`]: `cu${ed}`, [`ed25519:${device}`]: ed },
    signatures: { [user]: { [`ed25519:${device}`]: "sig" } },
  });
  const signed = (key: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ key, signatures: { [BOB]: { "ed25519:B1": "s" } }, ...extra });

  it("keys/upload checks the body as Synapse does; claims take one-time keys, then the fallback key", async () => {
    const alice = hs.registerUser(ALICE, undefined, { deviceId: "A1" });
    const bob = hs.registerUser(BOB, undefined, { deviceId: "B1" });
    expect(await call(bob, "POST", "/keys/upload", { device_keys: deviceKeys(ALICE, "B1", "x") })).toEqual({
      status: 400,
      body: { errcode: "M_BAD_JSON", error: "Provided `user_id` in `device_keys` does not match that of the authenticated user" },
    });
    const missing = await call(bob, "POST", "/keys/upload", { device_keys: { ...deviceKeys(BOB, "B1", "x"), algorithms: undefined } });
    expect(missing.status).toBe(400);
    expect(missing.body.errcode).toBe("M_MISSING_PARAM");
    expect(missing.body.error).toContain("device_keys.algorithms\n  Field required");
    expect((await call(bob, "POST", "/keys/upload", { one_time_keys: { nocolon: "k" } })).body).toEqual({
      errcode: "M_BAD_JSON",
      error: `Invalid one_time_keys key 'nocolon'. Expected "<algorithm>:<device_id>".`,
    });

    const up = await call(bob, "POST", "/keys/upload", {
      device_keys: deviceKeys(BOB, "B1", "edB1"),
      one_time_keys: { "signed_curve25519:AAAA": signed("k1"), "signed_curve25519:AAAB": signed("k2") },
      fallback_keys: { "signed_curve25519:AAAC": signed("fb", { fallback: true }) },
    });
    expect(up).toEqual({ status: 200, body: { one_time_key_counts: { signed_curve25519: 2 } } });
    // The same key again (other signatures) is accepted; another key under a held id is not.
    expect((await call(bob, "POST", "/keys/upload", { one_time_keys: { "signed_curve25519:AAAA": { ...signed("k1"), signatures: {} } } })).status).toBe(200);
    const clash = await call(bob, "POST", "/keys/upload", { one_time_keys: { "signed_curve25519:AAAA": signed("other") } });
    expect(clash.status).toBe(400);
    expect(clash.body.errcode).toBe("M_UNKNOWN");
    expect(clash.body.error).toMatch(/^One time key signed_curve25519:AAAA already exists\. Old key: /);

    const query = await call(alice, "POST", "/keys/query", { device_keys: { [BOB]: [], "@nobody:example.org": [] } });
    expect(query.body).toEqual({
      device_keys: { [BOB]: { B1: { ...deviceKeys(BOB, "B1", "edB1"), unsigned: {} } }, "@nobody:example.org": {} },
      failures: {},
      master_keys: {},
      self_signing_keys: {},
      user_signing_keys: {},
    });
    expect((await call(alice, "POST", "/keys/query", { device_keys: { [BOB]: "B1" } })).body).toEqual({
      errcode: "M_BAD_JSON",
      error: "'device_keys' values must be a list of strings",
    });

    const claim = async (): Promise<unknown> =>
      (await call(alice, "POST", "/keys/claim", { one_time_keys: { [BOB]: { B1: "signed_curve25519", NOPE: "signed_curve25519" } } })).body;
    expect(await claim()).toEqual({ one_time_keys: { [BOB]: { B1: { "signed_curve25519:AAAA": signed("k1") } } }, failures: {} });
    expect(await claim()).toEqual({ one_time_keys: { [BOB]: { B1: { "signed_curve25519:AAAB": signed("k2") } } }, failures: {} });
    const fallback = { one_time_keys: { [BOB]: { B1: { "signed_curve25519:AAAC": signed("fb", { fallback: true }) } } }, failures: {} };
    expect(await claim()).toEqual(fallback);
    expect(await claim()).toEqual(fallback);
    const sync = (await call(bob, "GET", "/sync?timeout=0")).body;
    expect(sync.device_one_time_keys_count).toEqual({ signed_curve25519: 0 });
    expect(sync.device_unused_fallback_key_types).toEqual([]);
  });

  it("to-device messages: idempotent per transaction, `*` reaches every device, kept until a later since passes them", async () => {
    const alice = hs.registerUser(ALICE, undefined, { deviceId: "A1" });
    const bob1 = hs.registerUser(BOB, undefined, { deviceId: "B1" });
    const bob2 = hs.registerUser(BOB, undefined, { deviceId: "B2" });
    expect((await call(alice, "PUT", "/sendToDevice/m.test/t1", {})).body).toEqual({ errcode: "M_MISSING_PARAM", error: "Missing params: ['messages']" });
    const start = (await call(bob1, "GET", "/sync?timeout=0")).body.next_batch as string;
    const send = { messages: { [BOB]: { "*": { n: 1 } }, "@nobody:example.org": { X: { n: 2 } } } };
    expect(await call(alice, "PUT", "/sendToDevice/m.test/t2", send)).toEqual({ status: 200, body: {} });
    expect(await call(alice, "PUT", "/sendToDevice/m.test/t2", send)).toEqual({ status: 200, body: {} });
    const expected = [{ type: "m.test", sender: ALICE, content: { n: 1 } }];
    const first = (await call(bob1, "GET", `/sync?timeout=0&since=${start}`)).body;
    expect((first.to_device as { events: unknown[] }).events).toEqual(expected);
    // Not acknowledged yet: the same since gives it again; the next since drops it.
    expect(((await call(bob1, "GET", `/sync?timeout=0&since=${start}`)).body.to_device as { events: unknown[] }).events).toEqual(expected);
    const after = (await call(bob1, "GET", `/sync?timeout=0&since=${first.next_batch as string}`)).body;
    expect((after.to_device as { events: unknown[] }).events).toEqual([]);
    expect(((await call(bob2, "GET", "/sync?timeout=0")).body.to_device as { events: unknown[] }).events).toEqual(expected);
  });

  it("device_lists: changed for a room-mate's new keys and a new room-mate, left when no room is shared any more", async () => {
    const alice = hs.registerUser(ALICE, undefined, { deviceId: "A1" });
    const bob = hs.registerUser(BOB, undefined, { deviceId: "B1" });
    const roomId = hs.createRoom({ creator: ALICE, members: { [BOB]: "invite" } });
    const lists = async (since: string): Promise<{ next: string; lists: unknown }> => {
      const body = (await call(alice, "GET", `/sync?timeout=0&since=${since}`)).body;
      return { next: body.next_batch as string, lists: body.device_lists };
    };
    let since = (await call(alice, "GET", "/sync?timeout=0")).body.next_batch as string;
    expect((await call(bob, "POST", `/rooms/${encodeURIComponent(roomId)}/join`, {})).status).toBe(200);
    let step = await lists(since);
    expect(step.lists).toEqual({ changed: [BOB], left: [] });
    since = step.next;
    expect((await call(bob, "POST", "/keys/upload", { device_keys: deviceKeys(BOB, "B1", "edB1") })).status).toBe(200);
    step = await lists(since);
    expect(step.lists).toEqual({ changed: [BOB], left: [] });
    since = step.next;
    // Only one-time keys: no device-list change.
    expect((await call(bob, "POST", "/keys/upload", { one_time_keys: { "signed_curve25519:A": signed("k") } })).status).toBe(200);
    expect((await call(bob, "POST", `/rooms/${encodeURIComponent(roomId)}/leave`, {})).status).toBe(200);
    step = await lists(since);
    expect(step.lists).toEqual({ changed: [], left: [BOB] });
    expect((await call(alice, "GET", `/keys/changes?from=${since}&to=${step.next}`)).body).toEqual({ changed: [], left: [BOB] });
  });
});
