/**
 * Registration tokens through the CLI (`matrix-group-sync token …`) against the test
 * homeserver's Synapse admin API, and against the MAS stand-in.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, type CliIo } from "../../src/main.ts";
import { systemClock } from "../../src/clock.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import { createMasTokenBackend } from "../../src/tokens/mas.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { FakeMas } from "../fakes/mas.ts";

const ADMIN = "@admin:example.org";
let dir: string;
let hs: FakeHomeserver;
let adminToken: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-tokens-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  adminToken = hs.registerUser(ADMIN, undefined, { admin: true });
  await writeFile(join(dir, "directory.yaml"), "users: []\ngroups: []\n");
});

afterAll(async () => {
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

async function synapseConfig(token = adminToken): Promise<string> {
  const path = join(dir, "synapse.yaml");
  await writeFile(
    path,
    `homeserver: { url: ${hs.url}, accessToken: ${token} }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
tokens:
  backend: synapse
  defaults: { uses: 1, expiry: 7d }
  inviteTemplate: "Join us: https://example.org/#/register?token={token} ({uses}, until {expiry})"
log: { level: error }
`,
  );
  return path;
}

async function token(args: string[], config: string): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: (t) => err.push(t), env: {}, cwd: dir, interactive: false };
  const code = await runCli(["token", ...args, "--config", config], io);
  return { code, out: out.join("\n"), err: err.join("\n") };
}

describe("matrix-group-sync token (Synapse admin API)", () => {
  it("creates, lists with pending uses, shows, updates and deletes; every action is audited", async () => {
    const config = await synapseConfig();
    const created = await token(["create", "3", "7d"], config);
    expect(created.code, created.err).toBe(0);
    const match = /New registration token: (\S+) — 3 use\(s\), expires (\d{4}-\d\d-\d\d \d\d:\d\d UTC) \(in (6|7) days\)/.exec(created.out);
    expect(match, created.out).not.toBeNull();
    const value = match![1]!;
    expect(created.out).toContain(`Join us: https://example.org/#/register?token=${value} (3 use(s), until`);
    expect(hs.registrationTokens().map((t) => t.token)).toContain(value);

    hs.useRegistrationToken(value, { complete: true });
    hs.useRegistrationToken(value, { complete: false });
    const listed = await token(["list"], config);
    expect(listed.out).toMatch(new RegExp(`${value}\\s+\\|\\s+valid\\s+\\|\\s+1 of 3 used, 1 pending`));

    expect((await token(["update", value, "unlimited", "never"], config)).out).toMatch(/1 used \(unlimited\), 1 pending\s+\|\s+never/);
    const shown = await token(["show", value], config);
    expect(shown.out).toContain(value);
    // mas-token-bot's habit: `token list TOKEN` shows that token.
    expect((await token(["list", value], config)).out).toBe(shown.out);
    expect((await token(["delete", value], config)).out).toContain(`${value}: deleted`);
    expect((await token(["show", value], config)).err).toBe(`There is no registration token ${value}.`);

    const store = await openStore({ dataDir: join(dir, "data") });
    try {
      const audit = await store.listTokenAudit(10);
      expect(audit.map((a) => a.action)).toEqual(["show", "delete", "show", "show", "update", "list", "create"]);
      expect(audit.every((a) => a.actor === "cli" && a.place === "cli")).toBe(true);
      // The token string itself never lands in the audit, only a masked reference.
      expect(JSON.stringify(audit)).not.toContain(value);
    } finally {
      await store.close();
    }
  });

  it("answers bad input before any request is sent", async () => {
    const config = await synapseConfig();
    hs.resetCounts();
    const cases: [string[], RegExp][] = [
      [["create", "-1"], /uses: "-1" is not a number of uses/],
      [["create", "many"], /uses: "many" is not a number of uses/],
      [["create", "1", "2001-01-01"], /expiry: the expiry 2001-01-01T00:00:00.000Z is in the past/],
      [["create", "1", "soon"], /expiry: /],
      [["show", "not valid!"], /token: a token may contain only/],
      [["show", "x".repeat(65)], /token: a token has 1 to 64 characters \(got 65\)/],
      [["delete", "a b"], /a token may contain only/],
    ];
    for (const [args, expected] of cases) {
      const r = await token(args, config);
      expect(`${r.out}\n${r.err}`, args.join(" ")).toMatch(expected);
      // 2 for a value of the wrong form (the parser's or the command's check), 4 for a well-formed one refused
      expect(r.code, args.join(" ")).toBe(args.includes("2001-01-01") ? 4 : 2);
    }
    expect(hs.requestCounts().admin_registration_tokens).toBe(0);
    const usage = await token(["update"], config);
    expect(usage.code).toBe(2);
    expect(usage.err).toMatch(/Usage: matrix-group-sync token update <token> \[uses\] \[expiry\]/);
  });

  it("delete-all asks for --yes", async () => {
    const config = await synapseConfig();
    await token(["create"], config);
    await token(["create"], config);
    const ask = await token(["delete-all"], config);
    expect(ask.out).toMatch(/This would delete \d+ valid token\(s\)\. Add --yes to do it\./);
    expect(ask.code).toBe(0);
    expect((await token(["delete-all", "--yes"], config)).out).toMatch(/Deleted \d+ token\(s\)\./);
    const after = await token(["list", "valid"], config);
    expect(after.out).toBe("No valid registration tokens.");
    // a listing after a failed command succeeds: the exit code is this command's own
    expect((await token(["show", "not valid!"], config)).code).toBe(2);
    expect((await token(["list", "valid"], config)).code).toBe(0);
  });

  it("says what to do when Synapse delegates auth to MAS, or the token is not an admin's", async () => {
    const config = await synapseConfig();
    hs.delegateAuthToMas(true);
    try {
      const r = await token(["list"], config);
      expect(r.out).toMatch(/not available \(Synapse may delegate authentication to MAS\): set tokens.backend: mas/);
      expect(r.code).toBe(1);
    } finally {
      hs.delegateAuthToMas(false);
    }
    const plain = hs.registerUser("@plain:example.org");
    const refused = await token(["list"], await synapseConfig(plain));
    expect(refused.out).toMatch(/the access token must belong to a Synapse server admin/);
  });
});

describe("matrix-group-sync token (Matrix Authentication Service)", () => {
  const CLIENT = "01JAAAAAAAAAAAAAAAAAAAAAAA";
  const SECRET = "se+cr/et=with:odd chars";
  let mas: FakeMas;
  let config: string;

  beforeAll(async () => {
    mas = await FakeMas.start();
    mas.addClient({ clientId: CLIENT, clientSecret: SECRET, admin: true });
    mas.addClient({ clientId: "01JBBBBBBBBBBBBBBBBBBBBBBB", clientSecret: SECRET, admin: false });
    await writeFile(join(dir, "mas-secret"), `${SECRET}\n`);
    config = join(dir, "mas.yaml");
    await writeFile(config, masConfig(CLIENT));
  });

  afterAll(async () => {
    await mas.close();
  });

  function masConfig(clientId: string): string {
    return `homeserver: { url: ${hs.url}, accessToken: ${adminToken} }
dataDir: ./data-mas
idp: { kind: static, static: { file: directory.yaml } }
tokens:
  backend: mas
  mas: { url: ${mas.url}, clientId: ${clientId}, clientSecretFile: mas-secret }
log: { level: error }
`;
  }

  it("creates, finds by string and by ULID, revokes and unrevokes; lists across pages", async () => {
    const created = await token(["create", "2", "30d"], config);
    expect(created.code, created.err).toBe(0);
    const value = /New registration token: (\S+) — 2 use\(s\)/.exec(created.out)?.[1];
    expect(value, created.out).toBeDefined();
    const record = mas.tokens().find((t) => t.token === value)!;
    expect(record.usageLimit).toBe(2);

    expect((await token(["show", value!], config)).out).toContain(record.id);
    expect((await token(["show", record.id.toLowerCase()], config)).out).toContain(value!);

    // More tokens than one page of MAS's list (100), made straight through the admin API: one
    // CLI run per token would prove nothing more than the create above.
    const admin = createMasTokenBackend({ url: mas.url, clientId: CLIENT, clientSecret: SECRET, timeoutMs: 10_000, clock: systemClock });
    for (let i = 0; i < 120; i++) expect((await admin.create({ usesAllowed: 1, expiresAt: null })).ok).toBe(true);
    const listsBefore = mas.requestCounts().list;
    const all = await token(["list", "all"], config);
    expect(all.out).toMatch(/^121 registration token\(s\):/);
    expect(all.out).toContain(value!);
    expect(mas.requestCounts().list - listsBefore).toBeGreaterThanOrEqual(2);

    expect((await token(["delete", value!], config)).out).toContain(`${value!}: revoked`);
    expect((await token(["show", value!], config)).out).toMatch(/revoked 20/);
    expect((await token(["unrevoke", value!], config)).out).toMatch(/Unrevoked:[\s\S]*valid/);
    expect((await token(["unrevoke", value!], config)).out).toMatch(/is not revoked/);
  });

  it("fetches a new access token once when MAS says the old one expired", async () => {
    await token(["list"], config);
    const before = mas.tokenRequests();
    mas.expireAccessTokens();
    const r = await token(["list"], config);
    expect(r.code, r.out).toBe(0);
    expect(mas.tokenRequests()).toBe(before + 1);
  });

  it("explains refused client credentials", async () => {
    await writeFile(join(dir, "bad.yaml"), masConfig("01JBBBBBBBBBBBBBBBBBBBBBBB"));
    const notAdmin = await token(["list"], join(dir, "bad.yaml"));
    expect(notAdmin.out).toMatch(/MAS refused the client credentials: .*policy.data.admin_clients/);
    await writeFile(join(dir, "unknown.yaml"), masConfig("01JCCCCCCCCCCCCCCCCCCCCCCC"));
    const unknown = await token(["list"], join(dir, "unknown.yaml"));
    expect(unknown.out).toBe("MAS refused the client credentials: invalid_client (wrong client id or secret)");
    expect(unknown.code).toBe(1);
  });
});
