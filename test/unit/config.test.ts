import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig, type ConfigError, type ConfigResult } from "../../src/config/load.ts";
import { redactConfig } from "../../src/config/redact.ts";
import { DEFAULT_KICK_REASON, type Config } from "../../src/config/schema.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

const MINIMAL = `
homeserver:
  url: http://127.0.0.1:8008
  accessToken: syt_minimal_token
idp:
  kind: static
  static:
    file: directory.yaml
`;

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-config-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = join(dir, name);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

/** Writes config.yaml into the temp dir and loads it with the given environment only. */
function load(yaml: string, env: NodeJS.ProcessEnv = {}, cwd = dir): ConfigResult {
  const path = write("config.yaml", yaml);
  return loadConfig({ path, env, cwd });
}

function configOf(result: ConfigResult): Config {
  if (!result.ok) throw new Error(`expected a valid config, got:\n${result.errors.map(formatConfigError).join("\n")}`);
  return result.config;
}

function errorsOf(result: ConfigResult): readonly ConfigError[] {
  if (result.ok) throw new Error("expected the config to be rejected");
  return result.errors;
}

function errorAt(errors: readonly ConfigError[], path: string): ConfigError {
  const found = errors.find((e) => e.path === path);
  if (found === undefined) throw new Error(`no error at ${path}; errors:\n${errors.map(formatConfigError).join("\n")}`);
  return found;
}

describe("loadConfig: valid files", () => {
  it("fills every default into a minimal config", () => {
    const config = configOf(load(MINIMAL));
    const expected: Config = {
      homeserver: {
        url: "http://127.0.0.1:8008",
        accessToken: "syt_minimal_token",
        concurrency: 4,
        requestTimeoutMs: 30_000,
        maxRetries: 5,
        maxRetryWaitMs: 300_000,
      },
      dataDir: join(dir, "data"),
      roles: { member: 0, moderator: 50, admin: 100 },
      idp: { kind: "static", static: { file: join(dir, "directory.yaml") } },
      users: { attribute: "uid", template: "@{uid}:{domain}", lowercase: true, renamedUsers: {}, renamedLocalparts: {} },
      mapping: {
        rooms: [],
        convention: {
          enabled: false,
          prefix: "MTRX ",
          ownersSuffix: "_owners",
          ownersRole: "moderator",
          memberRole: "member",
        },
      },
      sync: { kickOn: "always", kickReason: DEFAULT_KICK_REASON, maxRemovals: {}, ignoreUsers: [], maxDepth: 10, createRooms: true, createRoomInvites: 10 },
      rooms: { defaults: { encryption: false }, overrides: {} },
      spaces: [],
      retention: { runs: "90d", tokenAudit: "365d" },
      log: { level: "info", format: "json" },
    };
    expect(config).toEqual(expected);
    expect("database" in config).toBe(false);
    expect("managedDomains" in config).toBe(false);
    expect("accessTokenFile" in config.homeserver).toBe(false);
  });

  it("gives each load its own copy of the default roles", () => {
    const a = configOf(load(MINIMAL));
    const b = configOf(load(MINIMAL));
    expect(a.roles).not.toBe(b.roles);
  });

  it("loads the example file, without reading the directory file it names", () => {
    // Copied alone into an empty folder: directory.yaml does not exist there.
    const copy = join(dir, "config.yaml");
    copyFileSync(join(repoRoot, "examples/config.yaml"), copy);
    const result = loadConfig({ path: copy, env: {} });
    const config = configOf(result);
    expect(config.homeserver.url).toBe("http://127.0.0.1:8008");
    expect(config.idp).toEqual({ kind: "static", static: { file: join(dir, "directory.yaml") } });
    expect(config.mapping.rooms.length).toBeGreaterThan(0);

    // And in place, as check-config would load it.
    const inPlace = loadConfig({ path: "examples/config.yaml", env: {}, cwd: repoRoot });
    expect(configOf(inPlace).idp).toEqual({ kind: "static", static: { file: join(repoRoot, "examples/directory.yaml") } });
    if (inPlace.ok) expect(inPlace.path).toBe(join(repoRoot, "examples/config.yaml"));
  });

  it("resolves dataDir against the config file's folder, not the working directory", () => {
    const path = write("etc/mgs/config.yaml", `${MINIMAL}\ndataDir: state\n`);
    const config = configOf(loadConfig({ path, env: {}, cwd: "/somewhere/else" }));
    expect(config.dataDir).toBe(join(dir, "etc/mgs/state"));
  });

  it("takes the file from MGS_CONFIG, relative to cwd, when no path is passed", () => {
    write("conf/mgs.yaml", MINIMAL);
    const result = loadConfig({ env: { MGS_CONFIG: "conf/mgs.yaml" }, cwd: dir });
    expect(result.ok && result.path).toBe(join(dir, "conf/mgs.yaml"));
  });
});

