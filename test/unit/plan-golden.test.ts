/**
 * Golden fixtures for the planner: every `test/fixtures/plan/NN-<behaviour>.json` holds one rule,
 * the inputs of `planRoom` and the exact actions and held removals it must produce (in the
 * manner of matrix-corporal's computator testdata). A fixture states what the rule requires,
 * never what the planner happens to print.
 *
 * A fixture whose `observed` is `null` is a room that does not exist: it is planned by
 * `planCreation` (with `desired.template`, and the fixture's `parents` as the spaces to name).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import { planRoom } from "../../src/reconcile/plan.ts";
import { planCreation } from "../../src/reconcile/plan-create.ts";
import { GUEST_ACCESS, HISTORY_VISIBILITIES, type RoomTemplate } from "../../src/reconcile/template.ts";
import { findingText } from "../../src/reconcile/words.ts";
import {
  OBSERVED_STATE_TYPES,
  type Action,
  type DesiredRoom,
  type HeldRemoval,
  type ObservedRoom,
  type Policy,
  type RoomMemory,
  type RoomPlan,
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
const roomId = z.string().startsWith("!").transform((s) => s as RoomId);
const level = z.number().int();
const stateContent = z.record(z.string(), z.unknown());
const action = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("kick"), user: userId, reason: z.string() }),
  z.strictObject({ kind: z.literal("invite"), user: userId }),
  z.strictObject({
    kind: z.literal("set-power-levels"),
    changes: z.array(change),
    fields: z.array(z.strictObject({ field: z.string(), from: z.number().optional(), to: z.number() })),
    content: powerLevels,
  }),
  z.strictObject({
    kind: z.literal("set-state"),
    type: z.string(),
    stateKey: z.string(),
    content: stateContent,
    from: z.string().nullable(),
    to: z.string(),
    pending: z.string().optional(),
  }),
  z.strictObject({ kind: z.literal("add-child"), child: z.string(), childId: roomId.optional(), via: z.array(z.string()) }),
  z.strictObject({ kind: z.literal("remove-child"), child: z.string(), childId: roomId }),
  z.strictObject({
    kind: z.literal("create-room"),
    alias: z.string(),
    request: z.strictObject({
      preset: z.enum(["private_chat", "public_chat"]),
      room_alias_name: z.string(),
      name: z.string(),
      topic: z.string().optional(),
      room_version: z.string(),
      creation_content: z.strictObject({ type: z.literal("m.space") }).optional(),
      power_level_content_override: powerLevels,
      initial_state: z.array(z.strictObject({ type: z.string(), state_key: z.string(), content: stateContent })),
      invite: z.array(userId),
    }),
    levels: z.array(change),
  }),
]);
const heldRemoval = z.strictObject({ kind: z.literal("kick"), user: userId, reason: z.string() });

const joinRule = z.union([
  z.strictObject({ rule: z.enum(["invite", "knock", "public"]) }),
  z.strictObject({ rule: z.enum(["restricted", "knock_restricted"]), spaces: z.array(z.string()) }),
]);
const template = z.strictObject({
  powerLevels: z.strictObject({
    users_default: level.optional(),
    events_default: level.optional(),
    state_default: level.optional(),
    invite: level.optional(),
    kick: level.optional(),
    ban: level.optional(),
    redact: level.optional(),
    notifications: z.strictObject({ room: level.optional() }).optional(),
    events: z.record(z.string(), level).optional(),
  }),
  historyVisibility: z.enum(HISTORY_VISIBILITIES).optional(),
  joinRule: joinRule.optional(),
  guestAccess: z.enum(GUEST_ACCESS).optional(),
  name: z.string().optional(),
  topic: z.string().optional(),
  encryption: z.boolean(),
  roomVersion: z.string().optional(),
});
const link = z.strictObject({ ref: z.string(), roomId: roomId.optional() });
const stateTypes = z.enum(OBSERVED_STATE_TYPES);

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
    template: template.optional(),
    space: z.strictObject({ children: z.array(link) }).optional(),
    parents: z.array(link).optional(),
  }),
  /** For a room to create (`observed: null`): the ids of the spaces it names in `m.space.parent`. */
  parents: z.array(roomId).optional(),
  /** `null`: the room does not exist yet, and the plan creates it. */
  observed: z.strictObject({
    roomId: z.string().startsWith("!"),
    roomVersion: z.string(),
    creators: z.array(userId),
    members: z.record(z.string(), membership),
    // As the homeserver gave it: levels may be strings (room v1-9) or invalid (then no plan).
    powerLevels: z.record(z.string(), z.unknown()).optional(),
    createSender: userId.optional(),
    // type -> state key -> content, as the homeserver gave it.
    state: z.partialRecord(stateTypes, z.record(z.string(), stateContent)).optional(),
    roomType: z.string().optional(),
  }).nullable(),
  memory: z.strictObject({
    externals: z.array(userId),
    held: z.array(userId),
    released: z.array(userId),
    links: z.array(z.strictObject({ type: z.enum(["m.space.child", "m.space.parent"]), stateKey: roomId })).optional(),
  }),
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
  /** Null: a room to create. */
  readonly observed: ObservedRoom | null;
  readonly parents: readonly RoomId[] | undefined;
  readonly memory: RoomMemory;
  readonly actions: readonly Action[];
  readonly held: readonly HeldRemoval[];
  readonly notesInclude: readonly string[];
  readonly error: string | undefined;
}

