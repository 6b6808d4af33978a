/**
 * No request that carries credentials follows a redirect: the homeserver's client API
 * (matrix-bot-sdk), the Synapse admin API, Microsoft Graph and the Entra ID token endpoint.
 * Each server is made to answer with a redirect to another port (another origin) of
 * 127.0.0.1; the target records what reached it and would answer happily. The end state: the
 * target saw nothing, the result is an error that names the Location (its query values
 * masked), and nothing the target could have said was believed.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AzureIdentityProvider } from "../../src/idp/azure.ts";
import { silentLogger } from "../../src/log.ts";
import { createBotSdkGateway } from "../../src/matrix/bot-sdk-gateway.ts";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import { createSynapseTokenBackend } from "../../src/tokens/synapse.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { GraphServer, guid } from "../graph/graph-server.ts";
import { azureSettings } from "../graph/azure-settings.ts";

const BOT = "@bot:example.org";

/** A server on another port that records every request and answers 200 with `body`. */
class Recorder {
  readonly seen: { method: string; url: string; authorization: string | null }[] = [];
  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(body: unknown): Promise<Recorder> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const rec = new Recorder(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    server.on("request", (req: IncomingMessage, res) => {
      rec.seen.push({ method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization ?? null });
      req.resume();
      const text = JSON.stringify(body);
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(text)) });
      res.end(text);
    });
    return rec;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

describe("the homeserver and the Synapse admin API", () => {
  let hs: FakeHomeserver;
  let token: string;
  let recorder: Recorder;

  beforeEach(async () => {
    hs = await FakeHomeserver.start({ serverName: "example.org" });
    token = hs.registerUser(BOT, undefined, { admin: true });
    // Whatever reaches it, the target answers as a homeserver would: an empty room state, an
    // empty token list.
    recorder = await Recorder.start({ registration_tokens: [{ token: "planted", uses_allowed: null, pending: 0, completed: 0, expiry_time: null }] });
  });

  afterEach(async () => {
    await recorder.close();
    await hs.close();
  });

  const gateway = (): ReturnType<typeof createBotSdkGateway> =>
    createBotSdkGateway({ homeserverUrl: hs.url, accessToken: token, requestTimeoutMs: 10_000, maxRetries: 0, log: silentLogger });

  it("a 302 on /state to another port is not followed: the token stays home and the error names the Location", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    const location = `${recorder.url}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state?access_token=${token}&x=1`;
    hs.redirectNext("state", 1, { status: 302, location });
    const r = await gateway().readRoom(roomId);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const masked = `${recorder.url}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state?access_token=***&x=***`;
    expect(r.error.message).toBe(
      `reading the state of ${roomId}: the homeserver at ${hs.url} answered 302, a redirect to ${masked}; not followed (a request that carries credentials never follows a redirect)`,
    );
    expect(r.error.message).not.toContain(token);
    expect(recorder.seen).toEqual([]);
  });

  it("a 307 on an invite (a POST) to another port is not re-sent there", async () => {
    const roomId = hs.createRoom({ creator: BOT }) as RoomId;
    hs.redirectNext("invite", 1, { status: 307, location: `${recorder.url}/invite` });
    const r = await gateway().invite(roomId, "@new:example.org" as UserId);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toContain(`answered 307, a redirect to ${recorder.url}/invite; not followed`);
    expect(recorder.seen).toEqual([]);
    expect(hs.members(roomId)["@new:example.org"]).toBeUndefined();
  });

  it("the Synapse admin API's token list: a redirect is an error naming the Location, the target's list is not believed", async () => {
    hs.redirectNext("admin_registration_tokens", 1, { status: 302, location: `${recorder.url}/_synapse/admin/v1/registration_tokens` });
    const backend = createSynapseTokenBackend({ homeserverUrl: hs.url, accessToken: token, timeoutMs: 10_000 });
    const r = await backend.list("all");
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.message).toBe(
        `Synapse admin API: ${hs.url}: answered 302, a redirect to ${recorder.url}/_synapse/admin/v1/registration_tokens; not followed (a request that carries credentials never follows a redirect)`,
      );
    }
    expect(recorder.seen).toEqual([]);
  });
});

describe("Microsoft Graph and the token endpoint", () => {
  const CLIENT = guid(1, 0xc1);
  const SECRET = "graph-secret-value";
  const GROUP = guid(10, 0x60);
  let graph: GraphServer;
  let target: GraphServer;

  beforeEach(async () => {
    graph = await GraphServer.start();
    target = await GraphServer.start({ tenantId: graph.tenantId });
    for (const g of [graph, target]) {
      g.addApp({ clientId: CLIENT, secret: SECRET, roles: ["GroupMember.Read.All", "User.Read.All", "Group.Read.All"] });
      g.addUser({ id: guid(20, 0x70), userPrincipalName: "alice@contoso.example", accountEnabled: true });
      g.addGroup({ id: GROUP, displayName: "Ops", members: [guid(20, 0x70)] });
    }
  });

  afterEach(async () => {
    await target.close();
    await graph.close();
  });

  const provider = (): AzureIdentityProvider =>
    new AzureIdentityProvider({
      settings: azureSettings(graph, { clientId: CLIENT, secret: SECRET }),
      userAttributes: ["uid"],
      log: silentLogger,
    });

  it("a Graph 302 to another origin is not followed: the snapshot fails naming the Location", async () => {
    graph.redirectNext({ count: 1, endpoint: "group", status: 302, location: `${target.graphBaseUrl}/groups/${GROUP}?$select=id,displayName&$skiptoken=secret` });
    const r = await provider().snapshot({ isMapped: () => true, explicitGroups: [GROUP] });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.message).toContain(`${graph.url}: answered 302, a redirect to ${target.graphBaseUrl}/groups/${GROUP}?%24select=***&%24skiptoken=***; not followed`);
      expect(r.error.message).not.toContain("secret");
    }
    expect(target.requests()).toEqual([]);
  });

  it("a 307 from the token endpoint (which would re-post the client secret) is not followed", async () => {
    graph.redirectNext({ count: 1, endpoint: "token", status: 307, location: target.tokenEndpoint });
    const r = await provider().snapshot({ isMapped: () => true, explicitGroups: [GROUP] });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toContain(`answered 307, a redirect to ${target.tokenEndpoint}; not followed`);
    expect(target.tokenRequestLog()).toEqual([]);
    expect(target.requests()).toEqual([]);
  });
});
