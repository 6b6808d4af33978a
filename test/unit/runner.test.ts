import { describe, expect, it } from "vitest";
import { SerialRunner } from "../../src/service/runner.ts";

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

describe("SerialRunner", () => {
  it("never overlaps: a second request is queued once, a third is skipped", async () => {
    const runner = new SerialRunner<number>();
    const g = gate();
    let running = 0;
    let maxRunning = 0;
    const job = (n: number) => async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await g.promise;
      running--;
      return n;
    };
    const a = runner.request(job(1));
    const b = runner.request(job(2));
    const c = runner.request(job(3));
    expect([a.status, b.status, c.status]).toEqual(["started", "queued", "skipped"]);
    expect(runner.busy).toBe(true);
    g.open();
    expect(await a.done).toBe(1);
    expect(await b.done).toBe(2);
    expect(await c.done).toBeUndefined();
    expect(maxRunning).toBe(1);
    expect(runner.busy).toBe(false);
    expect(runner.request(job(4)).status).toBe("started");
  });

  it("a failed run does not block the next, and close() waits for the current run and drops the queued one", async () => {
    const runner = new SerialRunner<string>();
    const failing = runner.request(() => Promise.reject(new Error("boom")));
    await expect(failing.done).rejects.toThrow("boom");
    const g = gate();
    let finished = false;
    const first = runner.request(async () => {
      await g.promise;
      finished = true;
      return "first";
    });
    const queued = runner.request(() => Promise.resolve("never"));
    const closing = runner.close();
    expect(runner.request(() => Promise.resolve("late")).status).toBe("skipped");
    g.open();
    await closing;
    expect(finished).toBe(true);
    expect(await first.done).toBe("first");
    expect(await queued.done).toBeUndefined();
  });
});
