/**
 * Registration tokens (MSC3231), one domain type for both backends, and the rules that need
 * no server: status (MAS's own verdict when it gave one, else from an injected clock), and
 * validation of what a person typed, so that bad input is answered before any request is sent.
 */
import type { Result } from "../result.ts";

export interface RegistrationToken {
  /** MAS: the ULID. Synapse: the token string itself (its only key). */
  readonly id: string;
  readonly token: string;
  /** null: unlimited. */
  readonly usesAllowed: number | null;
  /** Registrations completed with it (Synapse `completed`, MAS `times_used`). */
  readonly used: number;
  /** Synapse only: registrations started and not finished; they count towards the limit. */
  readonly pending: number;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
  readonly createdAt: Date | null;
  /**
   * The server's own verdict at the time it answered (MAS's `valid` attribute). Absent for
   * Synapse, which has none: its status is computed from the attributes and our clock.
   */
  readonly valid?: boolean;
}

/** "invalid": the server says so and none of its attributes says why (should not happen). */
export type TokenState = "valid" | "expired" | "used-up" | "revoked" | "invalid";

export interface TokenStatus {
  readonly state: TokenState;
  readonly reason: string;
}

/**
 * A token's status. When the server gave its own verdict (MAS `valid`), that verdict decides
 * valid or not — our clock may differ from the server's — and the attributes only say why not.
 * Without one (Synapse), the attributes are checked against `now`.
 */
export function tokenStatus(t: RegistrationToken, now: Date): TokenStatus {
  if (t.valid !== undefined) return serverStatus(t, t.valid, now);
  if (t.revokedAt !== null) return { state: "revoked", reason: `revoked ${t.revokedAt.toISOString()}` };
  if (t.expiresAt !== null && now.getTime() >= t.expiresAt.getTime()) {
    return { state: "expired", reason: `expired ${t.expiresAt.toISOString()}` };
  }
  if (t.usesAllowed !== null && t.used + t.pending >= t.usesAllowed) {
    return { state: "used-up", reason: `used up (${describeUses(t)})` };
  }
  return { state: "valid", reason: "valid" };
}

/** Not valid by the server's word: why, in the same order as above where our clock agrees. */
function serverStatus(t: RegistrationToken, valid: boolean, now: Date): TokenStatus {
  if (valid) return { state: "valid", reason: "valid" };
  if (t.revokedAt !== null) return { state: "revoked", reason: `revoked ${t.revokedAt.toISOString()}` };
  const expired = { state: "expired", reason: `expired ${t.expiresAt?.toISOString() ?? ""}` } as const;
  if (t.expiresAt !== null && now.getTime() >= t.expiresAt.getTime()) return expired;
  if (t.usesAllowed !== null && t.used + t.pending >= t.usesAllowed) return { state: "used-up", reason: `used up (${describeUses(t)})` };
  // The server's clock has passed the expiry and ours has not yet.
  if (t.expiresAt !== null) return expired;
  return { state: "invalid", reason: "not valid (the server gave no reason)" };
}

/**
 * The status for a person, times written as `describeExpiry` writes them: "valid",
 * "expired 2026-11-25 12:00 UTC (3 hours ago)", "revoked 2026-11-20 00:00 UTC (5 days ago)",
 * "used up (3 of 3 used)".
 */
export function describeStatus(t: RegistrationToken, now: Date): string {
  const s = tokenStatus(t, now);
  switch (s.state) {
    case "valid":
      return "valid";
    case "expired":
      return `expired ${describeExpiry(t.expiresAt, now)}`;
    case "revoked":
      return `revoked ${describeExpiry(t.revokedAt, now)}`;
    case "used-up":
    case "invalid":
      return s.reason;
  }
}

/** "1 of 3 used, 1 pending", "2 used (unlimited)". */
export function describeUses(t: RegistrationToken): string {
  const pending = t.pending > 0 ? `, ${t.pending} pending` : "";
  return t.usesAllowed === null ? `${t.used} used (unlimited)${pending}` : `${t.used} of ${t.usesAllowed} used${pending}`;
}

