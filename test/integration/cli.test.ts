/**
 * The CLI as an operator uses it: exit codes, check-config redaction, the JSON report,
 * and the installed `matrix-group-sync` command itself.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, type CliIo } from "../../src/main.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { runBin } from "../helpers/processes.ts";

const BOT = "@mgs-bot:example.org";
const SECRET = "syt_c2VjcmV0LXRva2Vu_do-not-print-me";

let dir: string;
let hs: FakeHomeserver;
let token: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-cli-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  token = hs.registerUser(BOT);
  await writeFile(
    join(dir, "directory.yaml"),
    "users: [alice, bob]\ngroups:\n  - { id: staff, members: [alice, bob] }\n",
  );
  hs.createRoom({ creator: BOT, alias: "#staff:example.org", members: { "@alice:example.org": "join", "@old:example.org": "join" } });
});

afterAll(async () => {
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

async function config(name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, body);
  return path;
}

const validConfig = (url: string, extra = ""): string => `homeserver:
  url: ${url}
  accessTokenFile: token.txt
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - room: "#staff:example.org"
      groups: [ { group: staff } ]
log: { level: error }
${extra}`;

async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: (t) => err.push(t), env, cwd: dir, interactive: false };
  const code = await runCli(args, io);
  return { code, out: out.join("\n"), err: err.join("\n") };
}

describe("matrix-group-sync CLI", () => {
  it("bad usage exits 2 and shows the usage", async () => {
    expect((await cli([])).code).toBe(2);
    const unknown = await cli(["frobnicate"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/unknown command: frobnicate/);
    const badFlag = await cli(["sync", "--nope"]);
    expect(badFlag.code).toBe(2);
    expect(badFlag.err).toMatch(/--nope/);
    expect((await cli(["check-config", "--dry-run"])).code).toBe(2);
    const help = await cli(["help"]);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/Exit codes/);
  });

  it("an invalid config exits 2 with every error and its path", async () => {
    const path = await config(
      "bad.yaml",
      `homeserver: { url: http://x, accessToken: a, colour: blue }
idp: { kind: static, static: { file: d.yaml } }
mapping:
  rooms:
    - { room: "#a:example.org", groups: [ { group: g, role: moderatr } ] }
`,
    );
    const r = await cli(["sync", "--config", path]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/\/homeserver\/colour: unknown key/);
    expect(r.err).toMatch(/\/mapping\/rooms\/0\/groups\/0\/role: .*moderatr/);
    const missing = await cli(["sync"], {});
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/MGS_CONFIG|--config/);
  });

  it("check-config prints the effective config without the secret", async () => {
    await writeFile(join(dir, "token.txt"), `${SECRET}\n`);
    const path = await config("ok.yaml", validConfig(hs.url, "database: { url: postgres://mgs:hunter2hunter2@db.internal:5432/mgs }\n"));
    const r = await cli(["check-config", "--config", path]);
    expect(r.code).toBe(0);
    expect(r.out).not.toContain(SECRET);
    expect(r.out).not.toContain("hunter2hunter2");
    expect(r.out).toContain("db.internal");
    expect(r.out).toContain("#staff:example.org");
    expect(r.out).toContain("No environment variable overrides the file.");
    expect(r.out).toMatch(/^ {2}homeserver\.url +file$/m);
    expect(r.out).toMatch(/^ {2}homeserver\.accessToken +file \(accessTokenFile\)$/m);
    expect(r.out).toMatch(/^ {2}homeserver\.concurrency +default$/m);
    const env = await cli(["check-config", "--config", path], {
      MGS_HOMESERVER_URL: "http://127.0.0.1:1",
      MGS_DATA_DIR: "/tmp/elsewhere",
      MGS_SYNC_MAX_REMOVALS_COUNT: "3",
    });
    expect(env.out).toMatch(/Taken from the environment instead of the file:\n {2}\/homeserver\/url ← MGS_HOMESERVER_URL\n {2}\/dataDir ← MGS_DATA_DIR/);
    expect(env.out).toMatch(/^ {2}homeserver\.url +MGS_HOMESERVER_URL$/m);
    expect(env.out).toMatch(/^ {2}sync\.maxRemovals\.count +MGS_SYNC_MAX_REMOVALS_COUNT$/m);
    expect(env.out).toContain('"count": 3');
  });

  it("sync --dry-run --json prints the report and changes nothing; sync applies it", async () => {
    await writeFile(join(dir, "token.txt"), `${token}\n`);
    const path = await config("run.yaml", validConfig(hs.url));
    const dry = await cli(["sync", "--dry-run", "--json", "--config", path]);
    expect(dry.code).toBe(0);
    const report = JSON.parse(dry.out) as { dryRun: boolean; rooms: { room: string; actions: unknown[]; error: unknown }[]; errors: unknown[] };
    expect(report.dryRun).toBe(true);
    expect(report.errors).toEqual([]);
    expect(report.rooms).toHaveLength(1);
    expect(report.rooms[0]!.error).toBeNull();
    expect(report.rooms[0]!.actions).toEqual([
      { kind: "kick", user: "@old:example.org", reason: expect.any(String) },
      { kind: "invite", user: "@bob:example.org" },
    ]);
    expect(hs.appliedChanges()).toEqual([]);

    const real = await cli(["sync", "--config", path]);
    expect(real.code).toBe(0);
    expect(real.out).toMatch(/invite\s+@bob:example.org\s+done/);
    const again = await cli(["sync", "--dry-run", "--config", path]);
    expect(again.out).toMatch(/nothing to do/);
  });

  it("an unreachable homeserver exits 1 naming it, and removes nobody", async () => {
    await writeFile(join(dir, "token.txt"), `${token}\n`);
    const path = await config("down.yaml", validConfig("http://127.0.0.1:9"));
    const r = await cli(["sync", "--json", "--config", path]);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.out) as { errors: string[]; rooms: unknown[] };
    expect(report.errors.join()).toMatch(/cannot reach the homeserver at http:\/\/127.0.0.1:9/);
    expect(report.rooms).toEqual([]);
  });

  it("the installed command runs (bin entry)", async () => {
    const [help, bad] = await Promise.all([runBin(["help"]), runBin(["nope"])]);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/Usage: matrix-group-sync/);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown command: nope/);
  });
});
