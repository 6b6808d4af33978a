/**
 * The Azure AD / Entra ID provider against the strict Graph stand-in, with the REAL
 * @azure/identity credential signing in at the stand-in's token endpoint over https.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AzureIdentityProvider, type AzureSettings } from "../../src/idp/azure.ts";
import type { DirectorySnapshot, SnapshotHint } from "../../src/idp/types.ts";
import { silentLogger } from "../../src/log.ts";
import { runCli, type CliIo } from "../../src/main.ts";
import { Metrics } from "../../src/service/metrics.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { GraphServer, guid } from "../graph/graph-server.ts";
import { azureSettings } from "../graph/azure-settings.ts";
import { makeClientCertificate } from "../graph/test-ca.ts";

const CLIENT = guid(1, 9);
const SECRET = "stand-in-client-secret-value";
const ALL_ROLES = ["GroupMember.Read.All", "User.Read.All", "Group.Read.All"] as const;

const U = {
  alice: guid(1),
  bob: guid(2),
  carol: guid(3), // disabled
  dave: guid(4),
  erin: guid(5),
  guest: guid(6),
  device: guid(7),
  sp: guid(8),
};
const G = { eng: guid(1, 1), leads: guid(2, 1), ops: guid(3, 1), quote: guid(4, 1), other: guid(5, 1) };

let graph: GraphServer;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-azure-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  graph = await GraphServer.start();
  graph.addApp({ clientId: CLIENT, secret: SECRET, roles: [...ALL_ROLES] });
  graph.addUser({ id: U.alice, userPrincipalName: "Alice@contoso.com", accountEnabled: true, mail: "alice@contoso.com" });
  graph.addUser({ id: U.bob, userPrincipalName: "bob@contoso.com", accountEnabled: true });
  graph.addUser({ id: U.carol, userPrincipalName: "carol@contoso.com", accountEnabled: false });
  graph.addUser({ id: U.dave, userPrincipalName: "dave@contoso.com", accountEnabled: true, onPremisesSamAccountName: "DAVE01" });
  graph.addUser({ id: U.erin, userPrincipalName: "erin@contoso.com", accountEnabled: true });
  graph.addUser({
    id: U.guest,
    userPrincipalName: "zoe_partner.example#EXT#@contoso.onmicrosoft.com",
    accountEnabled: true,
    userType: "Guest",
    mail: "zoe@partner.example",
  });
  graph.addDevice({ id: U.device, displayName: "printer" });
  graph.addServicePrincipal({ id: U.sp, displayName: "automation" });
  graph.addGroup({ id: G.leads, displayName: "Eng Leads", members: [U.dave] });
  graph.addGroup({
    id: G.eng,
    displayName: "MTRX #eng:example.org",
    members: [U.alice, U.bob, U.carol, G.leads, U.device, U.sp, U.guest],
    owners: [U.erin, U.sp],
  });
  graph.addGroup({ id: G.ops, displayName: "Ops", members: [U.bob, U.dave] });
  graph.addGroup({ id: G.quote, displayName: "O'Brien's team", members: [U.erin] });
  graph.addGroup({ id: G.other, displayName: "Unrelated", members: [U.alice] });
});

afterEach(async () => {
  await graph.close();
});

function settings(overrides: Partial<AzureSettings> = {}): AzureSettings {
  return azureSettings(graph, { clientId: CLIENT, secret: SECRET }, { readOwners: true, maxRetries: 3, ...overrides });
}

let waits: number[];
function provider(overrides: Partial<AzureSettings> = {}): AzureIdentityProvider {
  waits = [];
  return new AzureIdentityProvider({
    settings: settings(overrides),
    userAttributes: ["uid"],
    log: silentLogger,
    sleep: (ms) => {
      waits.push(ms);
      return Promise.resolve();
    },
  });
}

const hint: SnapshotHint = {
  isMapped: (g) => g.name.startsWith("MTRX ") || g.id === G.ops || g.name === "O'Brien's team",
  explicitGroups: [G.ops, "O'Brien's team"],
  conventionPrefix: "MTRX ",
};

async function snapshotOf(p: AzureIdentityProvider, h: SnapshotHint = hint): Promise<DirectorySnapshot> {
  const r = await p.snapshot(h);
  if (!r.ok) throw new Error(r.error.message);
  return r.value;
}

function uidsOf(snap: DirectorySnapshot, groupId: string, owners = false): string[] {
  const g = snap.groups.get(groupId);
  if (!g) throw new Error(`no group ${groupId}`);
  return (owners ? (g.owners ?? []) : g.members).map((m) => `${snap.users.get(m.id)?.attributes["uid"]}${snap.users.get(m.id)?.enabled === false ? " (disabled)" : ""}`).sort();
}

describe("the Azure provider against the Graph stand-in", () => {
  it("discovers by prefix, id and escaped name; reads transitive users and owners; ignores devices and service principals; skips guests", async () => {
    const p = provider();
    const snap = await snapshotOf(p);
    expect([...snap.groups.keys()].sort()).toEqual([G.eng, G.ops, G.quote].sort());
    expect(snap.groups.get(G.eng)!.name).toBe("MTRX #eng:example.org");
    expect(uidsOf(snap, G.eng)).toEqual(["alice", "bob", "carol (disabled)", "dave"]);
    expect(uidsOf(snap, G.eng, true)).toEqual(["erin"]);
    expect(uidsOf(snap, G.quote)).toEqual(["erin"]);
    expect(snap.notes.join("\n")).toMatch(/1 guest account membership\(s\) skipped/);
    expect([...snap.groups.values()].every((g) => g.complete)).toBe(true);
    // Requests: discovery (id, name, prefix) = 3; members 1 per group; owners 1 per group.
    expect(p.lastStats).toMatchObject({ discoveryRequests: 3, memberRequests: 3, ownerRequests: 3, retries: 0 });
    expect(p.lastStats.requests).toBe(9);
    expect(graph.tokenRequests()).toBe(1);
  });

  it("discovers the direct member groups of a root group (the seed's azure_root_group_id)", async () => {
    const root = guid(9, 1);
    graph.addGroup({ id: root, displayName: "Matrix rooms", members: [G.leads, G.other, U.alice] });
    const p = provider({ rootGroupId: root, readOwners: false });
    const snap = await snapshotOf(p, { isMapped: (g) => g.name === "Eng Leads", explicitGroups: [] });
    expect([...snap.groups.keys()]).toEqual([G.leads]);
    expect(uidsOf(snap, G.leads)).toEqual(["dave"]);
    // One discovery page for the root's member groups, one member page for the one mapped group.
    expect(p.lastStats).toMatchObject({ discoveryRequests: 1, memberRequests: 1 });
  });

  it("maps guests by the documented rule when asked", async () => {
    const snap = await snapshotOf(provider({ guests: "map" }));
    expect(uidsOf(snap, G.eng)).toEqual(["alice", "bob", "carol (disabled)", "dave", "zoe_partner.example"]);
  });

  it("pages with @odata.nextLink: ⌈members/pageSize⌉ requests per group", async () => {
    const p = provider({ pageSize: 2, readOwners: false });
    const snap = await snapshotOf(p);
    expect(uidsOf(snap, G.eng)).toEqual(["alice", "bob", "carol (disabled)", "dave"]);
    // eng: 4 users (+1 guest) in pages of 2 → 3; ops: 2 → 1; quote: 1 → 1.
    expect(p.lastStats.memberRequests).toBe(5);
  });

  it("honours Retry-After on 429 and backs off exponentially on 503 without it", async () => {
    graph.throttle({ count: 2, status: 429, retryAfterSeconds: 7, endpoint: "transitiveMembers" });
    const p = provider();
    const snap = await snapshotOf(p);
    expect(waits).toEqual([7_000, 7_000]);
    expect([...snap.groups.values()].every((g) => g.complete)).toBe(true);

    graph.throttle({ count: 2, status: 503, retryAfterSeconds: null, endpoint: "transitiveMembers" });
    const q = provider();
    await snapshotOf(q);
    expect(waits).toEqual([1_000, 2_000]);
  });

  it("a group whose pages cannot all be read is incomplete, with the reason; the others are not", async () => {
    graph.failPage({ groupId: G.eng, page: 2, status: 500 });
    const snap = await snapshotOf(provider({ pageSize: 2 }));
    const eng = snap.groups.get(G.eng)!;
    expect(eng.complete).toBe(false);
    expect(eng.incompleteReason).toMatch(/HTTP 500/);
    expect(snap.notes.join("\n")).toMatch(/group MTRX #eng:example.org: .*no removals/);
    expect(snap.groups.get(G.ops)!.complete).toBe(true);

    graph.throttle({ count: 10, status: 429, retryAfterSeconds: 1, endpoint: "transitiveMembers" });
    const budget = await snapshotOf(provider({ maxRetries: 2 }));
    expect(budget.groups.get(G.eng)!.incompleteReason).toMatch(/still throttled \(429\) after 2 retries/);
  });

  it("reports every Graph GET to /metrics by operation and outcome: the counts equal the requests made", async () => {
    const metrics = new Metrics({ processMetrics: false });
    graph.throttle({ count: 2, status: 429, retryAfterSeconds: 1, endpoint: "transitiveMembers" });
    graph.failPage({ groupId: G.eng, page: 2, status: 500 });
    const p = new AzureIdentityProvider({
      settings: settings({ pageSize: 2 }),
      userAttributes: ["uid"],
      log: silentLogger,
      sleep: () => Promise.resolve(),
      onRequest: (r) => metrics.recordDirectoryRequest(r),
    });
    await snapshotOf(p);
    const lines = (await metrics.registry.metrics()).split("\n").filter((l) => l.startsWith("mgs_directory_requests_total{"));
    const value = (labels: string): number => Number(lines.find((l) => l.includes(`{${labels}}`))?.split(" ").pop() ?? 0);
    expect(lines.reduce((sum, l) => sum + Number(l.split(" ").pop()), 0)).toBe(p.lastStats.requests);
    expect(value('provider="azure",operation="members",outcome="throttled"')).toBe(2);
    expect(value('provider="azure",operation="members",outcome="error"')).toBe(1);
    expect(value('provider="azure",operation="discovery",outcome="ok"')).toBe(p.lastStats.discoveryRequests);
  });

  it("refuses a nextLink to another host, malformed JSON and unknown member types (fail closed)", async () => {
    graph.corruptNextLink({ groupId: G.eng, to: "other-host" });
    const s1 = await snapshotOf(provider({ pageSize: 2 }));
    expect(s1.groups.get(G.eng)!.incompleteReason).toMatch(/not on the Graph host 127\.0\.0\.1:\d+; not followed/);

    graph.malformedJson({ endpoint: "transitiveMembers", count: 1 });
    const s2 = await snapshotOf(provider());
    expect([...s2.groups.values()].filter((g) => !g.complete)).toHaveLength(1);

    graph.unknownType({ groupId: G.ops, odataType: "#microsoft.graph.somethingNew" });
    const s3 = await snapshotOf(provider());
    // The cast endpoint returns users only, so an unknown type there cannot be reached... but
    // the owners list is uncast: it must be ignored there, and the group stays complete.
    expect(s3.groups.get(G.ops)!.complete).toBe(true);
  });

  it("without User.Read.All the members come back bare: the groups are incomplete, never empty", async () => {
    graph.setAppRoles(CLIENT, ["GroupMember.Read.All", "Group.Read.All"]);
    const snap = await snapshotOf(provider());
    const eng = snap.groups.get(G.eng)!;
    expect(eng.complete).toBe(false);
    expect(eng.incompleteReason).toMatch(/User\.Read\.All/);
  });

  it("a refused credential or a missing permission fails the whole read", async () => {
    const wrong = await provider({ clientSecret: "not-it" }).snapshot(hint);
    expect(wrong.ok).toBe(false);
    if (!wrong.ok) expect(wrong.error.message).toMatch(/sign-in refused: invalid client secret or certificate \(invalid_client\)/);

    graph.setAppRoles(CLIENT, ["User.Read.All"]);
    const denied = await provider().snapshot(hint);
    expect(denied.ok).toBe(false);
    if (!denied.ok) expect(denied.error.message).toMatch(/GroupMember\.Read\.All/);
  });

  it("signs in with a certificate", async () => {
    const cert = makeClientCertificate(dir);
    const certClient = guid(2, 9);
    graph.addApp({ clientId: certClient, certificatePem: cert.certPem, roles: [...ALL_ROLES] });
    const p = provider({ clientId: certClient, certificateFile: cert.pemFile });
    const snap = await snapshotOf(p);
    expect(uidsOf(snap, G.ops)).toEqual(["bob", "dave"]);
  });
});

describe("matrix-group-sync with Azure AD", () => {
  it("sync --dry-run --json plans from the Graph stand-in", async () => {
    const hs = await FakeHomeserver.start({ serverName: "example.org" });
    try {
      const token = hs.registerUser("@mgs-bot:example.org");
      hs.createRoom({ creator: "@mgs-bot:example.org", alias: "#eng:example.org", members: { "@alice:example.org": "join", "@mallory:example.org": "join" } });
      hs.createRoom({ creator: "@mgs-bot:example.org", alias: "#ops:example.org" });
      await writeFile(join(dir, "secret"), `${SECRET}\n`);
      await writeFile(
        join(dir, "config.yaml"),
        `homeserver: { url: ${hs.url}, accessToken: ${token} }
dataDir: ./data
idp:
  kind: azure
  azure:
    tenantId: ${graph.tenantId}
    clientId: ${CLIENT}
    clientSecretFile: secret
    authorityHost: ${graph.authorityHost}
    graphBaseUrl: ${graph.graphBaseUrl}
mapping:
  rooms:
    - room: "#ops:example.org"
      groups: [ { group: Ops, role: moderator } ]
  convention: { enabled: true }
sync: { maxRemovals: {} }
log: { level: error }
`,
      );
      const out: string[] = [];
      const err: string[] = [];
      const io: CliIo = { out: (t) => out.push(t), err: (t) => err.push(t), env: {}, cwd: dir, interactive: false };
      const code = await runCli(["sync", "--dry-run", "--json", "--config", join(dir, "config.yaml")], io);
      expect(err.join("\n")).toBe("");
      expect(code, out.join("\n")).toBe(0);
      const report = JSON.parse(out.join("\n")) as { rooms: { room: string; actions: unknown[] }[] };
      const byRoom = new Map(report.rooms.map((r) => [r.room, r.actions]));
      expect(byRoom.get("#eng:example.org")).toEqual([
        { kind: "kick", user: "@mallory:example.org", reason: expect.any(String) },
        { kind: "set-power-levels", user: "@erin:example.org", from: 0, to: 50 },
        { kind: "invite", user: "@bob:example.org" },
        { kind: "invite", user: "@dave:example.org" },
        { kind: "invite", user: "@erin:example.org" },
      ]);
      expect(byRoom.get("#ops:example.org")).toEqual([
        { kind: "set-power-levels", user: "@bob:example.org", from: 0, to: 50 },
        { kind: "set-power-levels", user: "@dave:example.org", from: 0, to: 50 },
        { kind: "invite", user: "@bob:example.org" },
        { kind: "invite", user: "@dave:example.org" },
      ]);
      expect(hs.appliedChanges()).toEqual([]);
    } finally {
      await hs.close();
    }
  });
});
