/**
 * `matrix-group-sync import` as an operator runs it: files written (the config, secret files
 * 0600 in a 0700 folder), the result loads with our loader, nothing written on any error,
 * no overwrite without --force, stdout without --out, and the installed command.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";
import { runCli, type CliIo } from "../../src/main.ts";
import { runBin } from "../helpers/processes.ts";

const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), "../fixtures/import");

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-import-cli-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: (t) => err.push(t), env: {}, cwd: dir, interactive: false };
  const code = await runCli(args, io);
  return { code, out: out.join("\n"), err: err.join("\n") };
}

function loads(path: string): void {
  const loaded = loadConfig({ path, env: {}, cwd: dir });
  if (!loaded.ok) throw new Error(loaded.errors.map(formatConfigError).join("\n"));
}

const mode = (path: string): number => statSync(path).mode & 0o777;

describe("matrix-group-sync import", () => {
  it("inviterbot (Azure AD) --out: the config loads, each secret in its own 0600 file, the report lists three kinds and no secret", async () => {
    const r = await cli(["import", "inviterbot", join(FIXTURES, "inviterbot-azure.yaml"), "--out", "config.yaml"]);
    expect(r.code, r.err).toBe(0);
    loads(join(dir, "config.yaml"));
    const secrets = join(dir, "config.yaml.secrets");
    expect(mode(secrets)).toBe(0o700);
    expect(readdirSync(secrets).sort()).toEqual(["azure-client-secret", "homeserver-access-token"]);
    for (const f of readdirSync(secrets)) expect(mode(join(secrets, f))).toBe(0o600);
    expect(readFileSync(join(secrets, "azure-client-secret"), "utf8").trim()).toBe("azure-secret-do-not-print");
    expect(readFileSync(join(dir, "config.yaml"), "utf8")).not.toContain("azure-secret-do-not-print");
    expect(r.out + r.err).not.toContain("azure-secret-do-not-print");
    expect(r.out).toMatch(/Mapped 1:1:[\s\S]*Changes meaning[\s\S]*No equivalent \(ignored\):[\s\S]*Placeholders/);
    expect(r.out).toMatch(/cautious: true → sync\.kickOn: manual/);
    expect(r.out).toMatch(/renamed_users → users\.renamedLocalparts/);
    // Both are 1:1 now: listed under "Mapped 1:1", not under "Changes meaning".
    const changes = r.out.slice(r.out.indexOf("Changes meaning"), r.out.indexOf("No equivalent"));
    expect(changes).not.toMatch(/cautious|renamed_users/);
    const written = readFileSync(join(dir, "config.yaml"), "utf8");
    expect(written).toMatch(/kickOn: manual/);
    expect(written).toMatch(/renamedLocalparts:\n\s+testnew: testold\n\s+jane\.doe: jdoe/);
    // check-config accepts it too (through the CLI, exactly as written)
    const check = await cli(["check-config", "--config", "config.yaml"]);
    expect(check.code, check.err).toBe(0);
    expect(check.out).not.toContain("azure-secret-do-not-print");
  });

  it("inviterbot (LDAP) --out loads; the bind password is a 0600 file", async () => {
    const r = await cli(["import", "inviterbot", join(FIXTURES, "inviterbot-ldap.yaml"), "--out", "sub/ldap.yaml"]);
    expect(r.code, r.err).toBe(0);
    loads(join(dir, "sub/ldap.yaml"));
    expect(mode(join(dir, "sub/ldap.yaml.secrets/ldap-bind-password"))).toBe(0o600);
    expect(r.out).not.toContain("ldap-secret-do-not-print");
  });

  it("bad input: every problem with file and line, exit 4 (refused), nothing written", async () => {
    for (const name of ["inviterbot-bad.yaml", "inviterbot-bad-values.yaml", "not-yaml.yaml", "no-such-file.yaml"]) {
      const r = await cli(["import", "inviterbot", join(FIXTURES, name), "--out", "config.yaml"]);
      expect(r.code, name).toBe(4);
      expect(r.err).toMatch(/nothing was written/);
      expect(readdirSync(dir), name).toEqual([]);
    }
    const bad = await cli(["import", "inviterbot", join(FIXTURES, "inviterbot-bad.yaml"), "--out", "config.yaml"]);
    expect(bad.err).toMatch(/inviterbot-bad\.yaml:7: ldap\.bind_pasword: unknown key; did you mean "bind_password"\?/);
    expect(bad.err).toMatch(/inviterbot-bad\.yaml:5: ldap\.port: must be a whole number/);
  });

  it("refuses to overwrite without --force, and replaces with it", async () => {
    writeFileSync(join(dir, "config.yaml"), "mine\n");
    const src = join(FIXTURES, "inviterbot-azure.yaml");
    const refused = await cli(["import", "inviterbot", src, "--out", "config.yaml"]);
    expect(refused.code).toBe(4);
    expect(refused.err).toMatch(/refusing to overwrite .*config\.yaml.*--force/);
    expect(readFileSync(join(dir, "config.yaml"), "utf8")).toBe("mine\n");
    expect(existsSync(join(dir, "config.yaml.secrets"))).toBe(false);
    const forced = await cli(["import", "inviterbot", src, "--out", "config.yaml", "--force"]);
    expect(forced.code, forced.err).toBe(0);
    loads(join(dir, "config.yaml"));
    expect(readdirSync(dir).filter((f) => f.includes(".tmp-"))).toEqual([]);
  });

  it("without --out: refuses a source with secrets; prints YAML for one without", async () => {
    const refused = await cli(["import", "inviterbot", join(FIXTURES, "inviterbot-azure.yaml")]);
    expect(refused.code).toBe(4);
    expect(refused.err).toMatch(/give --out FILE/);
    expect(refused.out).toBe("");
    const noSecrets = join(dir, "anon.yaml");
    writeFileSync(noSecrets, "idp_type: ldap\nmxid_homeserver: example.com\nldap:\n  host: ldap.example.com\n  port: 389\n  base_dn_users: ou=people,dc=example,dc=com\n  base_dn_groups: ou=groups,dc=example,dc=com\ncautious: true\n");
    const printed = await cli(["import", "inviterbot", "anon.yaml"]);
    expect(printed.code, printed.err).toBe(0);
    expect(printed.err).toMatch(/Mapped 1:1/);
    writeFileSync(join(dir, "printed.yaml"), printed.out);
    loads(join(dir, "printed.yaml"));
    expect(printed.out).toMatch(/kickOn: manual/);
    const check = await cli(["check-config", "--config", "printed.yaml"]);
    expect(check.code, check.err).toBe(0);
  });

  it("matrix-registration-bot --out: loads; both tokens 0600 files; the placeholder directory written", async () => {
    const r = await cli(["import", "matrix-registration-bot", join(FIXTURES, "matrix-registration-bot.yml"), "--out", "reg.yaml"]);
    expect(r.code, r.err).toBe(0);
    loads(join(dir, "reg.yaml"));
    expect(readdirSync(join(dir, "reg.yaml.secrets")).sort()).toEqual(["homeserver-access-token", "synapse-admin-token"]);
    for (const f of readdirSync(join(dir, "reg.yaml.secrets"))) expect(mode(join(dir, "reg.yaml.secrets", f))).toBe(0o600);
    expect(readFileSync(join(dir, "reg.directory.yaml"), "utf8")).toMatch(/PLACEHOLDER/);
    expect(r.out).toMatch(/Placeholders[\s\S]*kind: static/);
    expect(r.out + readFileSync(join(dir, "reg.yaml"), "utf8")).not.toMatch(/do-not-print/);
    const bad = await cli(["import", "matrix-registration-bot", join(FIXTURES, "matrix-registration-bot-bad.yml"), "--out", "bad.yaml"]);
    expect(bad.code).toBe(4);
    expect(bad.err).toMatch(/matrix-registration-bot-bad\.yml:3: bot\.acces_token: unknown key; did you mean "access_token"\?/);
    expect(existsSync(join(dir, "bad.yaml"))).toBe(false);
  });

  it("mas-token-bot --out: loads with tokens.backend mas; the client secret a 0600 file", async () => {
    const r = await cli(["import", "mas-token-bot", join(FIXTURES, "mas-token-bot.yaml"), "--out", "mas.yaml"]);
    expect(r.code, r.err).toBe(0);
    const loaded = loadConfig({ path: join(dir, "mas.yaml"), env: {}, cwd: dir });
    if (!loaded.ok) throw new Error(loaded.errors.map(formatConfigError).join("\n"));
    expect(loaded.config.tokens?.backend).toBe("mas");
    expect(loaded.config.tokens?.mas?.clientSecret).toBe("mas-secret-do-not-print");
    expect(mode(join(dir, "mas.yaml.secrets/mas-client-secret"))).toBe(0o600);
    expect(r.out).not.toContain("mas-secret-do-not-print");
    const bad = await cli(["import", "mas-token-bot", join(FIXTURES, "mas-token-bot-bad.yaml"), "--out", "bad.yaml"]);
    expect(bad.code).toBe(4);
    expect(bad.err).toMatch(/mas-token-bot-bad\.yaml:5: default_uses_alowed: unknown key; did you mean "default_uses_allowed"\?/);
    expect(existsSync(join(dir, "bad.yaml"))).toBe(false);
    expect(existsSync(join(dir, "bad.yaml.secrets"))).toBe(false);
  });

  it("bad usage: unknown kind with a suggestion, missing file argument", async () => {
    const unknown = await cli(["import", "inviterbt", "x.yaml"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/unknown kind: inviterbt\. Did you mean "inviterbot"\?/);
    expect((await cli(["import", "inviterbot"])).code).toBe(2);
    const help = await cli(["help"]);
    expect(help.out).toMatch(/import \[--force\] <kind> <file> \[out\]/);
  });

  it("the installed command imports (bin entry)", async () => {
    const r = await runBin(["import", "inviterbot", join(FIXTURES, "inviterbot-ldap.yaml"), "--out", join(dir, "bin.yaml")]);
    expect(r.code, r.stderr).toBe(0);
    loads(join(dir, "bin.yaml"));
  });
});
