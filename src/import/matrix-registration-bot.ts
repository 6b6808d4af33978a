/**
 * `import matrix-registration-bot`: moan0s/matrix-registration-bot's `config.yml` (a Synapse
 * registration-token bot). It has no directory: the idp is a marked static placeholder.
 */
import { Builder, placeholderDirectory, placeholderToken, type Conversion, type ImportError, type SourceDoc, type Spec } from "./report.ts";

export const MATRIX_REGISTRATION_BOT_SPEC: Readonly<Record<string, Spec>> = {
  bot: { obj: { server: "string", username: "string", password: "string", access_token: "string", prefix: "string" } },
  api: { obj: { base_url: "string", endpoint: "string", token: "string" } },
  logging: { obj: { level: "string" } },
};

const SYNAPSE_ENDPOINT = "/_synapse/admin/v1/registration_tokens";

const trimSlash = (s: string): string => s.replace(/\/+$/, "");

export function convertMatrixRegistrationBot(src: SourceDoc, ctx: { directoryName: string }): { ok: true; value: Conversion } | { ok: false; errors: ImportError[] } {
  const errors = src.check(MATRIX_REGISTRATION_BOT_SPEC);
  if (errors.length > 0) return { ok: false, errors };
  const b = new Builder();
  const r = b.report;

  const server = src.str("bot", "server");
  if (server === undefined) errors.push(src.error(["bot", "server"], "is missing or empty: the homeserver URL is needed"));
  else {
    b.set(["homeserver", "url"], trimSlash(server), ["bot", "server"]);
    r.mapped.push({ from: "bot.server", to: "homeserver.url" });
  }
  const token = src.str("bot", "access_token");
  if (token !== undefined) {
    b.secret({ name: "homeserver-access-token", value: token, parent: ["homeserver"], key: "accessToken", fileKey: "accessTokenFile", from: "bot.access_token" });
    r.mapped.push({ from: "bot.access_token", to: "homeserver.accessTokenFile", note: "written to its own file (mode 0600), not inline" });
  } else {
    placeholderToken(b, "the source has no bot.access_token (we do not log in with a password).");
  }
  if (src.get("bot", "password") !== undefined)
    r.ignored.push({ from: "bot.password", note: "no equivalent: we use an access token, never a password (log in once as the bot and take its token); the password is not written anywhere" });
  if (src.get("bot", "username") !== undefined)
    r.ignored.push({ from: "bot.username", note: "no equivalent: the bot's id comes from its access token" });
  if (src.get("bot", "prefix") !== undefined)
    r.ignored.push({ from: "bot.prefix", note: "no equivalent: our commands are `!token …` (serve.commandPrefix) in the management room, and `matrix-group-sync token …` on the CLI" });

  b.set(["tokens", "backend"], "synapse");
  const adminToken = src.str("api", "token");
  if (adminToken !== undefined) {
    b.secret({ name: "synapse-admin-token", value: adminToken, parent: ["tokens", "synapse"], key: "accessToken", fileKey: "accessTokenFile", from: "api.token" });
    r.mapped.push({ from: "api.token", to: "tokens.synapse.accessTokenFile", note: "written to its own file (mode 0600), not inline" });
  } else {
    r.changed.push({ from: "api.token (absent)", to: "tokens.synapse", note: "the admin API is called with homeserver.accessToken: the bot must then be a server admin" });
  }
  const baseUrl = src.str("api", "base_url");
  if (baseUrl !== undefined) {
    if (server !== undefined && trimSlash(baseUrl) === trimSlash(server)) r.mapped.push({ from: "api.base_url", to: "homeserver.url", note: "the same server: our admin API calls go to homeserver.url" });
    else
      r.changed.push({
        from: "api.base_url",
        to: "homeserver.url",
        note: `it differs from bot.server: ours calls the admin API at homeserver.url (${server ?? "?"}), not at ${trimSlash(baseUrl)}; make sure /_synapse/admin is reachable there`,
      });
  }
  const endpoint = src.str("api", "endpoint");
  if (endpoint !== undefined) {
    if (trimSlash(endpoint) === SYNAPSE_ENDPOINT) r.mapped.push({ from: "api.endpoint", to: "(built in)", note: `${SYNAPSE_ENDPOINT} is what ours calls` });
    else r.changed.push({ from: "api.endpoint", to: "(built in)", note: `ours always calls ${SYNAPSE_ENDPOINT}, not ${endpoint}` });
  }

  const level = src.str("logging", "level");
  if (level !== undefined) {
    const lower = level.toLowerCase();
    if (lower === "debug" || lower === "error" || lower === "info") {
      b.set(["log", "level"], lower, ["logging", "level"]);
      r.mapped.push({ from: "logging.level", to: "log.level" });
    } else {
      b.set(["log", "level"], "info");
      r.changed.push({ from: "logging.level", to: "log.level: info", note: `the bot took "${level}" as info (it knows debug, error, and info for anything else); ours has trace, debug, info, warn, error` });
    }
  } else {
    r.changed.push({ from: "logging.level (absent)", to: "log.level (default info)", note: "the bot logged errors only by default; ours logs info" });
  }

  r.changed.push({
    from: "(built in) anyone who messages the bot",
    to: "tokens.allow / serve.managementRoom",
    note: "our token commands answer in the management room (serve.managementRoom, not set here: add it to use !token in a room) and to users or rooms on tokens.allow; the CLI (`matrix-group-sync token …`) needs neither",
  });
  r.changed.push({ from: "(built in) !create: one use, seven days", to: "tokens.defaults (default uses 1, expiry 7d)", note: "the same defaults; `token create [uses] [expiry]` takes others" });
  const directory = placeholderDirectory(b, ctx.directoryName);

  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: b.done(directory) };
}
