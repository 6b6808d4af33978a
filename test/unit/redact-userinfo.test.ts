/**
 * Userinfo (`user:password@`, or a token written as the user name) never shows: not in
 * check-config's effective config, not in a config error, not in a log line.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";
import { runCli, type CliIo } from "../../src/main.ts";

const PASSWORD = "pw-do-not-print-1";
const USER_TOKEN = "tok-do-not-print-2";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-userinfo-"));
  await writeFile(join(dir, "directory.yaml"), "users: [alice]\ngroups:\n  - { id: staff, members: [alice] }\n");
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function checkConfig(yaml: string, env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  const path = join(dir, "config.yaml");
  await writeFile(path, yaml);
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: (t) => err.push(t), env, cwd: dir, interactive: false };
  const code = await runCli(["check-config", "--config", path], io);
  return { code, out: out.join("\n"), err: err.join("\n") };
}

const config = (homeserverUrl: string): string => `homeserver:
  url: ${homeserverUrl}
  accessToken: syt_x
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - room: "#staff:example.org"
      groups: [ { group: staff } ]
`;

describe("URL userinfo", () => {
  it("check-config shows the homeserver URL without its user:password@", async () => {
    const r = await checkConfig(config(`https://alice:${PASSWORD}@matrix.example.org/`));
    expect(r.code).toBe(0);
    expect(r.out).not.toContain(PASSWORD);
    expect(r.out).toContain('"url": "https://alice:***@matrix.example.org/"');
  });

  it("check-config shows a URL whose user name alone is the credential without it", async () => {
    const r = await checkConfig(config(`https://${USER_TOKEN}@matrix.example.org/`));
    expect(r.code).toBe(0);
    expect(r.out).not.toContain(USER_TOKEN);
    expect(r.out).toContain('"url": "https://***@matrix.example.org/"');
  });

  it("the same from the environment", async () => {
    const r = await checkConfig(config("https://matrix.example.org/"), { MGS_HOMESERVER_URL: `https://bob:${PASSWORD}@hs.example.org:8448` });
    expect(r.code).toBe(0);
    expect(r.out).not.toContain(PASSWORD);
    expect(r.out).toContain('"url": "https://bob:***@hs.example.org:8448/"');
  });

  it("a config error that quotes a URL does not quote its password", async () => {
    const r = await checkConfig(config(`ftp://alice:${PASSWORD}@matrix.example.org/`));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/\/homeserver\/url: /);
    expect(r.err).not.toContain(PASSWORD);
  });

  it("log lines carry no userinfo: URL objects with a user name only, URLs inside text", () => {
    const lines: string[] = [];
    const log = createLogger({ level: "info", format: "json", write: (l) => lines.push(l) });
    log.warn("request failed", {
      homeserver: new URL(`https://${USER_TOKEN}@hs.example.org/`),
      error: new Error(`cannot reach the homeserver at https://alice:${PASSWORD}@hs.example.org/_matrix (ECONNREFUSED)`),
      detail: `GET https://${USER_TOKEN}@hs.example.org/_matrix/client/v3/profile/@bob:example.org failed`,
    });
    const line = lines[0]!;
    expect(line).not.toContain(PASSWORD);
    expect(line).not.toContain(USER_TOKEN);
    const parsed = JSON.parse(line) as Record<string, unknown>;
    expect(parsed["homeserver"]).toBe("https://***@hs.example.org/");
    expect(parsed["error"]).toEqual({ name: "Error", message: "cannot reach the homeserver at https://alice:***@hs.example.org/_matrix (ECONNREFUSED)" });
    expect(parsed["detail"]).toBe("GET https://***@hs.example.org/_matrix/client/v3/profile/@bob:example.org failed");
  });
});
