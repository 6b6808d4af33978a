import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig, type ConfigResult } from "../../src/config/load.ts";
import { redactConfig } from "../../src/config/redact.ts";

const BASE = `
homeserver: { url: http://127.0.0.1:8008, accessToken: t }
idp:
  kind: azure
  azure:
    tenantId: contoso.onmicrosoft.com
    clientId: 11111111-1111-1111-1111-111111111111
`;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-azcfg-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function load(yaml: string, env: NodeJS.ProcessEnv = {}): ConfigResult {
  const path = join(dir, "config.yaml");
  writeFileSync(path, yaml);
  return loadConfig({ path, env, cwd: dir });
}

function errors(r: ConfigResult): string {
  if (r.ok) throw new Error("expected errors");
  return r.errors.map(formatConfigError).join("\n");
}

describe("the azure directory config", () => {
  it("takes the secret from the environment, fills defaults, and never prints the secret", () => {
    const r = load(BASE, { MGS_IDP_AZURE_CLIENT_SECRET: "azure-secret-value-123" });
    if (!r.ok) throw new Error(r.errors.map(formatConfigError).join("\n"));
    if (r.config.idp.kind !== "azure") throw new Error("not azure");
    expect(r.config.idp.azure).toMatchObject({
      clientSecret: "azure-secret-value-123",
      authorityHost: "https://login.microsoftonline.com",
      graphBaseUrl: "https://graph.microsoft.com/v1.0",
      readOwners: true,
      guests: "skip",
      pageSize: 999,
    });
    expect(JSON.stringify(redactConfig(r.config))).not.toContain("azure-secret-value-123");
  });

  it("resolves a certificate file next to the config", () => {
    const r = load(`${BASE}    certificateFile: app.pem\n`);
    if (!r.ok || r.config.idp.kind !== "azure") throw new Error("expected a valid azure config");
    expect(r.config.idp.azure.certificateFile).toBe(join(dir, "app.pem"));
  });

  it("wants exactly one credential", () => {
    expect(errors(load(BASE))).toMatch(/\/idp\/azure: give clientSecret, clientSecretFile or certificateFile/);
    expect(errors(load(`${BASE}    clientSecret: x\n    certificateFile: app.pem\n`))).toMatch(
      /\/idp\/azure: give a client secret or certificateFile, not both/,
    );
  });

  it("refuses http endpoints, a client id that is not a GUID, and a page size above 999", () => {
    const text = errors(
      load(
        BASE.replace("11111111-1111-1111-1111-111111111111", "my-app") +
          "    clientSecret: x\n    authorityHost: http://login.example\n    graphBaseUrl: http://graph.example/v1.0\n    pageSize: 1000\n",
      ),
    );
    expect(text).toMatch(/\/idp\/azure\/clientId: "my-app" is not a GUID/);
    expect(text).toMatch(/\/idp\/azure\/authorityHost: not a valid https URL/);
    expect(text).toMatch(/\/idp\/azure\/graphBaseUrl:/);
    expect(text).toMatch(/\/idp\/azure\/pageSize: .*999/);
  });
});
