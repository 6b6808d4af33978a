/**
 * A strict local stand-in for the Microsoft identity platform token endpoint and the Microsoft Graph
 * directory endpoints that matrix-group-sync uses, over real HTTPS (see ./test-ca.ts).
 *
 * Rule: "a stand-in that is kinder than the real server hides bugs". Where the published behaviour is
 * known it is reproduced, including its unpleasant parts:
 *
 * Identity platform (learn.microsoft.com/entra/identity-platform, reference-error-codes):
 * - `GET /{tenant}/v2.0/.well-known/openid-configuration` (what MSAL Node asks when
 *   `disableInstanceDiscovery` is set), `/{tenant}/discovery/instance`, `/{tenant}/discovery/v2.0/keys`.
 * - `POST /{tenant}/oauth2/v2.0/token`, client credentials only, form-encoded. A client secret (in the
 *   body or HTTP Basic) or a `private_key_jwt` client assertion (RS256 / PS256, `x5t` or `x5t#S256`,
 *   `aud` = token endpoint, `iss` = `sub` = client id, `exp` in the future). Errors in the AAD shape
 *   `{error, error_description: "AADSTSnnn: ...\r\nTrace ID: ...", error_codes, timestamp, trace_id,
 *   correlation_id, error_uri}` with the documented codes and statuses.
 * - The scope must be `https://graph.microsoft.com/.default` (or the Graph app id + `/.default`).
 *
 * Graph v1.0 (learn.microsoft.com/graph: group-list, group-get, group-list-members,
 * group-list-transitivemembers, group-list-owners, aad-advanced-queries, paging, permissions-overview):
 * - Bearer token issued by this server required (401 `InvalidAuthenticationToken`).
 * - Endpoint permission: GroupMember.Read.All | Group.Read.All | Directory.Read.All, else 403.
 * - "Limited information returned for inaccessible member objects": without User.Read.All a user in
 *   a member list comes back as `{"@odata.type", id}` with every other requested property `null`
 *   (no 403!). Devices, service principals and contacts are always limited here (the app roles that
 *   would unlock them — Device.Read.All, Application.Read.All, OrgContact.Read.All — can be granted).
 * - Advanced queries: an OData cast segment, `$filter`, `$search` or `$orderby` on members /
 *   transitiveMembers / owners need `ConsistencyLevel: eventual` AND `$count=true` (400
 *   `Request_UnsupportedQuery` otherwise, on every page). `$count=true` without the header is silently
 *   ignored (no `@odata.count`), as documented.
 * - Default page 100, `$top` 1..999 (400 "Invalid page size specified"), opaque absolute
 *   `@odata.nextLink` carrying the original query plus `$skiptoken`; the result set is a snapshot taken
 *   at page 1. Unknown/expired skip tokens → 400 `Directory_ExpiredPageToken`.
 * - `$select` honoured and validated (case-insensitive names, canonical names in the output); users
 *   return only the documented default property set without `$select`; directory extension
 *   attributes only with `$select`. `id` is always returned; `@odata.type` only on mixed lists.
 * - `$filter` on /groups: `startswith(displayName,'…')` (case-insensitive, as the directory compares)
 *   and `displayName eq '…'`, OData `''` escaping; syntax errors (e.g. a literal cut by an unencoded
 *   `#`) → 400 `BadRequest` "Invalid filter clause"; other clauses → 400 `Request_UnsupportedQuery`.
 * - Every response carries `request-id` and `client-request-id`; errors carry `innerError`.
 *
 * Known simplifications (deliberate, loud): `$search` and `$expand` are answered 400 (not
 * implemented here); only `displayName` is filterable/sortable; no `/users`, `/delta`, `/$batch`.
 * Every unknown path is logged with console.error and recorded in `unknownRequests()`.
 *
 * Fault injection for tests: throttle, failPage, corruptNextLink, malformedJson, unknownType,
 * revokeApp, expireTokens, expirePageTokens, redirectNext, dripNext.
 */
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Socket } from "node:net";
import {
  X509Certificate,
  constants as cryptoConstants,
  createHash,
  createHmac,
  randomBytes,
  randomUUID,
  timingSafeEqual,
  verify as cryptoVerify,
} from "node:crypto";
import { readFileSync } from "node:fs";
import { ensureTestCa } from "./test-ca.ts";

// ───────────────────────────── public types ─────────────────────────────

/** Application permissions (app roles of Microsoft Graph) the stand-in understands. */
export type GraphRole =
  | "GroupMember.Read.All"
  | "Group.Read.All"
  | "User.Read.All"
  | "Directory.Read.All"
  | "Device.Read.All"
  | "Application.Read.All"
  | "OrgContact.Read.All";

export type EndpointKind =
  | "openid"
  | "token"
  | "groups"
  | "group"
  | "members"
  | "transitiveMembers"
  | "owners"
  | "other";

export const ENDPOINT_KINDS: readonly EndpointKind[] = [
  "openid",
  "token",
  "groups",
  "group",
  "members",
  "transitiveMembers",
  "owners",
  "other",
];

/** The paged list endpoints. */
export type ListKind = "groups" | "members" | "transitiveMembers" | "owners";

export interface GraphServerOptions {
  /** Directory (tenant) id, a GUID. Default: a random one. */
  tenantId?: string;
  /** Access-token lifetime (`expires_in`). Default 3599 s, as Entra ID answers. */
  tokenLifetimeSeconds?: number;
}

export interface AppInput {
  clientId: string;
  /** A client secret value. */
  secret?: string;
  /** PEM of the certificate registered as key credential (a file with key + cert also works: the first certificate is used). */
  certificatePem?: string;
  /** Application permissions granted (admin-consented) to the app. */
  roles: GraphRole[];
  displayName?: string;
}

export interface UserInput {
  id: string;
  userPrincipalName: string;
  accountEnabled: boolean;
  mail?: string | null;
  displayName?: string | null;
  userType?: "Member" | "Guest";
  onPremisesSamAccountName?: string | null;
  onPremisesImmutableId?: string | null;
  onPremisesUserPrincipalName?: string | null;
  givenName?: string | null;
  surname?: string | null;
  jobTitle?: string | null;
  employeeId?: string | null;
  mailNickname?: string | null;
  otherMails?: string[];
  proxyAddresses?: string[];
  /** Directory extension attributes, e.g. `extension_<appIdWithoutDashes>_matrixId`. Returned only with `$select`. */
  [extension: `extension_${string}`]: string | number | boolean | null | undefined;
}

export interface GroupInput {
  id: string;
  displayName: string;
  /** Object ids of users, groups, devices, service principals or contacts (added before). */
  members?: string[];
  /** Object ids of users or service principals. */
  owners?: string[];
  description?: string | null;
  mail?: string | null;
  mailEnabled?: boolean;
  securityEnabled?: boolean;
  groupTypes?: string[];
}

export interface DeviceInput {
  id: string;
  displayName: string;
  deviceId?: string;
  operatingSystem?: string;
}

export interface ServicePrincipalInput {
  id: string;
  displayName: string;
  appId?: string;
}

export interface OrgContactInput {
  id: string;
  displayName: string;
  mail?: string | null;
}

export interface ThrottleOptions {
  /** How many of the next matching requests are refused. */
  count: number;
  /** Default 429. */
  status?: 429 | 503;
  /** `Retry-After` in seconds (default 1); `null` sends no header. */
  retryAfterSeconds?: number | null;
  /** `Retry-After` as this text instead (e.g. an HTTP-date); wins over `retryAfterSeconds`. */
  retryAfterText?: string;
  /** Which requests: an endpoint kind, "graph" (every /v1.0 request, the default) or "any". */
  endpoint?: EndpointKind | "graph" | "any";
}

export interface RedirectNextOptions {
  /** How many of the next matching requests are answered with the redirect. */
  count: number;
  /** Default 302. */
  status?: 301 | 302 | 303 | 307 | 308;
  location: string;
  /** Which requests: an endpoint kind, "graph" (every /v1.0 request, the default) or "any". */
  endpoint?: EndpointKind | "graph" | "any";
}

export interface DripNextOptions {
  /** How many of the next matching answers are drip-fed. */
  count: number;
  /** One byte of the body per this many milliseconds (the headers go at once). */
  intervalMs: number;
  /** Which requests: an endpoint kind, "graph" (every /v1.0 request, the default) or "any". */
  endpoint?: EndpointKind | "graph" | "any";
}

export interface FailPageOptions {
  /** The group whose member / transitiveMembers / owners list fails; omitted = any list (incl. /groups). */
  groupId?: string;
  /** Restrict to one list endpoint. */
  endpoint?: ListKind;
  /** 1-based page number (page 1 is the request without $skiptoken). */
  page: number;
  status: number;
  /** Raw body to send instead of a Graph error object. */
  body?: string;
  /** Content type for `body` (default application/json). */
  contentType?: string;
  /** How many times (default 1). */
  times?: number;
}

export interface CorruptNextLinkOptions {
  groupId: string;
  /** "other-host": https://evil.example.net/…; "http": same host, plain http. */
  to: "other-host" | "http";
  endpoint?: Exclude<ListKind, "groups">;
  /** How many first pages get the corrupted link (default 1). */
  times?: number;
}

export interface MalformedJsonOptions {
  endpoint: EndpointKind;
  /** How many of the next successful responses of that kind are cut in half. */
  count: number;
}

export interface UnknownTypeOptions {
  groupId: string;
  /** Default "#microsoft.graph.orgContact". Anything else is an object type this stand-in knows nothing about. */
  odataType?: string;
  displayName?: string;
}

export interface RequestRecord {
  method: string;
  /** Path and query as received. */
  url: string;
  kind: EndpointKind;
  status: number;
  consistencyLevel: string | null;
}

export interface TokenRequestRecord {
  tenant: string;
  clientId: string | null;
  grantType: string | null;
  scope: string | null;
  /** How the client authenticated. */
  auth: "secret" | "basic" | "assertion" | "none";
  assertionAlg: string | null;
  status: number;
  error: string | null;
}

