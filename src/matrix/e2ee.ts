/**
 * End-to-end encryption for the rooms `serve` talks in (the management room, token rooms and
 * direct chats): the Rust crypto of matrix-js-sdk and Element Web (matrix-sdk-crypto-wasm, from
 * the npm registry alone), driven from serve's `/sync` loop, its requests sent through the
 * gateway (one transport, one rate-limit policy, one halt signal).
 *
 * - Keys: the device keys and one-time keys are uploaded at start and topped up when `/sync`'s
 *   `device_one_time_keys_count` runs low; the members' device lists are tracked from
 *   `device_lists` and queried when they change; Olm sessions are claimed for devices without one.
 * - Sharing: a room key goes to every device of every joined or invited member, verified or not
 *   — what Element does by default (a bot has no one to verify devices with). A new device of a
 *   member gets the current key with the next reply. Keys rotate per the room's
 *   `m.room.encryption` (`rotation_period_ms`, `rotation_period_msgs`) and when a member leaves.
 * - State: kept in the project's store, encrypted by the crypto library with a key derived from
 *   `serve.encryption.storeKey` (crypto-persistence.ts): after a restart the bot is the same device.
 * - Never plaintext: a room that is encrypted gets only encrypted events from us; when
 *   encrypting fails, nothing is sent (the caller logs it).
 * - Reading: a message whose key is missing asks the sender's devices for it (an
 *   `m.room_key_request`) and waits; if the key does not come within the grace period, the
 *   message is given up (never executed) and the sender is told once (see EncryptedTimeline).
 */
import {
  CollectStrategy,
  DecryptionErrorCode,
  DecryptionSettings,
  Device,
  DeviceId,
  DeviceLists,
  EncryptionAlgorithm,
  EncryptionSettings,
  HistoryVisibility,
  initAsync,
  MegolmDecryptionError,
  OlmMachine,
  RequestType,
  RoomId as WasmRoomId,
  TrustRequirement,
  UserId as WasmUserId,
  type ToDeviceRequest,
} from "@matrix-org/matrix-sdk-crypto-wasm";
import type { Logger } from "../log.ts";
import { describeError, fail, ok, type Result } from "../result.ts";
import { CryptoPersistence, type CryptoStatePort } from "./crypto-persistence.ts";
import type { DeviceApi, Messenger, RoomStateReader } from "./gateway.ts";
import type { RoomId, UserId } from "./ids.ts";

const MEGOLM = "m.megolm.v1.aes-sha2";

/** A room's `m.room.encryption` content as we use it; `null`: the room is not encrypted. */
export type RoomEncryptionSettings = { readonly algorithm: string; readonly rotationPeriodMs?: number; readonly rotationPeriodMsgs?: number } | null;

export interface EndToEndOptions {
  readonly userId: UserId;
  readonly deviceId: string;
  /** `serve.encryption.storeKey`: what the crypto store is encrypted with. */
  readonly storeKey: string;
  readonly api: DeviceApi & RoomStateReader;
  /** Which rooms are encrypted, and how. */
  readonly rooms: RoomEncryptionState;
  readonly store: CryptoStatePort;
  readonly log: Logger;
}

/** What decrypting one timeline event gave. */
export type Decrypted =
  | { readonly kind: "ok"; readonly event: Record<string, unknown> }
  /** The room key is not (yet) here; it was asked for. */
  | { readonly kind: "missing-key"; readonly reason: string }
  /** It cannot be read and waiting will not help (malformed, or a key of someone else's). */
  | { readonly kind: "failed"; readonly reason: string };

/** Parts of a `/sync` answer the crypto reads (spec: "Extensions to /sync"). */
interface SyncCryptoSections {
  readonly to_device?: { readonly events?: unknown };
  readonly device_lists?: { readonly changed?: unknown; readonly left?: unknown };
  readonly device_one_time_keys_count?: unknown;
  readonly device_unused_fallback_key_types?: unknown;
}

