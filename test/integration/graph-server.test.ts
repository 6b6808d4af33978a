/**
 * Proves the Graph / identity-platform stand-in (test/graph/graph-server.ts) with the REAL client
 * libraries — @azure/identity (MSAL Node underneath) and @microsoft/microsoft-graph-client — and
 * with plain fetch for the strictness and fault-injection cases. No project code is used here.
 *
 * Needs NODE_EXTRA_CA_CERTS = ensureTestCa().caFile at process start (vitest.config.ts sets it).
 */
import { createPrivateKey, createSign, constants as cryptoConstants, randomUUID, sign as cryptoSign, X509Certificate, createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClientCertificateCredential, ClientSecretCredential } from "@azure/identity";
import { Client, GraphError, PageIterator, type PageCollection } from "@microsoft/microsoft-graph-client";
import { TokenCredentialAuthenticationProvider } from "@microsoft/microsoft-graph-client/authProviders/azureTokenCredentials/index.js";
import { GraphServer, generateUsers, guid, type GraphRole } from "../graph/graph-server.ts";
import { ensureTestCa, makeClientCertificate, type ClientCertificate } from "../graph/test-ca.ts";

const CA = ensureTestCa();
if (process.env.NODE_EXTRA_CA_CERTS !== CA.caFile) {
  throw new Error(
    `graph-server tests need NODE_EXTRA_CA_CERTS=${CA.caFile} at process start (got ${process.env.NODE_EXTRA_CA_CERTS ?? "(unset)"}). ` +
      "vitest.config.ts must call ensureTestCa() and set process.env.NODE_EXTRA_CA_CERTS before the workers start.",
  );
}

const SCOPE = "https://graph.microsoft.com/.default";
const EXT = "extension_0123456789abcdef0123456789abcdef_matrixId" as const;

// Directory fixture
const U = [1, 2, 3, 4, 5, 6].map((i) => guid(i, 0x1));
const [U1, U2, U3, U4, U5, U6] = U as [string, string, string, string, string, string];
const G_TEAM = guid(1, 0x2);
const G_NESTED = guid(2, 0x2);
const G_QUOTE = guid(3, 0x2);
const G_LOWER = guid(4, 0x2);
const G_FINANCE = guid(5, 0x2);
const G_EMPTY = guid(6, 0x2);
const DEVICE = guid(1, 0x3);
const SP = guid(1, 0x4);
const TEAM_NAME = "MTRX #team:example.org";

// Apps
const APP_FULL = guid(1, 0xa);
const APP_MEMBERS_ONLY = guid(2, 0xa);
const APP_NO_GROUPS = guid(3, 0xa);
const APP_CERT = guid(4, 0xa);
const APP_REVOKE = guid(5, 0xa);
const SECRET = "Abc8Q~s3cr3t.value-with~tilde";

interface GraphBody {
  "@odata.context"?: string;
  "@odata.count"?: number;
  "@odata.nextLink"?: string;
  value?: Record<string, unknown>[];
  id?: string;
  displayName?: string;
  error?: { code: string; message: string; innerError?: { date: string; "request-id": string; "client-request-id": string } };
}

interface AadError {
  error: string;
  error_description: string;
  error_codes: number[];
  timestamp: string;
  trace_id: string;
  correlation_id: string;
  error_uri?: string;
}

interface TokenBody {
  token_type: string;
  expires_in: number;
  ext_expires_in: number;
  access_token: string;
}

let server: GraphServer;
let workDir: string;
let clientCert: ClientCertificate;

async function postToken(form: Record<string, string>, tenant?: string): Promise<{ status: number; body: unknown }> {
  const url = `${server.url}/${tenant ?? server.tenantId}/oauth2/v2.0/token`;
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, body: (await res.json()) };
}

async function tokenFor(clientId: string, secret = SECRET): Promise<string> {
  const r = await postToken({ grant_type: "client_credentials", client_id: clientId, client_secret: secret, scope: SCOPE });
  expect(r.status).toBe(200);
  return (r.body as TokenBody).access_token;
}

async function graphGet(
  pathOrUrl: string,
  token: string | null,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; text: string; body: GraphBody }> {
  const url = pathOrUrl.startsWith("https://") ? pathOrUrl : `${server.graphBaseUrl}${pathOrUrl}`;
  const res = await fetch(url, { headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...headers } });
  const text = await res.text();
  let body: GraphBody = {};
  try {
    body = JSON.parse(text) as GraphBody;
  } catch {
    // malformed on purpose in some tests
  }
  return { status: res.status, headers: res.headers, text, body };
}

const EVENTUAL = { ConsistencyLevel: "eventual" };

function b64url(x: string | Buffer): string {
  return Buffer.from(x).toString("base64url");
}

/** A hand-made RS256 client assertion with an x5t (SHA-1) header, as older MSAL versions send. */
function rs256Assertion(cert: ClientCertificate, claims: Record<string, unknown>, keyPem = cert.keyPem): string {
  const der = new X509Certificate(cert.certPem).raw;
  const header = { alg: "RS256", typ: "JWT", x5t: b64url(createHash("sha1").update(der).digest()) };
  const data = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = createSign("sha256").update(data).sign(createPrivateKey(keyPem));
  return `${data}.${b64url(sig)}`;
}

