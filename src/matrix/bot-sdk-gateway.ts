/**
 * The MatrixGateway over matrix-bot-sdk. Exceptions become Result values here, once.
 *
 * Transport: every SDK request goes through our own (`installTransportBridge`, over fetch):
 * no redirect is followed (a 3xx names its Location), and `requestTimeoutMs` is the deadline
 * of the whole answer, body included, not an idle timeout.
 *
 * Rate limits: matrix-bot-sdk has no retry of its own; it throws a MatrixError with
 * `retryAfterMs` read from the deprecated body field only. The spec (v1.10+) says servers
 * SHOULD send `Retry-After` (seconds or an HTTP-date), so `installTransportBridge` keeps that
 * header beside the error body, and the gateway reads it against its clock. A 429 waits for
 * exactly that long (or backs off exponentially when the server gave nothing) and is retried
 * up to `maxRetries` times; a wait longer than `maxRetryWaitMs` fails the request at once
 * instead of sleeping for hours. No fixed sleeps.
 */
import { LogService, MatrixClient, MatrixError, setRequestFn, type ILogger } from "matrix-bot-sdk";
import { redactUrl } from "../redact-url.ts";
import { realSleep, systemClock, type Clock, type Sleep } from "../clock.ts";
import { requestOverTransport, type SdkRequestCallback } from "../http/bot-sdk-request.ts";
import { DEFAULT_MAX_RETRY_WAIT_MS, parseRetryAfter, waitTooLong } from "../http/retry-after.ts";
import { describeHttpFailure, HttpTransportError } from "../http/transport.ts";
import type { Logger } from "../log.ts";
import { describeError, fail, ok, type Result } from "../result.ts";
import type { MatrixGateway } from "./gateway.ts";
import { parseRoomAlias, parseRoomId, parseUserId, type RoomId } from "./ids.ts";
import { decodeRoomState } from "./room-state.ts";

export interface GatewayOptions {
  readonly homeserverUrl: string;
  readonly accessToken: string;
  readonly requestTimeoutMs: number;
  /** How many times one request is retried after a 429. */
  readonly maxRetries: number;
  /** Longest `Retry-After` wait honoured; a longer one fails the request (default 5 minutes). */
  readonly maxRetryWaitMs?: number;
  readonly log: Logger;
  readonly sleep?: Sleep;
  /** Reads `Retry-After` dates. */
  readonly clock?: Clock;
  /**
   * Once aborted, no request is sent any more (not even a retry after a 429): every call
   * fails at once. Serve aborts it when this replica loses the leader lock.
   */
  readonly signal?: AbortSignal;
}

const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 60_000;

type RequestFn = (params: unknown, cb: SdkRequestCallback) => void;

let bridgeInstalled = false;
/** The `Retry-After` header of a 429, by the error body the SDK will put in its MatrixError. */
const retryAfterOf = new WeakMap<object, string>();
let observer: ((status: number, ms: number) => void) | undefined;

/** Called after every homeserver answer (status, milliseconds): for metrics. */
export function observeHomeserverResponses(fn: ((status: number, ms: number) => void) | undefined): void {
  observer = fn;
}

/**
 * Gives the SDK our transport, once per process (for every MatrixClient, serve's too):
 * - requests go over fetch with no redirects and a total deadline (http/bot-sdk-request.ts);
 * - a 429's `Retry-After` header is kept beside its error body (the SDK reads only the
 *   body's `retry_after_ms`), and a 429 without a JSON body gets one, so the SDK throws a
 *   MatrixError for it too;
 * - parses a JSON body once (the SDK would parse the same text twice, which dominates the
 *   cost of reading a room of 10,000 members).
 */
