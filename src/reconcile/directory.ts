/**
 * From the directory to desired rooms: one snapshot, the group → room mapping, recursive
 * resolution and user mapping. Shared by sync runs and by the `idp` listing (CLI and the
 * management room's `!idp`), so both always show the same thing.
 */
import { mapGroupsToRooms, matchConventionName, type ConventionMapping, type ExplicitRoomMapping } from "../idp/room-mapping.ts";
import type { IdentityProvider, SnapshotHint } from "../idp/types.ts";
import { createUserMapper } from "../idp/user-mapping.ts";
import { fail, ok, type Result } from "../result.ts";
import { buildDesired } from "./desired.ts";
import { draftSpaces, type SpaceDraft } from "./spaces.ts";
import type { SpaceSetting } from "./template.ts";
import type { DesiredRoom } from "./types.ts";

export interface DirectorySettings {
  readonly roles: Readonly<Record<string, number>>;
  readonly users: {
    readonly attribute: string;
    readonly template: string;
    readonly domain?: string;
    readonly lowercase: boolean;
    /** Full ids: the id the template builds → the real account's id. */
    readonly renamedUsers: Readonly<Record<string, string>>;
    /** The same by localpart, both on the users' domain (`users.renamedLocalparts`). Absent: none. */
    readonly renamedLocalparts?: Readonly<Record<string, string>>;
  };
  readonly mapping: { readonly rooms: ExplicitRoomMapping; readonly convention: ConventionMapping };
  readonly sync: { readonly maxDepth: number };
  /** Configured spaces; their `underGroups` are read from the directory too. */
  readonly spaces?: readonly SpaceSetting[];
}

export interface DirectoryState {
  readonly desired: DesiredRoom[];
  /** The configured spaces with their children (members are added by the run, from the children's). */
  readonly spaces: SpaceDraft[];
  /** Findings about the directory as a whole (unknown members, referrals, mapping problems). */
  readonly notes: string[];
}

/** `serverName`: what `{domain}` and a convention name without a server stand for. */
export async function readDirectory(
  idp: IdentityProvider,
  settings: DirectorySettings,
  serverName: string,
): Promise<Result<DirectoryState>> {
  const explicit = canonicalMapping(idp, settings.mapping.rooms);
  const convention = { ...settings.mapping.convention, server: settings.mapping.convention.server ?? serverName };
  const spaces = settings.spaces ?? [];
  const canon = idp.canonicalGroupRef?.bind(idp);
  const snapshot = await idp.snapshot(mappingHint(explicit, convention, spaces.flatMap((s) => s.underGroups.map((g) => canon?.(g) ?? g))));
  if (!snapshot.ok) return fail(`directory (${idp.kind}): ${snapshot.error.message}`, { cause: snapshot.error });
  const { bindings, notes } = mapGroupsToRooms(snapshot.value, explicit, convention);
  const domain = settings.users.domain ?? serverName;
  const mapUser = createUserMapper({ ...settings.users, domain, renamedUsers: renamedIds(settings.users, domain) });
  const desired = buildDesired(snapshot.value, bindings, { roles: settings.roles, mapUser, maxDepth: settings.sync.maxDepth });
  const drafts = draftSpaces(spaces, snapshot.value, bindings, canon);
  return ok({ desired, spaces: drafts, notes: [...snapshot.value.notes, ...notes] });
}

/**
 * Every rename as full ids: `renamedLocalparts` qualified with `domain` (lower-cased as the
 * mapper builds ids), then `renamedUsers` (the config refuses one user in both; were one in
 * both, the full id would win). `a: b` is then exactly `"@a:<domain>": "@b:<domain>"`.
 */
export function renamedIds(users: DirectorySettings["users"], domain: string): Record<string, string> {
  const server = users.lowercase ? domain.toLowerCase() : domain;
  const out: Record<string, string> = {};
  for (const [from, to] of Object.entries(users.renamedLocalparts ?? {})) out[`@${from}:${server}`] = `@${to}:${server}`;
  for (const [from, to] of Object.entries(users.renamedUsers)) out[from] = to;
  return out;
}

/** Group references from the config in the provider's canonical form (e.g. normalized DNs). */
function canonicalMapping(idp: IdentityProvider, rooms: ExplicitRoomMapping): ExplicitRoomMapping {
  const canon = idp.canonicalGroupRef?.bind(idp);
  if (canon === undefined) return rooms;
  return rooms.map((r) => ({ ...r, groups: r.groups.map((g) => ({ ...g, group: canon(g.group) })) }));
}

function mappingHint(explicit: ExplicitRoomMapping, convention: ConventionMapping, spaceGroups: readonly string[]): SnapshotHint {
  const refs = new Set([...explicit.flatMap((r) => r.groups.map((g) => g.group)), ...spaceGroups]);
  return {
    isMapped: (g) => refs.has(g.id) || refs.has(g.name) || matchConventionName(g.name, convention).kind !== "none",
    explicitGroups: [...refs],
    ...(convention.enabled && convention.prefix !== "" ? { conventionPrefix: convention.prefix } : {}),
  };
}

/** The `idp` listing: per room, who the directory puts there, with role, level and group path. */
export interface DirectoryListing {
  rooms: {
    room: string;
    members: { user: string; role: string; level: number; via: string[] }[];
    incompleteGroups: string[];
    notes: string[];
  }[];
  notes: string[];
}

export function listDirectory(state: DirectoryState, rooms?: readonly string[]): DirectoryListing {
  const wanted = rooms && rooms.length > 0 ? new Set(rooms) : undefined;
  return {
    rooms: state.desired
      .filter((d) => wanted === undefined || wanted.has(d.room))
      .map((d) => ({
        room: d.room,
        members: d.members.map((m) => ({ user: m.user, role: m.role, level: m.level, via: [...m.via] })),
        incompleteGroups: [...d.incompleteGroups],
        notes: [...d.notes],
      })),
    notes: [...state.notes],
  };
}

export function directoryText(listing: DirectoryListing): string {
  const lines: string[] = [];
  for (const n of listing.notes) lines.push(`note: ${n}`);
  for (const room of listing.rooms) {
    if (lines.length > 0) lines.push("");
    lines.push(`${room.room}: ${room.members.length} member(s)${room.incompleteGroups.length > 0 ? `, INCOMPLETE (${room.incompleteGroups.join(", ")})` : ""}`);
    const w = Math.max(0, ...room.members.map((m) => m.user.length));
    const r = Math.max(0, ...room.members.map((m) => `${m.role} (${m.level})`.length));
    for (const m of room.members) {
      lines.push(`  ${m.user.padEnd(w)}  ${`${m.role} (${m.level})`.padEnd(r)}  via ${m.via.join("; ")}`);
    }
    for (const n of room.notes) lines.push(`  note: ${n}`);
  }
  if (listing.rooms.length === 0) lines.push("No room is mapped to a directory group.");
  return lines.join("\n");
}
