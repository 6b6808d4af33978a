/**
 * Signing in to Entra ID fails for different reasons that need different fixes: an unknown
 * tenant (tenantId), an authority that cannot be reached (authorityHost, the network) and
 * one whose certificate is not trusted (authorityHost, the CA). Each is said as what it is,
 * with the REAL @azure/identity credential against the Graph stand-in (https, test CA).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:https";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AzureIdentityProvider, type AzureSettings } from "../../src/idp/azure.ts";
import type { SnapshotHint } from "../../src/idp/types.ts";
import { silentLogger } from "../../src/log.ts";
import { GraphServer, guid } from "../graph/graph-server.ts";
import { azureSettings } from "../graph/azure-settings.ts";

const CLIENT = guid(1, 9);
const SECRET = "stand-in-client-secret-value";
const hint: SnapshotHint = { isMapped: () => true, explicitGroups: [guid(1, 1)] };

let graph: GraphServer;
let dir: string;
/** An https server whose self-signed certificate is not in the trusted CAs. */
let untrusted: Server;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-azure-auth-"));
  graph = await GraphServer.start();
  graph.addApp({ clientId: CLIENT, secret: SECRET, roles: ["GroupMember.Read.All", "User.Read.All", "Group.Read.All"] });
  graph.addGroup({ id: guid(1, 1), displayName: "Staff", members: [] });
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "2",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
    { stdio: "ignore" },
  );
  untrusted = createServer({ key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "cert.pem")) }, (_req, res) => {
    res.writeHead(500).end();
  });
  await new Promise<void>((resolve) => untrusted.listen(0, "127.0.0.1", resolve));
});

afterAll(async () => {
  await graph?.close();
  await new Promise((resolve) => (untrusted ? untrusted.close(resolve) : resolve(undefined)));
  await rm(dir, { recursive: true, force: true });
});

function settings(overrides: Partial<AzureSettings>): AzureSettings {
  return azureSettings(graph, { clientId: CLIENT, secret: SECRET }, { timeoutMs: 30_000, ...overrides });
}

async function failureOf(overrides: Partial<AzureSettings>): Promise<string> {
  const provider = new AzureIdentityProvider({ settings: settings(overrides), userAttributes: ["uid"], log: silentLogger });
  const result = await provider.snapshot(hint);
  if (result.ok) throw new Error("the read succeeded");
  return result.error.message;
}

/** A port nobody listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("Azure sign-in failures, told apart", () => {
  it("the right settings sign in (the stand-in itself is fine)", async () => {
    const provider = new AzureIdentityProvider({ settings: settings({}), userAttributes: ["uid"], log: silentLogger });
    expect((await provider.snapshot(hint)).ok).toBe(true);
  });

  it("an unknown tenant", async () => {
    const tenant = guid(7, 7);
    const message = await failureOf({ tenantId: tenant });
    expect(message).toMatch(/unknown tenant/);
    expect(message).toContain(tenant);
    expect(message).toMatch(/AADSTS90002/);
    expect(message).toMatch(/idp\.azure\.tenantId/);
    expect(message).not.toMatch(/endpoints_resolution_error/);
  });

  it("an authority that cannot be reached", async () => {
    const port = await closedPort();
    const message = await failureOf({ authorityHost: `https://127.0.0.1:${port}` });
    expect(message).toMatch(new RegExp(`cannot reach the authority at https://127\\.0\\.0\\.1:${port}`));
    expect(message).toMatch(/ECONNREFUSED/);
    expect(message).not.toMatch(/unknown tenant|certificate/);
  });

  it("an authority whose certificate is not trusted", async () => {
    const { port } = untrusted.address() as AddressInfo;
    const message = await failureOf({ authorityHost: `https://127.0.0.1:${port}` });
    expect(message).toMatch(/TLS certificate that is not trusted/);
    expect(message).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY/);
    expect(message).not.toMatch(/unknown tenant|cannot reach/);
  });

  it("the client secret of an app the tenant knows is still told as a wrong secret", async () => {
    expect(await failureOf({ clientSecret: "not-it" })).toMatch(/sign-in refused: invalid client secret or certificate/);
  });
});