export function installTransportBridge(): void {
  if (bridgeInstalled) return;
  bridgeInstalled = true;
  const inner: RequestFn = requestOverTransport;
  const wrapped: RequestFn = (params, cb) => {
    const started = performance.now();
    inner(params, (err, res, body) => {
      observer?.(res?.statusCode ?? 0, performance.now() - started);
      if (err || !res) {
        cb(err, res, body);
        return;
      }
      let parsed: unknown = body;
      if (typeof body === "string" && isJsonResponse(res.headers)) {
        try {
          parsed = JSON.parse(body) as unknown;
        } catch {
          parsed = body;
        }
      }
      if (res.statusCode === 429) parsed = withRetryAfter(parsed, res.headers["retry-after"]);
      res.body = parsed;
      cb(err, res, parsed);
    });
  };
  setRequestFn(wrapped);
}

function isJsonResponse(headers: Record<string, string>): boolean {
  const type = headers["content-type"];
  return typeof type === "string" && type.toLowerCase().includes("json");
}

function withRetryAfter(body: unknown, header: string | undefined): unknown {
  const errorBody =
    body && typeof body === "object" && !Array.isArray(body) && "errcode" in body ? body : { errcode: "M_LIMIT_EXCEEDED", error: "Too Many Requests" };
  if (header !== undefined && header.trim() !== "") retryAfterOf.set(errorBody, header);
  return errorBody;
}

/** Routes matrix-bot-sdk's own logging into ours (it logs every error body at error level). */
export function routeSdkLogs(log: Logger): void {
  const fmt = (parts: unknown[]): string => parts.map((p) => (typeof p === "string" ? p : describeError(p))).join(" ");
  const sdk: ILogger = {
    trace: (module: string, ...m: unknown[]) => log.trace("matrix-bot-sdk", { module, detail: fmt(m) }),
    debug: (module: string, ...m: unknown[]) => log.debug("matrix-bot-sdk", { module, detail: fmt(m) }),
    info: (module: string, ...m: unknown[]) => log.debug("matrix-bot-sdk", { module, detail: fmt(m) }),
    // The SDK reports every non-2xx answer as an error; we report the outcome ourselves.
    warn: (module: string, ...m: unknown[]) => log.debug("matrix-bot-sdk", { module, detail: fmt(m) }),
    error: (module: string, ...m: unknown[]) => log.debug("matrix-bot-sdk", { module, detail: fmt(m) }),
  };
  LogService.setLogger(sdk);
}

