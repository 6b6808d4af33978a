/**
 * Generated command lines (≈ 13,000 in all): the parser and tokenizer are total, results are
 * well-formed, and splitting a reply never loses a line or exceeds the byte limit.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { usageLine } from "../../src/commands/help.ts";
import { parseCommandLine, tokenize } from "../../src/commands/parse.ts";
import { CUT_MARKER, escapeHtml, list, paragraph, splitMessage, table, type Part } from "../../src/commands/render.ts";
import { CommandTable, argOf, argsOf, defineCommand, type CommandSpec } from "../../src/commands/spec.ts";

const run = (): Promise<void> => Promise.resolve();
const COMMANDS: CommandSpec<null, void>[] = [
  defineCommand({
    name: "sync",
    summary: "sync",
    params: [{ name: "room", kind: "room", description: "room", optional: true }],
    flags: [{ name: "dry", description: "dry" }],
    permission: "operator",
    run,
  }),
  defineCommand({
    name: "release",
    summary: "release",
    params: [
      { name: "room", kind: "room", description: "room" },
      { name: "user", kind: "user", description: "users", optional: true, variadic: true },
    ],
    permission: "operator",
    run,
  }),
  defineCommand({ name: "token", summary: "token", params: [], permission: "operator", run }),
  defineCommand({
    name: "token create",
    summary: "create",
    params: [
      { name: "expires", kind: "duration", description: "expiry" },
      { name: "uses", kind: "int", description: "uses", optional: true },
      { name: "note", kind: "string", description: "note", optional: true },
    ],
    flags: [
      { name: "single-use", description: "once" },
      { name: "dry", description: "dry" },
    ],
    permission: "operator",
    run,
  }),
  defineCommand({
    name: "help",
    summary: "help",
    params: [{ name: "command", kind: "string", description: "command", optional: true, variadic: true }],
    permission: "anyone-in-room",
    run,
  }),
];
const TABLE = new CommandTable(COMMANDS);
const KINDS = new Set(["not-a-command", "ok", "usage-error", "unknown"]);

// --- pieces of text -------------------------------------------------------------------

const anyCodeUnit = fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((n) => String.fromCharCode(n)), maxLength: 12 });
const anyCodePoint = fc.string({ unit: "binary", maxLength: 12 });
const special = fc.constantFrom(
  '"',
  "'",
  "\\",
  '\\"',
  "“",
  "”",
  "--",
  "—",
  "-",
  "=",
  "?",
  "&",
  "#",
  "!",
  "@",
  ":",
  "/",
  "%",
  "%2",
  "%E0%A4%A",
  "\n",
  "\r\n",
  "\t",
  "\u00A0",
  "\u3000",
  "\u200B",
  "\u202E",
  "\u2028",
  "\uFEFF",
  "\uD83D",
  "\uDE00",
  "😀",
  "𝕏",
  "👩‍👩‍👧",
  "שלום",
  "مرحبا",
  "<",
  ">",
  "&amp;",
  "&#x1F600;",
  "&#99999999;",
);
const server = fc.constantFrom("example.org", "x.org:8448", "[::1]", "1.2.3.4", "bad server", "", "ex_ample.org");
const localpart = fc.oneof(fc.constantFrom("alice", "bob", "a/b", "é", "", "x y", "O'Brien"), fc.string({ unit: "grapheme-ascii", maxLength: 8 }));
const userId = fc.tuple(localpart, server).map(([l, s]) => `@${l}:${s}`);
const roomId = fc.tuple(fc.string({ unit: "grapheme-ascii", maxLength: 10 }), server).map(([l, s]) => `!${l}:${s}`);
const alias = fc.tuple(localpart, server).map(([l, s]) => `#${l}:${s}`);
const via = fc.array(server, { maxLength: 3 }).map((vs) => (vs.length === 0 ? "" : `?${vs.map((v) => `via=${encodeURIComponent(v)}`).join("&")}`));
const encodeMaybe = (s: string, encode: boolean): string => (encode ? encodeURIComponent(s) : s);
const matrixTo = fc
  .tuple(fc.oneof(userId, roomId, alias), fc.boolean(), via, fc.constantFrom("", "/$event", "/%24ev"))
  .map(([id, enc, v, ev]) => `https://matrix.to/#/${encodeMaybe(id, enc)}${ev}${v}`);
const matrixUri = fc
  .tuple(fc.constantFrom("u", "r", "roomid", "x", "U"), localpart, server, via, fc.constantFrom("", "/e/ev", "/e"))
  .map(([t, l, s, v, ev]) => `matrix:${t}/${encodeURIComponent(`${l}:${s}`)}${ev}${v}`);
const duration = fc.constantFrom("7d", "12h", "30m", "90s", "2w", "1h30m", "0d", "-1d", "never", "2025-12-31", "2025-02-29", "2025-06-01T08:00+02:00", "1e3", "99999999999w");
const int = fc.oneof(fc.nat().map(String), fc.constantFrom("-1", "1.5", "9007199254740993", "٣", "0x1f"));
const commandWord = fc
  .tuple(fc.constantFrom("sync", "release", "token", "token create", "help", "snyc", "toke create", "token  create", "Sync"), fc.boolean())
  .map(([w, upper]) => (upper ? w.toUpperCase() : w));
const flag = fc.constantFrom("--dry", "--DRY", "--single-use", "--nope", "--dry=1", "—dry", "--", '"--dry"', "---", "--=");

const fragment = fc.oneof(
  { weight: 3, arbitrary: special },
  { weight: 2, arbitrary: anyCodeUnit },
  { weight: 2, arbitrary: anyCodePoint },
  { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 10 }) },
  { weight: 2, arbitrary: userId },
  { weight: 2, arbitrary: roomId },
  { weight: 2, arbitrary: alias },
  { weight: 2, arbitrary: matrixTo },
  { weight: 2, arbitrary: matrixUri },
  { weight: 1, arbitrary: duration },
  { weight: 1, arbitrary: int },
  { weight: 2, arbitrary: flag },
  { weight: 1, arbitrary: commandWord },
);

/** A pill: display text in the body, an `<a>` in the formatted body. */
const pill = fc
  .tuple(fc.oneof(fc.constantFrom("Alice", "Bob Smith", "Carol & Dave", "<b>", "sync", "--dry", '"', "🙂 Ω"), fc.string({ maxLength: 8 })), fc.oneof(matrixTo, matrixUri, userId))
  .map(([text, href]) => ({ body: text, html: `<a href="${escapeHtml(href)}">${escapeHtml(text)}</a>` }));