function assertionClaims(clientId: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { aud: server.tokenEndpoint, iss: clientId, sub: clientId, jti: randomUUID(), nbf: now, exp: now + 600, ...overrides };
}

function graphClient(credential: ClientSecretCredential | ClientCertificateCredential): Client {
  return Client.initWithMiddleware({
    authProvider: new TokenCredentialAuthenticationProvider(credential, { scopes: [SCOPE] }),
    baseUrl: server.url,
    customHosts: new Set(["127.0.0.1"]),
  });
}

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), "mgs-graph-test-"));
  clientCert = makeClientCertificate(workDir);
  server = await GraphServer.start();

  const apps: [string, GraphRole[]][] = [
    [APP_FULL, ["GroupMember.Read.All", "User.Read.All", "Group.Read.All"]],
    [APP_MEMBERS_ONLY, ["GroupMember.Read.All"]],
    [APP_NO_GROUPS, ["User.Read.All"]],
    [APP_REVOKE, ["GroupMember.Read.All", "User.Read.All"]],
  ];
  for (const [clientId, roles] of apps) server.addApp({ clientId, secret: SECRET, roles });
  server.addApp({ clientId: APP_CERT, certificatePem: clientCert.certPem, roles: ["GroupMember.Read.All", "User.Read.All"] });

  U.forEach((id, i) =>
    server.addUser({
      id,
      userPrincipalName: `user${i + 1}@contoso.example`,
      mail: i === 1 ? null : `user${i + 1}@contoso.example`,
      accountEnabled: i !== 5,
      displayName: `User ${i + 1}`,
      userType: i === 4 ? "Guest" : "Member",
      onPremisesSamAccountName: i === 0 ? "user1" : null,
      [EXT]: `@user${i + 1}:example.org`,
    }),
  );
  server.addDevice({ id: DEVICE, displayName: "Kiosk PC" });
  server.addServicePrincipal({ id: SP, displayName: "Build bot" });
  server.addGroup({ id: G_NESTED, displayName: "Nested team", members: [U3, U4, U5, U1] });
  server.addGroup({ id: G_TEAM, displayName: TEAM_NAME, members: [U1, U2, G_NESTED, DEVICE, SP], owners: [U1, SP] });
  server.addGroup({ id: G_QUOTE, displayName: "MTRX it's quoted" });
  server.addGroup({ id: G_LOWER, displayName: "mtrx lower case" });
  server.addGroup({ id: G_FINANCE, displayName: "Finance" });
  server.addGroup({ id: G_EMPTY, displayName: "MTRX empty", members: [U6] });
});

