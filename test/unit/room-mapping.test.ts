import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { resolveGroups } from "../../src/idp/resolve.ts";
import {
  mapGroupsToRooms,
  matchConventionName,
  type ConventionMapping,
  type ExplicitRoomMapping,
  type RoomGroupBinding,
} from "../../src/idp/room-mapping.ts";
import { StaticIdentityProvider, parseDirectory } from "../../src/idp/static.ts";
import type { DirectoryGroup, DirectorySnapshot, DirectoryUser, MemberRef } from "../../src/idp/types.ts";
import { createUserMapper } from "../../src/idp/user-mapping.ts";
import { buildDesired } from "../../src/reconcile/desired.ts";

const convention: ConventionMapping = {
  enabled: true,
  prefix: "MTRX ",
  ownersSuffix: "_owners",
  ownersRole: "moderator",
  memberRole: "member",
};
const off: ConventionMapping = { ...convention, enabled: false };
const roles = { member: 0, moderator: 50, admin: 100 };
const mapUser = createUserMapper({
  attribute: "uid",
  template: "@{uid}:{domain}",
  domain: "example.org",
  lowercase: true,
  renamedUsers: {},
});

function dir(yaml: string): DirectorySnapshot {
  const result = parseDirectory(yaml, "test.yaml");
  if (!result.ok) throw new Error(result.error.message);
  return result.value;
}

describe("naming convention", () => {
  it.each([
    // LDAP style: "xxx" + localpart + "xxx" + server.
    ["xxxexamplexxxmatrix.example.com", { kind: "room", room: "#example:matrix.example.com", owners: false }],
    ["xxxexamplexxxmatrix.example.com_owners", { kind: "room", room: "#example:matrix.example.com", owners: true }],
    ["xxxa.b-cxxxexample.org:8448", { kind: "room", room: "#a.b-c:example.org:8448", owners: false }],
    // The localpart ends at the first "xxx" after the leading one.
    ["xxxxaxxxexample.org", { kind: "room", room: "#xa:example.org", owners: false }],
    ["xxxabxxxxexample.org", { kind: "room", room: "#ab:xexample.org", owners: false }],
    // Azure style: prefix + alias.
    ["MTRX #example:matrix.example.com", { kind: "room", room: "#example:matrix.example.com", owners: false }],
    ["MTRX #example:matrix.example.com_owners", { kind: "room", room: "#example:matrix.example.com", owners: true }],
    // Not convention names: ignored.
    ["engineers", { kind: "none" }],
    ["mtrx #a:example.org", { kind: "none" }],
    ["Axxxbxxxc", { kind: "none" }],
    ["_owners", { kind: "none" }],
  ] as const)("%s", (name, expected) => {
    expect(matchConventionName(name, convention)).toEqual(expected);
  });

  it.each([
    ["xxxxxxexample.org", /"#:example.org" is not a valid room alias/],
    ["xxxa bxxxexample.org", /not a valid room alias/],
    ["xxxaxxxbad server", /not a valid room alias/],
    ["MTRX example", /no room alias/],
    ["MTRX #a:", /not a valid room alias/],
    ["xxxgeneral", /no server part and no default server/],
    ["MTRX #general", /no server part/],
  ])("notes names that look like convention names but give no alias: %s", (name, reason) => {
    const match = matchConventionName(name, convention);
    expect(match.kind).toBe("invalid");
    if (match.kind === "invalid") expect(match.reason).toMatch(reason);
  });

  it("gives names without a server the configured server", () => {
    const withServer = { ...convention, server: "example.org" };
    expect(matchConventionName("xxxgeneral", withServer)).toEqual({ kind: "room", room: "#general:example.org", owners: false });
    expect(matchConventionName("MTRX #general", withServer)).toEqual({ kind: "room", room: "#general:example.org", owners: false });
    expect(matchConventionName("MTRX #general_owners", withServer)).toEqual({ kind: "room", room: "#general:example.org", owners: true });
  });

  it("does nothing when disabled", () => {
    expect(matchConventionName("xxxexamplexxxmatrix.example.com", off)).toEqual({ kind: "none" });
  });
});

