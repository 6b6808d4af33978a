import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig, type ConfigResult } from "../../src/config/load.ts";
import { redactConfig } from "../../src/config/redact.ts";
import type { LdapIdpConfig } from "../../src/config/schema.ts";

const BASE = `
homeserver: { url: http://127.0.0.1:8008, accessToken: t }
idp:
  kind: ldap
  ldap:
    url: ldap://ldap.example.org:389
    bindDn: cn=reader,dc=example,dc=org
    groups: { base: "ou=groups,dc=example,dc=org" }
    users: { base: "ou=people,dc=example,dc=org" }
`;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-ldapcfg-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function load(yaml: string, env: NodeJS.ProcessEnv = {}): ConfigResult {
  const path = join(dir, "config.yaml");
  writeFileSync(path, yaml);
  return loadConfig({ path, env, cwd: dir });
}

function ldapOf(r: ConfigResult): LdapIdpConfig["ldap"] {
  if (!r.ok) throw new Error(r.errors.map(formatConfigError).join("\n"));
  if (r.config.idp.kind !== "ldap") throw new Error("not ldap");
  return r.config.idp.ldap;
}

function errors(r: ConfigResult): string[] {
  if (r.ok) throw new Error("expected errors");
  return r.errors.map(formatConfigError);
}

describe("the ldap directory config", () => {
  it("fills defaults and reads the bind password from a file", () => {
    writeFileSync(join(dir, "ldap.pw"), "s3cret-bind\n");
    const ldap = ldapOf(load(BASE.replace("    bindDn:", "    bindPasswordFile: ldap.pw\n    bindDn:")));
    expect(ldap.bindPassword).toBe("s3cret-bind");
    expect("bindPasswordFile" in ldap).toBe(false);
    expect(ldap).toMatchObject({ startTls: false, rejectUnauthorized: true, pageSize: 500, flavour: "openldap", activeDirectoryInChain: false });
    expect(ldap.groups).toMatchObject({ scope: "sub", nameAttribute: "cn", memberAttributes: ["member", "uniqueMember", "memberUid"] });
    expect(ldap.users.memberUidAttribute).toBe("uid");
  });

  it("takes the URL and password from the environment, and redacts the password", () => {
    const r = load(BASE, { MGS_IDP_LDAP_BIND_PASSWORD: "env-secret-pw", MGS_IDP_LDAP_URL: "ldaps://dc1.example.org:636" });
    const ldap = ldapOf(r);
    expect(ldap.url).toBe("ldaps://dc1.example.org:636");
    expect(ldap.bindPassword).toBe("env-secret-pw");
    if (!r.ok) return;
    expect(JSON.stringify(redactConfig(r.config))).not.toContain("env-secret-pw");
  });

  it("refuses a bind DN without a password, and both password forms at once", () => {
    expect(errors(load(BASE)).join("\n")).toContain(
      "/idp/ldap: bindDn needs bindPassword or bindPasswordFile (or MGS_IDP_LDAP_BIND_PASSWORD); leave bindDn out to bind anonymously",
    );
    const both = errors(load(BASE.replace("    bindDn:", "    bindPassword: a\n    bindPasswordFile: b\n    bindDn:")));
    expect(both.join("\n")).toMatch(/\/idp\/ldap: give bindPassword or bindPasswordFile, not both/);
  });

  it("allows an anonymous bind", () => {
    const ldap = ldapOf(load(BASE.replace("    bindDn: cn=reader,dc=example,dc=org\n", "")));
    expect(ldap.bindDn).toBeUndefined();
  });

  it("names a bad filter, URL, scope or flavour by its path", () => {
    const bad = BASE.replace("ldap://ldap.example.org:389", "http://ldap.example.org")
      .replace('groups: { base: "ou=groups,dc=example,dc=org" }', 'groups: { base: "ou=groups,dc=example,dc=org", filter: "(objectClass=group", scope: deep }')
      .replace("    bindDn:", "    bindPassword: x\n    flavour: novell\n    bindDn:");
    const text = errors(load(bad)).join("\n");
    expect(text).toMatch(/\/idp\/ldap\/url: "http:\/\/ldap.example.org" is not an ldap:\/\/ or ldaps:\/\/ URL/);
    expect(text).toMatch(/\/idp\/ldap\/groups\/filter: not a valid LDAP filter/);
    expect(text).toMatch(/\/idp\/ldap\/groups\/scope: must be one of: base, one, sub/);
    expect(text).toMatch(/\/idp\/ldap\/flavour: must be one of: openldap, 389ds, ad/);
  });
});