/** To-device events handed to the crypto in one call (a flood is taken in several). */
const TO_DEVICE_CHUNK = 500;

let wasmReady: Promise<void> | undefined;

/**
 * The bot's device: an OlmMachine over the persisted store. Every operation runs one at a time
 * (the machine's requests and the store's save must not interleave).
 */
export class EndToEnd {
  #queue: Promise<unknown> = Promise.resolve();
  /** Members (joined or invited) of encrypted rooms, read when first needed; dropped when a member event arrives. */
  readonly #members = new Map<string, UserId[]>();
  #closed = false;

  private constructor(
    private readonly machine: OlmMachine,
    private readonly persistence: CryptoPersistence,
    private readonly opts: EndToEndOptions,
    readonly identity: { readonly curve25519: string; readonly ed25519: string },
  ) {}

  /**
   * Opens the crypto store of `userId`/`deviceId`, uploads the device's keys when they are new,
   * and saves. Fails with what to do when the stored state belongs to another device or cannot
   * be opened with the store key.
   */
  static async open(opts: EndToEndOptions): Promise<Result<EndToEnd>> {
    const log = opts.log;
    wasmReady ??= initAsync();
    await wasmReady;
    const persistence = new CryptoPersistence(opts.store, opts.userId);
    let loaded: { records: number };
    try {
      loaded = await persistence.load();
    } catch (err) {
      await persistence.discard();
      return fail(`cannot load the end-to-end encryption state from the store: ${describeError(err)}`);
    }
    if (loaded.records === 0) {
      // New keys for a device the homeserver already has keys for would clash with them (and
      // its one-time keys): the keys of this device were lost, or belong to another program.
      const known = await opts.api.keysRequest("query", { device_keys: { [opts.userId]: [opts.deviceId] } });
      if (!known.ok) return fail(`cannot start end-to-end encryption: ${known.error.message}`);
      const devices = (known.value as { device_keys?: Record<string, Record<string, unknown> | undefined> } | null)?.device_keys?.[opts.userId];
      if (devices !== undefined && devices !== null && typeof devices === "object" && opts.deviceId in devices) {
        return fail(
          `the store holds no end-to-end encryption keys, but the homeserver already has keys for the bot's device ${opts.deviceId}: ` +
            `its keys were lost (a new data folder or database?) or another program uses this access token. Restore the store from a backup, ` +
            `or give serve an access token of a new login (a new device) and, if you like, delete the old device ${opts.deviceId}`,
        );
      }
    }
    let machine: OlmMachine;
    try {
      machine = (await OlmMachine.initialize(new WasmUserId(opts.userId), new DeviceId(opts.deviceId), persistence.prefix, opts.storeKey)) as OlmMachine;
    } catch (err) {
      await persistence.discard();
      const detail = describeError(err);
      if (/doesn't match|does not match|mismatch/i.test(detail)) {
        return fail(
          `the stored end-to-end encryption keys belong to another device of ${opts.userId} than this access token's (${opts.deviceId}): ` +
            `use an access token of the device the keys belong to, or run \`matrix-group-sync crypto-reset --yes\` to start as this new device (members then see a new, unverified device of the bot) [${detail}]`,
        );
      }
      if (loaded.records > 0) {
        return fail(
          `cannot open the stored end-to-end encryption keys (${detail}): is serve.encryption.storeKey the key they were stored with? ` +
            `If that key is lost, run \`matrix-group-sync crypto-reset --yes\` and give the bot an access token of a new login (a new device)`,
        );
      }
      return fail(`cannot start end-to-end encryption: ${detail}`);
    }
    // The sync after a start is an initial one, without the device-list changes made while the
    // bot was down: every tracked user's devices are queried again.
    if (loaded.records > 0) await machine.markAllTrackedUsersAsDirty();
    // Ask a sender's devices for a room key we lack; never give ours away (a bot has no verified devices of its own).
    machine.roomKeyRequestsEnabled = true;
    machine.roomKeyForwardingEnabled = false;
    const keys = machine.identityKeys;
    const e2ee = new EndToEnd(machine, persistence, opts, { curve25519: keys.curve25519.toBase64(), ed25519: keys.ed25519.toBase64() });
    log.info(loaded.records > 0 ? "end-to-end encryption: keys loaded from the store" : "end-to-end encryption: new device keys made", {
      device: opts.deviceId,
      curve25519: e2ee.identity.curve25519,
      ed25519: e2ee.identity.ed25519,
    });
    const first = await e2ee.#run(async () => {
      await e2ee.#flush();
      await e2ee.#save();
    });
    if (!first.ok) {
      await e2ee.close();
      return first;
    }
    return ok(e2ee);
  }

  /** Runs `fn` after every operation before it. */
  #run<T>(fn: () => Promise<T>): Promise<Result<T>> {
    const job = this.#queue.then(async () => {
      if (this.#closed) return fail("end-to-end encryption is closed");
      try {
        return ok(await fn());
      } catch (err) {
        return fail(describeError(err), { cause: err });
      }
    });
    this.#queue = job.catch(() => undefined);
    return job;
  }

  /**
   * A sync answer's to-device events, device-list changes and key counts. The decrypted to-device
   * events are not needed here (room keys are taken in by the machine itself); whether any room
   * key came is returned, so that waiting messages can be tried again.
   */
  async receiveSync(raw: unknown): Promise<Result<{ toDevice: number }>> {
    const body = (raw ?? {}) as SyncCryptoSections;
    const events = Array.isArray(body.to_device?.events) ? (body.to_device.events as unknown[]) : [];
    if (events.length > TO_DEVICE_CHUNK) this.opts.log.info("end-to-end encryption: many to-device events in one sync", { count: events.length });
    const toDevice = events.filter((e) => e !== null && typeof e === "object" && !Array.isArray(e));
    const changed = userIds(body.device_lists?.changed);
    const left = userIds(body.device_lists?.left);
    const counts = new Map<string, number>();
    const rawCounts = body.device_one_time_keys_count;
    if (rawCounts !== null && typeof rawCounts === "object") {
      for (const [k, v] of Object.entries(rawCounts)) if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) counts.set(k, v);
    }
    const fallback = Array.isArray(body.device_unused_fallback_key_types)
      ? new Set(body.device_unused_fallback_key_types.filter((t): t is string => typeof t === "string"))
      : undefined;
    return this.#run(async () => {
      // A flood is taken in chunks (each one call into the machine), none dropped: a room key may be among them.
      // In order; the last call carries the device lists and key counts.
      const last = Math.max(0, Math.ceil(toDevice.length / TO_DEVICE_CHUNK) - 1) * TO_DEVICE_CHUNK;
      for (let i = 0; i < last; i += TO_DEVICE_CHUNK) {
        await this.machine.receiveSyncChanges(JSON.stringify(toDevice.slice(i, i + TO_DEVICE_CHUNK)), new DeviceLists(), new Map(), undefined);
      }
      await this.machine.receiveSyncChanges(JSON.stringify(toDevice.slice(last)), new DeviceLists(changed, left), counts, fallback);
      await this.#flush();
      await this.#save();
      return { toDevice: toDevice.length };
    });
  }

  /** Notes a timeline event of a room we listen in: its members changed. */
  noteTimelineEvent(roomId: string, event: unknown): void {
    const e = event as { type?: unknown; state_key?: unknown } | null;
    if (e !== null && typeof e === "object" && e.type === "m.room.member" && typeof e.state_key === "string") this.#members.delete(roomId);
  }

  /** Forgets what is cached of a room (its timeline had a gap). */
  forgetRoom(roomId: string): void {
    this.#members.delete(roomId);
  }

  /** Decrypts a timeline event of type `m.room.encrypted`. */
  async decrypt(roomId: string, event: Record<string, unknown>): Promise<Decrypted> {
    const r = await this.#run(async (): Promise<Decrypted> => {
      try {
        const d = await this.machine.decryptRoomEvent(JSON.stringify(event), new WasmRoomId(roomId), new DecryptionSettings(TrustRequirement.Untrusted));
        const plain = JSON.parse(d.event) as { type?: unknown; content?: unknown; room_id?: unknown };
        // The room key must come from a device of the event's sender: otherwise anyone could
        // send someone else's ciphertext again under their own name (the decrypted event's
        // `sender` is only the event's own, untrusted).
        const sender = typeof event["sender"] === "string" ? event["sender"] : "";
        if (!(await this.#isDeviceOf(sender, d.senderCurve25519Key))) return { kind: "failed", reason: `the room key was not made by a device of ${sender}` };
        if (plain.room_id !== undefined && plain.room_id !== roomId) return { kind: "failed", reason: "encrypted for another room" };
        if (typeof plain.type !== "string" || plain.content === null || typeof plain.content !== "object") return { kind: "failed", reason: "the decrypted event has no type or content" };
        const unsigned = event["unsigned"] !== null && typeof event["unsigned"] === "object" ? (event["unsigned"] as Record<string, unknown>) : {};
        return { kind: "ok", event: { ...event, type: plain.type, content: plain.content, unsigned: { ...unsigned, "mgs.decrypted": true } } };
      } catch (err) {
        if (err instanceof MegolmDecryptionError) {
          const waiting = err.code === DecryptionErrorCode.MissingRoomKey || err.code === DecryptionErrorCode.UnknownMessageIndex;
          if (waiting) {
            await this.#flush(); // sends the key request the machine queued
            await this.#save();
          }
          return { kind: waiting ? "missing-key" : "failed", reason: err.description };
        }
        return { kind: "failed", reason: describeError(err) };
      }
    });
    return r.ok ? r.value : { kind: "failed", reason: r.error.message };
  }

  /**
   * Encrypts an event for an encrypted room: the members' devices are brought up to date, Olm
   * sessions claimed, the room key shared (or rotated), then the content encrypted. The answer is
   * the `m.room.encrypted` content; on failure nothing may be sent.
   */
  async encrypt(roomId: RoomId, type: string, content: Readonly<Record<string, unknown>>): Promise<Result<Record<string, unknown>>> {
    const settings = await this.opts.rooms.of(roomId);
    if (!settings.ok) return settings;
    if (settings.value === null) return fail(`${roomId} is not encrypted`);
    if (settings.value.algorithm !== MEGOLM) return fail(`${roomId} is encrypted with ${settings.value.algorithm}, which the bot cannot write (only ${MEGOLM})`);
    const members = await this.#membersOf(roomId);
    if (!members.ok) return members;
    const room = settings.value;
    const r = await this.#run(async () => {
      const users = (): WasmUserId[] => members.value.map((u) => new WasmUserId(u));
      await this.machine.updateTrackedUsers(users());
      await this.#flush(); // key queries for users now tracked
      const claim = await this.machine.getMissingSessions(users());
      if (claim != null) {
        const sent = await this.#send(claim);
        if (!sent.ok) this.opts.log.warn("end-to-end encryption: claiming one-time keys failed; devices without a session get no key this time", { room: roomId, error: sent.error.message });
      }
      const shares = (await this.machine.shareRoomKey(new WasmRoomId(roomId), users(), encryptionSettings(room))) as ToDeviceRequest[];
      for (const share of shares) {
        const sent = await this.#send(share);
        if (!sent.ok) throw new Error(`sharing the room key failed: ${sent.error.message}`);
      }
      const encrypted = await this.machine.encryptRoomEvent(new WasmRoomId(roomId), type, JSON.stringify(content));
      await this.#save();
      return JSON.parse(encrypted) as Record<string, unknown>;
    });
    return r.ok ? r : fail(`encrypting a message for ${roomId}: ${r.error.message}`);
  }

  /** Whether `curve25519` is the identity key of one of `user`'s devices (their devices queried first when not yet known). */
  async #isDeviceOf(user: string, curve25519: string | undefined): Promise<boolean> {
    if (curve25519 === undefined || user === "") return false;
    const has = async (): Promise<boolean> => {
      const devices = await this.machine.getUserDevices(new WasmUserId(user), 0);
      return (devices.devices() as Device[]).some((device) => device.curve25519Key?.toBase64() === curve25519);
    };
    if (await has()) return true;
    // Not known (yet): track the user, query their devices, and look again.
    await this.machine.updateTrackedUsers([new WasmUserId(user)]);
    await this.#flush();
    return has();
  }

  async #membersOf(roomId: RoomId): Promise<Result<UserId[]>> {
    const known = this.#members.get(roomId);
    if (known !== undefined) return ok(known);
    const observed = await this.opts.api.readRoom(roomId);
    if (!observed.ok) return observed;
    const members = Object.entries(observed.value.members)
      .filter(([, m]) => m === "join" || m === "invite")
      .map(([u]) => u as UserId);
    this.#members.set(roomId, members);
    return ok(members);
  }

  /** Sends every request the machine has queued, marking each sent; a failed one stays queued for the next time. */
  async #flush(): Promise<void> {
    for (const request of await this.machine.outgoingRequests()) {
      const sent = await this.#send(request);
      if (!sent.ok) this.opts.log.warn("end-to-end encryption: a request failed; it is sent again later", { error: sent.error.message });
    }
  }

  async #send(request: { readonly id?: string | undefined; readonly type: RequestType; readonly body: string }): Promise<Result<void>> {
    const api = this.opts.api;
    let answer: Result<unknown>;
    switch (request.type) {
      case RequestType.KeysUpload:
        answer = await api.keysRequest("upload", JSON.parse(request.body));
        break;
      case RequestType.KeysQuery:
        answer = await api.keysRequest("query", JSON.parse(request.body));
        break;
      case RequestType.KeysClaim:
        answer = await api.keysRequest("claim", JSON.parse(request.body));
        break;
      case RequestType.SignatureUpload:
        answer = await api.keysRequest("signatures/upload", JSON.parse(request.body));
        break;
      case RequestType.ToDevice: {
        const r = request as ToDeviceRequest;
        answer = await api.sendToDevice(r.event_type, r.txn_id, JSON.parse(r.body));
        break;
      }
      case RequestType.RoomMessage:
      case RequestType.KeysBackup:
        // Verification in rooms and key backup are not used by the bot.
        return ok(undefined);
    }
    if (!answer.ok) return answer;
    if (request.id !== undefined) await this.machine.markRequestAsSent(request.id, request.type, JSON.stringify(answer.value ?? {}));
    return ok(undefined);
  }

  async #save(): Promise<void> {
    await this.persistence.save();
  }

  /**
   * Stops at once, saving nothing more: this process may no longer act (the leader lock is
   * lost), and the new leader's state in the store must not be overwritten.
   */
  abandon(): void {
    this.#closed = true;
  }

  /** Saves and closes; the machine cannot be used after. */
  async close(): Promise<void> {
    if (!this.#closed) await this.#run(() => this.#save());
    this.#closed = true;
    this.machine.close();
    await this.persistence.discard();
  }
}

