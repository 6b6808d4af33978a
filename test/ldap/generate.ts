/**
 * Deterministic directories as LDIF, for benchmarks and the fixtures' "big" group.
 *
 * The output never contains the base entries (dc=example,dc=org, ou=people, ou=groups,
 * cn=reader): `startSlapd` always creates those itself, both when it loads LDIF offline
 * (`bulkLdif`, slapadd) and online (`ldif`, ldapadd), so generated LDIF works either way.
 *
 * Layout of `generateDirectoryLdif`:
 * - users `uid=u000000,ou=people,dc=example,dc=org` (inetOrgPerson: uid, cn, sn, mail);
 * - groups `cn=g0000,ou=groups,dc=example,dc=org` (groupOfNames), spread over `maxDepth`
 *   levels that double in size going down (level 0 = top). Every group below the top has
 *   one parent on the level right above it, so the longest chain has exactly `maxDepth`
 *   groups (e.g. 6: g(0) > g(1) > ... > g(5) > users); about 1 in 8 gets a second parent
 *   somewhere higher up (diamonds);
 * - `cycles` extra edges from a group to one of its own ancestors (cycles of length >= 2);
 * - every group has at least one user member; every user is in one random group, about
 *   a third in a second one.
 * Everything is a function of the options (seeded PRNG): the same options give the same LDIF.
 */

export interface GenerateOptions {
  readonly users: number;
  readonly groups: number;
  /** Number of group levels (the longest nesting chain counts this many groups). */
  readonly maxDepth: number;
  /** Number of edges that close a cycle. */
  readonly cycles: number;
  readonly seed: number;
}

export interface GeneratedDirectory {
  readonly ldif: string;
  /** In LDIF order (level 0 first). */
  readonly groupDns: string[];
  readonly userDns: string[];
  /** The level-0 groups (no parent unless a cycle points at them). */
  readonly topGroupDns: string[];
  /** Direct member DNs (users and groups) of every group, in LDIF order. */
  readonly directMembers: ReadonlyMap<string, readonly string[]>;
}

export const PEOPLE_DN = "ou=people,dc=example,dc=org";
export const GROUPS_DN = "ou=groups,dc=example,dc=org";

/** mulberry32: small, fast, good enough to shape test data. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pad = (n: number, width: number): string => String(n).padStart(width, "0");

function checkCount(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${value}`);
}

/** Group counts per level: doubling going down, each level at least one group. */
function levelSizes(groups: number, depth: number): number[] {
  const weights = Array.from({ length: depth }, (_, level) => 2 ** level);
  const total = weights.reduce((a, b) => a + b, 0);
  const sizes = weights.map((w) => Math.max(1, Math.floor((groups * w) / total)));
  let rest = groups - sizes.reduce((a, b) => a + b, 0);
  for (let level = depth - 1; rest !== 0; level = level === 0 ? depth - 1 : level - 1) {
    const size = sizes[level]!;
    if (rest > 0) {
      sizes[level] = size + 1;
      rest--;
    } else if (size > 1) {
      sizes[level] = size - 1;
      rest++;
    }
  }
  return sizes;
}