// ───────────────────────────── helpers ─────────────────────────────

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EXTENSION_RE = /^extension_[A-Za-z0-9]+_[A-Za-z0-9_]+$/;
const GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000";
const GRAPH_RESOURCE = "https://graph.microsoft.com";
const JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const GRAPH_CONTENT_TYPE =
  "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
const MAX_PAGE = 999;
const DEFAULT_PAGE = 100;
const MAX_CURSORS = 20_000;
const MAX_LOG = 20_000;

/** A valid GUID built from a number — handy for bulk fixtures (`guid(7)` → `…-000000000007`). */
export function guid(n: number, family = 0): string {
  const f = (family >>> 0).toString(16).padStart(8, "0");
  const tail = Math.floor(n).toString(16).padStart(12, "0");
  return `${f}-0000-4000-8000-${tail}`;
}

/**
 * Bulk user fixtures for benchmarks: `count` enabled members `user{i}@{domain}` with ids `guid(i, family)`.
 * `matrixIdExtension` adds that extension attribute with `@user{i}:{matrixServer}`.
 */
export function generateUsers(
  count: number,
  opts: { family?: number; domain?: string; matrixIdExtension?: `extension_${string}`; matrixServer?: string } = {},
): UserInput[] {
  const domain = opts.domain ?? "contoso.example";
  const family = opts.family ?? 0xa;
  const out: UserInput[] = new Array<UserInput>(count);
  for (let i = 0; i < count; i++) {
    const u: UserInput = {
      id: guid(i, family),
      userPrincipalName: `user${i}@${domain}`,
      mail: `user${i}@${domain}`,
      accountEnabled: true,
      displayName: `User ${i}`,
      userType: "Member",
    };
    if (opts.matrixIdExtension) u[opts.matrixIdExtension] = `@user${i}:${opts.matrixServer ?? "example.org"}`;
    out[i] = u;
  }
  return out;
}

function b64url(buf: Buffer | string): string {
  return Buffer.from(buf).toString("base64url");
}

function graphDate(d = new Date()): string {
  return d.toISOString().slice(0, 19);
}

function aadTimestamp(d = new Date()): string {
  return `${d.toISOString().slice(0, 19).replace("T", " ")}Z`;
}

/** Percent-encode a query component the way Graph's nextLinks look ($ and , kept readable). */
function encodeQueryComponent(s: string): string {
  return encodeURIComponent(s).replace(/%24/g, "$").replace(/%2C/gi, ",");
}

/** A Graph-shaped error answer (thrown or returned inside the request handlers). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

function httpError(status: number, code: string, message: string): HttpError {
  return new HttpError(status, code, message);
}

function isHttpError(x: unknown): x is HttpError {
  return x instanceof HttpError;
}

// ───────────────────────────── directory schema ─────────────────────────────

type ObjType = "user" | "group" | "device" | "servicePrincipal" | "orgContact" | "unknown";

interface Schema {
  /** OData type name without '#'. */
  odataName: string;
  /** canonical property → default when unset ("array" → [], otherwise null). */
  props: Map<string, "null" | "array">;
  /** lower-case → canonical. */
  lower: Map<string, string>;
  /** Properties returned when there is no $select. */
  defaults: string[];
}

function schema(odataName: string, nullable: string[], arrays: string[], defaults?: string[]): Schema {
  const props = new Map<string, "null" | "array">();
  for (const p of ["id", ...nullable]) props.set(p, "null");
  for (const p of arrays) props.set(p, "array");
  const lower = new Map<string, string>();
  for (const p of props.keys()) lower.set(p.toLowerCase(), p);
  return { odataName, props, lower, defaults: defaults ?? [...props.keys()] };
}

const SCHEMAS: Record<ObjType, Schema> = {
  user: schema(
    "microsoft.graph.user",
    [
      "accountEnabled", "ageGroup", "city", "companyName", "consentProvidedForMinor", "country",
      "createdDateTime", "creationType", "deletedDateTime", "department", "displayName",
      "employeeHireDate", "employeeId", "employeeType", "externalUserState", "faxNumber", "givenName",
      "isResourceAccount", "jobTitle", "lastPasswordChangeDateTime", "legalAgeGroupClassification", "mail",
      "mailNickname", "mobilePhone", "officeLocation", "onPremisesDistinguishedName",
      "onPremisesDomainName", "onPremisesExtensionAttributes", "onPremisesImmutableId",
      "onPremisesLastSyncDateTime", "onPremisesSamAccountName", "onPremisesSecurityIdentifier",
      "onPremisesSyncEnabled", "onPremisesUserPrincipalName", "passwordPolicies", "postalCode",
      "preferredDataLocation", "preferredLanguage", "securityIdentifier", "showInAddressList",
      "signInSessionsValidFromDateTime", "state", "streetAddress", "surname", "usageLocation",
      "userPrincipalName", "userType",
    ],
    ["assignedLicenses", "assignedPlans", "businessPhones", "identities", "imAddresses", "otherMails", "proxyAddresses"],
    // learn.microsoft.com/graph/api/user-list: the default property set.
    [
      "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone", "officeLocation",
      "preferredLanguage", "surname", "userPrincipalName", "id",
    ],
  ),
  group: schema(
    "microsoft.graph.group",
    [
      "classification", "createdDateTime", "deletedDateTime", "description", "displayName",
      "expirationDateTime", "isAssignableToRole", "mail", "mailEnabled", "mailNickname", "membershipRule",
      "membershipRuleProcessingState", "onPremisesDomainName", "onPremisesLastSyncDateTime",
      "onPremisesNetBiosName", "onPremisesSamAccountName", "onPremisesSecurityIdentifier",
      "onPremisesSyncEnabled", "preferredDataLocation", "preferredLanguage", "renewedDateTime",
      "securityEnabled", "securityIdentifier", "theme", "visibility",
    ],
    [
      "groupTypes", "onPremisesProvisioningErrors", "proxyAddresses", "resourceBehaviorOptions",
      "resourceProvisioningOptions", "serviceProvisioningErrors",
    ],
  ),
  device: schema(
    "microsoft.graph.device",
    [
      "accountEnabled", "approximateLastSignInDateTime", "deletedDateTime", "deviceId", "displayName",
      "isCompliant", "isManaged", "operatingSystem", "operatingSystemVersion", "trustType",
    ],
    ["alternativeSecurityIds", "physicalIds"],
  ),
  servicePrincipal: schema(
    "microsoft.graph.servicePrincipal",
    ["accountEnabled", "appDisplayName", "appId", "appOwnerOrganizationId", "deletedDateTime", "displayName", "servicePrincipalType"],
    ["servicePrincipalNames", "tags"],
  ),
  orgContact: schema(
    "microsoft.graph.orgContact",
    ["companyName", "deletedDateTime", "department", "displayName", "givenName", "jobTitle", "mail", "mailNickname", "surname"],
    ["proxyAddresses"],
  ),
  unknown: schema("microsoft.graph.directoryObject", ["deletedDateTime", "displayName"], []),
};

const CAST_TYPES: ReadonlyMap<string, ObjType> = new Map<string, ObjType>([
  ["microsoft.graph.user", "user"],
  ["microsoft.graph.group", "group"],
  ["microsoft.graph.device", "device"],
  ["microsoft.graph.serviceprincipal", "servicePrincipal"],
  ["microsoft.graph.orgcontact", "orgContact"],
]);

/** Union of every known property (what a mixed directoryObject list accepts in $select). */
const ANY_LOWER = new Map<string, string>();
for (const s of Object.values(SCHEMAS)) for (const [l, c] of s.lower) ANY_LOWER.set(l, c);

interface DirObject {
  type: ObjType;
  id: string;
  /** "#microsoft.graph.user" etc.; anything for unknown types. */
  odataType: string;
  props: Record<string, unknown>;
  members?: string[];
  owners?: string[];
}

function readRoleFor(type: ObjType): GraphRole[] {
  switch (type) {
    case "user":
      return ["User.Read.All", "Directory.Read.All"];
    case "group":
      return ["GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"];
    case "device":
      return ["Device.Read.All", "Directory.Read.All"];
    case "servicePrincipal":
      return ["Application.Read.All", "Directory.Read.All"];
    case "orgContact":
      return ["OrgContact.Read.All", "Directory.Read.All"];
    case "unknown":
      return ["Directory.Read.All"];
  }
}

const LIST_ROLES: GraphRole[] = ["GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"];

// ───────────────────────────── internal state types ─────────────────────────────

interface AppRec {
  clientId: string;
  displayName: string;
  secret: string | null;
  cert: { der: Buffer; sha1: Buffer; sha256: Buffer; publicKey: X509Certificate["publicKey"]; notBefore: string; notAfter: string } | null;
  roles: GraphRole[];
  revoked: boolean;
  spObjectId: string;
}

interface TokenClaims {
  aud: string;
  iss: string;
  iat: number;
  nbf: number;
  exp: number;
  appid: string;
  appidacr: string;
  app_displayname: string;
  idp: string;
  idtyp: string;
  oid: string;
  roles: string[];
  sub: string;
  tid: string;
  uti: string;
  ver: string;
}

interface Cursor {
  key: string;
  items: DirObject[];
  offset: number;
  page: number;
  groupId: string | null;
  listKind: ListKind;
}

interface Throttle {
  remaining: number;
  status: 429 | 503;
  retryAfter: number | string | null;
  endpoint: EndpointKind | "graph" | "any";
}

interface Redirect {
  remaining: number;
  status: 301 | 302 | 303 | 307 | 308;
  location: string;
  endpoint: EndpointKind | "graph" | "any";
}

interface Drip {
  remaining: number;
  intervalMs: number;
  endpoint: EndpointKind | "graph" | "any";
}

interface PageFailure {
  groupId: string | null;
  endpoint: ListKind | null;
  page: number;
  status: number;
  body: string | null;
  contentType: string;
  remaining: number;
}

interface LinkCorruption {
  groupId: string;
  to: "other-host" | "http";
  endpoint: Exclude<ListKind, "groups"> | null;
  remaining: number;
}

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  requestId: string;
  clientRequestId: string;
  kind: EndpointKind;
  record: RequestRecord;
}

// ───────────────────────────── the server ─────────────────────────────

