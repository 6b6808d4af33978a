/**
 * From the loaded configuration to the domain types of reconcile/template.ts: the template
 * of one room (`rooms.defaults`, then its entry in `rooms.overrides`, then, for a space, the
 * space's own name and topic) and the configured spaces. Pure: no I/O.
 */
import type { JoinRuleSetting, PowerLevelTemplate, RoomTemplate, SpaceSetting } from "../reconcile/template.ts";
import { POWER_LEVEL_FIELDS } from "../reconcile/template.ts";
import type { Config, RoomTemplateConfig, SpaceConfig } from "./schema.ts";

type Permissions = NonNullable<RoomTemplateConfig["permissions"]>;
type JoinRuleConfig = NonNullable<RoomTemplateConfig["joinRule"]>;

/**
 * The template of the room known by `refs` (its alias, its room id...): `rooms.defaults`,
 * changed field by field by the override of the first of `refs` that has one
 * (`permissions.events` and `permissions.notifications` key by key, the join rule as a
 * whole). When one of `refs` is a configured space (the first such), that space's `name`
 * and `topic` win over both.
 */
export function templateFor(config: Config, refs: readonly string[]): RoomTemplate {
  const { defaults, overrides } = config.rooms;
  const overrideRef = refs.find((ref) => Object.hasOwn(overrides, ref));
  const override = overrideRef === undefined ? undefined : overrides[overrideRef];
  const spaceRef = refs.find((ref) => config.spaces.some((s) => s.space === ref));
  const space = config.spaces.find((s) => s.space === spaceRef);

  const joinRule = override?.joinRule ?? defaults.joinRule;
  const historyVisibility = override?.historyVisibility ?? defaults.historyVisibility;
  const guestAccess = override?.guestAccess ?? defaults.guestAccess;
  const name = space?.name ?? override?.name;
  const topic = space?.topic ?? override?.topic ?? defaults.topic;
  const roomVersion = override?.roomVersion ?? defaults.roomVersion;
  return {
    powerLevels: mergePermissions(defaults.permissions, override?.permissions),
    ...(historyVisibility === undefined ? {} : { historyVisibility }),
    ...(joinRule === undefined ? {} : { joinRule: joinRuleSetting(joinRule) }),
    ...(guestAccess === undefined ? {} : { guestAccess }),
    ...(name === undefined ? {} : { name }),
    ...(topic === undefined ? {} : { topic }),
    encryption: override?.encryption ?? defaults.encryption,
    ...(roomVersion === undefined ? {} : { roomVersion }),
  };
}

/** The configured spaces, in file order. Their name and topic are part of their template (`templateFor`). */
export function spaceSettings(config: Config): SpaceSetting[] {
  return config.spaces.map((s: SpaceConfig) => ({
    space: s.space,
    rooms: [...s.children.rooms],
    underGroups: [...s.children.underGroups],
    parentLinks: s.parentLinks,
    restrictChildren: s.restrictChildren,
    role: s.role,
  }));
}

/**
 * Whether the template manages nothing: no power-level field, no state (history visibility,
 * join rule, guest access, name, topic) and nothing special at creation (no encryption, no
 * room version).
 */
export function templateIsEmpty(t: RoomTemplate): boolean {
  return (
    powerLevelsAreEmpty(t.powerLevels) &&
    t.historyVisibility === undefined &&
    t.joinRule === undefined &&
    t.guestAccess === undefined &&
    t.name === undefined &&
    t.topic === undefined &&
    !t.encryption &&
    t.roomVersion === undefined
  );
}

function powerLevelsAreEmpty(p: PowerLevelTemplate): boolean {
  return (
    POWER_LEVEL_FIELDS.every((f) => p[f] === undefined) &&
    p.notifications?.room === undefined &&
    Object.keys(p.events ?? {}).length === 0
  );
}

function mergePermissions(base: Permissions | undefined, over: Permissions | undefined): PowerLevelTemplate {
  const out: { -readonly [K in keyof PowerLevelTemplate]: PowerLevelTemplate[K] } = {};
  for (const f of POWER_LEVEL_FIELDS) {
    const level = over?.[f] ?? base?.[f];
    if (level !== undefined) out[f] = level;
  }
  const room = over?.notifications?.room ?? base?.notifications?.room;
  if (base?.notifications !== undefined || over?.notifications !== undefined) out.notifications = room === undefined ? {} : { room };
  if (base?.events !== undefined || over?.events !== undefined) out.events = { ...base?.events, ...over?.events };
  return out;
}

function joinRuleSetting(rule: JoinRuleConfig): JoinRuleSetting {
  if (typeof rule === "string") return { rule };
  if ("restricted" in rule) return { rule: "restricted", spaces: [...rule.restricted] };
  return { rule: "knock_restricted", spaces: [...rule.knock_restricted] };
}
