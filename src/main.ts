/**
 * CLI entry: `matrix-group-sync <command>`. Everything is wired by hand here and in app.ts.
 * Exit codes (exit-codes.ts): 0 done, 1 the run had failures, 2 bad usage or config, 3 degraded
 * (a mapped group was incomplete or missing).
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { EXIT_DEGRADED, EXIT_FAILURES, EXIT_OK, EXIT_USAGE } from "./exit-codes.ts";
import { formatConfigError, loadConfig } from "./config/load.ts";
import { redactConfig } from "./config/redact.ts";
import type { Config } from "./config/schema.ts";
import { describeError } from "./result.ts";
import { serverNameOf } from "./matrix/ids.ts";
import { directoryText, listDirectory, readDirectory } from "./reconcile/directory.ts";
import { runSync, withTimeLimit } from "./reconcile/run.ts";
import { helpFor, helpText } from "./commands/help.ts";
import { parseCommandLine } from "./commands/parse.ts";
import type { Part } from "./commands/render.ts";
import { CommandTable } from "./commands/spec.ts";
import { tokenCommands, type TokenContext } from "./commands/token-commands.ts";
import { createTokenService } from "./tokens/service.ts";
import { toJson, toText } from "./reconcile/report.ts";

export { EXIT_DEGRADED, EXIT_FAILURES, EXIT_OK, EXIT_USAGE } from "./exit-codes.ts";

export interface CliIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  /** True when stderr is a terminal: progress is shown there. */
  readonly interactive: boolean;
}

const USAGE = `Usage: matrix-group-sync <command> [options]

Commands:
  serve           Run as a service: sync on the schedule, take commands in the management room
  sync            Sync every managed room with the directory (or only --room ROOM)
  idp             List the rooms and members the directory defines, with roles and group paths
  token ...       Registration tokens: list, show, create, update, delete, delete-all,
                  unrevoke, allow, disallow, allowed (matrix-group-sync token help)
  check-config    Validate the config and print it with secrets redacted
  import KIND FILE [--out FILE] [--force]
                  Turn another bot's config into ours (no config needed); the kinds:
                  matrix-group-sync import --help
  migrate         Create or upgrade the database tables
  help            Show this text

Options:
  --config FILE   Config file (default: $MGS_CONFIG)
  --dry-run       sync: plan and report, change nothing
  --json          sync, idp: print JSON (no progress output)
  --room ROOM     sync, idp: only this room (as configured; sync also takes its id); repeatable

Exit codes: 0 done, 1 the run had failures, 2 bad usage or config,
3 degraded (sync: a mapped group was incomplete or missing; no removals in its rooms).`;

