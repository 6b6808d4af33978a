/**
 * Fault injection: the homeserver fails actions, the process is killed mid-run. Each action
 * is applied at most once (the test homeserver counts), nothing is lost, the next run
 * converges, and what was held stays held.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, type CliIo } from "../../src/main.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";
import { HANG_GUARD_MS, startBin } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";

const BOT = "@bot:example.org";
const u = (n: string): string => `@${n}:example.org`;
let dir: string;
let hs: FakeHomeserver;
let token: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-faults-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  token = hs.registerUser(BOT);
  await writeFile(
    join(dir, "directory.yaml"),
    `users: [a1, a2, a3, a4, a5, a6]\ngroups:\n  - { id: g, members: [a1, a2, a3, a4, a5, a6] }\n`,
  );
});

afterAll(async () => {
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

async function writeConfig(name: string, room: string, dataDir: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(
    path,
    `homeserver: { url: ${hs.url}, accessToken: ${token}, concurrency: 1, maxRetries: 10 }
dataDir: ./${dataDir}
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - { room: "${room}", groups: [ { group: g } ] }
sync: { maxRemovals: { count: 2 } }
log: { level: error }
`,
  );
  return path;
}

async function sync(config: string): Promise<{ code: number; report: { outcome: string; rooms: { actions: { kind: string; outcome?: string }[]; held: unknown[] }[] } }> {
  const out: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: () => undefined, env: {}, cwd: dir, interactive: false };
  const code = await runCli(["sync", "--json", "--config", config], io);
  return { code, report: JSON.parse(out.join("\n")) as never };
}

describe("faults", () => {
  it("homeserver 500s on some invites: the run fails cleanly, each change lands once, the next run converges", async () => {
    const room = hs.createRoom({ creator: BOT, alias: "#f1:example.org" });
    const config = await writeConfig("f1.yaml", "#f1:example.org", "data-f1");
    hs.failNext("invite", 2, 500);
    const first = await sync(config);
    expect(first.code).toBe(1);
    expect(first.report.outcome).toBe("failed");
    expect(first.report.rooms[0]!.actions.filter((a) => a.outcome === "failed")).toHaveLength(2);
    const second = await sync(config);
    expect(second.code).toBe(0);
    expect(second.report.rooms[0]!.actions.map((a) => a.kind)).toEqual(["invite", "invite"]);
    const third = await sync(config);
    expect(third.report.rooms[0]!.actions).toEqual([]);
    const invites = hs.appliedChanges().filter((c) => c.roomId === room && c.kind === "invite");
    expect(invites).toHaveLength(6);
    expect(new Set(invites.map((c) => c.target)).size).toBe(6);
  });

  it("SIGKILL in the middle of a run: the next run converges, held removals stay held, the dead run is marked interrupted", { timeout: 2 * HANG_GUARD_MS }, async () => {
    const room = hs.createRoom({
      creator: BOT,
      alias: "#f2:example.org",
      members: { [u("x1")]: "join", [u("x2")]: "join", [u("x3")]: "join" },
    });
    const config = await writeConfig("f2.yaml", "#f2:example.org", "data-f2");
    // First run: three removals exceed the guard (count 2): held; invites applied.
    const first = await sync(config);
    expect(first.report.rooms[0]!.held).toHaveLength(3);

    // A second run is killed while it waits on a rate-limited room read.
    hs.resetCounts();
    hs.rateLimit({ count: 1, retryAfterMs: 30_000, endpoints: ["state"] });
    const child = startBin(["sync", "--config", config]);
    // The child has started its run once its room read was answered with 429 (it now waits 30 s).
    await waitUntil("the child's run reads the room", () => hs.requestCounts().state > 0, () => child.tail());
    expect(hs.requestCounts().state).toBe(1);
    await child.kill();

    const store = await openStore({ dataDir: join(dir, "data-f2") });
    try {
      const runs = await store.listRuns(5);
      expect(runs[0]!.outcome).toBe("running"); // the dead process could not finish it
      expect(await store.interruptDanglingRuns(new Date())).toBe(1); // what serve does at start
      expect((await store.listHeld()).filter((h) => h.roomId === room).map((h) => h.userId).sort()).toEqual([u("x1"), u("x2"), u("x3")]);
    } finally {
      await store.close();
    }
    const after = await sync(config);
    expect(after.code).toBe(0);
    expect(after.report.rooms[0]!.actions).toEqual([]);
    expect(after.report.rooms[0]!.held).toHaveLength(3);
    expect(hs.members(room)[u("x1")]).toBe("join");
    expect(hs.appliedChanges().filter((c) => c.roomId === room && c.kind === "invite")).toHaveLength(6);
  });
});
