/**
 * The LDAP identity provider against a real OpenLDAP slapd (test/ldap/slapd.ts), bound as a
 * read-only account under an AD-like size limit, so unpaged code would fail here the way it
 * fails in production.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LdapIdentityProvider, type LdapSettings } from "../../src/idp/ldap.ts";
import { resolveGroups } from "../../src/idp/resolve.ts";
import type { DirectorySnapshot } from "../../src/idp/types.ts";
import { silentLogger } from "../../src/log.ts";
import { runCli, type CliIo } from "../../src/main.ts";
import { Metrics } from "../../src/service/metrics.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import {
  FIXTURE_DISABLED,
  FIXTURE_EXPECTED_MEMBERS,
  FIXTURE_IVAN_DN,
  FIXTURE_LDIF,
  GROUPS_DN,
  PEOPLE_DN,
  readerSettings,
  slapdAvailable,
  startSlapd,
  type Slapd,
} from "../ldap/slapd.ts";

let slapd: Slapd;

const available = slapdAvailable();
if (!available && !process.env["CI"]) {
  console.warn("LDAP tests: OpenLDAP (slapd, ldap-utils) is not installed: skipping (set CI to make this fail)");
}
const describeSlapd = available || process.env["CI"] ? describe : describe.skip;

function settings(overrides: Partial<LdapSettings> = {}): LdapSettings {
  return readerSettings(slapd, overrides);
}

function provider(overrides: Partial<LdapSettings> = {}): LdapIdentityProvider {
  return new LdapIdentityProvider({ settings: settings(overrides), userAttributes: ["uid", "mail"], log: silentLogger });
}

async function snapshotOf(p: LdapIdentityProvider): Promise<DirectorySnapshot> {
  const r = await p.snapshot();
  if (!r.ok) throw new Error(r.error.message);
  return r.value;
}

/** Recursive members of a group by name, as uids (the DN where a user has no uid). */
function membersByName(snap: DirectorySnapshot, name: string): string[] {
  const group = [...snap.groups.values()].find((g) => g.name === name);
  if (!group) throw new Error(`no group ${name}`);
  const resolved = resolveGroups(snap, [group.id], { maxDepth: 10 }).get(group.id)!;
  return [...resolved.users.keys()].map((dn) => snap.users.get(dn)?.attributes["uid"] ?? dn).sort();
}