describe("loadConfig: errors", () => {
  it("asks for a file when there is neither a path nor MGS_CONFIG", () => {
    const errors = errorsOf(loadConfig({ env: {}, cwd: dir }));
    expect(errors).toEqual([{ path: "", message: expect.stringContaining("MGS_CONFIG") as unknown }]);
  });

  it("names a missing config file", () => {
    const errors = errorsOf(loadConfig({ path: "nope.yaml", env: {}, cwd: dir }));
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toContain(join(dir, "nope.yaml"));
    expect(errors[0]!.message).toContain("no such file");
  });

  it("reports an empty file", () => {
    expect(errorsOf(load("")).map((e) => e.message)).toEqual([expect.stringContaining("is empty") as unknown]);
  });

  it("names line and column of a YAML syntax error", () => {
    const errors = errorsOf(load("homeserver:\n  url: http://x\n\taccessToken: t\nidp: {}\n"));
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]!.path).toBe("");
    expect(errors[0]!.message).toMatch(/^YAML syntax error in .*config\.yaml at line 3, column 1: Tabs are not allowed as indentation$/);
  });

  it("rejects duplicate keys, naming the line", () => {
    const errors = errorsOf(load(`${MINIMAL}log: { level: info }\nlog: { level: warn }\n`));
    expect(errors[0]!.message).toMatch(/line 10, column 1: Map keys must be unique/);
  });

  it("reports an unknown key at every depth with its exact path", () => {
    const errors = errorsOf(
      load(`
homeserver:
  url: http://127.0.0.1:8008
  accessToken: t
  color: red
idp:
  kind: static
  static: { file: d.yaml, watch: true }
mapping:
  rooms:
    - room: "#eng:example.org"
      groups:
        - { group: engineers, rol: moderator }
  convention: { enabeld: true }
sync:
  maxRemovals: { count: 3, percent: 10 }
colour: blue
`),
    );
    expect(errors.map((e) => e.path).sort()).toEqual(
      [
        "/colour",
        "/homeserver/color",
        "/idp/static/watch",
        "/mapping/rooms/0/groups/0/rol",
        "/mapping/convention/enabeld",
        "/sync/maxRemovals/percent",
      ].sort(),
    );
    for (const e of errors) expect(e.message).toMatch(/^unknown key/);
    expect(errorAt(errors, "/homeserver/color").message).toBe(
      "unknown key; allowed here: accessToken, accessTokenFile, concurrency, maxRetries, maxRetryWaitMs, password, passwordFile, requestTimeoutMs, url, user",
    );
    expect(errorAt(errors, "/mapping/rooms/0/groups/0/rol").message).toBe('unknown key; did you mean "role"?');
    expect(errorAt(errors, "/mapping/convention/enabeld").message).toBe('unknown key; did you mean "enabled"?');
    expect(errorAt(errors, "/homeserver/color").line).toBe(5);
    expect(formatConfigError(errorAt(errors, "/colour"))).toMatch(/^\/colour: unknown key.* \(line 17\)$/);
  });

  it("names the group entry whose role does not exist", () => {
    const errors = errorsOf(
      load(`${MINIMAL}
mapping:
  rooms:
    - room: "#a:example.org"
      groups: [{ group: a }]
    - room: "!opaque:example.org"
      groups: [{ group: b, role: admin }]
    - room: "#c:example.org"
      groups: [{ group: c, role: moderatr }, { group: d, role: moderator }]
`),
    );
    expect(errors).toEqual([
      { path: "/mapping/rooms/2/groups/0/role", message: 'unknown role "moderatr"; roles are: admin, member, moderator', line: 17 },
    ]);
  });

  it("checks that the roles the mapping and the convention use exist in custom roles", () => {
    const errors = errorsOf(
      load(`${MINIMAL}
roles: { reader: 0, boss: 100 }
mapping:
  rooms:
    - room: "#a:example.org"
      groups: [{ group: a }, { group: b, role: boss }]
  convention: { enabled: true, memberRole: reader }
`),
    );
    expect(errors.map((e) => [e.path, e.message])).toEqual([
      ["/mapping/rooms/0/groups/0/role", 'no role given and the default role "member" is not in roles; roles are: boss, reader'],
      ["/mapping/convention/ownersRole", 'no role given and the default role "moderator" is not in roles; roles are: boss, reader'],
    ]);
  });

  it("does not check the convention's default roles while it is disabled", () => {
    configOf(load(`${MINIMAL}\nroles: { member: 0 }\n`));
  });

  it("rejects accessToken and accessTokenFile together, and neither", () => {
    const both = errorsOf(
      load(MINIMAL.replace("accessToken: syt_minimal_token", "accessToken: abc\n  accessTokenFile: token.txt")),
    );
    expect(both.map((e) => [e.path, e.message])).toContainEqual(["/homeserver", "give accessToken or accessTokenFile, not both"]);

    const neither = errorsOf(load(MINIMAL.replace("  accessToken: syt_minimal_token\n", "")));
    expect(neither.map((e) => [e.path, e.message])).toEqual([
      [
        "/homeserver",
        "give accessToken or accessTokenFile (or set MGS_HOMESERVER_ACCESS_TOKEN or MGS_HOMESERVER_ACCESS_TOKEN_FILE)",
      ],
    ]);
  });

  it("rejects an empty database section: it needs url or urlFile", () => {
    const errors = errorsOf(load(`${MINIMAL}database: {}\n`));
    expect(errors.map((e) => e.path)).toEqual(["/database"]);
    expect(errors[0]!.message).toMatch(/^give url or urlFile/);
  });

  it("names the index of a regex that does not compile", () => {
    const errors = errorsOf(load(`${MINIMAL}sync:\n  ignoreUsers: ["@.*-bot:example.org", "@(unclosed:example.org"]\n`));
    expect(errors).toEqual([
      { path: "/sync/ignoreUsers/1", message: "not a valid regular expression: Unterminated group", line: 10 },
    ]);
  });

  it("validates Matrix ids in renamedUsers (keys and values) and rooms, and duplicate rooms", () => {
    const errors = errorsOf(
      load(`${MINIMAL}
users:
  renamedUsers: { "jdoe": "@jane:example.org", "@old:example.org": "new" }
mapping:
  rooms:
    - { room: "engineering", groups: [{ group: a }] }
    - { room: "#b:example.org", groups: [{ group: b }] }
    - { room: "#b:example.org", groups: [{ group: c }] }
`),
    );
    expect(errors.map((e) => [e.path, e.message])).toEqual([
      ["/users/renamedUsers/@old:example.org", '"new" is not a valid Matrix user id (expected @localpart:server; for localparts use users.renamedLocalparts)'],
      ["/users/renamedUsers/jdoe", '"jdoe" is not a valid Matrix user id (expected @localpart:server; for localparts use users.renamedLocalparts)'],
      ["/mapping/rooms/0/room", '"engineering" is neither a room alias (#name:server) nor a room id (!id or !id:server)'],
      ["/mapping/rooms/2/room", '"#b:example.org" is already listed at /mapping/rooms/1; list its groups in one entry'],
    ]);
  });

  it("explains types, ranges, enums, kinds and required keys in plain words", () => {
    const errors = errorsOf(
      load(`
homeserver:
  url: ftp://127.0.0.1
  accessToken: t
  concurrency: 0
  maxRetries: lots
idp: { kind: carrier-pigeon }
users: { template: "@{name}:{domain}" }
mapping:
  rooms:
    - { room: "#a:example.org", groups: [] }
sync: { maxRemovals: { share: 1.5, count: -1 }, maxDepth: 0 }
log: { level: loud }
`),
    );
    expect(errors.map((e) => `${e.path}: ${e.message}`)).toEqual([
      '/homeserver/url: not a valid http or https URL (got "ftp://127.0.0.1")',
      "/homeserver/concurrency: must be at least 1",
      '/homeserver/maxRetries: expected a number, got "lots"',
      '/idp/kind: unknown kind "carrier-pigeon"; kinds are: static, ldap, azure',
      "/users/template: unknown placeholder {name}; use {uid}, {domain} or {attr:<name>}",
      "/mapping/rooms/0/groups: must have at least 1 entry",
      "/sync/maxRemovals/count: must be at least 0",
      "/sync/maxRemovals/share: must be at most 1",
      "/sync/maxDepth: must be at least 1",
      "/log/level: must be one of: trace, debug, info, warn, error (got \"loud\")",
    ]);
    const missing = errorsOf(load("homeserver: { accessToken: t }\n"));
    expect(missing.map((e) => `${e.path}: ${e.message}`)).toEqual(["/homeserver/url: required", "/idp: required"]);
    expect(missing[0]!.line).toBe(1); // the line of the object that lacks the key
  });

  it("collects every error at once", () => {
    const errors = errorsOf(
      load(`
homeserver:
  url: http://127.0.0.1:8008
  accessToken: abc
  accessTokenFile: token.txt
  colour: red
idp: { kind: static, static: { file: d.yaml } }
mapping:
  rooms:
    - { room: "#a:example.org", groups: [{ group: a, role: boss }] }
sync: { ignoreUsers: ["("], maxDepth: 1000 }
log: { format: xml }
`),
    );
    expect(errors.map((e) => e.path)).toEqual([
      "/homeserver",
      "/homeserver/colour",
      "/mapping/rooms/0/groups/0/role",
      "/sync/ignoreUsers/0",
      "/sync/maxDepth",
      "/log/format",
    ]);
  });

  it("never shows a secret's value in a message", () => {
    const errors = errorsOf(load(MINIMAL.replace("syt_minimal_token", "[syt_in_a_list]")));
    expect(errors).toEqual([{ path: "/homeserver/accessToken", message: "expected a string, got a list", line: 4 }]);
    expect(JSON.stringify(errors)).not.toContain("syt_in_a_list");
  });
});