export function createBotSdkGateway(opts: GatewayOptions): MatrixGateway {
  installTransportBridge();
  routeSdkLogs(opts.log.child("matrix-bot-sdk"));
  /** The homeserver's URL as messages may show it (userinfo hidden). */
  const shownUrl = redactUrl(opts.homeserverUrl);
  const client = new MatrixClient(opts.homeserverUrl, opts.accessToken);
  const sleep = opts.sleep ?? realSleep;
  const clock = opts.clock ?? systemClock;
  const maxWait = opts.maxRetryWaitMs ?? DEFAULT_MAX_RETRY_WAIT_MS;
  const log = opts.log;

  const signal = opts.signal;
  let txnCounter = 0;
  const halted = (): boolean => signal?.aborted === true;
  /** Waits `ms`, or less when the signal aborts first. */
  const wait = (ms: number): Promise<void> =>
    signal === undefined
      ? sleep(ms)
      : new Promise<void>((resolve) => {
          const done = (): void => {
            signal.removeEventListener("abort", done);
            resolve();
          };
          signal.addEventListener("abort", done, { once: true });
          void sleep(ms).then(done);
        });

  async function call<T>(what: string, method: "GET" | "POST" | "PUT", path: string, body?: unknown): Promise<Result<T>> {
    // One transaction id per call, kept over its retries: a retried send is not sent twice.
    path = path.replace("{txn}", () => `mgs.${Date.now().toString(36)}.${(txnCounter++).toString(36)}`);
    for (let attempt = 0; ; attempt++) {
      if (halted()) return fail(`${what}: not sent: this process has stopped acting (it is no longer the leader, or is shutting down)`, { code: "M_STOPPED" });
      try {
        return ok((await client.doRequest(method, path, null, body ?? null, opts.requestTimeoutMs)) as T);
      } catch (err) {
        const limited = rateLimit(err, clock.now());
        if (limited) {
          if (attempt >= opts.maxRetries) {
            return fail(`${what}: still rate-limited by the homeserver after ${opts.maxRetries} retries`, { code: "M_LIMIT_EXCEEDED" });
          }
          if (limited.retryAfterMs !== undefined && limited.retryAfterMs > maxWait) {
            return fail(`${what}: ${waitTooLong("the homeserver", limited.retryAfterMs, maxWait, "homeserver.maxRetryWaitMs")}`, {
              code: "M_LIMIT_EXCEEDED",
            });
          }
          const delay = limited.retryAfterMs ?? Math.min(BACKOFF_MAX_MS, maxWait, BACKOFF_START_MS * 2 ** attempt);
          log.debug("rate limited, waiting", { what, waitMs: delay, attempt });
          await wait(delay);
          continue;
        }
        return fail(`${what}: ${explain(err, shownUrl)}`, codeOf(err));
      }
    }
  }

  const room = (id: string): string => `/_matrix/client/v3/rooms/${encodeURIComponent(id)}`;
  const parseJoined = (value: unknown): RoomId[] | undefined => {
    const list = (value as { joined_rooms?: unknown } | null)?.joined_rooms;
    if (!Array.isArray(list)) return undefined;
    return list.flatMap((r) => (typeof r === "string" && parseRoomId(r) !== undefined ? [r as RoomId] : []));
  };

  return {
    async whoami() {
      const r = await call<{ user_id?: unknown }>("whoami", "GET", "/_matrix/client/v3/account/whoami");
      if (!r.ok) return r;
      const id = typeof r.value.user_id === "string" ? parseUserId(r.value.user_id) : undefined;
      return id ? ok(id) : fail("whoami: the homeserver answered without a valid user_id");
    },

    async login(user, password, deviceId) {
      const body = {
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password,
        ...(deviceId !== undefined ? { device_id: deviceId } : { initial_device_display_name: "matrix-group-sync" }),
      };
      const r = await call<{ user_id?: unknown; access_token?: unknown; device_id?: unknown }>(`logging in as ${user}`, "POST", "/_matrix/client/v3/login", body);
      if (!r.ok) {
        if (r.error.code === "M_FORBIDDEN") return fail(`logging in as ${user}: the homeserver refused the user name or password (homeserver.user, homeserver.password)`, { code: "M_FORBIDDEN" });
        return r;
      }
      const userId = typeof r.value.user_id === "string" ? parseUserId(r.value.user_id) : undefined;
      const { access_token: token, device_id: device } = r.value;
      if (userId === undefined || typeof token !== "string" || token === "" || typeof device !== "string" || device === "") {
        return fail(`logging in as ${user}: the homeserver answered without user_id, access_token or device_id`);
      }
      return ok({ userId, accessToken: token, deviceId: device });
    },

    async deviceId() {
      const r = await call<{ device_id?: unknown }>("whoami", "GET", "/_matrix/client/v3/account/whoami");
      if (!r.ok) return r;
      return ok(typeof r.value.device_id === "string" && r.value.device_id !== "" ? r.value.device_id : undefined);
    },

    keysRequest(endpoint, body) {
      return call<unknown>(`end-to-end keys (${endpoint})`, "POST", `/_matrix/client/v3/keys/${endpoint}`, body);
    },

    sendToDevice(eventType, txnId, body) {
      return call<unknown>(`sending ${eventType} to devices`, "PUT", `/_matrix/client/v3/sendToDevice/${encodeURIComponent(eventType)}/${encodeURIComponent(txnId)}`, body);
    },

    async resolveRoom(roomOrAlias) {
      const asId = roomOrAlias.startsWith("!") ? parseRoomId(roomOrAlias) : undefined;
      if (asId) return ok(asId);
      const alias = parseRoomAlias(roomOrAlias);
      if (!alias) return fail(`${roomOrAlias}: not a room alias or room id`);
      const r = await call<{ room_id?: unknown }>(
        `resolving ${alias}`,
        "GET",
        `/_matrix/client/v3/directory/room/${encodeURIComponent(alias)}`,
      );
      if (!r.ok) {
        if (r.error.code === "M_NOT_FOUND") return fail(`${alias}: no such room alias on the homeserver`, { code: "M_NOT_FOUND" });
        return r;
      }
      const id = typeof r.value.room_id === "string" ? parseRoomId(r.value.room_id) : undefined;
      return id ? ok(id) : fail(`resolving ${alias}: the homeserver answered without a valid room_id`);
    },

    async readRoom(roomId) {
      const r = await call<unknown>(`reading the state of ${roomId}`, "GET", `${room(roomId)}/state`);
      if (!r.ok) {
        // Synapse answers 403 to a user who is not in the room.
        if (r.error.code === "M_FORBIDDEN") {
          return fail(`${r.error.message}: the bot is not in this room; invite it (with a level above the ones it manages) and let it join; nothing was changed`, { code: "M_FORBIDDEN" });
        }
        return r;
      }
      return decodeRoomState(roomId, r.value);
    },

    async invite(roomId, user) {
      const r = await call<unknown>(`inviting ${user} to ${roomId}`, "POST", `${room(roomId)}/invite`, { user_id: user });
      return r.ok ? ok(undefined) : r;
    },

    async kick(roomId, user, reason) {
      const r = await call<unknown>(`kicking ${user} from ${roomId}`, "POST", `${room(roomId)}/kick`, { user_id: user, reason });
      return r.ok ? ok(undefined) : r;
    },

    async setPowerLevels(roomId, content) {
      const r = await call<unknown>(
        `changing power levels in ${roomId}`,
        "PUT",
        `${room(roomId)}/state/m.room.power_levels/`,
        content,
      );
      return r.ok ? ok(undefined) : r;
    },

    async userExists(user) {
      const r = await call<unknown>(`looking up ${user}`, "GET", `/_matrix/client/v3/profile/${encodeURIComponent(user)}`);
      if (r.ok) return ok(true);
      return r.error.code === "M_NOT_FOUND" ? ok(false) : r;
    },

    async setState(roomId, type, stateKey, content) {
      const r = await call<unknown>(
        `setting ${type}${stateKey === "" ? "" : ` ${stateKey}`} in ${roomId}`,
        "PUT",
        `${room(roomId)}/state/${encodeURIComponent(type)}/${encodeURIComponent(stateKey)}`,
        content,
      );
      return r.ok ? ok(undefined) : r;
    },

    async joinedRooms() {
      const r = await call<unknown>("listing the rooms the bot has joined", "GET", "/_matrix/client/v3/joined_rooms");
      if (!r.ok) return r;
      const rooms = parseJoined(r.value);
      return rooms !== undefined ? ok(rooms) : fail("listing joined rooms: the homeserver answered without joined_rooms");
    },

    async joinRoom(roomOrAlias) {
      const r = await call<{ room_id?: unknown }>(`joining ${roomOrAlias}`, "POST", `/_matrix/client/v3/join/${encodeURIComponent(roomOrAlias)}`, {});
      if (!r.ok) return r;
      const id = typeof r.value.room_id === "string" ? parseRoomId(r.value.room_id) : undefined;
      return id ? ok(id) : fail(`joining ${roomOrAlias}: the homeserver answered without a valid room_id`);
    },

    async leaveRoom(roomId) {
      const r = await call<unknown>(`leaving ${roomId}`, "POST", `${room(roomId)}/leave`, {});
      return r.ok ? ok(undefined) : r;
    },

    async sendEvent(roomId, type, content) {
      const r = await call<{ event_id?: unknown }>(`sending to ${roomId}`, "PUT", `${room(roomId)}/send/${encodeURIComponent(type)}/{txn}`, content);
      if (!r.ok) return r;
      return typeof r.value.event_id === "string" ? ok(r.value.event_id) : fail(`sending to ${roomId}: the homeserver answered without an event_id`);
    },

    async redact(roomId, eventId, reason) {
      const r = await call<unknown>(`redacting ${eventId} in ${roomId}`, "PUT", `${room(roomId)}/redact/${encodeURIComponent(eventId)}/{txn}`, reason !== undefined ? { reason } : {});
      return r.ok ? ok(undefined) : r;
    },

    async stateEvent(roomId, type, stateKey) {
      const r = await call<unknown>(`reading ${type} in ${roomId}`, "GET", `${room(roomId)}/state/${encodeURIComponent(type)}/${encodeURIComponent(stateKey)}`);
      if (!r.ok) return r.error.code === "M_NOT_FOUND" ? ok(undefined) : r;
      return r.value !== null && typeof r.value === "object" && !Array.isArray(r.value) ? ok(r.value as Record<string, unknown>) : ok(undefined);
    },

    async createRoom(request) {
      const alias = `#${request.room_alias_name}`;
      const r = await call<{ room_id?: unknown }>(`creating the room ${alias}`, "POST", "/_matrix/client/v3/createRoom", request);
      if (!r.ok) {
        if (r.error.code === "M_ROOM_IN_USE") return fail(`creating the room ${alias}: the alias was taken meanwhile (M_ROOM_IN_USE); nothing was created`, { code: "M_ROOM_IN_USE" });
        return r;
      }
      const id = typeof r.value.room_id === "string" ? parseRoomId(r.value.room_id) : undefined;
      return id ? ok(id) : fail(`creating the room ${alias}: the homeserver answered without a valid room_id`);
    },
  };
}

