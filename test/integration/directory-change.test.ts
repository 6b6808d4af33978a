/**
 * Directory change detection (issue 15, step 2): each directory's change marker, and serve's
 * poll (`serve.pollIntervalMs`) — a change runs a sync at once; an unchanged directory costs the
 * probe and nothing on the homeserver; a probe that fails falls back to a full run (whose
 * fail-closed rules stay). The static file and a real slapd; the homeserver is the test one.
 */
import { mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "ldapts";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.ts";
import { LdapIdentityProvider } from "../../src/idp/ldap.ts";
import { StaticIdentityProvider } from "../../src/idp/static.ts";
import { silentLogger } from "../../src/log.ts";
import type { RunReport } from "../../src/reconcile/report.ts";
import { startServe, type ProbeOutcome, type ServeHandle } from "../../src/service/serve.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { FIXTURE_LDIF, GROUPS_DN, PEOPLE_DN, readerSettings, slapdAvailable, startSlapd, type Slapd } from "../ldap/slapd.ts";
import { waitUntil } from "../helpers/wait.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-directory-change-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function marker(r: Awaited<ReturnType<NonNullable<StaticIdentityProvider["changeMarker"]>>>): string | undefined {
  if (!r.ok) throw new Error(r.error.message);
  return r.value;
}

describe("the static file's change marker", () => {
  it("is the file's hash: the same for the same bytes, another after any edit, an error when the file is gone", async () => {
    const file = join(dir, "static.yaml");
    await writeFile(file, "users: [alice]\ngroups: []\n");
    const p = new StaticIdentityProvider(file);
    const first = marker(await p.changeMarker());
    expect(first).toMatch(/^[0-9a-f]{64}$/);
    expect(marker(await p.changeMarker())).toBe(first);
    await writeFile(file, "users: [alice, bob]\ngroups: []\n");
    expect(marker(await p.changeMarker())).not.toBe(first);
    await unlink(file);
    const gone = await p.changeMarker();
    expect(gone.ok).toBe(false);
    if (!gone.ok) expect(gone.error.message).toContain("cannot read the directory file");
  });
});

// CI installs slapd: there, a missing one fails instead of skipping.
const describeSlapd = slapdAvailable() || process.env["CI"] ? describe : describe.skip;

