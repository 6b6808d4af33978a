/**
 * Password login (`homeserver.user` + `homeserver.password`) and `serve.encryption` as the loader
 * reads them: the values they give, the secrets redacted, and every refusal with its path.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig, type ConfigResult, type LoadedConfig } from "../../src/config/load.ts";
import { redactConfig } from "../../src/config/redact.ts";

const IDP = "idp: { kind: static, static: { file: directory.yaml } }\n";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-config-login-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function load(text: string, env: NodeJS.ProcessEnv = {}): ConfigResult {
  const path = join(dir, "config.yaml");
  writeFileSync(path, text + IDP);
  return loadConfig({ path, env, cwd: dir });
}

function ok(r: ConfigResult): LoadedConfig {
  if (!r.ok) throw new Error(r.errors.map(formatConfigError).join("\n"));
  return r;
}

function errors(r: ConfigResult): string {
  if (r.ok) throw new Error("expected the config to be rejected");
  return r.errors.map(formatConfigError).join("\n");
}

describe("password login", () => {
  it("user and password (inline, from a file, from the environment) instead of an access token; the password is redacted", () => {
    const inline = ok(load("homeserver: { url: http://127.0.0.1:8008, user: mgs-bot, password: pw-inline-secret }\n"));
    expect(inline.config.homeserver).toMatchObject({ user: "mgs-bot", password: "pw-inline-secret" });
    expect(inline.config.homeserver.accessToken).toBeUndefined();
    expect(JSON.stringify(redactConfig(inline.config))).not.toContain("pw-inline-secret");

    writeFileSync(join(dir, "pw"), "pw-from-file\n");
    const fromFile = ok(load("homeserver: { url: http://127.0.0.1:8008, user: '@mgs-bot:example.org', passwordFile: pw }\n"));
    expect(fromFile.config.homeserver).toMatchObject({ user: "@mgs-bot:example.org", password: "pw-from-file" });

    const fromEnv = ok(load("homeserver: { url: http://127.0.0.1:8008 }\n", { MGS_HOMESERVER_USER: "mgs-bot", MGS_HOMESERVER_PASSWORD: "pw-env" }));
    expect(fromEnv.config.homeserver).toMatchObject({ user: "mgs-bot", password: "pw-env" });
  });

  it("refuses neither, both, a password without a user and a user without a password", () => {
    expect(errors(load("homeserver: { url: http://127.0.0.1:8008 }\n"))).toContain("/homeserver: give accessToken or accessTokenFile");
    expect(errors(load("homeserver: { url: http://127.0.0.1:8008, accessToken: t, user: b, password: p }\n"))).toContain(
      "/homeserver: give an access token (accessToken/accessTokenFile) or password login (user with password/passwordFile), not both",
    );
    expect(errors(load("homeserver: { url: http://127.0.0.1:8008, password: p }\n"))).toContain("/homeserver/user: required with password login");
    expect(errors(load("homeserver: { url: http://127.0.0.1:8008, accessToken: t, user: b }\n"))).toContain("/homeserver/user: user is for password login");
  });
});

describe("serve.encryption", () => {
  const HS = "homeserver: { url: http://127.0.0.1:8008, accessToken: t }\n";
  it("a store key (inline, file or environment) and the key wait, the key redacted", () => {
    const r = ok(load(HS + "serve: { managementRoom: '!m:example.org', encryption: { storeKey: store-key-secret } }\n"));
    expect(r.config.serve?.encryption).toEqual({ storeKey: "store-key-secret", keyWaitMs: 15_000 });
    expect(JSON.stringify(redactConfig(r.config))).not.toContain("store-key-secret");
    writeFileSync(join(dir, "k"), "key-from-file\n");
    const file = ok(load(HS + "serve: { managementRoom: '!m:example.org', encryption: { storeKeyFile: k, keyWaitMs: 500 } }\n"));
    expect(file.config.serve?.encryption).toEqual({ storeKey: "key-from-file", keyWaitMs: 500 });
    const env = ok(load(HS + "serve: { managementRoom: '!m:example.org', encryption: {} }\n", { MGS_SERVE_ENCRYPTION_STORE_KEY: "env-key" }));
    expect(env.config.serve?.encryption?.storeKey).toBe("env-key");
  });

  it("refuses an encryption section without a store key; no section means no encryption", () => {
    expect(errors(load(HS + "serve: { managementRoom: '!m:example.org', encryption: {} }\n"))).toContain("/serve/encryption: give storeKey or storeKeyFile");
    expect(ok(load(HS + "serve: { managementRoom: '!m:example.org' }\n")).config.serve?.encryption).toBeUndefined();
  });
});
