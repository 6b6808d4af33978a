#!/usr/bin/env node
// Entry point for the `matrix-group-sync` command. The sources are TypeScript, run through
// tsx (registered here), so no build step is needed.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/main.ts");
await main();
