/**
 * Decoding `GET /rooms/{id}/state` at the boundary: what the planner needs (memberships, the
 * power levels content, the create event), every value checked. Malformed events are skipped,
 * never trusted. State that cannot be accounted for — no `m.room.create`, the same state key
 * given twice with different content — is reported in `problems`, which makes the planner
 * leave the room alone: it would not know who is above whom.
 */
import { fail, ok, type Result } from "../result.ts";
import { OBSERVED_STATE_TYPES, type Membership, type ObservedRoom, type ObservedStateType, type RawPowerLevels } from "../reconcile/types.ts";
import { hasCreatorPower } from "../reconcile/levels.ts";
import { parseUserId, type RoomId, type UserId } from "./ids.ts";

const MEMBERSHIPS: ReadonlySet<string> = new Set(["join", "invite", "leave", "ban", "knock"]);
const TRACKED: ReadonlySet<string> = new Set(OBSERVED_STATE_TYPES);

export function decodeRoomState(roomId: RoomId, raw: unknown): Result<ObservedRoom> {
  if (!Array.isArray(raw)) return fail(`reading the state of ${roomId}: the homeserver did not answer with a list of events`);
  const members: Record<string, Membership> = {};
  let powerLevels: RawPowerLevels | undefined;
  let create: { content: Record<string, unknown>; sender: unknown } | undefined;
  const problems: string[] = [];
  const state: Partial<Record<ObservedStateType, Record<string, Record<string, unknown>>>> = {};
  const seen = new Map<string, string>();
  const conflicted = new Set<string>();
  /** False (and a problem noted) when this state key was already given with other content. */
  const first = (type: string, stateKey: string, content: unknown): boolean => {
    const key = `${type}\u0000${stateKey}`;
    const text = JSON.stringify(content);
    const before = seen.get(key);
    if (before === undefined) {
      seen.set(key, text);
      return true;
    }
    if (before !== text) problems.push(`the state holds two different ${type} events${stateKey === "" ? "" : ` for ${stateKey}`}`);
    return false;
  };

  for (const ev of raw as unknown[]) {
    if (!ev || typeof ev !== "object") continue;
    const e = ev as { type?: unknown; state_key?: unknown; content?: unknown; sender?: unknown };
    const content = e.content && typeof e.content === "object" && !Array.isArray(e.content) ? (e.content as Record<string, unknown>) : undefined;
    if (typeof e.type !== "string" || typeof e.state_key !== "string" || !content) continue;
    switch (e.type) {
      case "m.room.member": {
        const user = parseUserId(e.state_key);
        const m = content["membership"];
        if (!user || typeof m !== "string" || !MEMBERSHIPS.has(m)) break;
        // Compared by membership (what the planner reads), not by content: one string
        // comparison per member, not a serialisation.
        const before = members[user];
        if (before === undefined) members[user] = m as Membership;
        else if (before !== m) conflicted.add(user);
        break;
      }
      case "m.room.power_levels":
        if (e.state_key === "" && first(e.type, "", content)) powerLevels = content;
        break;
      case "m.room.create":
        if (e.state_key === "" && first(e.type, "", { content, sender: e.sender })) create = { content, sender: e.sender };
        break;
      default:
        if (TRACKED.has(e.type) && first(e.type, e.state_key, content)) {
          const type = e.type as ObservedStateType;
          (state[type] ??= {})[e.state_key] = content;
        }
        break;
    }
  }

  for (const user of conflicted) problems.push(`the state holds two different m.room.member events for ${user}`);
  let roomVersion = "1";
  let createSender: UserId | undefined;
  let additionalCreators: UserId[] = [];
  if (create === undefined) {
    problems.push("the state has no m.room.create event");
  } else {
    const v = create.content["room_version"];
    // The spec: a create event without room_version is version 1.
    if (v === undefined) roomVersion = "1";
    else if (typeof v === "string" && isKnownRoomVersion(v)) roomVersion = v;
    else problems.push(`m.room.create has room_version ${JSON.stringify(v).slice(0, 40)}, not a room version this service knows the rules of`);
    createSender = typeof create.sender === "string" ? parseUserId(create.sender) : undefined;
    if (createSender === undefined) problems.push("m.room.create has no valid sender");
    if (hasCreatorPower(roomVersion)) {
      const extra = create.content["additional_creators"];
      if (extra !== undefined) {
        const ids = Array.isArray(extra) ? extra.map((x) => (typeof x === "string" ? parseUserId(x) : undefined)) : [undefined];
        if (ids.some((x) => x === undefined)) problems.push("m.room.create has additional_creators that are not all user ids");
        additionalCreators = ids.filter((x): x is UserId => x !== undefined);
      }
    }
  }
  const creators = hasCreatorPower(roomVersion) && createSender ? [createSender, ...additionalCreators] : [];
  const roomType = create?.content["type"];
  return ok({
    roomId,
    roomVersion,
    creators,
    members,
    ...(powerLevels ? { powerLevels } : {}),
    ...(Object.keys(state).length > 0 ? { state } : {}),
    ...(typeof roomType === "string" ? { roomType } : {}),
    ...(createSender ? { createSender } : {}),
    ...(problems.length > 0 ? { problems } : {}),
  });
}

/** Numbered versions (12 and later are taken to keep v12's creator rules) and the v12 preview. */
function isKnownRoomVersion(v: string): boolean {
  return /^[1-9][0-9]*$/.test(v) || v === "org.matrix.hydra.11";
}
