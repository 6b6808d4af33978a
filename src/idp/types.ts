import type { Result } from "../result.ts";

/**
 * What an identity provider yields: groups with their DIRECT members (users and groups),
 * users with their attributes, and a completeness flag per group. Recursive resolution is
 * shared code (resolve.ts), never per provider.
 */
export type MemberRef =
  | { readonly kind: "user"; readonly id: string }
  | { readonly kind: "group"; readonly id: string };

export interface DirectoryGroup {
  /** Stable key within the directory: a DN, a Graph object id, or a name for the static file. */
  readonly id: string;
  /** Human name: LDAP cn, Graph displayName. The naming convention reads this. */
  readonly name: string;
  readonly members: readonly MemberRef[];
  /** Owners (Graph) — a role source of their own; absent where the directory has none. */
  readonly owners?: readonly MemberRef[];
  /** False when the group's members could not all be read (error, time limit, paging cut). */
  readonly complete: boolean;
  readonly incompleteReason?: string;
}

export interface DirectoryUser {
  readonly id: string;
  /** Attributes used to build the Matrix id: e.g. uid, mail, userPrincipalName. */
  readonly attributes: Readonly<Record<string, string>>;
  /** Disabled accounts are kept in the snapshot but never become desired members. */
  readonly enabled: boolean;
}

export interface DirectorySnapshot {
  readonly groups: ReadonlyMap<string, DirectoryGroup>;
  readonly users: ReadonlyMap<string, DirectoryUser>;
  /** Things worth telling the operator that are not fatal (a member that is neither user nor group). */
  readonly notes: readonly string[];
}

/** What the pipeline tells a provider about the mapping, so it can read only what matters. */
export interface SnapshotHint {
  /** Whether a group (by canonical id and name) is bound to a room by the mapping. */
  isMapped(group: { readonly id: string; readonly name: string }): boolean;
  /** The group references of the explicit mapping (ids or names), in canonical form. */
  readonly explicitGroups: readonly string[];
  /** When the naming convention is on: the name prefix of Azure-style room groups ("MTRX "). */
  readonly conventionPrefix?: string;
}

/** One request a provider made to its directory server (a bind, a page, a Graph GET): for metrics. */
export interface DirectoryRequest {
  readonly provider: "ldap" | "azure";
  /** ldap: bind, search (one page), range; azure: discovery, members, owners. */
  readonly operation: string;
  /** ok, throttled (429/503, retried), limit (a size/time limit cut the result), error. */
  readonly outcome: "ok" | "throttled" | "limit" | "error";
  readonly seconds: number;
}

export type DirectoryRequestObserver = (request: DirectoryRequest) => void;

export interface IdentityProvider {
  readonly kind: string;
  /** Reads the directory. A failure here means nothing is known: no room gets removals. */
  snapshot(hint?: SnapshotHint): Promise<Result<DirectorySnapshot>>;
  /** The form of a group reference from the config that matches group ids (e.g. a normalized DN). */
  canonicalGroupRef?(ref: string): string;
  /**
   * A cheap "did anything change?": an opaque value that changes whenever the directory does
   * (the static file's hash, LDAP's contextCSN / highestCommittedUSN / lastusn), read without
   * reading the directory; undefined when this directory offers none. An error: it could not
   * be read (the caller then reads the directory in full).
   */
  changeMarker?(): Promise<Result<string | undefined>>;
  /** Users whose attribute equals the value, looked up in the directory (values escaped). */
  findUsers?(attribute: string, value: string): Promise<Result<DirectoryUser[]>>;
  close(): Promise<void>;
}
