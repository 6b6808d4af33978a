/**
 * Recursive group resolution, shared by every provider. Pure.
 *
 * A requested group is walked breadth first. Each nested group is expanded once per requested
 * group, at its shortest nesting distance, so cycles end by construction and a user reachable
 * several ways is counted once. Semantics:
 *
 *  - users: the enabled users who are direct members of a group at distance ≤ maxDepth
 *    (the requested group is at distance 0; maxDepth 0 = direct members only);
 *  - paths ("via"): for each user, the shortest nesting paths (group names joined by " > ")
 *    of every group the user is a direct member of; two equally short branches (a diamond)
 *    give two paths. At most MAX_PATHS per user, the lexicographically first after sorting
 *    at every step, so the result does not depend on the order of groups or members;
 *  - a nested group at distance maxDepth + 1 is not expanded: a note names it and the result
 *    is INCOMPLETE (its members may be missing — fail closed);
 *  - a nested group that is itself incomplete, or that the snapshot does not hold, makes the
 *    result incomplete;
 *  - an edge back into a nesting cycle is not followed and gets a note;
 *  - disabled users are left out and counted in one note per requested group.
 *
 * Cost: one walk per distinct requested group, linear in what it reaches (groups, edges,
 * direct memberships). Each group's direct members are looked up once per call and kept as
 * integer indices; path strings are built per group, not per user, and users with the same
 * paths share one array. Requested groups are memoised within a call, so 1,000 rooms bound
 * to the same group resolve it once. `resolveGroupsIndexed` gives the same result with users
 * as indices, for callers that handle millions of memberships; `resolveGroups` wraps it in
 * Maps keyed by directory user key.
 */
import type { DirectoryGroup, DirectorySnapshot } from "./types.ts";

export interface ResolveOptions {
  /** Levels of nested groups expanded below a requested group; 0 = direct members only. */
  readonly maxDepth: number;
  /** Also collect the requested groups' direct owners (users only). Default false. */
  readonly includeOwners?: boolean;
}

export interface ResolvedGroup {
  readonly groupId: string;
  /** The group's name (its id when the snapshot does not hold it). */
  readonly name: string;
  /** Directory user key → nesting paths, e.g. ["engineers > eng-leads"]. Never mutate. */
  readonly users: ReadonlyMap<string, readonly string[]>;
  /** Direct owners (users only) → ["engineers (owners)"]. Empty unless includeOwners. */
  readonly owners: ReadonlyMap<string, readonly string[]>;
  readonly complete: boolean;
  readonly incompleteReasons: readonly string[];
  readonly notes: readonly string[];
}

export const MAX_PATHS = 10;
export const PATH_SEPARATOR = " > ";

export function resolveGroups(
  snapshot: DirectorySnapshot,
  groupIds: readonly string[],
  opts: ResolveOptions,
): ReadonlyMap<string, ResolvedGroup> {
  const indexed = resolveGroupsIndexed(snapshot, groupIds, opts);
  const keys = indexed.userKeys;
  const out = new Map<string, ResolvedGroup>();
  for (const [id, group] of indexed.groups) {
    const users = new Map<string, readonly string[]>();
    group.members.forEach((u, i) => users.set(keys[u] as string, group.paths[i] as readonly string[]));
    const owners = new Map<string, readonly string[]>();
    for (const u of group.owners) owners.set(keys[u] as string, group.ownerPaths);
    out.set(id, {
      groupId: id,
      name: group.name,
      users,
      owners,
      complete: group.complete,
      incompleteReasons: group.incompleteReasons,
      notes: group.notes,
    });
  }
  return out;
}

/**
 * The same resolution with users as indices into `userKeys` (the snapshot's users in map
 * order): for callers that handle millions of memberships (desired.ts) and want no string
 * hashing per membership.
 */
export interface IndexedResolution {
  readonly userKeys: readonly string[];
  readonly groups: ReadonlyMap<string, IndexedGroup>;
}

