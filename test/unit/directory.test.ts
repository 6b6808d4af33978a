import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { resolveGroups, type ResolvedGroup } from "../../src/idp/resolve.ts";
import { parseDirectory, StaticIdentityProvider } from "../../src/idp/static.ts";
import type { DirectoryGroup, DirectorySnapshot, DirectoryUser, MemberRef } from "../../src/idp/types.ts";

function parsed(text: string, file = "directory.yaml"): DirectorySnapshot {
  const result = parseDirectory(text, file);
  if (!result.ok) throw new Error(result.error.message);
  return result.value;
}

function parseError(text: string, file = "directory.yaml"): string {
  const result = parseDirectory(text, file);
  if (result.ok) throw new Error("expected a failure");
  return result.error.message;
}

/** A snapshot from a compact description: group id → members ("g:x" = nested group). */
function snapshot(
  groups: Record<string, { members: string[]; owners?: string[]; incomplete?: string; name?: string }>,
  users: string[] | DirectoryUser[] = [],
): DirectorySnapshot {
  const ref = (r: string): MemberRef => (r.startsWith("g:") ? { kind: "group", id: r.slice(2) } : { kind: "user", id: r });
  const userMap = new Map<string, DirectoryUser>();
  for (const u of users) {
    const user = typeof u === "string" ? { id: u, attributes: { uid: u }, enabled: true } : u;
    userMap.set(user.id, user);
  }
  const groupMap = new Map<string, DirectoryGroup>();
  for (const [id, g] of Object.entries(groups)) {
    groupMap.set(id, {
      id,
      name: g.name ?? id,
      members: g.members.map(ref),
      ...(g.owners ? { owners: g.owners.map(ref) } : {}),
      complete: g.incomplete === undefined,
      ...(g.incomplete !== undefined ? { incompleteReason: g.incomplete } : {}),
    });
  }
  return { groups: groupMap, users: userMap, notes: [] };
}

function one(snap: DirectorySnapshot, id: string, maxDepth = 10, includeOwners = false): ResolvedGroup {
  return resolveGroups(snap, [id], { maxDepth, includeOwners }).get(id)!;
}

const asObject = (m: ReadonlyMap<string, readonly string[]>) => Object.fromEntries(m);

