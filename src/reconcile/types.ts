import type { RoomId, UserId } from "../matrix/ids.ts";
import type { Finding } from "./findings.ts";
import type { RunKind } from "./kick-rule.ts";
import type { RoomTemplate } from "./template.ts";

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
  /** What the room should look like besides its members; absent: nothing but members is managed. */
  readonly template?: RoomTemplate;
  /** Set when the room is a space: the managed rooms that should be its children. */
  readonly space?: { readonly children: readonly DesiredLink[] };
  /** Spaces that should be named in this room's `m.space.parent` events. */
  readonly parents?: readonly DesiredLink[];
  /**
   * Spaces whose children are not fully known in this run (their directory data is
   * incomplete): a parent link to them is never removed now.
   */
  readonly keepParents?: readonly RoomId[];
}

/** A space link the directory wants: to a room known by reference, with its id once it has one. */
export interface DesiredLink {
  readonly ref: string;
  /** Absent while the room does not exist yet (a dry run before its creation). */
  readonly roomId?: RoomId;
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
   * The other state the template and spaces are compared with, by type and state key (only
   * the types in OBSERVED_STATE_TYPES; absent: none of them known, as in a room with none).
   */
  readonly state?: ObservedState;
  /** `m.room.create`'s `type` (e.g. "m.space"); absent for an ordinary room. */
  readonly roomType?: string;
  /**
   * What made the state unreadable (no create event, two power levels events...): such a room
   * cannot be judged, and the planner changes nothing in it.
   */
  readonly problems?: readonly string[];
}

/** State types besides members, power levels and create that the planner reads. */
export const OBSERVED_STATE_TYPES = [
  "m.room.join_rules",
  "m.room.history_visibility",
  "m.room.guest_access",
  "m.room.name",
  "m.room.topic",
  "m.room.encryption",
  "m.space.child",
  "m.space.parent",
] as const;
export type ObservedStateType = (typeof OBSERVED_STATE_TYPES)[number];

/** type → state key → content, as the homeserver gave it (untrusted; the planner decodes it). */
export type ObservedState = Readonly<Partial<Record<ObservedStateType, Readonly<Record<string, Readonly<Record<string, unknown>>>>>>>;

/** Room-specific inputs that come from our own store, not from the directory or homeserver. */
export interface RoomMemory {
  /** Users added by hand (`!invite-member`): never kicked or demoted by a sync. */
  readonly externals: readonly UserId[];
  /** Removals held by the guard in an earlier run and not yet released: stay held. */
  readonly held: readonly UserId[];
  /** Removals an operator released: applied even past the guard. */
  readonly released: readonly UserId[];
  /**
   * Space links this service added to the room (`m.space.child` / `m.space.parent` state
   * keys): only these are ever removed. Absent: none.
   */
  readonly links?: readonly SpaceLinkKey[];
}

export interface SpaceLinkKey {
  readonly type: "m.space.child" | "m.space.parent";
  readonly stateKey: RoomId;
}

export interface Policy {
  /** The bot's own user id: never touched. */
  readonly bot: UserId;
  /** Only users of these servers are managed; anyone else is left alone. */
  readonly managedDomains: readonly string[];
  /** When false the run invites and raises but never kicks (cautious mode). */
  readonly kick: boolean;
  /**
   * Set when `kick` is false only because of the kind of run (`sync.kickOn: manual` or
   * `scheduled`): the kind that does kick. The findings then say so and how to get the kicks.
   */
  readonly kicksOnlyBy?: RunKind;
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

/** A template field of `m.room.power_levels` changed: "users_default", "events.m.room.name", "notifications.room". */
export interface PowerLevelFieldChange {
  readonly field: string;
  /** Absent: the content had no such key (the spec default applied). */
  readonly from?: number;
  readonly to: number;
}

/** What `createRoom` is asked for (the client-server API's request body, as we use it). */
export interface CreateRoomRequest {
  readonly preset: "private_chat" | "public_chat";
  readonly room_alias_name: string;
  readonly name: string;
  readonly topic?: string;
  readonly room_version: string;
  readonly creation_content?: { readonly type: "m.space" };
  readonly power_level_content_override: PowerLevelsContent;
  readonly initial_state: readonly { readonly type: string; readonly state_key: string; readonly content: Readonly<Record<string, unknown>> }[];
  readonly invite: readonly UserId[];
}

/**
 * The closed vocabulary of changes, used by the planner, the executor, the reports and the
 * store alike. A new kind is: a member here, the rule that plans it (plan.ts), its executor
 * case (apply.ts), its words (words.ts); the compiler points at each.
 */
export type Action =
  | {
      readonly kind: "create-room";
      readonly alias: string;
      readonly request: CreateRoomRequest;
      /** The members' levels given in the same request (for the reports). */
      readonly levels: readonly PowerLevelChange[];
    }
  | { readonly kind: "kick"; readonly user: UserId; readonly reason: string }
  | {
      readonly kind: "set-power-levels";
      readonly changes: readonly PowerLevelChange[];
      /** Template fields changed in the same event. */
      readonly fields: readonly PowerLevelFieldChange[];
      /** The whole new `m.room.power_levels` content: the current one with only these changed. */
      readonly content: PowerLevelsContent;
    }
  | {
      readonly kind: "set-state";
      readonly type: string;
      readonly stateKey: string;
      readonly content: Readonly<Record<string, unknown>>;
      /** The current value in words ("shared", "invite", a name), or null when unset. */
      readonly from: string | null;
      readonly to: string;
      /**
       * Set when the event names a room that does not exist yet (a space a dry run would
       * create first): the reference, in place of its id. Such an action is shown, never sent.
       */
      readonly pending?: string;
    }
  | { readonly kind: "add-child"; readonly child: string; readonly childId?: RoomId; readonly via: readonly string[] }
  | { readonly kind: "remove-child"; readonly child: string; readonly childId: RoomId }
  | { readonly kind: "invite"; readonly user: UserId };

export type ActionKind = Action["kind"];
export type ActionOf<K extends ActionKind> = Extract<Action, { kind: K }>;

export interface HeldRemoval {
  readonly kind: "kick";
  readonly user: UserId;
  readonly reason: string;
}

export interface RoomPlan {
  readonly room: string;
  /** Null only for the plan that creates the room. */
  readonly roomId: RoomId | null;
  /**
   * In the order they are applied: creation; kicks; the one power-levels event; other state;
   * space links removed, then added; invites last (invitees join a room already in shape).
   */
  readonly actions: readonly Action[];
  readonly held: readonly HeldRemoval[];
  /**
   * Set when this run judged no removal because of its kind (`sync.kickOn`): the removals held
   * earlier, and those an operator released, stay as they are for the next run that kicks.
   */
  readonly heldKept?: true;
  readonly findings: readonly Finding[];
  /**
   * Set when the room cannot be judged (its power levels or state are invalid): then there
   * are no actions and no held removals, and earlier held removals stay as they are.
   */
  readonly error?: string;
}
