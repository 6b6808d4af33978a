/**
 * Secrets never reach the logs, for the directory and registration-token secrets: the real CLI
 * at the most verbose level, with recognisable secrets in the LDAP bind password (a real slapd),
 * the Azure client secret (the Graph stand-in), the Synapse admin token and the MAS client
 * secret, on the success path and with a wrong (also recognisable) secret; every line it writes
 * is searched. `token create` shows the new token string to the operator on stdout; it must not
 * reach the log lines on stderr.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Attribute, Change, Client } from "ldapts";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { FakeMas } from "../fakes/mas.ts";
import { GraphServer, guid } from "../graph/graph-server.ts";
import { postgresUnreachable, TEST_DATABASE_URL } from "../helpers/postgres.ts";
import { runBin } from "../helpers/processes.ts";
import { FIXTURE_LDIF, GROUPS_DN, PEOPLE_DN, slapdAvailable, startSlapd, type Slapd } from "../ldap/slapd.ts";

/** Every secret below starts with this, so a cut-off copy is caught too. */
const MARK = "SECRET-";
const BOT_TOKEN = "SECRET-HS-BOT-TOKEN-0b7e";
const DB_PASSWORD = "SECRET-DB-PASSWORD-6e21";
const LDAP_PASSWORD = "SECRET-LDAP-REAL-a93f";
const LDAP_WRONG = "SECRET-LDAP-WRONG-5d1e";
const AZURE_SECRET = "SECRET-AZURE-REAL-c2d8";
const AZURE_WRONG = "SECRET-AZURE-WRONG-77aa";
const SYNAPSE_ADMIN_TOKEN = "SECRET-SYNAPSE-ADMIN-e41c";
const SYNAPSE_WRONG = "SECRET-SYNAPSE-WRONG-3f60";
const MAS_SECRET = "SECRET-MAS-REAL-19bd";
const MAS_WRONG = "SECRET-MAS-WRONG-8c05";
const MAS_CLIENT = "01JAAAAAAAAAAAAAAAAAAAAAAA";
const AZURE_CLIENT = guid(1, 9);

/** Access tokens the stand-ins hand out: a JWT (Graph) and MAS's `mat_…` format. */
const ISSUED_TOKEN = [/eyJ[\w-]+\.eyJ[\w-]+\./, /mat_[A-Za-z0-9]{30}_/];

interface Run {
  readonly what: string;
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

// The store: a schema of its own in the test PostgreSQL (trust auth, so the recognisable
// password is accepted), shared by parallel runs; else an embedded database per run (slower:
// only one process may open one).
const withPg = (await postgresUnreachable()) === undefined || process.env["CI"] !== undefined;
const SCHEMA = `t_log_secrets_${randomBytes(4).toString("hex")}`;
const databaseUrl = (): string => {
  const url = new URL(TEST_DATABASE_URL);
  url.password = DB_PASSWORD;
  const text = url.toString();
  return `${text}${text.includes("?") ? "&" : "?"}options=${encodeURIComponent(`-c search_path=${SCHEMA}`)}`;
};
const STORE = withPg ? `database: { url: "${databaseUrl()}" }` : "dataDir: ./data";
let runCount = 0;

// Overrides from the parent's environment would change the config under test;
// NODE_EXTRA_CA_CERTS (vitest.config.ts: the Graph stand-in's CA) is passed on.
const childEnv: Record<string, string> = Object.fromEntries(
  Object.entries(process.env).filter((e): e is [string, string] => !e[0].startsWith("MGS_") && e[1] !== undefined),
);

async function cli(cwd: string, args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  const what = `${Object.keys(env).join(" ")} ${args.join(" ")}`.trim();
  const store = withPg ? {} : { MGS_DATA_DIR: join(cwd, `data-${++runCount}`) };
  const r = await runBin(args, { cwd, env: { ...childEnv, ...store, ...env } });
  return { what, code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Every line of every run, stdout and stderr, is free of every secret (and of any cut-off copy). */
function expectNoSecret(runs: readonly Run[], secrets: readonly string[]): void {
  expect(secrets.every((s) => s.startsWith(MARK))).toBe(true);
  for (const run of runs) {
    for (const [stream, text] of [["stdout", run.stdout], ["stderr", run.stderr]] as const) {
      for (const line of text.split("\n")) {
        for (const secret of secrets) expect(line, `${run.what}: ${stream}`).not.toContain(secret);
        expect(line, `${run.what}: ${stream}`).not.toContain(MARK);
        for (const issued of ISSUED_TOKEN) expect(line, `${run.what}: ${stream}`).not.toMatch(issued);
      }
    }
  }
}

/** The JSON log lines a run wrote on stderr (every stderr line is one). */
function logLines(run: Run): { level: string; msg: string; [field: string]: unknown }[] {
  const lines = run.stderr.split("\n").filter((l) => l !== "");
  expect(lines.length, `${run.what}: no log lines`).toBeGreaterThan(0);
  return lines.map((l) => JSON.parse(l) as { level: string; msg: string });
}

/** The run logged `msg` at `level`: it really happened, and logged something that could have leaked. */
function expectLogged(run: Run, level: string, msg: string, field?: RegExp): void {
  const found = logLines(run).filter((l) => l.level === level && l.msg === msg);
  expect(found.length, `${run.what}: no ${level} "${msg}" in\n${run.stderr}`).toBeGreaterThan(0);
  if (field !== undefined) expect(JSON.stringify(found)).toMatch(field);
}

const LOG = "log: { level: trace, format: json }";

let dir: string;
let hs: FakeHomeserver;
let dbRoom: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-secrets-dir-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  hs.registerUser("@mgs-bot:example.org", BOT_TOKEN);
  hs.registerUser("@admin:example.org", SYNAPSE_ADMIN_TOKEN, { admin: true });
  dbRoom = hs.createRoom({ creator: "@mgs-bot:example.org", alias: "#db:example.org", members: { "@mallory:example.org": "join" } });
  hs.createRoom({ creator: "@mgs-bot:example.org", alias: "#ops:example.org" });
  await writeFile(join(dir, "directory.yaml"), "users: []\ngroups: []\n");
  if (withPg) {
    // Create and migrate the schema once, so the parallel runs below only use it.
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      await admin.query(`create schema "${SCHEMA}"`);
    } finally {
      await admin.end();
    }
    await writeFile(join(dir, "migrate.yaml"), `homeserver: { url: ${hs.url}, accessToken: ${BOT_TOKEN} }\n${STORE}\nidp: { kind: static, static: { file: directory.yaml } }\n`);
    const migrate = await cli(dir, ["migrate", "--config", "migrate.yaml"]);
    expect(migrate.code, migrate.stdout + migrate.stderr).toBe(0);
  }
});

