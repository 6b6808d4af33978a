/**
 * The Azure AD / Entra ID identity provider, through Microsoft Graph.
 *
 * Requests per snapshot: discovery (explicit group ids, one request each; explicit group
 * names, one `$filter=displayName eq '…'` each; groups by prefix and the root group's member
 * groups, one request per page), then per group ⌈members/999⌉ pages of
 * `transitiveMembers/microsoft.graph.user` (Graph resolves nesting) and, with `readOwners`,
 * one `owners` request. Never one request per user: disabled accounts and guests are known
 * from the member pages themselves.
 *
 * Transport (graph-transport.ts): Graph requests and the sign-in's token requests follow no
 * redirect and must complete, body included, within `timeoutMs`.
 *
 * Faults: 429 and 503 wait for `Retry-After` (seconds or an HTTP-date; exponential back-off
 * when absent) within a retry budget; a wait longer than 5 minutes fails the request. A group
 * whose pages could not all be read is incomplete (no removals in its rooms) and says why; a
 * credential failure fails the whole snapshot. Only the configured Graph host is ever
 * followed by `@odata.nextLink`.
 */
import { CERTIFICATE_FILE_MAX_BYTES, readRegularFile } from "../files.ts";
import type { HttpTransportError } from "../http/transport.ts";
import { request as httpsRequest } from "node:https";
import { ClientCertificateCredential, ClientSecretCredential, type TokenCredential } from "@azure/identity";
import { AzureLogger } from "@azure/logger";
import { AuthenticationHandler, Client, GraphError } from "@microsoft/microsoft-graph-client";
import { TokenCredentialAuthenticationProvider } from "@microsoft/microsoft-graph-client/authProviders/azureTokenCredentials/index.js";
import type { AzureIdpConfig } from "../config/schema.ts";
import { realSleep, systemClock, type Clock, type Sleep } from "../clock.ts";
import { DEFAULT_MAX_RETRY_WAIT_MS, parseRetryAfter, waitTooLong } from "../http/retry-after.ts";
import type { Logger } from "../log.ts";
import { redactUrl } from "../redact-url.ts";
import { describeError, fail, ok, type Result } from "../result.ts";
import { GraphTransportHandler, identityTransport, type IdentityTransport } from "./graph-transport.ts";
import type {
  DirectoryGroup,
  DirectoryRequest,
  DirectoryRequestObserver,
  DirectorySnapshot,
  DirectoryUser,
  IdentityProvider,
  MemberRef,
  SnapshotHint,
} from "./types.ts";

export type AzureSettings = AzureIdpConfig["azure"];

const GRAPH_SCOPE = "https://graph.microsoft.com/.default";
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const USER_TYPE = "#microsoft.graph.user";
const BACKOFF_START_MS = 1_000;
const BACKOFF_MAX_MS = 60_000;

export interface AzureStats {
  requests: number;
  discoveryRequests: number;
  memberRequests: number;
  ownerRequests: number;
  retries: number;
}

export interface AzureProviderOptions {
  readonly settings: AzureSettings;
  /** User properties the user mapping reads (users.attribute, template {attr:…}). */
  readonly userAttributes: readonly string[];
  readonly log: Logger;
  readonly sleep?: Sleep;
  /** Reads `Retry-After` dates. */
  readonly clock?: Clock;
  /** For tests: a credential other than the one the settings describe. */
  readonly credential?: TokenCredential;
  /** Told of every Graph GET, with its latency (metrics). */
  readonly onRequest?: DirectoryRequestObserver;
}

interface GraphUser {
  id: string;
  userPrincipalName?: string | null;
  mail?: string | null;
  accountEnabled?: boolean | null;
  userType?: string | null;
  [property: string]: unknown;
}

interface Page {
  value: unknown[];
  next: string | undefined;
}

/** A read that could not be completed: makes a group incomplete, or fails discovery. */
class ReadError extends Error {}

/** The credential is refused: nothing can be read at all. */
class AuthError extends Error {}

export class AzureIdentityProvider implements IdentityProvider {
  readonly kind = "azure";
  lastStats: AzureStats = { requests: 0, discoveryRequests: 0, memberRequests: 0, ownerRequests: 0, retries: 0 };
  private readonly settings: AzureSettings;
  private readonly client: Client;
  private readonly graphHost: string;
  private readonly graphBase: string;
  private readonly log: Logger;
  private readonly sleep: Sleep;
  private readonly clock: Clock;
  /** The sign-in's transport; undefined with a credential given by a test. */
  private readonly identity: IdentityTransport | undefined;
  private readonly select: string[];
  private readonly onRequest: DirectoryRequestObserver | undefined;

