/**
 * The command line as a surface of the one command table: `matrix-group-sync <command> …`.
 * Words and arguments are parsed by the same parser as the management room's messages (any
 * parameter may also be given by name, `--room X`); usage, `<command> --help` and `help`
 * come from the table; every command takes `--config FILE` and `--json`. The outcome is
 * printed as text (tables aligned) or JSON, and decides the exit code (exit-codes.ts).
 */
import type { App } from "../app.ts";
import { outcomeJson, type Capabilities, type CapabilityName, type Command, type Context, type Outcome, type Runs, type Terminal, type Tokens } from "./command.ts";
import { helpFor, helpText, usageLine } from "./help.ts";
import { parseCommandArgv } from "./parse.ts";
import { blocks, type Part } from "./render.ts";
import { CLI_OPTIONS, commandTable } from "./table.ts";
import { formatConfigError, loadConfig, type LoadedConfig } from "../config/load.ts";
import { EXIT_DEGRADED, EXIT_FAILURES, EXIT_OK, EXIT_REFUSED, EXIT_USAGE } from "../exit-codes.ts";
import type { RunReport } from "../reconcile/report.ts";
import type { DirectoryRequest } from "../idp/types.ts";
import type { TokenService } from "../tokens/service.ts";
import { botIdentity, directoryCapability, homeserverCapability } from "./capabilities.ts";

export type CliIo = Terminal;

const PROGRAM = "matrix-group-sync";
const PREFIX = `${PROGRAM} `;

/** Options every command takes, removed from argv before the command's own are parsed. */
interface Globals {
  config?: string;
  json: boolean;
  help: boolean;
}

function takeGlobals(argv: readonly string[]): { ok: true; globals: Globals; rest: string[] } | { ok: false; error: string } {
  const globals: Globals = { json: false, help: false };
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    if (a === "--json") globals.json = true;
    else if (a === "--help" || a === "-h") globals.help = true;
    else if (a === "--config" || a.startsWith("--config=")) {
      const value = a === "--config" ? argv[++i] : a.slice("--config=".length);
      if (value === undefined || value === "") return { ok: false, error: "--config needs a file" };
      globals.config = value;
    } else rest.push(a);
  }
  return { ok: true, globals, rest };
}

function text(parts: readonly Part[]): string {
  return blocks(parts).text;
}

const table = commandTable();
const onCli = (c: Command): boolean => c.surfaces.includes("cli");

function usageText(): string {
  return text([helpText(table, PREFIX, onCli), ...CLI_OPTIONS]);
}

export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const taken = takeGlobals(argv);
  if (!taken.ok) {
    io.err(`${taken.error}\n\n${usageText()}`);
    return EXIT_USAGE;
  }
  const { globals, rest } = taken;
  if (rest.length === 0) {
    (globals.help ? io.out : io.err)(usageText());
    return globals.help ? EXIT_OK : EXIT_USAGE;
  }
  const match = table.match(rest);
  if (match !== undefined && !onCli(match.command)) {
    io.err(`${match.command.name} is a management-room command (!${match.command.name}); it is not offered on the command line.\n\n${usageText()}`);
    return EXIT_USAGE;
  }
  if (globals.help && match !== undefined) {
    io.out(text([helpFor(table, match.command.name, PREFIX, onCli), ...CLI_OPTIONS]));
    return EXIT_OK;
  }
  const parsed = parseCommandArgv(table, rest, { prefix: PREFIX });
  switch (parsed.kind) {
    case "not-a-command":
      io.err(`unknown option or command: ${rest[0] ?? ""}\n\n${usageText()}`);
      return EXIT_USAGE;
    case "unknown":
      io.err(`unknown command: ${parsed.name}.${parsed.suggestion !== undefined ? ` Did you mean "${parsed.suggestion}"?` : ""}\n\n${usageText()}`);
      return EXIT_USAGE;
    case "usage-error":
      io.err(`${parsed.message}\nUsage: ${parsed.usage}\n(${PROGRAM} ${parsed.command.name} --help for the details)`);
      return EXIT_USAGE;
    case "ok":
      break;
  }
  const cmd = parsed.command;
  const opened = await capabilitiesFor(cmd, globals, io);
  if (!opened.ok) {
    io.err(opened.error);
    return opened.code;
  }
  try {
    const ctx: Context = {
      ...opened.caps,
      actor: "cli",
      surface: "cli",
      place: "cli",
      isOperator: true,
      prefix: PREFIX,
      table,
      say: (parts) => {
        io.err(text(parts));
        return Promise.resolve();
      },
      ack: () => Promise.resolve(),
      progress: (n, total, what) => {
        // Padded: the line may have shown the longer directory progress before.
        if (io.interactive && !globals.json) io.err(`\r${`${what} ${n}/${total}`.padEnd(48)}${n >= total ? "\n" : ""}`);
      },
    };
    const outcome = await cmd.run(ctx, parsed.args);
    print(outcome, globals.json, io);
    if (outcome.status === "usage" && !globals.json) io.err(`Usage: ${usageLine(cmd, PREFIX)}\n(${PROGRAM} ${cmd.name} --help for the details)`);
    return exitCode(outcome);
  } finally {
    await opened.close();
  }
}