const PREFIXES = ["!", "", "!gs", "?", "😀", "!!", "@bot:example.org", " ", "\\", '"'] as const;
const prefix = fc.oneof({ weight: 4, arbitrary: fc.constant("!") }, { weight: 3, arbitrary: fc.constantFrom(...PREFIXES) }, { weight: 1, arbitrary: fc.string({ maxLength: 3 }) });
const separator = fc.constantFrom(" ", " ", " ", "", "\n", "  ", "\t");

interface Message {
  prefix: string;
  body: string;
  formattedBody?: string;
}

const message: fc.Arbitrary<Message> = fc
  .record({
    prefix,
    lead: fc.constantFrom("", "", " ", "\n ", "> <@x:y.org> quoted\n\n", "<p>"),
    usePrefixWeight: fc.integer({ min: 0, max: 9 }),
    command: commandWord,
    rest: fc.array(fc.tuple(fc.oneof({ weight: 5, arbitrary: fragment.map((f) => ({ body: f, html: escapeHtml(f) })) }, { weight: 1, arbitrary: pill }), separator), {
      maxLength: 12,
    }),
    formatted: fc.boolean(),
  })
  .map(({ prefix: p, lead, usePrefixWeight, command, rest, formatted }) => {
    const start = usePrefixWeight < 8 ? `${p}${/[\p{L}\p{N}]$/u.test(p) ? " " : ""}${command}` : command;
    const body = lead + start + rest.map(([f, sep]) => sep + f.body).join("");
    const html = escapeHtml(lead + start) + rest.map(([f, sep]) => escapeHtml(sep) + f.html).join("");
    return formatted ? { prefix: p, body, formattedBody: html } : { prefix: p, body };
  });

