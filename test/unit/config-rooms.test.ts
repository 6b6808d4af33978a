/** `rooms` (templates), `spaces` and `sync.createRooms`: the schema, the cross-field rules, and room-templates.ts. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig, type ConfigError, type ConfigResult } from "../../src/config/load.ts";
import { spaceSettings, templateFor, templateIsEmpty } from "../../src/config/room-templates.ts";
import { checkReferences, type Config } from "../../src/config/schema.ts";
import type { RoomTemplate } from "../../src/reconcile/template.ts";

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
  dir = mkdtempSync(join(tmpdir(), "mgs-config-rooms-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes config.yaml (MINIMAL plus `extra`) into the temp dir and loads it with the given environment only. */
function load(extra: string, env: NodeJS.ProcessEnv = {}): ConfigResult {
  const path = join(dir, "config.yaml");
  writeFileSync(path, `${MINIMAL}${extra}`);
  return loadConfig({ path, env, cwd: dir });
}

function configOf(result: ConfigResult): Config {
  if (!result.ok) throw new Error(`expected a valid config, got:\n${result.errors.map(formatConfigError).join("\n")}`);
  return result.config;
}

function errorsOf(result: ConfigResult): readonly ConfigError[] {
  if (result.ok) throw new Error("expected the config to be rejected");
  return result.errors;
}

/** The errors as [path, message] pairs. */
function problems(extra: string): [string, string][] {
  return errorsOf(load(extra)).map((e) => [e.path, e.message]);
}

const JOIN_RULE_FORMS = "invite, knock, public, {restricted: [space, ...]} or {knock_restricted: [space, ...]}";

const FULL = `
roles: { member: 0, moderator: 50, admin: 100, lead: 75 }
mapping:
  rooms:
    - room: "#eng:example.org"
      groups: [{ group: engineers }]
    - room: "#ops:example.org"
      groups: [{ group: ops }]
rooms:
  defaults:
    permissions:
      users_default: 0
      events_default: 0
      state_default: 50
      invite: 50
      kick: 50
      ban: 50
      redact: 50
      notifications: { room: 50 }
      events: { m.room.name: 50, m.room.topic: 50 }
    historyVisibility: shared
    joinRule: invite
    guestAccess: forbidden
    topic: Managed by matrix-group-sync
    roomVersion: "10"
  overrides:
    "#eng:example.org":
      name: Engineering
      permissions:
        invite: 0
        notifications: {}
        events: { m.room.topic: 0, m.reaction: 10 }
      joinRule: { restricted: ["#company:example.org"] }
      encryption: true
    "!opaque:example.org":
      historyVisibility: joined
      roomVersion: 11
    "#company:example.org":
      name: From the overrides
      topic: From the overrides
      guestAccess: can_join
spaces:
  - space: "#company:example.org"
    name: Company
    children:
      rooms: ["#eng:example.org", "#teams:example.org"]
    restrictChildren: true
    role: lead
  - space: "#teams:example.org"
    topic: All teams
    children:
      underGroups: [teams, "cn=all,ou=groups,dc=example,dc=org"]
    parentLinks: false
`;