/** "2026-12-02 10:00 UTC (in 6 days)", "never". */
export function describeExpiry(at: Date | null, now: Date): string {
  if (at === null) return "never";
  const text = `${at.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  const ms = at.getTime() - now.getTime();
  return `${text} (${relative(ms)})`;
}

/**
 * Rounded to the nearest whole unit, the unit chosen after rounding: 7 days less a few
 * milliseconds is "in 7 days", 23 h 59 min 50 s is "in 1 day", 90 min is "in 2 hours".
 */
function relative(ms: number): string {
  const past = ms < 0;
  const abs = Math.abs(ms);
  const say = (n: number, name: string): string => {
    const words = `${n} ${name}${n === 1 ? "" : "s"}`;
    return past ? `${words} ago` : `in ${words}`;
  };
  if (abs < 30_000) return past ? "just now" : "in less than a minute";
  const minutes = Math.round(abs / 60_000);
  if (minutes < 60) return say(minutes, "minute");
  const hours = Math.round(abs / 3_600_000);
  if (hours < 24) return say(hours, "hour");
  return say(Math.round(abs / 86_400_000), "day");
}

const TOKEN_CHARS = /^[A-Za-z0-9._~-]+$/;
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/i;
// C0 controls and DEL; NUL among them, which PostgreSQL (MAS's store) refuses in text.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

export type TokenBackendKind = "synapse" | "mas";

/**
 * A token string as the server accepts it. Synapse: 1 to 64 characters of [A-Za-z0-9._~-].
 * MAS takes any string (its API has no rule and no limit): we refuse only the empty string and
 * control characters — NUL makes MAS fail with a 500 (PostgreSQL text), and no one can type the
 * others on MAS's registration page. The default is Synapse's rule, which is the stricter one.
 */
export function checkTokenString(token: string, backend: TokenBackendKind = "synapse"): Result<string, string> {
  if (backend === "mas") {
    if (token.length === 0) return { ok: false, error: "a token has at least 1 character" };
    if (CONTROL.test(token)) return { ok: false, error: "a token may not contain control characters" };
    return { ok: true, value: token };
  }
  if (token.length === 0 || token.length > 64) return { ok: false, error: `a token has 1 to 64 characters (got ${token.length})` };
  if (!TOKEN_CHARS.test(token)) return { ok: false, error: "a token may contain only A-Z, a-z, 0-9 and . _ ~ -" };
  return { ok: true, value: token };
}

export function isUlid(text: string): boolean {
  return ULID.test(text);
}

/**
 * What the person names: a token string, or (MAS) a ULID, which may be an id or a token string
 * that looks like one (the backend tells them apart). Default rules: Synapse's.
 */
export function checkTokenRef(ref: string, backend: TokenBackendKind = "synapse"): Result<string, string> {
  return isUlid(ref) ? { ok: true, value: ref } : checkTokenString(ref, backend);
}

/** What `create` makes. */
export interface NewToken {
  /** A chosen token string (checked with `checkTokenString` for the backend); absent: the server picks one. */
  readonly token?: string;
  /** null: unlimited. */
  readonly usesAllowed: number | null;
  /** null: never expires. */
  readonly expiresAt: Date | null;
}
export type CreateTokenRequest = NewToken;

/** What `update` changes: an absent field stays as it is; null removes the limit or the expiry. */
export interface TokenChanges {
  readonly usesAllowed?: number | null;
  readonly expiresAt?: Date | null;
}
export type UpdateTokenRequest = TokenChanges;

/**
 * List filters; absent: either. MAS applies them itself (`filter[used]`, `filter[revoked]`,
 * `filter[expired]`, `filter[valid]`). Synapse has only `valid`, which it applies; the rest is
 * applied here, from the attributes and our clock: used = at least one completed registration,
 * revoked is always false (Synapse deletes instead), expired = the expiry is at or before now.
 */
export interface TokenFilter {
  readonly used?: boolean;
  readonly revoked?: boolean;
  readonly expired?: boolean;
  readonly valid?: boolean;
}

/** The words of `token list`: "valid" is `{valid: true}`, "invalid" `{valid: false}`, "all" `{}`. */
export type TokenListWhich = "valid" | "invalid" | "all";

export function listFilter(which: TokenListWhich | TokenFilter): TokenFilter {
  if (typeof which !== "string") return which;
  return which === "all" ? {} : { valid: which === "valid" };
}

/**
 * Names one token: what a person typed (a token string, or on MAS an id or a string), or
 * `{ id }` — a backend id known to be one (MAS: the ULID; Synapse: the token string), as from
 * a `RegistrationToken` just listed, looked up directly.
 */
export type TokenRef = string | { readonly id: string };

/** The port. Each backend turns its API's answers and errors into these values. */
export interface TokenBackend {
  readonly kind: TokenBackendKind;
  list(filter: TokenListWhich | TokenFilter): Promise<Result<RegistrationToken[]>>;
  /**
   * By token string, or (MAS) by id. Undefined when there is no such token. On MAS a ULID is
   * tried as an id and as a token string; if it names two different tokens, that is an error
   * naming both ids.
   */
  get(ref: TokenRef): Promise<Result<RegistrationToken | undefined>>;
  create(input: NewToken): Promise<Result<RegistrationToken>>;
  update(ref: TokenRef, changes: TokenChanges): Promise<Result<RegistrationToken>>;
  /** Synapse deletes; MAS revokes (its tokens are never deleted). */
  delete(ref: TokenRef): Promise<Result<"deleted" | "revoked">>;
  /** MAS only. */
  unrevoke(ref: TokenRef): Promise<Result<RegistrationToken>>;
  /**
   * Lets go of credentials held: MAS revokes its cached access token at the revocation endpoint
   * (RFC 7009); Synapse has nothing to let go. Best effort, never rejects; safe to call twice.
   * The backend still works afterwards (it fetches a new access token when next used).
   */
  close(): Promise<Result<void>>;
}