describe("mapGroupsToRooms", () => {
  const snap = dir(`
users: [alice, bob, carol]
groups:
  - { id: "cn=engineers,ou=groups", name: engineers, members: [alice] }
  - { id: "cn=leads,ou=groups", name: leads, members: [carol] }
  - { id: "cn=dup1", name: dup, members: [] }
  - { id: "cn=dup2", name: dup, members: [] }
  - { id: xxxopsxxxexample.org, members: [bob] }
  - { id: xxxopsxxxexample.org_owners, members: [carol] }
  - { id: azure-1, name: "MTRX #team:example.org", members: [alice], owners: [carol] }
  - { id: azure-2, name: "MTRX #lonely:example.org_owners", members: [bob] }
  - { id: bad, name: "xxxbad namexxxexample.org", members: [] }
`);

  it("binds explicit groups by id or by name", () => {
    const explicit: ExplicitRoomMapping = [
      {
        room: "#eng:example.org",
        groups: [
          { group: "engineers", role: "member" },
          { group: "cn=leads,ou=groups", role: "moderator" },
        ],
      },
    ];
    const { bindings, notes } = mapGroupsToRooms(snap, explicit, off);
    expect(bindings).toEqual([
      {
        room: "#eng:example.org",
        sources: [
          { groupId: "cn=engineers,ou=groups", role: "member", owners: false },
          { groupId: "cn=leads,ou=groups", role: "moderator", owners: false },
        ],
        missingGroups: [],
      },
    ]);
    expect(notes).toEqual([]);
  });

  it("reports missing and ambiguous groups and marks the room as depending on them", () => {
    const explicit: ExplicitRoomMapping = [
      { room: "#eng:example.org", groups: [{ group: "engineers", role: "member" }, { group: "ghosts", role: "member" }] },
      { room: "!abc:example.org", groups: [{ group: "dup", role: "member" }] },
      { room: "not a room", groups: [{ group: "engineers", role: "member" }] },
      { room: "#empty:example.org", groups: [] },
    ];
    const { bindings, notes } = mapGroupsToRooms(snap, explicit, off);
    expect(bindings).toEqual([
      { room: "!abc:example.org", sources: [], missingGroups: ["dup"] },
      {
        room: "#eng:example.org",
        sources: [{ groupId: "cn=engineers,ou=groups", role: "member", owners: false }],
        missingGroups: ["ghosts"],
      },
    ]);
    expect(notes).toEqual([
      "room #eng:example.org: group ghosts is not in the directory (counted as incomplete)",
      "room !abc:example.org: 2 groups are named dup; use the group's id (counted as incomplete)",
      'room "not a room" is neither a room alias nor a room id; ignored',
      "room #empty:example.org is mapped to no group; ignored",
    ]);
  });

  it("maps convention groups, owners siblings and Graph owners, merged with explicit entries", () => {
    const explicit: ExplicitRoomMapping = [
      { room: "#ops:example.org", groups: [{ group: "leads", role: "admin" }, { group: "xxxopsxxxexample.org", role: "member" }] },
    ];
    const { bindings, notes } = mapGroupsToRooms(snap, explicit, convention);
    expect(bindings).toEqual<RoomGroupBinding[]>([
      {
        room: "#ops:example.org",
        sources: [
          { groupId: "cn=leads,ou=groups", role: "admin", owners: false },
          { groupId: "xxxopsxxxexample.org", role: "member", owners: false },
          { groupId: "xxxopsxxxexample.org_owners", role: "moderator", owners: false },
        ],
        missingGroups: [],
      },
      {
        room: "#team:example.org",
        sources: [
          { groupId: "azure-1", role: "member", owners: false },
          { groupId: "azure-1", role: "moderator", owners: true },
        ],
        missingGroups: [],
      },
    ]);
    expect(notes).toEqual([
      'group xxxbad namexxxexample.org: looks like a room group, but "#bad name:example.org" is not a valid room alias; ignored',
      "group MTRX #lonely:example.org_owners: owners group of #lonely:example.org, but no group or mapping binds that room; ignored",
    ]);
  });

  it("lets an owners sibling join a room that only an explicit entry binds", () => {
    const explicit: ExplicitRoomMapping = [{ room: "#lonely:example.org", groups: [{ group: "engineers", role: "member" }] }];
    const { bindings } = mapGroupsToRooms(snap, explicit, convention);
    expect(bindings.find((b) => b.room === "#lonely:example.org")?.sources).toEqual([
      { groupId: "azure-2", role: "moderator", owners: false },
      { groupId: "cn=engineers,ou=groups", role: "member", owners: false },
    ]);
  });
});

