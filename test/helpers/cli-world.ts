/**
 * A world for driving `matrix-group-sync` from the outside: the test homeserver, a static
 * directory file, an embedded PGlite data folder and config files in a temp folder, and
 * `runCli` with captured output. Nothing of ours is mocked: each call is one CLI run.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli, type CliIo } from "../../src/main.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import type { Store } from "../../src/store/store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";

export interface CliResult {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** One CLI run in `cwd`, with no environment (MGS_CONFIG unset): what it printed and its exit code. */
export async function runIn(cwd: string, args: readonly string[]): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: (t) => err.push(t), env: {}, cwd, interactive: false };
  const code = await runCli(args, io);
  return { code, out: out.join("\n"), err: err.join("\n") };
}

export interface CliWorld {
  readonly dir: string;
  readonly hs: FakeHomeserver;
  readonly botToken: string;
  /** Writes a config file into the world's folder; its path. */
  config(name: string, body: string): Promise<string>;
  /** Writes a file into the world's folder; its path. */
  file(name: string, body: string): Promise<string>;
  /** `matrix-group-sync ARGS --config CONFIG`. */
  cli(config: string, args: readonly string[]): Promise<CliResult>;
  /** Opens the data folder's store (the CLI closes it after every command), runs `fn`, closes it. */
  withStore<T>(dataDir: string, fn: (store: Store) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export async function startCliWorld(opts: { bot: string; serverName: string; admin?: boolean }): Promise<CliWorld> {
  const dir = await mkdtemp(join(tmpdir(), "mgs-cli-surface-"));
  let hs: FakeHomeserver;
  try {
    hs = await FakeHomeserver.start({ serverName: opts.serverName });
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  const botToken = hs.registerUser(opts.bot, undefined, { admin: opts.admin ?? false });
  const file = async (name: string, body: string): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, body);
    return path;
  };
  return {
    dir,
    hs,
    botToken,
    config: file,
    file,
    cli: (config, args) => runIn(dir, [...args, "--config", config]),
    async withStore(dataDir, fn) {
      const store = await openStore({ dataDir: join(dir, dataDir) });
      try {
        return await fn(store);
      } finally {
        await store.close();
      }
    },
    async close() {
      try {
        await hs.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}
