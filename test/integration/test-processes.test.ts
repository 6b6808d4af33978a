/**
 * The test process registry (test/helpers/processes.ts): a process a test starts dies with
 * that test whatever the outcome (passed, failed, timed out), its children with it, and with
 * the test worker however the worker ends (SIGTERM as vitest stops it, or SIGKILL).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HANG_GUARD_MS, startProcess } from "../helpers/processes.ts";
import { waitUntil } from "../helpers/wait.ts";

/** Gone: no such process, or a zombie waiting for its new parent to reap it (it runs no more). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-processes-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("processes started by tests", () => {
  const pids: Record<string, number> = {};

  it.fails("(a test that fails, on purpose, with a process running)", () => {
    pids["failed"] = startProcess("sleep", ["1000"]).pid;
    expect(gone(pids["failed"])).toBe(false);
    throw new Error("this test fails on purpose");
  });

  it.fails("(a test that times out, on purpose, with a process running)", { timeout: 500 }, async () => {
    pids["timed out"] = startProcess("sleep", ["1000"]).pid;
    await new Promise(() => undefined);
  });

  it("are gone once the test that started them has failed or timed out", () => {
    expect(Object.keys(pids)).toEqual(["failed", "timed out"]);
    for (const [how, pid] of Object.entries(pids)) expect(gone(pid), how).toBe(true);
  });

  it("are stopped with their own children (the process group)", async () => {
    const p = startProcess("sh", ["-c", "sleep 1000 & echo $!; wait"]);
    const grandchild = Number(await p.waitForLine(/^\d+$/, { stream: "stdout" }));
    expect(gone(grandchild)).toBe(false);
    const exit = await p.stop();
    expect(exit.signal).toBe("SIGTERM");
    await waitUntil("the grandchild is gone", () => gone(grandchild));
  });

  it("a wait for a readiness line fails at once when the process exits first, with its output", async () => {
    const p = startProcess("sh", ["-c", "echo starting >&2; echo 'cannot start: port taken' >&2; exit 3"]);
    const started = Date.now();
    await expect(p.waitForLine("is serving")).rejects.toThrow(/exited \(code 3\) before a line matching is serving on stderr[\s\S]*cannot start: port taken/);
    expect(Date.now() - started).toBeLessThan(HANG_GUARD_MS);
  });

  for (const death of ["SIGTERM", "SIGKILL"] as const) {
    it(`die with the test worker when it ends by ${death}`, { timeout: 2 * HANG_GUARD_MS }, async () => {
      // A stand-in for a test worker: it starts a process through the registry, says its pid,
      // then ends by `death` (vitest stops a worker with SIGTERM, SIGKILL 0.5 s later).
      const script = join(dir, `worker-${death}.mts`);
      await writeFile(
        script,
        `import { startProcess } from ${JSON.stringify(join(import.meta.dirname, "../helpers/processes.ts"))};
const p = startProcess("sleep", ["1000"]);
console.log(p.pid);
setTimeout(() => process.kill(process.pid, ${JSON.stringify(death)}), 100);
setInterval(() => undefined, 1000);
`,
      );
      const worker = startProcess(process.execPath, ["--import", "tsx", script], { cwd: join(import.meta.dirname, "../.."), name: "worker" });
      const orphan = Number(await worker.waitForLine(/^\d+$/, { stream: "stdout" }));
      const exit = await worker.exit;
      expect(exit.signal, worker.stderr()).toBe(death);
      await waitUntil(`the worker's process (${orphan}) is gone`, () => gone(orphan), () => worker.tail());
    });
  }
});