describe("buildDesired", () => {
  const snap = dir(`
users:
  - alice
  - bob
  - carol
  - { id: dave, enabled: false }
  - { id: erin, attributes: { uid: Bad Name } }
  - { id: alice2, attributes: { uid: ALICE } }
groups:
  - { id: engineers, members: [alice, bob, "group:eng-leads", dave, erin] }
  - { id: eng-leads, members: [carol, alice] }
  - { id: admins, members: [carol, alice2] }
  - { id: broken, members: [bob], incomplete: "page limit" }
  - { id: wrapper, members: ["group:broken", carol] }
  - { id: team, members: [bob], owners: [carol] }
`);

  const binding = (room: string, ...sources: [string, string, boolean?][]): RoomGroupBinding => ({
    room,
    sources: sources.map(([groupId, role, owners]) => ({ groupId, role, owners: owners ?? false })),
    missingGroups: [],
  });

  it("unions groups, the highest role wins, via lists every path", () => {
    const [room] = buildDesired(
      snap,
      [binding("#eng:example.org", ["engineers", "member"], ["eng-leads", "moderator"])],
      { roles, mapUser, maxDepth: 10 },
    );
    expect(room).toEqual({
      room: "#eng:example.org",
      members: [
        { user: "@alice:example.org", level: 50, role: "moderator", via: ["eng-leads", "engineers", "engineers > eng-leads"] },
        { user: "@bob:example.org", level: 0, role: "member", via: ["engineers"] },
        { user: "@carol:example.org", level: 50, role: "moderator", via: ["eng-leads", "engineers > eng-leads"] },
      ],
      incompleteGroups: [],
      notes: [
        "group engineers: 1 disabled account(s) left out",
        'user "erin": "@bad name:example.org" is not a valid Matrix user id; skipped',
      ],
    });
  });

  it("merges two directory users with one Matrix id and says so", () => {
    const rooms = buildDesired(
      snap,
      [binding("#admins:example.org", ["admins", "admin"]), binding("#mixed:example.org", ["engineers", "member"], ["admins", "admin"])],
      { roles, mapUser, maxDepth: 10 },
    );
    expect(rooms[0]!.members).toEqual([
      { user: "@alice:example.org", level: 100, role: "admin", via: ["admins"] },
      { user: "@carol:example.org", level: 100, role: "admin", via: ["admins"] },
    ]);
    expect(rooms[0]!.notes).toEqual([]);
    expect(rooms[1]!.members.find((m) => m.user === "@alice:example.org")).toEqual({
      user: "@alice:example.org",
      level: 100,
      role: "admin",
      via: ["admins", "engineers", "engineers > eng-leads"],
    });
    expect(rooms[1]!.notes).toContain("directory users alice, alice2 all map to @alice:example.org; merged (highest role wins)");
  });

  it("gives owners their role, and prefers the role name that sorts first on equal levels", () => {
    const [room] = buildDesired(
      snap,
      [binding("#team:example.org", ["team", "member"], ["team", "moderator", true], ["eng-leads", "mod2"])],
      { roles: { ...roles, mod2: 50 }, mapUser, maxDepth: 10 },
    );
    expect(room!.members).toEqual([
      { user: "@alice:example.org", level: 50, role: "mod2", via: ["eng-leads"] },
      { user: "@bob:example.org", level: 0, role: "member", via: ["team"] },
      { user: "@carol:example.org", level: 50, role: "mod2", via: ["eng-leads", "team (owners)"] },
    ]);
  });

  it("lists incomplete and missing groups, and unknown roles, as incomplete", () => {
    const rooms = buildDesired(
      snap,
      [
        { ...binding("#a:example.org", ["wrapper", "member"]), missingGroups: ["ghosts"] },
        binding("#b:example.org", ["engineers", "owner"]),
      ],
      { roles, mapUser, maxDepth: 10 },
    );
    expect(rooms[0]).toMatchObject({
      room: "#a:example.org",
      incompleteGroups: ["ghosts", "wrapper"],
      notes: ["group wrapper is incomplete: broken: page limit"],
    });
    expect(rooms[0]!.members.map((m) => m.user)).toEqual(["@bob:example.org", "@carol:example.org"]);
    expect(rooms[1]).toMatchObject({
      members: [],
      incompleteGroups: ["engineers"],
      notes: [
        "group engineers: 1 disabled account(s) left out",
        "group engineers: role owner is not defined; its members are left out (counted as incomplete)",
      ],
    });
  });

  it("marks a depth cut as incomplete", () => {
    const [room] = buildDesired(snap, [binding("#eng:example.org", ["engineers", "member"])], { roles, mapUser, maxDepth: 0 });
    expect(room!.incompleteGroups).toEqual(["engineers"]);
    expect(room!.notes).toContain("group engineers is incomplete: eng-leads is nested deeper than 0 level(s) and was not expanded (engineers > eng-leads)");
  });

  it("sorts rooms and members whatever the input order, and shares the list of a group", () => {
    const rooms = buildDesired(
      snap,
      [binding("#z:example.org", ["engineers", "member"]), binding("#a:example.org", ["engineers", "member"])],
      { roles, mapUser, maxDepth: 10 },
    );
    expect(rooms.map((r) => r.room)).toEqual(["#a:example.org", "#z:example.org"]);
    expect(rooms[0]!.members).toBe(rooms[1]!.members);
    const users = rooms[0]!.members.map((m) => m.user);
    expect(users).toEqual([...users].sort());
  });

  it("builds the example directory's convention room", async () => {
    const snapshot = await new StaticIdentityProvider("examples/directory.yaml").snapshot();
    if (!snapshot.ok) throw new Error(snapshot.error.message);
    const { bindings, notes } = mapGroupsToRooms(
      snapshot.value,
      [{ room: "#everyone:example.org", groups: [{ group: "everyone", role: "member" }] }],
      convention,
    );
    expect(notes).toEqual([]);
    const rooms = buildDesired(snapshot.value, bindings, { roles, mapUser, maxDepth: 10 });
    expect(rooms.map((r) => [r.room, r.members.map((m) => `${m.user}=${m.level}`)])).toEqual([
      [
        "#everyone:example.org",
        ["@alice:example.org=0", "@bob:example.org=0", "@carol:example.org=0", "@dave:example.org=0", "@erin:example.org=0", "@grace:example.org=0"],
      ],
      ["#ops:example.org", ["@dave:example.org=0", "@grace:example.org=50"]],
    ]);
    expect(rooms[0]!.notes).toEqual([
      "group everyone: 1 disabled account(s) left out",
      'user "heidi": "@bad name:example.org" is not a valid Matrix user id; skipped',
    ]);
  });
});

