/**
 * Distinguished names (RFC 4514), parsed just enough to compare them: the same entry is
 * written many ways (`UID=Alice, OU=People,DC=Example,DC=Org`, escaped characters, hex
 * pairs, multi-valued RDNs in any order). `normalizeDn` gives one key per entry; a DN that
 * does not parse gives undefined, and the caller reports it instead of guessing.
 *
 * Values are compared case-insensitively, as the attributes that name entries in practice
 * (uid, cn, ou, dc, o) are defined with caseIgnoreMatch.
 */
/** Characters RFC 4514 allows after a backslash (besides a hex pair). */
const ESCAPABLE = ' "#+,;<=>\\';
const TYPE = /^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)$/;

export function normalizeDn(dn: string): string | undefined {
  const rdns = splitUnescaped(dn.trim(), ",");
  if (rdns === undefined || rdns.length === 0 || (rdns.length === 1 && rdns[0]?.trim() === "")) return undefined;
  const out: string[] = [];
  for (const rdn of rdns) {
    const parts = splitUnescaped(rdn, "+");
    if (parts === undefined) return undefined;
    const avas: string[] = [];
    for (const part of parts) {
      const eq = indexOfUnescaped(part, "=");
      if (eq < 0) return undefined;
      const type = part.slice(0, eq).trim();
      if (!TYPE.test(type)) return undefined;
      const value = unescapeValue(part.slice(eq + 1).trim());
      if (value === undefined || value === "") return undefined;
      avas.push(`${type.toLowerCase()}=${escapeValue(value.toLowerCase())}`);
    }
    out.push(avas.sort().join("+"));
  }
  return out.join(",");
}

/** True when `dn` is `base` or below it (both already normalized). */
export function isUnder(dn: string, base: string): boolean {
  return dn === base || dn.endsWith(`,${base}`);
}

/** The value of the first RDN (`cn=Eng,ou=groups` → `Eng`), unescaped; undefined when malformed. */
export function firstRdnValue(dn: string): string | undefined {
  const rdns = splitUnescaped(dn.trim(), ",");
  const first = rdns?.[0];
  if (first === undefined) return undefined;
  const eq = indexOfUnescaped(first, "=");
  if (eq < 0) return undefined;
  return unescapeValue(first.slice(eq + 1).trim());
}

function splitUnescaped(text: string, sep: string): string[] | undefined {
  const out: string[] = [];
  let current = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (c === "\\") {
      if (i + 1 >= text.length) return undefined;
      current += c + (text[i + 1] as string);
      i++;
    } else if (c === '"') {
      quoted = !quoted;
      current += c;
    } else if (c === sep && !quoted) {
      out.push(current);
      current = "";
    } else {
      current += c;
    }
  }
  if (quoted) return undefined;
  out.push(current);
  return out;
}

function indexOfUnescaped(text: string, ch: string): number {
  for (let i = 0; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === ch) return i;
  }
  return -1;
}

function unescapeValue(raw: string): string | undefined {
  if (raw.startsWith("#")) return raw.toLowerCase(); // BER-encoded value: compare as written
  let value = raw;
  if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
  const bytes: number[] = [];
  const encoder = new TextEncoder();
  for (let i = 0; i < value.length; i++) {
    const c = value[i] as string;
    if (c !== "\\") {
      const code = value.codePointAt(i) as number;
      const ch = String.fromCodePoint(code);
      bytes.push(...encoder.encode(ch));
      i += ch.length - 1;
      continue;
    }
    const next = value.slice(i + 1, i + 3);
    if (/^[0-9A-Fa-f]{2}$/.test(next)) {
      bytes.push(parseInt(next, 16));
      i += 2;
    } else if (i + 1 < value.length && ESCAPABLE.includes(value[i + 1] as string)) {
      bytes.push(...encoder.encode(value[i + 1]));
      i += 1;
    } else {
      return undefined;
    }
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bytes));
  } catch {
    return undefined;
  }
}

function escapeValue(value: string): string {
  let out = value.replace(/[\\,+"<>;=]/g, (c) => `\\${c}`);
  if (out.startsWith(" ") || out.startsWith("#")) out = `\\${out}`;
  if (out.endsWith(" ")) out = `${out.slice(0, -1)}\\ `;
  return out;
}
