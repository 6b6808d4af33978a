/**
 * A `request`-compatible function for matrix-bot-sdk (`setRequestFn`) over our transport, so
 * that the homeserver's client API gets no redirects and a total deadline like every other
 * request with credentials (see transport.ts).
 *
 * It honours what the SDK passes (lib/http.js `doHttpRequest`, MatrixClient
 * `uploadContentFromUrl`): `uri`, `method`, `qs` (repeated keys for lists, as Node's
 * querystring does with `useQuerystring`), `body` (a string or a Buffer) or `json`, `headers`,
 * `timeout` (here the deadline of the whole exchange), `encoding: null` (a Buffer body, for
 * media). It answers as `request` does: `(err, response {statusCode, headers, body}, body)`,
 * with header names in lower case and the body a string unless a Buffer was asked for.
 */
import { headersObject, HttpTransportError, send } from "./transport.ts";

/** What matrix-bot-sdk's own doRequest uses when a caller names no timeout. */
const DEFAULT_DEADLINE_MS = 60_000;

export interface SdkResponse {
  statusCode: number;
  headers: Record<string, string>;
  body: unknown;
}

export type SdkRequestCallback = (err: unknown, res: SdkResponse | undefined, body: unknown) => void;

interface SdkRequest {
  readonly url: string;
  readonly method: string;
  readonly headers: Record<string, string>;
  readonly body: string | Uint8Array | undefined;
  readonly deadlineMs: number;
  readonly binary: boolean;
}

/** The `request` signature. Calls `cb` exactly once; never throws. */
export function requestOverTransport(params: unknown, cb: SdkRequestCallback): void {
  const decoded = decodeParams(params);
  if (typeof decoded === "string") {
    cb(new Error(`matrix-bot-sdk request: ${decoded}`), undefined, undefined);
    return;
  }
  const origin = safeOrigin(decoded.url);
  void send({
    url: decoded.url,
    method: decoded.method,
    headers: decoded.headers,
    ...(decoded.body !== undefined ? { body: decoded.body } : {}),
    deadlineMs: decoded.deadlineMs,
  }).then((r) => {
    if (!r.ok) {
      cb(new HttpTransportError(r.error, origin), undefined, undefined);
      return;
    }
    const body = decoded.binary ? Buffer.from(r.value.body) : new TextDecoder().decode(r.value.body);
    cb(null, { statusCode: r.value.status, headers: headersObject(r.value.headers), body }, body);
  });
}

function decodeParams(params: unknown): SdkRequest | string {
  if (params === null || typeof params !== "object") return "no parameters";
  const p = params as Record<string, unknown>;
  const uri = p["uri"] ?? p["url"];
  if (typeof uri !== "string") return "no uri";
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return "the uri is not a URL";
  }
  const qs = p["qs"];
  if (qs !== null && qs !== undefined) {
    if (typeof qs !== "object") return "qs is not an object";
    for (const [key, value] of Object.entries(qs as Record<string, unknown>)) {
      if (value === undefined) continue;
      for (const v of Array.isArray(value) ? (value as unknown[]) : [value]) url.searchParams.append(key, queryValue(v));
    }
  }
  const headers: Record<string, string> = {};
  const h = p["headers"];
  if (h !== null && h !== undefined) {
    if (typeof h !== "object") return "headers is not an object";
    for (const [name, value] of Object.entries(h as Record<string, unknown>)) {
      if (typeof value === "string") headers[name] = value;
      else if (typeof value === "number") headers[name] = String(value);
    }
  }
  let body: string | Uint8Array | undefined;
  const b = p["body"];
  const json = p["json"];
  if (typeof b === "string" || b instanceof Uint8Array) body = b;
  else if (b !== undefined && b !== null && json === true) body = JSON.stringify(b);
  else if (b !== undefined && b !== null) return "body is neither a string nor a Buffer";
  else if (json !== undefined && json !== null && typeof json === "object") body = JSON.stringify(json);
  if (body !== undefined && json !== undefined && !Object.keys(headers).some((n) => n.toLowerCase() === "content-type")) {
    headers["Content-Type"] = "application/json";
  }
  const timeout = p["timeout"];
  const deadlineMs = typeof timeout === "number" && Number.isFinite(timeout) && timeout > 0 ? timeout : DEFAULT_DEADLINE_MS;
  const method = typeof p["method"] === "string" ? p["method"].toUpperCase() : "GET";
  return { url: url.toString(), method, headers, body, deadlineMs, binary: p["encoding"] === null };
}

/** As Node's querystring writes a value: primitives as text, anything else empty. */
function queryValue(v: unknown): string {
  if (typeof v === "string") return v;
  if ((typeof v === "number" && Number.isFinite(v)) || typeof v === "bigint" || typeof v === "boolean") return String(v);
  return "";
}

function safeOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "(unknown server)";
  }
}
