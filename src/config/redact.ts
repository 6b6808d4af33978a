/**
 * The configuration with its secrets hidden, for `check-config` and for logs. Which fields
 * are secret comes from `SECRET_FIELDS` in schema.ts: a new secret is redacted as soon as
 * it is listed there. Every other value that is a URL (the homeserver, the LDAP server, the
 * authority...) is shown without its userinfo (`user:password@`), see redact-url.ts.
 */
import { REDACTED, redactUrl } from "../redact-url.ts";
import { SECRET_FIELDS, type Config, type SecretField } from "./schema.ts";

export { REDACTED };

export function redactConfig(config: Config): unknown {
  const copy: unknown = structuredClone(config);
  for (const secret of SECRET_FIELDS) {
    const parent = secret.parent.reduce<unknown>((at, key) => (isRecord(at) ? at[key] : undefined), copy);
    if (isRecord(parent) && typeof parent[secret.key] === "string") {
      parent[secret.key] = redactValue(parent[secret.key] as string, secret.redact);
    }
  }
  return redactUrls(copy);
}

export function redactValue(value: string, how: SecretField["redact"]): string {
  // A URL-shaped secret (`postgres://user:secret@host/db`) keeps its host and user; anything unparsable is hidden whole.
  return how === "url-password" ? redactUrl(value) : REDACTED;
}

const URL_LIKE = /^[a-z][a-z0-9+.-]*:\/\//i;

/** Every string that looks like a URL, at any depth, without its userinfo. */
function redactUrls(value: unknown): unknown {
  if (typeof value === "string") return URL_LIKE.test(value) ? redactUrl(value) : value;
  if (Array.isArray(value)) return value.map(redactUrls);
  if (isRecord(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactUrls(v)]));
  return value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