describe("buildDesired property", () => {
  const input = fc.record({
    // Directory users; several may share a uid (same Matrix id), some uids are invalid.
    // (Enough distinct users that small member lists take the comparison-sort path.)
    users: fc.array(
      fc.record({
        uid: fc.oneof(fc.nat(999).map((i) => `u${i}`), fc.constantFrom("Bad Name", "U1", "u1")),
        enabled: fc.boolean(),
      }),
      { maxLength: 300, size: "max" },
    ),
    groups: fc.array(
      fc.record({ members: fc.array(fc.nat(400), { maxLength: 25 }), nested: fc.array(fc.nat(7), { maxLength: 3 }), owners: fc.array(fc.nat(400), { maxLength: 3 }) }),
      { minLength: 1, maxLength: 8 },
    ),
    rooms: fc.array(
      fc.array(fc.record({ group: fc.nat(7), role: fc.constantFrom("member", "moderator", "admin", "mod2"), owners: fc.boolean() }), {
        minLength: 1,
        maxLength: 4,
      }),
      { maxLength: 5 },
    ),
  });

  it("matches a naive union: highest level, role tie by name, sorted by user id", () => {
    const allRoles = { ...roles, mod2: 50 };
    fc.assert(
      fc.property(input, (data) => {
        const users: DirectoryUser[] = data.users.map((u, i) => ({ id: `d${i}`, attributes: { uid: u.uid }, enabled: u.enabled }));
        const groups: DirectoryGroup[] = data.groups.map((g, i) => ({
          id: `g${i}`,
          name: `G${i}`,
          members: [
            ...(users.length === 0 ? [] : g.members.map((m): MemberRef => ({ kind: "user", id: `d${m % users.length}` }))),
            ...g.nested.map((n): MemberRef => ({ kind: "group", id: `g${n % data.groups.length}` })),
          ],
          owners: users.length === 0 ? [] : g.owners.map((m): MemberRef => ({ kind: "user", id: `d${m % users.length}` })),
          complete: true,
        }));
        const snap: DirectorySnapshot = { users: new Map(users.map((u) => [u.id, u])), groups: new Map(groups.map((g) => [g.id, g])), notes: [] };
        const bindings: RoomGroupBinding[] = data.rooms.map((sources, r) => ({
          room: `#r${r}:example.org`,
          sources: sources.map((s) => ({ groupId: `g${s.group % groups.length}`, role: s.role, owners: s.owners })),
          missingGroups: [],
        }));
        const desired = buildDesired(snap, bindings, { roles: allRoles, mapUser, maxDepth: 4 });

        const resolved = resolveGroups(snap, groups.map((g) => g.id), { maxDepth: 4, includeOwners: true });
        expect(desired.map((d) => d.room)).toEqual(bindings.map((b) => b.room).sort());
        for (const room of desired) {
          const binding = bindings.find((b) => b.room === room.room)!;
          const want = new Map<string, { level: number; role: string; via: Set<string> }>();
          for (const source of binding.sources) {
            const group = resolved.get(source.groupId)!;
            const level = allRoles[source.role as keyof typeof allRoles];
            for (const [key, via] of source.owners ? group.owners : group.users) {
              const mapped = mapUser(snap.users.get(key)!);
              if (!mapped.ok) continue;
              const before = want.get(mapped.userId);
              if (!before) want.set(mapped.userId, { level, role: source.role, via: new Set(via) });
              else {
                if (level > before.level || (level === before.level && source.role < before.role)) {
                  before.level = level;
                  before.role = source.role;
                }
                via.forEach((v) => before.via.add(v));
              }
            }
          }
          const expected = [...want.keys()].sort().map((user) => ({ user, level: want.get(user)!.level, role: want.get(user)!.role }));
          expect(room.members.map(({ user, level, role }) => ({ user, level, role }))).toEqual(expected);
          for (const m of room.members) {
            expect(m.via.length).toBeGreaterThan(0);
            for (const v of m.via) expect(want.get(m.user)!.via.has(v)).toBe(true);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
