/**
 * Replies with both a plain `body` and an HTML `formatted_body`. Builders produce `Part`s:
 * block-level pieces of a reply (a paragraph, a list, a table) whose `text` and `html` say
 * the same thing. `splitMessage` packs parts into as many messages as needed to stay under
 * the event size limit, never dropping content.
 *
 * Every piece of text goes through `clean` in the builders below: a reply echoes what people
 * typed (arguments, room names, regexes), and control or bidi characters in it must not reach
 * the room or the terminal. Builders are the one way to make a `Part`, so every reply, in the
 * management room and on the CLI, is covered.
 */

/** A block of a reply. `text` is its plain form, `html` its HTML form (block-level). */
export interface Part {
  readonly text: string;
  readonly html: string;
  /**
   * Lists and tables carry their rows, so that `splitMessage` can split them between
   * messages at row boundaries, repeating the table header. Invariant:
   * `text = [textHead, ...items.text].join("\n")` (without `textHead` when it is empty) and
   * `html = htmlOpen + items.html.join("") + htmlClose`.
   */
  readonly rows?: Rows;
  /** This part reports a failure: the CLI exits non-zero when a reply has one. */
  readonly failed?: true;
}

/** Marks a part as reporting a failure (what went wrong, not what was asked for). */
export function failed(part: Part): Part {
  return { ...part, failed: true };
}

export interface Rows {
  readonly textHead: string;
  readonly htmlOpen: string;
  readonly htmlClose: string;
  readonly items: readonly { readonly text: string; readonly html: string }[];
}

/** An inline piece: plain text (escaped when put into HTML) or pre-rendered inline HTML. */
export type Inline = string | { readonly text: string; readonly html: string };

export interface MessageContent {
  msgtype: "m.notice" | "m.text";
  body: string;
  format: "org.matrix.custom.html";
  formatted_body: string;
}

const HTML_ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] ?? c);
}

/**
 * What is never echoed: C0 and C1 controls except tab and newline (NUL, escape sequences, a
 * lone carriage return that rewrites a terminal line), and the invisible format characters
 * that reorder or hide text: the marks U+200E/U+200F and U+061C, the embeddings and overrides
 * U+202A–U+202E, the isolates U+2066–U+2069 and the deprecated format controls up to U+206F,
 * zero-width space and word joiners (U+200B, U+2060–U+2064, U+FEFF), U+180E and the
 * interlinear annotation marks U+FFF9–U+FFFB. Zero-width (non-)joiners stay: emoji and
 * several scripts need them.
 */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const UNSAFE_CHARS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u061C\u180E\u200B\u200E\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB]/g;

/**
 * Text made safe to echo: line breaks of any kind (CR LF, a lone CR, U+2028, U+2029) become
 * `\n`, which each builder then renders as its block allows (a `<br>` in a paragraph, a space
 * in a table cell); the characters of `UNSAFE_CHARS` are removed.
 */
export function clean(text: string): string {
  return text.replace(/\r\n?|[\u2028\u2029]/g, "\n").replace(UNSAFE_CHARS, "");
}

function inlineText(parts: readonly Inline[]): string {
  return parts.map((p) => (typeof p === "string" ? clean(p) : clean(p.text))).join("");
}

function inlineHtml(parts: readonly Inline[]): string {
  return parts.map((p) => (typeof p === "string" ? escapeHtml(clean(p)).replace(/\n/g, "<br>") : clean(p.html))).join("");
}

/** Inline code: shown as is in the body, `<code>` in HTML. */
export function code(text: string): Inline {
  const safe = clean(text);
  return { text: safe, html: `<code>${escapeHtml(safe)}</code>` };
}

export function bold(text: string): Inline {
  const safe = clean(text);
  return { text: safe, html: `<strong>${escapeHtml(safe)}</strong>` };
}

/** A paragraph of inline pieces; newlines in plain strings become `<br>`. */
export function paragraph(...content: Inline[]): Part {
  return { text: inlineText(content), html: `<p>${inlineHtml(content)}</p>` };
}

/** Preformatted text (`<pre>`), e.g. a log excerpt. */
export function preformatted(text: string): Part {
  const safe = clean(text);
  return { text: safe, html: `<pre>${escapeHtml(safe)}</pre>` };
}

/** A bulleted list; each item is one inline run (a plain string or inline pieces). */
export function list(items: readonly (Inline | readonly Inline[])[]): Part {
  const rows = items.map((item) => {
    const content = typeof item === "string" || !Array.isArray(item) ? [item as Inline] : (item as readonly Inline[]);
    return { text: `• ${inlineText(content).replace(/\n/g, "\n  ")}`, html: `<li>${inlineHtml(content)}</li>` };
  });
  return fromRows({ textHead: "", htmlOpen: "<ul>", htmlClose: "</ul>", items: rows });
}

function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

function cell(text: string): string {
  return clean(text).replace(/\n/g, " ");
}

