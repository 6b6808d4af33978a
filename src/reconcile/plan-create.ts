/**
 * Planning a room that does not exist yet: one `createRoom` request carrying everything the
 * room should start with — alias, name, topic, the template as the initial power levels and
 * state, encryption if asked, the space type, parent links — and the desired members invited
 * with their levels in the same request, so a new room with its members costs one request.
 * Pure: no I/O.
 *
 * Rules:
 * - Only an alias on the bot's own server can be created (`room_alias_name` is a localpart
 *   of the homeserver's own domain); any other reference is reported, never created.
 * - The bot is the creator: level 100 (room versions before 12, where it must be listed in
 *   `users`), unlimited from version 12 (where it must not be).
 * - Synapse refuses a createRoom with more invitees than its per-room invite burst (10 by
 *   default): up to `maxInvites` are invited in the request, the rest right after it.
 * - Members follow the membership rules of a sync: only managed users are invited; a level is
 *   never above the bot's (clamped, with a finding); template fields above the bot's level
 *   are left out, with a finding.
 * - Synapse replaces the preset's whole `events` map with a given one: the preset's entries
 *   are kept under the template's.
 */
import { parseRoomAlias, serverNameOf, userIdPattern, type RoomId, type UserId } from "../matrix/ids.ts";
import type { Finding } from "./findings.ts";
import { hasCreatorPower, JOIN_RULE_SINCE, roomVersionNumber } from "./levels.ts";
import { POWER_LEVEL_FIELDS, type RoomTemplate } from "./template.ts";
import type { Action, CreateRoomRequest, DesiredRoom, Policy, PowerLevelChange, RoomPlan } from "./types.ts";

/** Synapse's default `rc_invites.per_room.burst_count`: createRoom refuses more invitees. */
export const DEFAULT_CREATE_ROOM_INVITES = 10;

/** The room version asked for when the template names none (explicit, so the rules are known). */
export const DEFAULT_ROOM_VERSION = "11";

/** Synapse's default `events` of a new room's power levels (`_send_events_for_new_room`). */
export const PRESET_EVENT_LEVELS: Readonly<Record<string, number>> = {
  "m.room.name": 50,
  "m.room.power_levels": 100,
  "m.room.history_visibility": 100,
  "m.room.canonical_alias": 50,
  "m.room.avatar": 50,
  "m.room.tombstone": 100,
  "m.room.server_acl": 100,
  "m.room.encryption": 100,
};

const CREATOR_LEVEL = 100;

export interface CreationInput {
  readonly desired: DesiredRoom;
  readonly template: RoomTemplate;
  readonly policy: Policy;
  /** Spaces this room should name in `m.space.parent` (their ids). */
  readonly parents?: readonly RoomId[];
  /**
   * Most members invited in the createRoom request; the others get an invite action right
   * after (their levels are in the request all the same). Default DEFAULT_CREATE_ROOM_INVITES.
   */
  readonly maxInvites?: number;
}

export type CreationCheck = { readonly ok: true; readonly localpart: string } | { readonly ok: false; readonly reason: string };

/** Whether `ref` may be created by the bot `bot`: an alias on its own server. */
export function creatable(ref: string, bot: UserId): CreationCheck {
  const alias = parseRoomAlias(ref);
  if (alias === undefined) return { ok: false, reason: `${ref} is a room id, not an alias: a room id cannot be created; check the mapping` };
  const colon = alias.indexOf(":");
  const server = alias.slice(colon + 1);
  const ours = serverNameOf(bot);
  if (server.toLowerCase() !== ours.toLowerCase()) {
    return { ok: false, reason: `no such room alias; it is on ${server}, not on our server ${ours}, so it is not created here (create it on ${server}, or map a room of ${ours})` };
  }
  return { ok: true, localpart: alias.slice(1, colon) };
}