describe("loadConfig: secrets from files", () => {
  it("reads accessTokenFile relative to the config folder and trims the trailing newline", () => {
    write("secrets/token", "syt_from_file\n");
    const config = configOf(load(MINIMAL.replace("accessToken: syt_minimal_token", "accessTokenFile: secrets/token")));
    expect(config.homeserver.accessToken).toBe("syt_from_file");
    expect("accessTokenFile" in config.homeserver).toBe(false);
  });

  it("reads database.urlFile", () => {
    write("db-url", "postgres://sync:pw@db:5432/groups\r\n");
    const config = configOf(load(`${MINIMAL}database: { urlFile: db-url }\n`));
    expect(config.database).toEqual({ url: "postgres://sync:pw@db:5432/groups" });
  });

  it("names the config path and the file when a secret file cannot be read", () => {
    const errors = errorsOf(load(MINIMAL.replace("accessToken: syt_minimal_token", "accessTokenFile: missing-token")));
    expect(errors).toEqual([
      { path: "/homeserver/accessTokenFile", message: `cannot read ${join(dir, "missing-token")}: no such file`, line: 4 },
    ]);
  });

  it("rejects an empty secret file", () => {
    write("token", "\n");
    const errors = errorsOf(load(MINIMAL.replace("accessToken: syt_minimal_token", "accessTokenFile: token")));
    expect(errors.map((e) => [e.path, e.message])).toEqual([["/homeserver/accessTokenFile", `${join(dir, "token")} is empty`]]);
  });
});