describe("static directory file", () => {
  const sample = `
users:
  - { id: alice, attributes: { uid: alice, mail: alice@example.org, cn: Alice Liddell }, enabled: true }
  - bob
  - { id: carol }
  - { id: frank, enabled: false }
groups:
  - { id: engineers, members: [alice, bob, "group:eng-leads"], owners: [carol] }
  - { id: eng-leads, name: Engineering leads, members: [carol], incomplete: "simulated page limit" }
  - { id: empty }
`;

  it("reads users, shorthand, defaults, nested groups, owners and incomplete groups", () => {
    const snap = parsed(sample);
    expect([...snap.users.values()]).toEqual([
      { id: "alice", attributes: { uid: "alice", mail: "alice@example.org", cn: "Alice Liddell" }, enabled: true },
      { id: "bob", attributes: { uid: "bob" }, enabled: true },
      { id: "carol", attributes: { uid: "carol" }, enabled: true },
      { id: "frank", attributes: { uid: "frank" }, enabled: false },
    ]);
    expect(snap.groups.get("engineers")).toEqual({
      id: "engineers",
      name: "engineers",
      members: [
        { kind: "user", id: "alice" },
        { kind: "user", id: "bob" },
        { kind: "group", id: "eng-leads" },
      ],
      owners: [{ kind: "user", id: "carol" }],
      complete: true,
    });
    expect(snap.groups.get("eng-leads")).toEqual({
      id: "eng-leads",
      name: "Engineering leads",
      members: [{ kind: "user", id: "carol" }],
      complete: false,
      incompleteReason: "simulated page limit",
    });
    expect(snap.groups.get("empty")).toEqual({ id: "empty", name: "empty", members: [], complete: true });
    expect(snap.notes).toEqual([]);
  });

  it("reads JSON when the file name ends in .json", () => {
    const snap = parsed(JSON.stringify({ users: ["a"], groups: [{ id: "g", members: ["a"] }] }), "dir.json");
    expect(snap.groups.get("g")?.members).toEqual([{ kind: "user", id: "a" }]);
    expect(parseError("{ users: [] }", "dir.json")).toMatch(/^dir\.json: not valid JSON: /);
  });

  it("leaves out unknown members and owners with a note, and does not fail", () => {
    const snap = parsed(`
users: [alice, bob]
groups:
  - { id: engineers, members: [alice, bobby, "group:nope", ops, alice], owners: [zed] }
  - { id: ops, members: [bob] }
`);
    expect(snap.groups.get("engineers")?.members).toEqual([{ kind: "user", id: "alice" }]);
    expect(snap.groups.get("engineers")?.owners).toEqual([]);
    expect(snap.notes).toEqual([
      "group engineers: member bobby is neither a user nor a group",
      "group engineers: member group:nope is not a known group",
      'group engineers: member ops is not a user (write "group:ops" for the nested group)',
      "group engineers: owner zed is neither a user nor a group",
    ]);
  });

  it("names the file and the JSON pointer of a wrong value", () => {
    const msg = parseError(`
users: [a]
groups:
  - { id: g0 }
  - { id: g1 }
  - { id: g2 }
  - { id: g3, members: [a, 42] }
`);
    expect(msg).toMatch(/^directory\.yaml: \/groups\/3\/members\/1: .*expected string/);
  });

  it("rejects unknown keys, naming each one", () => {
    const msg = parseError(`
users:
  - { id: a, attributes: { uid: a }, enable: false }
groups: []
colour: blue
`);
    expect(msg.split("\n")).toEqual(["directory.yaml: /users/0/enable: unknown key", "directory.yaml: /colour: unknown key"]);
  });

  it("rejects non-string attributes, empty ids and a wrong top level", () => {
    expect(parseError("users: [{ id: a, attributes: { uid: 7 } }]")).toMatch(/^directory\.yaml: \/users\/0\/attributes\/uid: /);
    expect(parseError('users: [""]')).toMatch(/^directory\.yaml: \/users\/0\/id: /);
    expect(parseError("- a\n- b\n")).toMatch(/^directory\.yaml: \/: /);
    expect(parseError("users: [{ id: a, attributes: { a/b: 1 } }]")).toMatch(/\/users\/0\/attributes\/a~1b: /);
  });

  it("rejects duplicate user and group ids", () => {
    const msg = parseError(`
users: [a, b, a]
groups: [{ id: g }, { id: g }]
`);
    expect(msg.split("\n")).toEqual([
      'directory.yaml: /users/2/id: duplicate user id "a" (first at /users/0)',
      'directory.yaml: /groups/1/id: duplicate group id "g" (first at /groups/0)',
    ]);
  });

  it("rejects YAML syntax errors, duplicate keys and an empty file", () => {
    expect(parseError("users: [a,\n b: 2\n")).toMatch(/^directory\.yaml: not valid YAML: .*line/);
    expect(parseError("users: []\nusers: []\n")).toMatch(/^directory\.yaml: not valid YAML: Map keys must be unique/);
    expect(parseError("")).toBe("directory.yaml: the file is empty (expected users and groups)");
  });

  describe("StaticIdentityProvider", () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), "mgs-static-"));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it("reads the file again on every snapshot", async () => {
      const file = join(dir, "directory.yaml");
      await writeFile(file, "users: [a]\ngroups: [{ id: g, members: [a] }]\n");
      const idp = new StaticIdentityProvider(file);
      expect(idp.kind).toBe("static");
      const first = await idp.snapshot();
      expect(first.ok && first.value.groups.get("g")?.members).toEqual([{ kind: "user", id: "a" }]);
      await writeFile(file, "users: [a, b]\ngroups: [{ id: g, members: [a, b] }]\n");
      const second = await idp.snapshot();
      expect(second.ok && second.value.groups.get("g")?.members.length).toBe(2);
      await idp.close();
    });

    it("fails naming the file when it cannot be read or is invalid", async () => {
      const missing = join(dir, "nope.yaml");
      const result = await new StaticIdentityProvider(missing).snapshot();
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.error.message).toMatch(new RegExp(`^${missing}: cannot read the directory file: .*ENOENT`));

      const bad = join(dir, "bad.yaml");
      await writeFile(bad, "groups: [{ id: g, colour: red }]\n");
      const invalid = await new StaticIdentityProvider(bad).snapshot();
      expect(!invalid.ok && invalid.error.message).toBe(`${bad}: /groups/0/colour: unknown key`);
    });

    it("reads the example directory", async () => {
      const result = await new StaticIdentityProvider("examples/directory.yaml").snapshot();
      expect(result.ok).toBe(true);
      if (!result.ok) return;
      expect(result.value.notes).toEqual([]);
      expect([...result.value.users.keys()]).toEqual(["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]);
      const everyone = one(result.value, "everyone");
      expect([...everyone.users.keys()].sort()).toEqual(["alice", "bob", "carol", "dave", "erin", "grace", "heidi"]);
      expect(everyone.notes).toEqual(["group everyone: 1 disabled account(s) left out"]);
    });
  });
});