  constructor(opts: AzureProviderOptions) {
    const s = opts.settings;
    this.settings = s;
    this.onRequest = opts.onRequest;
    routeAzureSdkLogs(opts.log.child("azure-sdk"));
    this.log = opts.log;
    this.sleep = opts.sleep ?? realSleep;
    this.clock = opts.clock ?? systemClock;
    this.graphBase = s.graphBaseUrl.replace(/\/+$/, "");
    this.graphHost = new URL(this.graphBase).host;
    const builtIn = ["id", "userPrincipalName", "mail", "accountEnabled", "userType", "onPremisesSamAccountName"];
    const derived = new Set(["uid"]);
    this.select = [...new Set([...builtIn, ...s.extraAttributes, ...opts.userAttributes.filter((a) => !derived.has(a))])];
    this.identity = opts.credential === undefined ? identityTransport(s.timeoutMs) : undefined;
    const credential = opts.credential ?? makeCredential(s, this.identity);
    const auth = new AuthenticationHandler(new TokenCredentialAuthenticationProvider(credential, { scopes: [GRAPH_SCOPE] }));
    // The whole chain: the token, then our transport. No RedirectHandler (a 3xx is an error)
    // and no RetryHandler (`get` has the retry budget).
    auth.setNext(new GraphTransportHandler(s.timeoutMs));
    this.client = Client.initWithMiddleware({
      middleware: auth,
      baseUrl: new URL(this.graphBase).origin,
      customHosts: new Set([new URL(this.graphBase).hostname]),
    });
  }

  async close(): Promise<void> {
    // HTTP only: nothing stays open between snapshots.
  }

  canonicalGroupRef(ref: string): string {
    return GUID.test(ref) ? ref.toLowerCase() : ref;
  }

  async snapshot(hint?: SnapshotHint): Promise<Result<DirectorySnapshot>> {
    const stats: AzureStats = { requests: 0, discoveryRequests: 0, memberRequests: 0, ownerRequests: 0, retries: 0 };
    this.lastStats = stats;
    try {
      return ok(await this.read(stats, hint));
    } catch (err) {
      const message = `Microsoft Graph (tenant ${this.settings.tenantId}): ${await explainReadFailure(err, this.settings)}`;
      this.log.warn("directory read failed", { error: message });
      return fail(message, { cause: err });
    }
  }

