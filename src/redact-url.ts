/**
 * URLs as we may show them: in `check-config`, in logs, in error messages. The userinfo
 * part (`user:password@`) can carry a credential — a password, or a token written as the
 * user name (`https://TOKEN@host`) — and so can query parameters named like one
 * (`?access_token=`, `?password=`).
 *
 * - `https://alice:secret@host/x` → `https://alice:***@host/x` (a password: the name stays,
 *   it says who connects);
 * - `https://TOKEN@host/x` → `https://***@host/x` (a name alone may be the credential);
 * - `?access_token=…`, `?password=…`, `?client_secret=…`, `?sig=…` → `=***`.
 *
 * Shared vocabulary: any module that prints or logs a URL imports it from here.
 */

export const REDACTED = "***";

/** Query parameters whose value is a credential. */
const SECRET_PARAM = /pass|secret|token|key|sig|auth|credential/i;

/**
 * `value` with its userinfo and secret-looking query parameters hidden. Fails closed: a
 * value that does not parse as one plain URL (a key=value connection string, a `#` or a
 * second `@` that could have cut a password in two) is hidden whole, since a misread URL
 * could show part of its password.
 */
export function redactUrl(value: string | URL): string {
  const text = typeof value === "string" ? value : value.href;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return REDACTED;
  }
  const at = text.split("@").length - 1;
  if (at > 0 && (text.includes("#") || (at > 1 && (url.username !== "" || url.password !== "")))) return REDACTED;
  let changed = false;
  if (url.password !== "") {
    url.password = REDACTED;
    changed = true;
  } else if (url.username !== "") {
    url.username = REDACTED;
    changed = true;
  }
  for (const key of [...url.searchParams.keys()]) {
    if (SECRET_PARAM.test(key)) {
      url.searchParams.set(key, REDACTED);
      changed = true;
    }
  }
  // Nothing to hide: the URL as it was written (not normalised), so it reads as configured.
  return changed ? url.href : text;
}

/**
 * Userinfo of every URL written inside free text (an error message, a library's dump):
 * `connect to https://alice:pw@hs failed` → `connect to https://alice:***@hs failed`. The
 * authority is read up to the first character that cannot be part of it in running text
 * (space, quote, `/`, `?`, `#`), so a Matrix id later in the text is not taken for userinfo.
 */
export function redactUrlsInText(text: string): string {
  return text.replace(URL_USERINFO, (_match, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(":");
    if (colon < 0 || userinfo.includes("@")) return `${scheme}${REDACTED}@`;
    return `${scheme}${userinfo.slice(0, colon)}:${REDACTED}@`;
  });
}

const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#"'<>`\\{}|^]*)@/gi;
