/**
 * What the planner found besides actions: typed values, one kind per rule that can leave
 * something as it is. Each surface turns them into words through words.ts; the planner never
 * writes English.
 */
import type { UserId } from "../matrix/ids.ts";
import type { RunKind } from "./kick-rule.ts";
import type { LevelKind } from "./levels.ts";

export type Finding =
  /** A note the directory side made while building the desired room (already words). */
  | { readonly kind: "directory"; readonly text: string }
  | { readonly kind: "not-joined"; readonly bot: UserId }
  | { readonly kind: "bot-level-too-low"; readonly bot: UserId; readonly botLevel: number; readonly lacking: readonly { readonly what: LevelKind; readonly need: number }[] }
  | { readonly kind: "incomplete"; readonly groups: readonly string[] }
  | { readonly kind: "foreign-user"; readonly user: UserId }
  | { readonly kind: "banned"; readonly user: UserId }
  | { readonly kind: "clamped"; readonly user: UserId; readonly role: string; readonly wanted: number; readonly botLevel: number }
  | { readonly kind: "protected"; readonly user: UserId; readonly level: number; readonly botLevel: number; readonly wanted?: number }
  | { readonly kind: "external-not-lowered"; readonly user: UserId; readonly from: number; readonly to: number }
  | { readonly kind: "not-lowered-incomplete"; readonly user: UserId; readonly from: number; readonly to: number }
  | { readonly kind: "creator-left-alone"; readonly user: UserId }
  /** Not kicked because kicks are off; `onlyBy`: because only that kind of run kicks (sync.kickOn). */
  | { readonly kind: "kicking-off"; readonly user: UserId; readonly onlyBy?: RunKind }
  | { readonly kind: "entry-kept"; readonly user: UserId; readonly level: number; readonly usersDefault: number; readonly botLevel: number }
  | { readonly kind: "not-removed-incomplete"; readonly users: readonly UserId[] }
  | { readonly kind: "guard-held"; readonly count: number; readonly managed: number; readonly limit: { readonly count?: number; readonly share?: number } }
  | { readonly kind: "cannot"; readonly what: LevelKind; readonly count: number; readonly botLevel: number; readonly need: number }
  | { readonly kind: "creator-entry-dropped"; readonly user: UserId }
  /** A template field the auth rules do not let us change (its current or wanted value is above ours). */
  | { readonly kind: "field-above-bot"; readonly field: string; readonly from?: number; readonly to: number; readonly botLevel: number }
  /** A users_default change that would lower members this sync does not manage. */
  | { readonly kind: "users-default-kept"; readonly from: number; readonly to: number; readonly users: readonly UserId[] }
  | { readonly kind: "cannot-set-state"; readonly type: string; readonly botLevel: number; readonly need: number }
  | { readonly kind: "join-rule-unsupported"; readonly rule: string; readonly roomVersion: string; readonly since: number }
  | { readonly kind: "join-rule-space-unknown"; readonly space: string }
  | { readonly kind: "not-encrypted" }
  | { readonly kind: "child-pending"; readonly child: string }
  /** A child without a room id that this service cannot create (an alias of another server that did not resolve). */
  | { readonly kind: "child-unreachable"; readonly child: string; readonly server: string }
  | { readonly kind: "link-not-ours"; readonly type: "m.space.child" | "m.space.parent"; readonly room: string };

export type FindingKind = Finding["kind"];