function print(outcome: Outcome, json: boolean, io: CliIo): void {
  if (json) {
    io.out(JSON.stringify(outcomeJson(outcome), null, 2));
    return;
  }
  const shown = outcome.text ?? text(outcome.parts);
  if (shown === "") return;
  (outcome.status === "refused" || outcome.status === "usage" ? io.err : io.out)(shown);
}

export function exitCode(outcome: Outcome): number {
  switch (outcome.status) {
    case "ok":
      return EXIT_OK;
    case "degraded":
      return EXIT_DEGRADED;
    case "refused":
      return EXIT_REFUSED;
    case "usage":
      return EXIT_USAGE;
    case "failed":
      return EXIT_FAILURES;
  }
}

/** Capabilities that need the wired app (database, homeserver, directory). */
const NEEDS_APP: ReadonlySet<CapabilityName> = new Set(["store", "clock", "runs", "directory", "homeserver", "tokens"]);

type Opened = { ok: true; caps: Capabilities; close: () => Promise<void> } | { ok: false; error: string; code: number };

/**
 * Only what the command names: `help` and `import` read no config, `check-config` opens no
 * database, the rest open the app once. A capability the command did not name is absent.
 */
async function capabilitiesFor(cmd: Command, globals: Globals, io: CliIo): Promise<Opened> {
  const uses = new Set(cmd.uses);
  const caps: Partial<Record<CapabilityName, unknown>> = {};
  if (uses.has("terminal")) caps.terminal = io;
  const needsApp = [...uses].some((u) => NEEDS_APP.has(u));
  if (!uses.has("config") && !uses.has("loaded") && !needsApp) return { ok: true, caps: caps as Capabilities, close: () => Promise.resolve() };

  const loaded = loadConfig({ ...(globals.config !== undefined ? { path: globals.config } : {}), env: io.env, cwd: io.cwd });
  if (!loaded.ok) return { ok: false, error: `The config is not valid:\n${loaded.errors.map((e) => `  ${formatConfigError(e)}`).join("\n")}`, code: EXIT_USAGE };
  caps.config = loaded.config;
  caps.loaded = loaded satisfies LoadedConfig;
  if (!needsApp) return { ok: true, caps: caps as Capabilities, close: () => Promise.resolve() };

  // Loaded on demand: help and check-config do not pay for the homeserver and database clients.
  const { openApp } = await import("../app.ts");
  // On a terminal, the directory read shows its progress too (LDAP pages, Graph requests).
  let directoryRequests = 0;
  const showProgress = io.interactive && !globals.json;
  const onDirectoryRequest = showProgress
    ? (r: DirectoryRequest): void => {
        directoryRequests++;
        io.err(`\rreading the directory (${r.provider}): ${directoryRequests} request(s)`);
      }
    : undefined;
  const opened = await openApp(loaded.config, { interactive: io.interactive, json: globals.json, onDirectoryRequest });
  if (!opened.ok) return { ok: false, error: opened.error.message, code: EXIT_FAILURES };
  const app = opened.value;
  let tokenService: TokenService | undefined;
  const close = async (): Promise<void> => {
    // The CLI's MAS access token is revoked at exit (a no-op for Synapse).
    await tokenService?.close();
    await app.close();
  };
  const bot = botIdentity(app);
  caps.store = app.store;
  caps.clock = app.clock;
  caps.directory = directoryCapability(app, loaded.config, bot);
  if (uses.has("runs")) caps.runs = await cliRuns(app, loaded.config);
  if (uses.has("homeserver")) {
    const me = await bot();
    if (!me.ok) {
      await close();
      return { ok: false, error: `cannot start: ${me.error.message}`, code: EXIT_FAILURES };
    }
    caps.homeserver = homeserverCapability(app, me.value);
  }
  if (uses.has("tokens")) {
    const { createTokenService } = await import("../tokens/service.ts");
    const tokens = createTokenService(loaded.config, app.store, app.clock, app.log, app.accessToken);
    tokenService = tokens.ok ? tokens.value : undefined;
    caps.tokens = { service: tokenService, managementRoomId: undefined } satisfies Tokens;
  }
  return { ok: true, caps: caps as Capabilities, close };
}

/** A run from the terminal: at once (nothing else runs here), with progress on a terminal. */
async function cliRuns(app: App, config: LoadedConfig["config"]): Promise<Runs> {
  const { runSync, withTimeLimit } = await import("../reconcile/run.ts");
  const { settingsFrom } = await import("../app.ts");
  const { pruneHistory } = await import("../store/retention.ts");
  return {
    busy: false,
    request(opts) {
      const limit = config.sync.maxRunMs !== undefined ? withTimeLimit(config.sync.maxRunMs, `sync.maxRunMs ${config.sync.maxRunMs} ms`) : undefined;
      const progress = opts.progress;
      const done: Promise<RunReport | undefined> = runSync({ ...app, ...(progress ? { progress } : {}) }, settingsFrom(config), {
        dryRun: opts.dryRun,
        trigger: "cli",
        ...(opts.rooms && opts.rooms.length > 0 ? { rooms: opts.rooms } : {}),
        ...(limit ? { signal: limit.signal } : {}),
      })
        .then(async (report) => {
          // Syncs from cron keep the history within retention as serve does.
          const pruned = await pruneHistory(app.store, config.retention, app.clock.now());
          if (!pruned.ok) app.log.child("retention").warn("pruning the history failed", { error: pruned.error.message });
          return report;
        })
        .finally(() => limit?.clear());
      return { status: "started", done };
    },
  };
}

