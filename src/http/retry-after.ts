/**
 * `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. One reader for every client
 * of ours (homeserver, Synapse and MAS admin APIs, Microsoft Graph), relative to an injected
 * `now`, so that a date answer tests exactly.
 */

/** Longest wait a server may ask for before a retry, unless configured otherwise: 5 minutes. */
export const DEFAULT_MAX_RETRY_WAIT_MS = 300_000;

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAY = "(?:mon|tue|wed|thu|fri|sat|sun)";
const LONG_DAY = "(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)";
const MONTH = "(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)";
const TIME = "(\\d{2}):(\\d{2}):(\\d{2})";
/** IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT` (what servers must send). */
const IMF_FIXDATE = new RegExp(`^${DAY}, (\\d{2}) ${MONTH} (\\d{4}) ${TIME} GMT$`, "i");
/** Obsolete RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`. */
const RFC_850 = new RegExp(`^${LONG_DAY}, (\\d{2})-${MONTH}-(\\d{2}) ${TIME} GMT$`, "i");
/** Obsolete asctime: `Sun Nov  6 08:49:37 1994`. */
const ASCTIME = new RegExp(`^${DAY} ${MONTH} ([ \\d]\\d) ${TIME} (\\d{4})$`, "i");

/**
 * The wait, in milliseconds, that a `Retry-After` value asks for; a date in the past is 0.
 * Undefined when the header is absent or is neither delay-seconds nor an HTTP-date (a server
 * that sends nonsense gets our own back-off, not a guess).
 */
export function parseRetryAfter(header: string | null | undefined, now: Date): number | undefined {
  if (header === null || header === undefined) return undefined;
  const text = header.trim();
  if (text === "") return undefined;
  // delay-seconds is 1*DIGIT; a fraction is tolerated (some proxies send one).
  if (/^\d+(?:\.\d+)?$/.test(text)) {
    const seconds = Number(text);
    return Number.isFinite(seconds) ? Math.round(seconds * 1000) : undefined;
  }
  const at = parseHttpDate(text, now);
  return at === undefined ? undefined : Math.max(0, at - now.getTime());
}

/** An HTTP-date (RFC 9110 §5.6.7, all three forms, always UTC) in ms since the epoch; `now` places a two-digit year. */
export function parseHttpDate(text: string, now: Date): number | undefined {
  let m = IMF_FIXDATE.exec(text);
  if (m) return utc(Number(m[3]), m[2], Number(m[1]), m[4], m[5], m[6]);
  m = RFC_850.exec(text);
  if (m) {
    // RFC 9110: a two-digit year more than 50 years in the future is in the past century.
    const yy = Number(m[3]);
    const thisYear = now.getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + yy;
    if (year > thisYear + 50) year -= 100;
    return utc(year, m[2], Number(m[1]), m[4], m[5], m[6]);
  }
  m = ASCTIME.exec(text);
  if (m) return utc(Number(m[6]), m[1], Number((m[2] ?? "").trim()), m[3], m[4], m[5]);
  return undefined;
}

function utc(year: number, month: string | undefined, day: number, h: string | undefined, min: string | undefined, s: string | undefined): number | undefined {
  const mon = MONTHS.indexOf((month ?? "").toLowerCase());
  const hours = Number(h);
  const minutes = Number(min);
  const seconds = Number(s);
  if (mon < 0 || day < 1 || day > 31 || hours > 23 || minutes > 59 || seconds > 60) return undefined;
  const ms = Date.UTC(year, mon, day, hours, minutes, Math.min(seconds, 59));
  // 31 Feb and the like: Date.UTC rolls over into the next month; a real date does not.
  return new Date(ms).getUTCDate() === day ? ms : undefined;
}

/** A wait for a person: "42 s", "5 min", "3 h 20 min". */
export function describeWait(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 120) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest === 0 ? `${hours} h` : `${hours} h ${rest} min`;
}

/**
 * The words for a wait longer than the cap, e.g. "the homeserver asked to wait 3 h before
 * retrying (Retry-After), longer than homeserver.maxRetryWaitMs (5 min): not retried".
 * `capKey`: the setting that holds the cap, when there is one.
 */
export function waitTooLong(who: string, askedMs: number, capMs: number, capKey?: string): string {
  const limit = capKey === undefined ? `the limit (${describeWait(capMs)})` : `${capKey} (${describeWait(capMs)})`;
  return `${who} asked to wait ${describeWait(askedMs)} before retrying (Retry-After), longer than ${limit}: not retried`;
}
