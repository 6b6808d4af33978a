/**
 * Which runs may kick (`sync.kickOn`). Pure: decided by the run's trigger alone.
 *
 * - `always` (default): every run.
 * - `manual`: only runs a person started — `!sync` in the management room (trigger
 *   `command`) and the `sync` CLI command (trigger `cli`). Scheduled runs invite and change
 *   levels but leave removals to the next manual run (the inviterbot's `cautious: true`).
 * - `scheduled`: only the service's own runs — its schedule (`schedule`), its run at start
 *   (`startup`) and a run for a change of the directory (`directory`).
 * - `never`: no run (the older `sync.kick: false`).
 */
import type { RunTrigger } from "../store/store.ts";

export const KICK_ON = ["always", "manual", "scheduled", "never"] as const;
export type KickOn = (typeof KICK_ON)[number];

/** A run a person started, or one the service started by itself. */
export type RunKind = "manual" | "scheduled";

/** Exhaustive: a new trigger must be placed on one side here. */
export function runKind(trigger: RunTrigger): RunKind {
  switch (trigger) {
    case "command":
    case "cli":
    case "demo": // the demo script is run by a person at a terminal
      return "manual";
    case "schedule":
    case "startup":
    case "directory":
      return "scheduled";
    default: {
      const never: never = trigger;
      throw new Error(`unknown run trigger ${JSON.stringify(never)}`);
    }
  }
}

/**
 * Whether a run started by `trigger` may kick, and when not only because of the kind of run,
 * which kind would (`onlyBy`): the report then says how to get the kicks.
 */
export function kickDecision(kickOn: KickOn, trigger: RunTrigger): { readonly kick: true } | { readonly kick: false; readonly onlyBy?: RunKind } {
  switch (kickOn) {
    case "always":
      return { kick: true };
    case "never":
      return { kick: false };
    case "manual":
    case "scheduled":
      return runKind(trigger) === kickOn ? { kick: true } : { kick: false, onlyBy: kickOn };
  }
}

/** The rule of settings written the older way (`sync.kick`), or neither. */
export function resolveKickOn(sync: { readonly kickOn?: KickOn | undefined; readonly kick?: boolean | undefined }): KickOn {
  if (sync.kickOn !== undefined) return sync.kickOn;
  return sync.kick === false ? "never" : "always";
}