/**
 * Which rooms are encrypted: read once per room (`m.room.encryption`), then followed from the
 * timeline (the sync filter brings `m.room.encryption` events); a gap in a timeline forgets an
 * unencrypted room's answer, so that it is read again. Encryption, once on, stays on.
 */
export class RoomEncryptionState {
  readonly #rooms = new Map<string, RoomEncryptionSettings>();

  constructor(private readonly api: Pick<Messenger, "stateEvent">) {}

  async of(roomId: RoomId): Promise<Result<RoomEncryptionSettings>> {
    const known = this.#rooms.get(roomId);
    if (known !== undefined) return ok(known);
    const r = await this.api.stateEvent(roomId, "m.room.encryption", "");
    if (!r.ok) return r;
    // An m.room.encryption event noted while the state was being read wins over an older "none".
    const noted = this.#rooms.get(roomId);
    const settings = noted ?? (r.value === undefined ? null : encryptionOf(r.value));
    this.#rooms.set(roomId, settings);
    return ok(settings);
  }

  /** A timeline event: `m.room.encryption` switches the room's encryption on (or changes its settings). */
  note(roomId: string, event: unknown): void {
    const e = event as { type?: unknown; state_key?: unknown; content?: unknown } | null;
    if (e !== null && typeof e === "object" && e.type === "m.room.encryption" && e.state_key === "") this.#rooms.set(roomId, encryptionOf(e.content));
  }

