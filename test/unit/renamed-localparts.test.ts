/**
 * `users.renamedLocalparts` (the inviterbot's `renamed_users`, by localpart) and
 * `users.renamedUsers` (full ids) describe the same renames: from the same directory, the two
 * configs give the same desired rooms, and the planner the same plan for the same room.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { settingsFrom } from "../../src/app.ts";
import { formatConfigError, loadConfig } from "../../src/config/load.ts";
import type { Config } from "../../src/config/schema.ts";
import { StaticIdentityProvider } from "../../src/idp/static.ts";
import type { RoomId, UserId } from "../../src/matrix/ids.ts";
import { readDirectory } from "../../src/reconcile/directory.ts";
import { EMPTY_MEMORY, planRoom } from "../../src/reconcile/plan.ts";
import type { DesiredRoom, ObservedRoom, Policy } from "../../src/reconcile/types.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-renames-"));
  writeFileSync(
    join(dir, "directory.yaml"),
    [
      "users: [alice, jane.doe, testnew, { id: Upper, attributes: { uid: Mixed.Case } }]",
      "groups:",
      "  - { id: staff, members: [alice, jane.doe, testnew, Upper] }",
      "",
    ].join("\n"),
  );
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function config(users: string): Config {
  const path = join(dir, "config.yaml");
  writeFileSync(
    path,
    [
      "homeserver: { url: http://127.0.0.1:8008, accessToken: t }",
      "idp: { kind: static, static: { file: directory.yaml } }",
      `users: ${users}`,
      'mapping: { rooms: [{ room: "#staff:example.org", groups: [{ group: staff }] }] }',
      "",
    ].join("\n"),
  );
  const loaded = loadConfig({ path, env: {} });
  if (!loaded.ok) throw new Error(loaded.errors.map(formatConfigError).join("\n"));
  return loaded.config;
}

async function desired(c: Config, botServer: string): Promise<DesiredRoom[]> {
  const state = await readDirectory(new StaticIdentityProvider(join(dir, "directory.yaml")), settingsFrom(c), botServer);
  if (!state.ok) throw new Error(state.error.message);
  return state.value.desired;
}

const BOT = "@bot:example.org" as UserId;
const policy: Policy = { bot: BOT, managedDomains: ["example.org"], kick: true, kickReason: "gone", ignoreUsers: [], maxRemovals: {} };
// jdoe and testold (the real accounts) are in the room; so is jane.doe, an account the template would build.
const observed: ObservedRoom = {
  roomId: "!staff:example.org" as RoomId,
  roomVersion: "10",
  creators: [],
  members: { [BOT]: "join", "@alice:example.org": "join", "@jdoe:example.org": "join", "@jane.doe:example.org": "join", "@testold:example.org": "invite" },
  powerLevels: { users: { [BOT]: 100 }, users_default: 0, kick: 50, invite: 0, state_default: 50 },
};

describe("renamedLocalparts and renamedUsers give the same desired state", () => {
  it("with users.domain: the same members, and the same plan (the real accounts kept, the built id removed)", async () => {
    const byLocalpart = config("{ domain: example.org, renamedLocalparts: { jane.doe: jdoe, testnew: testold, mixed.case: mc } }");
    const byId = config(
      '{ domain: example.org, renamedUsers: { "@jane.doe:example.org": "@jdoe:example.org", "@testnew:example.org": "@testold:example.org", "@mixed.case:example.org": "@mc:example.org" } }',
    );
    const a = await desired(byLocalpart, "example.org");
    const b = await desired(byId, "example.org");
    expect(a).toEqual(b);
    expect(a[0]!.members.map((m) => m.user).sort()).toEqual(["@alice:example.org", "@jdoe:example.org", "@mc:example.org", "@testold:example.org"]);

    const planA = planRoom(a[0]!, observed, EMPTY_MEMORY, policy);
    expect(planA).toEqual(planRoom(b[0]!, observed, EMPTY_MEMORY, policy));
    expect(planA.actions).toEqual([
      { kind: "kick", user: "@jane.doe:example.org", reason: "gone" },
      { kind: "invite", user: "@mc:example.org" },
    ]);
  });

  it("without users.domain: localparts are on the bot's server, as full ids there", async () => {
    const byLocalpart = config("{ renamedLocalparts: { jane.doe: jdoe } }");
    const byId = config('{ renamedUsers: { "@jane.doe:example.org": "@jdoe:example.org" } }');
    expect(await desired(byLocalpart, "example.org")).toEqual(await desired(byId, "example.org"));
    // On another server the localpart form follows the server; the full id does not apply there.
    const elsewhere = (await desired(byLocalpart, "other.org"))[0]!.members.map((m) => m.user);
    expect(elsewhere).toContain("@jdoe:other.org");
  });

  it("a domain written with capitals is lower-cased as the built ids are", async () => {
    const byLocalpart = config("{ domain: Example.ORG, renamedLocalparts: { jane.doe: jdoe } }");
    const members = (await desired(byLocalpart, "example.org"))[0]!.members.map((m) => m.user);
    expect(members).toContain("@jdoe:example.org");
    expect(members).not.toContain("@jane.doe:example.org");
  });
});