/**
 * A table: in the body, columns aligned with spaces (by code points, so wide characters may
 * still misalign) under a `-+-` rule; in HTML a `<table>` with a `<thead>`. Rows shorter
 * than the widest are padded with empty cells. Newlines in cells become spaces.
 */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): Part {
  const columns = Math.max(headers.length, ...rows.map((r) => r.length));
  const pad = (r: readonly string[]): string[] => Array.from({ length: columns }, (_, i) => cell(r[i] ?? ""));
  const head = pad(headers);
  const body = rows.map(pad);
  const widths = head.map((h, i) => Math.max(codePoints(h), ...body.map((r) => codePoints(r[i] ?? ""))));
  const line = (r: readonly string[]): string => {
    let last = r.length - 1;
    while (last > 0 && r[last] === "") last--; // no trailing " |" for empty cells
    return r
      .slice(0, last + 1)
      .map((c, i) => (i === last ? c : c + " ".repeat((widths[i] ?? 0) - codePoints(c))))
      .join(" | ");
  };
  const rule = widths.map((w) => "-".repeat(w)).join("-+-");
  const htmlRow = (r: readonly string[], tag: "td" | "th"): string => `<tr>${r.map((c) => `<${tag}>${escapeHtml(c)}</${tag}>`).join("")}</tr>`;
  return fromRows({
    textHead: `${line(head)}\n${rule}`,
    htmlOpen: `<table><thead>${htmlRow(head, "th")}</thead><tbody>`,
    htmlClose: "</tbody></table>",
    items: body.map((r) => ({ text: line(r), html: htmlRow(r, "td") })),
  });
}

function fromRows(rows: Rows): Part {
  const lines = rows.items.map((i) => i.text);
  const text = (rows.textHead === "" ? lines : [rows.textHead, ...lines]).join("\n");
  return { text, html: rows.htmlOpen + rows.items.map((i) => i.html).join("") + rows.htmlClose, rows };
}

/** Several blocks as one part (text joined by newlines). Row structure is not kept. */
export function blocks(parts: readonly Part[]): Part {
  return { text: parts.map((p) => p.text).join("\n"), html: parts.map((p) => p.html).join("\n") };
}

export function toContent(part: { readonly text: string; readonly html: string }, msgtype: MessageContent["msgtype"] = "m.notice"): MessageContent {
  return { msgtype, body: part.text, format: "org.matrix.custom.html", formatted_body: part.html };
}

/** Synapse rejects events over 65,536 bytes; this leaves room for the envelope, relations and mentions. */
export const DEFAULT_MAX_BYTES = 60_000;
/** The smallest accepted budget: below it a message could not hold a marked piece of a line. */
export const MIN_MAX_BYTES = 256;
/** Appended to each piece of a line too long for one message (the rest follows in the next). */
export const CUT_MARKER = " [continued in the next message]";

/** Bytes of `s` inside a JSON string literal (without the quotes). */
function jsonBytes(s: string): number {
  return Buffer.byteLength(JSON.stringify(s)) - 2;
}

/** `jsonBytes(c) + jsonBytes(escapeHtml(c))` for one code point `c`, without allocating. */
function charCost(c: string): number {
  const cp = c.codePointAt(0) ?? 0;
  let json: number;
  if (cp === 0x22 || cp === 0x5c) json = 2;
  else if (cp < 0x20) json = cp === 0x08 || cp === 0x09 || cp === 0x0a || cp === 0x0c || cp === 0x0d ? 2 : 6;
  else if (cp < 0x80) json = 1;
  else if (cp < 0x800) json = 2;
  else if (cp >= 0xd800 && cp <= 0xdfff) json = 6; // a lone surrogate is escaped as \uXXXX
  else if (cp < 0x10000) json = 3;
  else json = 4;
  const escaped = HTML_ESCAPES[c];
  return json + (escaped === undefined ? json : escaped.length);
}

interface Sized {
  readonly text: string;
  readonly html: string;
  readonly bytes: number;
}

function sized(text: string, html: string): Sized {
  return { text, html, bytes: jsonBytes(text) + jsonBytes(html) };
}

/**
 * Splits a reply into messages whose JSON content (`{msgtype, body, format,
 * formatted_body}`, as `JSON.stringify` encodes it) is at most `maxBytes` bytes of UTF-8.
 *
 * Parts are kept whole and packed greedily in order (text joined by "\n", HTML by "\n").
 * A part too big for one message is split: a list or table at row boundaries (each piece a
 * valid list or table, the table header repeated); anything else at line boundaries, each
 * piece shown as `<pre>` in HTML; a single line too big for a message is cut at code point
 * boundaries and every piece but the last ends with `CUT_MARKER`. Nothing is dropped.
 *
 * Sizes are computed per piece and added up. That is exact except where a surrogate pair
 * would straddle two pieces, where it is an over-estimate, so the result never exceeds
 * `maxBytes`. No parts → no messages. Throws a RangeError when `maxBytes < MIN_MAX_BYTES`.
 */
