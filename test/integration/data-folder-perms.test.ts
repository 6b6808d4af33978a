/**
 * The embedded database is the service user's alone: a new data folder is 0700, the PGlite
 * folder 0700 and its files and the lock file 0600. A data folder left open by an older
 * version is reported (not changed: it may be a folder the operator shares), and the
 * database inside it is tightened.
 */
import { chmod, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openStore } from "../../src/store/kysely-store.ts";
import { runBin } from "../helpers/processes.ts";

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-perms-"));
  await writeFile(join(dir, "directory.yaml"), "users: [a1]\ngroups:\n  - { id: g, members: [a1] }\n");
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const modeOf = async (path: string): Promise<string> => ((await stat(path)).mode & 0o777).toString(8);

/** Mode → how many entries below `root` have it, folders and files apart. */
async function modesBelow(root: string): Promise<{ dirs: Record<string, number>; files: Record<string, number> }> {
  const dirs: Record<string, number> = {};
  const files: Record<string, number> = {};
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const mode = await modeOf(join(entry.parentPath, entry.name));
    const into = entry.isDirectory() ? dirs : files;
    into[mode] = (into[mode] ?? 0) + 1;
  }
  return { dirs, files };
}

/** Every folder and file below `root` to the given modes (what an older version left). */
async function loosen(root: string): Promise<void> {
  await chmod(root, 0o755);
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    await chmod(join(entry.parentPath, entry.name), entry.isDirectory() ? 0o755 : 0o644);
  }
}

describe.skipIf(process.platform === "win32")("data folder permissions", () => {
  it("a new data folder, its database and its lock file are private", async () => {
    const dataDir = join(dir, "fresh", "data");
    const store = await openStore({ dataDir });
    try {
      expect(await modeOf(dataDir)).toBe("700");
      expect(await modeOf(join(dataDir, "pglite"))).toBe("700");
      expect(await modeOf(join(dataDir, "pglite.lock"))).toBe("600");
      const below = await modesBelow(join(dataDir, "pglite"));
      expect(Object.keys(below.dirs)).toEqual(["700"]);
      expect(Object.keys(below.files)).toEqual(["600"]);
    } finally {
      await store.close();
    }
  });

  it("a data folder an older version left open: reported, and the database inside it tightened", async () => {
    const dataDir = join(dir, "old", "data");
    await (await openStore({ dataDir })).close();
    await loosen(dataDir);
    expect(await modeOf(join(dataDir, "pglite"))).toBe("755");

    const config = join(dir, "old", "config.yaml");
    await writeFile(
      config,
      `homeserver: { url: "http://127.0.0.1:1", accessToken: syt_x }
dataDir: ./data
idp: { kind: static, static: { file: ${join(dir, "directory.yaml")} } }
mapping: { rooms: [] }
log: { level: warn }
`,
    );
    const { code, stderr: err } = await runBin(["migrate", "--config", config]);
    expect(code, err).toBe(0);
    const warnings = err
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l["level"] === "warn");
    expect(warnings).toContainEqual(expect.objectContaining({ msg: expect.stringMatching(/data folder is open to other users/), dataDir, mode: "0755" }));

    expect(await modeOf(dataDir)).toBe("755"); // the operator's to change
    expect(await modeOf(join(dataDir, "pglite"))).toBe("700");
    const below = await modesBelow(join(dataDir, "pglite"));
    expect(Object.keys(below.dirs)).toEqual(["700"]);
    expect(Object.keys(below.files)).toEqual(["600"]);
  });
});