/**
 * A 429 (or M_LIMIT_EXCEEDED), with the wait the server asked for when it named one: the
 * `Retry-After` header (seconds or an HTTP-date, read against `now`) wins over the deprecated
 * body field `retry_after_ms`.
 */
function rateLimit(err: unknown, now: Date): { retryAfterMs?: number } | undefined {
  if (err instanceof MatrixError) {
    if (err.statusCode !== 429 && err.errcode !== "M_LIMIT_EXCEEDED") return undefined;
    const header = typeof err.body === "object" ? parseRetryAfter(retryAfterOf.get(err.body), now) : undefined;
    if (header !== undefined) return { retryAfterMs: header };
    const ms = err.retryAfterMs;
    return typeof ms === "number" && Number.isFinite(ms) && ms >= 0 ? { retryAfterMs: ms } : {};
  }
  return undefined;
}

function codeOf(err: unknown): { code?: string; cause: unknown } {
  if (err instanceof MatrixError) return { code: err.errcode, cause: err };
  return { cause: err };
}

function explain(err: unknown, url: string): string {
  if (err instanceof MatrixError) return `${err.statusCode} ${err.errcode}: ${err.error}`;
  if (err instanceof HttpTransportError) {
    const f = err.failure;
    switch (f.kind) {
      case "deadline":
        return f.phase === "headers"
          ? `the homeserver at ${url} did not answer in time`
          : `the homeserver at ${url} did not send its whole answer in time (${f.ms} ms, homeserver.requestTimeoutMs)`;
      case "network":
        return f.code === undefined ? `cannot reach the homeserver at ${url}: ${f.detail}` : `cannot reach the homeserver at ${url} (${f.code})`;
      case "redirect":
        return `the homeserver at ${url} ${describeHttpFailure(f)}`;
      case "aborted":
        return `the request to the homeserver at ${url} was cancelled`;
    }
  }
  if (err && typeof err === "object") {
    const e = err as { statusCode?: unknown; code?: unknown; message?: unknown };
    if (typeof e.statusCode === "number") return `HTTP ${e.statusCode} from the homeserver`;
    if (typeof e.code === "string" && ["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ECONNRESET"].includes(e.code)) {
      return `cannot reach the homeserver at ${url} (${e.code})`;
    }
    if (e.code === "ETIMEDOUT" || e.code === "ESOCKETTIMEDOUT") return `the homeserver at ${url} did not answer in time`;
  }
  return describeError(err);
}
