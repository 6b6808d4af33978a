/**
 * `matrix-group-sync import`: the pure conversions, on fixture configs of each source written
 * from their documented keys (test/fixtures/import/). The converted config must pass our own
 * loader exactly as written; bad input is reported key by key with file and line.
 */
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { IMPORTERS } from "../../src/import/command.ts";
import { formatImportError, formatReport, render, SourceDoc, type Conversion, type ImportError, type Report } from "../../src/import/report.ts";

const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), "../fixtures/import");

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-import-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function source(name: string): SourceDoc {
  const read = SourceDoc.read(join(FIXTURES, name), FIXTURES);
  if (!read.ok) throw new Error(read.errors.map(formatImportError).join("\n"));
  return read.doc;
}

function convert(kind: string, name: string): { src: SourceDoc; conv: Conversion } {
  const src = source(name);
  const importer = IMPORTERS[kind];
  if (importer === undefined) throw new Error(`no importer ${kind}`);
  const result = importer.convert(src, { directoryName: "config.directory.yaml" });
  if (!result.ok) throw new Error(result.errors.map(formatImportError).join("\n"));
  return { src, conv: result.value };
}

function errorsOf(kind: string, name: string): ImportError[] {
  const read = SourceDoc.read(join(FIXTURES, name), FIXTURES);
  if (!read.ok) return read.errors;
  const result = IMPORTERS[kind]!.convert(read.doc, { directoryName: "directory.yaml" });
  if (!result.ok) return result.errors;
  const rendered = render(result.value, read.doc, kind, join(dir, "config.yaml"));
  if (rendered.ok) throw new Error("expected errors");
  return rendered.errors;
}

/** Renders with an output file, writes what would be written, and loads it with our loader. */
function load(kind: string, name: string): { config: Config; conv: Conversion; yaml: string; secrets: Map<string, string> } {
  const { src, conv } = convert(kind, name);
  const out = join(dir, "config.yaml");
  const rendered = render(conv, src, kind, out);
  if (!rendered.ok) throw new Error(rendered.errors.map(formatImportError).join("\n"));
  const secrets = new Map<string, string>();
  for (const f of [...rendered.value.secretFiles, ...rendered.value.extraFiles]) {
    mkdirSync(dirname(f.path), { recursive: true });
    writeFileSync(f.path, f.text);
    secrets.set(f.path.slice(dir.length + 1), f.text.trimEnd());
  }
  writeFileSync(out, rendered.value.yaml);
  const loaded = loadConfig({ path: out, env: {}, cwd: dir });
  if (!loaded.ok) throw new Error(`the converted config does not load:\n${loaded.errors.map(formatConfigError).join("\n")}\n---\n${rendered.value.yaml}`);
  return { config: loaded.config, conv, yaml: rendered.value.yaml, secrets };
}

function keys(report: Report, list: keyof Report): string[] {
  return report[list].map((l) => l.from);
}