  private async read(stats: AzureStats, hint: SnapshotHint | undefined): Promise<DirectorySnapshot> {
    const s = this.settings;
    const notes: string[] = [];
    const discovered = new Map<string, string>(); // id → displayName

    // 1. Discovery. A failure here fails the snapshot: rooms would silently lose their groups.
    for (const ref of hint?.explicitGroups ?? []) {
      if (GUID.test(ref)) {
        const g = await this.get(stats, "discovery", `/groups/${encodeURIComponent(ref)}?$select=id,displayName`, false, true);
        if (g === undefined) notes.push(`group ${ref} (mapping): no such group in the directory`);
        else addGroup(discovered, g, notes);
      } else {
        const filter = `displayName eq ${odataString(ref)}`;
        for (const item of await this.all(stats, "discovery", `/groups?$filter=${encodeURIComponent(filter)}&$select=id,displayName&$top=999`, false)) {
          addGroup(discovered, item, notes);
        }
      }
    }
    if (hint?.conventionPrefix !== undefined) {
      const filter = `startswith(displayName,${odataString(hint.conventionPrefix)})`;
      for (const item of await this.all(stats, "discovery", `/groups?$filter=${encodeURIComponent(filter)}&$select=id,displayName&$top=999`, false)) {
        addGroup(discovered, item, notes);
      }
    }
    if (s.rootGroupId !== undefined) {
      const path = `/groups/${encodeURIComponent(s.rootGroupId)}/members/microsoft.graph.group?$select=id,displayName&$count=true&$top=999`;
      for (const item of await this.all(stats, "discovery", path, true)) addGroup(discovered, item, notes);
    }

    // 2. Members (transitive, users only) and owners of every discovered group.
    const users = new Map<string, DirectoryUser>();
    const groups = new Map<string, DirectoryGroup>();
    let guestsSkipped = 0;
    let othersIgnored = 0;
    const seenUser = (raw: GraphUser): MemberRef | undefined => {
      const user = this.toUser(raw);
      if (user === "guest") {
        guestsSkipped++;
        return undefined;
      }
      if (user === undefined) return undefined;
      if (!users.has(user.id)) users.set(user.id, user);
      return { kind: "user", id: user.id };
    };
    const selectUsers = this.select.join(",");
    for (const [id, name] of discovered) {
      // Discovery by prefix is case-insensitive on the server: read only what the mapping uses.
      if (hint !== undefined && !hint.isMapped({ id, name })) continue;
      const members: MemberRef[] = [];
      const owners: MemberRef[] = [];
      let incompleteReason: string | undefined;
      try {
        const path = `/groups/${encodeURIComponent(id)}/transitiveMembers/microsoft.graph.user?$select=${selectUsers}&$top=${s.pageSize}&$count=true`;
        for (const item of await this.all(stats, "members", path, true)) {
          const u = decodeUser(item);
          if (u === "other") othersIgnored++;
          else if (u === "unknown") throw new ReadError(`a member has an unknown type ${describeType(item)}; not guessing what it is`);
          else if (u === undefined) throw new ReadError("a member is not a valid user object (no id)");
          else if (typeof u.userPrincipalName !== "string" || u.userPrincipalName === "") {
            // Without User.Read.All, Graph returns members with only their id: reading that as
            // "no usable users" would empty every room.
            throw new ReadError(
              `member ${u.id} came back without userPrincipalName; does the app have the User.Read.All permission?`,
            );
          } else {
            const ref = seenUser(u);
            if (ref !== undefined) members.push(ref);
          }
        }
        if (s.readOwners) {
          const ownersPath = `/groups/${encodeURIComponent(id)}/owners?$select=${selectUsers}&$top=999`;
          for (const item of await this.all(stats, "owners", ownersPath, false)) {
            const u = decodeUser(item);
            if (u === "other" || u === "unknown" || u === undefined) continue; // service principals own groups too
            const ref = seenUser(u);
            if (ref !== undefined) owners.push(ref);
          }
        }
      } catch (err) {
        if (err instanceof AuthError) throw err;
        incompleteReason = describeError(err);
        notes.push(`group ${name}: ${incompleteReason}; its rooms get no removals this run`);
      }
      groups.set(id, {
        id,
        name,
        members,
        ...(s.readOwners ? { owners } : {}),
        complete: incompleteReason === undefined,
        ...(incompleteReason !== undefined ? { incompleteReason } : {}),
      });
    }
    if (guestsSkipped > 0) notes.push(`${guestsSkipped} guest account membership(s) skipped (azure.guests: skip)`);
    if (othersIgnored > 0) notes.push(`${othersIgnored} member(s) that are not users ignored`);
    this.log.debug("graph snapshot", { ...stats, groups: groups.size, users: users.size });
    return { groups, users, notes };
  }

  private toUser(raw: GraphUser): DirectoryUser | "guest" | undefined {
    const upn = typeof raw.userPrincipalName === "string" ? raw.userPrincipalName : undefined;
    const guest = raw.userType === "Guest" || (upn?.includes("#EXT#") ?? false);
    if (guest && this.settings.guests === "skip") return "guest";
    const attributes: Record<string, string> = {};
    for (const [k, v] of Object.entries(raw)) if (typeof v === "string" && k !== "@odata.type") attributes[k] = v;
    const uid = upn === undefined ? undefined : guest ? upn.slice(0, upn.indexOf("#EXT#")) : upn.slice(0, upn.lastIndexOf("@"));
    if (uid !== undefined && uid !== "") attributes["uid"] = uid.toLowerCase();
    return { id: raw.id.toLowerCase(), attributes, enabled: raw.accountEnabled !== false };
  }

  /** Every item of a paged collection, following `@odata.nextLink` on the Graph host only. */
  private async all(stats: AzureStats, kind: "discovery" | "members" | "owners", path: string, advanced: boolean): Promise<unknown[]> {
    const items: unknown[] = [];
    let next: string | undefined = path;
    let page = 0;
    while (next !== undefined) {
      page++;
      const body = await this.get(stats, kind, next, advanced, false);
      const decoded = decodePage(body, page);
      items.push(...decoded.value);
      if (decoded.next !== undefined) {
        const url = safeUrl(decoded.next);
        if (url === undefined || url.protocol !== "https:" || url.host !== this.graphHost) {
          throw new ReadError(`page ${page} links to ${decoded.next}, which is not on the Graph host ${this.graphHost}; not followed`);
        }
      }
      next = decoded.next;
    }
    return items;
  }