export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  if (argv[0] === "token") return runTokenCli(argv.slice(1), io);
  if (argv[0] === "import") return (await import("./import/cli.ts")).runImportCli(argv.slice(1), io);
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: "string" },
        "dry-run": { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        room: { type: "string", multiple: true },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (err) {
    io.err(`${describeError(err)}\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  const [command, ...rest] = parsed.positionals;
  if (parsed.values.help || command === "help" || command === undefined) {
    (command === undefined && !parsed.values.help ? io.err : io.out)(USAGE);
    return command === undefined && !parsed.values.help ? EXIT_USAGE : EXIT_OK;
  }
  if (rest.length > 0) {
    io.err(`unexpected argument: ${rest.join(" ")}\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (command !== "sync" && parsed.values["dry-run"]) {
    io.err(`--dry-run goes with sync only\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (!["sync", "idp"].includes(command) && (parsed.values.json || (parsed.values.room?.length ?? 0) > 0)) {
    io.err(`--json and --room go with sync and idp only\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (!["serve", "sync", "idp", "check-config", "migrate"].includes(command)) {
    io.err(`unknown command: ${command}\n\n${USAGE}`);
    return EXIT_USAGE;
  }

  const loaded = loadConfig({ ...(parsed.values.config !== undefined ? { path: parsed.values.config } : {}), env: io.env, cwd: io.cwd });
  if (!loaded.ok) {
    io.err(`The config is not valid:\n${loaded.errors.map((e) => `  ${formatConfigError(e)}`).join("\n")}`);
    return EXIT_USAGE;
  }
  const config: Config = loaded.config;

  if (command === "check-config") {
    io.out(`Config ${loaded.path} is valid. Effective config (secrets redacted):`);
    io.out(JSON.stringify(redactConfig(config), null, 2));
    const width = Math.max(...loaded.sources.map((s) => s.key.length));
    io.out(`Where each value comes from (the file, an environment variable, or the default):`);
    io.out(loaded.sources.map((s) => `  ${s.key.padEnd(width)}  ${s.source}`).join("\n"));
    io.out(
      loaded.overrides.length === 0
        ? "No environment variable overrides the file."
        : `Taken from the environment instead of the file:\n${loaded.overrides.map((o) => `  ${o.path} ← ${o.env}`).join("\n")}`,
    );
    if (loaded.unused.length > 0) {
      io.out(`Set but not used by this config:\n${loaded.unused.map((u) => `  ${u.env} (for ${u.key})`).join("\n")}`);
    }
    return EXIT_OK;
  }

  // Loaded on demand: check-config and --help do not pay for the homeserver and database clients.
  if (command === "serve") return (await import("./serve-process.ts")).serveUntilSignal(config, io);
  const { openApp, settingsFrom } = await import("./app.ts");

  const app = await openApp(config, { interactive: io.interactive, json: parsed.values.json });
  if (!app.ok) {
    io.err(app.error.message);
    return EXIT_FAILURES;
  }
  try {
    if (command === "migrate") {
      io.out(`Database (${app.value.store.engine}) is up to date.`);
      return EXIT_OK;
    }
    if (command === "idp") {
      let server = config.users.domain;
      if (server === undefined) {
        const me = await app.value.gateway.whoami();
        if (!me.ok) {
          io.err(`cannot tell the server name for Matrix ids (set users.domain, or make the homeserver reachable): ${me.error.message}`);
          return EXIT_FAILURES;
        }
        server = serverNameOf(me.value);
      }
      const state = await readDirectory(app.value.idp, settingsFrom(config), server);
      if (!state.ok) {
        io.err(state.error.message);
        return EXIT_FAILURES;
      }
      const listing = listDirectory(state.value, parsed.values.room);
      io.out(parsed.values.json ? JSON.stringify(listing, null, 2) : directoryText(listing));
      return EXIT_OK;
    }
    const progress =
      io.interactive && !parsed.values.json
        ? (done: number, total: number) => io.err(`\rrooms ${done}/${total}${done === total ? "\n" : ""}`)
        : undefined;
    const limit = config.sync.maxRunMs !== undefined ? withTimeLimit(config.sync.maxRunMs, `sync.maxRunMs ${config.sync.maxRunMs} ms`) : undefined;
    const report = await runSync(
      { ...app.value, ...(progress ? { progress } : {}) },
      settingsFrom(config),
      {
        dryRun: parsed.values["dry-run"],
        trigger: "cli",
        ...(parsed.values.room ? { rooms: parsed.values.room } : {}),
        ...(limit ? { signal: limit.signal } : {}),
      },
    ).finally(() => limit?.clear());
    io.out(parsed.values.json ? toJson(report) : toText(report));
    return report.outcome === "ok" ? EXIT_OK : report.outcome === "degraded" ? EXIT_DEGRADED : EXIT_FAILURES;
  } finally {
    await app.value.close();
  }
}

/**
 * `matrix-group-sync token <words…> [--config FILE]`: the same token commands, words and
 * checks as `!token …` in the management room, run as the operator ("cli").
 */
async function runTokenCli(args: readonly string[], io: CliIo): Promise<number> {
  const words: string[] = [];
  let configPath: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === "--config") {
      configPath = args[++i];
      if (configPath === undefined) {
        io.err("--config needs a file");
        return EXIT_USAGE;
      }
    } else if (a.startsWith("--config=")) configPath = a.slice("--config=".length);
    else words.push(a);
  }
  const table = new CommandTable<TokenContext, Part[]>(tokenCommands);
  if (words.length === 0 || words[0] === "help") {
    io.out(words.length > 1 ? helpFor(table, `token ${words.slice(1).join(" ")}`, "").text : helpText(table, "").text);
    return words.length === 0 ? EXIT_USAGE : EXIT_OK;
  }
  const line = `!token ${words.map((w) => (/[\s"'\\]/.test(w) || w === "" ? `"${w.replace(/["\\]/g, "\\$&")}"` : w)).join(" ")}`;
  const parsedLine = parseCommandLine(table, line, { prefix: "!" });
  if (parsedLine.kind === "unknown" || parsedLine.kind === "not-a-command") {
    const hint = parsedLine.kind === "unknown" && parsedLine.suggestion !== undefined ? ` Did you mean "${parsedLine.suggestion}"?` : "";
    io.err(`unknown token command: ${words.join(" ")}.${hint}\n\n${helpText(table, "").text}`);
    return EXIT_USAGE;
  }
  if (parsedLine.kind === "usage-error") {
    io.err(`${parsedLine.message}\nUsage: matrix-group-sync ${parsedLine.usage.slice(1)}`);
    return EXIT_USAGE;
  }
  const loaded = loadConfig({ ...(configPath !== undefined ? { path: configPath } : {}), env: io.env, cwd: io.cwd });
  if (!loaded.ok) {
    io.err(`The config is not valid:\n${loaded.errors.map((e) => `  ${formatConfigError(e)}`).join("\n")}`);
    return EXIT_USAGE;
  }
  const { openApp } = await import("./app.ts");
  const app = await openApp(loaded.config, { interactive: io.interactive, json: false });
  if (!app.ok) {
    io.err(app.error.message);
    return EXIT_FAILURES;
  }
  try {
    const tokens = createTokenService(loaded.config, app.value.store, app.value.clock, app.value.log);
    if (!tokens.ok) {
      io.err(tokens.error.message);
      return EXIT_USAGE;
    }
    const reply = await parsedLine.command.run(
      { actor: "cli", place: "cli", tokens: tokens.value, managementRoomId: undefined, isOperator: true },
      parsedLine.args,
    );
    io.out(reply.map((p) => p.text).join("\n"));
    return reply.some((p) => p.failed === true) ? EXIT_FAILURES : EXIT_OK;
  } finally {
    await app.value.close();
  }
}

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