describeSlapd("an LDAP directory's change marker (real slapd)", () => {
  const servers: Slapd[] = [];
  afterAll(async () => {
    for (const s of servers) await s.stop();
  });

  const providerFor = (slapd: Slapd): LdapIdentityProvider =>
    new LdapIdentityProvider({ settings: readerSettings(slapd, { pageSize: 100 }), userAttributes: ["uid"], log: silentLogger });


  it("OpenLDAP with syncprov: the suffix's contextCSN, which moves with every write", async () => {
    const slapd = await startSlapd({ ldif: [FIXTURE_LDIF[0]!], syncprov: true });
    servers.push(slapd);
    const p = providerFor(slapd);
    const before = marker(await p.changeMarker());
    expect(before).toMatch(/^dc=example,dc=org:contextCSN=\d{14}\.\d{6}Z#/);
    expect(marker(await p.changeMarker())).toBe(before);
    const admin = new Client({ url: slapd.url });
    try {
      await admin.bind(slapd.adminDn, slapd.adminPassword);
      await admin.add(`cn=newcomers,${GROUPS_DN}`, { objectClass: ["groupOfNames", "top"], cn: "newcomers", member: [`uid=alice,${PEOPLE_DN}`] });
    } finally {
      await admin.unbind();
    }
    const after = marker(await p.changeMarker());
    expect(after).toBeDefined();
    expect(after).not.toBe(before);
  });

  it("OpenLDAP without syncprov keeps no marker: undefined, not an error", async () => {
    const slapd = await startSlapd({ ldif: [FIXTURE_LDIF[0]!] });
    servers.push(slapd);
    expect(marker(await providerFor(slapd).changeMarker())).toBeUndefined();
  });

  it("an unreachable server: an error (the caller reads in full)", async () => {
    const slapd = await startSlapd({ ldif: [FIXTURE_LDIF[0]!], syncprov: true });
    const p = providerFor(slapd);
    await slapd.stop();
    const r = await p.changeMarker();
    expect(r.ok).toBe(false);
  });
});

describe("serve.pollIntervalMs with a static directory", () => {
  const OP = "@op:example.org";
  let hs: FakeHomeserver;
  let handle: ServeHandle | undefined;
  const probes: ProbeOutcome[] = [];
  const runs: RunReport[] = [];

  beforeAll(async () => {
    hs = await FakeHomeserver.start({ serverName: "example.org" });
  });
  afterEach(async () => {
    await handle?.stop();
    handle = undefined;
  });
  afterAll(async () => {
    await hs.close();
  });

  async function world(name: string, members: string[]): Promise<{ room: string; file: string; start: () => Promise<ServeHandle> }> {
    const folder = join(dir, name);
    const file = join(folder, "directory.yaml");
    await rm(folder, { recursive: true, force: true });
    await import("node:fs/promises").then((fs) => fs.mkdir(folder));
    await writeFile(file, `users: [${members.join(", ")}]\ngroups:\n  - { id: staff, members: [${members.join(", ")}] }\n`);
    const token = hs.registerUser(`@bot-${name}:example.org`);
    const bot = `@bot-${name}:example.org`;
    const room = hs.createRoom({ creator: bot, alias: `#${name}:example.org`, members: Object.fromEntries(members.map((m) => [`@${m}:example.org`, "join"])) });
    hs.createRoom({ creator: OP, alias: `#mgmt-${name}:example.org`, members: { [bot]: "invite" } });
    const path = join(folder, "config.yaml");
    await writeFile(
      path,
      `homeserver: { url: ${hs.url}, accessToken: ${token} }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping: { rooms: [ { room: "#${name}:example.org", groups: [ { group: staff } ] } ] }
sync: { maxRemovals: { count: 10, share: 1 } }
serve: { managementRoom: "#mgmt-${name}:example.org", schedule: "0 0 1 1 *", pollIntervalMs: 100, http: { enabled: false } }
log: { level: error }
`,
    );
    const r = loadConfig({ path, env: {}, cwd: folder });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    const config = r.config;
    return { room, file, start: () => startServe(config, { onDirectoryProbe: (o) => probes.push(o), onRun: (r) => runs.push(r) }) };
  }

  it("a user removed from the group is kicked within an interval, without a command or the schedule; an unchanged directory costs no homeserver request", async () => {
    const w = await world("poll", ["alice", "bob", "carol"]);
    probes.length = 0;
    runs.length = 0;
    handle = await w.start();
    // Unchanged: several probes, and not one room read.
    await waitUntil("three probes after the baseline", () => probes.filter((p) => p === "unchanged").length >= 4);
    expect(probes).not.toContain("changed");
    expect(hs.requestLog().filter((e) => e.kind === "state" && decodeURIComponent(e.path).includes(w.room))).toEqual([]);

    await writeFile(w.file, "users: [alice, bob, carol]\ngroups:\n  - { id: staff, members: [alice, carol] }\n");
    await waitUntil("bob is kicked", () => hs.members(w.room)["@bob:example.org"] === "leave");
    expect(probes).toContain("changed");
    expect(hs.members(w.room)["@alice:example.org"]).toBe("join");
    expect(hs.members(w.room)["@carol:example.org"]).toBe("join");
    await waitUntil("the run is reported", () => runs.length > 0);
    expect(runs.map((r) => [r.trigger, r.outcome, r.counts.kicks])).toEqual([["directory", "ok", 1]]);
  });

  it("a probe that fails falls back to a full run, which fails closed: nobody is removed", async () => {
    const w = await world("probe-fails", ["alice", "bob"]);
    probes.length = 0;
    runs.length = 0;
    handle = await w.start();
    await waitUntil("the baseline probe", () => probes.includes("unchanged"));
    await unlink(w.file);
    await waitUntil("a failed probe", () => probes.includes("failed"));
    await waitUntil("the full run it asked for", () => runs.length > 0);
    expect(runs[0]).toMatchObject({ trigger: "directory", outcome: "failed" });
    expect(runs[0]!.errors.join("\n")).toContain("cannot read the directory file");
    // The directory stays unreadable: later failed probes ask for no further run.
    const failedBefore = probes.filter((p) => p === "failed").length;
    await waitUntil("two more failed probes", () => probes.filter((p) => p === "failed").length >= failedBefore + 2);
    expect(runs).toHaveLength(1);
    expect(hs.members(w.room)["@alice:example.org"]).toBe("join");
    expect(hs.members(w.room)["@bob:example.org"]).toBe("join");
  });

  it("a change made while serve was down starts a run at its first probe (the last marker seen is kept in the store)", async () => {
    const w = await world("while-down", ["alice", "bob"]);
    probes.length = 0;
    runs.length = 0;
    handle = await w.start();
    await waitUntil("the baseline probe", () => probes.includes("unchanged"));
    await handle.stop();
    handle = undefined;
    await writeFile(w.file, "users: [alice, bob]\ngroups:\n  - { id: staff, members: [alice] }\n");
    probes.length = 0;
    handle = await w.start();
    await waitUntil("bob is kicked", () => hs.members(w.room)["@bob:example.org"] === "leave");
    expect(probes[0]).toBe("changed");
    await waitUntil("the run is reported", () => runs.length > 0);
    expect(runs.map((r) => r.trigger)).toEqual(["directory"]);
  });
});
