/**
 * Golden fixtures for the planner: every `test/fixtures/plan/NN-<behaviour>.json` holds one rule,
 * the inputs of `planRoom` and the exact actions and held removals it must produce (in the
 * manner of matrix-corporal's computator testdata). A fixture states what the rule requires,
 * never what the planner happens to print.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import { planRoom } from "../../src/reconcile/plan.ts";
import type {
  Action,
  DesiredRoom,
  HeldRemoval,
  ObservedRoom,
  Policy,
  RoomMemory,
} from "../../src/reconcile/types.ts";

const FIXTURES = join(import.meta.dirname, "..", "fixtures", "plan");
const MIN_FIXTURES = 20;

const userId = z.string().regex(/^@[^:]+:.+$/).transform((s) => s as UserId);
const membership = z.enum(["join", "invite", "leave", "ban", "knock"]);
const powerLevels = z.looseObject({
  users: z.record(z.string(), z.number()).optional(),
  users_default: z.number().optional(),
  events: z.record(z.string(), z.number()).optional(),
  events_default: z.number().optional(),
  state_default: z.number().optional(),
  kick: z.number().optional(),
  ban: z.number().optional(),
  invite: z.number().optional(),
  redact: z.number().optional(),
});
const change = z.strictObject({ user: userId, from: z.number(), to: z.number(), removeEntry: z.boolean() });
const action = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("kick"), user: userId, reason: z.string() }),
  z.strictObject({ kind: z.literal("invite"), user: userId }),
  z.strictObject({ kind: z.literal("set-power-levels"), changes: z.array(change), content: powerLevels }),
]);
const heldRemoval = z.strictObject({ kind: z.literal("kick"), user: userId, reason: z.string() });

const fixtureSchema = z.strictObject({
  rule: z.string().min(10),
  policy: z.strictObject({
    bot: userId,
    managedDomains: z.array(z.string()),
    kick: z.boolean(),
    kickReason: z.string(),
    ignoreUsers: z.array(z.string()),
    maxRemovals: z.strictObject({ count: z.number().optional(), share: z.number().optional() }),
  }),
  desired: z.strictObject({
    room: z.string(),
    members: z.array(
      z.strictObject({ user: userId, level: z.number(), role: z.string(), via: z.array(z.string()) }),
    ),
    incompleteGroups: z.array(z.string()),
    notes: z.array(z.string()),
  }),
  observed: z.strictObject({
    roomId: z.string().startsWith("!"),
    roomVersion: z.string(),
    creators: z.array(userId),
    members: z.record(z.string(), membership),
    // As the homeserver gave it: levels may be strings (room v1-9) or invalid (then no plan).
    powerLevels: z.record(z.string(), z.unknown()).optional(),
    createSender: userId.optional(),
  }),
  memory: z.strictObject({ externals: z.array(userId), held: z.array(userId), released: z.array(userId) }),
  expected: z.strictObject({
    actions: z.array(action),
    held: z.array(heldRemoval),
    notesInclude: z.array(z.string()),
    /** The room cannot be judged: the plan's error contains this. */
    error: z.string().optional(),
  }),
});

interface Fixture {
  readonly file: string;
  readonly rule: string;
  readonly policy: Policy;
  readonly desired: DesiredRoom;
  readonly observed: ObservedRoom;
  readonly memory: RoomMemory;
  readonly actions: readonly Action[];
  readonly held: readonly HeldRemoval[];
  readonly notesInclude: readonly string[];
  readonly error: string | undefined;
}

/** Decodes one fixture file; optional fields are only set when present (exactOptionalPropertyTypes). */
function load(file: string): Fixture {
  const raw: unknown = JSON.parse(readFileSync(join(FIXTURES, file), "utf8"));
  const f = fixtureSchema.parse(raw);
  const { count, share } = f.policy.maxRemovals;
  const policy: Policy = {
    ...f.policy,
    maxRemovals: { ...(count === undefined ? {} : { count }), ...(share === undefined ? {} : { share }) },
  };
  const { powerLevels: pl, createSender, ...observedRest } = f.observed;
  const observed: ObservedRoom = {
    ...observedRest,
    roomId: f.observed.roomId as RoomId,
    ...(pl === undefined ? {} : { powerLevels: pl }),
    ...(createSender === undefined ? {} : { createSender }),
  };
  return {
    file,
    rule: f.rule,
    policy,
    desired: f.desired,
    observed,
    memory: f.memory,
    actions: f.expected.actions as Action[],
    held: f.expected.held,
    notesInclude: f.expected.notesInclude,
    error: f.expected.error,
  };
}

const files = readdirSync(FIXTURES)
  .filter((f) => f.endsWith(".json"))
  .sort();

describe("planner golden fixtures", () => {
  it(`has at least ${MIN_FIXTURES} fixtures, named NN-<behaviour>.json with unique numbers`, () => {
    expect(files.length).toBeGreaterThanOrEqual(MIN_FIXTURES);
    for (const f of files) expect(f).toMatch(/^\d{2}-[a-z0-9]+(?:-[a-z0-9]+)*\.json$/);
    const numbers = files.map((f) => f.slice(0, 2));
    expect(new Set(numbers).size).toBe(numbers.length);
  });

  for (const file of files) {
    // A malformed fixture fails its own test, not the whole file.
    let fixture: Fixture | Error;
    try {
      fixture = load(file);
    } catch (e) {
      fixture = e instanceof Error ? e : new Error(String(e));
    }
    const title = fixture instanceof Error ? "(unreadable fixture)" : fixture.rule;
    it(`${file.replace(/\.json$/, "")}: ${title}`, () => {
      if (fixture instanceof Error) throw fixture;
      const plan = planRoom(fixture.desired, fixture.observed, fixture.memory, fixture.policy);
      expect(plan.room).toBe(fixture.desired.room);
      expect(plan.roomId).toBe(fixture.observed.roomId);
      expect(plan.actions).toEqual(fixture.actions);
      expect(plan.held).toEqual(fixture.held);
      if (fixture.error === undefined) expect(plan.error).toBeUndefined();
      else expect(plan.error).toContain(fixture.error);
      for (const wanted of fixture.notesInclude) {
        expect(
          plan.notes.some((n) => n.includes(wanted)),
          `a note containing ${JSON.stringify(wanted)} in ${JSON.stringify(plan.notes)}`,
        ).toBe(true);
      }
    });
  }
});
