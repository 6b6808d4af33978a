/**
 * Under `serve` a run cannot outlive its schedule slot: a run held up by a homeserver that
 * does not answer stops starting rooms at the next slot and ends failed, saying why; the next
 * run picks the rest up. The real service against the test homeserver, on a schedule of one
 * slot every two seconds.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.ts";
import type { RunReport } from "../../src/reconcile/report.ts";
import { startServe, type ServeHandle } from "../../src/service/serve.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const BOT = "@mgs-bot:example.org";
const OP = "@op:example.org";
const ALICE = "@alice:example.org";
const ROOMS = ["#t1:example.org", "#t2:example.org", "#t3:example.org"];

let dir: string;
let hs: FakeHomeserver;
let handle: ServeHandle | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-slot-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
});

afterAll(async () => {
  await handle?.stop();
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

describe("a run's schedule slot", () => {
  it("a run stuck past the next slot starts no further room, ends failed naming the slot, and the next run converges", async () => {
    const token = hs.registerUser(BOT);
    hs.registerUser(OP);
    hs.createRoom({ creator: OP, alias: "#mgmt:example.org", members: { [BOT]: "invite" } });
    const ids = ROOMS.map((alias) => hs.createRoom({ creator: BOT, alias }));
    await writeFile(join(dir, "directory.yaml"), "users: [alice]\ngroups:\n  - { id: staff, members: [alice] }\n");
    const path = join(dir, "config.yaml");
    await writeFile(
      path,
      `homeserver: { url: ${hs.url}, accessToken: ${token}, concurrency: 1, requestTimeoutMs: 5000 }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
${ROOMS.map((r) => `    - { room: "${r}", groups: [ { group: staff } ] }`).join("\n")}
serve:
  managementRoom: "#mgmt:example.org"
  schedule: "*/2 * * * * *"
  runAtStart: false
  shutdownTimeoutMs: 10000
log: { level: error }
`,
    );
    const loaded = loadConfig({ path, env: {}, cwd: dir });
    if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));

    // The first room's state read hangs until its 5 s deadline: well past the 2 s slot.
    hs.stallNext("state", 1, { apply: false });
    const reports: RunReport[] = [];
    let wake: (() => void) | undefined;
    handle = await startServe(loaded.config, {
      onRun: (r) => {
        reports.push(r);
        wake?.();
      },
    });
    const runs = async (n: number): Promise<void> => {
      while (reports.length < n) await new Promise<void>((resolve) => (wake = resolve));
    };

    await runs(1);
    const first = reports[0]!;
    expect(first.outcome).toBe("failed");
    expect(first.errors.join("\n")).toContain("the run reached its time limit (the next scheduled slot)");
    expect(first.rooms.flatMap((r) => r.actions)).toEqual([]);

    // The run queued behind it (the next slot) does the rest.
    await runs(2);
    expect(reports[1]!.outcome).toBe("ok");
    for (const id of ids) expect(hs.members(id)[ALICE]).toBe("invite");
  });
});