  /** One GET with the retry budget. `notFoundOk`: a 404 gives undefined. */
  private async get(
    stats: AzureStats,
    kind: "discovery" | "members" | "owners",
    pathOrUrl: string,
    advanced: boolean,
    notFoundOk: boolean,
  ): Promise<unknown> {
    const url = pathOrUrl.startsWith("https://") ? pathOrUrl : `${this.graphBase}${pathOrUrl}`;
    for (let attempt = 0; ; attempt++) {
      stats.requests++;
      if (kind === "discovery") stats.discoveryRequests++;
      else if (kind === "members") stats.memberRequests++;
      else stats.ownerRequests++;
      const started = performance.now();
      const observe = (outcome: DirectoryRequest["outcome"]): void =>
        this.onRequest?.({ provider: "azure", operation: kind, outcome, seconds: (performance.now() - started) / 1000 });
      this.identity?.takeFailure(); // only a failure of this request's sign-in counts below
      try {
        let request = this.client.api(url);
        if (advanced) request = request.header("ConsistencyLevel", "eventual");
        const body = (await request.get()) as unknown;
        observe("ok");
        return body;
      } catch (err) {
        if (err instanceof GraphError && err.code === "HttpTransportError") {
          // No answer in time, a redirect, no connection: said as it is, never retried.
          observe("error");
          throw new ReadError(err.message);
        }
        const status = err instanceof GraphError ? err.statusCode : undefined;
        observe(status === 429 || status === 503 ? "throttled" : status === 404 && notFoundOk ? "ok" : "error");
        // MSAL says "network_error" for any failure of the sign-in's transport: say which.
        const signIn = this.identity?.takeFailure();
        if (signIn !== undefined && isAuthFailure(err)) throw new AuthError(signInTransportMessage(signIn, this.settings));
        if (isAuthFailure(err)) throw new AuthError(authMessage(err));
        if (status === 404 && notFoundOk) return undefined;
        if ((status === 429 || status === 503) && attempt < this.settings.maxRetries) {
          const asked = retryAfterMs(err, this.clock.now());
          if (asked !== undefined && asked > DEFAULT_MAX_RETRY_WAIT_MS) throw new ReadError(waitTooLong(`Graph (${status})`, asked, DEFAULT_MAX_RETRY_WAIT_MS));
          const wait = asked ?? Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** attempt);
          stats.retries++;
          this.log.debug("graph throttled, waiting", { status, waitMs: wait, attempt });
          await this.sleep(wait);
          continue;
        }
        const what = describeGraphError(err);
        if (status === 429 || status === 503) {
          throw new ReadError(`still throttled (${status}) after ${this.settings.maxRetries} retries: ${what}`);
        }
        throw new ReadError(what);
      }
    }
  }
}

/**
 * The Azure SDK logs (only when AZURE_LOG_LEVEL is set) through @azure/logger, to stderr by
 * default: into our sink instead, where secrets are masked like everywhere else.
 */
function routeAzureSdkLogs(log: Logger): void {
  AzureLogger.log = (...args: unknown[]) => {
    log.debug("azure sdk", { detail: args.map((a) => (typeof a === "string" ? a : describeError(a))).join(" ") });
  };
}

function makeCredential(s: AzureSettings, transport: IdentityTransport | undefined): TokenCredential {
  // Token and discovery requests over our transport: no redirects, idp.azure.timeoutMs for the whole answer.
  const options = { authorityHost: s.authorityHost, disableInstanceDiscovery: true, ...(transport ? { httpClient: transport.httpClient } : {}) };
  if (s.certificateFile !== undefined) {
    const read = readRegularFile(s.certificateFile, CERTIFICATE_FILE_MAX_BYTES, "idp.azure.certificateFile");
    if (!read.ok) throw new Error(`certificateFile: ${read.message}`);
    return new ClientCertificateCredential(s.tenantId, s.clientId, { certificate: read.text }, options);
  }
  if (s.clientSecret === undefined) throw new Error("azure: no client secret or certificate");
  return new ClientSecretCredential(s.tenantId, s.clientId, s.clientSecret, options);
}

/** An OData string literal: single quotes, with ' doubled. */
export function odataString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

function addGroup(into: Map<string, string>, item: unknown, notes: string[]): void {
  const g = item as { id?: unknown; displayName?: unknown } | null;
  if (g === null || typeof g !== "object" || typeof g.id !== "string" || !GUID.test(g.id)) {
    notes.push("a group without a valid id was ignored");
    return;
  }
  into.set(g.id.toLowerCase(), typeof g.displayName === "string" ? g.displayName : g.id);
}

