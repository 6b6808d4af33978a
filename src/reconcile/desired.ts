/**
 * Directory snapshot + room bindings → what each room should look like. Pure.
 *
 * - members: the union of the recursive members (or direct owners) of every bound group;
 * - level/role: the highest level any source gives (equal levels: the role name that sorts
 *   first); `via`: the nesting paths of every source, sorted;
 * - incompleteGroups: bound groups whose resolution is incomplete (a nested group failed, the
 *   depth limit cut, a group is missing), missing group references, and groups bound with a
 *   role the role table does not know. The planner removes nobody from such a room;
 * - notes: why groups are incomplete, cycles, depth cuts, disabled counts, directory users that
 *   could not be mapped ("skipped"), several directory users mapping to one Matrix id (merged).
 *
 * Speed (1,000 rooms × 10,000 users): every directory user is mapped once; Matrix ids are
 * ranked once, so sorting a member list is an integer sort; the sorted member list of each
 * (group, role) is built once and shared by every room bound to it, and several sources are
 * merged by rank in linear time. Output arrays and member objects may be shared between rooms:
 * treat them as read-only.
 */
import { compareStrings, mergePaths, resolveGroupsIndexed, type IndexedGroup } from "../idp/resolve.ts";
import type { BindingSource, RoomGroupBinding } from "../idp/room-mapping.ts";
import type { DirectorySnapshot } from "../idp/types.ts";
import type { UserMapper } from "../idp/user-mapping.ts";
import type { UserId } from "../matrix/ids.ts";
import type { DesiredMember, DesiredRoom } from "./types.ts";

export interface BuildDesiredOptions {
  /** Role name → power level, e.g. { member: 0, moderator: 50, admin: 100 }. */
  readonly roles: Readonly<Record<string, number>>;
  readonly mapUser: UserMapper;
  readonly maxDepth: number;
}

interface MemberList {
  readonly members: readonly DesiredMember[];
  /** ranks[i] is the rank of members[i].user; ascending. */
  readonly ranks: Int32Array;
  /** "skipped" notes for directory users that could not be mapped. */
  readonly skipped: readonly string[];
}

/** Every enabled directory user mapped once; Matrix ids ranked in sort order. */
interface UserTable {
  /** Per user index: rank of its Matrix id, or -1 when it could not be mapped. */
  readonly rank: Int32Array;
  /** Per rank: the Matrix id. */
  readonly ids: readonly UserId[];
  /** Per user index: why it could not be mapped. */
  readonly reasons: readonly (string | undefined)[];
  /** Matrix ids that several directory users map to → their user indices. */
  readonly collisions: ReadonlyMap<UserId, readonly number[]>;
}

const sourceKey = (s: BindingSource): string => `${s.groupId}\u0000${s.role}\u0000${s.owners}`;

export function buildDesired(
  snapshot: DirectorySnapshot,
  bindings: readonly RoomGroupBinding[],
  opts: BuildDesiredOptions,
): DesiredRoom[] {
  // Merge bindings that name the same room (mapGroupsToRooms already does; be safe), and
  // drop repeated sources.
  const rooms = new Map<string, { sources: Map<string, BindingSource>; missing: string[] }>();
  for (const b of bindings) {
    let entry = rooms.get(b.room);
    if (entry === undefined) {
      entry = { sources: new Map(), missing: [] };
      rooms.set(b.room, entry);
    }
    for (const s of b.sources) entry.sources.set(sourceKey(s), s);
    entry.missing.push(...b.missingGroups);
  }
  // How many rooms use each member list: lists used once are not kept after use.
  const uses = new Map<string, number>();
  for (const { sources } of rooms.values()) for (const key of sources.keys()) uses.set(key, (uses.get(key) ?? 0) + 1);

  const groupIds = [...new Set(bindings.flatMap((b) => b.sources.map((s) => s.groupId)))];
  const includeOwners = bindings.some((b) => b.sources.some((s) => s.owners));
  const resolved = resolveGroupsIndexed(snapshot, groupIds, { maxDepth: opts.maxDepth, includeOwners });
  const table = mapAllUsers(snapshot, opts.mapUser);
  const lists = new ListBuilder(table, uses);
  const merger = new RankMerger(table.ids.length);

  const out: DesiredRoom[] = [];
  for (const room of [...rooms.keys()].sort(compareStrings)) {
    const { sources, missing } = rooms.get(room) as { sources: Map<string, BindingSource>; missing: string[] };
    const notes = new Set<string>();
    const incomplete = new Set<string>(missing);
    const roomLists: MemberList[] = [];
    const used: IndexedGroup[] = [];
    const seenGroups = new Set<string>();

    for (const [key, source] of sources) {
      const group = resolved.groups.get(source.groupId) as IndexedGroup;
      if (!seenGroups.has(source.groupId)) {
        seenGroups.add(source.groupId);
        for (const note of group.notes) notes.add(note);
        if (!group.complete) {
          incomplete.add(group.name);
          for (const reason of group.incompleteReasons) notes.add(`group ${group.name} is incomplete: ${reason}`);
        }
      }
      const level = Object.hasOwn(opts.roles, source.role) ? opts.roles[source.role] : undefined;
      if (typeof level !== "number") {
        incomplete.add(group.name);
        notes.add(`group ${group.name}: role ${source.role} is not defined; its members are left out (counted as incomplete)`);
        continue;
      }
      const list = lists.get(key, group, source, level);
      for (const note of list.skipped) notes.add(note);
      roomLists.push(list);
      used.push(group);
    }

    const members = roomLists.length === 1 ? (roomLists[0] as MemberList).members : merger.merge(roomLists);
    for (const note of collisionNotes(table, used, resolved.userKeys)) notes.add(note);
    out.push({ room, members, incompleteGroups: [...incomplete].sort(compareStrings), notes: [...notes] });
  }
  return out;
}

