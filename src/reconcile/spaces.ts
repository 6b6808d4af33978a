/**
 * Spaces as desired rooms. Pure.
 *
 * - A space's children are the rooms it lists and every room mapped from a directory group
 *   nested (at any depth) under one of its `underGroups` (the seed's Azure "Chat" root group).
 * - Its members are the union of its children's desired members (a child space's members
 *   included), each at the level of the space's role. When any child's directory data is
 *   incomplete, so is the space's: no removals from it in that run.
 * - A group named in `underGroups` that the directory does not hold makes the space
 *   incomplete too (its children are not fully known, so no child link is removed).
 */
import type { RoomGroupBinding } from "../idp/room-mapping.ts";
import type { DirectorySnapshot } from "../idp/types.ts";
import type { RoomId } from "../matrix/ids.ts";
import type { RoomTemplate, SpaceSetting } from "./template.ts";
import type { DesiredLink, DesiredMember, DesiredRoom } from "./types.ts";

/** A configured space with its children found: the directory's part of it. */
export interface SpaceDraft {
  readonly setting: SpaceSetting;
  /** Child references (aliases or ids), sorted, each once. */
  readonly children: readonly string[];
  readonly incompleteGroups: readonly string[];
  readonly notes: readonly string[];
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The children of each space. `canon` gives a group reference in the provider's canonical
 * form (a normalized DN), as the mapping uses it.
 */
export function draftSpaces(
  spaces: readonly SpaceSetting[],
  snapshot: DirectorySnapshot,
  bindings: readonly RoomGroupBinding[],
  canon: (ref: string) => string = (r) => r,
): SpaceDraft[] {
  if (spaces.length === 0) return [];
  const byName = new Map<string, string[]>();
  for (const g of snapshot.groups.values()) {
    const list = byName.get(g.name);
    if (list) list.push(g.id);
    else byName.set(g.name, [g.id]);
  }
  const roomsOfGroup = new Map<string, string[]>();
  for (const b of bindings) {
    for (const s of b.sources) {
      const list = roomsOfGroup.get(s.groupId);
      if (list) list.push(b.room);
      else roomsOfGroup.set(s.groupId, [b.room]);
    }
  }
  return spaces.map((setting) => {
    const children = new Set<string>(setting.rooms);
    const incomplete: string[] = [];
    const notes: string[] = [];
    for (const ref of setting.underGroups) {
      const id = canon(ref);
      const ids = snapshot.groups.has(id) ? [id] : (byName.get(ref) ?? []);
      if (ids.length !== 1) {
        incomplete.push(ref);
        notes.push(
          ids.length === 0
            ? `space ${setting.space}: group ${ref} (children.underGroups) is not in the directory: its rooms are not known, no child link is removed`
            : `space ${setting.space}: group name ${ref} (children.underGroups) is shared by ${ids.length} groups; give its id`,
        );
        continue;
      }
      // Every group nested under it, at any depth, each visited once (cycles end).
      const seen = new Set<string>();
      const queue = [ids[0] as string];
      while (queue.length > 0) {
        const g = queue.pop() as string;
        if (seen.has(g)) continue;
        seen.add(g);
        const group = snapshot.groups.get(g);
        if (group === undefined) continue;
        if (!group.complete) incomplete.push(group.name);
        for (const m of group.members) if (m.kind === "group") queue.push(m.id);
      }
      for (const g of seen) for (const room of roomsOfGroup.get(g) ?? []) children.add(room);
    }
    children.delete(setting.space);
    return { setting, children: [...children].sort(compare), incompleteGroups: [...new Set(incomplete)].sort(compare), notes };
  });
}

/**
 * The desired room of each space: members from its children (`rooms`: the desired rooms by
 * reference, spaces not among them). Spaces nested in spaces are built children first (the
 * config refuses cycles; a cycle left anyway is cut, with a note).
 */
export function desiredSpaces(drafts: readonly SpaceDraft[], rooms: ReadonlyMap<string, DesiredRoom>, roles: Readonly<Record<string, number>>): DesiredRoom[] {
  const draftOf = new Map(drafts.map((d) => [d.setting.space, d]));
  const built = new Map<string, DesiredRoom>();
  const building = new Set<string>();
  const build = (draft: SpaceDraft): DesiredRoom => {
    const done = built.get(draft.setting.space);
    if (done) return done;
    building.add(draft.setting.space);
    const level = roles[draft.setting.role] ?? 0;
    const members = new Map<string, DesiredMember>();
    const incomplete = new Set(draft.incompleteGroups);
    const notes = [...draft.notes];
    for (const child of draft.children) {
      const sub = draftOf.get(child);
      let room: DesiredRoom | undefined;
      if (sub !== undefined) {
        if (building.has(child)) {
          notes.push(`space ${draft.setting.space}: ${child} is also its ancestor (a cycle): its members are not counted`);
          continue;
        }
        room = build(sub);
      } else {
        room = rooms.get(child);
      }
      if (room === undefined) {
        notes.push(`${child}: a child of this space that no group is mapped to: linked, but its members are not members of the space`);
        continue;
      }
      for (const g of room.incompleteGroups) incomplete.add(g);
      for (const m of room.members) {
        const before = members.get(m.user);
        const via = `${child}`;
        if (before === undefined) members.set(m.user, { user: m.user, level, role: draft.setting.role, via: [via] });
        else if (!before.via.includes(via)) members.set(m.user, { ...before, via: [...before.via, via].sort(compare) });
      }
    }
    const room: DesiredRoom = {
      room: draft.setting.space,
      members: [...members.values()].sort((a, b) => compare(a.user, b.user)),
      incompleteGroups: [...incomplete].sort(compare),
      notes,
      space: { children: draft.children.map((ref) => ({ ref })) },
    };
    building.delete(draft.setting.space);
    built.set(draft.setting.space, room);
    return room;
  };
  return drafts.map(build);
}

/** What shaping a room's desired state reads; everything resolved by the run before. */
export interface ShapeContext {
  readonly drafts: readonly SpaceDraft[];
  /** The spaces' desired rooms (desiredSpaces), by space reference. */
  readonly spaceRooms: ReadonlyMap<string, DesiredRoom>;
  /** Room ids known so far: resolved, or created in this run. */
  readonly idOf: ReadonlyMap<string, RoomId>;
  /** References this run creates (a dry run has no id for them). */
  readonly creating: ReadonlySet<string>;
  /** The ids of spaces whose children are not fully known in this run. */
  readonly keepParents: readonly RoomId[];
}

/**
 * The spaces whose children are not fully known in this run (their data is incomplete): a
 * parent link to them is never removed now.
 */
export function incompleteSpaces(drafts: readonly SpaceDraft[], spaceRooms: ReadonlyMap<string, DesiredRoom>, idOf: ReadonlyMap<string, RoomId>): RoomId[] {
  return drafts.flatMap((d) => {
    const id = idOf.get(d.setting.space);
    return id !== undefined && (spaceRooms.get(d.setting.space)?.incompleteGroups.length ?? 0) > 0 ? [id] : [];
  });
}

const asRoomId = (ref: string): RoomId | undefined => (ref.startsWith("!") ? (ref as RoomId) : undefined);

/**
 * One room's whole desired state, for the room known by `refs` (`roomId` null before it is
 * created): a space gets its members and children (`spaceRooms`), every room the spaces that
 * list it as parents (when `parentLinks`), and its template — with the join rule restricted
 * to the spaces that ask for it (`restrictChildren`), and a restricted rule's spaces as room
 * ids (one that neither resolves nor is created in this run is left out, with a note).
 */
export function shapeDesired(ctx: ShapeContext, refs: readonly string[], roomId: RoomId | null, base: DesiredRoom, template: RoomTemplate | undefined): DesiredRoom {
  const idOf = (ref: string): RoomId | undefined => asRoomId(ref) ?? ctx.idOf.get(ref);
  const spaceRef = refs.find((r) => ctx.spaceRooms.has(r));
  const space = spaceRef === undefined ? undefined : ctx.spaceRooms.get(spaceRef);
  let room: DesiredRoom = base;
  if (space !== undefined) {
    const children = (space.space?.children ?? []).map((link): DesiredLink => {
      const id = idOf(link.ref);
      return id !== undefined ? { ref: link.ref, roomId: id } : { ref: link.ref };
    });
    room = { ...space, room: base.room, space: { children } };
  }
  const parents = ctx.drafts.filter((d) => d.children.some((c) => refs.includes(c) || (roomId !== null && ctx.idOf.get(c) === roomId)));
  const notes: string[] = [];
  let wanted = template;
  const restrict = parents.filter((p) => p.setting.restrictChildren).map((p) => idOf(p.setting.space) ?? p.setting.space);
  if (restrict.length > 0) wanted = { ...(wanted ?? { powerLevels: {}, encryption: false }), joinRule: { rule: "restricted", spaces: restrict } };
  if (wanted?.joinRule !== undefined && "spaces" in wanted.joinRule) {
    const rule = wanted.joinRule;
    const spaces = rule.spaces.flatMap((s) => {
      const id = idOf(s);
      if (id !== undefined) return [id];
      if (ctx.creating.has(s)) return [s]; // created in this run (a dry run shows it pending)
      notes.push(`join rule: space ${s} does not resolve: left out of the ${rule.rule} rule`);
      return [];
    });
    const { joinRule: _dropped, ...rest } = wanted;
    wanted = spaces.length > 0 ? { ...wanted, joinRule: { ...rule, spaces } } : rest;
  }
  const withParents = parents
    .filter((p) => p.setting.parentLinks)
    .map((p): DesiredLink => {
      const id = idOf(p.setting.space);
      return id !== undefined ? { ref: p.setting.space, roomId: id } : { ref: p.setting.space };
    });
  return {
    ...room,
    ...(notes.length > 0 ? { notes: [...room.notes, ...notes] } : {}),
    ...(ctx.keepParents.length > 0 ? { keepParents: ctx.keepParents } : {}),
    ...(wanted !== undefined ? { template: wanted } : {}),
    ...(withParents.length > 0 ? { parents: withParents } : {}),
  };
}
