/**
 * Every setting from the environment: the variable list is derived from the schema, every
 * variable really reaches its key (or is refused with its name in the error), values are
 * read by type, and docs/ENVIRONMENT.md lists exactly the variables there are.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { allEnvVariables, ENV_SETTINGS, type EnvSetting } from "../../src/config/env.ts";
import { formatConfigError, loadConfig, type ConfigResult, type LoadedConfig } from "../../src/config/load.ts";
import { CONFIG_PATH_ENV, SECRET_FIELDS } from "../../src/config/schema.ts";

const STATIC = `
homeserver: { url: http://127.0.0.1:8008, accessToken: t }
idp: { kind: static, static: { file: directory.yaml } }
`;
const LDAP = `
homeserver: { url: http://127.0.0.1:8008, accessToken: t }
idp:
  kind: ldap
  ldap: { url: "ldap://ldap.example.org", groups: { base: "ou=groups,dc=example,dc=org" }, users: { base: "ou=people,dc=example,dc=org" } }
`;
const AZURE = `
homeserver: { url: http://127.0.0.1:8008, accessToken: t }
idp: { kind: azure, azure: { tenantId: contoso.onmicrosoft.com, clientId: 11111111-1111-1111-1111-111111111111, clientSecret: s } }
`;
const MAS = `${STATIC}tokens: { backend: mas, mas: { url: "https://auth.example.org", clientId: 01J00000000000000000000000, clientSecret: s } }\n`;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-envcfg-"));
  writeFileSync(join(dir, "directory.yaml"), "users: [a]\ngroups: []\n");
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function load(yaml: string, env: NodeJS.ProcessEnv = {}): ConfigResult {
  const path = join(dir, "config.yaml");
  writeFileSync(path, yaml);
  return loadConfig({ path, env, cwd: dir });
}

function loaded(r: ConfigResult): LoadedConfig {
  if (!r.ok) throw new Error(r.errors.map(formatConfigError).join("\n"));
  return r;
}

function at(value: unknown, path: readonly string[]): unknown {
  return path.reduce<unknown>((v, k) => (v !== null && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined), value);
}

function baseFor(s: EnvSetting): string {
  const key = s.path.join(".");
  // bindDn needs a password; a certificate replaces the secret.
  if (key.startsWith("idp.ldap.")) return key === "idp.ldap.bindDn" ? LDAP.replace('url: "ldap', 'bindPassword: p, url: "ldap') : LDAP;
  if (key.startsWith("idp.azure.")) return key === "idp.azure.certificateFile" ? AZURE.replace(", clientSecret: s", "") : AZURE;
  if (key.startsWith("tokens.")) return MAS;
  return STATIC;
}

describe("settings from the environment", () => {
  it("has one variable per setting, named by the rule, all distinct, none clashing with MGS_CONFIG", () => {
    const names = allEnvVariables().map((v) => v.env);
    expect(new Set(names).size).toBe(names.length);
    expect(names).not.toContain(CONFIG_PATH_ENV);
    for (const v of allEnvVariables()) expect(v.env).toMatch(/^MGS_[A-Z0-9]+(_[A-Z0-9]+)*$/);
    const byKey = new Map(ENV_SETTINGS.map((s) => [s.path.join("."), s.env]));
    expect(byKey.get("homeserver.url")).toBe("MGS_HOMESERVER_URL");
    expect(byKey.get("homeserver.requestTimeoutMs")).toBe("MGS_HOMESERVER_REQUEST_TIMEOUT_MS");
    expect(byKey.get("sync.maxRemovals.count")).toBe("MGS_SYNC_MAX_REMOVALS_COUNT");
    expect(byKey.get("idp.kind")).toBe("MGS_IDP_KIND");
    expect(byKey.get("idp.ldap.groups.memberAttributes")).toBe("MGS_IDP_LDAP_GROUPS_MEMBER_ATTRIBUTES");
    expect(byKey.get("serve.http.port")).toBe("MGS_SERVE_HTTP_PORT");
    // Secrets are not plain settings: they have their own pair.
    expect(byKey.has("homeserver.accessToken")).toBe(false);
    expect(SECRET_FIELDS.map((s) => s.fileEnv)).toContain("MGS_IDP_LDAP_BIND_PASSWORD_FILE");
    // Sections of every idp kind are covered.
    expect(byKey.has("idp.static.file") && byKey.has("idp.azure.tenantId") && byKey.has("idp.ldap.users.base")).toBe(true);
  });

  /** Older keys that loading folds into a newer one: where their value ends up. */
  const FOLDED_KEYS: Readonly<Record<string, (c: LoadedConfig["config"]) => unknown>> = {
    "sync.kick": (c) => (c.sync.kickOn === "never" ? false : c.sync.kickOn === "always" ? true : c.sync.kickOn),
  };

  it("every variable reaches its key, or is refused with the variable named", () => {
    const samples: Record<EnvSetting["kind"], string> = { text: "from-env-value", number: "7", boolean: "false", structured: "[from-env]" };
    const unwired: string[] = [];
    for (const setting of ENV_SETTINGS) {
      const text = samples[setting.kind];
      const r = load(baseFor(setting), { [setting.env]: text });
      if (r.ok) {
        const want = setting.kind === "number" ? 7 : setting.kind === "boolean" ? false : setting.kind === "structured" ? ["from-env"] : setting.isPath ? resolve(dir, text) : text;
        // An older key folded into its successor while loading: its value is read there.
        const folded = FOLDED_KEYS[setting.path.join(".")];
        const got = folded === undefined ? at(r.config, setting.path) : folded(r.config);
        if (JSON.stringify(got) !== JSON.stringify(want)) unwired.push(`${setting.env}: config has ${JSON.stringify(got)}`);
        if (!r.sources.some((s) => s.key === setting.path.join(".") && s.source === setting.env)) unwired.push(`${setting.env}: not named as the source`);
      } else if (!r.errors.some((e) => e.message.endsWith(`(from ${setting.env})`))) {
        unwired.push(`${setting.env}: refused without naming it: ${r.errors.map(formatConfigError).join("; ")}`);
      }
    }
    expect(unwired).toEqual([]);
  });

  it("reads numbers, booleans, lists, maps, rooms and literals by type, and paths from the working directory", () => {
    const r = loaded(
      load(LDAP, {
        MGS_HOMESERVER_REQUEST_TIMEOUT_MS: "4500",
        MGS_SERVE_MANAGEMENT_ROOM: "#ops:example.org",
        MGS_SERVE_RUN_AT_START: "no",
        MGS_SYNC_KICK: "FALSE",
        MGS_MANAGED_DOMAINS: "[example.org, example.com]",
        MGS_ROLES: '{"member": 0, "lead": 75, "admin": 100}',
        MGS_MAPPING_ROOMS: '[{room: "#eng:example.org", groups: [{group: eng, role: lead}]}]',
        MGS_IDP_LDAP_USERS_DISABLED_FILTER: "false",
        MGS_IDP_LDAP_GROUPS_FILTER: "(&(objectClass=groupOfNames)(cn=mtrx-*))",
        MGS_IDP_LDAP_CA_FILE: "certs/ca.pem",
        MGS_DATA_DIR: "/var/lib/mgs",
      }),
    );
    const c = r.config;
    expect(c.homeserver.requestTimeoutMs).toBe(4500);
    expect(c.serve?.managementRoom).toBe("#ops:example.org");
    expect(c.serve?.runAtStart).toBe(false);
    expect(c.sync.kickOn).toBe("never"); // MGS_SYNC_KICK=false, the older form
    expect(c.managedDomains).toEqual(["example.org", "example.com"]);
    expect(c.roles).toEqual({ member: 0, lead: 75, admin: 100 });
    expect(c.mapping.rooms).toEqual([{ room: "#eng:example.org", groups: [{ group: "eng", role: "lead" }] }]);
    if (c.idp.kind !== "ldap") throw new Error("not ldap");
    expect(c.idp.ldap.users.disabledFilter).toBe(false);
    expect(c.idp.ldap.groups.filter).toBe("(&(objectClass=groupOfNames)(cn=mtrx-*))");
    expect(c.idp.ldap.caFile).toBe(join(dir, "certs/ca.pem"));
    expect(c.dataDir).toBe("/var/lib/mgs");
    const sources = new Map(r.sources.map((s) => [s.key, s.source]));
    expect(sources.get("homeserver.requestTimeoutMs")).toBe("MGS_HOMESERVER_REQUEST_TIMEOUT_MS");
    expect(sources.get("homeserver.url")).toBe("file");
    expect(sources.get("homeserver.accessToken")).toBe("file");
    expect(sources.get("homeserver.concurrency")).toBe("default");
  });

  it("names the variable and the key for a bad value, and for a section the file's idp kind does not have", () => {
    const r = load(STATIC, {
      MGS_SYNC_MAX_REMOVALS_COUNT: "ten",
      MGS_SERVE_RUN_AT_START: "maybe",
      MGS_ROLES: "{member: [",
      MGS_LOG_LEVEL: "loud",
      MGS_IDP_LDAP_URL: "ldap://x",
    });
    if (r.ok) throw new Error("expected errors");
    const text = r.errors.map(formatConfigError).join("\n");
    expect(text).toContain('/sync/maxRemovals/count: "ten" is not a number (from MGS_SYNC_MAX_REMOVALS_COUNT)');
    expect(text).toContain('/serve/runAtStart: "maybe" is not a boolean (true or false) (from MGS_SERVE_RUN_AT_START)');
    expect(text).toMatch(/\/roles: not valid YAML or JSON: .* \(from MGS_ROLES\)/);
    expect(text).toMatch(/\/log\/level: .* \(from MGS_LOG_LEVEL\)/);
    expect(text).toMatch(/\/idp\/ldap: unknown key.* \(from MGS_IDP_LDAP_URL\)/);
  });

  it("a secret variable creates its section when the config uses it, and is reported as unused when not", () => {
    writeFileSync(join(dir, "mas.secret"), "SECRET-MAS\n");
    const tokens = loaded(load(STATIC, { MGS_TOKENS_BACKEND: "synapse", MGS_TOKENS_SYNAPSE_ACCESS_TOKEN: "syt_admin" }));
    expect(tokens.config.tokens?.synapse?.accessToken).toBe("syt_admin");
    expect(tokens.unused).toEqual([]);

    const mas = loaded(
      load(STATIC, {
        MGS_TOKENS_BACKEND: "mas",
        MGS_TOKENS_MAS_URL: "https://auth.example.org",
        MGS_TOKENS_MAS_CLIENT_ID: "01J00000000000000000000000",
        MGS_TOKENS_MAS_CLIENT_SECRET_FILE: "mas.secret",
      }),
    );
    expect(mas.config.tokens?.mas?.clientSecret).toBe("SECRET-MAS");
    expect(new Map(mas.sources.map((x) => [x.key, x.source])).get("tokens.mas.clientSecret")).toBe("MGS_TOKENS_MAS_CLIENT_SECRET_FILE");

    // One set of variables for every deployment: the LDAP password with an Azure directory is unused, not an error.
    const azure = loaded(load(AZURE, { MGS_IDP_LDAP_BIND_PASSWORD: "SECRET-LDAP", MGS_TOKENS_MAS_CLIENT_SECRET: "SECRET-MAS" }));
    expect(azure.unused).toEqual([
      { env: "MGS_IDP_LDAP_BIND_PASSWORD", key: "idp.ldap.bindPassword" },
      { env: "MGS_TOKENS_MAS_CLIENT_SECRET", key: "tokens.mas.clientSecret" },
    ]);
    expect(JSON.stringify(azure.config)).not.toContain("SECRET-LDAP");
  });

  it("an empty variable counts as unset", () => {
    const r = loaded(load(STATIC, { MGS_HOMESERVER_URL: "", MGS_SYNC_MAX_REMOVALS_COUNT: "" }));
    expect(r.config.homeserver.url).toBe("http://127.0.0.1:8008");
    expect(r.overrides).toEqual([]);
  });

  it("docs/ENVIRONMENT.md lists exactly the variables there are, with their keys", () => {
    const doc = readFileSync(new URL("../../docs/ENVIRONMENT.md", import.meta.url), "utf8");
    const rows = [...doc.matchAll(/^\| `(MGS_[A-Z0-9_]+)` \| `([^`]+)` \|/gm)].map((m) => `${m[1]} ${m[2]}`);
    expect(rows.sort()).toEqual(allEnvVariables().map((v) => `${v.env} ${v.key}`).sort());
  });
});