describe("import inviterbot", () => {
  it("converts the Azure AD config: secret to a file, the rest to our keys, and it loads", () => {
    const { config, conv, yaml, secrets } = load("inviterbot", "inviterbot-azure.yaml");
    expect(config.idp.kind).toBe("azure");
    if (config.idp.kind !== "azure") return;
    expect(config.idp.azure.tenantId).toBe("contoso.onmicrosoft.com");
    expect(config.idp.azure.clientId).toBe("11111111-2222-3333-4444-555555555555");
    expect(config.idp.azure.clientSecret).toBe("azure-secret-do-not-print");
    expect(config.idp.azure.rootGroupId).toBe("8b1d2c3e-4f50-4a6b-9c7d-0e1f2a3b4c5d");
    expect(config.idp.azure.authorityHost).toBe("https://login.microsoftonline.com");
    expect(config.users.domain).toBe("example.com");
    expect(config.mapping.convention.enabled).toBe(true);
    expect(config.serve?.managementRoom).toBe("!admin:example.com");
    expect(config.rooms.defaults.permissions?.invite).toBe(100);
    expect(config.rooms.defaults.permissions?.events?.["m.room.redaction"]).toBe(100);
    expect(config.rooms.defaults.historyVisibility).toBe("shared");
    expect(config.rooms.defaults.encryption).toBe(true);
    expect(config.sync.kickOn).toBe("manual"); // cautious: True — scheduled runs never kick, !sync does
    // new_localpart: old_localpart, the seed's own form and direction (keys lower-cased, as ids are built)
    expect(config.users.renamedLocalparts).toEqual({ testnew: "testold", "jane.doe": "jdoe" });
    expect(config.users.renamedUsers).toEqual({});
    expect(config.spaces).toEqual([]); // a space is only suggested
    // Secrets never inline, never in the report.
    expect(yaml).not.toContain("azure-secret-do-not-print");
    expect(yaml).toContain("clientSecretFile: config.yaml.secrets/azure-client-secret");
    expect(secrets.get("config.yaml.secrets/azure-client-secret")).toBe("azure-secret-do-not-print");
    expect(yaml).toMatch(/PLACEHOLDER/);
    const text = formatReport(conv.report, "t");
    expect(text).not.toContain("azure-secret-do-not-print");
    expect(keys(conv.report, "mapped")).toEqual(
      expect.arrayContaining(["idp_type", "mxid_homeserver", "azure_ad.azure_tenant_id", "azure_ad.azure_client_id", "azure_ad.azure_client_secret", "azure_ad.azure_root_group_id", "administration_room", "permissions", "history_visibility", "encryption_on_room_creation"]),
    );
    // Both are 1:1 now: no "changes meaning" caveat left for them.
    expect(keys(conv.report, "mapped")).toEqual(expect.arrayContaining(["cautious: true", "renamed_users"]));
    expect(keys(conv.report, "changed")).not.toContain("cautious: true");
    expect(keys(conv.report, "changed")).not.toContain("renamed_users");
    expect(conv.report.mapped.find((l) => l.from.startsWith("cautious"))?.note).toMatch(/manual !sync/);
    expect(conv.report.changed.find((l) => l.to === "spaces")?.note).toContain('underGroups: ["8b1d2c3e-4f50-4a6b-9c7d-0e1f2a3b4c5d"]');
    expect(keys(conv.report, "ignored")).toContain("ldap.*");
    expect(conv.report.placeholders.map((p) => p.to)).toEqual(expect.arrayContaining(["homeserver.url", "homeserver.accessToken(File)"]));
  });

  it("converts the LDAP config: host and port to a URL, the bind password to a file, user_filter kept as a restriction", () => {
    const { config, conv, yaml } = load("inviterbot", "inviterbot-ldap.yaml");
    expect(config.idp.kind).toBe("ldap");
    if (config.idp.kind !== "ldap") return;
    const l = config.idp.ldap;
    expect(l.url).toBe("ldap://ipa.example.com:389");
    expect(l.bindDn).toBe("uid=inviterbot,cn=sysaccounts,cn=etc,dc=example,dc=com");
    expect(l.bindPassword).toBe("ldap-secret-do-not-print");
    expect(l.users.base).toBe("cn=users,cn=accounts,dc=example,dc=com");
    expect(l.groups.base).toBe("cn=groups,cn=accounts,dc=example,dc=com");
    expect(l.users.filter).toBe(
      "(&(|(objectClass=inetOrgPerson)(objectClass=posixAccount))(!(memberof=cn=company_employees,cn=groups,cn=accounts,dc=example,dc=com)))",
    );
    expect(l.flavour).toBe("389ds");
    expect(config.users.attribute).toBe("uid");
    expect(config.sync.kickOn).toBe("always"); // cautious: False
    expect(config.rooms.defaults.encryption).toBe(false);
    expect(config.rooms.defaults.historyVisibility).toBe("joined");
    expect(config.serve).toBeUndefined(); // administration_room: ""
    expect(config.users.renamedUsers).toEqual({});
    expect(yaml).not.toContain("ldap-secret-do-not-print");
    expect(keys(conv.report, "changed")).toContain("ldap.user_filter");
    expect(keys(conv.report, "ignored")).toContain("administration_room");
  });

  it("without --out it refuses a source with secrets, saying to give --out", () => {
    const { src, conv } = convert("inviterbot", "inviterbot-azure.yaml");
    const rendered = render(conv, src, "inviterbot", undefined);
    expect(rendered.ok).toBe(false);
    if (rendered.ok) return;
    expect(rendered.errors[0]?.message).toMatch(/give --out FILE/);
    expect(rendered.errors[0]?.message).not.toContain("azure-secret-do-not-print");
  });

  it("reports unknown keys with the nearest known key, and wrong types, with their lines", () => {
    const errors = errorsOf("inviterbot", "inviterbot-bad.yaml").map(formatImportError);
    expect(errors).toEqual([
      expect.stringMatching(/inviterbot-bad\.yaml:5: ldap\.port: must be a whole number/),
      expect.stringMatching(/inviterbot-bad\.yaml:7: ldap\.bind_pasword: unknown key; did you mean "bind_password"\?/),
      expect.stringMatching(/inviterbot-bad\.yaml:10: permisions: unknown key; did you mean "permissions"\?/),
      expect.stringMatching(/inviterbot-bad\.yaml:12: cautious: must be true or false/),
    ]);
  });

  it("reports values our schema refuses at the source key and line", () => {
    const errors = errorsOf("inviterbot", "inviterbot-bad-values.yaml").map(formatImportError);
    expect(errors).toEqual([
      expect.stringMatching(/:5: azure_ad\.azure_client_id: "not-a-guid" is not a GUID .*idp\.azure\.clientId/),
      expect.stringMatching(/:7: history_visibility: .*rooms\.defaults\.historyVisibility/),
    ]);
  });

  it("reports a file that is not YAML, a missing file, and an empty bind password", () => {
    expect(errorsOf("inviterbot", "not-yaml.yaml").map(formatImportError)[0]).toMatch(/not-yaml\.yaml:\d+: not valid YAML/);
    expect(errorsOf("inviterbot", "no-such-file.yaml").map(formatImportError)[0]).toMatch(/cannot read .*no-such-file\.yaml/);
    const src = SourceDoc.parse('idp_type: ldap\nldap:\n  host: h\n  bind_dn: "cn=x"\n  bind_password: ""\n  base_dn_users: u\n  base_dn_groups: g\n', "inline.yaml");
    if (!src.ok) throw new Error("parse");
    const result = IMPORTERS["inviterbot"]!.convert(src.doc, { directoryName: "d.yaml" });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors.map(formatImportError)).toEqual([expect.stringMatching(/^inline\.yaml:5: ldap\.bind_password: is empty while bind_dn is set/)]);
  });
});