describe("recursive resolution", () => {
  const users = ["alice", "bob", "carol", "dave", "erin"];

  it("follows nesting and reports the group paths by name", () => {
    const snap = snapshot(
      {
        eng: { name: "engineers", members: ["alice", "g:leads"] },
        leads: { name: "eng-leads", members: ["carol", "g:arch"] },
        arch: { name: "architects", members: ["dave"] },
      },
      users,
    );
    const r = one(snap, "eng");
    expect(r.name).toBe("engineers");
    expect(asObject(r.users)).toEqual({
      alice: ["engineers"],
      carol: ["engineers > eng-leads"],
      dave: ["engineers > eng-leads > architects"],
    });
    expect(r.complete).toBe(true);
    expect(r.notes).toEqual([]);
  });

  it("ends cycles, counts every member once and notes the cycle", () => {
    const snap = snapshot(
      {
        a: { members: ["alice", "g:b"] },
        b: { members: ["bob", "g:c"] },
        c: { members: ["carol", "g:a", "g:c"] },
      },
      users,
    );
    const r = one(snap, "a");
    expect(asObject(r.users)).toEqual({ alice: ["a"], bob: ["a > b"], carol: ["a > b > c"] });
    expect(r.complete).toBe(true);
    expect(r.notes).toEqual([
      "group a: c contains itself; not followed",
      "group a: nesting cycle: c contains a, which in turn contains c; not followed again",
    ]);
    // Starting elsewhere in the cycle gives the same members, other paths.
    expect(asObject(one(snap, "c").users)).toEqual({ carol: ["c"], alice: ["c > a"], bob: ["c > a > b"] });
  });

  it("gives a user reachable two ways both paths, counted once (diamond)", () => {
    const snap = snapshot(
      {
        top: { members: ["g:left", "g:right", "erin"] },
        left: { members: ["g:bottom", "erin"] },
        right: { members: ["g:bottom"] },
        bottom: { members: ["dave"] },
      },
      users,
    );
    const r = one(snap, "top");
    expect(asObject(r.users)).toEqual({
      dave: ["top > left > bottom", "top > right > bottom"],
      erin: ["top", "top > left"],
    });
    expect(r.users.size).toBe(2);
    expect(r.notes).toEqual([]);
  });

  it("does not expand groups past the depth limit and is then incomplete", () => {
    const snap = snapshot(
      {
        a: { members: ["alice", "g:b"] },
        b: { members: ["bob", "g:c"] },
        c: { members: ["carol", "g:d"] },
        d: { members: ["dave"] },
      },
      users,
    );
    const r = one(snap, "a", 2);
    expect([...r.users.keys()]).toEqual(["alice", "bob", "carol"]);
    expect(r.complete).toBe(false);
    expect(r.incompleteReasons).toEqual(["d is nested deeper than 2 level(s) and was not expanded (a > b > c > d)"]);
    expect(r.notes).toEqual(["group a: d is nested deeper than 2 level(s) and was not expanded (a > b > c > d)"]);

    const direct = one(snap, "a", 0);
    expect([...direct.users.keys()]).toEqual(["alice"]);
    expect(direct.complete).toBe(false);
    // Deep enough: complete.
    expect(one(snap, "a", 3).complete).toBe(true);
    expect(one(snap, "c", 1).complete).toBe(true);
  });

  it("is complete when a longer route passes the limit but a short one reaches the group", () => {
    const snap = snapshot({ a: { members: ["g:b", "g:d"] }, b: { members: ["g:d"] }, d: { members: ["dave"] } }, users);
    const r = one(snap, "a", 1);
    expect(asObject(r.users)).toEqual({ dave: ["a > d"] });
    expect(r.complete).toBe(true);
    expect(r.notes).toEqual([]);
  });

  it("leaves out disabled users with one counted note per group", () => {
    const snap = snapshot({ g: { members: ["alice", "bob", "g:h"] }, h: { members: ["bob", "carol"] } }, [
      { id: "alice", attributes: {}, enabled: true },
      { id: "bob", attributes: {}, enabled: false },
      { id: "carol", attributes: {}, enabled: false },
    ]);
    const r = one(snap, "g");
    expect([...r.users.keys()]).toEqual(["alice"]);
    expect(r.notes).toEqual(["group g: 2 disabled account(s) left out"]);
  });

  it("makes the parent incomplete when a nested group is incomplete or missing", () => {
    const snap = snapshot(
      {
        all: { members: ["g:eng", "alice"] },
        eng: { members: ["g:leads", "bob"] },
        leads: { members: ["carol"], incomplete: "size limit exceeded" },
        other: { members: ["g:ghost"] },
      },
      users,
    );
    const all = one(snap, "all");
    expect(all.complete).toBe(false);
    expect(all.incompleteReasons).toEqual(["leads: size limit exceeded"]);
    expect([...all.users.keys()].sort()).toEqual(["alice", "bob", "carol"]);
    expect(one(snap, "other").incompleteReasons).toEqual(["other: nested group ghost is not in the directory"]);
    expect(one(snap, "nowhere")).toMatchObject({ complete: false, incompleteReasons: ["group nowhere is not in the directory"] });
  });

  it("returns direct owners separately, users only", () => {
    const snap = snapshot({ g: { members: ["alice"], owners: ["carol", "dave", "g:h", "zed"] }, h: { members: ["bob"] } }, [
      ...["alice", "bob", "carol"].map((id) => ({ id, attributes: {}, enabled: true })),
      { id: "dave", attributes: {}, enabled: false },
    ]);
    expect(one(snap, "g").owners.size).toBe(0);
    const r = one(snap, "g", 10, true);
    expect(asObject(r.owners)).toEqual({ carol: ["g (owners)"] });
    expect(r.notes).toEqual([
      "group g: 1 disabled owner(s) left out",
      "group g: owner h is a group; only users count as owners",
      "group g: owner zed is not a known user",
    ]);
  });

  it("resolves each group once however often it is asked for", () => {
    const snap = snapshot({ g: { members: ["alice"] } }, users);
    const result = resolveGroups(snap, ["g", "g", "g"], { maxDepth: 3 });
    expect(result.size).toBe(1);
  });

  it("survives dense cycles quickly", () => {
    // 60 groups, each containing all others: exponentially many simple paths.
    const n = 60;
    const groups: Record<string, { members: string[] }> = {};
    for (let i = 0; i < n; i++) {
      groups[`g${i}`] = { members: [`u${i}`, ...Array.from({ length: n }, (_, j) => `g:g${j}`)] };
    }
    const snap = snapshot(groups, Array.from({ length: n }, (_, i) => `u${i}`));
    const t0 = performance.now();
    const all = resolveGroups(snap, Object.keys(groups), { maxDepth: 100 });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(all.get("g0")?.users.size).toBe(n);
  });
});

