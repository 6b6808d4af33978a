/**
 * The person on the other side of an encrypted room: matrix-js-sdk with its Rust crypto
 * (matrix-sdk-crypto-wasm, in memory), as Element Web runs it. Every wait is on an SDK event,
 * never a sleep.
 */
import {
  ClientEvent,
  MatrixEventEvent,
  RoomEvent,
  RoomMemberEvent,
  SyncState,
  createClient,
  type MatrixClient,
  type MatrixEvent,
  type RoomMember,
} from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/index.js";
import { logger as sdkLogger, type Logger } from "matrix-js-sdk/lib/logger.js";
import { LoggerLevel, Tracing } from "@matrix-org/matrix-sdk-crypto-wasm";
import type { FakeHomeserver } from "../fakes/homeserver.ts";

/** The SDK's warnings and errors reach the test output; its debug chatter does not. */
const quietLogger: Logger = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (...msg: unknown[]) => (process.env["MGS_TEST_LOG"] === undefined ? undefined : console.warn(...msg)),
  error: (...msg: unknown[]) => console.error(...msg),
  getChild: () => quietLogger,
};

/** The SDK's module-wide logger (loglevel's, whose `setLevel` its type does not show) at "warn". */
export function quietSdkLogger(): void {
  const setLevel: unknown = Reflect.get(sdkLogger, "setLevel");
  if (typeof setLevel === "function") Reflect.apply(setLevel, sdkLogger, ["warn"]);
}

/**
 * A client for a new device of `userId` (registered on `hs` unless `accessToken` is given), with
 * in-memory Rust crypto, synced once. Stop it with `stopClient()`.
 */
export async function startDevice(hs: FakeHomeserver, userId: string, deviceId: string, accessToken = hs.registerUser(userId, undefined, { deviceId })): Promise<MatrixClient> {
  const client = createClient({ baseUrl: hs.url, userId, deviceId, accessToken, logger: quietLogger });
  await client.initRustCrypto({ useIndexedDB: false });
  // initRustCrypto turns the Rust tracing on at debug level: warnings are enough here.
  new Tracing(LoggerLevel.Warn).turnOn();
  const prepared = new Promise<void>((resolve, reject) => {
    const onSync = (state: SyncState): void => {
      if (state === SyncState.Prepared || state === SyncState.Syncing) {
        client.off(ClientEvent.Sync, onSync);
        resolve();
      } else if (state === SyncState.Error) {
        client.off(ClientEvent.Sync, onSync);
        reject(new Error(`${userId}/${deviceId}: sync failed`));
      }
    };
    client.on(ClientEvent.Sync, onSync);
  });
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  return client;
}

/** Resolves once `userId`'s membership in `roomId`, as `client` sees it, is `membership`. */
export function waitForMembership(client: MatrixClient, roomId: string, userId: string, membership: string): Promise<void> {
  return new Promise((resolve) => {
    const check = (): boolean => client.getRoom(roomId)?.getMember(userId)?.membership === membership;
    if (check()) return resolve();
    const onMember = (_ev: MatrixEvent, member: RoomMember): void => {
      if (member.roomId === roomId && member.userId === userId && member.membership === membership) {
        client.off(RoomMemberEvent.Membership, onMember);
        resolve();
      }
    };
    client.on(RoomMemberEvent.Membership, onMember);
  });
}

/** Resolves when `client` is invited to a room, with its id. */
export function waitForInvite(client: MatrixClient): Promise<string> {
  return new Promise((resolve) => {
    const onMyMembership = (room: { roomId: string }, membership: string): void => {
      if (membership === "invite") {
        client.off(RoomEvent.MyMembership, onMyMembership);
        resolve(room.roomId);
      }
    };
    client.on(RoomEvent.MyMembership, onMyMembership);
  });
}

export const decryptedText = (ev: MatrixEvent): string | undefined =>
  ev.getWireType() === "m.room.encrypted" && !ev.isBeingDecrypted() && !ev.isDecryptionFailure() && ev.getType() === "m.room.message"
    ? (ev.getContent().body as string | undefined)
    : undefined;

/** Resolves with the event in `roomId` that arrived encrypted and decrypts to `text`. */
export function waitForDecrypted(client: MatrixClient, roomId: string, text: string): Promise<MatrixEvent> {
  return new Promise((resolve) => {
    const done = (ev: MatrixEvent): boolean => {
      if (ev.getRoomId() !== roomId || decryptedText(ev) !== text) return false;
      client.off(MatrixEventEvent.Decrypted, onEvent);
      client.off(RoomEvent.Timeline, onEvent);
      resolve(ev);
      return true;
    };
    const onEvent = (ev: MatrixEvent): void => {
      done(ev);
    };
    client.on(MatrixEventEvent.Decrypted, onEvent);
    client.on(RoomEvent.Timeline, onEvent);
    for (const ev of client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []) if (done(ev)) return;
  });
}

/** Resolves once `client`'s crypto knows device `deviceId` of `userId` (fetched after a device-list change). */
export function waitForDevice(client: MatrixClient, userId: string, deviceId: string): Promise<void> {
  const crypto = client.getCrypto()!;
  const known = async (): Promise<boolean> => (await crypto.getUserDeviceInfo([userId])).get(userId)?.has(deviceId) === true;
  return new Promise((resolve, reject) => {
    const onUpdate = (users: string[]): void => {
      if (!users.includes(userId)) return;
      known().then((yes) => {
        if (yes) {
          client.off(CryptoEvent.DevicesUpdated, onUpdate);
          resolve();
        }
      }, reject);
    };
    client.on(CryptoEvent.DevicesUpdated, onUpdate);
    known().then((yes) => {
      if (yes) {
        client.off(CryptoEvent.DevicesUpdated, onUpdate);
        resolve();
      }
    }, reject);
  });
}

/** Resolves with the first decrypted `m.room.message` from `sender` in `roomId` that replies to `eventId` (already there or arriving). */
export function waitForReply(client: MatrixClient, sender: string, roomId: string, eventId: string): Promise<MatrixEvent> {
  return new Promise((resolve) => {
    const check = (ev: MatrixEvent): boolean => {
      if (ev.getRoomId() !== roomId || ev.getSender() !== sender || ev.isBeingDecrypted() || ev.isDecryptionFailure()) return false;
      if (ev.getType() !== "m.room.message") return false;
      const rel = ev.getContent()["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined;
      if (rel?.["m.in_reply_to"]?.event_id !== eventId) return false;
      client.off(MatrixEventEvent.Decrypted, onEvent);
      client.off(RoomEvent.Timeline, onEvent);
      resolve(ev);
      return true;
    };
    const onEvent = (ev: MatrixEvent): void => void check(ev);
    client.on(MatrixEventEvent.Decrypted, onEvent);
    client.on(RoomEvent.Timeline, onEvent);
    for (const ev of client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []) if (check(ev)) return;
  });
}
