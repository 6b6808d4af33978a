/**
 * `import mas-token-bot`: the maubot plugin that manages Matrix Authentication Service
 * registration tokens (NataliaWoof/mas-token-bot, forked from yoxcu/maubot-token), its
 * `base-config.yaml`. A maubot plugin: no homeserver nor directory, both placeholders here.
 */
import { Builder, placeholderDirectory, placeholderToken, type Conversion, type ImportError, type SourceDoc, type Spec } from "./report.ts";

export const MAS_TOKEN_BOT_SPEC: Readonly<Record<string, Spec>> = {
  admin_api: "string",
  token_url: "string",
  client_id: "string",
  client_secret: "string",
  token_scope: "string",
  base_command: "string",
  default_uses_allowed: "int",
  default_expiry_time: "int",
  whitelist: { list: "string" },
  room_whitelist: { list: "string" },
  /** Older releases: a ready-made MAS admin token instead of client credentials. */
  access_token: "string",
};

const trimSlash = (s: string): string => s.replace(/\/+$/, "");

/** Seconds as our expiry text: the largest unit that divides them (604800 → 7d). */
function expiryText(seconds: number): string {
  for (const [unit, size] of [
    ["w", 604_800],
    ["d", 86_400],
    ["h", 3_600],
    ["m", 60],
  ] as const) {
    if (seconds % size === 0) return unit === "w" ? `${(seconds / size) * 7}d` : `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

export function convertMasTokenBot(src: SourceDoc, ctx: { directoryName: string }): { ok: true; value: Conversion } | { ok: false; errors: ImportError[] } {
  const errors = src.check(MAS_TOKEN_BOT_SPEC);
  if (errors.length > 0) return { ok: false, errors };
  const b = new Builder();
  const r = b.report;

  placeholderToken(b, "mas-token-bot runs inside maubot, which holds the bot's login: our config needs the bot's access token.");
  b.set(["homeserver", "url"], "https://replace-me.invalid");
  b.comment(["homeserver", "url"], " PLACEHOLDER: the client-server API URL of your homeserver (maubot knew it, the plugin config does not)");
  r.placeholders.push({ from: "(none)", to: "homeserver.url", note: "https://replace-me.invalid: the homeserver's client-server API URL (maubot's, not in the plugin config)." });

  b.set(["tokens", "backend"], "mas");
  const adminApi = src.str("admin_api");
  const tokenUrl = src.str("token_url");
  const fromAdmin = adminApi !== undefined ? /^(.*?)\/api\/admin(?:\/v1)?\/*$/.exec(adminApi)?.[1] : undefined;
  const fromToken = tokenUrl !== undefined ? /^(.*?)\/oauth2\/token\/*$/.exec(tokenUrl)?.[1] : undefined;
  const issuer = fromAdmin ?? fromToken;
  if (issuer === undefined) {
    errors.push(
      adminApi === undefined
        ? src.error(["admin_api"], "is missing or empty: the MAS admin API URL is needed")
        : src.error(["admin_api"], `cannot tell the MAS URL from "${adminApi}": ours calls <url>/api/admin/v1 and <url>/oauth2/token, so it should end in /api/admin`),
    );
  } else {
    b.set(["tokens", "mas", "url"], trimSlash(issuer), fromAdmin !== undefined ? ["admin_api"] : ["token_url"]);
    if (fromAdmin !== undefined) r.mapped.push({ from: "admin_api", to: "tokens.mas.url", note: `${trimSlash(issuer)} (ours adds /api/admin/v1)` });
    else r.changed.push({ from: "admin_api", to: "tokens.mas.url", note: `it does not end in /api/admin: the URL is taken from token_url; ours calls ${trimSlash(issuer)}/api/admin/v1` });
    if (tokenUrl !== undefined) {
      if (fromToken !== undefined && trimSlash(fromToken) === trimSlash(issuer)) r.mapped.push({ from: "token_url", to: "tokens.mas.url", note: "ours asks <url>/oauth2/token, the same" });
      else r.changed.push({ from: "token_url", to: "tokens.mas.url", note: `ours asks ${trimSlash(issuer)}/oauth2/token for tokens, not ${tokenUrl}` });
    }
  }
  const clientId = src.str("client_id");
  if (clientId === undefined) errors.push(src.error(["client_id"], "is missing or empty: the MAS admin client's id is needed (policy.data.admin_clients)"));
  else {
    b.set(["tokens", "mas", "clientId"], clientId, ["client_id"]);
    r.mapped.push({ from: "client_id", to: "tokens.mas.clientId" });
  }
  const secret = src.str("client_secret");
  if (secret === undefined) errors.push(src.error(["client_secret"], "is missing or empty: the MAS admin client's secret is needed"));
  else {
    b.secret({ name: "mas-client-secret", value: secret, parent: ["tokens", "mas"], key: "clientSecret", fileKey: "clientSecretFile", from: "client_secret" });
    r.mapped.push({ from: "client_secret", to: "tokens.mas.clientSecretFile", note: "written to its own file (mode 0600), not inline" });
  }
  if (src.get("access_token") !== undefined)
    r.ignored.push({ from: "access_token", note: "no equivalent (older releases): ours signs in with client_id/client_secret (client credentials); the token is not written anywhere" });

  const scope = src.str("token_scope");
  if (scope !== undefined) {
    if (scope === "urn:mas:admin") r.mapped.push({ from: "token_scope", to: "(built in)", note: "ours always asks for urn:mas:admin" });
    else r.changed.push({ from: "token_scope", to: "(built in)", note: `ours always asks for urn:mas:admin, not "${scope}"` });
  }
  const command = src.str("base_command");
  if (command !== undefined) {
    if (command === "token") r.mapped.push({ from: "base_command", to: "(built in)", note: "our command is !token too" });
    else if (/^[a-z][a-z0-9-]{0,31}$/.test(command)) {
      b.set(["tokens", "command"], command, ["base_command"]);
      r.mapped.push({ from: "base_command", to: "tokens.command", note: `!${command} list, !${command} create … in the rooms (the CLI keeps matrix-group-sync token …)` });
    } else r.changed.push({ from: "base_command", to: "(built in) !token", note: `"${command}" is not a command word we take (lowercase letters, digits and -): the command stays !token` });
  }

  const uses = src.get("default_uses_allowed");
  if (typeof uses === "number") {
    b.set(["tokens", "defaults", "uses"], uses < 0 ? null : uses, ["default_uses_allowed"]);
    if (uses < 0) r.changed.push({ from: "default_uses_allowed", to: "tokens.defaults.uses: null", note: "a negative number meant no limit: written as null (unlimited)" });
    else r.mapped.push({ from: "default_uses_allowed", to: "tokens.defaults.uses" });
  }
  const expiry = src.get("default_expiry_time");
  if (typeof expiry === "number") {
    if (expiry < 0) {
      b.set(["tokens", "defaults", "expiry"], "never", ["default_expiry_time"]);
      r.changed.push({ from: "default_expiry_time", to: "tokens.defaults.expiry: never", note: "a negative number meant no expiry" });
    } else if (expiry === 0) {
      b.set(["tokens", "defaults", "expiry"], "never", ["default_expiry_time"]);
      r.changed.push({ from: "default_expiry_time: 0", to: "tokens.defaults.expiry: never", note: "0 seconds made tokens that expire at once; ours refuses an expiry in the past, so it is written as never: choose one" });
    } else {
      const text = expiryText(expiry);
      b.set(["tokens", "defaults", "expiry"], text, ["default_expiry_time"]);
      r.mapped.push({ from: "default_expiry_time", to: "tokens.defaults.expiry", note: `${expiry} seconds → ${text}` });
    }
  }

  const allow: string[] = [];
  for (const key of ["whitelist", "room_whitelist"] as const) {
    const list = src.get(key);
    if (!Array.isArray(list)) continue;
    for (const [i, entry] of (list as string[]).entries()) {
      b.origins.set(`tokens.allow.${allow.length}`, [key, i]);
      allow.push(entry);
    }
    r.changed.push({
      from: key,
      to: "tokens.allow",
      note:
        (key === "whitelist" ? "user ids" : "room ids: anyone in the room (the bot joins it when serve starts)") +
        "; ours seeds the stored allow list from it (later changes: `token allow` / `token disallow`), and people in the management room (serve.managementRoom, not set here) may always use tokens",
    });
  }
  if (allow.length > 0) b.set(["tokens", "allow"], allow);
  const directory = placeholderDirectory(b, ctx.directoryName);

  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: b.done(directory) };
}
