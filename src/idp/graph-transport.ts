/**
 * Our transport (http/transport.ts: no redirect followed, one deadline for the whole answer)
 * under the two Microsoft clients:
 *
 * - `GraphTransportHandler`, the last middleware of the Graph client, in place of its
 *   HTTPMessageHandler (whose fetch follows redirects, with no deadline at all). The chain has
 *   no RedirectHandler and no RetryHandler: azure.ts keeps its own retry budget.
 * - `identityTransport`, the HTTP client of the @azure/identity credential, for the token and
 *   OpenID discovery requests MSAL makes. Its own pipeline follows a same-origin redirect (a
 *   307 re-posts the client secret) and has only an idle timeout; with this client a 3xx is an
 *   error and the deadline covers the body.
 */
import type { ClientSecretCredentialOptions } from "@azure/identity";
import type { Context, Middleware } from "@microsoft/microsoft-graph-client";
import { HttpTransportError, send } from "../http/transport.ts";

type HttpClient = NonNullable<ClientSecretCredentialOptions["httpClient"]>;
type PipelineRequest = Parameters<HttpClient["sendRequest"]>[0];
type PipelineResponse = Awaited<ReturnType<HttpClient["sendRequest"]>>;
type PipelineHeaders = PipelineResponse["headers"];
type RawHeaders = ReturnType<PipelineHeaders["toJSON"]>;

/** Statuses whose answer has no body (the Response constructor refuses one). */
const NULL_BODY = new Set([101, 204, 205, 304]);

export class GraphTransportHandler implements Middleware {
  private readonly deadlineMs: number;

  constructor(deadlineMs: number) {
    this.deadlineMs = deadlineMs;
  }

  async execute(context: Context): Promise<void> {
    // The client's types name DOM types (RequestInfo, RequestInit) this Node project does not
    // load: read the request as what it is at run time, a URL string or a fetch Request, plus options.
    const given: unknown = context.request;
    const init: unknown = context.options;
    const request = given instanceof Request ? given : undefined;
    if (request === undefined && typeof given !== "string") throw new Error("Graph request: neither a URL nor a Request");
    const url = request?.url ?? String(given);
    const options = (init !== null && typeof init === "object" ? init : {}) as { method?: unknown; headers?: unknown; body?: unknown; signal?: unknown };
    const headers = new Headers(request?.headers);
    if (options.headers !== undefined) new Headers(options.headers as ConstructorParameters<typeof Headers>[0]).forEach((value, name) => headers.set(name, value));
    const body = await graphBody(options.body ?? (request !== undefined && request.body !== null ? await request.arrayBuffer() : undefined));
    const method = typeof options.method === "string" ? options.method : (request?.method ?? "GET");
    const r = await send({
      url,
      method,
      headers,
      ...(body !== undefined ? { body } : {}),
      deadlineMs: this.deadlineMs,
      ...(options.signal instanceof AbortSignal ? { signal: options.signal } : {}),
    });
    if (!r.ok) throw new HttpTransportError(r.error, new URL(url).origin);
    const { status } = r.value;
    context.response = new Response(NULL_BODY.has(status) ? null : r.value.body, { status, headers: r.value.headers });
  }
}

async function graphBody(body: unknown): Promise<string | Uint8Array | undefined> {
  if (body === undefined || body === null) return undefined;
  if (typeof body === "string" || body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (body instanceof Blob) return new Uint8Array(await body.arrayBuffer());
  throw new Error("Graph request: a request body of an unsupported kind");
}

/**
 * The credential's HTTP client; `deadlineMs` is idp.azure.timeoutMs (or the request's own
 * timeout when shorter). MSAL reports any failure of it as a bare "network_error", so the
 * last one is kept for `takeFailure` to say what really happened.
 */
export interface IdentityTransport {
  readonly httpClient: HttpClient;
  /** The last transport failure since the previous call, if any (and forgets it). */
  takeFailure(): HttpTransportError | undefined;
}

export function identityTransport(deadlineMs: number): IdentityTransport {
  let last: HttpTransportError | undefined;
  const httpClient: HttpClient = {
    async sendRequest(request: PipelineRequest): Promise<PipelineResponse> {
      const body = request.body;
      if (body !== undefined && body !== null && typeof body !== "string" && !(body instanceof Uint8Array)) {
        throw new Error("token request: a request body of an unsupported kind");
      }
      const abort = new AbortController();
      const like = request.abortSignal;
      const onAbort = (): void => abort.abort();
      if (like?.aborted === true) abort.abort();
      else like?.addEventListener("abort", onAbort);
      try {
        const r = await send({
          url: request.url,
          method: request.method,
          headers: request.headers.toJSON(),
          ...(body !== undefined && body !== null ? { body } : {}),
          deadlineMs: request.timeout > 0 ? Math.min(request.timeout, deadlineMs) : deadlineMs,
          signal: abort.signal,
        });
        if (!r.ok) {
          last = new HttpTransportError(r.error, new URL(request.url).origin);
          throw last;
        }
        return {
          request,
          status: r.value.status,
          headers: pipelineHeaders(r.value.headers),
          bodyAsText: new TextDecoder().decode(r.value.body),
        };
      } finally {
        like?.removeEventListener("abort", onAbort);
      }
    },
  };
  return {
    httpClient,
    takeFailure() {
      const f = last;
      last = undefined;
      return f;
    },
  };
}

/** The pipeline's header map (case-insensitive names), over a copy of fetch's headers. */
function pipelineHeaders(from: Headers): PipelineHeaders {
  const h = new Headers(from);
  return {
    get: (name) => h.get(name) ?? undefined,
    has: (name) => h.has(name),
    set: (name, value) => h.set(name, String(value)),
    delete: (name) => h.delete(name),
    toJSON: () => {
      const out: RawHeaders = {};
      h.forEach((value, name) => {
        out[name] = value;
      });
      return out;
    },
    [Symbol.iterator]: () => h.entries(),
  };
}