afterAll(async () => {
  if (withPg) {
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      await admin.query(`drop schema if exists "${SCHEMA}" cascade`);
    } finally {
      await admin.end();
    }
  }
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

const available = slapdAvailable();
if (!available && !process.env["CI"]) {
  console.warn("LDAP log-secrets test: OpenLDAP (slapd, ldap-utils) is not installed: skipping (set CI to make this fail)");
}
const describeSlapd = available || process.env["CI"] ? describe : describe.skip;

describeSlapd("logs with a real slapd", () => {
  let slapd: Slapd;

  beforeAll(async () => {
    slapd = await startSlapd({ ldif: [...FIXTURE_LDIF] });
    // The harness makes a random reader password: replace it with a recognisable one (as the rootdn).
    const admin = new Client({ url: slapd.url });
    try {
      await admin.bind(slapd.adminDn, slapd.adminPassword);
      await admin.modify(
        slapd.readerDn,
        new Change({ operation: "replace", modification: new Attribute({ type: "userPassword", values: [LDAP_PASSWORD] }) }),
      );
    } finally {
      await admin.unbind();
    }
  });

  afterAll(async () => {
    await slapd.stop();
  });

  it("never contain the bind password, right (from the environment) or wrong (inline, the run fails)", async () => {
    const config = (password: string | undefined): string => `homeserver: { url: ${hs.url}, accessToken: ${BOT_TOKEN} }
${STORE}
idp:
  kind: ldap
  ldap:
    url: ${slapd.url}
    bindDn: ${slapd.readerDn}
${password === undefined ? "" : `    bindPassword: ${password}\n`}    pageSize: 10
    flavour: 389ds
    groups: { base: "${GROUPS_DN}" }
    users: { base: "${PEOPLE_DN}" }
mapping:
  rooms:
    - { room: "#db:example.org", groups: [ { group: db-team } ] }
    - { room: "#missing:example.org", groups: [ { group: db-team } ] }
sync: { maxRemovals: {}, createRooms: false }   # #missing stays missing: the run fails on it
${LOG}
`;
    await writeFile(join(dir, "ldap.yaml"), config(undefined));
    await writeFile(join(dir, "ldap-wrong.yaml"), config(LDAP_WRONG));
    await writeFile(join(dir, "bind.pw"), `${LDAP_PASSWORD}\n`);
    const [sync, idp, check, wrong] = await Promise.all([
      cli(dir, ["sync", "--config", "ldap.yaml"], { MGS_IDP_LDAP_BIND_PASSWORD_FILE: "bind.pw" }),
      cli(dir, ["idp", "--json", "--config", "ldap.yaml"], { MGS_IDP_LDAP_BIND_PASSWORD: LDAP_PASSWORD }),
      cli(dir, ["check-config", "--config", "ldap.yaml"], { MGS_IDP_LDAP_BIND_PASSWORD: LDAP_PASSWORD }),
      cli(dir, ["sync", "--dry-run", "--config", "ldap-wrong.yaml"]),
    ]);

    // The runs really happened: the right password read the directory and synced; the wrong one was refused.
    expect(sync.code, sync.stderr).toBe(1); // #missing:example.org fails, #db is synced
    expect(sync.stdout + sync.stderr).toContain("#missing:example.org");
    expect(hs.members(dbRoom)).toMatchObject({ "@carol:example.org": "invite", "@dave:example.org": "invite" });
    expect(idp.code, idp.stderr).toBe(0);
    expect(idp.stdout).toContain("@carol:example.org");
    expect(check.code, check.stderr).toBe(0);
    for (const run of [sync, idp]) expectLogged(run, "debug", "ldap snapshot");
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toMatch(/bind as cn=reader,dc=example,dc=org failed: invalid credentials/);
    expectLogged(wrong, "warn", "directory read failed", /failed: invalid credentials/);

    expectNoSecret([sync, idp, check, wrong], [LDAP_PASSWORD, LDAP_WRONG, BOT_TOKEN, DB_PASSWORD]);
  });
});

describe("logs with the Graph stand-in", () => {
  let graph: GraphServer;

  beforeAll(async () => {
    graph = await GraphServer.start();
    graph.addApp({ clientId: AZURE_CLIENT, secret: AZURE_SECRET, roles: ["GroupMember.Read.All", "User.Read.All", "Group.Read.All"] });
    graph.addUser({ id: guid(1), userPrincipalName: "bob@contoso.com", accountEnabled: true });
    graph.addUser({ id: guid(2), userPrincipalName: "dave@contoso.com", accountEnabled: true });
    graph.addGroup({ id: guid(1, 1), displayName: "Ops", members: [guid(1), guid(2)] });
  });

  afterAll(async () => {
    await graph.close();
  });

  it("never contain the client secret, right (from a file) or wrong (inline, refused)", async () => {
    // @azure/identity only speaks https: the child trusts the stand-in's CA through this.
    expect(childEnv["NODE_EXTRA_CA_CERTS"]).toBeDefined();
    const config = (secret: string): string => `homeserver: { url: ${hs.url}, accessToken: ${BOT_TOKEN} }
${STORE}
idp:
  kind: azure
  azure:
    tenantId: ${graph.tenantId}
    clientId: ${AZURE_CLIENT}
    ${secret}
    authorityHost: ${graph.authorityHost}
    graphBaseUrl: ${graph.graphBaseUrl}
    maxRetries: 0
mapping:
  rooms:
    - { room: "#ops:example.org", groups: [ { group: Ops } ] }
${LOG}
`;
    await writeFile(join(dir, "azure.secret"), `${AZURE_SECRET}\n`);
    await writeFile(join(dir, "azure.yaml"), config("clientSecretFile: azure.secret"));
    await writeFile(join(dir, "azure-wrong.yaml"), config(`clientSecret: ${AZURE_WRONG}`));
    const [dry, idp, wrong] = await Promise.all([
      cli(dir, ["sync", "--dry-run", "--json", "--config", "azure.yaml"]),
      cli(dir, ["idp", "--config", "azure.yaml"], { MGS_IDP_AZURE_CLIENT_SECRET: AZURE_SECRET }),
      cli(dir, ["sync", "--dry-run", "--config", "azure-wrong.yaml"]),
    ]);

    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain("@dave:example.org");
    expect(idp.code, idp.stderr).toBe(0);
    expect(idp.stdout).toContain("@bob:example.org");
    for (const run of [dry, idp]) expectLogged(run, "debug", "graph snapshot");
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toMatch(/sign-in refused: invalid client secret or certificate \(invalid_client\)/);
    expectLogged(wrong, "warn", "directory read failed", /sign-in refused/);
    // The stand-in refused it (AADSTS7000215: invalid client secret).
    expect(graph.tokenRequestLog().some((r) => r.error === "invalid_client AADSTS7000215")).toBe(true);

    expectNoSecret([dry, idp, wrong], [AZURE_SECRET, AZURE_WRONG, BOT_TOKEN, DB_PASSWORD]);
  });
});

describe("logs of token commands", () => {
  /** A run's stdout line with the new token string (shown to the operator on purpose). */
  const createdToken = (run: Run): string => {
    const value = /New registration token: (\S+)/.exec(run.stdout)?.[1];
    expect(value, `${run.what}: ${run.stdout}\n${run.stderr}`).toBeDefined();
    return value!;
  };

  it("Synapse admin API: never contain the admin token, right or refused, nor a created token string", async () => {
    const config = (token: string): string => `homeserver: { url: ${hs.url}, accessToken: ${BOT_TOKEN} }
${STORE}
idp: { kind: static, static: { file: directory.yaml } }
tokens:
  backend: synapse
  synapse: { accessToken: ${token} }
${LOG}
`;
    await writeFile(join(dir, "synapse.yaml"), config(SYNAPSE_ADMIN_TOKEN));
    await writeFile(join(dir, "synapse-wrong.yaml"), config(SYNAPSE_WRONG));
    const create = await cli(dir, ["token", "create", "2", "7d", "--config", "synapse.yaml"]);
    expect(create.code, create.stderr).toBe(0);
    const value = createdToken(create);
    const [list, show, wrong] = await Promise.all([
      cli(dir, ["token", "list", "--config", "synapse.yaml"]),
      cli(dir, ["token", "show", value, "--config", "synapse.yaml"]),
      cli(dir, ["token", "list", "--config", "synapse-wrong.yaml"]),
    ]);

    expect(hs.registrationTokens().map((t) => t.token)).toContain(value);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toContain(value); // the operator's listing shows it
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toContain(value);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toMatch(/M_UNKNOWN_TOKEN: Unrecognised access token/);
    for (const [run, action] of [[create, "create"], [list, "list"], [show, "show"], [wrong, "list"]] as const) {
      expectLogged(run, "info", "token action", new RegExp(`"action":"${action}"`));
    }

    expectNoSecret([create, list, show, wrong], [SYNAPSE_ADMIN_TOKEN, SYNAPSE_WRONG, BOT_TOKEN, DB_PASSWORD]);
    for (const run of [create, list, show, wrong]) {
      for (const line of run.stderr.split("\n")) expect(line, `${run.what}: stderr`).not.toContain(value);
    }
  });

  it("MAS: never contain the client secret (from the environment), right or refused, nor a created token string", async () => {
    const mas = await FakeMas.start();
    try {
      mas.addClient({ clientId: MAS_CLIENT, clientSecret: MAS_SECRET, admin: true });
      await writeFile(
        join(dir, "mas.yaml"),
        `homeserver: { url: ${hs.url}, accessToken: ${BOT_TOKEN} }
${STORE}
idp: { kind: static, static: { file: directory.yaml } }
tokens:
  backend: mas
  mas: { url: ${mas.url}, clientId: ${MAS_CLIENT} }
${LOG}
`,
      );
      const right = { MGS_TOKENS_MAS_CLIENT_SECRET: MAS_SECRET };
      const create = await cli(dir, ["token", "create", "2", "30d", "--config", "mas.yaml"], right);
      expect(create.code, create.stderr).toBe(0);
      const value = createdToken(create);
      const [list, show, wrong] = await Promise.all([
        cli(dir, ["token", "list", "--config", "mas.yaml"], right),
        cli(dir, ["token", "show", value, "--config", "mas.yaml"], right),
        cli(dir, ["token", "list", "--config", "mas.yaml"], { MGS_TOKENS_MAS_CLIENT_SECRET: MAS_WRONG }),
      ]);

      expect(mas.tokens().map((t) => t.token)).toContain(value);
      expect(list.code, list.stderr).toBe(0);
      expect(list.stdout).toContain(value);
      expect(show.code, show.stderr).toBe(0);
      expect(show.stdout).toContain(value);
      expect(wrong.code).toBe(1);
      expect(wrong.stdout).toMatch(/MAS refused the client credentials: invalid_client/);
      for (const [run, action] of [[create, "create"], [list, "list"], [show, "show"], [wrong, "list"]] as const) {
        expectLogged(run, "info", "token action", new RegExp(`"action":"${action}"`));
      }

      // Client secret basic: the secret also travels base64-encoded in the Authorization header.
      const basic = (secret: string): string => Buffer.from(`${MAS_CLIENT}:${secret}`).toString("base64");
      expectNoSecret([create, list, show, wrong], [MAS_SECRET, MAS_WRONG, BOT_TOKEN, DB_PASSWORD]);
      for (const run of [create, list, show, wrong]) {
        for (const line of `${run.stdout}\n${run.stderr}`.split("\n")) {
          expect(line, run.what).not.toContain(basic(MAS_SECRET));
          expect(line, run.what).not.toContain(basic(MAS_WRONG));
        }
        for (const line of run.stderr.split("\n")) expect(line, `${run.what}: stderr`).not.toContain(value);
      }
    } finally {
      await mas.close();
    }
  });
});