function mapAllUsers(snapshot: DirectorySnapshot, mapUser: UserMapper): UserTable {
  const n = snapshot.users.size;
  const mappedIds = new Array<UserId | undefined>(n);
  const reasons = new Array<string | undefined>(n);
  const holders = new Map<UserId, number[]>();
  let u = 0;
  for (const user of snapshot.users.values()) {
    if (user.enabled) {
      const result = mapUser(user);
      if (result.ok) {
        mappedIds[u] = result.userId;
        const list = holders.get(result.userId);
        if (list === undefined) holders.set(result.userId, [u]);
        else list.push(u);
      } else {
        reasons[u] = result.reason;
      }
    }
    u++;
  }
  const ids = [...holders.keys()].sort(compareStrings);
  const rankOf = new Map<UserId, number>();
  ids.forEach((id, i) => rankOf.set(id, i));
  const rank = new Int32Array(n).fill(-1);
  for (let i = 0; i < n; i++) {
    const id = mappedIds[i];
    if (id !== undefined) rank[i] = rankOf.get(id) as number;
  }
  const collisions = new Map<UserId, readonly number[]>();
  for (const [id, holders_] of holders) if (holders_.length > 1) collisions.set(id, holders_);
  return { rank, ids, reasons, collisions };
}

/** Builds the member list of a (group, members/owners, role) sorted by Matrix id; keeps it while rooms still need it. */
class ListBuilder {
  readonly #table: UserTable;
  readonly #uses: Map<string, number>;
  readonly #cache = new Map<string, MemberList>();
  readonly #slots: (DesiredMember | undefined)[];
  readonly #ranks: RankSorter;

  constructor(table: UserTable, uses: Map<string, number>) {
    this.#table = table;
    this.#uses = uses;
    this.#slots = new Array<DesiredMember | undefined>(table.ids.length);
    this.#ranks = new RankSorter(table.ids.length);
  }

  get(key: string, group: IndexedGroup, source: BindingSource, level: number): MemberList {
    const remaining = (this.#uses.get(key) ?? 1) - 1;
    this.#uses.set(key, remaining);
    const cached = this.#cache.get(key);
    if (cached !== undefined) {
      if (remaining <= 0) this.#cache.delete(key);
      return cached;
    }

    const { rank, ids, reasons } = this.#table;
    const slots = this.#slots;
    const users = source.owners ? group.owners : group.members;
    const role = source.role;
    const ranks: number[] = [];
    const skipped: string[] = [];
    for (let i = 0; i < users.length; i++) {
      const u = users[i] as number;
      const via = source.owners ? group.ownerPaths : (group.paths[i] as readonly string[]);
      const r = rank[u] as number;
      if (r < 0) {
        skipped.push(`${reasons[u] ?? "cannot be mapped"}; skipped`);
        continue;
      }
      const before = slots[r];
      if (before === undefined) {
        slots[r] = { user: ids[r] as UserId, level, role, via };
        ranks.push(r);
      } else {
        // Two directory users with one Matrix id in the same group: one member, all paths.
        slots[r] = { ...before, via: mergePaths(before.via, via) };
      }
    }
    const sorted = this.#ranks.sort(ranks);
    const members = new Array<DesiredMember>(sorted.length);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i] as number;
      members[i] = slots[r] as DesiredMember;
      slots[r] = undefined;
    }
    const list = { members, ranks: sorted, skipped };
    if (remaining > 0) this.#cache.set(key, list);
    return list;
  }
}

