#!/usr/bin/env node
// Entry point for the `matrix-group-sync` command. The sources are TypeScript, run through
// tsx (registered here), so no build step is needed.
import { register } from "tsx/esm/api";

// Node's own warnings (a dependency's deprecated API on Node 22+) would be bare text lines in
// a JSON log stream: they are written as JSON lines too, at level warn, logger "mgs.node".
// A deprecation raised by a dependency's own code (its first stack frame under node_modules,
// such as matrix-bot-sdk's htmlencode calling util._extend on Node 22+) is not the operator's to
// act on and would greet every start: it is written only with --trace-deprecation.
const fromDependency = (warning) => {
  const frame = (warning.stack ?? "").split("\n").find((line) => line.trimStart().startsWith("at "));
  return frame !== undefined && /[\\/]node_modules[\\/]/.test(frame);
};
process.removeAllListeners("warning");
process.on("warning", (warning) => {
  if (warning.name === "DeprecationWarning" && fromDependency(warning) && !process.traceDeprecation) return;
  const line = { level: "warn", time: new Date().toISOString(), logger: "mgs.node", name: warning.name, code: warning.code, detail: warning.message, msg: "node warning" };
  process.stderr.write(JSON.stringify(line) + "\n");
});

register();
const { main } = await import("../src/main.ts");
await main();