describe("rooms, spaces and sync.createRooms: valid files", () => {
  it("defaults: no template field managed but encryption off, no spaces, rooms created", () => {
    const config = configOf(load(""));
    expect(config.rooms).toEqual({ defaults: { encryption: false }, overrides: {} });
    expect(config.spaces).toEqual([]);
    expect(config.sync.createRooms).toBe(true);
    expect(templateIsEmpty(templateFor(config, ["#any:example.org"]))).toBe(true);
    expect(spaceSettings(config)).toEqual([]);
  });

  it("loads defaults, overrides and spaces, with the defaults of each space filled in", () => {
    const config = configOf(load(`${FULL}sync: { createRooms: false }\n`));
    expect(config.sync.createRooms).toBe(false);
    expect(config.rooms.defaults).toEqual({
      permissions: {
        users_default: 0,
        events_default: 0,
        state_default: 50,
        invite: 50,
        kick: 50,
        ban: 50,
        redact: 50,
        notifications: { room: 50 },
        events: { "m.room.name": 50, "m.room.topic": 50 },
      },
      historyVisibility: "shared",
      joinRule: "invite",
      guestAccess: "forbidden",
      topic: "Managed by matrix-group-sync",
      roomVersion: "10",
      encryption: false,
    });
    expect(config.rooms.overrides["#eng:example.org"]?.joinRule).toEqual({ restricted: ["#company:example.org"] });
    // A whole number written without quotes is that room version.
    expect(config.rooms.overrides["!opaque:example.org"]?.roomVersion).toBe("11");
    expect(config.spaces).toEqual([
      {
        space: "#company:example.org",
        name: "Company",
        children: { rooms: ["#eng:example.org", "#teams:example.org"], underGroups: [] },
        parentLinks: true,
        restrictChildren: true,
        role: "lead",
      },
      {
        space: "#teams:example.org",
        topic: "All teams",
        children: { rooms: [], underGroups: ["teams", "cn=all,ou=groups,dc=example,dc=org"] },
        parentLinks: false,
        restrictChildren: false,
        role: "member",
      },
    ]);
  });

  it("accepts every join rule form, and a restricted rule naming a space that is not in spaces", () => {
    for (const [written, loaded] of [
      ["invite", "invite"],
      ["knock", "knock"],
      ["public", "public"],
      ['{ restricted: ["#made-by-hand:example.org", "!space:example.org"] }', { restricted: ["#made-by-hand:example.org", "!space:example.org"] }],
      ['{ knock_restricted: ["#made-by-hand:example.org"] }', { knock_restricted: ["#made-by-hand:example.org"] }],
    ] as const) {
      expect(configOf(load(`rooms: { defaults: { joinRule: ${written} } }\n`)).rooms.defaults.joinRule).toEqual(loaded);
    }
  });

  it("accepts room versions as strings, unstable identifiers too", () => {
    for (const v of ['"1"', '"12"', "9", '"org.matrix.msc3787"']) {
      const config = configOf(load(`rooms: { defaults: { roomVersion: ${v} } }\n`));
      expect(config.rooms.defaults.roomVersion).toBe(v.replaceAll('"', ""));
    }
  });

  it("takes the new settings from the environment", () => {
    const config = configOf(
      load("", {
        MGS_SYNC_CREATE_ROOMS: "false",
        MGS_ROOMS_DEFAULTS_ROOM_VERSION: "10",
        MGS_ROOMS_DEFAULTS_JOIN_RULE: "knock",
        MGS_ROOMS_DEFAULTS_PERMISSIONS_USERS_DEFAULT: "5",
      }),
    );
    expect(config.sync.createRooms).toBe(false);
    expect(config.rooms.defaults).toEqual({ encryption: false, roomVersion: "10", joinRule: "knock", permissions: { users_default: 5 } });
  });
});

