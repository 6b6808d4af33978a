/**
 * The executor: applies one room's plan through the narrow ports, in plan order. One failed
 * action does not stop the others; every outcome is returned for the record and the report.
 */
import type { PowerLevelsWriter, RoomCreator, RoomInviter, RoomKicker, StateWriter } from "../matrix/gateway.ts";
import type { RoomId } from "../matrix/ids.ts";
import { fail, ok, type Result } from "../result.ts";
import type { Action, RoomPlan } from "./types.ts";

export type ApplyPorts = RoomKicker & RoomInviter & PowerLevelsWriter & StateWriter & RoomCreator;

export interface ActionResult {
  readonly action: Action;
  readonly outcome: "applied" | "failed" | "planned";
  readonly error?: string;
  /** The room a `create-room` action made. */
  readonly roomId?: RoomId;
}

/**
 * `signal`: when aborted (the service is shutting down), the action under way finishes and
 * the rest are returned as "planned" (not applied); the next run picks them up.
 */
export async function applyRoomPlan(ports: ApplyPorts, plan: RoomPlan, signal?: AbortSignal): Promise<ActionResult[]> {
  const results: ActionResult[] = [];
  // A room created by the plan's first action is where the rest of its actions go.
  let roomId = plan.roomId;
  let notCreated: string | undefined;
  for (const action of plan.actions) {
    if (signal?.aborted) {
      results.push({ action, outcome: "planned" });
      continue;
    }
    if (notCreated !== undefined) {
      results.push({ action, outcome: "failed", error: `not sent: ${notCreated}` });
      continue;
    }
    const r = await applyAction(ports, plan, roomId, action);
    if (r.ok && action.kind === "create-room" && r.value !== undefined) roomId = r.value;
    if (!r.ok && action.kind === "create-room") notCreated = `${plan.room} was not created`;
    if (!r.ok) results.push({ action, outcome: "failed", error: r.error.message });
    else results.push({ action, outcome: "applied", ...(r.value !== undefined ? { roomId: r.value } : {}) });
  }
  return results;
}

/** The dry-run executor: the same plan, nothing sent. */
export function simulateRoomPlan(plan: RoomPlan): ActionResult[] {
  return plan.actions.map((action) => ({ action, outcome: "planned" }));
}

async function applyAction(ports: ApplyPorts, plan: RoomPlan, roomId: RoomId | null, action: Action): Promise<Result<RoomId | undefined>> {
  if (action.kind === "create-room") return await ports.createRoom(action.request);
  if (roomId === null) return fail(`${plan.room} does not exist (yet): ${action.kind} not sent`);
  const done = (r: Result<void>): Result<undefined> => (r.ok ? ok(undefined) : r);
  switch (action.kind) {
    case "kick":
      return done(await ports.kick(roomId, action.user, action.reason));
    case "invite":
      return done(await ports.invite(roomId, action.user));
    case "set-power-levels":
      return done(await ports.setPowerLevels(roomId, action.content));
    case "set-state":
      if (action.pending !== undefined) return fail(`${action.pending} was not created: ${action.type} not set`);
      return done(await ports.setState(roomId, action.type, action.stateKey, action.content));
    case "add-child":
      if (action.childId === undefined) return fail(`${action.child} was not created: not linked`);
      return done(await ports.setState(roomId, "m.space.child", action.childId, { via: action.via }));
    case "remove-child":
      // The spec: a child link is removed by an empty content (the event stays, empty).
      return done(await ports.setState(roomId, "m.space.child", action.childId, {}));
    default: {
      const never: never = action;
      throw new Error(`unknown action ${JSON.stringify(never)}`);
    }
  }
}