/** The object without its undefined properties (zod's optional keys, under exactOptionalPropertyTypes). */
function defined<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}

/** Decodes one fixture file; optional fields are only set when present (exactOptionalPropertyTypes). */
function load(file: string): Fixture {
  const raw: unknown = JSON.parse(readFileSync(join(FIXTURES, file), "utf8"));
  const f = fixtureSchema.parse(raw);
  const policy: Policy = { ...f.policy, maxRemovals: defined(f.policy.maxRemovals) };
  const { template: t, space, parents, ...desiredRest } = f.desired;
  const desired: DesiredRoom = {
    ...desiredRest,
    ...(t === undefined ? {} : { template: toTemplate(t) }),
    ...(space === undefined ? {} : { space: { children: space.children.map(defined) } }),
    ...(parents === undefined ? {} : { parents: parents.map(defined) }),
  };
  let observed: ObservedRoom | null = null;
  if (f.observed !== null) {
    const { roomId: id, ...rest } = f.observed;
    observed = { ...defined(rest), roomId: id as RoomId };
  }
  const { links, ...memoryRest } = f.memory;
  return {
    file,
    rule: f.rule,
    policy,
    desired,
    observed,
    parents: f.parents,
    memory: { ...memoryRest, ...(links === undefined ? {} : { links }) },
    actions: f.expected.actions as Action[],
    held: f.expected.held,
    notesInclude: f.expected.notesInclude,
    error: f.expected.error,
  };
}

function toTemplate(t: z.infer<typeof template>): RoomTemplate {
  const { powerLevels: pl, joinRule: rule, ...rest } = t;
  const { notifications, ...fields } = pl;
  return {
    ...defined(rest),
    powerLevels: { ...defined(fields), ...(notifications === undefined ? {} : { notifications: defined(notifications) }) },
    ...(rule === undefined ? {} : { joinRule: rule }),
  };
}

function planOf(f: Fixture): RoomPlan {
  if (f.observed !== null) return planRoom(f.desired, f.observed, f.memory, f.policy);
  if (f.desired.template === undefined) throw new Error("a fixture that creates its room (observed: null) needs desired.template");
  return planCreation({ desired: f.desired, template: f.desired.template, policy: f.policy, ...(f.parents === undefined ? {} : { parents: f.parents }) });
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
      const plan = planOf(fixture);
      expect(plan.room).toBe(fixture.desired.room);
      expect(plan.roomId).toBe(fixture.observed === null ? null : fixture.observed.roomId);
      expect(plan.actions).toEqual(fixture.actions);
      expect(plan.held).toEqual(fixture.held);
      if (fixture.error === undefined) expect(plan.error).toBeUndefined();
      else expect(plan.error).toContain(fixture.error);
      const notes = plan.findings.map(findingText);
      for (const wanted of fixture.notesInclude) {
        expect(
          notes.some((n) => n.includes(wanted)),
          `a note containing ${JSON.stringify(wanted)} in ${JSON.stringify(notes)}`,
        ).toBe(true);
      }
    });
  }
});
