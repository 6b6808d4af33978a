/**
 * Wrong plans under odd input, end to end (CLI in-process, the test homeserver, a static
 * directory, PGlite): one room reached through several references, power levels given as
 * strings, levels no room version allows, and a run whose directory data is incomplete.
 * Each checks the end state of the room and what the run says, not which functions ran.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXIT_DEGRADED, EXIT_FAILURES, EXIT_OK } from "../../src/exit-codes.ts";
import { runCli, type CliIo } from "../../src/main.ts";
import type { RunReport } from "../../src/reconcile/report.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const BOT = "@bot:example.org";
const u = (n: string): string => `@${n}:example.org`;
let dir: string;
let hs: FakeHomeserver;
let token: string;
let n = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-hostile-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  token = hs.registerUser(BOT);
  await writeFile(
    join(dir, "directory.yaml"),
    `users: [alice, bob, carol, dave]
groups:
  - { id: ga, members: [alice] }
  - { id: gb, members: [bob] }
  - { id: gc, members: [carol] }
  - { id: gd, members: [dave] }
`,
  );
});

afterAll(async () => {
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

/** A config of its own for each test; one data folder for all (a new PGlite folder costs seconds). */
async function writeConfig(mappingYaml: string, extra = "", homeserver = "concurrency: 2"): Promise<{ path: string; dataDir: string }> {
  const name = `c${++n}`;
  const path = join(dir, `${name}.yaml`);
  await writeFile(
    path,
    `homeserver: { url: ${hs.url}, accessToken: ${token}, maxRetries: 3, ${homeserver} }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
${mappingYaml}
${extra}
log: { level: error }
`,
  );
  return { path, dataDir: join(dir, "data") };
}

async function sync(config: string, ...flags: string[]): Promise<{ code: number; report: RunReport; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: (t) => err.push(t), env: {}, cwd: dir, interactive: false };
  const code = await runCli(["sync", "--json", "--config", config, ...flags], io);
  return { code, report: JSON.parse(out.join("\n")) as RunReport, stderr: err.join("\n") };
}

function writesTo(roomId: string): number {
  return hs.appliedChanges().filter((c) => c.roomId === roomId).length;
}

