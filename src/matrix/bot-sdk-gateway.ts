/**
 * The MatrixGateway over matrix-bot-sdk. Exceptions become Result values here, once.
 *
 * Rate limits: matrix-bot-sdk has no retry of its own; it throws a MatrixError with
 * `retryAfterMs` read from the deprecated body field only. The spec (v1.10+) says servers
 * SHOULD send `Retry-After`, so `installTransportBridge` copies that header into the error
 * body at the transport edge. A 429 waits for exactly that long (or backs off exponentially
 * when the server gave nothing) and is retried up to `maxRetries` times. No fixed sleeps.
 */
import { getRequestFn, LogService, MatrixClient, MatrixError, setRequestFn, type ILogger } from "matrix-bot-sdk";
import { realSleep, type Sleep } from "../clock.ts";
import type { Logger } from "../log.ts";
import { describeError, fail, ok, type Result } from "../result.ts";
import type { Membership, ObservedRoom, PowerLevelsContent } from "../reconcile/types.ts";
import type { MatrixGateway } from "./gateway.ts";
import { parseRoomAlias, parseRoomId, parseUserId, type RoomId, type UserId } from "./ids.ts";

export interface GatewayOptions {
  readonly homeserverUrl: string;
  readonly accessToken: string;
  readonly requestTimeoutMs: number;
  /** How many times one request is retried after a 429. */
  readonly maxRetries: number;
  readonly log: Logger;
  readonly sleep?: Sleep;
  /**
   * Once aborted, no request is sent any more (not even a retry after a 429): every call
   * fails at once. Serve aborts it when this replica loses the leader lock.
   */
  readonly signal?: AbortSignal;
}

const MEMBERSHIPS: ReadonlySet<string> = new Set(["join", "invite", "leave", "ban", "knock"]);
const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 60_000;

type RequestCallback = (
  err: unknown,
  res: { statusCode?: number; headers?: Record<string, unknown>; body?: unknown } | undefined,
  body: unknown,
) => void;
type RequestFn = (params: unknown, cb: RequestCallback) => unknown;

let bridgeInstalled = false;
let observer: ((status: number, ms: number) => void) | undefined;

/** Called after every homeserver answer (status, milliseconds): for metrics. */
export function observeHomeserverResponses(fn: ((status: number, ms: number) => void) | undefined): void {
  observer = fn;
}

/**
 * Wraps the SDK's transport once per process:
 * - copies a 429's `Retry-After` header (seconds) into the body's `retry_after_ms`, the only
 *   place the SDK looks;
 * - parses a JSON body once (the SDK would parse the same text twice, which dominates the
 *   cost of reading a room of 10,000 members).
 */
export function installTransportBridge(): void {
  if (bridgeInstalled) return;
  bridgeInstalled = true;
  const inner = getRequestFn() as RequestFn;
  const wrapped: RequestFn = (params, cb) => {
    const started = performance.now();
    return inner(params, (err, res, body) => {
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
      if (res.statusCode === 429) parsed = withRetryAfter(parsed, res.headers?.["retry-after"]);
      res.body = parsed;
      cb(err, res, parsed);
    });
  };
  setRequestFn(wrapped);
}

function isJsonResponse(headers: Record<string, unknown> | undefined): boolean {
  const type = headers?.["content-type"];
  return typeof type === "string" && type.toLowerCase().includes("json");
}

function withRetryAfter(body: unknown, header: unknown): unknown {
  const seconds = typeof header === "string" && header.trim() !== "" ? Number(header) : NaN;
  if (!Number.isFinite(seconds) || seconds < 0) return body;
  if (body && typeof body === "object" && !Array.isArray(body)) {
    return { ...(body as Record<string, unknown>), retry_after_ms: seconds * 1000 };
  }
  return { errcode: "M_LIMIT_EXCEEDED", error: "Too Many Requests", retry_after_ms: seconds * 1000 };
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
  const client = new MatrixClient(opts.homeserverUrl, opts.accessToken);
  const sleep = opts.sleep ?? realSleep;
  const log = opts.log;

  const signal = opts.signal;
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
    for (let attempt = 0; ; attempt++) {
      if (halted()) return fail(`${what}: not sent: this process has stopped acting (it is no longer the leader, or is shutting down)`, { code: "M_STOPPED" });
      try {
        return ok((await client.doRequest(method, path, null, body ?? null, opts.requestTimeoutMs)) as T);
      } catch (err) {
        const limited = rateLimit(err);
        if (limited) {
          if (attempt >= opts.maxRetries) {
            return fail(`${what}: still rate-limited by the homeserver after ${opts.maxRetries} retries`, { code: "M_LIMIT_EXCEEDED" });
          }
          const delay = limited.retryAfterMs ?? Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** attempt);
          log.debug("rate limited, waiting", { what, waitMs: delay, attempt });
          await wait(delay);
          continue;
        }
        return fail(`${what}: ${explain(err, opts.homeserverUrl)}`, codeOf(err));
      }
    }
  }

  const room = (id: string): string => `/_matrix/client/v3/rooms/${encodeURIComponent(id)}`;

  return {
    async whoami() {
      const r = await call<{ user_id?: unknown }>("whoami", "GET", "/_matrix/client/v3/account/whoami");
      if (!r.ok) return r;
      const id = typeof r.value.user_id === "string" ? parseUserId(r.value.user_id) : undefined;
      return id ? ok(id) : fail("whoami: the homeserver answered without a valid user_id");
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
      if (!r.ok) return r;
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
  };
}