function checkResult(msg: Message): void {
  const opts = msg.formattedBody === undefined ? { prefix: msg.prefix } : { prefix: msg.prefix, formattedBody: msg.formattedBody };
  const r = parseCommandLine(TABLE, msg.body, opts);
  expect(KINDS.has(r.kind)).toBe(true);
  switch (r.kind) {
    case "not-a-command":
      break;
    case "unknown":
      expect(r.name.length).toBeGreaterThan(0);
      expect(Array.from(r.name).length).toBeLessThanOrEqual(101);
      if (r.suggestion !== undefined) expect(TABLE.names()).toContain(r.suggestion);
      break;
    case "usage-error":
      expect(TABLE.commands).toContain(r.command);
      expect(r.usage).toBe(usageLine(r.command, msg.prefix));
      expect(r.message.length).toBeGreaterThan(0);
      break;
    case "ok":
      expect(TABLE.commands).toContain(r.command);
      expect(Object.keys(r.args.values).sort()).toEqual(r.command.params.map((p) => p.name).sort());
      expect(Object.keys(r.args.flags).sort()).toEqual((r.command.flags ?? []).map((f) => f.name).sort());
      for (const p of r.command.params) {
        // Every decoded value has the kind its parameter declares (argOf/argsOf throw otherwise).
        if (p.variadic === true) argsOf(r.args, p.name, p.kind);
        else argOf(r.args, p.name, p.kind);
      }
      break;
  }
  if (!msg.body.trimStart().startsWith(msg.prefix) && !msg.body.startsWith(">")) expect(r.kind).toBe("not-a-command");
}

describe("fuzz: parseCommandLine", () => {
  it("is total and well-formed on generated command lines", () => {
    fc.assert(
      fc.property(message, (msg) => {
        checkResult(msg);
      }),
      { numRuns: 6000 },
    );
  });

  it("is total on arbitrary text and arbitrary formatted bodies", () => {
    fc.assert(
      fc.property(prefix, fc.string({ unit: "binary", maxLength: 200 }), fc.option(fc.string({ unit: "binary", maxLength: 200 }), { nil: undefined }), (p, body, html) => {
        checkResult(html === undefined ? { prefix: p, body: `${p}${body}` } : { prefix: p, body: `${p}${body}`, formattedBody: html });
      }),
      { numRuns: 2000 },
    );
  });

  it("is total on very long input", () => {
    fc.assert(
      fc.property(message, fc.integer({ min: 1, max: 30_000 }), fragment, (msg, repeat, filler) => {
        const body = msg.body + " " + filler.repeat(Math.ceil(repeat / Math.max(filler.length, 1)));
        checkResult(msg.formattedBody === undefined ? { prefix: msg.prefix, body } : { ...msg, body, formattedBody: msg.formattedBody + escapeHtml(body) });
      }),
      { numRuns: 200 },
    );
    // Pathological HTML for the pill scanner.
    const open = "<a ".repeat(30_000);
    checkResult({ prefix: "!", body: "!sync x", formattedBody: open });
    checkResult({ prefix: "!", body: "!sync x", formattedBody: `<a href="https://matrix.to/#/@x:y.org">${"<".repeat(50_000)}</a>` });
  });
});