describeSlapd("LDAP against a real slapd", () => {
  beforeAll(async () => {
    slapd = await startSlapd({ ldif: [...FIXTURE_LDIF], sizeLimit: 10, tls: true });
  });

  afterAll(async () => {
    await slapd.stop();
  });

  describe("the LDAP provider against slapd", () => {
    it("resolves every fixture group: nesting, cycles, diamonds, uniqueMember #uid, memberUid, odd case, non-ASCII", async () => {
      const p = provider();
      const snap = await snapshotOf(p);
      for (const [name, expected] of Object.entries(FIXTURE_EXPECTED_MEMBERS)) {
        const want = expected
          .filter((u) => !FIXTURE_DISABLED.includes(u))
          .map((u) => (u === FIXTURE_IVAN_DN ? "cn=ivan petrov,ou=people,dc=example,dc=org" : u))
          .sort();
        expect(membersByName(snap, name), name).toEqual(want);
      }
      // Every group is complete: paging read everything despite the server's size limit of 10.
      expect([...snap.groups.values()].every((g) => g.complete)).toBe(true);
      // Searches grow with pages, never with users: users, disabled users, groups.
      expect(p.lastStats.searches).toBe(3);
      expect(p.lastStats.pages).toBeGreaterThan(10);
    });

    it("reports members that are neither users nor groups, and duplicates, without failing", async () => {
      const snap = await snapshotOf(provider());
      const notes = snap.notes.join("\n");
      expect(notes).toMatch(/group dangling: \d+ member\(s\) neither a user nor a group/);
      expect(notes).toMatch(/outside the user and group bases/);
      expect(notes).toMatch(/memberUid ghost/);
      expect(notes).toMatch(/group posix-devs: \d+ duplicate member value\(s\) ignored/);
    });

    it("marks disabled accounts (389-DS nsAccountLock preset) as disabled", async () => {
      const snap = await snapshotOf(provider());
      const byUid = new Map([...snap.users.values()].map((u) => [u.attributes["uid"], u]));
      expect(byUid.get("frank")?.enabled).toBe(false);
      expect(byUid.get("heidi")?.enabled).toBe(false);
      expect(byUid.get("grace")?.enabled).toBe(true);
      const none = await snapshotOf(provider({ users: { base: PEOPLE_DN, scope: "sub", memberUidAttribute: "uid", disabledFilter: false } }));
      expect([...none.users.values()].every((u) => u.enabled)).toBe(true);
    });

    it("fails closed when the server cuts a paged search short", async () => {
      const small = await startSlapd({ ldif: [...FIXTURE_LDIF], sizeLimit: 10, pagedTotalLimit: 50 });
      try {
        const p = new LdapIdentityProvider({
          settings: { ...settings(), url: small.url, bindDn: small.readerDn, bindPassword: small.readerPassword },
          userAttributes: ["uid"],
          log: silentLogger,
        });
        const snap = await snapshotOf(p);
        expect([...snap.groups.values()].every((g) => !g.complete)).toBe(true);
        expect(snap.notes.join("\n")).toMatch(/size limit exceeded/);
      } finally {
        await small.stop();
      }
    });

    it("reports every bind and page to /metrics: counts equal the requests made, limits and failures by outcome", async () => {
      const metrics = new Metrics({ processMetrics: false });
      const observed = (overrides: Partial<LdapSettings>): LdapIdentityProvider =>
        new LdapIdentityProvider({
          settings: settings(overrides),
          userAttributes: ["uid"],
          log: silentLogger,
          onRequest: (r) => metrics.recordDirectoryRequest(r),
        });
      const p = observed({});
      await snapshotOf(p);
      const pages = p.lastStats.pages;
      expect(pages).toBeGreaterThan(3); // page size 10: the fixture needs several pages
      const wrong = await observed({ bindPassword: "not-the-password" }).snapshot();
      expect(wrong.ok).toBe(false);

      const text = await metrics.registry.metrics();
      const value = (labels: string): number => {
        const line = text.split("\n").find((l) => l.startsWith(`mgs_directory_requests_total{${labels}}`));
        return line === undefined ? 0 : Number(line.split(" ").pop());
      };
      expect(value('provider="ldap",operation="search",outcome="ok"')).toBe(pages);
      expect(value('provider="ldap",operation="bind",outcome="ok"')).toBe(1);
      expect(value('provider="ldap",operation="bind",outcome="error"')).toBe(1);
      expect(text).toMatch(new RegExp(`mgs_directory_request_duration_seconds_count\\{provider="ldap",operation="search"\\} ${pages}\\b`));
    });

    it("names the server and the cause for a wrong password, an unreachable server and a bad certificate", async () => {
      const wrong = await provider({ bindPassword: "not-the-password" }).snapshot();
      expect(wrong.ok).toBe(false);
      if (!wrong.ok) expect(wrong.error.message).toBe(`LDAP server ${slapd.url}: bind as ${slapd.readerDn} failed: invalid credentials`);

      const down = await provider({ url: "ldap://127.0.0.1:9", connectTimeoutMs: 2_000 }).snapshot();
      expect(down.ok).toBe(false);
      if (!down.ok) expect(down.error.message).toMatch(/^LDAP server ldap:\/\/127.0.0.1:9: cannot connect \(ECONNREFUSED\)/);

      const untrusted = await provider({ url: slapd.ldapsUrl! }).snapshot();
      expect(untrusted.ok).toBe(false);
      if (!untrusted.ok) expect(untrusted.error.message).toMatch(/TLS failed/);
    });

    it("reads over ldaps:// and StartTLS with the CA file", async () => {
      const ldaps = await snapshotOf(provider({ url: slapd.ldapsUrl!, caFile: slapd.caFile! }));
      expect(membersByName(ldaps, "db-team")).toEqual(["carol", "dave"]);
      const startTls = await snapshotOf(provider({ startTls: true, caFile: slapd.caFile! }));
      expect(membersByName(startTls, "db-team")).toEqual(["carol", "dave"]);
    });

    it("in-chain mode: one query per mapped group, and a server that ignores the rule fails closed", async () => {
      const p = provider({ activeDirectoryInChain: true });
      const r = await p.snapshot({ isMapped: (g) => g.name === "engineering" || g.name === "db-team", explicitGroups: ["engineering", "db-team"] });
      if (!r.ok) throw new Error(r.error.message);
      // users, disabled users, groups, then one search per mapped group.
      expect(p.lastStats.searches).toBe(5);
      const byName = new Map([...r.value.groups.values()].map((g) => [g.name, g]));
      // OpenLDAP ignores 1.2.840.113556.1.4.1941 and returns nothing: that must not read as "no members".
      expect(byName.get("db-team")!.complete).toBe(false);
      expect(byName.get("db-team")!.incompleteReason).toMatch(/in-chain expansion .* missed 2 direct member\(s\); is this Active Directory\?/);
      // Groups that are not mapped are read as usual.
      expect(byName.get("backend")!.complete).toBe(true);
    });

    it("escapes values in filters: a hostile value cannot widen a search", async () => {
      const p = provider();
      const alice = await p.findUsers("uid", "alice");
      expect(alice.ok && alice.value.map((u) => u.attributes["uid"])).toEqual(["alice"]);
      for (const hostile of ["*)(uid=*", "*", "alice)(|(uid=*", "\\2a"]) {
        const r = await p.findUsers("uid", hostile);
        expect(r.ok, hostile).toBe(true);
        if (r.ok) expect(r.value, hostile).toEqual([]);
      }
    });
  });

  describe("matrix-group-sync with an LDAP directory", () => {
    let dir: string;
    let hs: FakeHomeserver;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "mgs-ldap-cli-"));
      hs = await FakeHomeserver.start({ serverName: "example.org" });
    });

    afterAll(async () => {
      await hs.close();
      await rm(dir, { recursive: true, force: true });
    });

    it("sync --dry-run --json plans from slapd: explicit mapping by DN and cn, and the naming convention", async () => {
      const token = hs.registerUser("@mgs-bot:example.org");
      hs.createRoom({
        creator: "@mgs-bot:example.org",
        alias: "#engineering:example.org",
        members: { "@alice:example.org": "join", "@mallory:example.org": "join" },
      });
      hs.createRoom({ creator: "@mgs-bot:example.org", alias: "#ops:example.org", members: { "@bob:example.org": "join" } });
      hs.createRoom({ creator: "@mgs-bot:example.org", alias: "#db:example.org" });
      // "xxxgeneral" names no server: the convention uses the bot's.
      hs.createRoom({ creator: "@mgs-bot:example.org", alias: "#general:example.org", members: { "@alice:example.org": "join" } });
      await writeFile(join(dir, "bind.pw"), `${slapd.readerPassword}\n`);
      await writeFile(
        join(dir, "config.yaml"),
        `homeserver: { url: ${hs.url}, accessToken: ${token} }
dataDir: ./data
idp:
  kind: ldap
  ldap:
    url: ${slapd.url}
    bindDn: ${slapd.readerDn}
    bindPasswordFile: bind.pw
    pageSize: 10
    flavour: 389ds
    groups: { base: "${GROUPS_DN}" }
    users: { base: "${PEOPLE_DN}" }
mapping:
  rooms:
    - room: "#engineering:example.org"
      groups: [ { group: engineering }, { group: "CN=DB-Team,OU=Groups,DC=Example,DC=Org", role: moderator } ]
    - room: "#db:example.org"
      groups: [ { group: db-team } ]
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
      const report = JSON.parse(out.join("\n")) as {
        rooms: { room: string; actions: { kind: string; user: string; from?: number; to?: number }[] }[];
      };
      const byRoom = new Map(report.rooms.map((r) => [r.room, r.actions]));
      expect(byRoom.get("#engineering:example.org")).toEqual([
        { kind: "kick", user: "@mallory:example.org", reason: expect.any(String) },
        { kind: "set-power-levels", user: "@carol:example.org", from: 0, to: 50 },
        { kind: "set-power-levels", user: "@dave:example.org", from: 0, to: 50 },
        { kind: "invite", user: "@bob:example.org" },
        { kind: "invite", user: "@carol:example.org" },
        { kind: "invite", user: "@dave:example.org" },
        { kind: "invite", user: "@erin:example.org" },
      ]);
      expect(byRoom.get("#db:example.org")).toEqual([
        { kind: "invite", user: "@carol:example.org" },
        { kind: "invite", user: "@dave:example.org" },
      ]);
      // Convention: xxxopsxxxexample.org (bob carol dave erin; frank disabled) and its owners (alice → moderator).
      expect(byRoom.get("#ops:example.org")).toEqual([
        { kind: "set-power-levels", user: "@alice:example.org", from: 0, to: 50 },
        { kind: "invite", user: "@alice:example.org" },
        { kind: "invite", user: "@carol:example.org" },
        { kind: "invite", user: "@dave:example.org" },
        { kind: "invite", user: "@erin:example.org" },
      ]);
      expect(byRoom.get("#general:example.org")).toEqual([{ kind: "invite", user: "@bob:example.org" }]);
      expect(hs.appliedChanges()).toEqual([]);

      // On a terminal (and without --json) the directory read and the rooms show progress on stderr.
      const shown: string[] = [];
      const terminal: CliIo = { ...io, out: () => undefined, err: (t) => shown.push(t), interactive: true };
      expect(await runCli(["sync", "--dry-run", "--config", join(dir, "config.yaml")], terminal)).toBe(0);
      const directoryLines = shown.filter((l) => l.startsWith("\rreading the directory (ldap): "));
      // One line per LDAP request (bind, pages of 10): counted up from 1.
      expect(directoryLines.length).toBeGreaterThan(2);
      expect(directoryLines.map((l) => Number(/: (\d+) request/.exec(l)?.[1]))).toEqual(directoryLines.map((_, i) => i + 1));
      expect(shown.at(-1)).toMatch(/^\rrooms 4\/4\s*\n$/);

      const listing: string[] = [];
      const idpIo: CliIo = { ...io, out: (t) => listing.push(t) };
      expect(await runCli(["idp", "--json", "--room", "#db:example.org", "--config", join(dir, "config.yaml")], idpIo)).toBe(0);
      const parsed = JSON.parse(listing.join("\n")) as { rooms: { room: string; members: { user: string; role: string; via: string[] }[] }[] };
      expect(parsed.rooms).toEqual([
        {
          room: "#db:example.org",
          members: [
            { user: "@carol:example.org", role: "member", level: 0, via: ["db-team"] },
            { user: "@dave:example.org", role: "member", level: 0, via: ["db-team"] },
          ],
          incompleteGroups: [],
          notes: [],
        },
      ]);
    });

    it("a wrong bind password fails the run and changes nothing", async () => {
      const config = join(dir, "config.yaml");
      await writeFile(join(dir, "bind.pw"), "wrong-password\n");
      const out: string[] = [];
      const io: CliIo = { out: (t) => out.push(t), err: () => undefined, env: {}, cwd: dir, interactive: false };
      const before = hs.appliedChanges().length;
      expect(await runCli(["sync", "--json", "--config", config], io)).toBe(1);
      const report = JSON.parse(out.join("\n")) as { errors: string[]; rooms: unknown[] };
      expect(report.errors).toEqual([
        `directory (ldap): LDAP server ${slapd.url}: bind as ${slapd.readerDn} failed: invalid credentials; no room was changed`,
      ]);
      expect(report.rooms).toEqual([]);
      expect(hs.appliedChanges().length).toBe(before);
    });
  });
});