describe("one room reached through several references", () => {
  it("two aliases and the room id are planned as one room: members of every reference stay, and the next run has nothing to do", async () => {
    const room = hs.createRoom({ creator: BOT, alias: "#one:example.org" });
    hs.addAlias("#same:example.org", room);
    const { path } = await writeConfig(
      `    - { room: "#one:example.org", groups: [ { group: ga } ] }
    - { room: "#same:example.org", groups: [ { group: gb }, { group: gc, role: member } ] }
    - { room: "${room}", groups: [ { group: gc, role: moderator } ] }`,
    );

    const first = await sync(path);
    expect(first.code).toBe(EXIT_OK);
    expect(first.report.rooms).toHaveLength(1);
    const r = first.report.rooms[0]!;
    expect(r.roomId).toBe(room);
    // Named by an alias; the id comes last.
    expect(r.room).toBe("#one:example.org");
    expect(r.references).toEqual(["#one:example.org", "#same:example.org", room]);
    expect(r.notes.some((note) => note.includes("are one room"))).toBe(true);
    expect(r.actions.filter((a) => a.kind === "kick")).toEqual([]);
    // carol: member through #same, moderator through the room id: the highest role wins.
    expect(hs.powerLevels(room)!["users"]).toMatchObject({ [u("carol")]: 50 });
    expect(hs.members(room)).toMatchObject({ [u("alice")]: "invite", [u("bob")]: "invite", [u("carol")]: "invite" });

    // Accept the invites: a second and third run change nothing (planned apart, each reference
    // would kick the others' members, and the next run invite them back).
    for (const who of ["alice", "bob", "carol"]) hs.setMembership(room, u(who), "join");
    const before = writesTo(room);
    for (let i = 0; i < 2; i++) {
      const again = await sync(path);
      expect(again.code).toBe(EXIT_OK);
      expect(again.report.rooms[0]!.actions).toEqual([]);
    }
    expect(writesTo(room)).toBe(before);
    expect(hs.members(room)).toMatchObject({ [u("alice")]: "join", [u("bob")]: "join", [u("carol")]: "join" });
  });

  it("a reference that fails to resolve (not 'no such alias'): nobody its groups want is removed from the room it reaches", async () => {
    const room = hs.createRoom({ creator: BOT, alias: "#p:example.org" });
    hs.addAlias("#q:example.org", room);
    const { path } = await writeConfig(
      `    - { room: "#p:example.org", groups: [ { group: ga } ] }
    - { room: "#q:example.org", groups: [ { group: gb } ] }`,
    );
    expect((await sync(path)).code).toBe(EXIT_OK);
    for (const who of ["alice", "bob"]) hs.setMembership(room, u(who), "join");
    const before = writesTo(room);
    hs.failNext("directory", 1, 502);
    const r = await sync(path);
    expect(r.code).toBe(EXIT_FAILURES);
    expect(r.report.rooms.flatMap((x) => x.actions)).toEqual([]);
    expect(writesTo(room)).toBe(before);
    expect(hs.members(room)).toMatchObject({ [u("alice")]: "join", [u("bob")]: "join" });
  });

  it("--room with any one of the references syncs the merged room", async () => {
    const room = hs.createRoom({ creator: BOT, alias: "#two:example.org" });
    hs.addAlias("#deux:example.org", room);
    const { path } = await writeConfig(
      `    - { room: "#two:example.org", groups: [ { group: ga } ] }
    - { room: "#deux:example.org", groups: [ { group: gb } ] }`,
    );
    const r = await sync(path, "--room", "#deux:example.org");
    expect(r.code).toBe(EXIT_OK);
    expect(r.report.errors).toEqual([]);
    expect(r.report.rooms.map((x) => x.roomId)).toEqual([room]);
    expect(hs.members(room)).toMatchObject({ [u("alice")]: "invite", [u("bob")]: "invite" });
  });
});

