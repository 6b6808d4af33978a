/**
 * The token service as the CLI builds it (config file → createTokenService): tokens.mas.clientAuth
 * reaches the MAS backend, and TokenService.close() revokes the access token — or, when it cannot,
 * logs a warning without the token and does not throw.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { systemClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config/load.ts";
import { createLogger } from "../../src/log.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import type { Store } from "../../src/store/store.ts";
import { createTokenService } from "../../src/tokens/service.ts";
import { FakeMas } from "../fakes/mas.ts";

const CLIENT = "01J9Z8ZQ5N6M7P8Q9R0S1T2V3Y";
const SECRET = "post-secret";
let dir: string;
let store: Store;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-token-service-"));
  await writeFile(join(dir, "directory.yaml"), "users: []\ngroups: []\n");
  await writeFile(join(dir, "mas-secret"), `${SECRET}\n`);
  store = await openStore({ dataDir: join(dir, "data") });
}, 60_000);

afterAll(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

it("client_secret_post from the config; close() revokes the token, and logs (without it) when it cannot", async () => {
  const mas = await FakeMas.start();
  let stopped = false;
  try {
    mas.addClient({ clientId: CLIENT, clientSecret: SECRET, admin: true, authMethod: "client_secret_post" });
    const path = join(dir, "config.yaml");
    await writeFile(
      path,
      `homeserver: { url: http://127.0.0.1:9, accessToken: unused }
idp: { kind: static, static: { file: directory.yaml } }
tokens:
  backend: mas
  mas: { url: ${mas.url}, clientId: ${CLIENT}, clientSecretFile: mas-secret, clientAuth: client_secret_post }
`,
    );
    const loaded = loadConfig({ path, env: {}, cwd: dir });
    if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));
    const lines: string[] = [];
    const log = createLogger({ level: "info", format: "json", write: (l) => lines.push(l) });
    const made = createTokenService(loaded.config, store, systemClock, log, "syt_unused_with_mas");
    if (!made.ok) throw new Error(made.error.message);
    const tokens = made.value;

    const listed = await tokens.backend.list("all");
    expect(listed.ok).toBe(true);
    expect(mas.liveAccessTokens()).toBe(1);
    await tokens.close();
    await tokens.close();
    expect(mas.liveAccessTokens()).toBe(0);
    expect(mas.revokedAccessTokens()).toBe(1);
    expect(mas.requestCounts()["oauth-revoke"]).toBe(1);
    expect(lines.filter((l) => l.includes('"warn"'))).toEqual([]);

    // Once more with MAS gone before close: a warning, no token in it, nothing thrown.
    expect((await tokens.backend.list("all")).ok).toBe(true);
    const [, second] = mas.issuedAccessTokens();
    await mas.close();
    stopped = true;
    await tokens.close();
    const warnings = lines.filter((l) => l.includes("could not revoke"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("cannot reach");
    expect(lines.join("\n")).not.toContain(second ?? "mat_");
  } finally {
    if (!stopped) await mas.close();
  }
});
