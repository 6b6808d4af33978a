import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { DirectoryUser } from "../../src/idp/types.ts";
import { checkUserIdTemplate, createUserMapper, type UserMappingOptions } from "../../src/idp/user-mapping.ts";
import { localpartOf, parseUserId, serverNameOf } from "../../src/matrix/ids.ts";

const base: UserMappingOptions = {
  attribute: "uid",
  template: "@{uid}:{domain}",
  domain: "example.org",
  lowercase: true,
  renamedUsers: {},
};

function user(attributes: Record<string, string>, id = "u1"): DirectoryUser {
  return { id, attributes, enabled: true };
}

function mapWith(opts: Partial<UserMappingOptions>, attributes: Record<string, string>, id = "u1") {
  return createUserMapper({ ...base, ...opts })(user(attributes, id));
}

describe("user mapping", () => {
  it("fills the template from the configured attribute and the domain", () => {
    expect(mapWith({}, { uid: "alice" })).toEqual({ ok: true, userId: "@alice:example.org" });
    expect(mapWith({ attribute: "sAMAccountName" }, { uid: "x", sAMAccountName: "bob" })).toEqual({
      ok: true,
      userId: "@bob:example.org",
    });
  });

  it("reads any attribute with {attr:name} and keeps literal text", () => {
    const mapped = mapWith({ template: "@ext.{attr:employeeNumber}_{uid}:matrix.{domain}" }, { uid: "carol", employeeNumber: "0042" });
    expect(mapped).toEqual({ ok: true, userId: "@ext.0042_carol:matrix.example.org" });
  });

  it("lower-cases the localpart and the domain when asked", () => {
    expect(mapWith({ domain: "Example.ORG" }, { uid: "Alice.Liddell" })).toEqual({ ok: true, userId: "@alice.liddell:example.org" });
    expect(mapWith({ lowercase: false }, { uid: "Alice" })).toEqual({ ok: true, userId: "@Alice:example.org" });
  });

  it("refuses a user without the attribute, or with it empty", () => {
    expect(mapWith({ attribute: "mail", template: "@{uid}:{domain}" }, { uid: "x" }, "alice")).toEqual({
      ok: false,
      reason: 'user "alice" has no attribute mail',
    });
    expect(mapWith({ template: "@{attr:mail}:{domain}" }, { uid: "x" }, "alice")).toEqual({
      ok: false,
      reason: 'user "alice" has no attribute mail',
    });
    expect(mapWith({}, { uid: "" }, "alice")).toEqual({ ok: false, reason: 'user "alice" has an empty attribute uid' });
  });

  it("does not read inherited properties as attributes", () => {
    expect(mapWith({ attribute: "constructor" }, { uid: "a" }).ok).toBe(false);
    expect(mapWith({ template: "@{attr:__proto__}:{domain}" }, { uid: "a" }).ok).toBe(false);
    expect(mapWith({ lowercase: false }, { uid: "toString" })).toEqual({ ok: true, userId: "@toString:example.org" });
    expect(mapWith({ renamedUsers: {} }, { uid: "constructor" })).toEqual({ ok: true, userId: "@constructor:example.org" });
  });

  it("applies renames after lower-casing, by full id or by localpart", () => {
    const renamedUsers = { "@jdoe:example.org": "@jane.doe:example.org", old: "new", "@moved:example.org": "@moved:other.example" };
    expect(mapWith({ renamedUsers }, { uid: "JDoe" })).toEqual({ ok: true, userId: "@jane.doe:example.org" });
    expect(mapWith({ renamedUsers }, { uid: "old" })).toEqual({ ok: true, userId: "@new:example.org" });
    expect(mapWith({ renamedUsers }, { uid: "moved" })).toEqual({ ok: true, userId: "@moved:other.example" });
    // A rename target is checked like any other id.
    expect(mapWith({ renamedUsers: { a: "Not Valid" } }, { uid: "a" })).toMatchObject({ ok: false });
    expect(mapWith({ renamedUsers: { a: "x:evil.org" } }, { uid: "a" })).toMatchObject({ ok: false });
  });

  it("skips ids outside the Matrix grammar, naming the user and the id", () => {
    expect(mapWith({}, { uid: "Bad Name" }, "heidi")).toEqual({
      ok: false,
      reason: 'user "heidi": "@bad name:example.org" is not a valid Matrix user id',
    });
    // The historical grammar allows more, but not with lowercase on.
    expect(mapWith({ lowercase: false }, { uid: "Hist!" })).toEqual({ ok: true, userId: "@Hist!:example.org" });
    expect(mapWith({}, { uid: "hist!" }, "h")).toEqual({
      ok: false,
      reason:
        'user "h": "@hist!:example.org" is not a valid Matrix user id (a localpart may only hold a-z, 0-9 and ._=/+-)',
    });
    expect(mapWith({}, { uid: "jörg" }).ok).toBe(false);
    expect(mapWith({ lowercase: false }, { uid: "jörg" }).ok).toBe(false);
    expect(mapWith({}, { uid: "x".repeat(300) }).ok).toBe(false);
    expect(mapWith({ domain: "bad domain" }, { uid: "a" }).ok).toBe(false);
  });

  it("never lets a hostile value change the server or yield a wrong id", () => {
    for (const lowercase of [true, false]) {
      for (const uid of ["a:b", "bob:evil.org", "x:evil.org:8448", "", ":", "@", "a\nb", "a b", "alice@evil.org"]) {
        const mapped = mapWith({ lowercase }, { uid });
        if (mapped.ok) {
          expect(serverNameOf(mapped.userId)).toBe("example.org");
          expect(localpartOf(mapped.userId)).toBe(lowercase ? uid.toLowerCase() : uid);
        }
      }
      expect(mapWith({ lowercase }, { uid: "bob:evil.org" })).toEqual({
        ok: false,
        reason: `user "u1": localpart "bob:evil.org" contains ':'`,
      });
    }
    // Even with a template whose server part is empty-ish.
    expect(mapWith({ template: "@{uid}:{attr:hs}" }, { uid: "bob:evil.org", hs: "x" }).ok).toBe(false);
  });

  it("property: any attribute value maps to a valid id on our server holding exactly that value, or is refused", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary-ascii", maxLength: 30 }), fc.boolean(), (uid, lowercase) => {
        const mapped = mapWith({ lowercase }, { uid });
        if (!mapped.ok) return;
        expect(parseUserId(mapped.userId)).toBe(mapped.userId);
        expect(serverNameOf(mapped.userId)).toBe("example.org");
        expect(localpartOf(mapped.userId)).toBe(lowercase ? uid.toLowerCase() : uid);
        if (lowercase) expect(localpartOf(mapped.userId)).toMatch(/^[a-z0-9._=/+-]+$/);
      }),
      { numRuns: 2000 },
    );
  });

  it("reports a bad template for every user instead of throwing", () => {
    expect(checkUserIdTemplate("@{uid}:{domain}")).toBeUndefined();
    expect(checkUserIdTemplate("{uid}:{domain}")).toMatch(/must start with '@'/);
    expect(checkUserIdTemplate("@{uid}")).toMatch(/no ':'/);
    expect(checkUserIdTemplate("@{uid}:")).toMatch(/empty server part/);
    expect(checkUserIdTemplate("@:{domain}")).toMatch(/empty localpart/);
    expect(checkUserIdTemplate("@{nope}:{domain}")).toMatch(/unknown placeholder \{nope\}/);
    expect(checkUserIdTemplate("@{uid:{domain}")).toMatch(/unbalanced/);
    expect(mapWith({ template: "@{mail}:{domain}" }, { uid: "a" }, "alice")).toEqual({
      ok: false,
      reason: 'user "alice": user id template "@{mail}:{domain}" has an unknown placeholder {mail}',
    });
  });

  it("never throws, even on input outside the declared types", () => {
    const mapper = createUserMapper(base);
    const hostile = [
      { id: "x", attributes: null, enabled: true },
      { id: "x", attributes: { uid: 42 }, enabled: true },
      { id: undefined, attributes: undefined, enabled: true },
    ] as unknown as DirectoryUser[];
    for (const u of hostile) expect(mapper(u).ok).toBe(false);
  });
});
