/**
 * Registration tokens as the commands see them: the configured backend, the audit trail,
 * the token allow list, and the defaults. Shared by the management room and the CLI.
 */
import { createHash } from "node:crypto";
import type { Clock } from "../clock.ts";
import { decodeDuration } from "../commands/parse.ts";
import type { Duration } from "../commands/spec.ts";
import type { Config, TokensConfig } from "../config/schema.ts";
import type { Logger } from "../log.ts";
import { fail, ok, type Result } from "../result.ts";
import { tryUserIdPattern } from "../matrix/ids.ts";
import type { Store } from "../store/store.ts";
import { createMasTokenBackend } from "./mas.ts";
import { createSynapseTokenBackend } from "./synapse.ts";
import type { RegistrationToken, TokenBackend } from "./types.ts";

export const TOKEN_SCOPE = "tokens";
/** The direct chats the bot joined for token commands (`tokens.directMessages`): room ids, kept over restarts. */
export const TOKEN_DM_SCOPE = "token-dms";

export class TokenService {
  constructor(
    readonly backend: TokenBackend,
    readonly store: Store,
    readonly clock: Clock,
    readonly config: TokensConfig,
    readonly log: Logger,
  ) {}

  /** Records a token action. Token strings are masked: only the room that asked sees one whole. */
  async audit(actor: string, place: string, action: string, token: RegistrationToken | string | null, result: string, detail: unknown = null): Promise<void> {
    const ref = token === null ? null : typeof token === "string" ? maskRef(token) : this.backend.kind === "mas" ? token.id : maskRef(token.token);
    await this.store.recordTokenAudit({ at: this.clock.now(), actor, place, action, tokenRef: ref, result, detail });
    this.log.info("token action", { actor, place, action, token: ref, result });
  }

  /**
   * Operators in the management room (those the command allow list admits) always may; the
   * token allow list adds users, regexes of users, and rooms where anyone present may.
   */
  async mayUse(actor: string, place: string, managementRoomId: string | undefined, isOperator: boolean): Promise<boolean> {
    if (place === "cli") return true;
    if (place === managementRoomId && isOperator) return true;
    const entries = await this.store.listAllowed(TOKEN_SCOPE);
    return entries.some((e) => {
      if (e.kind === "room") return e.entry === place;
      if (e.kind === "user") return e.entry === actor;
      return tryUserIdPattern(e.entry)?.test(actor) === true;
    });
  }

  /** An expiry typed by a person (or the default), as an absolute time; never in the past. */
  expiry(text: Duration | undefined): Result<Date | null, string> {
    let d: Duration;
    if (text !== undefined) d = text;
    else {
      const parsed = decodeDuration(this.config.defaults.expiry);
      if (!parsed.ok) return { ok: false, error: `tokens.defaults.expiry: ${parsed.error}` };
      d = parsed.value;
    }
    const now = this.clock.now();
    switch (d.kind) {
      case "never":
        return { ok: true, value: null };
      case "relative":
        return { ok: true, value: new Date(now.getTime() + d.ms) };
      case "absolute":
        return d.at.getTime() <= now.getTime()
          ? { ok: false, error: `the expiry ${d.at.toISOString()} is in the past` }
          : { ok: true, value: d.at };
    }
  }

  /**
   * Lets go of the backend's credentials (MAS: revokes the cached access token). Best effort:
   * a failure is logged as a warning (never with the token) and not passed on. Safe to call
   * twice; call it when the process is done with tokens (the CLI, at exit).
   */
  async close(): Promise<void> {
    const r = await this.backend.close();
    if (!r.ok) this.log.warn("could not revoke the token backend's access token", { backend: this.backend.kind, error: r.error.message });
  }

  inviteText(token: RegistrationToken, expiry: string, uses: string): string | undefined {
    const template = this.config.inviteTemplate;
    if (template === undefined) return undefined;
    return template.replaceAll("{token}", token.token).replaceAll("{expiry}", expiry).replaceAll("{uses}", uses);
  }
}

/**
 * "abc…(16) #1f2e3d": the first characters, the length, and six hex digits of the token's
 * SHA-256 — enough to tell two tokens that start alike apart in the audit (and to find one
 * token's rows), not enough to use one.
 */
export function maskRef(token: string): string {
  const digest = createHash("sha256").update(token).digest("hex").slice(0, 6);
  return `${token.length <= 4 ? "" : token.slice(0, 3)}…(${token.length}) #${digest}`;
}

/** The masks of the version before the digest was added: older audit rows carry them. */
export function legacyMaskRef(token: string): string {
  return token.length <= 4 ? `…(${token.length})` : `${token.slice(0, 3)}…(${token.length})`;
}

/** `botToken`: the bot's access token (the Synapse admin API's default token). */
export function createTokenService(config: Config, store: Store, clock: Clock, log: Logger, botToken: string): Result<TokenService> {
  const t = config.tokens;
  if (t === undefined) return fail("registration tokens are not configured: add a `tokens` section to the config");
  let backend: TokenBackend;
  const retry = { maxRetries: config.homeserver.maxRetries, maxRetryWaitMs: config.homeserver.maxRetryWaitMs, clock };
  if (t.backend === "mas") {
    if (t.mas === undefined) return fail("tokens.backend is mas, but there is no tokens.mas section (url, clientId, clientSecret)");
    backend = createMasTokenBackend({
      url: t.mas.url,
      clientId: t.mas.clientId,
      clientSecret: t.mas.clientSecret,
      ...(t.mas.clientAuth !== undefined ? { clientAuth: t.mas.clientAuth } : {}),
      timeoutMs: config.homeserver.requestTimeoutMs,
      ...retry,
    });
  } else {
    backend = createSynapseTokenBackend({
      homeserverUrl: config.homeserver.url,
      accessToken: t.synapse?.accessToken ?? botToken,
      timeoutMs: config.homeserver.requestTimeoutMs,
      ...retry,
    });
  }
  return ok(new TokenService(backend, store, clock, t, log.child("tokens")));
}
