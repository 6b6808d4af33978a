/**
 * What a managed room should look like besides its members: the room template (power-level
 * fields other than `users`, history visibility, join rule, guest access, name, topic, and
 * what a room gets when it is created), and the spaces that group managed rooms. Pure data:
 * the config builds it (config/room-templates.ts), the planner compares it with the room.
 *
 * A field that is absent is not managed: the room keeps whatever it has.
 */

export const HISTORY_VISIBILITIES = ["invited", "joined", "shared", "world_readable"] as const;
export type HistoryVisibility = (typeof HISTORY_VISIBILITIES)[number];

export const GUEST_ACCESS = ["can_join", "forbidden"] as const;
export type GuestAccess = (typeof GUEST_ACCESS)[number];

/** `m.room.join_rules`. `restricted`: members of the listed spaces may join (room v8+; knock_restricted v10+). */
export type JoinRuleSetting =
  | { readonly rule: "invite" | "knock" | "public" }
  | {
      readonly rule: "restricted" | "knock_restricted";
      /** Spaces whose members may join: aliases or room ids, resolved by the run. */
      readonly spaces: readonly string[];
    };

/** The power-level fields a template may set (the Matrix names, as in the seed's `permissions`). */
export const POWER_LEVEL_FIELDS = ["users_default", "events_default", "state_default", "invite", "kick", "ban", "redact"] as const;
export type PowerLevelField = (typeof POWER_LEVEL_FIELDS)[number];

export type PowerLevelTemplate = {
  readonly [K in PowerLevelField]?: number;
} & {
  readonly notifications?: { readonly room?: number };
  /** Per event type; only the listed types are managed, others in the room are kept. */
  readonly events?: Readonly<Record<string, number>>;
};

export interface RoomTemplate {
  readonly powerLevels: PowerLevelTemplate;
  readonly historyVisibility?: HistoryVisibility;
  readonly joinRule?: JoinRuleSetting;
  readonly guestAccess?: GuestAccess;
  /** Managed when set; a room created without one is named after its alias' localpart. */
  readonly name?: string;
  /** Managed when set. */
  readonly topic?: string;
  /** At creation only: encryption is never switched off, and never switched on in an existing room. */
  readonly encryption: boolean;
  /** At creation only; absent: the homeserver's default. */
  readonly roomVersion?: string;
}

/** A space as configured: a managed room of type `m.space` whose children are managed rooms. */
export interface SpaceSetting {
  /** The space: an alias (created when missing and on our server) or a room id. */
  readonly space: string;
  /** Children listed by reference (rooms or other spaces). */
  readonly rooms: readonly string[];
  /**
   * Directory groups (id or name): every room mapped from a group nested (at any depth) under
   * one of these is a child too.
   */
  readonly underGroups: readonly string[];
  /** Also put `m.space.parent` into each child (pointing at this space). */
  readonly parentLinks: boolean;
  /** Set each child's join rule to `restricted`, allowing the members of this space. */
  readonly restrictChildren: boolean;
  /** The role (from `roles`) the space's members get; their level in the space. */
  readonly role: string;
}