afterAll(async () => {
  await server?.close();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

// ─────────────────────────── identity platform with the real @azure/identity ───────────────────────────

describe("identity platform with @azure/identity", () => {
  it("ClientSecretCredential gets a token; MSAL asks only the documented URLs", async () => {
    server.resetCounts();
    const cred = new ClientSecretCredential(server.tenantId, APP_FULL, SECRET, {
      authorityHost: server.authorityHost,
      disableInstanceDiscovery: true,
    });
    const t = await cred.getToken(SCOPE);
    expect(t.token.split(".")).toHaveLength(3);
    expect(t.expiresOnTimestamp).toBeGreaterThan(Date.now() + 3000 * 1000);
    const urls = server.requests().map((r) => `${r.method} ${r.url.replace(/\?.*$/, "")}`);
    console.log("[graph-server test] URLs requested by MSAL (ClientSecretCredential):", server.requests().map((r) => `${r.method} ${r.url}`));
    expect(urls).toEqual([
      `GET /${server.tenantId}/v2.0/.well-known/openid-configuration`,
      `POST /${server.tenantId}/oauth2/v2.0/token`,
    ]);
    expect(server.tokenRequests()).toBe(1);
    expect(server.tokenRequestLog()[0]).toMatchObject({ clientId: APP_FULL, grantType: "client_credentials", scope: SCOPE, auth: "secret", status: 200 });
    expect(server.unknownRequests()).toEqual([]);
    // a second getToken is served from MSAL's cache
    await cred.getToken(SCOPE);
    expect(server.tokenRequests()).toBe(1);
  });

  it("a wrong secret fails with invalid_client / AADSTS7000215", async () => {
    const cred = new ClientSecretCredential(server.tenantId, APP_FULL, "not-the-secret", {
      authorityHost: server.authorityHost,
      disableInstanceDiscovery: true,
    });
    const err = await cred.getToken(SCOPE).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(err).not.toBeNull();
    expect(err!.message).toMatch(/invalid_client/);
    expect(err!.message).toMatch(/AADSTS7000215/);
    console.log(`[graph-server test] wrong secret → ${err!.name}`);
  });

  it("ClientCertificateCredential (PEM with key + cert) gets a token: PS256 / x5t#S256 assertion", async () => {
    server.resetCounts();
    const cred = new ClientCertificateCredential(server.tenantId, APP_CERT, { certificatePath: clientCert.pemFile }, {
      authorityHost: server.authorityHost,
      disableInstanceDiscovery: true,
    });
    const t = await cred.getToken(SCOPE);
    expect(t.token.length).toBeGreaterThan(100);
    expect(server.tokenRequestLog()[0]).toMatchObject({ clientId: APP_CERT, auth: "assertion", status: 200 });
    console.log(`[graph-server test] MSAL client assertion alg: ${server.tokenRequestLog()[0]?.assertionAlg ?? "?"}`);
    // sendCertificateChain adds x5c; still accepted
    const chained = new ClientCertificateCredential(server.tenantId, APP_CERT, { certificatePath: clientCert.pemFile }, {
      authorityHost: server.authorityHost,
      disableInstanceDiscovery: true,
      sendCertificateChain: true,
    });
    await expect(chained.getToken(SCOPE)).resolves.toMatchObject({ token: expect.any(String) as unknown });
  });

  it("a certificate that is not registered is refused (AADSTS700027)", async () => {
    const other = makeClientCertificate(workDir);
    const cred = new ClientCertificateCredential(server.tenantId, APP_CERT, { certificatePath: other.pemFile }, {
      authorityHost: server.authorityHost,
      disableInstanceDiscovery: true,
    });
    await expect(cred.getToken(SCOPE)).rejects.toThrow(/AADSTS700027/);
  });
});

describe("token endpoint (raw)", () => {
  it("errors have the AAD shape and the documented codes", async () => {
    const wrong = await postToken({ grant_type: "client_credentials", client_id: APP_FULL, client_secret: "nope", scope: SCOPE });
    expect(wrong.status).toBe(401);
    const body = wrong.body as AadError;
    expect(Object.keys(body).sort()).toEqual(["correlation_id", "error", "error_codes", "error_description", "error_uri", "timestamp", "trace_id"]);
    expect(body.error).toBe("invalid_client");
    expect(body.error_codes).toEqual([7000215]);
    expect(body.error_description).toMatch(/^AADSTS7000215: Invalid client secret provided\. .*\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/s);
    expect(body.timestamp).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);

    const unknownClient = await postToken({ grant_type: "client_credentials", client_id: randomUUID(), client_secret: SECRET, scope: SCOPE });
    expect(unknownClient.status).toBe(400);
    expect(unknownClient.body).toMatchObject({ error: "unauthorized_client", error_codes: [700016] });

    const unknownTenant = await postToken({ grant_type: "client_credentials", client_id: APP_FULL, client_secret: SECRET, scope: SCOPE }, randomUUID());
    expect(unknownTenant.status).toBe(400);
    expect(unknownTenant.body).toMatchObject({ error: "invalid_tenant", error_codes: [90002] });
    const oidc = await fetch(`${server.url}/${randomUUID()}/v2.0/.well-known/openid-configuration`);
    expect(oidc.status).toBe(400);
    expect(await oidc.json()).toMatchObject({ error: "invalid_tenant", error_codes: [90002] });

    const base = { grant_type: "client_credentials", client_id: APP_FULL, client_secret: SECRET };
    const notDefault = await postToken({ ...base, scope: "https://graph.microsoft.com/User.Read.All" });
    expect(notDefault.status).toBe(400);
    expect(notDefault.body).toMatchObject({ error: "invalid_scope", error_codes: [1002012] });
    const badFormat = await postToken({ ...base, scope: "/.default" });
    expect(badFormat.body).toMatchObject({ error: "invalid_scope", error_codes: [70011] });
    const otherResource = await postToken({ ...base, scope: "https://management.azure.com/.default" });
    expect(otherResource.body).toMatchObject({ error: "invalid_resource", error_codes: [500011] });
    const noScope = await postToken(base);
    expect(noScope.body).toMatchObject({ error: "invalid_request", error_codes: [900144] });
    const noCred = await postToken({ grant_type: "client_credentials", client_id: APP_FULL, scope: SCOPE });
    expect(noCred.status).toBe(401);
    expect(noCred.body).toMatchObject({ error: "invalid_client", error_codes: [7000218] });
    const authCode = await postToken({ ...base, scope: SCOPE, grant_type: "authorization_code" });
    expect(authCode.body).toMatchObject({ error: "unsupported_grant_type" });
  });

  it("success body is {token_type, expires_in: 3599, ext_expires_in, access_token}; HTTP Basic works too", async () => {
    const ok = await postToken({ grant_type: "client_credentials", client_id: APP_FULL, client_secret: SECRET, scope: SCOPE });
    expect(ok.status).toBe(200);
    expect(Object.keys(ok.body as object).sort()).toEqual(["access_token", "expires_in", "ext_expires_in", "token_type"]);
    expect(ok.body).toMatchObject({ token_type: "Bearer", expires_in: 3599, ext_expires_in: 3599 });
    const res = await fetch(server.tokenEndpoint, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(APP_FULL)}:${encodeURIComponent(SECRET)}`).toString("base64")}`,
      },
      body: new URLSearchParams({ grant_type: "client_credentials", scope: SCOPE }).toString(),
    });
    expect(res.status).toBe(200);
  });

  it("verifies hand-made RS256 / x5t assertions: signature, aud, iss/sub, exp", async () => {
    const form = (assertion: string): Record<string, string> => ({
      grant_type: "client_credentials",
      client_id: APP_CERT,
      scope: SCOPE,
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: assertion,
    });
    const good = await postToken(form(rs256Assertion(clientCert, assertionClaims(APP_CERT))));
    expect(good.status).toBe(200);

    const wrongAud = await postToken(form(rs256Assertion(clientCert, assertionClaims(APP_CERT, { aud: `${server.url}/${server.tenantId}/v2.0` }))));
    expect(wrongAud.status).toBe(401);
    expect(wrongAud.body).toMatchObject({ error: "invalid_client", error_codes: [700023] });

    const wrongIss = await postToken(form(rs256Assertion(clientCert, assertionClaims(APP_CERT, { iss: APP_FULL, sub: APP_FULL }))));
    expect(wrongIss.body).toMatchObject({ error: "invalid_client", error_codes: [700021] });

    const expired = await postToken(form(rs256Assertion(clientCert, assertionClaims(APP_CERT, { exp: Math.floor(Date.now() / 1000) - 5 }))));
    expect(expired.body).toMatchObject({ error: "invalid_client", error_codes: [700024] });

    // signed with another key but claiming the registered certificate's thumbprint
    const other = makeClientCertificate(workDir);
    const forged = await postToken(form(rs256Assertion(clientCert, assertionClaims(APP_CERT), other.keyPem)));
    expect(forged.status).toBe(401);
    expect(forged.body).toMatchObject({ error: "invalid_client", error_codes: [700027] });
    expect((forged.body as AadError).error_description).toMatch(/failed signature validation/);

    // PS256 with x5t#S256, built by hand as MSAL 5 does
    const der = new X509Certificate(clientCert.certPem).raw;
    const header = { alg: "PS256", typ: "JWT", "x5t#S256": b64url(createHash("sha256").update(der).digest()) };
    const data = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(assertionClaims(APP_CERT)))}`;
    const sig = cryptoSign("sha256", Buffer.from(data), {
      key: createPrivateKey(clientCert.keyPem),
      padding: cryptoConstants.RSA_PKCS1_PSS_PADDING,
      saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST,
    });
    expect((await postToken(form(`${data}.${b64url(sig)}`))).status).toBe(200);
    expect(clientCert.thumbprintSha1Hex).toMatch(/^[0-9A-F]{40}$/);
  });

  it("revokeApp: issued tokens stop working and new token requests get invalid_client", async () => {
    const token = await tokenFor(APP_REVOKE);
    expect((await graphGet(`/groups/${G_TEAM}?$select=id,displayName`, token)).status).toBe(200);
    server.revokeApp(APP_REVOKE);
    const after = await graphGet(`/groups/${G_TEAM}?$select=id,displayName`, token);
    expect(after.status).toBe(401);
    expect(after.body.error?.code).toBe("InvalidAuthenticationToken");
    const again = await postToken({ grant_type: "client_credentials", client_id: APP_REVOKE, client_secret: SECRET, scope: SCOPE });
    expect(again.status).toBe(401);
    expect(again.body).toMatchObject({ error: "invalid_client", error_codes: [7000215] });
  });
});

// ─────────────────────────── Graph with the real @microsoft/microsoft-graph-client ───────────────────────────

describe("Graph with @microsoft/microsoft-graph-client", () => {
  const castPath = `/groups/${G_TEAM}/transitiveMembers/microsoft.graph.user`;

  it("reads transitiveMembers/microsoft.graph.user across 3 pages following @odata.nextLink (ConsistencyLevel re-sent)", async () => {
    const cred = new ClientSecretCredential(server.tenantId, APP_FULL, SECRET, { authorityHost: server.authorityHost, disableInstanceDiscovery: true });
    const client = graphClient(cred);
    server.resetCounts();
    const first = (await client
      .api(castPath)
      .header("ConsistencyLevel", "eventual")
      .query({ $count: "true" })
      .select(["id", "userPrincipalName", "accountEnabled", EXT])
      .top(2)
      .get()) as PageCollection;
    expect(first["@odata.count"]).toBe(5);
    const users: Record<string, unknown>[] = [];
    const it = new PageIterator(
      client,
      first,
      (u: Record<string, unknown>) => {
        users.push(u);
        return true;
      },
      { headers: EVENTUAL },
    );
    await it.iterate();
    expect(users.map((u) => u.id)).toEqual([U1, U2, U3, U4, U5]);
    expect(users[0]).toEqual({ id: U1, userPrincipalName: "user1@contoso.example", accountEnabled: true, [EXT]: "@user1:example.org" });
    expect(users.every((u) => !("@odata.type" in u))).toBe(true);
    expect(server.requestCounts().transitiveMembers).toBe(3);
    const listed = server.requests().filter((r) => r.kind === "transitiveMembers");
    expect(listed.every((r) => r.consistencyLevel === "eventual")).toBe(true);
  });

  it("without ConsistencyLevel the cast is a 400 Request_UnsupportedQuery; PageIterator without requestOptions fails on page 2", async () => {
    const cred = new ClientSecretCredential(server.tenantId, APP_FULL, SECRET, { authorityHost: server.authorityHost, disableInstanceDiscovery: true });
    const client = graphClient(cred);
    const err = await client
      .api(castPath)
      .query({ $count: "true" })
      .top(2)
      .get()
      .then(
        () => null,
        (e: unknown) => e as GraphError,
      );
    expect(err).toBeInstanceOf(GraphError);
    expect(err!.statusCode).toBe(400);
    expect(err!.code).toBe("Request_UnsupportedQuery");

    const first = (await client.api(castPath).header("ConsistencyLevel", "eventual").query({ $count: "true" }).top(2).get()) as PageCollection;
    const it = new PageIterator(client, first, () => true);
    const pageErr = await it.iterate().then(
      () => null,
      (e: unknown) => e as GraphError,
    );
    expect(pageErr?.statusCode).toBe(400);
    expect(pageErr?.code).toBe("Request_UnsupportedQuery");
  });
});

// ─────────────────────────── strictness with plain fetch ───────────────────────────

describe("Graph strictness (fetch)", () => {
  let full: string;
  let membersOnly: string;
  let noGroups: string;

  beforeAll(async () => {
    full = await tokenFor(APP_FULL);
    membersOnly = await tokenFor(APP_MEMBERS_ONLY);
    noGroups = await tokenFor(APP_NO_GROUPS);
  });

  it("401 without / with a bad token, headers and innerError present", async () => {
    const none = await graphGet(`/groups/${G_TEAM}/members`, null, { "client-request-id": "my-req-1" });
    expect(none.status).toBe(401);
    expect(none.body.error?.code).toBe("InvalidAuthenticationToken");
    expect(none.body.error?.message).toBe("Access token is empty.");
    expect(none.body.error?.innerError?.["client-request-id"]).toBe("my-req-1");
    expect(none.headers.get("client-request-id")).toBe("my-req-1");
    expect(none.headers.get("request-id")).toMatch(/^[0-9a-f-]{36}$/);
    const garbage = await graphGet(`/groups/${G_TEAM}/members`, "not-a-token");
    expect(garbage.status).toBe(401);
    expect(garbage.body.error?.message).toMatch(/CompactToken parsing failed/);
    const forged = full.slice(0, -4) + (full.endsWith("AAAA") ? "BBBB" : "AAAA");
    expect((await graphGet(`/groups/${G_TEAM}/members`, forged)).status).toBe(401);
  });

  it("expireTokens(): 401 'Lifetime validation failed, the token is expired.'", async () => {
    const t = await tokenFor(APP_FULL);
    server.expireTokens();
    const r = await graphGet(`/groups/${G_TEAM}`, t);
    expect(r.status).toBe(401);
    expect(r.body.error?.message).toBe("Lifetime validation failed, the token is expired.");
    full = await tokenFor(APP_FULL);
    membersOnly = await tokenFor(APP_MEMBERS_ONLY);
    noGroups = await tokenFor(APP_NO_GROUPS);
    expect((await graphGet(`/groups/${G_TEAM}`, full)).status).toBe(200);
  });

  it("403 Authorization_RequestDenied without a group permission", async () => {
    for (const path of [`/groups/${G_TEAM}/transitiveMembers`, `/groups/${G_TEAM}/members`, `/groups/${G_TEAM}/owners`, `/groups?$filter=startswith(displayName,'MTRX')`, `/groups/${G_TEAM}`]) {
      const r = await graphGet(path, noGroups);
      expect(r.status, path).toBe(403);
      expect(r.body.error?.code).toBe("Authorization_RequestDenied");
      expect(r.body.error?.message).toBe("Insufficient privileges to complete the operation.");
    }
  });

  it("without User.Read.All users come back with limited information (id + @odata.type, nulls)", async () => {
    const r = await graphGet(`/groups/${G_TEAM}/members?$select=id,userPrincipalName,accountEnabled,${EXT}`, membersOnly);
    expect(r.status).toBe(200);
    expect(r.body.value?.[0]).toEqual({ "@odata.type": "#microsoft.graph.user", id: U1, userPrincipalName: null, accountEnabled: null });
    const cast = await graphGet(`/groups/${G_TEAM}/transitiveMembers/microsoft.graph.user?$count=true&$select=id,userPrincipalName`, membersOnly, EVENTUAL);
    expect(cast.status).toBe(200);
    expect(cast.body.value).toHaveLength(5);
    expect(cast.body.value?.every((u) => u.userPrincipalName === null)).toBe(true);
  });

  it("$top above 999 (and 0) is refused; default page is 100", async () => {
    const big = await graphGet(`/groups/${G_TEAM}/transitiveMembers?$top=1000`, full);
    expect(big.status).toBe(400);
    expect(big.body.error?.code).toBe("Request_UnsupportedQuery");
    expect(big.body.error?.message).toBe("Invalid page size specified: '1000'. Must be between 1 and 999 inclusive.");
    expect((await graphGet(`/groups?$top=0`, full)).status).toBe(400);
    expect((await graphGet(`/groups?$top=999`, full)).status).toBe(200);
    expect((await graphGet(`/groups?$top=abc`, full)).body.error?.code).toBe("BadRequest");
  });

  it("$select is validated and honoured; users return the default set without $select", async () => {
    const bad = await graphGet(`/groups/${G_TEAM}/transitiveMembers/microsoft.graph.user?$count=true&$select=id,matrixId`, full, EVENTUAL);
    expect(bad.status).toBe(400);
    expect(bad.body.error?.code).toBe("Request_BadRequest");
    expect(bad.body.error?.message).toBe("Could not find a property named 'matrixId' on type 'microsoft.graph.user'.");
    const badGroup = await graphGet(`/groups/${G_TEAM}?$select=id,userPrincipalName`, full);
    expect(badGroup.body.error?.message).toBe("Could not find a property named 'userPrincipalName' on type 'microsoft.graph.group'.");

    const sel = await graphGet(`/groups/${G_TEAM}?$select=id,displayname`, full);
    expect(sel.body).toEqual({ "@odata.context": `${server.graphBaseUrl}/$metadata#groups(id,displayName)/$entity`, id: G_TEAM, displayName: TEAM_NAME });
    const def = await graphGet(`/groups/${G_TEAM}/members`, full);
    const u1 = def.body.value?.[0];
    expect(u1?.["@odata.type"]).toBe("#microsoft.graph.user");
    expect(u1).toHaveProperty("userPrincipalName", "user1@contoso.example");
    expect(u1).not.toHaveProperty("accountEnabled"); // returned only on $select
    expect(u1).not.toHaveProperty(EXT); // directory extensions only on $select
    expect(u1).toHaveProperty("businessPhones", []);
    const mailNull = await graphGet(`/groups/${G_TEAM}/members?$select=id,mail,onPremisesSamAccountName`, full);
    expect(mailNull.body.value?.[1]).toEqual({ "@odata.type": "#microsoft.graph.user", id: U2, mail: null, onPremisesSamAccountName: null });
    const unknownArg = await graphGet(`/groups/${G_TEAM}/members?select=id`, full);
    expect(unknownArg.body.error).toMatchObject({ code: "Request_BadRequest", message: "Unrecognized query argument specified: 'select'." });
  });

  it("filter with an unencoded '#' is cut by the client (fragment) → 400; percent-encoded works", async () => {
    const prefix = "MTRX #team:";
    // fetch drops everything from '#' on: the server sees an unterminated string literal.
    const raw = await graphGet(`/groups?$filter=startswith(displayName,'${prefix}')&$select=id,displayName`, full);
    expect(raw.status).toBe(400);
    expect(raw.body.error).toMatchObject({ code: "BadRequest", message: "Invalid filter clause" });
    expect(server.requests().at(-1)?.url).not.toContain("#");

    const enc = await graphGet(`/groups?$filter=${encodeURIComponent(`startswith(displayName,'${prefix}')`)}&$select=id,displayName`, full);
    expect(enc.status).toBe(200);
    expect(enc.body.value).toEqual([{ id: G_TEAM, displayName: TEAM_NAME }]);

    // the directory compares case-insensitively: 'MTRX' also matches "mtrx lower case"
    const all = await graphGet(`/groups?$filter=${encodeURIComponent("startswith(displayName,'MTRX')")}&$select=id,displayName`, full);
    expect(all.body.value?.map((g) => g.displayName)).toEqual([TEAM_NAME, "MTRX it's quoted", "mtrx lower case", "MTRX empty"]);
    // OData quote escaping
    const quoted = await graphGet(`/groups?$filter=${encodeURIComponent("startswith(displayName,'MTRX it''s')")}`, full);
    expect(quoted.body.value?.map((g) => g.id)).toEqual([G_QUOTE]);
    const unescaped = await graphGet(`/groups?$filter=${encodeURIComponent("startswith(displayName,'MTRX it's')")}`, full);
    expect(unescaped.status).toBe(400);
    const other = await graphGet(`/groups?$filter=${encodeURIComponent("contains(displayName,'MTRX')")}`, full);
    expect(other.body.error?.code).toBe("Request_UnsupportedQuery");
    const eq = await graphGet(`/groups?$filter=${encodeURIComponent("displayName eq 'Finance'")}&$select=id`, full);
    expect(eq.body.value).toEqual([{ id: G_FINANCE }]);
  });

  it("/groups paging: default 100, $top, opaque nextLink with $skiptoken; expired tokens are refused", async () => {
    const p1 = await graphGet(`/groups?$filter=${encodeURIComponent("startswith(displayName,'MTRX')")}&$select=id,displayName&$top=3`, full);
    expect(p1.body.value).toHaveLength(3);
    const next = p1.body["@odata.nextLink"]!;
    expect(next.startsWith(`${server.graphBaseUrl}/groups?`)).toBe(true);
    expect(next).toContain("$skiptoken=");
    expect(next).toContain("$top=3");
    const p2 = await graphGet(next, full);
    expect(p2.body.value?.map((g) => g.displayName)).toEqual(["MTRX empty"]);
    expect(p2.body["@odata.nextLink"]).toBeUndefined();
    server.expirePageTokens();
    const stale = await graphGet(next, full);
    expect(stale.status).toBe(400);
    expect(stale.body.error?.code).toBe("Directory_ExpiredPageToken");
  });

  it("uncast lists are mixed: groups, devices and service principals with @odata.type; owners are users and SPs", async () => {
    const direct = await graphGet(`/groups/${G_TEAM}/members?$select=id,displayName`, full);
    expect(direct.body.value?.map((o) => [o["@odata.type"], o.id])).toEqual([
      ["#microsoft.graph.user", U1],
      ["#microsoft.graph.user", U2],
      ["#microsoft.graph.group", G_NESTED],
      ["#microsoft.graph.device", DEVICE],
      ["#microsoft.graph.servicePrincipal", SP],
    ]);
    // no Device.Read.All / Application.Read.All: limited information
    expect(direct.body.value?.[3]).toEqual({ "@odata.type": "#microsoft.graph.device", id: DEVICE, displayName: null });
    expect(direct.body.value?.[2]).toEqual({ "@odata.type": "#microsoft.graph.group", id: G_NESTED, displayName: "Nested team" });

    const trans = await graphGet(`/groups/${G_TEAM}/transitiveMembers?$select=id`, full);
    expect(trans.body.value?.map((o) => o.id)).toEqual([U1, U2, G_NESTED, U3, U4, U5, DEVICE, SP]);
    expect(trans.body["@odata.count"]).toBeUndefined(); // $count absent
    const silentlyIgnored = await graphGet(`/groups/${G_TEAM}/transitiveMembers?$select=id&$count=true`, full);
    expect(silentlyIgnored.status).toBe(200);
    expect(silentlyIgnored.body["@odata.count"]).toBeUndefined(); // no ConsistencyLevel: ignored, as documented

    const groupsOnly = await graphGet(`/groups/${G_TEAM}/members/microsoft.graph.group?$count=true&$select=id,displayName`, full, EVENTUAL);
    expect(groupsOnly.body.value).toEqual([{ id: G_NESTED, displayName: "Nested team" }]);
    expect(groupsOnly.body["@odata.count"]).toBe(1);
    const groupsNoHeader = await graphGet(`/groups/${G_TEAM}/members/microsoft.graph.group?$count=true`, full);
    expect(groupsNoHeader.status).toBe(400);
    expect(groupsNoHeader.body.error?.code).toBe("Request_UnsupportedQuery");

    const owners = await graphGet(`/groups/${G_TEAM}/owners?$select=id,userPrincipalName`, full);
    expect(owners.body.value).toEqual([
      { "@odata.type": "#microsoft.graph.user", id: U1, userPrincipalName: "user1@contoso.example" },
      { "@odata.type": "#microsoft.graph.servicePrincipal", id: SP },
    ]);
    expect(server.requestCounts().owners).toBeGreaterThan(0);
  });

  it("a later page without the ConsistencyLevel header is refused", async () => {
    const p1 = await graphGet(`/groups/${G_TEAM}/transitiveMembers/microsoft.graph.user?$count=true&$top=2&$select=id`, full, EVENTUAL);
    expect(p1.status).toBe(200);
    const next = p1.body["@odata.nextLink"]!;
    const noHeader = await graphGet(next, full);
    expect(noHeader.status).toBe(400);
    expect(noHeader.body.error?.code).toBe("Request_UnsupportedQuery");
    expect((await graphGet(next, full, EVENTUAL)).status).toBe(200);
  });

  it("404 for an unknown group, 400 for a malformed id, 400 + loud log for an unknown segment", async () => {
    const missing = randomUUID();
    const nf = await graphGet(`/groups/${missing}?$select=id`, full);
    expect(nf.status).toBe(404);
    expect(nf.body.error).toMatchObject({ code: "Request_ResourceNotFound", message: `Resource '${missing}' does not exist or one of its queried reference-property objects are not present.` });
    const nfm = await graphGet(`/groups/${missing}/transitiveMembers`, full);
    expect(nfm.status).toBe(404);
    expect((await graphGet(`/groups/not-a-guid/members`, full)).body.error?.code).toBe("Request_BadRequest");
    const before = server.unknownRequests().length;
    expect(before).toBe(0);
    const seg = await graphGet(`/groups/${G_TEAM}/memberz`, full);
    expect(seg.status).toBe(400);
    expect(seg.body.error?.message).toBe("Resource not found for the segment 'memberz'.");
    expect(server.unknownRequests().length).toBe(before + 1);
  });

  it("responses carry request-id, client-request-id and the OData content type", async () => {
    const r = await graphGet(`/groups/${G_TEAM}/members?$select=id`, full, { "client-request-id": "abc-123" });
    expect(r.headers.get("request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.headers.get("client-request-id")).toBe("abc-123");
    expect(r.headers.get("content-type")).toMatch(/^application\/json;odata\.metadata=minimal/);
    expect(r.body["@odata.context"]).toBe(`${server.graphBaseUrl}/$metadata#directoryObjects(id)`);
  });
});

