/**
 * The one naming rule for environment variables: `MGS_` and the setting's path, each key in
 * upper snake case, joined by `_`: `homeserver.requestTimeoutMs` → `MGS_HOMESERVER_REQUEST_TIMEOUT_MS`.
 * A secret also has a `_FILE` variant naming a file that holds it.
 */
const ENV_PREFIX = "MGS_";

export function envName(path: readonly string[]): string {
  return ENV_PREFIX + path.map((key) => key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()).join("_");
}
