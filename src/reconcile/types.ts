import type { RoomId, UserId } from "../matrix/ids.ts";

/** Membership states from `m.room.member` content. Absent from the room = no entry. */
export type Membership = "join" | "invite" | "leave" | "ban" | "knock";

/** A user the directory wants in a room, with the highest role any of their groups gives. */
export interface DesiredMember {
  readonly user: UserId;
  readonly level: number;
  readonly role: string;
  /** Where the membership came from: group paths such as "eng > eng-leads". */
  readonly via: readonly string[];
}

/** What the directory says one room should look like. */
export interface DesiredRoom {
  /** The room as configured: "#alias:server" or "!id". */
  readonly room: string;
  readonly members: readonly DesiredMember[];
  /** Groups mapped to this room that could not be read completely: no removals then. */
  readonly incompleteGroups: readonly string[];
  /** Non-fatal findings while building it (invalid ids, disabled accounts...). */
  readonly notes: readonly string[];
}

/**
 * The content of `m.room.power_levels` as we write it, kept whole so that a change preserves
 * every field.
 */
export interface PowerLevelsContent {
  readonly users?: Readonly<Record<string, number>>;
  readonly users_default?: number;
  readonly events?: Readonly<Record<string, number>>;
  readonly events_default?: number;
  readonly state_default?: number;
  readonly kick?: number;
  readonly ban?: number;
  readonly invite?: number;
  readonly redact?: number;
  readonly [other: string]: unknown;
}

/** `m.room.power_levels` content as the homeserver gave it: untrusted until levels.ts reads it. */
export type RawPowerLevels = Readonly<Record<string, unknown>>;

/** What the homeserver says one room looks like now (read in one `/state` request). */
export interface ObservedRoom {
  readonly roomId: RoomId;
  readonly roomVersion: string;
  /** Room v12+: the create event's sender and `additional_creators`; they have infinite power. Empty before v12. */
  readonly creators: readonly UserId[];
  readonly members: Readonly<Record<string, Membership>>;
  /** Absent when the room has no power levels event (then the creator has 100, everyone else 0). */
  readonly powerLevels?: RawPowerLevels;
  /** Sender of `m.room.create` (for rooms without a power levels event). */
  readonly createSender?: UserId;
  /**
   * What made the state unreadable (no create event, two power levels events...): such a room
   * cannot be judged, and the planner changes nothing in it.
   */
  readonly problems?: readonly string[];
}

/** Room-specific inputs that come from our own store, not from the directory or homeserver. */
export interface RoomMemory {
  /** Users added by hand (`!invite-member`): never kicked or demoted by a sync. */
  readonly externals: readonly UserId[];
  /** Removals held by the guard in an earlier run and not yet released: stay held. */
  readonly held: readonly UserId[];
  /** Removals an operator released: applied even past the guard. */
  readonly released: readonly UserId[];
}

export interface Policy {
  /** The bot's own user id: never touched. */
  readonly bot: UserId;
  /** Only users of these servers are managed; anyone else is left alone. */
  readonly managedDomains: readonly string[];
  /** When false the run invites and raises but never kicks (cautious mode). */
  readonly kick: boolean;
  readonly kickReason: string;
  /** Regular expression sources (anchored by the planner) for users never touched. */
  readonly ignoreUsers: readonly string[];
  /** Guard rail: removals beyond either limit in one room are held. Absent = no limit. */
  readonly maxRemovals: { readonly count?: number; readonly share?: number };
}

export interface PowerLevelChange {
  readonly user: UserId;
  /** Effective level now (the `users` entry, or `users_default`). */
  readonly from: number;
  /** Effective level afterwards. */
  readonly to: number;
  /** True when the entry is removed from `users` rather than set. */
  readonly removeEntry: boolean;
}

/** The closed vocabulary of changes. An executor switches on `kind` exhaustively. */
export type Action =
  | { readonly kind: "kick"; readonly user: UserId; readonly reason: string }
  | { readonly kind: "invite"; readonly user: UserId }
  | {
      readonly kind: "set-power-levels";
      readonly changes: readonly PowerLevelChange[];
      /** The whole new `m.room.power_levels` content: the current one with only `users` changed. */
      readonly content: PowerLevelsContent;
    };

export interface HeldRemoval {
  readonly kind: "kick";
  readonly user: UserId;
  readonly reason: string;
}

export interface RoomPlan {
  readonly room: string;
  readonly roomId: RoomId;
  /** In the order they are applied: kicks, then the one power-levels event, then invites. */
  readonly actions: readonly Action[];
  readonly held: readonly HeldRemoval[];
  readonly notes: readonly string[];
  /**
   * Set when the room cannot be judged (its power levels or state are invalid): then there
   * are no actions and no held removals, and earlier held removals stay as they are.
   */
  readonly error?: string;
}