describe("import matrix-registration-bot", () => {
  it("converts config.yml: homeserver, both tokens to files, log level; the directory is a marked placeholder; it loads", () => {
    const { config, conv, yaml, secrets } = load("matrix-registration-bot", "matrix-registration-bot.yml");
    expect(config.homeserver.url).toBe("https://synapse.example.com");
    expect(config.homeserver.accessToken).toBe("bot-token-do-not-print");
    expect(config.tokens?.backend).toBe("synapse");
    expect(config.tokens?.synapse?.accessToken).toBe("admin-token-do-not-print");
    expect(config.log.level).toBe("debug");
    expect(config.idp.kind).toBe("static");
    expect(yaml).not.toMatch(/do-not-print/);
    expect(yaml).toMatch(/PLACEHOLDER/);
    expect(secrets.get("config.yaml.secrets/homeserver-access-token")).toBe("bot-token-do-not-print");
    expect(secrets.get("config.yaml.secrets/synapse-admin-token")).toBe("admin-token-do-not-print");
    expect(secrets.get("config.directory.yaml")).toMatch(/PLACEHOLDER/);
    expect(keys(conv.report, "mapped")).toEqual(expect.arrayContaining(["bot.server", "bot.access_token", "api.token", "api.base_url", "api.endpoint", "logging.level"]));
    expect(keys(conv.report, "ignored")).toEqual(expect.arrayContaining(["bot.username", "bot.prefix"]));
    expect(conv.report.placeholders.map((p) => p.to)).toEqual([expect.stringContaining("kind: static")]);
    expect(formatReport(conv.report, "t")).not.toMatch(/do-not-print/);
  });

  it("a password instead of a token: ignored (never written), the token a placeholder; another admin URL and level change meaning", () => {
    const { config, conv, yaml, secrets } = load("matrix-registration-bot", "matrix-registration-bot-password.yml");
    expect(config.homeserver.url).toBe("https://synapse.example.com");
    expect(config.log.level).toBe("info");
    expect([...secrets.values(), yaml, formatReport(conv.report, "t")].join("\n")).not.toContain("password-do-not-print");
    expect(keys(conv.report, "ignored")).toContain("bot.password");
    expect(keys(conv.report, "changed")).toEqual(expect.arrayContaining(["api.base_url", "logging.level"]));
    expect(conv.report.placeholders.map((p) => p.to)).toContain("homeserver.accessToken(File)");
  });

  it("reports misspelled keys and wrong types with lines", () => {
    expect(errorsOf("matrix-registration-bot", "matrix-registration-bot-bad.yml").map(formatImportError)).toEqual([
      expect.stringMatching(/:3: bot\.acces_token: unknown key; did you mean "access_token"\?/),
      expect.stringMatching(/:6: api\.token: must be a string/),
      expect.stringMatching(/:7: loging: unknown key; did you mean "logging"\?/),
    ]);
  });
});

