/** The one helper that hides a URL's credentials before it is shown (src/redact-url.ts). */
import { describe, expect, it } from "vitest";
import { redactUrl, redactUrlsInText } from "../../src/redact-url.ts";

describe("redactUrl", () => {
  it.each([
    ["https://alice:secret@hs.example.org/x", "https://alice:***@hs.example.org/x"],
    ["https://TOKEN@hs.example.org", "https://***@hs.example.org/"],
    ["https://:secret@hs.example.org", "https://:***@hs.example.org/"],
    ["ldaps://admin:pw@ldap.example.org:636", "ldaps://admin:***@ldap.example.org:636"],
    ["postgres://mgs:pw@db/mgs?sslmode=require&password=x", "postgres://mgs:***@db/mgs?sslmode=require&password=***"],
    ["https://hs.example.org/_matrix?access_token=syt_x", "https://hs.example.org/_matrix?access_token=***"],
    ["https://hs.example.org/_matrix/client/v3/profile/@bob:example.org", "https://hs.example.org/_matrix/client/v3/profile/@bob:example.org"],
  ])("%s → %s", (input, expected) => {
    expect(redactUrl(input)).toBe(expected);
    expect(redactUrl(new URL(input))).toBe(expected);
  });

  it("leaves a URL with nothing to hide as it was written", () => {
    expect(redactUrl("https://hs.example.org:8448")).toBe("https://hs.example.org:8448");
    expect(redactUrl(new URL("https://hs.example.org:8448"))).toBe("https://hs.example.org:8448/");
  });

  it.each([
    ["host=db password=secret", "a key=value connection string"],
    ["postgres://u:pa#ss@db/x", "a # that may have cut the password"],
    ["postgres://u:p@ss@db/x", "a second @"],
    ["not a url", "text"],
  ])("hides %s whole (%s)", (input) => {
    expect(redactUrl(input)).toBe("***");
  });
});

describe("redactUrlsInText", () => {
  it("hides the userinfo of each URL in running text, and nothing else", () => {
    expect(redactUrlsInText("at https://a:b@x.org/p and ldap://tok@y.org, then @bob:example.org")).toBe(
      "at https://a:***@x.org/p and ldap://***@y.org, then @bob:example.org",
    );
    expect(redactUrlsInText('{"url":"https://hs.example.org","user":"@bot:example.org"}')).toBe(
      '{"url":"https://hs.example.org","user":"@bot:example.org"}',
    );
    expect(redactUrlsInText("https://u@v:pw@host/")).toBe("https://***@host/");
  });
});