describe("fuzz: well-formed commands", () => {
  const goodServer = fc.constantFrom("example.org", "matrix.example.org:8448", "[::1]:8008", "10.0.0.1");
  const goodLocal = fc.string({ unit: fc.constantFrom(..."abcxyz0189._=/+-"), minLength: 1, maxLength: 12 });
  const goodUser = fc.tuple(goodLocal, goodServer).map(([l, s]) => `@${l}:${s}`);
  const goodRoom = fc.oneof(
    fc.tuple(fc.string({ unit: fc.constantFrom(..."AbCdEf019"), minLength: 1, maxLength: 18 }), goodServer).map(([l, s]) => ({ sigil: "!", local: l, server: s })),
    fc.tuple(fc.string({ unit: fc.constantFrom(..."eng-ops_42"), minLength: 1, maxLength: 12 }), goodServer).map(([l, s]) => ({ sigil: "#", local: l, server: s })),
  );
  const vias = fc.array(goodServer, { maxLength: 3 });
  type Written = { body: string; html: string };
  const plain = (s: string): Written => ({ body: s, html: escapeHtml(s) });

  function writeUser(id: string, how: number, n: number): Written {
    switch (how) {
      case 0:
        return plain(id);
      case 1:
        return plain(`https://matrix.to/#/${id}`);
      case 2:
        return plain(`https://matrix.to/#/${encodeURIComponent(id)}?via=example.org`);
      case 3:
        return plain(`matrix:u/${encodeURIComponent(id.slice(1))}`);
      default:
        return { body: `Person Zq${n}`, html: `<a href="https://matrix.to/#/${escapeHtml(id)}">Person Zq${n}</a>` };
    }
  }

  it("decode every way of writing rooms and users, with flags anywhere", () => {
    fc.assert(
      fc.property(
        goodRoom,
        vias,
        fc.integer({ min: 0, max: 4 }),
        fc.array(fc.tuple(goodUser, fc.integer({ min: 0, max: 4 })), { maxLength: 5 }),
        fc.array(fc.constantFrom("--dry", "—DRY", "--single-use"), { maxLength: 2 }),
        fc.nat(),
        (room, via, roomHow, users, flagWords, flagAt) => {
          const id = `${room.sigil}${room.local}:${room.server}`;
          const query = via.length === 0 ? "" : `?${via.map((v) => `via=${encodeURIComponent(v)}`).join("&")}`;
          const expectedVia = roomHow === 0 ? [] : via;
          const roomText = [
            id,
            `https://matrix.to/#/${id}${query}`,
            `https://matrix.to/#/${encodeURIComponent(id)}${query}`,
            `matrix:${room.sigil === "!" ? "roomid" : "r"}/${encodeURIComponent(`${room.local}:${room.server}`)}${query}`,
            `https://matrix.to/#/${encodeURIComponent(id)}/$event:example.org${query}`,
          ][roomHow]!;
          const words: Written[] = [plain(roomText), ...users.map(([u, how], n) => writeUser(u, how, n))];
          const flags = flagWords.filter((f) => !f.includes("single"));
          words.splice(flagAt % (words.length + 1), 0, ...flags.map(plain));
          const body = `!release ${words.map((w) => w.body).join(" ")}`;
          const formattedBody = `!release ${words.map((w) => w.html).join(" ")}`;
          const r = parseCommandLine(TABLE, body, { formattedBody });
          if (flags.length > 0) {
            // release has no flags: the first flag is reported, with the usage line.
            expect(r.kind).toBe("usage-error");
            return;
          }
          expect(r.kind).toBe("ok");
          if (r.kind !== "ok") return;
          const expectedRoom = room.sigil === "!" ? { kind: "id", roomId: id, via: expectedVia } : { kind: "alias", alias: id, via: expectedVia };
          expect(argOf(r.args, "room", "room")).toEqual(expectedRoom);
          expect(argsOf(r.args, "user", "user")).toEqual(users.map(([u]) => u));
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe("fuzz: tokenize", () => {
  it("never throws, and splits quote-free text at whitespace", () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fragment, separator), { maxLength: 30 }), (pieces) => {
        const text = pieces.join("");
        const r = tokenize(text);
        expect(typeof r.ok).toBe("boolean");
        if (!/["'“\\]/.test(text)) {
          expect(r).toEqual({ ok: true, tokens: text.split(/\s+/).filter((t) => t !== "") });
        }
        if (!r.ok) expect(r.error).toMatch(/unterminated/);
      }),
      { numRuns: 3000 },
    );
  });
});

describe("fuzz: splitMessage", () => {
  const line = fc.oneof(
    { weight: 4, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
    { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
    { weight: 1, arbitrary: anyCodeUnit },
    { weight: 1, arbitrary: special.map((s) => s.repeat(30)) },
  );
  const noNewline = line.map((l) => l.replace(/[\r\n]/g, " "));
  const part: fc.Arbitrary<Part> = fc.oneof(
    fc.array(noNewline, { minLength: 1, maxLength: 6 }).map((ls) => ({ text: ls.join("\n"), html: `<p>${ls.map(escapeHtml).join("<br>")}</p>` })),
    noNewline.map((l) => paragraph(l)),
    fc.array(noNewline, { maxLength: 40 }).map((items) => list(items)),
    fc
      .tuple(fc.array(noNewline, { minLength: 1, maxLength: 3 }), fc.array(fc.array(noNewline, { maxLength: 3 }), { maxLength: 40 }))
      .map(([h, rows]) => table(h, rows)),
    fc.tuple(noNewline, fc.integer({ min: 1, max: 400 })).map(([l, n]) => ({ text: l.repeat(n), html: escapeHtml(l.repeat(n)) })),
  );

  it("keeps every line and every message under the limit", () => {
    fc.assert(
      fc.property(fc.array(part, { maxLength: 8 }), fc.integer({ min: 256, max: 6000 }), (parts, maxBytes) => {
        const messages = splitMessage(parts, maxBytes);
        for (const m of messages) {
          expect(Buffer.byteLength(JSON.stringify(m))).toBeLessThanOrEqual(maxBytes);
          expect(m.format).toBe("org.matrix.custom.html");
        }
        const all = messages
          .map((m) => m.body)
          .join("\n")
          .split(`${CUT_MARKER}\n`)
          .join("");
        for (const p of parts) for (const l of p.text.split("\n")) expect(all).toContain(l);
        if (parts.length === 0) expect(messages).toEqual([]);
      }),
      { numRuns: 1000 },
    );
  });
});
