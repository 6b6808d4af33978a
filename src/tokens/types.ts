/**
 * Registration tokens (MSC3231), one domain type for both backends, and the rules that need
 * no server: status with an injected clock, and validation of what a person typed, so that
 * bad input is answered before any request is sent.
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
}

export type TokenState = "valid" | "expired" | "used-up" | "revoked";

export interface TokenStatus {
  readonly state: TokenState;
  readonly reason: string;
}

export function tokenStatus(t: RegistrationToken, now: Date): TokenStatus {
  if (t.revokedAt !== null) return { state: "revoked", reason: `revoked ${t.revokedAt.toISOString()}` };
  if (t.expiresAt !== null && now.getTime() >= t.expiresAt.getTime()) {
    return { state: "expired", reason: `expired ${t.expiresAt.toISOString()}` };
  }
  if (t.usesAllowed !== null && t.used + t.pending >= t.usesAllowed) {
    return { state: "used-up", reason: `used up (${describeUses(t)})` };
  }
  return { state: "valid", reason: "valid" };
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

function relative(ms: number): string {
  const past = ms < 0;
  const abs = Math.abs(ms);
  const units: [number, string][] = [
    [86_400_000, "day"],
    [3_600_000, "hour"],
    [60_000, "minute"],
  ];
  for (const [size, name] of units) {
    if (abs >= size) {
      const n = Math.floor(abs / size);
      const words = `${n} ${name}${n === 1 ? "" : "s"}`;
      return past ? `${words} ago` : `in ${words}`;
    }
  }
  return past ? "just now" : "in less than a minute";
}

const TOKEN_CHARS = /^[A-Za-z0-9._~-]+$/;
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/i;

export function checkTokenString(token: string): Result<string, string> {
  if (token.length === 0 || token.length > 64) return { ok: false, error: `a token has 1 to 64 characters (got ${token.length})` };
  if (!TOKEN_CHARS.test(token)) return { ok: false, error: "a token may contain only A-Z, a-z, 0-9 and . _ ~ -" };
  return { ok: true, value: token };
}

export function isUlid(text: string): boolean {
  return ULID.test(text);
}

/** What the person names: a ULID (MAS id) or a token string. */
export function checkTokenRef(ref: string): Result<string, string> {
  return isUlid(ref) ? { ok: true, value: ref } : checkTokenString(ref);
}

export interface NewToken {
  readonly token?: string;
  readonly usesAllowed: number | null;
  readonly expiresAt: Date | null;
}

export interface TokenChanges {
  readonly usesAllowed?: number | null;
  readonly expiresAt?: Date | null;
}

/** The port. Each backend turns its API's answers and errors into these values. */
export interface TokenBackend {
  readonly kind: "synapse" | "mas";
  list(filter: "valid" | "invalid" | "all"): Promise<Result<RegistrationToken[]>>;
  /** By token string, or (MAS) by ULID. Undefined when there is no such token. */
  get(ref: string): Promise<Result<RegistrationToken | undefined>>;
  create(input: NewToken): Promise<Result<RegistrationToken>>;
  update(ref: string, changes: TokenChanges): Promise<Result<RegistrationToken>>;
  /** Synapse deletes; MAS revokes (its tokens are never deleted). */
  delete(ref: string): Promise<Result<"deleted" | "revoked">>;
  /** MAS only. */
  unrevoke(ref: string): Promise<Result<RegistrationToken>>;
}