describe("loadConfig: environment overrides", () => {
  it("overrides the homeserver URL and the inline token", () => {
    const result = load(MINIMAL, { MGS_HOMESERVER_URL: "https://matrix.example.org", MGS_HOMESERVER_ACCESS_TOKEN: "syt_env" });
    const config = configOf(result);
    expect(config.homeserver.url).toBe("https://matrix.example.org");
    expect(config.homeserver.accessToken).toBe("syt_env");
    expect(result.ok && result.overrides).toEqual([
      { path: "/homeserver/url", env: "MGS_HOMESERVER_URL" },
      { path: "/homeserver/accessToken", env: "MGS_HOMESERVER_ACCESS_TOKEN" },
    ]);
  });

  it("lets an env inline token replace a token file from YAML (the file is not read)", () => {
    const yaml = MINIMAL.replace("accessToken: syt_minimal_token", "accessTokenFile: does-not-exist");
    expect(configOf(load(yaml, { MGS_HOMESERVER_ACCESS_TOKEN: "syt_env" })).homeserver.accessToken).toBe("syt_env");
  });

  it("lets an env token file (relative to cwd) replace an inline token from YAML", () => {
    const cwd = join(dir, "work");
    mkdirSync(cwd);
    write("work/token", "syt_env_file\n");
    const config = configOf(load(MINIMAL, { MGS_HOMESERVER_ACCESS_TOKEN_FILE: "token" }, cwd));
    expect(config.homeserver.accessToken).toBe("syt_env_file");
  });

  it("names the variable when an env token file cannot be read", () => {
    const errors = errorsOf(load(MINIMAL, { MGS_HOMESERVER_ACCESS_TOKEN_FILE: "/nonexistent/token" }));
    expect(errors).toEqual([
      {
        path: "/homeserver/accessTokenFile",
        message: "cannot read /nonexistent/token: no such file (from MGS_HOMESERVER_ACCESS_TOKEN_FILE)",
      },
    ]);
  });

  it("rejects both variables of one secret", () => {
    const errors = errorsOf(load(MINIMAL, { MGS_HOMESERVER_ACCESS_TOKEN: "a", MGS_HOMESERVER_ACCESS_TOKEN_FILE: "/b" }));
    expect(errors.map((e) => [e.path, e.message])).toEqual([
      ["/homeserver", "the environment sets both MGS_HOMESERVER_ACCESS_TOKEN and MGS_HOMESERVER_ACCESS_TOKEN_FILE; set one"],
    ]);
  });

  it("adds a database from MGS_DATABASE_URL, or from MGS_DATABASE_URL_FILE", () => {
    const url = "postgres://sync:pw@db.internal:5432/groups";
    expect(configOf(load(MINIMAL, { MGS_DATABASE_URL: url })).database).toEqual({ url });
    write("db-url", `${url}\n`);
    expect(configOf(load(`${MINIMAL}database: { url: "postgres://other/db" }\n`, { MGS_DATABASE_URL_FILE: "db-url" })).database).toEqual({ url });
  });

  it("resolves MGS_DATA_DIR against the working directory", () => {
    expect(configOf(load(MINIMAL, { MGS_DATA_DIR: "state" }, "/var/lib/mgs")).dataDir).toBe("/var/lib/mgs/state");
  });

  it("treats an empty variable as unset", () => {
    expect(configOf(load(MINIMAL, { MGS_HOMESERVER_URL: "", MGS_DATABASE_URL: "" })).homeserver.url).toBe("http://127.0.0.1:8008");
  });

  it("names the variable when its value is invalid", () => {
    const errors = errorsOf(load(MINIMAL, { MGS_HOMESERVER_URL: "matrix.example.org" }));
    expect(errors).toEqual([
      { path: "/homeserver/url", message: 'not a valid http or https URL (got "matrix.example.org") (from MGS_HOMESERVER_URL)' },
    ]);
  });
});