describe("import mas-token-bot", () => {
  it("converts base-config.yaml to tokens.backend mas, defaults and allow; it loads", () => {
    const { config, conv, yaml, secrets } = load("mas-token-bot", "mas-token-bot.yaml");
    expect(config.tokens?.backend).toBe("mas");
    expect(config.tokens?.mas).toEqual({ url: "https://mas.example.com", clientId: "01J9ZQXKTV5M3G8B4W2Y7RCA6N", clientSecret: "mas-secret-do-not-print" });
    expect(config.tokens?.defaults).toEqual({ uses: 1, expiry: "7d" });
    expect(config.tokens?.allow).toEqual(["@user:example.com", "@admin:example.com", "!roomid:example.com"]);
    expect(yaml).not.toContain("mas-secret-do-not-print");
    expect(secrets.get("config.yaml.secrets/mas-client-secret")).toBe("mas-secret-do-not-print");
    expect(keys(conv.report, "mapped")).toEqual(
      expect.arrayContaining(["admin_api", "token_url", "client_id", "client_secret", "token_scope", "base_command", "default_uses_allowed", "default_expiry_time"]),
    );
    expect(keys(conv.report, "changed")).toEqual(expect.arrayContaining(["whitelist", "room_whitelist"]));
    expect(conv.report.placeholders.map((p) => p.to)).toEqual(expect.arrayContaining(["homeserver.url", "homeserver.accessToken(File)", expect.stringContaining("kind: static")]));
  });

  it("other values change meaning: a scope, a command word, unlimited uses, no expiry, odd seconds", () => {
    const src = SourceDoc.parse(
      'admin_api: "https://auth.example.org/api/admin/"\ntoken_url: "https://other.example.org/token"\nclient_id: c\nclient_secret: s\ntoken_scope: "urn:mas:admin urn:x"\nbase_command: invite\ndefault_uses_allowed: -1\ndefault_expiry_time: 90\n',
      "inline.yaml",
    );
    if (!src.ok) throw new Error("parse");
    const result = IMPORTERS["mas-token-bot"]!.convert(src.doc, { directoryName: "d.yaml" });
    if (!result.ok) throw new Error(result.errors.map(formatImportError).join("\n"));
    const c = result.value.config as { tokens: { mas: { url: string }; defaults: { uses: unknown; expiry: string }; command: string } };
    expect(c.tokens.mas.url).toBe("https://auth.example.org");
    expect(c.tokens.defaults).toEqual({ uses: null, expiry: "90s" });
    // base_command is our tokens.command: the same word in the rooms.
    expect(c.tokens.command).toBe("invite");
    expect(keys(result.value.report, "mapped")).toContain("base_command");
    expect(keys(result.value.report, "changed")).toEqual(expect.arrayContaining(["token_url", "token_scope", "default_uses_allowed"]));
    expect(keys(result.value.report, "changed")).not.toContain("base_command");
  });

  it("reports misspelled keys and wrong types with lines", () => {
    expect(errorsOf("mas-token-bot", "mas-token-bot-bad.yaml").map(formatImportError)).toEqual([
      expect.stringMatching(/:5: default_uses_alowed: unknown key; did you mean "default_uses_allowed"\?/),
      expect.stringMatching(/:6: default_expiry_time: must be a whole number/),
      expect.stringMatching(/:7: whitelist: must be a list/),
    ]);
  });

  it("an allow entry our schema refuses is reported at its source line", () => {
    const src = SourceDoc.parse('admin_api: "https://m.example.org/api/admin"\nclient_id: c\nclient_secret: s\nwhitelist:\n  - "@ok:example.org"\nroom_whitelist:\n  - ""\n', "inline.yaml");
    if (!src.ok) throw new Error("parse");
    const result = IMPORTERS["mas-token-bot"]!.convert(src.doc, { directoryName: "d.yaml" });
    if (!result.ok) throw new Error("convert");
    const rendered = render(result.value, src.doc, "mas-token-bot", join(dir, "c.yaml"));
    expect(rendered.ok).toBe(false);
    if (!rendered.ok) expect(rendered.errors.map(formatImportError)).toEqual([expect.stringMatching(/^inline\.yaml:7: room_whitelist\.0: .*tokens\.allow\.1/)]);
  });
});
