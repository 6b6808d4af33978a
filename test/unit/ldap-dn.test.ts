import { FilterParser } from "ldapts";
import { describe, expect, it } from "vitest";
import { firstRdnValue, isUnder, normalizeDn } from "../../src/idp/dn.ts";
import { inChainFilter, stripUidSuffix } from "../../src/idp/ldap.ts";

describe("normalizeDn", () => {
  it("gives one key for the many ways one entry is written", () => {
    const key = normalizeDn("uid=alice,ou=people,dc=example,dc=org");
    expect(key).toBe("uid=alice,ou=people,dc=example,dc=org");
    for (const form of [
      "UID=Alice,OU=People,DC=Example,DC=Org",
      "uid=alice, ou=people , dc=example,dc=org",
      "uid=\\61lice,ou=people,dc=example,dc=org",
      ' uid = alice ,ou="people",dc=example,dc=org',
    ]) {
      expect(normalizeDn(form)).toBe(key);
    }
  });

  it("keeps escaped separators inside values and orders multi-valued RDNs", () => {
    expect(normalizeDn("cn=Doe\\, John,ou=people,dc=x")).toBe("cn=doe\\, john,ou=people,dc=x");
    expect(normalizeDn("cn=a+uid=b,dc=x")).toBe(normalizeDn("uid=b+cn=a,dc=x"));
    expect(normalizeDn("cn=Jos\\C3\\A9 M\\C3\\BCller,dc=x")).toBe("cn=josé müller,dc=x");
    expect(normalizeDn("cn=José Müller,dc=x")).toBe("cn=josé müller,dc=x");
  });

  it("refuses malformed DNs instead of guessing", () => {
    for (const bad of ["", "alice", "cn=,dc=x", "=x,dc=y", "cn=a\\", 'cn="open,dc=x', "cn=\\ZZ,dc=x", "1cn=a,dc=x"]) {
      expect(normalizeDn(bad), bad).toBeUndefined();
    }
  });

  it("knows what lies under a base", () => {
    expect(isUnder("uid=a,ou=people,dc=x", "ou=people,dc=x")).toBe(true);
    expect(isUnder("uid=a,ou=otherpeople,dc=x", "ou=people,dc=x")).toBe(false);
    expect(firstRdnValue("cn=Eng\\, Leads,ou=groups,dc=x")).toBe("Eng, Leads");
  });
});

describe("values that reach LDAP", () => {
  it("strips the optional unique identifier of uniqueMember", () => {
    expect(stripUidSuffix("uid=a,dc=x#'0101'B")).toBe("uid=a,dc=x");
    expect(stripUidSuffix("cn=a\\#b,dc=x")).toBe("cn=a\\#b,dc=x");
  });

  it("escapes a hostile group DN in the in-chain filter (RFC 4515)", () => {
    const filter = inChainFilter("(objectClass=user)", "cn=x*)(uid=*,dc=x");
    const text = filter.toString();
    expect(text).toBe("(&(objectClass=user)(memberOf:1.2.840.113556.1.4.1941:=cn=x\\2a\\29\\28uid=\\2a,dc=x))");
    // Parsed back, it is still one AND of two terms: the value did not open a new term.
    const parsed = FilterParser.parseString(text) as unknown as { filters: unknown[] };
    expect(parsed.filters).toHaveLength(2);
  });
});
