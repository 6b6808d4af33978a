/** The commands only the terminal offers: check-config, migrate, serve, crypto-reset. */
import { redactConfig } from "../config/redact.ts";
import { command, done, refused, type Command } from "./command.ts";
import { code, paragraph } from "./render.ts";

export const checkConfigCommand: Command = command({
  name: "check-config",
  summary: "Validate the config and print it with secrets redacted, and where each value comes from",
  params: [],
  permission: "operator",
  surfaces: ["cli"],
  uses: ["loaded"],
  // eslint-disable-next-line @typescript-eslint/require-await -- the table's executors are async
  async run(ctx) {
    const loaded = ctx.loaded;
    const width = Math.max(...loaded.sources.map((s) => s.key.length));
    const lines = [
      `Config ${loaded.path} is valid. Effective config (secrets redacted):`,
      JSON.stringify(redactConfig(loaded.config), null, 2),
      `Where each value comes from (the file, an environment variable, or the default):`,
      loaded.sources.map((s) => `  ${s.key.padEnd(width)}  ${s.source}`).join("\n"),
      loaded.overrides.length === 0
        ? "No environment variable overrides the file."
        : `Taken from the environment instead of the file:\n${loaded.overrides.map((o) => `  ${o.path} ← ${o.env}`).join("\n")}`,
      ...(loaded.unused.length > 0 ? [`Set but not used by this config:\n${loaded.unused.map((u) => `  ${u.env} (for ${u.key})`).join("\n")}`] : []),
    ];
    return {
      ...done(paragraph(`Config ${loaded.path} is valid.`)),
      text: lines.join("\n"),
      data: { path: loaded.path, config: redactConfig(loaded.config), sources: loaded.sources, overrides: loaded.overrides, unused: loaded.unused },
    };
  },
});

export const migrateCommand: Command = command({
  name: "migrate",
  summary: "Create or upgrade the database tables",
  description: "Opening the store applies every migration not yet applied; this command does only that.",
  params: [],
  permission: "operator",
  surfaces: ["cli"],
  uses: ["store"],
  // eslint-disable-next-line @typescript-eslint/require-await -- the table's executors are async
  async run(ctx) {
    return done(paragraph(`Database (${ctx.store.engine}) is up to date.`), { engine: ctx.store.engine, upToDate: true });
  },
});

export const serveCommand: Command = command({
  name: "serve",
  summary: "Run as a service: sync on the schedule, take commands in the management room",
  description: "Runs until SIGTERM or SIGINT (the action under way finishes first). Needs a serve section in the config.",
  params: [],
  permission: "operator",
  surfaces: ["cli"],
  uses: ["config", "terminal"],
  async run(ctx) {
    // Loaded on demand: the other commands do not pay for the service's modules.
    const code = await (await import("../serve-process.ts")).serveUntilSignal(ctx.config, ctx.terminal);
    return { status: code === 0 ? "ok" : "failed", parts: [] };
  },
});

export const cryptoResetCommand: Command = command({
  name: "crypto-reset",
  summary: "Forget the bot's end-to-end encryption keys (after losing serve.encryption.storeKey, or a device change)",
  description:
    "Deletes the crypto state from the store. Stop the service first. The next serve must then run as a new device: " +
    "give it an access token of a new login (the old device's keys stay on the homeserver until that device is deleted). " +
    "Members see a new, unverified device of the bot; messages encrypted for the old device cannot be read.",
  params: [],
  flags: [{ name: "yes", description: "really delete the keys" }],
  permission: "operator",
  surfaces: ["cli"],
  uses: ["store"],
  async run(ctx, args) {
    if (!args.yes) return refused("This deletes the bot's end-to-end encryption keys; run it again with ", code("--yes"), " to go ahead.");
    const deleted = await ctx.store.deleteCryptoState();
    return done(
      paragraph(deleted === 0 ? "There were no end-to-end encryption keys in the store." : `Deleted the end-to-end encryption state (${deleted} record(s)). Start serve with an access token of a new device.`),
      { deleted },
    );
  },
});