describe("rooms: errors", () => {
  it("reports unknown keys in permissions at their exact path, with the nearest valid key", () => {
    expect(
      problems(`
rooms:
  defaults:
    permissions: { kik: 50, notifications: { rom: 50 } }
  overrides:
    "#a:example.org": { permissions: { power: 1 } }
`),
    ).toEqual([
      ["/rooms/defaults/permissions/notifications/rom", 'unknown key; did you mean "room"?'],
      ["/rooms/defaults/permissions/kik", 'unknown key; did you mean "kick"?'],
      [
        "/rooms/overrides/#a:example.org/permissions/power",
        "unknown key; allowed here: ban, events, events_default, invite, kick, notifications, redact, state_default, users_default",
      ],
    ]);
  });

  it("reports an unknown template key, and name in the defaults (only an override may name a room)", () => {
    expect(problems(`rooms: { defaults: { name: Everything }, overrides: { "#a:example.org": { colour: red } } }\n`)).toEqual([
      [
        "/rooms/defaults/name",
        "unknown key; allowed here: encryption, guestAccess, historyVisibility, joinRule, permissions, roomVersion, topic",
      ],
      [
        "/rooms/overrides/#a:example.org/colour",
        "unknown key; allowed here: encryption, guestAccess, historyVisibility, joinRule, name, permissions, roomVersion, topic",
      ],
    ]);
  });

  it("power levels are whole numbers within Matrix' integer range", () => {
    expect(
      problems(`
rooms:
  defaults:
    permissions: { ban: 1.5, invite: fifty, events: { m.room.name: 1e300 }, notifications: { room: -9007199254740993 } }
`),
    ).toEqual([
      ["/rooms/defaults/permissions/invite", 'expected a number, got "fifty"'],
      ["/rooms/defaults/permissions/ban", "expected a whole number, got 1.5"],
      ["/rooms/defaults/permissions/notifications/room", "must be at least -9007199254740991"],
      ["/rooms/defaults/permissions/events/m.room.name", "must be at most 9007199254740991"],
    ]);
  });

  it("names the allowed values of a bad history visibility, guest access or join rule", () => {
    expect(problems(`rooms: { defaults: { historyVisibility: all, guestAccess: yes, joinRule: open } }\n`)).toEqual([
      ["/rooms/defaults/historyVisibility", 'must be one of: invited, joined, shared, world_readable (got "all")'],
      ["/rooms/defaults/joinRule", `must be one of: ${JOIN_RULE_FORMS} (got "open")`],
      ["/rooms/defaults/guestAccess", 'must be one of: can_join, forbidden (got "yes")'],
    ]);
    expect(problems(`rooms: { defaults: { joinRule: 3 } }\n`)).toEqual([["/rooms/defaults/joinRule", `must be one of: ${JOIN_RULE_FORMS} (got 3)`]]);
    expect(problems(`rooms: { defaults: { joinRule: [invite] } }\n`)).toEqual([
      ["/rooms/defaults/joinRule", `must be one of: ${JOIN_RULE_FORMS} (got a list)`],
    ]);
  });

  it("checks the mapping form of a join rule: one key, a non-empty list of room references", () => {
    const at = (rule: string) => problems(`rooms: { overrides: { "#a:example.org": { joinRule: ${rule} } } }\n`);
    const path = "/rooms/overrides/#a:example.org/joinRule";
    expect(at("{ restricted: [] }")).toEqual([[`${path}/restricted`, "must have at least 1 entry"]]);
    expect(at('{ restricted: ["#s:example.org", company] }')).toEqual([
      [`${path}/restricted/1`, '"company" is neither a room alias (#name:server) nor a room id (!id or !id:server)'],
    ]);
    expect(at('{ restricted: "#s:example.org" }')).toEqual([[`${path}/restricted`, 'expected a list, got "#s:example.org"']]);
    expect(at('{ restriced: ["#s:example.org"] }')).toEqual([[`${path}/restriced`, "unknown key; allowed here: knock_restricted, restricted"]]);
    expect(at('{ restricted: ["#s:example.org"], knock_restricted: ["#s:example.org"] }')).toEqual([
      [path, "give restricted or knock_restricted, not both"],
    ]);
    expect(at("{}")).toEqual([[path, `must be one of: ${JOIN_RULE_FORMS} (got an empty mapping)`]]);
  });

  it("room versions: a number that is not whole must be quoted, a string must be a room version identifier", () => {
    expect(problems(`rooms: { defaults: { roomVersion: 1.5 }, overrides: { "#a:example.org": { roomVersion: "Ten" } } }\n`)).toEqual([
      ["/rooms/defaults/roomVersion", 'a room version is a string: quote it, e.g. roomVersion: "10" (got 1.5)'],
      [
        "/rooms/overrides/#a:example.org/roomVersion",
        '"Ten" is not a room version (e.g. "10"; only a-z, 0-9, "." and "-", at most 32 characters)',
      ],
    ]);
  });

  it("an override key must be a room reference", () => {
    const errors = errorsOf(
      load(`
rooms:
  overrides:
    "#good:example.org": { name: Good }
    eng: { name: Engineering }
    "#no-server": { topic: x }
`),
    );
    expect(errors).toEqual([
      { path: "/rooms/overrides/eng", message: '"eng" is neither a room alias (#name:server) nor a room id (!id or !id:server)', line: 13 },
      {
        path: "/rooms/overrides/#no-server",
        message: '"#no-server" is neither a room alias (#name:server) nor a room id (!id or !id:server)',
        line: 14,
      },
    ]);
  });

  it("the schema's errors and the override-key rule are reported together", () => {
    expect(problems(`rooms: { overrides: { eng: { name: "" }, "#a:example.org": { encryption: yes please } } }\n`)).toEqual([
      ["/rooms/overrides/eng/name", "must not be empty"],
      ["/rooms/overrides/#a:example.org/encryption", 'expected true or false, got "yes please"'],
      ["/rooms/overrides/eng", '"eng" is neither a room alias (#name:server) nor a room id (!id or !id:server)'],
    ]);
  });
});