  /** The room's timeline had a gap: an unencrypted room is read again. */
  forget(roomId: string): void {
    if (this.#rooms.get(roomId) === null) this.#rooms.delete(roomId);
  }
}

function userIds(value: unknown): WasmUserId[] {
  if (!Array.isArray(value)) return [];
  const out: WasmUserId[] = [];
  for (const v of value) {
    if (typeof v !== "string") continue;
    try {
      out.push(new WasmUserId(v));
    } catch {
      // not a user id: ignored
    }
  }
  return out;
}

function encryptionOf(content: unknown): RoomEncryptionSettings {
  const c = (content ?? {}) as { algorithm?: unknown; rotation_period_ms?: unknown; rotation_period_msgs?: unknown };
  const positive = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v > 0;
  return {
    algorithm: typeof c.algorithm === "string" ? c.algorithm : "",
    ...(positive(c.rotation_period_ms) ? { rotationPeriodMs: c.rotation_period_ms } : {}),
    ...(positive(c.rotation_period_msgs) ? { rotationPeriodMsgs: c.rotation_period_msgs } : {}),
  };
}

/** The room's rotation settings (the spec's defaults: a week, 100 messages); every device of every member. */
function encryptionSettings(room: NonNullable<RoomEncryptionSettings>): EncryptionSettings {
  const s = new EncryptionSettings();
  s.algorithm = EncryptionAlgorithm.MegolmV1AesSha2;
  s.rotationPeriod = BigInt(room.rotationPeriodMs ?? 604_800_000) * 1000n;
  s.rotationPeriodMessages = BigInt(room.rotationPeriodMsgs ?? 100);
  s.historyVisibility = HistoryVisibility.Shared;
  s.sharingStrategy = CollectStrategy.allDevices();
  return s;
}

/**
 * A Messenger that encrypts in encrypted rooms: replies, reactions and edits go as
 * `m.room.encrypted`; redactions stay as they are (the spec keeps them in the clear). Without
 * end-to-end encryption set up, nothing is sent into an encrypted room.
 */
export function encryptingMessenger(inner: Messenger, e2ee: EndToEnd | undefined, rooms: RoomEncryptionState): Messenger {
  return {
    async sendEvent(roomId, type, content) {
      const settings = await rooms.of(roomId);
      if (!settings.ok) return fail(`sending to ${roomId}: cannot tell whether the room is encrypted (${settings.error.message}); nothing was sent`);
      if (settings.value === null) return inner.sendEvent(roomId, type, content);
      if (e2ee === undefined) return fail(`${roomId} is encrypted and end-to-end encryption is not set up (serve.encryption.storeKey): nothing was sent`);
      const encrypted = await e2ee.encrypt(roomId, type, content);
      if (!encrypted.ok) return encrypted;
      return inner.sendEvent(roomId, "m.room.encrypted", encrypted.value);
    },
    redact: (roomId, eventId, reason) => inner.redact(roomId, eventId, reason),
    stateEvent: (roomId, type, stateKey) => inner.stateEvent(roomId, type, stateKey),
  };
}