describe("resolution property", () => {
  const graph = fc.record({
    groups: fc.integer({ min: 1, max: 7 }),
    users: fc.integer({ min: 0, max: 6 }),
    edges: fc.array(fc.tuple(fc.nat(6), fc.nat(6)), { maxLength: 20 }),
    memberships: fc.array(fc.tuple(fc.nat(6), fc.nat(5)), { maxLength: 20 }),
    disabled: fc.array(fc.nat(5), { maxLength: 3 }),
    incomplete: fc.array(fc.nat(6), { maxLength: 2 }),
    maxDepth: fc.integer({ min: 0, max: 5 }),
    seed: fc.integer(),
  });
  type Graph = typeof graph extends fc.Arbitrary<infer T> ? T : never;

  function build(g: Graph, shuffle: <T>(xs: T[]) => T[]): DirectorySnapshot {
    const groups = Array.from({ length: g.groups }, (_, i) => {
      const members: MemberRef[] = [
        ...g.edges.filter(([from]) => from % g.groups === i).map(([, to]): MemberRef => ({ kind: "group", id: `g${to % g.groups}` })),
        ...(g.users === 0
          ? []
          : g.memberships.filter(([gi]) => gi % g.groups === i).map(([, u]): MemberRef => ({ kind: "user", id: `u${u % g.users}` }))),
      ];
      const incomplete = g.incomplete.some((x) => x % g.groups === i);
      const group: DirectoryGroup = {
        id: `g${i}`,
        name: `G${i}`,
        members: shuffle(members),
        complete: !incomplete,
        ...(incomplete ? { incompleteReason: "cut" } : {}),
      };
      return group;
    });
    const users = Array.from({ length: g.users }, (_, i): DirectoryUser => ({
      id: `u${i}`,
      attributes: {},
      enabled: !g.disabled.includes(i),
    }));
    return {
      groups: new Map(shuffle(groups).map((x) => [x.id, x])),
      users: new Map(shuffle(users).map((x) => [x.id, x])),
      notes: [],
    };
  }

  function seededShuffle(seed: number) {
    let s = seed >>> 0 || 1;
    const next = () => {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      return (s >>> 0) / 0x100000000;
    };
    return <T>(xs: T[]): T[] => {
      const out = [...xs];
      for (let i = out.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [out[i], out[j]] = [out[j]!, out[i]!];
      }
      return out;
    };
  }

  /** Naive reference: breadth-first distances, no memo, no paths. */
  function reference(snap: DirectorySnapshot, root: string, maxDepth: number) {
    const dist = new Map([[root, 0]]);
    const queue = [root];
    const users = new Set<string>();
    let complete = true;
    while (queue.length > 0) {
      const id = queue.shift()!;
      const d = dist.get(id)!;
      const group = snap.groups.get(id)!;
      if (d > maxDepth) {
        complete = false;
        continue;
      }
      if (!group.complete) complete = false;
      for (const m of group.members) {
        if (m.kind === "user") {
          if (snap.users.get(m.id)?.enabled) users.add(m.id);
        } else if (!dist.has(m.id)) {
          dist.set(m.id, d + 1);
          queue.push(m.id);
        }
      }
    }
    return { users: [...users].sort(), complete };
  }

  const normal = (r: ResolvedGroup) => ({
    users: [...r.users.entries()].sort(([a], [b]) => (a < b ? -1 : 1)),
    complete: r.complete,
    reasons: r.incompleteReasons,
    notes: r.notes,
  });

  it("terminates, matches a naive walk, and does not depend on the order of groups or members", () => {
    fc.assert(
      fc.property(graph, (g) => {
        const ids = Array.from({ length: g.groups }, (_, i) => `g${i}`);
        const a = build(g, (xs) => xs);
        const shuffle = seededShuffle(g.seed);
        const b = build(g, shuffle);
        const ra = resolveGroups(a, ids, { maxDepth: g.maxDepth });
        const rb = resolveGroups(b, shuffle(ids), { maxDepth: g.maxDepth });
        for (const id of ids) {
          const x = ra.get(id)!;
          expect(normal(rb.get(id)!)).toEqual(normal(x));
          const ref = reference(a, id, g.maxDepth);
          expect([...x.users.keys()].sort()).toEqual(ref.users);
          expect(x.complete).toBe(ref.complete);
          for (const paths of x.users.values()) {
            expect(paths.length).toBeGreaterThan(0);
            for (const p of paths) expect(p.startsWith(x.name)).toBe(true);
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
