/**
 * Runs before every test file (vitest.config.ts setupFiles). When the file ends, every process
 * its tests started and left running is stopped (test/helpers/processes.ts), and any other
 * child of this worker (started with a plain child_process call) is killed and named.
 */
import { afterAll } from "vitest";
import { killStrayChildren, stopAllProcesses } from "./processes.ts";

afterAll(async () => {
  await stopAllProcesses();
  const stray = killStrayChildren();
  if (stray.length > 0) {
    console.warn(`killed ${stray.length} process(es) this test file left running (start them with test/helpers/processes.ts):\n  ${stray.join("\n  ")}`);
  }
});