export function splitMessage(
  parts: readonly { readonly text: string; readonly html: string; readonly rows?: Rows }[],
  maxBytes: number = DEFAULT_MAX_BYTES,
  opts: { msgtype?: MessageContent["msgtype"] } = {},
): MessageContent[] {
  if (!(maxBytes >= MIN_MAX_BYTES)) throw new RangeError(`splitMessage: maxBytes must be at least ${MIN_MAX_BYTES}`);
  const msgtype = opts.msgtype ?? "m.notice";
  const overhead = Buffer.byteLength(JSON.stringify(toContent({ text: "", html: "" }, msgtype)));
  const budget = maxBytes - overhead; // for body + formatted_body, as JSON string contents
  const separator = jsonBytes("\n") * 2; // between pieces, in body and in formatted_body

  const pieces: Sized[] = [];
  for (const part of parts) {
    const whole = sized(part.text, part.html);
    if (whole.bytes <= budget) pieces.push(whole);
    else if (part.rows !== undefined) pieces.push(...splitRows(part.rows, budget));
    else pieces.push(...splitLines(part.text, budget));
  }

  const messages: MessageContent[] = [];
  let current: Sized[] = [];
  let used = 0;
  const flush = (): void => {
    if (current.length === 0) return;
    messages.push(toContent({ text: current.map((p) => p.text).join("\n"), html: current.map((p) => p.html).join("\n") }, msgtype));
    current = [];
    used = 0;
  };
  for (const piece of pieces) {
    const cost = current.length === 0 ? piece.bytes : piece.bytes + separator;
    if (used + cost > budget) flush();
    used += current.length === 0 ? piece.bytes : piece.bytes + separator;
    current.push(piece);
  }
  flush();
  return messages;
}

/** A list or table too big for one message → several, each with the head and closing tags. */
function splitRows(rows: Rows, budget: number): Sized[] {
  const headText = rows.textHead;
  const frame = jsonBytes(rows.htmlOpen) + jsonBytes(rows.htmlClose) + (headText === "" ? 0 : jsonBytes(headText) + jsonBytes("\n"));
  if (frame > budget / 2) return splitLines(fromRows(rows).text, budget); // a giant header: plain lines
  const out: Sized[] = [];
  let headShown = false;
  let chunk: { text: string; html: string }[] = [];
  let used = frame;
  const flush = (): void => {
    if (chunk.length === 0) return;
    const lines = chunk.map((c) => c.text);
    out.push(sized((headText === "" ? lines : [headText, ...lines]).join("\n"), rows.htmlOpen + chunk.map((c) => c.html).join("") + rows.htmlClose));
    headShown = true;
    chunk = [];
    used = frame;
  };
  for (const item of rows.items) {
    const cost = jsonBytes(item.text) + jsonBytes(item.html) + (chunk.length === 0 ? 0 : jsonBytes("\n"));
    if (frame + jsonBytes(item.text) + jsonBytes(item.html) > budget) {
      // Not even alone with the head: give this row its own plain pieces.
      flush();
      out.push(...splitLines(item.text, budget));
      continue;
    }
    if (used + cost > budget) flush();
    used += chunk.length === 0 ? jsonBytes(item.text) + jsonBytes(item.html) : cost;
    chunk.push(item);
  }
  flush();
  // Every row was too big to go with the head: the head still goes first, as plain lines.
  return headShown || headText === "" ? out : [...splitLines(headText, budget), ...out];
}

const PRE_OPEN = "<pre>";
const PRE_CLOSE = "</pre>";

/** Plain text too big for one message → pieces at line boundaries, shown as `<pre>`. */
function splitLines(text: string, budget: number): Sized[] {
  const frame = jsonBytes(PRE_OPEN) + jsonBytes(PRE_CLOSE);
  const newline = jsonBytes("\n") * 2;
  const out: Sized[] = [];
  let chunk: string[] = [];
  let used = frame;
  const flush = (): void => {
    if (chunk.length === 0) return;
    const joined = chunk.join("\n");
    out.push(sized(joined, PRE_OPEN + escapeHtml(joined) + PRE_CLOSE));
    chunk = [];
    used = frame;
  };
  for (const line of text.split("\n")) {
    const bytes = jsonBytes(line) + jsonBytes(escapeHtml(line));
    if (frame + bytes > budget) {
      flush();
      out.push(...cutLine(line, budget - frame).map((p) => sized(p, PRE_OPEN + escapeHtml(p) + PRE_CLOSE)));
      continue;
    }
    const cost = chunk.length === 0 ? bytes : bytes + newline;
    if (used + cost > budget) flush();
    used += chunk.length === 0 ? bytes : bytes + newline;
    chunk.push(line);
  }
  flush();
  return out;
}

/** One line too big for a message → pieces of at most `budget` bytes (text + escaped HTML), marked. */
function cutLine(line: string, budget: number): string[] {
  const marker = jsonBytes(CUT_MARKER) + jsonBytes(escapeHtml(CUT_MARKER));
  const room = budget - marker;
  const pieces: string[] = [];
  let current = "";
  let used = 0;
  for (const char of line) {
    const cost = charCost(char);
    if (used + cost > room && current !== "") {
      pieces.push(current + CUT_MARKER);
      current = "";
      used = 0;
    }
    current += char;
    used += cost;
  }
  pieces.push(current);
  return pieces;
}