/** Merges sorted member lists by rank; a user in several gets the highest level, all paths. */
class RankMerger {
  readonly #slots: (DesiredMember | undefined)[];
  readonly #ranks: RankSorter;

  constructor(count: number) {
    this.#slots = new Array<DesiredMember | undefined>(count);
    this.#ranks = new RankSorter(count);
  }

  merge(lists: readonly MemberList[]): DesiredMember[] {
    const touched: number[] = [];
    for (const list of lists) {
      for (let i = 0; i < list.ranks.length; i++) {
        const r = list.ranks[i] as number;
        const member = list.members[i] as DesiredMember;
        const before = this.#slots[r];
        if (before === undefined) {
          this.#slots[r] = member;
          touched.push(r);
        } else {
          this.#slots[r] = combine(before, member);
        }
      }
    }
    const sorted = this.#ranks.sort(touched);
    const out = new Array<DesiredMember>(sorted.length);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i] as number;
      out[i] = this.#slots[r] as DesiredMember;
      this.#slots[r] = undefined;
    }
    return out;
  }
}

/**
 * Sorts distinct ranks in [0, count): a comparison sort for small sets, a sweep over a bitmap
 * for sets that cover a good share of all ranks (linear either way).
 */
class RankSorter {
  readonly #marks: Uint8Array;

  constructor(count: number) {
    this.#marks = new Uint8Array(count);
  }

  sort(ranks: readonly number[]): Int32Array {
    const marks = this.#marks;
    if (ranks.length * 16 < marks.length) return Int32Array.from(ranks).sort();
    for (const r of ranks) marks[r] = 1;
    const out = new Int32Array(ranks.length);
    let k = 0;
    for (let r = 0; r < marks.length; r++) {
      if (marks[r] === 1) {
        out[k++] = r;
        marks[r] = 0;
      }
    }
    return out;
  }
}

function combine(a: DesiredMember, b: DesiredMember): DesiredMember {
  const aWins = a.level > b.level || (a.level === b.level && compareStrings(a.role, b.role) <= 0);
  const top = aWins ? a : b;
  const via = mergeAllPaths(a.via, b.via);
  return via === top.via ? top : { user: top.user, level: top.level, role: top.role, via };
}

/** Sorted union without a cap: `via` of a room member keeps every source's paths. */
function mergeAllPaths(a: readonly string[], b: readonly string[]): readonly string[] {
  if (a === b) return a;
  return [...new Set([...a, ...b])].sort(compareStrings);
}

/** A note for each Matrix id that two or more directory users present in this room map to. */
function collisionNotes(table: UserTable, groups: readonly IndexedGroup[], userKeys: readonly string[]): string[] {
  if (table.collisions.size === 0 || groups.length === 0) return [];
  const present = new Set<number>();
  const wanted = new Set<number>();
  for (const holders of table.collisions.values()) for (const u of holders) wanted.add(u);
  for (const group of groups) {
    for (const u of group.members) if (wanted.has(u)) present.add(u);
    for (const u of group.owners) if (wanted.has(u)) present.add(u);
  }
  const notes: string[] = [];
  for (const [userId, holders] of table.collisions) {
    const here = holders.filter((u) => present.has(u)).map((u) => userKeys[u] as string);
    if (here.length > 1) {
      notes.push(`directory users ${here.sort(compareStrings).join(", ")} all map to ${userId}; merged (highest role wins)`);
    }
  }
  return notes;
}

/**
 * One room reached through several configured references (two aliases of one room, or an
 * alias and the room's id): their desired states merged into one, as if every group had been
 * mapped to one reference — members the union, a user's level the highest any reference gives,
 * incomplete groups and notes of them all. `room` names the merged room (the first reference).
 */
export function mergeDesiredRooms(room: string, parts: readonly DesiredRoom[]): DesiredRoom {
  if (parts.length === 1 && parts[0]?.room === room) return parts[0];
  const byUser = new Map<UserId, DesiredMember>();
  for (const part of parts) {
    for (const m of part.members) {
      const before = byUser.get(m.user);
      byUser.set(m.user, before === undefined ? m : combine(before, m));
    }
  }
  const members = [...byUser.values()].sort((a, b) => compareStrings(a.user, b.user));
  const incomplete = new Set(parts.flatMap((p) => p.incompleteGroups));
  const notes = new Set(parts.flatMap((p) => p.notes));
  return { room, members, incompleteGroups: [...incomplete].sort(compareStrings), notes: [...notes] };
}