// ─────────────────────────── fault injection ───────────────────────────

describe("fault injection", () => {
  let full: string;
  beforeAll(async () => {
    full = await tokenFor(APP_FULL);
  });

  it("throttle: 429 with Retry-After (or without), 503; then normal again", async () => {
    server.throttle({ count: 2, retryAfterSeconds: 7, endpoint: "transitiveMembers" });
    const path = `/groups/${G_TEAM}/transitiveMembers?$select=id`;
    const a = await graphGet(path, full);
    expect(a.status).toBe(429);
    expect(a.headers.get("retry-after")).toBe("7");
    expect(a.body.error?.code).toBe("TooManyRequests");
    expect((await graphGet(`/groups/${G_TEAM}`, full)).status).toBe(200); // other endpoint not throttled
    expect((await graphGet(path, full)).status).toBe(429);
    expect((await graphGet(path, full)).status).toBe(200);

    server.throttle({ count: 1, retryAfterSeconds: null });
    const b = await graphGet(path, full);
    expect(b.status).toBe(429);
    expect(b.headers.get("retry-after")).toBeNull();

    server.throttle({ count: 1, status: 503, retryAfterSeconds: 2 });
    const c = await graphGet(path, full);
    expect(c.status).toBe(503);
    expect(c.headers.get("retry-after")).toBe("2");
  });

  it("failPage: page 2 fails once with 503, the same nextLink then succeeds", async () => {
    server.failPage({ groupId: G_TEAM, page: 2, status: 503 });
    const p1 = await graphGet(`/groups/${G_TEAM}/transitiveMembers?$top=3&$select=id`, full);
    expect(p1.status).toBe(200);
    const next = p1.body["@odata.nextLink"]!;
    const p2 = await graphGet(next, full);
    expect(p2.status).toBe(503);
    expect(p2.body.error?.code).toBe("serviceNotAvailable");
    const retry = await graphGet(next, full);
    expect(retry.status).toBe(200);
    expect(retry.body.value?.map((o) => o.id)).toEqual([U3, U4, U5]);
  });

  it("corruptNextLink: the first page's nextLink points to another host", async () => {
    server.corruptNextLink({ groupId: G_TEAM, to: "other-host" });
    const p1 = await graphGet(`/groups/${G_TEAM}/transitiveMembers?$top=2&$select=id`, full);
    const next = new URL(p1.body["@odata.nextLink"]!);
    expect(next.host).toBe("evil.example.net");
    expect(next.pathname).toBe(`/v1.0/groups/${G_TEAM}/transitiveMembers`);
    const clean = await graphGet(`/groups/${G_TEAM}/transitiveMembers?$top=2&$select=id`, full);
    expect(new URL(clean.body["@odata.nextLink"]!).host).toBe(new URL(server.url).host);
  });

  it("malformedJson: the next response of that kind is truncated JSON with status 200", async () => {
    server.malformedJson({ endpoint: "members", count: 1 });
    const bad = await graphGet(`/groups/${G_TEAM}/members?$select=id`, full);
    expect(bad.status).toBe(200);
    expect(() => JSON.parse(bad.text) as unknown).toThrow();
    const good = await graphGet(`/groups/${G_TEAM}/members?$select=id`, full);
    expect(() => JSON.parse(good.text) as unknown).not.toThrow();
  });

  it("unknownType: an orgContact appears in uncast lists (not in the user cast)", async () => {
    const contactId = server.unknownType({ groupId: G_EMPTY });
    const mixed = await graphGet(`/groups/${G_EMPTY}/transitiveMembers?$select=id,displayName`, full);
    expect(mixed.body.value?.map((o) => o["@odata.type"])).toEqual(["#microsoft.graph.user", "#microsoft.graph.orgContact"]);
    expect(mixed.body.value?.[1]?.id).toBe(contactId);
    const weird = server.unknownType({ groupId: G_EMPTY, odataType: "#microsoft.graph.agentIdentity" });
    const mixed2 = await graphGet(`/groups/${G_EMPTY}/members?$select=id`, full);
    expect(mixed2.body.value?.at(-1)).toEqual({ "@odata.type": "#microsoft.graph.agentIdentity", id: weird });
    const users = await graphGet(`/groups/${G_EMPTY}/transitiveMembers/microsoft.graph.user?$count=true&$select=id,accountEnabled`, full, EVENTUAL);
    expect(users.body.value).toEqual([{ id: U6, accountEnabled: false }]);
  });
});

