/**
 * `sync.kickOn`: which run kicks, decided by its trigger alone (every trigger × every rule),
 * and what the planner does and says when the rule withholds a run's kicks.
 */
import { describe, expect, it } from "vitest";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import { KICK_ON, kickDecision, resolveKickOn, runKind } from "../../src/reconcile/kick-rule.ts";
import { EMPTY_MEMORY, planRoom } from "../../src/reconcile/plan.ts";
import type { DesiredRoom, ObservedRoom, Policy } from "../../src/reconcile/types.ts";
import { findingText } from "../../src/reconcile/words.ts";
import type { RunTrigger } from "../../src/store/store.ts";

const TRIGGERS: readonly RunTrigger[] = ["cli", "command", "demo", "schedule", "startup"];

describe("kickDecision", () => {
  it("manual = runs a person started (cli, !sync, the demo); scheduled = the schedule and the run at start", () => {
    expect(TRIGGERS.map((t) => [t, runKind(t)])).toEqual([
      ["cli", "manual"],
      ["command", "manual"],
      ["demo", "manual"],
      ["schedule", "scheduled"],
      ["startup", "scheduled"],
    ]);
  });

  it("gives the whole table: who kicks under each rule, and which kind of run would when this one may not", () => {
    const table = Object.fromEntries(KICK_ON.map((rule) => [rule, Object.fromEntries(TRIGGERS.map((t) => [t, kickDecision(rule, t)]))]));
    const yes = { kick: true };
    expect(table).toEqual({
      always: { cli: yes, command: yes, demo: yes, schedule: yes, startup: yes },
      never: { cli: { kick: false }, command: { kick: false }, demo: { kick: false }, schedule: { kick: false }, startup: { kick: false } },
      manual: { cli: yes, command: yes, demo: yes, schedule: { kick: false, onlyBy: "manual" }, startup: { kick: false, onlyBy: "manual" } },
      scheduled: { cli: { kick: false, onlyBy: "scheduled" }, command: { kick: false, onlyBy: "scheduled" }, demo: { kick: false, onlyBy: "scheduled" }, schedule: yes, startup: yes },
    });
  });

  it("reads the older sync.kick when kickOn is absent", () => {
    expect(resolveKickOn({})).toBe("always");
    expect(resolveKickOn({ kick: true })).toBe("always");
    expect(resolveKickOn({ kick: false })).toBe("never");
    expect(resolveKickOn({ kickOn: "manual", kick: true })).toBe("manual");
  });
});

const BOT = "@bot:example.org" as UserId;
const desired: DesiredRoom = {
  room: "#r:example.org",
  members: [{ user: "@new:example.org" as UserId, level: 0, role: "member", via: ["staff"] }],
  incompleteGroups: [],
  notes: [],
};
const observed: ObservedRoom = {
  roomId: "!r:example.org" as RoomId,
  roomVersion: "10",
  creators: [],
  members: { [BOT]: "join", "@gone:example.org": "join", "@stale:example.org": "invite" },
  powerLevels: { users: { [BOT]: 100, "@gone:example.org": 20 }, users_default: 0, kick: 50, invite: 0, state_default: 50 },
};
const base: Policy = { bot: BOT, managedDomains: ["example.org"], kick: true, kickReason: "gone", ignoreUsers: [], maxRemovals: { count: 0 } };

describe("the planner when the rule withholds this run's kicks", () => {
  it("kicks nobody, holds nobody (the guard is not reached), still invites and drops the stale level entry, and says which rule and how to get the kicks", () => {
    const plan = planRoom(desired, observed, { ...EMPTY_MEMORY, held: ["@gone:example.org" as UserId] }, { ...base, kick: false, kicksOnlyBy: "manual" });
    expect(plan.actions.map((a) => a.kind)).toEqual(["set-power-levels", "invite"]);
    expect(plan.held).toEqual([]);
    const notes = plan.findings.map(findingText);
    expect(notes).toEqual(
      expect.arrayContaining([
        "@gone:example.org: not in a mapped group; left in the room: kicks are made only by manual runs (sync.kickOn: manual): run !sync or matrix-group-sync sync",
        "@stale:example.org: not in a mapped group; left in the room: kicks are made only by manual runs (sync.kickOn: manual): run !sync or matrix-group-sync sync",
      ]),
    );
    expect(notes.some((n) => n.includes("exceed the limit"))).toBe(false);
  });

  it("the same room planned by a run that may kick: the guard holds the removals as before", () => {
    const plan = planRoom(desired, observed, EMPTY_MEMORY, base);
    expect(plan.held.map((h) => h.user)).toEqual(["@gone:example.org", "@stale:example.org"]);
    expect(plan.actions.filter((a) => a.kind === "kick")).toEqual([]);
  });

  it("kicking off by config (never) keeps its own words", () => {
    const plan = planRoom(desired, observed, EMPTY_MEMORY, { ...base, kick: false });
    expect(plan.findings.map(findingText)).toContain("@gone:example.org: not in a mapped group; kicking is off (sync.kickOn: never), left in the room");
  });
});