/** A 429 (or M_LIMIT_EXCEEDED), with the wait the server asked for when it named one. */
function rateLimit(err: unknown): { retryAfterMs?: number } | undefined {
  if (err instanceof MatrixError) {
    if (err.statusCode !== 429 && err.errcode !== "M_LIMIT_EXCEEDED") return undefined;
    const ms = err.retryAfterMs;
    return typeof ms === "number" && Number.isFinite(ms) && ms >= 0 ? { retryAfterMs: ms } : {};
  }
  // A 429 without a JSON error body: the SDK throws the bare response.
  if (err && typeof err === "object" && (err as { statusCode?: unknown }).statusCode === 429) return {};
  return undefined;
}

function codeOf(err: unknown): { code?: string; cause: unknown } {
  if (err instanceof MatrixError) return { code: err.errcode, cause: err };
  return { cause: err };
}

function explain(err: unknown, url: string): string {
  if (err instanceof MatrixError) return `${err.statusCode} ${err.errcode}: ${err.error}`;
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

/** Decodes `/state` at the boundary: anything malformed is skipped, never trusted. */
export function decodeRoomState(roomId: RoomId, raw: unknown): Result<ObservedRoom> {
  if (!Array.isArray(raw)) return fail(`reading the state of ${roomId}: the homeserver did not answer with a list of events`);
  const members: Record<string, Membership> = {};
  let powerLevels: PowerLevelsContent | undefined;
  let roomVersion = "1";
  let createSender: UserId | undefined;
  let additionalCreators: UserId[] = [];
  for (const ev of raw as unknown[]) {
    if (!ev || typeof ev !== "object") continue;
    const e = ev as { type?: unknown; state_key?: unknown; content?: unknown; sender?: unknown };
    const content = e.content && typeof e.content === "object" && !Array.isArray(e.content) ? (e.content as Record<string, unknown>) : undefined;
    if (typeof e.type !== "string" || typeof e.state_key !== "string" || !content) continue;
    switch (e.type) {
      case "m.room.member": {
        const user = parseUserId(e.state_key);
        const m = content["membership"];
        if (user && typeof m === "string" && MEMBERSHIPS.has(m)) members[user] = m as Membership;
        break;
      }
      case "m.room.power_levels":
        if (e.state_key === "") powerLevels = content;
        break;
      case "m.room.create":
        if (e.state_key === "") {
          const v = content["room_version"];
          roomVersion = typeof v === "string" ? v : "1";
          createSender = typeof e.sender === "string" ? parseUserId(e.sender) : undefined;
          const extra = content["additional_creators"];
          additionalCreators = Array.isArray(extra)
            ? extra.flatMap((x) => (typeof x === "string" ? (parseUserId(x) ?? []) : []))
            : [];
        }
        break;
      default:
        break;
    }
  }
  const creators = hasCreatorPower(roomVersion) && createSender ? [createSender, ...additionalCreators] : [];
  return ok({
    roomId,
    roomVersion,
    creators,
    members,
    ...(powerLevels ? { powerLevels } : {}),
    ...(createSender ? { createSender } : {}),
  });
}

/** Room versions 12 and later give creators infinite power (and forbid them in `users`). */
export function hasCreatorPower(roomVersion: string): boolean {
  const n = Number(roomVersion);
  return Number.isInteger(n) ? n >= 12 : roomVersion === "org.matrix.hydra.11";
}