export interface IndexedGroup {
  readonly groupId: string;
  readonly name: string;
  /** Enabled users reached, as indices into `userKeys`, each once, in walk order. */
  readonly members: Int32Array;
  /** `paths[i]` are the nesting paths of `members[i]`. Arrays are shared: never mutate. */
  readonly paths: readonly (readonly string[])[];
  /** Enabled direct owners (users), as indices; empty unless includeOwners. */
  readonly owners: Int32Array;
  /** The one path every owner has: ["<name> (owners)"]. */
  readonly ownerPaths: readonly string[];
  readonly complete: boolean;
  readonly incompleteReasons: readonly string[];
  readonly notes: readonly string[];
}

export function resolveGroupsIndexed(
  snapshot: DirectorySnapshot,
  groupIds: readonly string[],
  opts: ResolveOptions,
): IndexedResolution {
  const resolver = new GroupResolver(snapshot, opts);
  const out = new Map<string, IndexedGroup>();
  for (const id of groupIds) {
    if (!out.has(id)) out.set(id, resolver.resolve(id));
  }
  return { userKeys: resolver.userKeys, groups: out };
}

/** Sorted union of two sorted path lists, at most MAX_PATHS long. */
export function mergePaths(a: readonly string[], b: readonly string[]): readonly string[] {
  if (a === b) return a;
  const all = [...new Set([...a, ...b])].sort(compareStrings);
  return all.length > MAX_PATHS ? all.slice(0, MAX_PATHS) : all;
}

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A group's direct members, looked up once per resolver: user indices and nested groups. */
interface DirectMembers {
  readonly users: Int32Array;
  readonly unknownUsers: readonly string[];
  readonly groups: readonly { readonly id: string; readonly index: number | undefined }[];
}

const EMPTY = new Int32Array(0);

class GroupResolver {
  readonly userKeys: string[];
  readonly #userIndex = new Map<string, number>();
  readonly #enabled: Uint8Array;
  readonly #maxDepth: number;
  readonly #includeOwners: boolean;
  /** Groups as dense integers, for the per-walk scratch arrays. */
  readonly #index = new Map<string, number>();
  readonly #groups: DirectoryGroup[];
  readonly #direct: (DirectMembers | undefined)[];
  #component: Int32Array | undefined;
  // Scratch state of one walk, reset by bumping #stamp instead of clearing.
  #stamp = 0;
  readonly #seen: Int32Array;
  readonly #dist: Int32Array;
  readonly #paths: (readonly string[] | undefined)[];
  readonly #userSeen: Int32Array;
  readonly #userSlot: Int32Array;