function decodePage(body: unknown, page: number): Page {
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw new ReadError(`page ${page}: the answer is not a JSON object`);
  const b = body as { value?: unknown; "@odata.nextLink"?: unknown };
  if (!Array.isArray(b.value)) throw new ReadError(`page ${page}: the answer has no "value" list`);
  const next = b["@odata.nextLink"];
  if (next !== undefined && typeof next !== "string") throw new ReadError(`page ${page}: "@odata.nextLink" is not a string`);
  return { value: b.value as unknown[], next };
}

/** Directory object types that can be members or owners and are not users: ignored. */
const OTHER_TYPES = new Set([
  "#microsoft.graph.group",
  "#microsoft.graph.device",
  "#microsoft.graph.servicePrincipal",
  "#microsoft.graph.orgContact",
  "#microsoft.graph.application",
]);

/** A user object; "other" for a known non-user type; "unknown" for a type we do not know; undefined when malformed. */
function decodeUser(item: unknown): GraphUser | "other" | "unknown" | undefined {
  if (item === null || typeof item !== "object") return undefined;
  const u = item as Record<string, unknown>;
  const type = u["@odata.type"];
  if (type !== undefined && type !== USER_TYPE) return typeof type === "string" && OTHER_TYPES.has(type) ? "other" : "unknown";
  if (typeof u["id"] !== "string" || !GUID.test(u["id"])) return undefined;
  return u as GraphUser;
}

function describeType(item: unknown): string {
  const type = (item as Record<string, unknown>)["@odata.type"];
  return typeof type === "string" ? JSON.stringify(type.slice(0, 80)) : "(not a string)";
}

function safeUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

function retryAfterMs(err: unknown, now: Date): number | undefined {
  return err instanceof GraphError ? parseRetryAfter(err.headers?.get("retry-after"), now) : undefined;
}

const SIGN_IN_FAILURE = /AuthenticationError|AuthenticationRequiredError|CredentialUnavailableError|AADSTS\d+|invalid_client|unauthorized_client|invalid_tenant/;

/** The credential was refused (the Graph client wraps that in a GraphError with status -1), or Graph said 401/403. */
function isAuthFailure(err: unknown): boolean {
  if (err instanceof GraphError && (err.statusCode === 401 || err.statusCode === 403)) return true;
  const e = err as { name?: unknown; code?: unknown; message?: unknown };
  return [e.name, e.code, e.message].some((v) => typeof v === "string" && SIGN_IN_FAILURE.test(v));
}

function authMessage(err: unknown): string {
  if (err instanceof GraphError && (err.statusCode === 401 || err.statusCode === 403)) {
    if (err.statusCode === 403) {
      return `${describeGraphError(err)} — the app needs the application permissions GroupMember.Read.All and User.Read.All (and Group.Read.All for discovery)`;
    }
    return `Graph refused the access token: ${describeGraphError(err)}`;
  }
  const e = err as { code?: unknown };
  const text = `${typeof e.code === "string" ? e.code : ""} ${describeError(err)}`;
  if (/invalid_client|AADSTS7000215|AADSTS7000222|AADSTS700027/.test(text)) return `sign-in refused: invalid client secret or certificate (invalid_client)`;
  if (/AADSTS700016|unauthorized_client/.test(text)) return `sign-in refused: unknown application (client) id`;
  if (/AADSTS90002|invalid_tenant/.test(text)) return `sign-in refused: unknown tenant`;
  return `sign-in failed: ${firstLine(text)}`;
}

/**
 * What a failed read says. MSAL reports an unknown tenant, an authority it cannot reach and
 * one whose certificate is not trusted all alike, as `endpoints_resolution_error`: it drops
 * the cause while fetching the tenant's OpenID configuration. For that error the
 * configuration is fetched once more, by us and without credentials, to tell which it is.
 */
async function explainReadFailure(err: unknown, s: AzureSettings): Promise<string> {
  if (!(err instanceof AuthError) || !/endpoints_resolution_error/.test(err.message)) return describeError(err);
  return diagnoseAuthority(s);
}

/**
 * A sign-in request that got no usable answer, in the same words as `diagnoseAuthority`: an
 * untrusted certificate, an authority that cannot be reached; otherwise the transport's own
 * words (no answer in time, a redirect).
 */
