/**
 * Which directory groups feed which room, and with which role. Pure.
 *
 * Two sources, merged per room:
 *
 * 1. Explicit mapping (config `rooms`): `{ room, groups: [{ group, role }] }`. `group` names a
 *    directory group by id (DN, Graph object id, static key) or, when no id matches, by name.
 *    A group that does not exist — or a name that several groups share — is reported in
 *    `notes` and recorded in the binding's `missingGroups`: the room then counts as depending
 *    on an incomplete group, so the planner removes nobody from it (fail closed).
 *
 * 2. The naming convention (inherited from the inviterbot), read from group NAMES:
 *    - Azure / Graph style: `<prefix><alias>`, e.g. `MTRX #example:matrix.example.com`
 *      → `#example:matrix.example.com`.
 *    - LDAP style, where '#' and ':' are awkward in a cn: `xxx<localpart>xxx<server>`,
 *      e.g. `xxxexamplexxxmatrix.example.com` → `#example:matrix.example.com`. Exactly: the
 *      name starts with `xxx`; the localpart runs from there to the next `xxx` (so it can
 *      never contain `xxx`); the server is everything after that (it may contain `xxx`).
 *      This is the seed's rule "replace the first `xxx` by '#' and the second by ':'",
 *      restricted to names that begin with `xxx` (the seed's LDAP filter was `cn=xxx*`).
 *    - Without a server part (`MTRX #general`, `xxxgeneral`) the alias gets `server` when
 *      that option is set; otherwise the group is ignored with a note.
 *    - The result must be a valid room alias; names that look like convention names (start
 *      with the prefix or `xxx`) but do not give one are ignored with a note; all other
 *      names are ignored silently.
 *    - The members of the group give `memberRole`. If the group has (Graph) owners, those
 *      owners give `ownersRole`.
 *    - A sibling group named like a convention group plus `ownersSuffix` (e.g.
 *      `xxxexamplexxxmatrix.example.com_owners`, `MTRX #example:matrix.example.com_owners`)
 *      gives `ownersRole` to its members in that room. Unlike the seed, the suffix must end
 *      the name. A sibling applies when its room is bound by a convention group or an
 *      explicit mapping; on its own it creates no room (noted).
 *
 * Bindings come out sorted by room, sources sorted and without duplicates.
 */
import { parseRoomAlias, parseRoomId } from "../matrix/ids.ts";
import { compareStrings } from "./resolve.ts";
import type { DirectoryGroup, DirectorySnapshot } from "./types.ts";

export interface ExplicitRoom {
  /** "#alias:server" or "!roomid". */
  readonly room: string;
  readonly groups: readonly { readonly group: string; readonly role: string }[];
}

/** The config's `rooms` list. */
export type ExplicitRoomMapping = readonly ExplicitRoom[];

export interface ConventionMapping {
  readonly enabled: boolean;
  /** Azure style prefix, e.g. "MTRX ". Empty = Azure style off. */
  readonly prefix: string;
  /** e.g. "_owners". Empty = no owners siblings. */
  readonly ownersSuffix: string;
  readonly ownersRole: string;
  readonly memberRole: string;
  /** Server for convention names that carry no server part. */
  readonly server?: string;
}

export interface BindingSource {
  readonly groupId: string;
  readonly role: string;
  /** True: the group's owners list gives the role, not its members. */
  readonly owners: boolean;
}

export interface RoomGroupBinding {
  readonly room: string;
  readonly sources: readonly BindingSource[];
  /** Group references (as configured) that the directory does not hold: count as incomplete. */
  readonly missingGroups: readonly string[];
}

export interface RoomMapping {
  readonly bindings: readonly RoomGroupBinding[];
  readonly notes: readonly string[];
}

export type ConventionMatch =
  | { readonly kind: "room"; readonly room: string; readonly owners: boolean }
  | { readonly kind: "invalid"; readonly reason: string }
  | { readonly kind: "none" };

const LDAP_MARK = "xxx";

/** What the naming convention makes of one group name. */
export function matchConventionName(name: string, convention: ConventionMapping): ConventionMatch {
  if (!convention.enabled) return { kind: "none" };
  const suffix = convention.ownersSuffix;
  if (suffix !== "" && name.endsWith(suffix) && name.length > suffix.length) {
    const base = aliasFromName(name.slice(0, -suffix.length), convention);
    if (base !== undefined) {
      return typeof base === "string" ? { kind: "room", room: base, owners: true } : base;
    }
  }
  const alias = aliasFromName(name, convention);
  if (alias === undefined) return { kind: "none" };
  return typeof alias === "string" ? { kind: "room", room: alias, owners: false } : alias;
}

