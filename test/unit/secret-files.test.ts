/**
 * A `...File` secret that is not a plain file of sane size (a FIFO nobody writes to,
 * `/dev/zero`, a folder, a huge file) is a config error naming the key or the variable and
 * the path; check-config never hangs on it. Run through the real command in a child
 * process: a blocking read would stall the test process itself.
 */
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runBin } from "../helpers/processes.ts";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-secret-files-"));
  await writeFile(join(dir, "directory.yaml"), "users: [alice]\ngroups:\n  - { id: staff, members: [alice] }\n");
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const config = (tokenLine: string): string => `homeserver:
  url: https://matrix.example.org
  ${tokenLine}
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - room: "#staff:example.org"
      groups: [ { group: staff } ]
`;

/** check-config in a child process (stopped with its test if it hangs). */
async function checkConfig(yaml: string, env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> {
  const path = join(dir, "config.yaml");
  await writeFile(path, yaml);
  const r = await runBin(["check-config", "--config", path], { cwd: dir, env: { ...process.env, ...env } });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

describe("secret files", () => {
  it("a plain file is read", async () => {
    await writeFile(join(dir, "token"), "syt_plain\n");
    const r = await checkConfig(config("accessTokenFile: token"));
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
  });

  it("/dev/zero: a config error naming the key and the path", async () => {
    const r = await checkConfig(config("accessTokenFile: /dev/zero"));
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(/\/homeserver\/accessTokenFile: \/dev\/zero is a character device, not a regular file/);
  });

  it("a FIFO nobody writes to, given by the variable: a config error naming the variable and the path", async () => {
    const fifo = join(dir, "token.fifo");
    execFileSync("mkfifo", [fifo]);
    const r = await checkConfig(config("accessToken: from-the-file"), { MGS_HOMESERVER_ACCESS_TOKEN_FILE: fifo });
    expect(r.code, r.err).toBe(2);
    expect(r.err).toContain(`${fifo} is a named pipe (FIFO), not a regular file`);
    expect(r.err).toContain("(from MGS_HOMESERVER_ACCESS_TOKEN_FILE)");
  });

  it("a folder", async () => {
    await mkdir(join(dir, "secrets"), { recursive: true });
    const r = await checkConfig(config("accessTokenFile: secrets"));
    expect(r.code, r.err).toBe(2);
    expect(r.err).toContain(`/homeserver/accessTokenFile: ${join(dir, "secrets")} is a folder`);
  });

  it("a file larger than 64 KiB", async () => {
    await writeFile(join(dir, "huge"), "x".repeat(64 * 1024 + 1));
    const r = await checkConfig(config("accessTokenFile: huge"));
    expect(r.code, r.err).toBe(2);
    expect(r.err).toContain(`/homeserver/accessTokenFile: ${join(dir, "huge")} is larger than 64 KiB`);
    expect(r.err).not.toContain("xxxxxxxx");
  });

  it("the config file itself: /dev/zero or a FIFO is an error, not a hang", async () => {
    for (const path of ["/dev/zero", join(dir, "config.fifo")]) {
      if (path.endsWith(".fifo")) execFileSync("mkfifo", [path]);
      const r = await runBin(["check-config", "--config", path], { cwd: dir, env: { ...process.env } });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/not a regular file; the config file must be a plain file/);
    }
  });

  it("a certificate file that is a device: sync says so and exits, nothing hangs or crashes", async () => {
    const path = join(dir, "azure.yaml");
    await writeFile(
      path,
      `homeserver: { url: http://127.0.0.1:9, accessToken: t }
idp: { kind: azure, azure: { tenantId: contoso.onmicrosoft.com, clientId: 11111111-1111-1111-1111-111111111111, certificateFile: /dev/zero } }
dataDir: ./data-azure
log: { level: error }
`,
    );
    const r = await runBin(["sync", "--dry-run", "--config", path], { cwd: dir, env: { ...process.env } });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("certificateFile: /dev/zero is a character device, not a regular file; idp.azure.certificateFile must be a plain file");
  });
});
