/**
 * The configuration with its secrets hidden, for `check-config` and for logs. Which fields
 * are secret comes from `SECRET_FIELDS` in schema.ts: a new secret is redacted as soon as
 * it is listed there.
 */
import { SECRET_FIELDS, type Config, type SecretField } from "./schema.ts";

export const REDACTED = "***";

export function redactConfig(config: Config): unknown {
  const copy: unknown = structuredClone(config);
  for (const secret of SECRET_FIELDS) {
    const parent = secret.parent.reduce<unknown>((at, key) => (isRecord(at) ? at[key] : undefined), copy);
    if (isRecord(parent) && typeof parent[secret.key] === "string") {
      parent[secret.key] = redactValue(parent[secret.key] as string, secret.redact);
    }
  }
  return copy;
}

export function redactValue(value: string, how: SecretField["redact"]): string {
  return how === "url-password" ? redactUrlPassword(value) : REDACTED;
}

/**
 * `postgres://user:secret@host/db?password=x` → `postgres://user:***@host/db?password=***`.
 * Anything that does not parse as one plain URL (a second "@", a fragment, a key=value
 * connection string) is hidden whole: a misread URL could show part of its password.
 */
function redactUrlPassword(value: string): string {
  if (value.split("@").length > 2 || value.includes("#")) return REDACTED;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return REDACTED;
  }
  if (url.password !== "") url.password = REDACTED;
  for (const key of [...url.searchParams.keys()]) {
    if (/pass|secret|token|key/i.test(key)) url.searchParams.set(key, REDACTED);
  }
  return url.toString();
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
