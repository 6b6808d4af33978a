/**
 * CLI entry: `matrix-group-sync <command>`. The commands, their usage and help come from the
 * one command table (commands/table.ts); the terminal surface (commands/terminal.ts) parses,
 * runs and prints them. Exit codes: exit-codes.ts.
 */
import { fileURLToPath } from "node:url";
import { runCli } from "./commands/terminal.ts";

export { runCli, type CliIo } from "./commands/terminal.ts";
export { EXIT_DEGRADED, EXIT_FAILURES, EXIT_OK, EXIT_REFUSED, EXIT_USAGE } from "./exit-codes.ts";

// Run when executed directly (through bin/matrix-group-sync.js or `tsx src/main.ts`).
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await main();
}

export async function main(): Promise<void> {
  const code = await runCli(process.argv.slice(2), {
    out: (t) => process.stdout.write(t + "\n"),
    err: (t) => process.stderr.write(t.endsWith("\n") || t.startsWith("\r") ? t : t + "\n"),
    env: process.env,
    cwd: process.cwd(),
    interactive: process.stderr.isTTY,
  });
  process.exitCode = code;
  // The service's HTTP keep-alive sockets could hold the process open after a clean stop.
  if (process.argv.slice(2).includes("serve")) process.exit(code);
}
