/** Every sample config in examples/ loads: the documentation cannot drift from the schema. */
import { readdirSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";

const examples = resolve(import.meta.dirname, "../../examples");

describe("examples/", () => {
  const files = readdirSync(examples).filter((f) => /^config.*\.ya?ml$/.test(f));

  it("has sample configs", () => {
    expect(files.length).toBeGreaterThanOrEqual(3);
  });

  it.each(files)("%s is a valid config", (file) => {
    // Secrets given as files in the samples are supplied through the environment here.
    const dir = mkdtempSync(join(tmpdir(), "mgs-ex-"));
    try {
      const secret = join(dir, "secret");
      writeFileSync(secret, "sample-secret\n");
      const r = loadConfig({
        path: join(examples, file),
        env: { MGS_HOMESERVER_ACCESS_TOKEN_FILE: secret, MGS_IDP_LDAP_BIND_PASSWORD_FILE: secret, MGS_IDP_AZURE_CLIENT_SECRET_FILE: secret },
        cwd: dir,
      });
      expect(r.ok ? [] : r.errors.map(formatConfigError)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