describe("spaces: errors", () => {
  it("a space needs at least one child", () => {
    const message = "give at least one child: children.rooms or children.underGroups";
    expect(problems(`spaces: [{ space: "#s:example.org" }]\n`)).toEqual([["/spaces/0/children", message]]);
    expect(problems(`spaces: [{ space: "#s:example.org", children: { rooms: [], underGroups: [] } }]\n`)).toEqual([["/spaces/0/children", message]]);
  });

  it("checks the space reference, the child references, unknown keys", () => {
    expect(
      problems(`spaces: [{ space: company, children: { rooms: ["#a:example.org", a], groups: [x] }, parentLink: false }]\n`),
    ).toEqual([
      ["/spaces/0/space", '"company" is neither a room alias (#name:server) nor a room id (!id or !id:server)'],
      ["/spaces/0/children/rooms/1", '"a" is neither a room alias (#name:server) nor a room id (!id or !id:server)'],
      ["/spaces/0/children/groups", "unknown key; allowed here: rooms, underGroups"],
      ["/spaces/0/parentLink", 'unknown key; did you mean "parentLinks"?'],
    ]);
  });

  it("a space's role must be in roles, its default role too", () => {
    expect(
      problems(`
spaces:
  - { space: "#a:example.org", children: { rooms: ["#x:example.org"] }, role: boss }
  - { space: "#b:example.org", children: { rooms: ["#x:example.org"] }, role: moderator }
`),
    ).toEqual([["/spaces/0/role", 'unknown role "boss"; roles are: admin, member, moderator']]);
    expect(
      problems(`
roles: { reader: 0, admin: 100 }
spaces:
  - { space: "#a:example.org", children: { rooms: ["#x:example.org"] } }
`),
    ).toEqual([["/spaces/0/role", 'no role given and the default role "member" is not in roles; roles are: admin, reader']]);
  });

  it("a space listed twice", () => {
    const errors = errorsOf(
      load(`
spaces:
  - { space: "#a:example.org", children: { rooms: ["#x:example.org"] } }
  - { space: "#b:example.org", children: { rooms: ["#x:example.org"] } }
  - { space: "#a:example.org", children: { underGroups: [g] } }
`),
    );
    expect(errors).toEqual([
      { path: "/spaces/2/space", message: '"#a:example.org" is already listed at /spaces/0; list each space once', line: 13 },
    ]);
  });

  it("a space that lists itself as a child", () => {
    expect(problems(`spaces: [{ space: "#a:example.org", children: { rooms: ["#x:example.org", "#a:example.org"] } }]\n`)).toEqual([
      ["/spaces/0/children/rooms/1", 'a space cannot be its own child ("#a:example.org")'],
    ]);
  });

  it("spaces forming a cycle through their children, the cycle named", () => {
    expect(
      problems(`
spaces:
  - { space: "#a:example.org", children: { rooms: ["#room:example.org", "#b:example.org"] } }
  - { space: "#b:example.org", children: { rooms: ["#a:example.org"] } }
`),
    ).toEqual([["/spaces/1/children/rooms/0", "spaces form a cycle: #a:example.org → #b:example.org → #a:example.org; a space cannot contain itself"]]);

    expect(
      problems(`
spaces:
  - { space: "#top:example.org", children: { rooms: ["#a:example.org"] } }
  - { space: "#a:example.org", children: { rooms: ["#b:example.org"] } }
  - { space: "#b:example.org", children: { rooms: ["#c:example.org", "#top:example.org"] } }
  - { space: "#c:example.org", children: { rooms: ["#a:example.org"] } }
`),
    ).toEqual([
      ["/spaces/2/children/rooms/1", "spaces form a cycle: #top:example.org → #a:example.org → #b:example.org → #top:example.org; a space cannot contain itself"],
      ["/spaces/3/children/rooms/0", "spaces form a cycle: #a:example.org → #b:example.org → #c:example.org → #a:example.org; a space cannot contain itself"],
    ]);
  });

  it("a cycle through many spaces is named by its ends, and a long chain does not exhaust the stack", () => {
    const n = 20_000;
    const spaces = Array.from({ length: n }, (_, i) => ({ space: `#s${i}:example.org`, children: { rooms: [`#s${(i + 1) % n}:example.org`] } }));
    expect(checkReferences({ spaces })).toEqual([
      {
        path: ["spaces", n - 1, "children", "rooms", 0],
        message: `spaces form a cycle: ${["#s0", "#s1", "#s2", "#s3", "#s4", "#s5", `… ${n + 1 - 11} more …`, "#s19996", "#s19997", "#s19998", "#s19999", "#s0"]
          .map((x) => (x.startsWith("#") ? `${x}:example.org` : x))
          .join(" → ")}; a space cannot contain itself`,
      },
    ]);
  });

  it("nested spaces without a cycle are fine (a diamond too)", () => {
    configOf(
      load(`
spaces:
  - { space: "#top:example.org", children: { rooms: ["#a:example.org", "#b:example.org"] } }
  - { space: "#a:example.org", children: { rooms: ["#c:example.org"] } }
  - { space: "#b:example.org", children: { rooms: ["#c:example.org"] } }
  - { space: "#c:example.org", children: { rooms: ["#room:example.org"] } }
`),
    );
  });

  it("a space that is also in mapping.rooms: its members come from its children", () => {
    expect(
      problems(`
mapping:
  rooms:
    - { room: "#eng:example.org", groups: [{ group: eng }] }
    - { room: "#company:example.org", groups: [{ group: everyone }] }
spaces:
  - { space: "#company:example.org", children: { rooms: ["#eng:example.org"] } }
`),
    ).toEqual([
      [
        "/spaces/0/space",
        "\"#company:example.org\" is also in mapping.rooms (/mapping/rooms/1): a space's members come from its children (with the space's role), not from groups; remove it from mapping.rooms or from spaces",
      ],
    ]);
  });

  it("reads a malformed document defensively", () => {
    expect(problems(`spaces: [17, { space: 3, children: { rooms: 4 } }]\n`)).toEqual([
      ["/spaces/0", "expected a mapping (key: value), got 17"],
      ["/spaces/1/space", "expected a string, got 3"],
      ["/spaces/1/children/rooms", "expected a list, got 4"],
    ]);
    expect(problems(`spaces: { space: "#a:example.org" }\nrooms: { overrides: [] }\n`)).toEqual([
      ["/spaces", "expected a list, got a mapping"],
      ["/rooms/overrides", "expected a mapping (key: value), got a list"],
    ]);
  });
});