export class GraphServer {
  readonly url: string;
  readonly authorityHost: string;
  readonly graphBaseUrl: string;
  readonly tenantId: string;
  /** `${url}/${tenantId}/oauth2/v2.0/token` */
  readonly tokenEndpoint: string;

  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly tokenLifetime: number;
  private readonly signingKey = randomBytes(32);

  private readonly objects = new Map<string, DirObject>();
  private readonly groupOrder: DirObject[] = [];
  private readonly extensions = new Map<string, string>(); // lower → canonical
  private readonly apps = new Map<string, AppRec>();
  /** Ids (`uti`) of tokens issued and not yet force-expired, and of force-expired ones. */
  private readonly liveTokens = new Set<string>();
  private readonly expiredTokens = new Set<string>();

  private readonly cursors = new Map<string, Cursor>();

  private counts: Record<EndpointKind, number> = GraphServer.zeroCounts();
  private tokenCount = 0;
  private readonly tokenLog: TokenRequestRecord[] = [];
  private readonly log: RequestRecord[] = [];
  private readonly unknown: string[] = [];

  private throttles: Throttle[] = [];
  private pageFailures: PageFailure[] = [];
  private linkCorruptions: LinkCorruption[] = [];
  private malformed: { endpoint: EndpointKind; remaining: number }[] = [];
  private redirects: Redirect[] = [];
  private drips: Drip[] = [];
  /** Timers of answers being drip-fed, stopped when the client gives up or on close. */
  private readonly dripTimers = new Set<NodeJS.Timeout>();

  private constructor(server: Server, port: number, tenantId: string, tokenLifetime: number) {
    this.server = server;
    this.url = `https://127.0.0.1:${port}`;
    this.authorityHost = this.url;
    this.graphBaseUrl = `${this.url}/v1.0`;
    this.tenantId = tenantId;
    this.tokenEndpoint = `${this.url}/${tenantId}/oauth2/v2.0/token`;
    this.tokenLifetime = tokenLifetime;
  }