/** The alias a convention name stands for; undefined when the name is not a convention name. */
function aliasFromName(
  name: string,
  convention: ConventionMapping,
): string | { readonly kind: "invalid"; readonly reason: string } | undefined {
  let localpart: string;
  let server: string | undefined;
  if (convention.prefix !== "" && name.startsWith(convention.prefix)) {
    const rest = name.slice(convention.prefix.length);
    if (!rest.startsWith("#")) {
      return { kind: "invalid", reason: `after ${JSON.stringify(convention.prefix)} comes no room alias` };
    }
    const colon = rest.indexOf(":");
    localpart = colon === -1 ? rest.slice(1) : rest.slice(1, colon);
    server = colon === -1 ? undefined : rest.slice(colon + 1);
  } else if (name.startsWith(LDAP_MARK)) {
    const rest = name.slice(LDAP_MARK.length);
    const mark = rest.indexOf(LDAP_MARK);
    localpart = mark === -1 ? rest : rest.slice(0, mark);
    server = mark === -1 ? undefined : rest.slice(mark + LDAP_MARK.length);
  } else {
    return undefined;
  }
  if (server === undefined) {
    if (convention.server === undefined) {
      return { kind: "invalid", reason: "the name has no server part and no default server is configured" };
    }
    server = convention.server;
  }
  const alias = `#${localpart}:${server}`;
  if (parseRoomAlias(alias) === undefined) {
    return { kind: "invalid", reason: `${JSON.stringify(alias)} is not a valid room alias` };
  }
  return alias;
}

export function mapGroupsToRooms(
  snapshot: DirectorySnapshot,
  explicit: ExplicitRoomMapping,
  convention: ConventionMapping,
): RoomMapping {
  const notes: string[] = [];
  const rooms = new Map<string, { sources: Map<string, BindingSource>; missing: Set<string> }>();
  const roomEntry = (room: string) => {
    let entry = rooms.get(room);
    if (entry === undefined) {
      entry = { sources: new Map(), missing: new Set() };
      rooms.set(room, entry);
    }
    return entry;
  };
  const addSource = (room: string, source: BindingSource): void => {
    roomEntry(room).sources.set(`${source.groupId}\u0000${source.role}\u0000${source.owners}`, source);
  };

  // Explicit mapping.
  const byName = new Map<string, DirectoryGroup[]>();
  for (const group of snapshot.groups.values()) {
    const list = byName.get(group.name);
    if (list === undefined) byName.set(group.name, [group]);
    else list.push(group);
  }
  for (const mapping of explicit) {
    if (parseRoomAlias(mapping.room) === undefined && parseRoomId(mapping.room) === undefined) {
      notes.push(`room ${JSON.stringify(mapping.room)} is neither a room alias nor a room id; ignored`);
      continue;
    }
    if (mapping.groups.length === 0) {
      notes.push(`room ${mapping.room} is mapped to no group; ignored`);
      continue;
    }
    const entry = roomEntry(mapping.room);
    for (const { group: ref, role } of mapping.groups) {
      const byId = snapshot.groups.get(ref);
      const named = byName.get(ref) ?? [];
      if (byId !== undefined) {
        addSource(mapping.room, { groupId: byId.id, role, owners: false });
      } else if (named.length === 1 && named[0] !== undefined) {
        addSource(mapping.room, { groupId: named[0].id, role, owners: false });
      } else if (named.length > 1) {
        entry.missing.add(ref);
        notes.push(`room ${mapping.room}: ${named.length} groups are named ${ref}; use the group's id (counted as incomplete)`);
      } else {
        entry.missing.add(ref);
        notes.push(`room ${mapping.room}: group ${ref} is not in the directory (counted as incomplete)`);
      }
    }
  }

  // Naming convention: rooms first, owners siblings after, so that a sibling can tell
  // whether its room is bound.
  const siblings: { group: DirectoryGroup; room: string }[] = [];
  for (const group of snapshot.groups.values()) {
    const match = matchConventionName(group.name, convention);
    if (match.kind === "none") continue;
    if (match.kind === "invalid") {
      notes.push(`group ${group.name}: looks like a room group, but ${match.reason}; ignored`);
      continue;
    }
    if (match.owners) {
      siblings.push({ group, room: match.room });
      continue;
    }
    addSource(match.room, { groupId: group.id, role: convention.memberRole, owners: false });
    if (group.owners !== undefined && group.owners.length > 0) {
      addSource(match.room, { groupId: group.id, role: convention.ownersRole, owners: true });
    }
  }
  for (const { group, room } of siblings) {
    if (!rooms.has(room)) {
      notes.push(`group ${group.name}: owners group of ${room}, but no group or mapping binds that room; ignored`);
      continue;
    }
    addSource(room, { groupId: group.id, role: convention.ownersRole, owners: false });
  }

  const bindings = [...rooms.entries()]
    .sort(([a], [b]) => compareStrings(a, b))
    .map(([room, { sources, missing }]) => ({
      room,
      sources: [...sources.values()].sort(compareSources),
      missingGroups: [...missing].sort(compareStrings),
    }));
  return { bindings, notes };
}

function compareSources(a: BindingSource, b: BindingSource): number {
  return compareStrings(a.groupId, b.groupId) || compareStrings(a.role, b.role) || Number(a.owners) - Number(b.owners);
}