describe("power levels as the room version's auth rules read them", () => {
  it("room v9: a user at the string level \"100\" is not kicked; one at \"25\" is; the new power levels carry integers", async () => {
    const room = hs.createRoom({
      creator: BOT,
      version: "9",
      alias: "#old:example.org",
      members: { [u("alice")]: "join", [u("boss")]: "join", [u("lo")]: "join" },
    });
    hs.putLegacyState(
      room,
      "m.room.power_levels",
      "",
      { users: { [BOT]: 100, [u("boss")]: "100", [u("lo")]: "25" }, users_default: "0", kick: "50", invite: "0", state_default: "50", events: { "m.room.power_levels": "100" } },
      BOT,
    );
    const { path } = await writeConfig(`    - { room: "#old:example.org", groups: [ { group: ga } ] }`);
    const r = await sync(path);
    expect(r.code).toBe(EXIT_OK);
    expect(r.report.rooms[0]!.error).toBeNull();
    expect(r.report.rooms[0]!.actions.map((a) => `${a.kind} ${"user" in a ? a.user : "?"} ${a.outcome ?? ""}`)).toEqual([
      `kick ${u("lo")} applied`,
      `set-power-levels ${u("lo")} applied`,
    ]);
    expect(hs.members(room)).toMatchObject({ [u("boss")]: "join", [u("lo")]: "leave", [u("alice")]: "join" });
    const pl = hs.powerLevels(room)!;
    expect(pl["users"]).toEqual({ [BOT]: 100, [u("boss")]: 100 });
    expect(pl["kick"]).toBe(50);
    expect(pl["users_default"]).toBe(0);
  });

  it("room v10 with a string level, or any room with a float or null level: a room error naming the entry, nothing changed, held removals kept", async () => {
    const v10 = hs.createRoom({ creator: BOT, alias: "#strict:example.org", members: { [u("boss")]: "join", [u("x")]: "join" } });
    hs.putLegacyState(v10, "m.room.power_levels", "", { users: { [BOT]: 100, [u("boss")]: "100" }, users_default: 0 }, BOT);
    const v5 = hs.createRoom({ creator: BOT, version: "5", alias: "#float:example.org", members: { [u("boss")]: "join", [u("y")]: "join" } });
    hs.putLegacyState(v5, "m.room.power_levels", "", { users: { [BOT]: 100, [u("boss")]: 99.5, [u("y")]: null } }, BOT);
    const { path, dataDir } = await writeConfig(
      `    - { room: "#strict:example.org", groups: [ { group: ga } ] }
    - { room: "#float:example.org", groups: [ { group: ga } ] }`,
    );
    // Something held from an earlier run must stay held while the room cannot be judged.
    const store = await openStore({ dataDir });
    try {
      const runId = await store.startRun({ trigger: "cli", dryRun: false, startedAt: new Date() });
      await store.replaceHeld(v10, "#strict:example.org", [{ userId: u("x"), reason: "held before" }], runId, new Date());
      await store.finishRun(runId, { outcome: "ok", finishedAt: new Date(), summary: null });
    } finally {
      await store.close();
    }

    const before = writesTo(v10) + writesTo(v5);
    const r = await sync(path);
    expect(r.code).toBe(EXIT_FAILURES);
    const byRoom = Object.fromEntries(r.report.rooms.map((x) => [x.room, x]));
    expect(byRoom["#strict:example.org"]!.error).toContain(`users["${u("boss")}"] is "100" (a string; room version 10 allows integers only)`);
    expect(byRoom["#float:example.org"]!.error).toContain(`users["${u("boss")}"] is 99.5 (not an integer)`);
    expect(byRoom["#float:example.org"]!.error).toContain(`users["${u("y")}"] is null`);
    for (const room of r.report.rooms) expect(room.actions).toEqual([]);
    expect(writesTo(v10) + writesTo(v5)).toBe(before);
    expect(hs.members(v10)).toMatchObject({ [u("boss")]: "join", [u("x")]: "join" });
    expect(hs.members(v5)).toMatchObject({ [u("boss")]: "join", [u("y")]: "join" });

    const after = await openStore({ dataDir });
    try {
      const held = await after.listHeld();
      expect(held.filter((h) => h.releasedAt === null).map((h) => h.userId)).toEqual([u("x")]);
    } finally {
      await after.close();
    }
  });
});