function signInTransportMessage(e: HttpTransportError, s: AzureSettings): string {
  const f = e.failure;
  const said = f.kind === "network" ? connectionProblem(redactUrl(s.authorityHost), f.code ?? "", f.detail) : undefined;
  return said ?? `sign-in failed: ${e.message}`;
}

/** An untrusted certificate or an authority that cannot be reached, said for an operator; else undefined. */
function connectionProblem(authority: string, code: string, detail: string): string | undefined {
  if (UNTRUSTED_CERT.test(code)) {
    return (
      `sign-in failed: the authority at ${authority} presented a TLS certificate that is not trusted (${code}: ${firstLine(detail)}); ` +
      `check idp.azure.authorityHost, or make its CA trusted (NODE_EXTRA_CA_CERTS)`
    );
  }
  if (UNREACHABLE.has(code)) return `sign-in failed: cannot reach the authority at ${authority} (${code}); check idp.azure.authorityHost and the network`;
  return undefined;
}

/** Errors of a TLS handshake whose certificate Node does not accept. */
const UNTRUSTED_CERT = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|HOSTNAME_MISMATCH/;
/** Errors of a connection that was never made or that broke. */
const UNREACHABLE = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ECONNRESET", "ETIMEDOUT", "EPIPE"]);
const OPENID_BODY_MAX = 64 * 1024;

async function diagnoseAuthority(s: AzureSettings): Promise<string> {
  const authority = redactUrl(s.authorityHost);
  const url = new URL(`${encodeURIComponent(s.tenantId)}/v2.0/.well-known/openid-configuration`, s.authorityHost.replace(/\/*$/, "/"));
  const answer = await fetchOnce(url, s.timeoutMs);
  if (answer.kind === "error") {
    const code = answer.code ?? "";
    if (code === "TIMEOUT") return `sign-in failed: the authority at ${authority} did not answer within ${s.timeoutMs} ms (idp.azure.timeoutMs)`;
    const said = connectionProblem(authority, code, answer.message);
    if (said !== undefined) return said;
    return `sign-in failed: cannot read the OpenID configuration at ${authority}: ${firstLine(answer.message)}`;
  }
  const body = parseJsonObject(answer.body);
  const text = `${typeof body?.["error"] === "string" ? body["error"] : ""} ${typeof body?.["error_description"] === "string" ? body["error_description"] : ""}`;
  if (/invalid_tenant|AADSTS90002/.test(text)) {
    return `sign-in refused: unknown tenant: the authority at ${authority} does not know tenant ${s.tenantId} (AADSTS90002); check idp.azure.tenantId`;
  }
  if (answer.status === 200 && typeof body?.["token_endpoint"] === "string") {
    return `sign-in failed: the authority's OpenID configuration could not be read (endpoints_resolution_error), though ${authority} answers it now; try again`;
  }
  const code = /AADSTS\d+/.exec(text)?.[0];
  return (
    `sign-in failed: the authority at ${authority} answered HTTP ${answer.status}${code !== undefined ? ` (${code})` : ""} instead of the tenant's OpenID configuration; ` +
    `check idp.azure.authorityHost`
  );
}

type FetchAnswer = { kind: "answer"; status: number; body: string } | { kind: "error"; code: string | undefined; message: string };

/** One GET, no redirect followed, the body cut at OPENID_BODY_MAX; never throws. */
function fetchOnce(url: URL, timeoutMs: number): Promise<FetchAnswer> {
  return new Promise((resolve) => {
    const req = httpsRequest(url, { method: "GET", headers: { accept: "application/json" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        if (body.length < OPENID_BODY_MAX) body += chunk;
      });
      res.on("end", () => resolve({ kind: "answer", status: res.statusCode ?? 0, body }));
      res.on("error", (err) => resolve({ kind: "error", code: (err as NodeJS.ErrnoException).code, message: describeError(err) }));
    });
    req.setTimeout(timeoutMs, () => {
      resolve({ kind: "error", code: "TIMEOUT", message: `no answer within ${timeoutMs} ms` });
      req.destroy();
    });
    req.on("error", (err) => resolve({ kind: "error", code: (err as NodeJS.ErrnoException).code, message: describeError(err) }));
    req.end();
  });
}

function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function describeGraphError(err: unknown): string {
  if (err instanceof GraphError) {
    const code = err.code ?? "";
    return `HTTP ${err.statusCode}${code ? ` ${code}` : ""}: ${firstLine(err.message)}`;
  }
  return firstLine(describeError(err));
}

function firstLine(text: string): string {
  const line = text.split("\n")[0] ?? text;
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}
