import { defineConfig } from "vitest/config";
import { ensureTestCa } from "./test/graph/test-ca.ts";

// @azure/identity insists on https, so the Graph stand-in serves https with a test CA.
// Node reads NODE_EXTRA_CA_CERTS once, at process start: set it here, before vitest starts
// its worker processes (the default "forks" pool; threads would not see it).
process.env["NODE_EXTRA_CA_CERTS"] = ensureTestCa().caFile;

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    // Every process a test starts dies with it (test/helpers/processes.ts).
    setupFiles: ["test/helpers/setup.ts"],
    // Hang guards, not expectations: on a loaded machine (load 15 on 2 cores) a test waits
    // for readiness signals for as long as it takes, and fails here only when stuck.
    testTimeout: 120_000,
    hookTimeout: 180_000,
    passWithNoTests: false,
  },
});
