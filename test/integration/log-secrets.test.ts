/**
 * Secrets never reach the logs: a real CLI process at the most verbose level, with
 * recognisable secrets in the homeserver token, the database URL and the LDAP-free static
 * setup, syncing against the test homeserver; every line it writes is searched.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { postgresUnreachable, TEST_DATABASE_URL } from "../helpers/postgres.ts";
import { runBin } from "../helpers/processes.ts";

const TOKEN = "syt_SECRET_HOMESERVER_TOKEN_7f3a9c";
const DB_PASSWORD = "SECRET-DB-PASSWORD-41b2";
const base = TEST_DATABASE_URL;
const withPg = (await postgresUnreachable()) === undefined || process.env["CI"] !== undefined;

let dir: string;
let hs: FakeHomeserver;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-secrets-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  hs.registerUser("@bot:example.org", TOKEN);
  hs.createRoom({ creator: "@bot:example.org", alias: "#a:example.org", members: { "@gone:example.org": "join" } });
  await writeFile(join(dir, "directory.yaml"), "users: [alice]\ngroups:\n  - { id: g, members: [alice] }\n");
  await writeFile(join(dir, "token"), `${TOKEN}\n`);
});

afterAll(async () => {
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

describe("logs", () => {
  it("never contain a secret, even at trace level and on errors", async () => {
    // trust auth accepts any password, so a recognisable one can be used for real.
    const dbUrl = new URL(base);
    dbUrl.password = DB_PASSWORD;
    await writeFile(
      join(dir, "config.yaml"),
      `homeserver: { url: ${hs.url}, accessTokenFile: token }
${withPg ? `database: { url: "${dbUrl.toString()}" }` : "dataDir: ./data"}
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - { room: "#a:example.org", groups: [ { group: g } ] }
    - { room: "#missing:example.org", groups: [ { group: g } ] }
log: { level: trace, format: json }
`,
    );
    const run = (args: string[]): ReturnType<typeof runBin> => runBin([...args, "--config", join(dir, "config.yaml")]);
    // The two syncs one after the other (one store); check-config opens no store.
    const [syncs, check] = await Promise.all([
      (async () => [await run(["sync"]), await run(["sync", "--dry-run", "--json"])])(),
      run(["check-config"]),
    ]);
    const all = [...syncs, check].flatMap((r) => [r.stdout, r.stderr]).join("\n");
    // The run really happened and logged at trace level (so there was something to leak).
    expect(all).toMatch(/"level":"(trace|debug)"/);
    expect(all).toContain("#missing:example.org");
    for (const line of all.split("\n")) {
      expect(line).not.toContain(TOKEN);
      expect(line).not.toContain(DB_PASSWORD);
    }
  });
});