/** The plan of a room to create: one `create-room` action, or an error when it cannot be. */
export function planCreation(input: CreationInput): RoomPlan {
  const { desired, template, policy } = input;
  const findings: Finding[] = desired.notes.map((text) => ({ kind: "directory", text }));
  const check = creatable(desired.room, policy.bot);
  if (!check.ok) return { room: desired.room, roomId: null, actions: [], held: [], findings, error: check.reason };

  const version = template.roomVersion ?? DEFAULT_ROOM_VERSION;
  const maxInvites = input.maxInvites ?? DEFAULT_CREATE_ROOM_INVITES;
  const creatorPower = hasCreatorPower(version);
  const botLevel = creatorPower ? Infinity : CREATOR_LEVEL;
  const domains = new Set(policy.managedDomains.map((d) => d.toLowerCase()));
  const ignore = policy.ignoreUsers.map(userIdPattern);

  // Template fields: never above the bot's own level.
  const override: Record<string, unknown> = {};
  const t = template.powerLevels;
  const fieldOk = (field: string, level: number): boolean => {
    if (level <= botLevel) return true;
    findings.push({ kind: "field-above-bot", field, to: level, botLevel });
    return false;
  };
  for (const field of POWER_LEVEL_FIELDS) {
    const level = t[field];
    if (level !== undefined && fieldOk(field, level)) override[field] = level;
  }
  const events: Record<string, number> = { ...PRESET_EVENT_LEVELS };
  for (const [type, level] of Object.entries(t.events ?? {})) if (fieldOk(`events.${type}`, level)) events[type] = level;
  override["events"] = events;
  const notify = t.notifications?.room;
  if (notify !== undefined && fieldOk("notifications.room", notify)) override["notifications"] = { room: notify };
  const usersDefault = typeof override["users_default"] === "number" ? override["users_default"] : 0;

  const users: Record<string, number> = creatorPower ? {} : { [policy.bot]: CREATOR_LEVEL };
  const invite: UserId[] = [];
  const levels: PowerLevelChange[] = [];
  const foreign: UserId[] = [];
  const perUser: Finding[] = [];
  for (const m of [...desired.members].sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0))) {
    if (m.user === policy.bot) continue;
    if (!domains.has(serverNameOf(m.user).toLowerCase())) {
      foreign.push(m.user);
      continue;
    }
    if (ignore.some((re) => re.test(m.user))) continue;
    invite.push(m.user);
    let level = m.level;
    if (level > botLevel) {
      perUser.push({ kind: "clamped", user: m.user, role: m.role, wanted: level, botLevel });
      level = botLevel;
    }
    if (level !== usersDefault) {
      users[m.user] = level;
      levels.push({ user: m.user, from: usersDefault, to: level, removeEntry: false });
    }
  }
  for (const u of foreign) findings.push({ kind: "foreign-user", user: u });
  findings.push(...perUser);
  override["users"] = users;

  const initial: { type: string; state_key: string; content: Record<string, unknown> }[] = [];
  if (template.historyVisibility !== undefined) initial.push({ type: "m.room.history_visibility", state_key: "", content: { history_visibility: template.historyVisibility } });
  let rule = template.joinRule;
  const since = rule === undefined ? undefined : JOIN_RULE_SINCE[rule.rule];
  if (rule !== undefined && since !== undefined && roomVersionNumber(version) < since) {
    // Room versions before it have no such rule: nobody, invitees included, could join.
    findings.push({ kind: "join-rule-unsupported", rule: rule.rule, roomVersion: version, since });
    rule = undefined;
  }
  if (rule !== undefined && rule.rule !== "public") {
    const allow = "spaces" in rule ? rule.spaces.filter((s) => s.startsWith("!")) : [];
    if ("spaces" in rule && allow.length === 0) {
      for (const s of rule.spaces) findings.push({ kind: "join-rule-space-unknown", space: s });
    } else {
      initial.push({
        type: "m.room.join_rules",
        state_key: "",
        content: { join_rule: rule.rule, ...("spaces" in rule ? { allow: allow.map((room_id) => ({ type: "m.room_membership", room_id })) } : {}) },
      });
    }
  }
  if (template.guestAccess !== undefined) initial.push({ type: "m.room.guest_access", state_key: "", content: { guest_access: template.guestAccess } });
  if (template.encryption) initial.push({ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } });
  for (const parent of [...(input.parents ?? [])].sort()) {
    initial.push({ type: "m.space.parent", state_key: parent, content: { via: [serverNameOf(policy.bot)] } });
  }

  const request: CreateRoomRequest = {
    preset: rule?.rule === "public" ? "public_chat" : "private_chat",
    room_alias_name: check.localpart,
    name: template.name ?? check.localpart,
    ...(template.topic !== undefined ? { topic: template.topic } : {}),
    room_version: version,
    ...(desired.space !== undefined ? { creation_content: { type: "m.space" as const } } : {}),
    power_level_content_override: override,
    initial_state: initial,
    invite: invite.slice(0, maxInvites),
  };
  const later: Action[] = invite.slice(maxInvites).map((user) => ({ kind: "invite", user }));
  return { room: desired.room, roomId: null, actions: [{ kind: "create-room", alias: desired.room, request, levels }, ...later], held: [], findings };
}
