/**
 * What a reply echoes back carries no control or bidi characters: every builder of a reply
 * part, so every command's reply (management room and CLI) is covered.
 */
import { describe, expect, it } from "vitest";
import { parseCommandLine } from "../../src/commands/parse.ts";
import { blocks, bold, code, list, paragraph, preformatted, splitMessage, table } from "../../src/commands/render.ts";
import { commandTable } from "../../src/commands/table.ts";

// eslint-disable-next-line no-control-regex -- finding control characters is the point
const UNSAFE = /[\u0000-\u0009\u000B-\u001F\u007F-\u009F\u061C\u200B\u200E\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF]/;
const HOSTILE = "a\u0000b\u202Ec\u2066d\u2069e\u200Ef\u200Fg\u061Ch\u001B[31mi\u0085j\u009Bk\u007Fl";

function allText(parts: readonly { text: string; html: string }[]): string[] {
  return [...parts.flatMap((p) => [p.text, p.html]), ...splitMessage(parts).flatMap((m) => [m.body, m.formatted_body])];
}

describe("echoed text is cleaned by every builder", () => {
  it("paragraphs, code, bold, lists, tables and preformatted blocks", () => {
    const parts = [
      paragraph(`Refused: ${HOSTILE}`),
      paragraph(code(HOSTILE), " and ", bold(HOSTILE)),
      list([HOSTILE, [code(HOSTILE), ` — ${HOSTILE}`]]),
      table(["entry", HOSTILE], [[HOSTILE, "x"]]),
      preformatted(HOSTILE),
      blocks([paragraph(HOSTILE)]),
    ];
    for (const text of allText(parts)) {
      expect(text).not.toMatch(UNSAFE);
      expect(text).toContain("abcdefgh");
    }
  });

  it("keeps what is legitimate: newlines of a multi-line block, emoji joiners, accents", () => {
    expect(paragraph("one\r\ntwo\rthree\u2028four")).toEqual({ text: "one\ntwo\nthree\nfour", html: "<p>one<br>two<br>three<br>four</p>" });
    expect(preformatted("line 1\nline 2").text).toBe("line 1\nline 2");
    const family = "👩\u200D👩\u200D👧 Zoë";
    expect(paragraph(family).text).toBe(family);
    expect(table(["a"], [["x\ny"]]).text).toBe("a\n---\nx y");
  });

  it("a usage error that quotes the argument, as serve sends it", () => {
    const parsed = parseCommandLine(commandTable(), `!release "${HOSTILE}"`);
    expect(parsed.kind).toBe("usage-error");
    if (parsed.kind !== "usage-error") return;
    for (const text of allText([paragraph(parsed.message)])) expect(text).not.toMatch(UNSAFE);
  });
});