// ─────────────────────────── scale ───────────────────────────

describe("scale", () => {
  it("adds 50,000 users fast and serves 51 pages of 999", async () => {
    const big = await GraphServer.start();
    try {
      big.addApp({ clientId: APP_FULL, secret: SECRET, roles: ["GroupMember.Read.All", "User.Read.All"] });
      const users = generateUsers(50_000, { matrixIdExtension: EXT });
      const t0 = performance.now();
      big.addUsers(users);
      big.addGroup({ id: guid(1, 0xb), displayName: "MTRX big", members: users.map((u) => u.id) });
      const addMs = performance.now() - t0;

      const tokRes = await fetch(big.tokenEndpoint, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "client_credentials", client_id: APP_FULL, client_secret: SECRET, scope: SCOPE }).toString(),
      });
      const token = ((await tokRes.json()) as TokenBody).access_token;

      const t1 = performance.now();
      let url: string | undefined = `${big.graphBaseUrl}/groups/${guid(1, 0xb)}/transitiveMembers/microsoft.graph.user?$count=true&$top=999&$select=id,userPrincipalName,accountEnabled,${EXT}`;
      let pages = 0;
      let seen = 0;
      while (url !== undefined) {
        const res = await fetch(url, { headers: { authorization: `Bearer ${token}`, ...EVENTUAL } });
        expect(res.status).toBe(200);
        const body = (await res.json()) as GraphBody;
        pages++;
        seen += body.value?.length ?? 0;
        url = body["@odata.nextLink"];
      }
      const serveMs = performance.now() - t1;
      console.log(`[graph-server test] add 50,000 users + 1 group: ${addMs.toFixed(0)} ms; ${pages} pages of ≤999 users (cast, $select, ConsistencyLevel): ${serveMs.toFixed(0)} ms`);
      expect(pages).toBe(51);
      expect(seen).toBe(50_000);
      expect(big.requestCounts().transitiveMembers).toBe(51);
      expect(addMs).toBeLessThan(3_000);
      expect(serveMs).toBeLessThan(15_000);
    } finally {
      await big.close();
    }
  });
});