export function generateDirectoryLdif(opts: GenerateOptions): GeneratedDirectory {
  checkCount("users", opts.users, 1);
  checkCount("groups", opts.groups, 1);
  checkCount("maxDepth", opts.maxDepth, 1);
  checkCount("cycles", opts.cycles, 0);
  if (opts.maxDepth > opts.groups) throw new RangeError(`maxDepth (${opts.maxDepth}) exceeds groups (${opts.groups})`);
  if (opts.cycles > 0 && opts.maxDepth < 2) throw new RangeError("cycles need maxDepth >= 2");
  const random = prng(opts.seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;

  const userWidth = Math.max(6, String(opts.users - 1).length);
  const groupWidth = Math.max(4, String(opts.groups - 1).length);
  const userIds = Array.from({ length: opts.users }, (_, i) => `u${pad(i, userWidth)}`);
  const userDns = userIds.map((uid) => `uid=${uid},${PEOPLE_DN}`);
  const groupCns = Array.from({ length: opts.groups }, (_, i) => `g${pad(i, groupWidth)}`);
  const groupDns = groupCns.map((cn) => `cn=${cn},${GROUPS_DN}`);

  // Levels: group indexes in order, level 0 first.
  const levels: number[][] = [];
  let next = 0;
  for (const size of levelSizes(opts.groups, opts.maxDepth)) {
    levels.push(Array.from({ length: size }, () => next++));
  }

  // Member sets keep insertion order and refuse duplicates (slapd rejects them).
  const members = groupDns.map(() => new Set<string>());
  const parents: number[][] = groupDns.map(() => []);
  const addGroupEdge = (parent: number, child: number): boolean => {
    const set = members[parent]!;
    const dn = groupDns[child]!;
    if (set.has(dn)) return false;
    set.add(dn);
    parents[child]!.push(parent);
    return true;
  };

  for (let level = 1; level < levels.length; level++) {
    const above = levels[level - 1]!;
    for (const g of levels[level]!) {
      const first = pick(above);
      addGroupEdge(first, g);
      if (random() < 0.125) {
        const upperLevel = Math.floor(random() * level);
        const second = pick(levels[upperLevel]!);
        if (second !== first) addGroupEdge(second, g);
      }
    }
  }

  // Cycles: an edge from a group below the top to one of its ancestors.
  const below = levels.slice(1).flat();
  for (let made = 0, tries = 0; made < opts.cycles && tries < opts.cycles * 100; tries++) {
    const start = pick(below);
    let ancestor = pick(parents[start]!);
    const steps = Math.floor(random() * 3);
    for (let i = 0; i < steps && parents[ancestor]!.length > 0; i++) ancestor = pick(parents[ancestor]!);
    if (addGroupEdge(start, ancestor)) made++;
  }

  // Users: every group gets one, every user lands in one or two groups.
  for (let g = 0; g < opts.groups; g++) members[g]!.add(userDns[g % opts.users]!);
  for (const dn of userDns) {
    members[Math.floor(random() * opts.groups)]!.add(dn);
    if (random() < 1 / 3) members[Math.floor(random() * opts.groups)]!.add(dn);
  }

  const out: string[] = [];
  userIds.forEach((uid, i) => {
    out.push(
      `dn: ${userDns[i]!}\nobjectClass: inetOrgPerson\nuid: ${uid}\ncn: User ${uid}\nsn: ${uid}\nmail: ${uid}@example.org\n`,
    );
  });
  const directMembers = new Map<string, readonly string[]>();
  groupDns.forEach((dn, g) => {
    const list = [...members[g]!];
    directMembers.set(dn, list);
    out.push(`dn: ${dn}\nobjectClass: groupOfNames\ncn: ${groupCns[g]!}\n${list.map((m) => `member: ${m}\n`).join("")}`);
  });

  return {
    ldif: out.join("\n"),
    groupDns,
    userDns,
    topGroupDns: levels[0]!.map((g) => groupDns[g]!),
    directMembers,
  };
}

/**
 * Every user reachable from `groupDn` through `directMembers` (a member that is a key is a
 * group and is followed once; any other member is a user). For checking a resolver
 * against generated data.
 */
export function recursiveUsers(directMembers: ReadonlyMap<string, readonly string[]>, groupDn: string): Set<string> {
  const users = new Set<string>();
  const seen = new Set<string>([groupDn]);
  const queue = [groupDn];
  for (let dn = queue.pop(); dn !== undefined; dn = queue.pop()) {
    for (const member of directMembers.get(dn) ?? []) {
      if (!directMembers.has(member)) users.add(member);
      else if (!seen.has(member)) {
        seen.add(member);
        queue.push(member);
      }
    }
  }
  return users;
}

/** Number of fixture users in the "big" group (more than one page of 100). */
export const BIG_GROUP_SIZE = 120;

/**
 * The "big" fixture group and its users user000..user119, as checked in at
 * test/ldap/big.ldif (the harness test fails when the two drift apart).
 */
export function bigGroupFixtureLdif(): string {
  const uids = Array.from({ length: BIG_GROUP_SIZE }, (_, i) => `user${pad(i, 3)}`);
  const header =
    "# The fixtures' \"big\" group: 120 members, more than one page (100) and more than\n" +
    "# sizeLimit 10. Written by bigGroupFixtureLdif() in test/ldap/generate.ts; the harness\n" +
    "# test checks that this file still equals its output.\n";
  const users = uids.map(
    (uid) =>
      `dn: uid=${uid},${PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: ${uid}\ncn: User ${uid.slice(4)}\nsn: User\nmail: ${uid}@example.org\n`,
  );
  const group =
    `dn: cn=big,${GROUPS_DN}\nobjectClass: groupOfNames\ncn: big\ndescription: ${BIG_GROUP_SIZE} members, more than one page\n` +
    uids.map((uid) => `member: uid=${uid},${PEOPLE_DN}\n`).join("");
  return [header, ...users, group].join("\n");
}