describe("redactConfig", () => {
  it("hides every secret and keeps the database host readable", () => {
    const token = "syt_c2VjcmV0LXRva2Vu_abcdef";
    const password = "hunter2-very-secret";
    const config = configOf(
      load(MINIMAL.replace("syt_minimal_token", token), { MGS_DATABASE_URL: `postgres://sync:${password}@db.internal:5432/groups` }),
    );
    const redacted = redactConfig(config);
    const json = JSON.stringify(redacted);
    expect(json).not.toContain(token);
    expect(json).not.toContain(password);
    expect(json).not.toContain("hunter2");
    expect(redacted).toMatchObject({
      homeserver: { accessToken: "***", url: "http://127.0.0.1:8008" },
      database: { url: "postgres://sync:***@db.internal:5432/groups" },
    });
    // The config itself is left alone.
    expect(config.homeserver.accessToken).toBe(token);
  });

  it("hides passwords in the query, and a URL it cannot read safely as a whole", () => {
    const viaQuery = configOf(load(MINIMAL, { MGS_DATABASE_URL: "postgres://db.internal/groups?user=sync&password=qwerty123" }));
    const json = JSON.stringify(redactConfig(viaQuery));
    expect(json).not.toContain("qwerty123");
    expect(json).toContain("db.internal");

    const unencoded = configOf(load(MINIMAL, { MGS_DATABASE_URL: "postgres://sync:p@ss#w0rd@db.internal/groups" }));
    const unencodedJson = JSON.stringify(redactConfig(unencoded));
    expect(unencodedJson).not.toContain("p@ss");
    expect(unencodedJson).not.toContain("w0rd");
    expect(redactConfig(unencoded)).toMatchObject({ database: { url: "***" } });
  });
});
