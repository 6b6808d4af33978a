/**
 * The executor: applies one room's plan through the narrow ports, in plan order. One failed
 * action does not stop the others; every outcome is returned for the record and the report.
 */
import type { PowerLevelsWriter, RoomInviter, RoomKicker } from "../matrix/gateway.ts";
import type { Result } from "../result.ts";
import type { Action, RoomPlan } from "./types.ts";

export type ApplyPorts = RoomKicker & RoomInviter & PowerLevelsWriter;

export interface ActionResult {
  readonly action: Action;
  readonly outcome: "applied" | "failed" | "planned";
  readonly error?: string;
}

/**
 * `signal`: when aborted (the service is shutting down), the action under way finishes and
 * the rest are returned as "planned" (not applied); the next run picks them up.
 */
export async function applyRoomPlan(ports: ApplyPorts, plan: RoomPlan, signal?: AbortSignal): Promise<ActionResult[]> {
  const results: ActionResult[] = [];
  for (const action of plan.actions) {
    if (signal?.aborted) {
      results.push({ action, outcome: "planned" });
      continue;
    }
    const r = await applyAction(ports, plan, action);
    results.push(r.ok ? { action, outcome: "applied" } : { action, outcome: "failed", error: r.error.message });
  }
  return results;
}

/** The dry-run executor: the same plan, nothing sent. */
export function simulateRoomPlan(plan: RoomPlan): ActionResult[] {
  return plan.actions.map((action) => ({ action, outcome: "planned" }));
}

function applyAction(ports: ApplyPorts, plan: RoomPlan, action: Action): Promise<Result<void>> {
  switch (action.kind) {
    case "kick":
      return ports.kick(plan.roomId, action.user, action.reason);
    case "invite":
      return ports.invite(plan.roomId, action.user);
    case "set-power-levels":
      return ports.setPowerLevels(plan.roomId, action.content);
    default: {
      const never: never = action;
      throw new Error(`unknown action ${JSON.stringify(never)}`);
    }
  }
}