describe("templateFor and spaceSettings", () => {
  const config = () => configOf(load(FULL));

  it("a room without an override gets the defaults", () => {
    const expected: RoomTemplate = {
      powerLevels: {
        users_default: 0,
        events_default: 0,
        state_default: 50,
        invite: 50,
        kick: 50,
        ban: 50,
        redact: 50,
        notifications: { room: 50 },
        events: { "m.room.name": 50, "m.room.topic": 50 },
      },
      historyVisibility: "shared",
      joinRule: { rule: "invite" },
      guestAccess: "forbidden",
      topic: "Managed by matrix-group-sync",
      encryption: false,
      roomVersion: "10",
    };
    expect(templateFor(config(), ["#ops:example.org", "!ops:example.org"])).toEqual(expected);
    expect(templateFor(config(), [])).toEqual(expected);
  });

  it("merges an override field by field, permissions.events and notifications key by key", () => {
    expect(templateFor(config(), ["#eng:example.org"])).toEqual({
      powerLevels: {
        users_default: 0,
        events_default: 0,
        state_default: 50,
        invite: 0,
        kick: 50,
        ban: 50,
        redact: 50,
        notifications: { room: 50 },
        events: { "m.room.name": 50, "m.room.topic": 0, "m.reaction": 10 },
      },
      historyVisibility: "shared",
      joinRule: { rule: "restricted", spaces: ["#company:example.org"] },
      guestAccess: "forbidden",
      name: "Engineering",
      topic: "Managed by matrix-group-sync",
      encryption: true,
      roomVersion: "10",
    } satisfies RoomTemplate);
  });

  it("uses the override of the first reference that has one", () => {
    const c = config();
    expect(templateFor(c, ["#other:example.org", "!opaque:example.org", "#eng:example.org"])).toMatchObject({
      historyVisibility: "joined",
      roomVersion: "11",
      encryption: false,
    });
    expect(templateFor(c, ["#eng:example.org", "!opaque:example.org"])).toMatchObject({ historyVisibility: "shared", name: "Engineering" });
  });

  it("a space's own name and topic win over rooms.overrides; the rest of the override still applies", () => {
    const c = config();
    expect(templateFor(c, ["#company:example.org"])).toMatchObject({
      name: "Company",
      topic: "From the overrides",
      guestAccess: "can_join",
      joinRule: { rule: "invite" },
    });
    const teams = templateFor(c, ["!teams:example.org", "#teams:example.org"]);
    expect(teams.topic).toBe("All teams");
    expect(teams.name).toBeUndefined();
  });

  it("converts knock_restricted", () => {
    const c = configOf(load(`rooms: { defaults: { joinRule: { knock_restricted: ["#s:example.org"] } } }\n`));
    expect(templateFor(c, ["#a:example.org"]).joinRule).toEqual({ rule: "knock_restricted", spaces: ["#s:example.org"] });
  });

  it("an override's permissions apply when the defaults have none, without inventing fields", () => {
    const c = configOf(load(`rooms: { overrides: { "#a:example.org": { permissions: { events: { m.room.name: 100 } } } } }\n`));
    expect(templateFor(c, ["#a:example.org"])).toEqual({ powerLevels: { events: { "m.room.name": 100 } }, encryption: false });
    expect(templateFor(c, ["#b:example.org"])).toEqual({ powerLevels: {}, encryption: false });
  });

  it("spaceSettings lists the spaces in file order", () => {
    expect(spaceSettings(config())).toEqual([
      {
        space: "#company:example.org",
        rooms: ["#eng:example.org", "#teams:example.org"],
        underGroups: [],
        parentLinks: true,
        restrictChildren: true,
        role: "lead",
      },
      {
        space: "#teams:example.org",
        rooms: [],
        underGroups: ["teams", "cn=all,ou=groups,dc=example,dc=org"],
        parentLinks: false,
        restrictChildren: false,
        role: "member",
      },
    ]);
  });

  it("templateIsEmpty: true only when no field is managed", () => {
    const empty: RoomTemplate = { powerLevels: {}, encryption: false };
    expect(templateIsEmpty(empty)).toBe(true);
    expect(templateIsEmpty({ powerLevels: { notifications: {}, events: {} }, encryption: false })).toBe(true);
    for (const t of [
      { ...empty, powerLevels: { kick: 50 } },
      { ...empty, powerLevels: { notifications: { room: 50 } } },
      { ...empty, powerLevels: { events: { "m.room.name": 50 } } },
      { ...empty, historyVisibility: "joined" },
      { ...empty, joinRule: { rule: "public" } },
      { ...empty, guestAccess: "forbidden" },
      { ...empty, name: "n" },
      { ...empty, topic: "" },
      { ...empty, encryption: true },
      { ...empty, roomVersion: "10" },
    ] satisfies RoomTemplate[]) {
      expect(templateIsEmpty(t)).toBe(false);
    }
  });
});