  static async start(opts: GraphServerOptions = {}): Promise<GraphServer> {
    const tenantId = (opts.tenantId ?? randomUUID()).toLowerCase();
    if (!GUID_RE.test(tenantId)) throw new Error(`GraphServer: tenantId must be a GUID, got ${tenantId}`);
    const { certFile, keyFile } = ensureTestCa();
    const server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const port = (server.address() as AddressInfo).port;
    const gs = new GraphServer(server, port, tenantId, opts.tokenLifetimeSeconds ?? 3599);
    server.on("connection", (s: Socket) => {
      gs.sockets.add(s);
      s.on("close", () => gs.sockets.delete(s));
    });
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      gs.handle(req, res).catch((err: unknown) => {
        console.error("[graph-server] internal error", err);
        if (!res.headersSent) {
          res.writeHead(500, { "content-type": "application/json" });
          res.end(JSON.stringify({ error: { code: "InternalServerError", message: String(err) } }));
        } else {
          res.destroy();
        }
      });
    });
    return gs;
  }

  async close(): Promise<void> {
    for (const t of this.dripTimers) clearInterval(t);
    this.dripTimers.clear();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
      for (const s of this.sockets) s.destroy();
    });
  }

  // ─────────────── app registrations ───────────────

  addApp(app: AppInput): void {
    const clientId = app.clientId.toLowerCase();
    if (!GUID_RE.test(clientId)) throw new Error(`addApp: clientId must be a GUID: ${app.clientId}`);
    if (app.secret === undefined && app.certificatePem === undefined) {
      throw new Error("addApp: give a secret, a certificatePem, or both");
    }
    let cert: AppRec["cert"] = null;
    if (app.certificatePem !== undefined) {
      const m = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(app.certificatePem);
      if (!m) throw new Error("addApp: certificatePem holds no PEM certificate");
      const x = new X509Certificate(m[0]);
      cert = {
        der: x.raw,
        sha1: createHash("sha1").update(x.raw).digest(),
        sha256: createHash("sha256").update(x.raw).digest(),
        publicKey: x.publicKey,
        notBefore: x.validFrom,
        notAfter: x.validTo,
      };
    }
    this.apps.set(clientId, {
      clientId,
      displayName: app.displayName ?? `app ${clientId.slice(0, 8)}`,
      secret: app.secret ?? null,
      cert,
      roles: [...app.roles],
      revoked: false,
      spObjectId: randomUUID(),
    });
  }

  /** Changes the granted roles; tokens already issued keep the roles they carry (as in Entra ID). */
  setAppRoles(clientId: string, roles: GraphRole[]): void {
    this.mustApp(clientId).roles = [...roles];
  }

  /** The app's credentials are revoked: its tokens stop working and new token requests get invalid_client. */
  revokeApp(clientId: string): void {
    this.mustApp(clientId).revoked = true;
  }

  /** Every token issued so far is treated as expired ("Lifetime validation failed, the token is expired."). */
  expireTokens(): void {
    for (const t of this.liveTokens) this.expiredTokens.add(t);
    this.liveTokens.clear();
  }

  /** Every outstanding `$skiptoken` becomes invalid (400 Directory_ExpiredPageToken). */
  expirePageTokens(): void {
    this.cursors.clear();
  }

  private mustApp(clientId: string): AppRec {
    const a = this.apps.get(clientId.toLowerCase());
    if (!a) throw new Error(`unknown app ${clientId}`);
    return a;
  }

  // ─────────────── directory data ───────────────

  addUser(u: UserInput): void {
    const id = this.checkNewId(u.id, "addUser");
    const props: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(u)) {
      if (k === "id" || v === undefined) continue;
      if (EXTENSION_RE.test(k)) {
        const lower = k.toLowerCase();
        const known = this.extensions.get(lower);
        if (known !== undefined && known !== k) throw new Error(`addUser: extension ${k} differs in case from ${known}`);
        if (known === undefined) this.extensions.set(lower, k);
        props[k] = v;
        continue;
      }
      if (!SCHEMAS.user.props.has(k)) throw new Error(`addUser: unknown user property '${k}'`);
      props[k] = v;
    }
    this.objects.set(id, { type: "user", id, odataType: "#microsoft.graph.user", props });
  }

  /** Bulk version of addUser (50,000 users in well under a second). */
  addUsers(users: Iterable<UserInput>): void {
    for (const u of users) this.addUser(u);
  }

  /** Changes (or with `null`, clears) properties of an existing user. */
  updateUser(id: string, patch: Partial<Omit<UserInput, "id">>): void {
    const o = this.mustObject(id, "updateUser");
    if (o.type !== "user") throw new Error(`updateUser: ${id} is a ${o.type}`);
    for (const [k, v] of Object.entries(patch)) {
      if (EXTENSION_RE.test(k)) {
        if (!this.extensions.has(k.toLowerCase())) this.extensions.set(k.toLowerCase(), k);
      } else if (!SCHEMAS.user.props.has(k) || k === "id") {
        throw new Error(`updateUser: unknown user property '${k}'`);
      }
      if (v === undefined || v === null) delete o.props[k];
      else o.props[k] = v;
    }
  }

  addGroup(g: GroupInput): void {
    const id = this.checkNewId(g.id, "addGroup");
    const members = (g.members ?? []).map((m) => this.mustObject(m, `addGroup ${g.id} member`).id);
    const owners = (g.owners ?? []).map((m) => {
      const o = this.mustObject(m, `addGroup ${g.id} owner`);
      if (o.type !== "user" && o.type !== "servicePrincipal") throw new Error(`addGroup: owner ${m} is a ${o.type}`);
      return o.id;
    });
    const props: Record<string, unknown> = {
      displayName: g.displayName,
      description: g.description ?? null,
      mail: g.mail ?? null,
      mailEnabled: g.mailEnabled ?? false,
      securityEnabled: g.securityEnabled ?? true,
      groupTypes: g.groupTypes ?? [],
      createdDateTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
      securityIdentifier: `S-1-12-1-${(parseInt(id.slice(0, 8), 16) >>> 0).toString()}`,
    };
    const rec: DirObject = { type: "group", id, odataType: "#microsoft.graph.group", props, members: [...new Set(members)], owners };
    this.objects.set(id, rec);
    this.groupOrder.push(rec);
  }

  addMembers(groupId: string, ids: string[]): void {
    const g = this.mustGroup(groupId);
    const set = new Set(g.members);
    for (const m of ids) {
      const o = this.mustObject(m, "addMembers");
      if (o.id === g.id) throw new Error("addMembers: a group cannot contain itself");
      if (!set.has(o.id)) {
        set.add(o.id);
        g.members!.push(o.id);
      }
    }
  }

  removeMembers(groupId: string, ids: string[]): void {
    const g = this.mustGroup(groupId);
    const drop = new Set(ids.map((i) => i.toLowerCase()));
    g.members = g.members!.filter((m) => !drop.has(m));
  }

  setOwners(groupId: string, ids: string[]): void {
    const g = this.mustGroup(groupId);
    g.owners = ids.map((m) => this.mustObject(m, "setOwners").id);
  }

  setGroupDisplayName(groupId: string, displayName: string): void {
    this.mustGroup(groupId).props.displayName = displayName;
  }

  addDevice(d: DeviceInput): void {
    const id = this.checkNewId(d.id, "addDevice");
    this.objects.set(id, {
      type: "device",
      id,
      odataType: "#microsoft.graph.device",
      props: { displayName: d.displayName, deviceId: d.deviceId ?? randomUUID(), operatingSystem: d.operatingSystem ?? "Windows", accountEnabled: true },
    });
  }

  addServicePrincipal(sp: ServicePrincipalInput): void {
    const id = this.checkNewId(sp.id, "addServicePrincipal");
    this.objects.set(id, {
      type: "servicePrincipal",
      id,
      odataType: "#microsoft.graph.servicePrincipal",
      props: { displayName: sp.displayName, appId: sp.appId ?? randomUUID(), accountEnabled: true, servicePrincipalType: "Application", appDisplayName: sp.displayName },
    });
  }

  addOrgContact(c: OrgContactInput): void {
    const id = this.checkNewId(c.id, "addOrgContact");
    this.objects.set(id, { type: "orgContact", id, odataType: "#microsoft.graph.orgContact", props: { displayName: c.displayName, mail: c.mail ?? null } });
  }

  /** Deletes an object and removes it from every group's members and owners. */
  removeObject(id: string): void {
    const o = this.mustObject(id, "removeObject");
    this.objects.delete(o.id);
    if (o.type === "group") {
      const i = this.groupOrder.indexOf(o);
      if (i >= 0) this.groupOrder.splice(i, 1);
    }
    for (const g of this.groupOrder) {
      if (g.members!.includes(o.id)) g.members = g.members!.filter((m) => m !== o.id);
      if (g.owners!.includes(o.id)) g.owners = g.owners!.filter((m) => m !== o.id);
    }
  }

  /**
   * Adds to the group a member of a type the client may not expect: "#microsoft.graph.orgContact"
   * by default, or any other "@odata.type". Returns the new object's id.
   */
  unknownType(opts: UnknownTypeOptions): string {
    const g = this.mustGroup(opts.groupId);
    const id = randomUUID();
    const odataType = opts.odataType ?? "#microsoft.graph.orgContact";
    const type: ObjType = odataType === "#microsoft.graph.orgContact" ? "orgContact" : "unknown";
    this.objects.set(id, { type, id, odataType, props: { displayName: opts.displayName ?? `Unexpected ${odataType}` } });
    g.members!.push(id);
    return id;
  }

  private checkNewId(raw: string, what: string): string {
    const id = raw.toLowerCase();
    if (!GUID_RE.test(id)) throw new Error(`${what}: id must be a GUID, got '${raw}'`);
    if (this.objects.has(id)) throw new Error(`${what}: object ${raw} already exists`);
    return id;
  }

  private mustObject(raw: string, what: string): DirObject {
    const o = this.objects.get(raw.toLowerCase());
    if (!o) throw new Error(`${what}: no object with id ${raw} (add it first)`);
    return o;
  }

  private mustGroup(raw: string): DirObject {
    const o = this.mustObject(raw, "group");
    if (o.type !== "group") throw new Error(`${raw} is a ${o.type}, not a group`);
    return o;
  }

  // ─────────────── counters and logs ───────────────

  private static zeroCounts(): Record<EndpointKind, number> {
    return { openid: 0, token: 0, groups: 0, group: 0, members: 0, transitiveMembers: 0, owners: 0, other: 0 };
  }

  requestCounts(): Record<EndpointKind, number> {
    return { ...this.counts };
  }

  totalRequests(): number {
    return ENDPOINT_KINDS.reduce((s, k) => s + this.counts[k], 0);
  }

  resetCounts(): void {
    this.counts = GraphServer.zeroCounts();
    this.tokenCount = 0;
    this.tokenLog.length = 0;
    this.log.length = 0;
  }

  /** Number of POSTs to the token endpoint since start / resetCounts(). */
  tokenRequests(): number {
    return this.tokenCount;
  }

  tokenRequestLog(): readonly TokenRequestRecord[] {
    return [...this.tokenLog];
  }

  /** The last (up to 20,000) requests. */
  requests(): readonly RequestRecord[] {
    return [...this.log];
  }

  /** "METHOD path" of every request this stand-in does not know (also logged with console.error). */
  unknownRequests(): readonly string[] {
    return [...this.unknown];
  }

  // ─────────────── fault injection ───────────────

  throttle(opts: ThrottleOptions): void {
    this.throttles.push({
      remaining: opts.count,
      status: opts.status ?? 429,
      retryAfter: opts.retryAfterText ?? (opts.retryAfterSeconds === undefined ? 1 : opts.retryAfterSeconds),
      endpoint: opts.endpoint ?? "graph",
    });
  }

  /**
   * The next `count` matching requests are answered with a redirect to `location`, without
   * being processed (as a misconfigured proxy in front of the service would).
   */
  redirectNext(opts: RedirectNextOptions): void {
    this.redirects.push({ remaining: opts.count, status: opts.status ?? 302, location: opts.location, endpoint: opts.endpoint ?? "graph" });
  }

  /**
   * The next `count` matching requests are processed as usual, but their answer is drip-fed:
   * the headers at once, then one byte of the body every `intervalMs`, until it is complete,
   * the client gives up, or `close()`.
   */
  dripNext(opts: DripNextOptions): void {
    this.drips.push({ remaining: opts.count, intervalMs: opts.intervalMs, endpoint: opts.endpoint ?? "graph" });
  }

  /** Answers being drip-fed (`dripNext`) right now. */
  drippingAnswers(): number {
    return this.dripTimers.size;
  }

  failPage(opts: FailPageOptions): void {
    this.pageFailures.push({
      groupId: opts.groupId?.toLowerCase() ?? null,
      endpoint: opts.endpoint ?? null,
      page: opts.page,
      status: opts.status,
      body: opts.body ?? null,
      contentType: opts.contentType ?? "application/json",
      remaining: opts.times ?? 1,
    });
  }

  corruptNextLink(opts: CorruptNextLinkOptions): void {
    this.linkCorruptions.push({ groupId: opts.groupId.toLowerCase(), to: opts.to, endpoint: opts.endpoint ?? null, remaining: opts.times ?? 1 });
  }

  malformedJson(opts: MalformedJsonOptions): void {
    this.malformed.push({ endpoint: opts.endpoint, remaining: opts.count });
  }

  clearFaults(): void {
    this.throttles = [];
    this.pageFailures = [];
    this.linkCorruptions = [];
    this.malformed = [];
    this.redirects = [];
    this.drips = [];
  }

  // ─────────────── dispatch ───────────────

  private classify(path: string): EndpointKind {
    const segs = path.split("/").slice(1);
    if (segs.length > 1 && segs[segs.length - 1] === "") segs.pop();
    if (segs[0] === "v1.0" && segs[1]?.toLowerCase() === "groups") {
      if (segs.length === 2) return "groups";
      if (segs.length === 3) return "group";
      const rel = segs[3]?.toLowerCase();
      if (rel === "members") return "members";
      if (rel === "transitivemembers") return "transitiveMembers";
      if (rel === "owners") return "owners";
      return "other";
    }
    if (segs.length >= 2) {
      const rest = segs.slice(1).join("/").toLowerCase();
      if (rest === "oauth2/v2.0/token") return "token";
      if (
        rest === "v2.0/.well-known/openid-configuration" ||
        rest === ".well-known/openid-configuration" ||
        rest === "discovery/instance" ||
        rest === "discovery/v2.0/keys" ||
        rest === "discovery/keys"
      ) {
        return "openid";
      }
    }
    return "other";
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rawUrl = req.url ?? "/";
    const u = new URL(rawUrl, this.url);
    const kind = this.classify(u.pathname);
    this.counts[kind]++;
    const requestId = randomUUID();
    const crid = req.headers["client-request-id"];
    const clientRequestId = typeof crid === "string" && crid !== "" ? crid : requestId;
    const cl = req.headers.consistencylevel;
    const record: RequestRecord = {
      method: req.method ?? "GET",
      url: rawUrl,
      kind,
      status: 0,
      consistencyLevel: typeof cl === "string" ? cl : null,
    };
    this.log.push(record);
    if (this.log.length > MAX_LOG) this.log.splice(0, this.log.length - MAX_LOG);
    const ctx: Ctx = { req, res, requestId, clientRequestId, kind, record };

    const isGraph = u.pathname === "/v1.0" || u.pathname.startsWith("/v1.0/");
    const th = this.throttles.find(
      (t) => t.remaining > 0 && (t.endpoint === "any" || t.endpoint === kind || (t.endpoint === "graph" && isGraph)),
    );
    if (th) {
      th.remaining--;
      this.throttles = this.throttles.filter((t) => t.remaining > 0);
      const headers: Record<string, string> = th.retryAfter === null ? {} : { "retry-after": String(th.retryAfter) };
      if (kind === "token" || kind === "openid") {
        await drain(req);
        this.aadError(ctx, th.status, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again.", headers);
      } else if (th.status === 429) {
        this.graphError(ctx, 429, "TooManyRequests", `Too many requests from Identifier:${this.tenantId} under category:throttle.aad.ags.directory. Please try again later.`, headers);
      } else {
        this.graphError(ctx, 503, "serviceNotAvailable", "The service is temporarily unavailable. Please retry after a while.", headers);
      }
      return;
    }
    const redirect = this.redirects.find(
      (t) => t.remaining > 0 && (t.endpoint === "any" || t.endpoint === kind || (t.endpoint === "graph" && isGraph)),
    );
    if (redirect) {
      redirect.remaining--;
      this.redirects = this.redirects.filter((t) => t.remaining > 0);
      await drain(req);
      this.send(ctx, redirect.status, "text/plain", "", { location: redirect.location });
      return;
    }

    if (kind === "token") return this.handleToken(ctx, u);
    if (kind === "openid") return this.handleOpenId(ctx, u);
    if (isGraph) return this.handleGraph(ctx, u);

    await drain(req);
    this.noteUnknown(ctx);
    this.send(ctx, 404, "application/json", JSON.stringify({ error: "not_found", error_description: `graph stand-in: no route for ${req.method ?? "?"} ${u.pathname}` }), {});
  }

  private noteUnknown(ctx: Ctx): void {
    const line = `${ctx.req.method ?? "?"} ${ctx.req.url ?? ""}`;
    this.unknown.push(line);
    console.error(`[graph-server] UNKNOWN REQUEST (answered as the real service would refuse it): ${line}`);
  }

  private send(ctx: Ctx, status: number, contentType: string, body: string, headers: Record<string, string>): void {
    ctx.record.status = status;
    const path = ctx.record.url.split("?")[0] ?? "";
    const isGraph = path === "/v1.0" || path.startsWith("/v1.0/");
    const drip = this.drips.find((t) => t.remaining > 0 && (t.endpoint === "any" || t.endpoint === ctx.kind || (t.endpoint === "graph" && isGraph)));
    const bytes = Buffer.from(body, "utf8");
    ctx.res.writeHead(status, {
      "content-type": contentType,
      "cache-control": "no-cache",
      "request-id": ctx.requestId,
      "client-request-id": ctx.clientRequestId,
      ...(drip ? { "content-length": String(bytes.length) } : {}),
      ...headers,
    });
    if (!drip) {
      ctx.res.end(body);
      return;
    }
    drip.remaining--;
    this.drips = this.drips.filter((t) => t.remaining > 0);
    ctx.res.flushHeaders();
    let sent = 0;
    const res = ctx.res;
    const timer = setInterval(() => {
      if (res.destroyed || sent >= bytes.length) {
        clearInterval(timer);
        this.dripTimers.delete(timer);
        if (!res.destroyed) res.end();
        return;
      }
      res.write(bytes.subarray(sent, sent + 1));
      sent++;
    }, drip.intervalMs);
    this.dripTimers.add(timer);
    res.on("close", () => {
      clearInterval(timer);
      this.dripTimers.delete(timer);
    });
  }

  /** Successful JSON, unless a malformedJson fault is armed for this endpoint. */
  private sendOk(ctx: Ctx, contentType: string, body: string, headers: Record<string, string> = {}): void {
    const m = this.malformed.find((x) => x.remaining > 0 && x.endpoint === ctx.kind);
    if (m) {
      m.remaining--;
      this.malformed = this.malformed.filter((x) => x.remaining > 0);
      body = body.slice(0, Math.max(1, Math.floor(body.length / 2)));
    }
    this.send(ctx, 200, contentType, body, headers);
  }

  private graphError(ctx: Ctx, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
    const body = {
      error: {
        code,
        message,
        innerError: { date: graphDate(), "request-id": ctx.requestId, "client-request-id": ctx.clientRequestId },
      },
    };
    this.send(ctx, status, "application/json", JSON.stringify(body), headers);
  }

  private aadError(
    ctx: Ctx,
    status: number,
    error: string,
    code: number,
    text: string,
    headers: Record<string, string> = {},
  ): void {
    const now = new Date();
    const ts = aadTimestamp(now);
    const traceId = randomUUID();
    const correlationId = ctx.clientRequestId;
    const body = {
      error,
      error_description: `AADSTS${code}: ${text}\r\nTrace ID: ${traceId}\r\nCorrelation ID: ${correlationId}\r\nTimestamp: ${ts}`,
      error_codes: [code],
      timestamp: ts,
      trace_id: traceId,
      correlation_id: correlationId,
      error_uri: `${this.url}/error?code=${code}`,
    };
    this.send(ctx, status, "application/json; charset=utf-8", JSON.stringify(body), {
      "x-ms-request-id": traceId,
      "cache-control": "no-store, no-cache",
      pragma: "no-cache",
      ...headers,
    });
  }

  // ─────────────── identity platform ───────────────

  private tenantOf(pathname: string): string {
    return decodeURIComponent(pathname.split("/")[1] ?? "");
  }

  private async handleOpenId(ctx: Ctx, u: URL): Promise<void> {
    await drain(ctx.req);
    if (ctx.req.method !== "GET") {
      this.noteUnknown(ctx);
      this.aadError(ctx, 405, "invalid_request", 900561, `The endpoint only accepts GET requests. Received a ${ctx.req.method ?? "?"} request.`);
      return;
    }
    const tenant = this.tenantOf(u.pathname);
    const rest = u.pathname.split("/").slice(2).join("/").toLowerCase();
    const known = tenant.toLowerCase() === this.tenantId || ["common", "organizations"].includes(tenant.toLowerCase());
    if (!known) {
      this.aadError(
        ctx,
        400,
        "invalid_tenant",
        90002,
        `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.`,
      );
      return;
    }
    const t = tenant.toLowerCase();
    const json = { "content-type": "application/json; charset=utf-8" };
    if (rest === "v2.0/.well-known/openid-configuration" || rest === ".well-known/openid-configuration") {
      const v2 = rest.startsWith("v2.0");
      const issuerTenant = t === this.tenantId ? this.tenantId : "{tenantid}";
      const cfg = {
        token_endpoint: `${this.url}/${t}/oauth2/${v2 ? "v2.0/" : ""}token`,
        token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        jwks_uri: `${this.url}/${t}/discovery/${v2 ? "v2.0/" : ""}keys`,
        response_modes_supported: ["query", "fragment", "form_post"],
        subject_types_supported: ["pairwise"],
        id_token_signing_alg_values_supported: ["RS256"],
        response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
        scopes_supported: ["openid", "profile", "email", "offline_access"],
        issuer: v2 ? `${this.url}/${issuerTenant}/v2.0` : `https://sts.windows.net/${issuerTenant}/`,
        request_uri_parameter_supported: false,
        userinfo_endpoint: `${GRAPH_RESOURCE}/oidc/userinfo`,
        authorization_endpoint: `${this.url}/${t}/oauth2/${v2 ? "v2.0/" : ""}authorize`,
        device_authorization_endpoint: `${this.url}/${t}/oauth2/${v2 ? "v2.0/" : ""}devicecode`,
        http_logout_supported: true,
        frontchannel_logout_supported: true,
        end_session_endpoint: `${this.url}/${t}/oauth2/${v2 ? "v2.0/" : ""}logout`,
        claims_supported: ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        kerberos_endpoint: `${this.url}/${t}/kerberos`,
        tenant_region_scope: null,
        cloud_instance_name: "microsoftonline.com",
        cloud_graph_host_name: "graph.windows.net",
        msgraph_host: "graph.microsoft.com",
        rbac_url: "https://pas.windows.net",
      };
      this.sendOk(ctx, json["content-type"], JSON.stringify(cfg));
      return;
    }
    if (rest === "discovery/instance") {
      const host = new URL(this.url).host;
      const body = {
        tenant_discovery_endpoint: `${this.url}/${t}/v2.0/.well-known/openid-configuration`,
        "api-version": "1.1",
        metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
      };
      this.sendOk(ctx, json["content-type"], JSON.stringify(body));
      return;
    }
    // discovery/v2.0/keys: access tokens of this stand-in are HMAC-signed and not meant to be
    // validated by clients (Graph tokens never are), so the key set is empty.
    this.sendOk(ctx, json["content-type"], JSON.stringify({ keys: [] }));
  }

  private async handleToken(ctx: Ctx, u: URL): Promise<void> {
    this.tokenCount++;
    const rec: TokenRequestRecord = {
      tenant: this.tenantOf(u.pathname),
      clientId: null,
      grantType: null,
      scope: null,
      auth: "none",
      assertionAlg: null,
      status: 0,
      error: null,
    };
    this.tokenLog.push(rec);
    if (this.tokenLog.length > MAX_LOG) this.tokenLog.splice(0, this.tokenLog.length - MAX_LOG);
    const fail = (status: number, error: string, code: number, text: string): void => {
      rec.status = status;
      rec.error = `${error} AADSTS${code}`;
      this.aadError(ctx, status, error, code, text);
    };

    const body = await readBody(ctx.req, 1 << 20);
    if (ctx.req.method !== "POST") {
      fail(400, "invalid_request", 900561, `The endpoint only accepts POST, OPTIONS requests. Received a ${ctx.req.method ?? "?"} request.`);
      return;
    }
    const tenant = rec.tenant.toLowerCase();
    if (["common", "organizations", "consumers"].includes(tenant)) {
      fail(400, "invalid_request", 50059, "No tenant-identifying information found in either the request or implied by any provided credentials.");
      return;
    }
    if (tenant !== this.tenantId) {
      fail(
        400,
        "invalid_tenant",
        90002,
        `Tenant '${rec.tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.`,
      );
      return;
    }
    const ctype = (ctx.req.headers["content-type"] ?? "").toLowerCase();
    const form = ctype.startsWith("application/x-www-form-urlencoded") ? new URLSearchParams(body.toString("utf8")) : new URLSearchParams();
    const one = (name: string): string | null => {
      const all = form.getAll(name);
      return all.length === 0 ? null : (all[0] ?? null);
    };
    const grantType = one("grant_type");
    rec.grantType = grantType;
    rec.scope = one("scope");
    if (grantType === null) {
      fail(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.");
      return;
    }
    if (grantType !== "client_credentials") {
      fail(400, "unsupported_grant_type", 70003, `The app requested an unsupported grant type '${grantType}'.`);
      return;
    }

    // Client authentication: body (client_secret_post / private_key_jwt) or HTTP Basic.
    let clientId = one("client_id");
    let secret = one("client_secret");
    const authz = ctx.req.headers.authorization;
    let basic = false;
    if (typeof authz === "string" && /^basic /i.test(authz)) {
      const decoded = Buffer.from(authz.slice(6).trim(), "base64").toString("utf8");
      const i = decoded.indexOf(":");
      if (i > 0) {
        const id = decodeURIComponent(decoded.slice(0, i).replace(/\+/g, " "));
        const pw = decodeURIComponent(decoded.slice(i + 1).replace(/\+/g, " "));
        if (clientId !== null && clientId !== id) {
          fail(401, "invalid_client", 50148, "The client_id in the request body does not match the client_id in the Authorization header.");
          return;
        }
        clientId = id;
        secret = pw;
        basic = true;
      }
    }
    rec.clientId = clientId;
    if (clientId === null || clientId === "") {
      fail(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.");
      return;
    }
    const app = this.apps.get(clientId.toLowerCase());
    if (!app) {
      fail(
        400,
        "unauthorized_client",
        700016,
        `Application with identifier '${clientId}' was not found in the directory '${this.tenantId}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.`,
      );
      return;
    }
    const assertionType = one("client_assertion_type");
    const assertion = one("client_assertion");
    if (secret !== null && secret !== "") {
      rec.auth = basic ? "basic" : "secret";
      const ok = app.secret !== null && !app.revoked && safeEqual(secret, app.secret);
      if (!ok) {
        fail(
          401,
          "invalid_client",
          7000215,
          `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${app.clientId}'.`,
        );
        return;
      }
    } else if (assertion !== null || assertionType !== null) {
      rec.auth = "assertion";
      if (assertionType !== JWT_BEARER) {
        fail(400, "invalid_request", 90014, "The required field 'client_assertion_type' is missing from the credential or has an unsupported value. Ensure that you have all the necessary parameters for the login request.");
        return;
      }
      if (assertion === null || assertion === "") {
        fail(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_assertion'.");
        return;
      }
      const err = this.checkAssertion(app, assertion, rec);
      if (err) {
        fail(err.status, err.error, err.code, err.text);
        return;
      }
    } else {
      fail(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
      return;
    }

    const scopeErr = checkScope(rec.scope, this.tenantId);
    if (scopeErr) {
      fail(400, scopeErr.error, scopeErr.code, scopeErr.text);
      return;
    }

    const now = Math.floor(Date.now() / 1000);
    const claims: TokenClaims = {
      aud: GRAPH_RESOURCE,
      iss: `https://sts.windows.net/${this.tenantId}/`,
      iat: now,
      nbf: now,
      exp: now + this.tokenLifetime,
      appid: app.clientId,
      appidacr: rec.auth === "assertion" ? "2" : "1",
      app_displayname: app.displayName,
      idp: `https://sts.windows.net/${this.tenantId}/`,
      idtyp: "app",
      oid: app.spObjectId,
      roles: [...app.roles],
      sub: app.spObjectId,
      tid: this.tenantId,
      uti: b64url(randomBytes(16)),
      ver: "1.0",
    };
    const accessToken = this.signToken(claims);
    this.liveTokens.add(claims.uti);
    rec.status = 200;
    const body2 = { token_type: "Bearer", expires_in: this.tokenLifetime, ext_expires_in: this.tokenLifetime, access_token: accessToken };
    this.sendOk(ctx, "application/json; charset=utf-8", JSON.stringify(body2), {
      "x-ms-request-id": randomUUID(),
      "cache-control": "no-store, no-cache",
      pragma: "no-cache",
    });
  }

  private checkAssertion(
    app: AppRec,
    jwt: string,
    rec: TokenRequestRecord,
  ): { status: number; error: string; code: number; text: string } | null {
    const malformed = { status: 400, error: "invalid_request", code: 50027, text: "JWT token is invalid or malformed." };
    const parts = jwt.split(".");
    if (parts.length !== 3) return malformed;
    const [h, p, s] = parts as [string, string, string];
    let header: Record<string, unknown>;
    let payload: Record<string, unknown>;
    try {
      header = JSON.parse(Buffer.from(h, "base64url").toString("utf8")) as Record<string, unknown>;
      payload = JSON.parse(Buffer.from(p, "base64url").toString("utf8")) as Record<string, unknown>;
    } catch {
      return malformed;
    }
    if (typeof header !== "object" || header === null || typeof payload !== "object" || payload === null) return malformed;
    const alg = typeof header.alg === "string" ? header.alg : "";
    rec.assertionAlg = alg;
    const x5t = typeof header.x5t === "string" ? header.x5t : null;
    const x5tS256 = typeof header["x5t#S256"] === "string" ? header["x5t#S256"] : null;
    const presented = x5tS256 !== null ? Buffer.from(x5tS256, "base64url") : x5t !== null ? Buffer.from(x5t, "base64url") : null;
    const thumbHex = presented ? presented.toString("hex").toUpperCase() : "(none)";
    const cert = app.revoked ? null : app.cert;
    const keyMatches =
      cert !== null &&
      ((x5tS256 !== null && Buffer.from(x5tS256, "base64url").equals(cert.sha256)) ||
        (x5tS256 === null && x5t !== null && Buffer.from(x5t, "base64url").equals(cert.sha1)));
    if (!keyMatches) {
      return {
        status: 401,
        error: "invalid_client",
        code: 700027,
        text: `The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '${thumbHex}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '${app.clientId}'.]`,
      };
    }
    if (alg !== "RS256" && alg !== "PS256") {
      return { status: 401, error: "invalid_client", code: 5002738, text: `Invalid JWT token. '${alg}' is not a supported signature algorithm. Supported signing algorithms are: 'RS256, PS256'` };
    }
    const data = Buffer.from(`${h}.${p}`);
    const sig = Buffer.from(s, "base64url");
    let valid: boolean;
    try {
      valid =
        alg === "RS256"
          ? cryptoVerify("sha256", data, { key: cert.publicKey, padding: cryptoConstants.RSA_PKCS1_PADDING }, sig)
          : cryptoVerify("sha256", data, { key: cert.publicKey, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST }, sig);
    } catch {
      valid = false;
    }
    if (!valid) {
      return {
        status: 401,
        error: "invalid_client",
        code: 700027,
        text: `Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '${thumbHex}', Found key 'Start=${cert.notBefore}, End=${cert.notAfter}']`,
      };
    }
    if (payload.aud !== this.tokenEndpoint) {
      return {
        status: 401,
        error: "invalid_client",
        code: 700023,
        text: "Client assertion audience claim does not match Realm issuer. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .",
      };
    }
    if (typeof payload.iss !== "string" || typeof payload.sub !== "string" || payload.iss.toLowerCase() !== app.clientId || payload.sub.toLowerCase() !== app.clientId) {
      return { status: 401, error: "invalid_client", code: 700021, text: "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials ." };
    }
    const now = Math.floor(Date.now() / 1000);
    const exp = typeof payload.exp === "number" ? payload.exp : NaN;
    const nbf = typeof payload.nbf === "number" ? payload.nbf : now;
    if (!(exp > now) || nbf > now + 300) {
      const fmt = (n: number): string => (Number.isFinite(n) ? new Date(n * 1000).toUTCString() : "(none)");
      return {
        status: 401,
        error: "invalid_client",
        code: 700024,
        text: `Client assertion is not within its valid time range. Current time: ${new Date().toISOString()}, assertion valid from ${fmt(nbf)}, expiry time of assertion ${fmt(exp)}. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .`,
      };
    }
    return null;
  }

  private signToken(claims: TokenClaims): string {
    const header = b64url(JSON.stringify({ typ: "JWT", alg: "HS256", kid: "graph-stand-in" }));
    const payload = b64url(JSON.stringify(claims));
    const sig = createHmac("sha256", this.signingKey).update(`${header}.${payload}`).digest("base64url");
    return `${header}.${payload}.${sig}`;
  }

  /** Returns the token's claims or an HttpError (401). */
  private authenticate(ctx: Ctx): TokenClaims | HttpError {
    const bad = (message: string): HttpError => httpError(401, "InvalidAuthenticationToken", message);
    const h = ctx.req.headers.authorization;
    if (typeof h !== "string" || h.trim() === "") return bad("Access token is empty.");
    const m = /^Bearer\s+(\S*)\s*$/i.exec(h);
    if (!m || m[1] === undefined || m[1] === "") return bad("Access token is empty.");
    const token = m[1];
    const parts = token.split(".");
    if (parts.length !== 3) return bad("CompactToken parsing failed with error code: 80049217");
    const [h64, p64, s64] = parts as [string, string, string];
    const expected = createHmac("sha256", this.signingKey).update(`${h64}.${p64}`).digest();
    const got = Buffer.from(s64, "base64url");
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
      return bad("Access token validation failure. Invalid signature.");
    }
    let claims: TokenClaims;
    try {
      claims = JSON.parse(Buffer.from(p64, "base64url").toString("utf8")) as TokenClaims;
    } catch {
      return bad("CompactToken parsing failed with error code: 80049217");
    }
    if (claims.aud !== GRAPH_RESOURCE && claims.aud !== GRAPH_APP_ID) return bad("Access token validation failure. Invalid audience.");
    const now = Math.floor(Date.now() / 1000);
    if (claims.exp <= now || this.expiredTokens.has(claims.uti)) return bad("Lifetime validation failed, the token is expired.");
    const app = this.apps.get(claims.appid);
    if (!app || app.revoked) return bad("Access token validation failure.");
    return claims;
  }

  // ─────────────── Graph ───────────────

  private async handleGraph(ctx: Ctx, u: URL): Promise<void> {
    await drain(ctx.req);
    const fail = (e: HttpError): void => this.graphError(ctx, e.status, e.code, e.message, e.headers);
    if (ctx.req.method !== "GET") {
      this.noteUnknown(ctx);
      fail(httpError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."));
      return;
    }
    const claims = this.authenticate(ctx);
    if (isHttpError(claims)) {
      fail(claims);
      return;
    }
    const roles = new Set<string>(claims.roles);

    // Route.
    const segs = u.pathname.split("/").slice(1);
    if (segs.length > 1 && segs[segs.length - 1] === "") segs.pop();
    const route = this.route(segs.map((s) => safeDecode(s)));
    if (isHttpError(route)) {
      if (route.code === "BadRequest") this.noteUnknown(ctx); // a path this stand-in does not serve
      fail(route);
      return;
    }
    if (!LIST_ROLES.some((r) => roles.has(r))) {
      fail(httpError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."));
      return;
    }
    const q = parseQuery(u.search);
    if (isHttpError(q)) {
      fail(q);
      return;
    }
    try {
      if (route.kind === "group") {
        this.serveGroup(ctx, route.groupId, q, roles);
      } else {
        this.serveList(ctx, u, route, q, roles);
      }
    } catch (e) {
      if (isHttpError(e)) fail(e);
      else throw e;
    }
  }

  private route(segs: string[]):
    | { kind: "group"; groupId: string }
    | { kind: ListKind; groupId: string | null; cast: ObjType | null; countSegment: boolean }
    | HttpError {
    const notFound = (seg: string): HttpError => httpError(400, "BadRequest", `Resource not found for the segment '${seg}'.`);
    if (segs[0] !== "v1.0") return notFound(segs[0] ?? "");
    if (segs.length < 2) return notFound("");
    if (segs[1]?.toLowerCase() !== "groups") return notFound(segs[1] ?? "");
    if (segs.length === 2) return { kind: "groups", groupId: null, cast: null, countSegment: false };
    const rawId = segs[2] ?? "";
    if (rawId === "$count") return { kind: "groups", groupId: null, cast: null, countSegment: true };
    if (!GUID_RE.test(rawId)) return httpError(400, "Request_BadRequest", `Invalid object identifier '${rawId}'.`);
    const groupId = rawId.toLowerCase();
    if (segs.length === 3) return { kind: "group", groupId };
    const relRaw = segs[3] ?? "";
    const rel = relRaw.toLowerCase();
    const kind: ListKind | null = rel === "members" ? "members" : rel === "transitivemembers" ? "transitiveMembers" : rel === "owners" ? "owners" : null;
    if (kind === null) return notFound(relRaw);
    let cast: ObjType | null = null;
    let countSegment = false;
    let i = 4;
    if (segs[i] !== undefined && segs[i] !== "$count") {
      const c = CAST_TYPES.get((segs[i] ?? "").toLowerCase());
      if (c === undefined) return notFound(segs[i] ?? "");
      cast = c;
      i++;
    }
    if (segs[i] === "$count") {
      countSegment = true;
      i++;
    }
    if (i < segs.length) return notFound(segs[i] ?? "");
    return { kind, groupId, cast, countSegment };
  }

  private serveGroup(ctx: Ctx, groupId: string, q: Query, roles: Set<string>): void {
    for (const name of q.keys()) {
      if (name !== "$select" && name !== "$expand") throw unrecognized(name);
    }
    if (q.has("$expand")) throw notImplemented("$expand");
    const select = this.parseSelect(q.get("$select"), "group");
    const g = this.objects.get(groupId);
    if (!g || g.type !== "group") {
      throw httpError(404, "Request_ResourceNotFound", `Resource '${groupId}' does not exist or one of its queried reference-property objects are not present.`);
    }
    const body: Record<string, unknown> = {
      "@odata.context": `${this.graphBaseUrl}/$metadata#groups${select ? `(${select.join(",")})` : ""}/$entity`,
      ...this.project(g, select, roles, false),
    };
    this.sendOk(ctx, GRAPH_CONTENT_TYPE, JSON.stringify(body));
  }

  private serveList(
    ctx: Ctx,
    u: URL,
    route: { kind: ListKind; groupId: string | null; cast: ObjType | null; countSegment: boolean },
    q: Query,
    roles: Set<string>,
  ): void {
    const allowed = new Set(["$select", "$top", "$count", "$filter", "$search", "$orderby", "$skiptoken", "$expand"]);
    for (const name of q.keys()) {
      if (name === "$skip") throw httpError(400, "Request_BadRequest", "'$skip' is not supported by the service.");
      if (!allowed.has(name)) throw unrecognized(name);
    }
    const eventual = (ctx.record.consistencyLevel ?? "").trim().toLowerCase() === "eventual";
    const countRaw = q.get("$count");
    let count = false;
    if (countRaw !== undefined) {
      const c = countRaw.toLowerCase();
      if (c !== "true" && c !== "false") throw httpError(400, "BadRequest", `'${countRaw}' is not a valid count option.`);
      count = c === "true";
    }
    const advanced = eventual && count;
    const isMemberList = route.kind !== "groups";

    // Advanced-query requirements (aad-advanced-queries; group-list-transitivemembers "Request headers").
    if (route.countSegment && !eventual) {
      throw httpError(400, "Request_BadRequest", "$count is not currently supported.");
    }
    if (q.has("$search") && !eventual) {
      throw httpError(400, "Request_UnsupportedQuery", "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'");
    }
    const needsAdvanced: string[] = [];
    if (isMemberList) {
      if (route.cast) needsAdvanced.push(`OData cast '${SCHEMAS[route.cast].odataName}'`);
      if (q.has("$filter")) needsAdvanced.push("$filter");
      if (q.has("$orderby")) needsAdvanced.push("$orderby");
      if (q.has("$search")) needsAdvanced.push("$search");
    } else if (q.has("$filter") && q.has("$orderby")) {
      needsAdvanced.push("Using $filter and $orderby in the same query");
    }
    if (needsAdvanced.length > 0 && !advanced) {
      throw httpError(400, "Request_UnsupportedQuery", `${needsAdvanced.join(", ")} is not supported because the required parameters might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to https://aka.ms/graph-docs/advanced-queries for more information`);
    }
    if (q.has("$search")) throw notImplemented("$search");
    if (q.has("$expand")) throw notImplemented("$expand");

    // $top
    let top = DEFAULT_PAGE;
    const topRaw = q.get("$top");
    if (topRaw !== undefined) {
      if (!/^-?\d+$/.test(topRaw.trim())) {
        throw httpError(400, "BadRequest", `Invalid value '${topRaw}' for $top query option found. The $top query option requires a non-negative integer value.`);
      }
      const n = Number(topRaw.trim());
      if (n < 1 || n > MAX_PAGE) {
        throw httpError(400, "Request_UnsupportedQuery", `Invalid page size specified: '${topRaw.trim()}'. Must be between 1 and ${MAX_PAGE} inclusive.`);
      }
      top = n;
    }

    // $select (validated against the element type)
    const elementType: ObjType | "mixed" = route.kind === "groups" ? "group" : (route.cast ?? "mixed");
    const select = this.parseSelect(q.get("$select"), elementType);

    // $filter / $orderby
    const resourceName = route.kind === "groups" ? "Group" : route.cast ? capitalise(route.cast) : "DirectoryObject";
    const filterRaw = q.get("$filter");
    const filter = filterRaw === undefined ? null : parseFilter(filterRaw, resourceName);
    const orderRaw = q.get("$orderby");
    let orderDesc: boolean | null = null;
    if (orderRaw !== undefined) {
      const m = /^\s*displayName(?:\s+(asc|desc))?\s*$/i.exec(orderRaw);
      if (!m) {
        throw httpError(400, "Request_UnsupportedQuery", `Unsupported sort clause '${orderRaw}': this stand-in only sorts by displayName.`);
      }
      orderDesc = (m[1] ?? "asc").toLowerCase() === "desc";
    }

    // Paging state.
    const skiptoken = q.get("$skiptoken");
    const key = cursorKey(u.pathname, q);
    let items: DirObject[];
    let offset = 0;
    let page = 1;
    if (skiptoken !== undefined) {
      const c = this.cursors.get(skiptoken);
      if (!c || c.key !== key) {
        throw httpError(400, "Directory_ExpiredPageToken", "The specified page token value has expired and can no longer be included in your request.");
      }
      items = c.items;
      offset = c.offset;
      page = c.page;
    } else {
      if (route.groupId !== null) {
        const g = this.objects.get(route.groupId);
        if (!g || g.type !== "group") {
          throw httpError(404, "Request_ResourceNotFound", `Resource '${route.groupId}' does not exist or one of its queried reference-property objects are not present.`);
        }
        items = this.listOf(g, route.kind);
      } else {
        items = [...this.groupOrder];
      }
      if (route.cast) {
        const cast = route.cast;
        items = items.filter((o) => o.type === cast);
      }
      if (filter) {
        const v = filter.value.toLowerCase();
        items = items.filter((o) => {
          const dn = o.props.displayName;
          if (typeof dn !== "string") return false;
          const d = dn.toLowerCase();
          return filter.op === "startswith" ? d.startsWith(v) : d === v;
        });
      }
      if (orderDesc !== null) {
        const dir = orderDesc ? -1 : 1;
        items = [...items].sort((a, b) => dir * compareNames(a.props.displayName, b.props.displayName));
      }
    }

    if (route.countSegment) {
      this.sendOk(ctx, "text/plain", String(items.length));
      return;
    }

    // failPage fault
    const pf = this.pageFailures.find(
      (f) =>
        f.remaining > 0 &&
        f.page === page &&
        (f.groupId === null || f.groupId === route.groupId) &&
        (f.endpoint === null || f.endpoint === route.kind),
    );
    if (pf) {
      pf.remaining--;
      this.pageFailures = this.pageFailures.filter((f) => f.remaining > 0);
      if (pf.body !== null) {
        this.send(ctx, pf.status, pf.contentType, pf.body, {});
      } else {
        const code = pf.status === 503 ? "serviceNotAvailable" : pf.status === 429 ? "TooManyRequests" : pf.status === 404 ? "Request_ResourceNotFound" : pf.status === 400 ? "BadRequest" : pf.status === 504 ? "GatewayTimeout" : "UnknownError";
        this.graphError(ctx, pf.status, code, pf.status >= 500 ? "" : "Injected failure.");
      }
      return;
    }

    const slice = items.slice(offset, offset + top);
    const mixed = elementType === "mixed";
    const value = slice.map((o) => this.project(o, select, roles, mixed));
    const setName = elementType === "mixed" ? "directoryObjects" : elementType === "user" ? "users" : elementType === "group" ? "groups" : `${elementType}s`;
    const body: Record<string, unknown> = {
      "@odata.context": `${this.graphBaseUrl}/$metadata#${setName}${select ? `(${select.join(",")})` : ""}`,
    };
    if (advanced) body["@odata.count"] = items.length;
    if (offset + top < items.length) {
      const token = b64url(randomBytes(36));
      this.cursors.set(token, { key, items, offset: offset + top, page: page + 1, groupId: route.groupId, listKind: route.kind });
      if (this.cursors.size > MAX_CURSORS) {
        const first = this.cursors.keys().next().value;
        if (first !== undefined) this.cursors.delete(first);
      }
      let link = `${this.url}${u.pathname}?${buildQuery(q, token)}`;
      if (page === 1 && route.groupId !== null && route.kind !== "groups") {
        const lc = this.linkCorruptions.find(
          (c) => c.remaining > 0 && c.groupId === route.groupId && (c.endpoint === null || c.endpoint === route.kind),
        );
        if (lc) {
          lc.remaining--;
          this.linkCorruptions = this.linkCorruptions.filter((c) => c.remaining > 0);
          link = lc.to === "other-host" ? link.replace(this.url, "https://evil.example.net") : link.replace("https://", "http://");
        }
      }
      body["@odata.nextLink"] = link;
    }
    body.value = value;
    this.sendOk(ctx, GRAPH_CONTENT_TYPE, JSON.stringify(body));
  }

  private listOf(g: DirObject, kind: ListKind): DirObject[] {
    if (kind === "owners") return (g.owners ?? []).map((id) => this.objects.get(id)).filter((o): o is DirObject => o !== undefined);
    if (kind === "members") return (g.members ?? []).map((id) => this.objects.get(id)).filter((o): o is DirObject => o !== undefined);
    // transitiveMembers: nested members flattened (nested groups included), each object once.
    const seen = new Set<string>([g.id]);
    const out: DirObject[] = [];
    const stack: string[][] = [g.members ?? []];
    const idx: number[] = [0];
    while (stack.length > 0) {
      const level = stack[stack.length - 1]!;
      const i = idx[idx.length - 1]!;
      if (i >= level.length) {
        stack.pop();
        idx.pop();
        continue;
      }
      idx[idx.length - 1] = i + 1;
      const id = level[i]!;
      if (seen.has(id)) continue;
      seen.add(id);
      const o = this.objects.get(id);
      if (!o) continue;
      out.push(o);
      if (o.type === "group" && o.members && o.members.length > 0) {
        stack.push(o.members);
        idx.push(0);
      }
    }
    return out;
  }

  /**
   * Validates `$select` for the element type and returns the canonical property names (with "id"),
   * or null when there is no `$select`.
   */
  private parseSelect(raw: string | undefined, elementType: ObjType | "mixed"): string[] | null {
    if (raw === undefined || raw.trim() === "") return null;
    const typeName = elementType === "mixed" ? "microsoft.graph.directoryObject" : SCHEMAS[elementType].odataName;
    const out: string[] = [];
    for (const part of raw.split(",")) {
      const name = part.trim();
      if (name === "") throw httpError(400, "BadRequest", `Term '${raw}' is not valid in a $select or $expand expression.`);
      const lower = name.toLowerCase();
      let canonical: string | undefined;
      if (EXTENSION_RE.test(name)) {
        if (elementType === "user" || elementType === "mixed") canonical = this.extensions.get(lower);
      } else if (elementType === "mixed") {
        canonical = ANY_LOWER.get(lower);
      } else {
        canonical = SCHEMAS[elementType].lower.get(lower);
      }
      if (canonical === undefined) {
        throw httpError(400, "Request_BadRequest", `Could not find a property named '${name}' on type '${typeName}'.`);
      }
      if (!out.includes(canonical)) out.push(canonical);
    }
    return out;
  }

  /** The JSON object for one directory object, honouring $select and the caller's read permissions. */
  private project(o: DirObject, select: string[] | null, roles: Set<string>, withType: boolean): Record<string, unknown> {
    const s = SCHEMAS[o.type];
    const readable = readRoleFor(o.type).some((r) => roles.has(r));
    const out: Record<string, unknown> = {};
    if (withType) out["@odata.type"] = o.odataType;
    out.id = o.id;
    const names = select ?? s.defaults;
    for (const name of names) {
      if (name === "id") continue;
      const def = s.props.get(name);
      if (def === undefined) {
        // Not a property of this type (mixed lists) or a directory extension.
        if (o.type === "user" && name.startsWith("extension_")) {
          if (!readable) continue;
          const v = o.props[name];
          if (v !== undefined && v !== null) out[name] = v;
        }
        continue;
      }
      if (!readable) {
        out[name] = null; // "Limited information returned for inaccessible member objects"
        continue;
      }
      const v = o.props[name];
      out[name] = v === undefined ? (def === "array" ? [] : null) : v;
    }
    return out;
  }
}

// ───────────────────────────── query parsing ─────────────────────────────

type Query = Map<string, string>;

/** Parses the query string; names are the raw option names (`$top`, `select`, …). */
function parseQuery(search: string): Query | HttpError {
  const q: Query = new Map();
  const params = new URLSearchParams(search);
  for (const [k, v] of params) {
    const name = k.trim();
    const lower = name.toLowerCase();
    const key = lower.startsWith("$") ? lower : name;
    if (q.has(key)) {
      return httpError(400, "BadRequest", `Query option '${name}' was specified more than once, but it must be specified at most once.`);
    }
    q.set(key, v);
  }
  for (const k of q.keys()) {
    if (!k.startsWith("$")) return unrecognized(k);
  }
  return q;
}

function unrecognized(name: string): HttpError {
  return httpError(400, "Request_BadRequest", `Unrecognized query argument specified: '${name}'.`);
}

function notImplemented(what: string): HttpError {
  console.error(`[graph-server] ${what} requested: not implemented by this stand-in (answered 400)`);
  return httpError(400, "Request_UnsupportedQuery", `${what} is not implemented by the Graph stand-in.`);
}

function cursorKey(pathname: string, q: Query): string {
  const parts = [...q.entries()].filter(([k]) => k !== "$skiptoken").map(([k, v]) => `${k}=${v}`).sort();
  return `${pathname.toLowerCase()}?${parts.join("&")}`;
}

function buildQuery(q: Query, skiptoken: string): string {
  const parts: string[] = [];
  for (const [k, v] of q) {
    if (k === "$skiptoken") continue;
    parts.push(`${k}=${encodeQueryComponent(v)}`);
  }
  parts.push(`$skiptoken=${skiptoken}`);
  return parts.join("&");
}

// OData $filter: the subset Graph supports on displayName, parsed strictly.

interface Filter {
  op: "startswith" | "eq";
  value: string;
}

type Tok = { t: "id"; v: string } | { t: "str"; v: string } | { t: "p"; v: "(" | ")" | "," } | { t: "num"; v: string };

function tokenize(s: string): Tok[] | null {
  const out: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === " " || c === "\t") {
      i++;
    } else if (c === "(" || c === ")" || c === ",") {
      out.push({ t: "p", v: c });
      i++;
    } else if (c === "'") {
      let v = "";
      i++;
      let closed = false;
      while (i < s.length) {
        if (s[i] === "'") {
          if (s[i + 1] === "'") {
            v += "'";
            i += 2;
            continue;
          }
          closed = true;
          i++;
          break;
        }
        v += s[i];
        i++;
      }
      if (!closed) return null; // unterminated string literal
      out.push({ t: "str", v });
    } else if (/[A-Za-z_$]/.test(c)) {
      let j = i;
      while (j < s.length && /[A-Za-z0-9_.$/]/.test(s[j]!)) j++;
      out.push({ t: "id", v: s.slice(i, j) });
      i = j;
    } else if (/[0-9-]/.test(c)) {
      let j = i + 1;
      while (j < s.length && /[0-9.:TZ-]/.test(s[j]!)) j++;
      out.push({ t: "num", v: s.slice(i, j) });
      i = j;
    } else {
      return null;
    }
  }
  return out;
}

function parseFilter(raw: string, resource: string): Filter {
  const syntax: HttpError = httpError(400, "BadRequest", "Invalid filter clause");
  const toks = tokenize(raw);
  if (toks === null || toks.length === 0) throw syntax;
  let depth = 0;
  for (const t of toks) {
    if (t.t === "p" && t.v === "(") depth++;
    if (t.t === "p" && t.v === ")") depth--;
    if (depth < 0) throw syntax;
  }
  if (depth !== 0) throw syntax;
  const unsupported = (prop: string | null): HttpError =>
    httpError(
      400,
      "Request_UnsupportedQuery",
      prop !== null ? `Unsupported or invalid query filter clause specified for property '${prop}' of resource '${resource}'.` : "Unsupported Query.",
    );
  const [a, b, c, d, e, f] = toks;
  // fn(prop, 'literal')
  if (toks.length === 6 && a?.t === "id" && b?.t === "p" && b.v === "(" && c?.t === "id" && d?.t === "p" && d.v === "," && e?.t === "str" && f?.t === "p" && f.v === ")") {
    if (a.v.toLowerCase() !== "startswith" || c.v.toLowerCase() !== "displayname") throw unsupported(c.v);
    return { op: "startswith", value: e.v };
  }
  // prop eq 'literal'
  if (toks.length === 3 && a?.t === "id" && b?.t === "id" && c?.t === "str") {
    if (!["eq", "ne", "gt", "ge", "lt", "le"].includes(b.v.toLowerCase())) throw syntax;
    if (b.v.toLowerCase() !== "eq" || a.v.toLowerCase() !== "displayname") throw unsupported(a.v);
    return { op: "eq", value: c.v };
  }
  // Anything else that tokenises: syntactically plausible OData we do not support.
  const firstProp = toks.find((t, i) => t.t === "id" && !(toks[i + 1]?.t === "p" && toks[i + 1]?.v === "(") && !["and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "true", "false", "null"].includes(t.v.toLowerCase()));
  throw unsupported(firstProp?.t === "id" ? firstProp.v : null);
}

function checkScope(scope: string | null, tenant: string): { error: string; code: number; text: string } | null {
  if (scope === null || scope.trim() === "") {
    return { error: "invalid_request", code: 900144, text: "The request body must contain the following parameter: 'scope'." };
  }
  const scopes = scope.trim().split(/\s+/);
  const only = scopes.length === 1 ? scopes[0]! : null;
  if (only === null || !only.endsWith("/.default")) {
    return {
      error: "invalid_scope",
      code: 1002012,
      text: `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
    };
  }
  const resource = only.slice(0, -"/.default".length);
  if (resource === "" || !(/^https?:\/\/[^/]/i.test(resource) || GUID_RE.test(resource) || /^api:\/\//i.test(resource))) {
    return {
      error: "invalid_scope",
      code: 70011,
      text: `The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope ${scope} is not valid. The scope format is invalid. Scope must be in a valid URI form <https://example/scope> or a valid Guid <guid/scope>.`,
    };
  }
  const normalized = resource.replace(/\/+$/, "").toLowerCase();
  if (normalized !== GRAPH_RESOURCE && normalized !== GRAPH_APP_ID) {
    return {
      error: "invalid_resource",
      code: 500011,
      text: `The resource principal named ${resource} was not found in the tenant named ${tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.`,
    };
  }
  return null;
}

// ───────────────────────────── small utilities ─────────────────────────────

function safeEqual(a: string, b: string): boolean {
  const x = createHash("sha256").update(a).digest();
  const y = createHash("sha256").update(b).digest();
  return timingSafeEqual(x, y) && a === b;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function compareNames(a: unknown, b: unknown): number {
  const x = typeof a === "string" ? a.toLowerCase() : "";
  const y = typeof b === "string" ? b.toLowerCase() : "";
  return x < y ? -1 : x > y ? 1 : 0;
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = chunk as Buffer;
    size += b.length;
    if (size <= limit) chunks.push(b);
  }
  return Buffer.concat(chunks);
}

async function drain(req: IncomingMessage): Promise<void> {
  if (req.readableEnded) return;
  for await (const _ of req) {
    // discard
  }
}
