/**
 * Every request has a deadline for the whole answer, body included. The stand-ins drip-feed an
 * answer (headers at once, then one byte every 250 ms: several minutes for the whole body), as
 * a slow or hostile server would; an idle timeout never fires on that. The end state: the run
 * ends, with the drip-fed read reported as not having arrived in time, and the rest of the run
 * done as usual. No timing is asserted: the deadlines are short and the waits long, so only
 * the message can tell the two apart.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AzureIdentityProvider } from "../../src/idp/azure.ts";
import { silentLogger } from "../../src/log.ts";
import { runCli, type CliIo } from "../../src/main.ts";
import { createSynapseTokenBackend } from "../../src/tokens/synapse.ts";
import { FakeHomeserver, presetPowerLevels } from "../fakes/homeserver.ts";
import { GraphServer, guid } from "../graph/graph-server.ts";
import { azureSettings } from "../graph/azure-settings.ts";

const BOT = "@bot:example.org";
const DRIP_MS = 250;
/** Well above what a local answer takes on a busy machine; far below how long a drip lasts. */
const DEADLINE_MS = 1500;

interface Report {
  outcome: string;
  rooms: { room: string; error: string | null; actions: { kind: string; user: string; outcome?: string }[] }[];
}

describe("the homeserver", () => {
  let dir: string;
  let hs: FakeHomeserver;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "mgs-http-deadline-"));
    hs = await FakeHomeserver.start({ serverName: "example.org" });
  });

  afterEach(async () => {
    await hs.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("a drip-fed /state ends the room with an error within the deadline; the other room is synced and the run ends", async () => {
    const token = hs.registerUser(BOT, undefined, { admin: true });
    const levels = presetPowerLevels({ [BOT]: 100 });
    hs.createRoom({ creator: BOT, alias: "#a-slow:example.org", members: { [BOT]: "join" }, powerLevels: levels });
    const fast = hs.createRoom({ creator: BOT, alias: "#b-fast:example.org", members: { [BOT]: "join" }, powerLevels: levels });
    await writeFile(join(dir, "directory.yaml"), "users: [alice]\ngroups:\n  - { id: g, members: [alice] }\n");
    const config = join(dir, "config.yaml");
    await writeFile(
      config,
      `homeserver: { url: ${hs.url}, accessToken: ${token}, concurrency: 1, requestTimeoutMs: ${DEADLINE_MS} }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - { room: "#a-slow:example.org", groups: [ { group: g } ] }
    - { room: "#b-fast:example.org", groups: [ { group: g } ] }
log: { level: error }
`,
    );
    // concurrency 1, rooms in name order: the first /state read is #a-slow's.
    hs.dripNext("state", 1, { intervalMs: DRIP_MS });
    const out: string[] = [];
    const io: CliIo = { out: (t) => out.push(t), err: () => undefined, env: {}, cwd: dir, interactive: false };
    const code = await runCli(["sync", "--json", "--config", config], io);
    const report = JSON.parse(out.join("\n")) as Report;
    expect(code).not.toBe(0);
    const slow = report.rooms.find((r) => r.room === "#a-slow:example.org");
    expect(slow?.error).toMatch(
      new RegExp(`: the homeserver at ${hs.url.replace(/[.]/g, "\\.")} did not send its whole answer in time \\(${DEADLINE_MS} ms, homeserver\\.requestTimeoutMs\\)$`),
    );
    expect(slow?.actions).toEqual([]);
    expect(report.rooms.find((r) => r.room === "#b-fast:example.org")?.error).toBeNull();
    expect(hs.members(fast)["@alice:example.org"]).toBe("invite");
  });

  it("a drip-fed Synapse admin answer fails the token command within the deadline", async () => {
    const token = hs.registerUser(BOT, undefined, { admin: true });
    hs.dripNext("admin_registration_tokens", 1, { intervalMs: DRIP_MS });
    const backend = createSynapseTokenBackend({ homeserverUrl: hs.url, accessToken: token, timeoutMs: DEADLINE_MS });
    const r = await backend.list("all");
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toBe(`Synapse admin API: ${hs.url}: the answer did not arrive in full within ${DEADLINE_MS} ms`);
  });
});

describe("Microsoft Graph", () => {
  const CLIENT = guid(1, 0xc1);
  const SECRET = "graph-secret-value";
  const OPS = guid(10, 0x60);
  const DEV = guid(11, 0x60);
  let graph: GraphServer;

  beforeEach(async () => {
    graph = await GraphServer.start();
    graph.addApp({ clientId: CLIENT, secret: SECRET, roles: ["GroupMember.Read.All", "User.Read.All", "Group.Read.All"] });
    graph.addUser({ id: guid(20, 0x70), userPrincipalName: "alice@contoso.example", accountEnabled: true });
    graph.addUser({ id: guid(21, 0x70), userPrincipalName: "bob@contoso.example", accountEnabled: true });
    graph.addGroup({ id: OPS, displayName: "Ops", members: [guid(20, 0x70)] });
    graph.addGroup({ id: DEV, displayName: "Dev", members: [guid(21, 0x70)] });
  });

  afterEach(async () => {
    await graph.close();
  });

  const provider = (): AzureIdentityProvider =>
    new AzureIdentityProvider({
      settings: azureSettings(graph, { clientId: CLIENT, secret: SECRET }, { timeoutMs: DEADLINE_MS }),
      userAttributes: ["uid"],
      log: silentLogger,
    });

  it("idp.azure.timeoutMs is the deadline of a Graph answer: a drip-fed member page makes its group incomplete, the other group is read", async () => {
    graph.dripNext({ count: 1, endpoint: "transitiveMembers", intervalMs: DRIP_MS });
    const r = await provider().snapshot({ isMapped: () => true, explicitGroups: [OPS, DEV] });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const groups = [...r.value.groups.values()];
    const incomplete = groups.filter((g) => !g.complete);
    expect(incomplete).toHaveLength(1);
    expect(incomplete[0]?.incompleteReason).toBe(`${graph.url}: the answer did not arrive in full within ${DEADLINE_MS} ms`);
    expect(groups.filter((g) => g.complete).map((g) => g.members.length)).toEqual([1]);
  });

  it("and of the sign-in: a drip-fed token answer fails the snapshot, saying so", async () => {
    graph.dripNext({ count: 1, endpoint: "token", intervalMs: DRIP_MS });
    const r = await provider().snapshot({ isMapped: () => true, explicitGroups: [OPS] });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.message).toContain(`sign-in failed: ${graph.url}: the answer did not arrive in full within ${DEADLINE_MS} ms`);
  });
});
