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
    testTimeout: 60_000,
    hookTimeout: 120_000,
    passWithNoTests: false,
  },
});