describe("a run with incomplete directory data", () => {
  it("ends degraded (exit 3), names the group, is recorded so, and removes nobody from the room depending on it", async () => {
    const room = hs.createRoom({ creator: BOT, alias: "#deg:example.org", members: { [u("stale")]: "join" } });
    const ok = hs.createRoom({ creator: BOT, alias: "#fine:example.org" });
    const { path, dataDir } = await writeConfig(
      `    - { room: "#deg:example.org", groups: [ { group: ga }, { group: ghost } ] }
    - { room: "#fine:example.org", groups: [ { group: gd } ] }`,
    );
    const r = await sync(path);
    expect(r.code).toBe(EXIT_DEGRADED);
    expect(r.report.outcome).toBe("degraded");
    expect(r.report.incompleteGroups).toEqual(["ghost"]);
    expect(hs.members(room)).toMatchObject({ [u("stale")]: "join", [u("alice")]: "invite" });
    expect(hs.members(ok)).toMatchObject({ [u("dave")]: "invite" });

    const out: string[] = [];
    const io: CliIo = { out: (t) => out.push(t), err: () => undefined, env: {}, cwd: dir, interactive: false };
    expect(await runCli(["sync", "--dry-run", "--config", path], io)).toBe(EXIT_DEGRADED);
    expect(out.join("\n")).toContain("DEGRADED directory group ghost was incomplete or missing");

    const store = await openStore({ dataDir });
    try {
      const runs = await store.listRuns(2);
      expect(runs.map((x) => x.outcome)).toEqual(["degraded", "degraded"]);
    } finally {
      await store.close();
    }
  });

  it("the note on users not removed gives a count and the first few, not every name", async () => {
    const members: Record<string, "join"> = {};
    for (let i = 0; i < 2500; i++) members[u(`m${String(i).padStart(4, "0")}`)] = "join";
    const room = hs.createRoom({ creator: BOT, alias: "#big:example.org", members });
    const { path } = await writeConfig(`    - { room: "#big:example.org", groups: [ { group: ga }, { group: ghost } ] }`);
    const r = await sync(path, "--dry-run");
    const note = r.report.rooms[0]!.notes.find((x) => x.startsWith("not removed (directory data incomplete)"));
    expect(note).toBe(
      `not removed (directory data incomplete): 2500 users, among them ${[0, 1, 2, 3, 4].map((i) => u(`m000${i}`)).join(", ")} and 2495 more`,
    );
    expect(hs.members(room)[u("m2499")]).toBe("join");
  });
});

describe("a run's time limit", () => {
  it("sync.maxRunMs: a run stuck on a room ends failed at its limit, starting no further room; the next run continues", async () => {
    const rooms = ["#slow1:example.org", "#slow2:example.org", "#slow3:example.org"].map((alias) => hs.createRoom({ creator: BOT, alias }));
    const { path } = await writeConfig(
      `    - { room: "#slow1:example.org", groups: [ { group: ga } ] }
    - { room: "#slow2:example.org", groups: [ { group: ga } ] }
    - { room: "#slow3:example.org", groups: [ { group: ga } ] }`,
      "sync: { maxRunMs: 1000 }",
      "concurrency: 1, requestTimeoutMs: 3000",
    );
    // One /state read hangs until the request deadline (3 s, well past the 1 s limit).
    hs.stallNext("state", 1, { apply: false });
    const r = await sync(path);
    expect(r.code).toBe(EXIT_FAILURES);
    expect(r.report.outcome).toBe("failed");
    expect(r.report.errors.join("\n")).toContain("the run reached its time limit (sync.maxRunMs 1000 ms)");
    // The stuck room failed; no room after it was started.
    expect(r.report.rooms.filter((x) => x.actions.length > 0)).toEqual([]);
    const invited = rooms.filter((id) => hs.members(id)[u("alice")] === "invite");
    expect(invited).toEqual([]);

    const next = await sync(path);
    expect(next.code).toBe(EXIT_OK);
    for (const id of rooms) expect(hs.members(id)[u("alice")]).toBe("invite");
  });
});

describe("what a run prints about the homeserver", () => {
  it("never shows the password in a homeserver URL's userinfo", async () => {
    // A port nothing listens on: the run fails, and its error names the homeserver.
    const closed = await new Promise<number>((resolve) => {
      const srv = createServer();
      srv.listen(0, "127.0.0.1", () => {
        const port = (srv.address() as AddressInfo).port;
        srv.close(() => resolve(port));
      });
    });
    const path = join(dir, "userinfo.yaml");
    await writeFile(
      path,
      `homeserver: { url: "http://bob:hunter2@127.0.0.1:${closed}", accessToken: ${token}, maxRetries: 0 }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - { room: "#nowhere:example.org", groups: [ { group: ga } ] }
log: { level: error }
`,
    );
    const r = await sync(path);
    expect(r.code).toBe(EXIT_FAILURES);
    const shown = JSON.stringify(r.report) + r.stderr;
    expect(shown).toContain("http://bob:***@127.0.0.1");
    expect(shown).not.toContain("hunter2");
  });
});
