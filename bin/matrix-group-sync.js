#!/usr/bin/env node
// Entry point for the `matrix-group-sync` command. The sources are TypeScript and are run
// through tsx, which is registered here so no build step is needed.
import { register } from "tsx/esm/api";
import { fileURLToPath } from "node:url";

register();
const main = fileURLToPath(new URL("../src/main.ts", import.meta.url));
await import(main);