  constructor(snapshot: DirectorySnapshot, opts: ResolveOptions) {
    const depth = Number.isNaN(opts.maxDepth) ? 0 : Math.max(0, Math.floor(opts.maxDepth));
    this.#maxDepth = Math.min(depth, 0x3fffffff);
    this.#includeOwners = opts.includeOwners ?? false;

    this.userKeys = [...snapshot.users.keys()];
    this.#enabled = new Uint8Array(this.userKeys.length);
    let u = 0;
    for (const [key, user] of snapshot.users) {
      this.#userIndex.set(key, u);
      this.#enabled[u] = user.enabled ? 1 : 0;
      u++;
    }
    this.#userSeen = new Int32Array(this.userKeys.length);
    this.#userSlot = new Int32Array(this.userKeys.length);

    this.#groups = [...snapshot.groups.values()];
    [...snapshot.groups.keys()].forEach((id, i) => this.#index.set(id, i));
    const n = this.#groups.length;
    this.#direct = new Array<DirectMembers | undefined>(n);
    this.#seen = new Int32Array(n);
    this.#dist = new Int32Array(n);
    this.#paths = new Array<readonly string[] | undefined>(n);
  }

  resolve(groupId: string): IndexedGroup {
    const root = this.#index.get(groupId);
    const rootGroup = root === undefined ? undefined : this.#groups[root];
    if (root === undefined || rootGroup === undefined) {
      return {
        groupId,
        name: groupId,
        members: EMPTY,
        paths: [],
        owners: EMPTY,
        ownerPaths: [],
        complete: false,
        incompleteReasons: [`group ${groupId} is not in the directory`],
        notes: [],
      };
    }

    const rootName = rootGroup.name;
    const members: number[] = [];
    const memberPaths: (readonly string[])[] = [];
    const notes = new Set<string>();
    const reasons = new Set<string>();
    let disabled = 0;
    let truncated = false;

    const stamp = ++this.#stamp;
    const userSeen = this.#userSeen;
    const userSlot = this.#userSlot;
    const enabled = this.#enabled;
    const queue: number[] = [root];
    this.#seen[root] = stamp;
    this.#dist[root] = 0;
    this.#paths[root] = [rootName];

    for (let head = 0; head < queue.length; head++) {
      const x = queue[head] as number;
      const group = this.#groups[x] as DirectoryGroup;
      const d = this.#dist[x] as number;
      // All predecessors on shortest paths sit in the previous layer, already walked.
      const candidates = this.#paths[x] ?? [group.name];
      const paths = finishPaths(candidates);
      if (paths.length < candidates.length) truncated = true;
      this.#paths[x] = paths;
      const where = paths[0] ?? group.name;

      if (d > this.#maxDepth) {
        const why = `${group.name} is nested deeper than ${this.#maxDepth} level(s) and was not expanded (${where})`;
        notes.add(`group ${rootName}: ${why}`);
        reasons.add(why);
        continue;
      }
      if (!group.complete) {
        reasons.add(`${group.name}: ${group.incompleteReason ?? "could not be read completely"}`);
      }

      const direct = this.#directMembers(x);
      for (const id of direct.unknownUsers) notes.add(`group ${group.name}: member ${id} is not a known user`);
      const users = direct.users;
      for (let i = 0; i < users.length; i++) {
        const u = users[i] as number;
        if (userSeen[u] === stamp) {
          const slot = userSlot[u] as number;
          if (slot >= 0) memberPaths[slot] = mergePaths(memberPaths[slot] as readonly string[], paths);
          continue;
        }
        userSeen[u] = stamp;
        if (enabled[u] === 1) {
          userSlot[u] = members.length;
          members.push(u);
          memberPaths.push(paths);
        } else {
          userSlot[u] = -1;
          disabled++;
        }
      }

      for (const { id, index: y } of direct.groups) {
        if (y === undefined) {
          reasons.add(`${group.name}: nested group ${id} is not in the directory`);
          continue;
        }
        const yName = (this.#groups[y] as DirectoryGroup).name;
        if (this.#seen[y] !== stamp) {
          this.#seen[y] = stamp;
          this.#dist[y] = d + 1;
          this.#paths[y] = paths.map((p) => p + PATH_SEPARATOR + yName);
          queue.push(y);
        } else if (this.#dist[y] === d + 1) {
          // Another shortest route to a group of the next layer (a diamond).
          this.#paths[y] = [...(this.#paths[y] ?? []), ...paths.map((p) => p + PATH_SEPARATOR + yName)];
        } else if (y === x) {
          notes.add(`group ${rootName}: ${group.name} contains itself; not followed`);
        } else if (this.#sameComponent(x, y)) {
          notes.add(
            `group ${rootName}: nesting cycle: ${group.name} contains ${yName}, which in turn contains ${group.name}; not followed again`,
          );
        }
        // Otherwise a longer route to a group already expanded: nothing new to add.
      }
    }
    for (const x of queue) this.#paths[x] = undefined;

    if (disabled > 0) notes.add(`group ${rootName}: ${disabled} disabled account(s) left out`);
    if (truncated) {
      notes.add(`group ${rootName}: some members have more than ${MAX_PATHS} nesting paths; the first ${MAX_PATHS} are listed`);
    }
    const owners = this.#includeOwners ? this.#owners(rootGroup, notes) : EMPTY;
    const incompleteReasons = [...reasons].sort(compareStrings);
    return {
      groupId,
      name: rootName,
      members: Int32Array.from(members),
      paths: memberPaths,
      owners,
      ownerPaths: [`${rootName} (owners)`],
      complete: incompleteReasons.length === 0,
      incompleteReasons,
      notes: [...notes].sort(compareStrings),
    };
  }

  #directMembers(x: number): DirectMembers {
    const cached = this.#direct[x];
    if (cached !== undefined) return cached;
    const users: number[] = [];
    const unknownUsers: string[] = [];
    const groups: { id: string; index: number | undefined }[] = [];
    for (const member of (this.#groups[x] as DirectoryGroup).members) {
      if (member.kind === "group") {
        groups.push({ id: member.id, index: this.#index.get(member.id) });
        continue;
      }
      const u = this.#userIndex.get(member.id);
      if (u === undefined) unknownUsers.push(member.id);
      else users.push(u);
    }
    const direct = { users: Int32Array.from(users), unknownUsers, groups };
    this.#direct[x] = direct;
    return direct;
  }

  #owners(group: DirectoryGroup, notes: Set<string>): Int32Array {
    const owners = new Set<number>();
    const disabled = new Set<number>();
    for (const ref of group.owners ?? []) {
      if (ref.kind === "group") {
        notes.add(`group ${group.name}: owner ${ref.id} is a group; only users count as owners`);
        continue;
      }
      const u = this.#userIndex.get(ref.id);
      if (u === undefined) notes.add(`group ${group.name}: owner ${ref.id} is not a known user`);
      else if (this.#enabled[u] !== 1) disabled.add(u);
      else owners.add(u);
    }
    if (disabled.size > 0) notes.add(`group ${group.name}: ${disabled.size} disabled owner(s) left out`);
    return Int32Array.from(owners);
  }

  #sameComponent(a: number, b: number): boolean {
    this.#component ??= stronglyConnectedComponents(this.#groups, this.#index);
    return this.#component[a] === this.#component[b];
  }
}

function finishPaths(candidates: readonly string[]): readonly string[] {
  if (candidates.length === 1) return candidates;
  const sorted = [...new Set(candidates)].sort(compareStrings);
  return sorted.length > MAX_PATHS ? sorted.slice(0, MAX_PATHS) : sorted;
}

/** Tarjan's algorithm, iterative (nesting can be deep): component number per group. */
function stronglyConnectedComponents(
  groups: readonly DirectoryGroup[],
  index: ReadonlyMap<string, number>,
): Int32Array {
  const n = groups.length;
  const children: number[][] = groups.map((g) => {
    const out: number[] = [];
    for (const m of g.members) {
      if (m.kind !== "group") continue;
      const c = index.get(m.id);
      if (c !== undefined) out.push(c);
    }
    return out;
  });
  const order = new Int32Array(n).fill(-1);
  const low = new Int32Array(n);
  const component = new Int32Array(n).fill(-1);
  const onStack = new Uint8Array(n);
  const stack: number[] = [];
  let counter = 0;
  let components = 0;

  for (let start = 0; start < n; start++) {
    if (order[start] !== -1) continue;
    const frames: { node: number; next: number }[] = [];
    const enter = (v: number): void => {
      order[v] = counter;
      low[v] = counter;
      counter++;
      stack.push(v);
      onStack[v] = 1;
      frames.push({ node: v, next: 0 });
    };
    enter(start);
    while (frames.length > 0) {
      const frame = frames[frames.length - 1] as { node: number; next: number };
      const v = frame.node;
      const edges = children[v] as number[];
      if (frame.next < edges.length) {
        const w = edges[frame.next++] as number;
        if (order[w] === -1) enter(w);
        else if (onStack[w] === 1) low[v] = Math.min(low[v] as number, order[w] as number);
        continue;
      }
      frames.pop();
      if (low[v] === order[v]) {
        let w: number;
        do {
          w = stack.pop() as number;
          onStack[w] = 0;
          component[w] = components;
        } while (w !== v);
        components++;
      }
      const parent = frames[frames.length - 1];
      if (parent !== undefined) low[parent.node] = Math.min(low[parent.node] as number, low[v] as number);
    }
  }
  return component;
}
