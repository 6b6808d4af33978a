import type { Result } from "../result.ts";
import type { CreateRoomRequest, ObservedRoom, PowerLevelsContent } from "../reconcile/types.ts";
import type { RoomId, UserId } from "./ids.ts";

/**
 * Narrow ports onto the homeserver. A caller asks for the one capability it needs.
 * Every method returns a Result: transport errors, Matrix errors and rate limits that
 * outlast the retry budget become values naming the room and the cause.
 */
export interface WhoAmI {
  whoami(): Promise<Result<UserId>>;
}

export interface RoomResolver {
  /** "#alias:server" → room id (one directory request); a room id is returned as it is. */
  resolveRoom(roomOrAlias: string): Promise<Result<RoomId>>;
}

export interface RoomStateReader {
  /** All current state in ONE `GET /rooms/{roomId}/state` request. */
  readRoom(roomId: RoomId): Promise<Result<ObservedRoom>>;
}

export interface RoomInviter {
  invite(roomId: RoomId, user: UserId): Promise<Result<void>>;
}

export interface RoomKicker {
  kick(roomId: RoomId, user: UserId, reason: string): Promise<Result<void>>;
}

export interface PowerLevelsWriter {
  setPowerLevels(roomId: RoomId, content: PowerLevelsContent): Promise<Result<void>>;
}

export interface ProfileReader {
  /**
   * Whether the homeserver knows the account (`GET /profile/{user}`): false on 404
   * M_NOT_FOUND; an error when it could not tell (the caller decides what that means).
   */
  userExists(user: UserId): Promise<Result<boolean>>;
}

export interface StateWriter {
  /** One state event (`PUT /rooms/{roomId}/state/{type}/{stateKey}`). */
  setState(roomId: RoomId, type: string, stateKey: string, content: Readonly<Record<string, unknown>>): Promise<Result<void>>;
}

export interface RoomCreator {
  /** One `POST /createRoom`: the room, its alias, state and invites in one request. */
  createRoom(request: CreateRoomRequest): Promise<Result<RoomId>>;
}

/** The bot's own memberships. */
export interface BotMembership {
  /** `GET /joined_rooms`. */
  joinedRooms(): Promise<Result<RoomId[]>>;
  /** `POST /join/{roomIdOrAlias}`: the joined room's id. */
  joinRoom(roomOrAlias: string): Promise<Result<RoomId>>;
  /** `POST /rooms/{roomId}/leave`. */
  leaveRoom(roomId: RoomId): Promise<Result<void>>;
}

/** Talking in a room (the management room's replies): each call one request, retried on 429 like every other. */
export interface Messenger {
  /** `PUT /rooms/{roomId}/send/{type}/{txnId}` (a fresh transaction id per call): the event id. */
  sendEvent(roomId: RoomId, type: string, content: Readonly<Record<string, unknown>>): Promise<Result<string>>;
  /** `PUT /rooms/{roomId}/redact/{eventId}/{txnId}`. */
  redact(roomId: RoomId, eventId: string, reason?: string): Promise<Result<void>>;
  /** One state event's content, or undefined when there is none (404). */
  stateEvent(roomId: RoomId, type: string, stateKey: string): Promise<Result<Record<string, unknown> | undefined>>;
}

/** What end-to-end encryption needs besides room messages (spec: Client-Server API, "End-to-End Encryption"). */
export interface DeviceApi {
  /** The device the access token belongs to (`whoami`'s `device_id`); undefined when the server does not say. */
  deviceId(): Promise<Result<string | undefined>>;
  /** `POST /keys/upload`, `/keys/query`, `/keys/claim` or `/keys/signatures/upload`: the answer's body. */
  keysRequest(endpoint: "upload" | "query" | "claim" | "signatures/upload", body: unknown): Promise<Result<unknown>>;
  /** `PUT /sendToDevice/{eventType}/{txnId}` (the crypto library's transaction id, kept over retries). */
  sendToDevice(eventType: string, txnId: string, body: unknown): Promise<Result<unknown>>;
}

/** Signing in with a password (a gateway made without an access token). */
export interface PasswordLogin {
  /**
   * `POST /login` with `m.login.password` for `user` (localpart or user id); `deviceId` keeps
   * an earlier device. The new session's user, access token and device.
   */
  login(user: string, password: string, deviceId: string | undefined): Promise<Result<{ userId: UserId; accessToken: string; deviceId: string }>>;
}

export type MatrixGateway = WhoAmI &
  PasswordLogin &
  DeviceApi &
  RoomResolver &
  RoomStateReader &
  RoomInviter &
  RoomKicker &
  PowerLevelsWriter &
  StateWriter &
  RoomCreator &
  ProfileReader &
  BotMembership &
  Messenger;
