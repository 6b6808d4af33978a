/**
 * `sync.kickOn` (and its older form `sync.kick`) and `users.renamedLocalparts` as the loader
 * reads them: the values they give, and every refusal with its path and line.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig, type ConfigResult, type LoadedConfig } from "../../src/config/load.ts";

const BASE = `homeserver: { url: http://127.0.0.1:8008, accessToken: t }
idp: { kind: static, static: { file: directory.yaml } }
`;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-config-kick-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function load(extra: string, env: NodeJS.ProcessEnv = {}): ConfigResult {
  const path = join(dir, "config.yaml");
  writeFileSync(path, BASE + extra);
  return loadConfig({ path, env, cwd: dir });
}

function ok(r: ConfigResult): LoadedConfig {
  if (!r.ok) throw new Error(r.errors.map(formatConfigError).join("\n"));
  return r;
}

function errors(r: ConfigResult): string[] {
  if (r.ok) throw new Error("expected the config to be rejected");
  return r.errors.map(formatConfigError);
}

describe("sync.kickOn", () => {
  it("is always by default, and each of the four rules loads as written", () => {
    expect(ok(load("")).config.sync.kickOn).toBe("always");
    for (const rule of ["always", "manual", "scheduled", "never"]) expect(ok(load(`sync: { kickOn: ${rule} }\n`)).config.sync.kickOn).toBe(rule);
  });

  it("sync.kick keeps its meaning: true is always, false is never; the loaded config has kickOn only", () => {
    const on = ok(load("sync: { kick: true }\n")).config;
    expect(on.sync.kickOn).toBe("always");
    const off = ok(load("sync: { kick: false }\n"));
    expect(off.config.sync.kickOn).toBe("never");
    expect("kick" in off.config.sync).toBe(false);
    // check-config's sources say where the rule came from.
    const sources = new Map(off.sources.map((s) => [s.key, s.source]));
    expect(sources.get("sync.kick")).toBe("file");
    expect(sources.get("sync.kickOn")).toBe("file (sync.kick)");
    expect(new Map(ok(load("")).sources.map((s) => [s.key, s.source])).get("sync.kickOn")).toBe("default");
  });

  it("refuses both keys, naming both, at the line of sync.kick", () => {
    expect(errors(load("sync:\n  kickOn: manual\n  kick: false\n"))).toEqual([
      "/sync/kick: sync.kick and sync.kickOn are both set; give only sync.kickOn (sync.kick: true is kickOn: always, sync.kick: false is kickOn: never) (line 5)",
    ]);
  });

  it("refuses both when one comes from the environment, naming the variable", () => {
    const e = errors(load("sync: { kick: false }\n", { MGS_SYNC_KICK_ON: "manual" }));
    expect(e).toHaveLength(1);
    expect(e[0]).toMatch(/^\/sync\/kick: sync\.kick and sync\.kickOn are both set/);
    const fromEnv = ok(load("", { MGS_SYNC_KICK_ON: "scheduled" }));
    expect(fromEnv.config.sync.kickOn).toBe("scheduled");
    expect(fromEnv.sources.find((s) => s.key === "sync.kickOn")?.source).toBe("MGS_SYNC_KICK_ON");
  });

  it("refuses an unknown rule with the four it knows", () => {
    expect(errors(load("sync: { kickOn: cautious }\n"))).toEqual(['/sync/kickOn: must be one of: always, manual, scheduled, never (got "cautious") (line 3)']);
    expect(errors(load("sync: { kickOn: true }\n"))[0]).toMatch(/^\/sync\/kickOn: must be one of: always, manual, scheduled, never/);
  });
});

describe("users.renamedLocalparts", () => {
  it("loads localparts, directory's → account's; absent is empty", () => {
    expect(ok(load("")).config.users.renamedLocalparts).toEqual({});
    const c = ok(load("users: { domain: example.org, renamedLocalparts: { jane.doe: jdoe, testnew: testold } }\n")).config;
    expect(c.users.renamedLocalparts).toEqual({ "jane.doe": "jdoe", testnew: "testold" });
    expect(c.users.renamedUsers).toEqual({});
  });

  it("refuses what is not a localpart, naming the key", () => {
    const e = errors(load('users:\n  renamedLocalparts:\n    "jane doe": jdoe\n    jd: "@jdoe:example.org"\n    "@x:example.org": x\n    ok: "a b"\n'));
    expect(e).toEqual([
      '/users/renamedLocalparts/jane doe: key "jane doe" is not a valid Matrix localpart (printable ASCII without ":" or spaces, e.g. jdoe) (line 5)',
      '/users/renamedLocalparts/jd: "@jdoe:example.org" is a full user id; renamedLocalparts takes localparts (e.g. jdoe): write full ids in users.renamedUsers (line 6)',
      '/users/renamedLocalparts/@x:example.org: key "@x:example.org" is a full user id; renamedLocalparts takes localparts (e.g. jdoe): write full ids in users.renamedUsers (line 7)',
      '/users/renamedLocalparts/ok: "a b" is not a valid Matrix localpart (printable ASCII without ":" or spaces, e.g. jdoe) (line 8)',
    ]);
  });

  it("with users.lowercase on, refuses a key with capitals (it would never match) and a value outside the new-id grammar", () => {
    const e = errors(load("users:\n  renamedLocalparts:\n    Jane.Doe: jdoe\n    jd: JDoe\n"));
    expect(e).toEqual([
      '/users/renamedLocalparts/Jane.Doe: key "Jane.Doe" never matches: users.lowercase is on, so built ids are lower case; write "jane.doe" (line 5)',
      '/users/renamedLocalparts/jd: "JDoe" is not a localpart of a new Matrix id (only a-z, 0-9 and ._=/+-), which users.lowercase requires; write it lower case, or set users.lowercase: false for historical ids (line 6)',
    ]);
    expect(ok(load("users: { lowercase: false, renamedLocalparts: { Jane.Doe: JDoe } }\n")).config.users.renamedLocalparts).toEqual({ "Jane.Doe": "JDoe" });
  });

  it("refuses one user renamed in both forms", () => {
    const e = errors(load('users:\n  domain: example.org\n  renamedUsers: { "@jane.doe:example.org": "@jd:example.org" }\n  renamedLocalparts: { jane.doe: jdoe }\n'));
    expect(e).toEqual(['/users/renamedLocalparts/jane.doe: "jane.doe" is also renamed in users.renamedUsers ("@jane.doe:example.org"): rename each user in one of the two (line 6)']);
    // Another server's user of the same localpart is someone else.
    ok(load('users:\n  domain: example.org\n  renamedUsers: { "@jane.doe:other.org": "@jd:other.org" }\n  renamedLocalparts: { jane.doe: jdoe }\n'));
  });

  it("renamedUsers still takes full ids only, and says where localparts go", () => {
    expect(errors(load("users: { renamedUsers: { jane.doe: jdoe } }\n"))[0]).toMatch(/^\/users\/renamedUsers\/jane\.doe: .*not a valid Matrix user id/);
  });
});
