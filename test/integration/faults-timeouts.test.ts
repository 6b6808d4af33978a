/**
 * Fault injection: the homeserver does not answer in time. The test homeserver stalls answers
 * (`stallNext`): with `apply: true` the change really happens and only the answer is lost, as
 * on a real server behind a slow proxy; with `apply: false` the request hangs before anything
 * happens. The client gives up after `homeserver.requestTimeoutMs` and does not retry a timeout
 * (only 429s are retried), so every change is applied at most once; a room whose state could
 * not be read is not touched at all; the next run converges and the one after plans nothing.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, type CliIo } from "../../src/main.ts";
import { FakeHomeserver, presetPowerLevels, type AppliedChange } from "../fakes/homeserver.ts";

const BOT = "@bot:example.org";
const u = (n: string): string => `@${n}:example.org`;
const DIRECTORY = ["a1", "a2", "a3", "a4", "a5", "a6"];
/**
 * Short, so the stalls cost little, but well above what a local answer takes even on a busy
 * machine: the test runs the CLI in the process that also serves the homeserver, and a
 * spurious timeout on a request that was not stalled would be a false failure.
 */
const REQUEST_TIMEOUT_MS = 1000;

let dir: string;
let hs: FakeHomeserver;
let config: string;

interface Report {
  outcome: string;
  errors: string[];
  rooms: {
    room: string;
    roomId: string | null;
    error: string | null;
    actions: { kind: string; user: string; from?: number | null; to?: number; outcome?: string; error?: string }[];
    held: unknown[];
  }[];
}

const levels = (users: Record<string, number>): Record<string, unknown> => presetPowerLevels({ [BOT]: 100, ...users });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-faults-timeouts-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
  const token = hs.registerUser(BOT);
  await writeFile(
    join(dir, "directory.yaml"),
    `users: [${DIRECTORY.join(", ")}]\ngroups:\n  - { id: g, members: [${DIRECTORY.join(", ")}] }\n  - { id: m, members: [a1] }\n`,
  );
  config = join(dir, "config.yaml");
  // concurrency 1: rooms are synced one after the other, in the order of their names, so the
  // first /state read is that of #a-unreadable.
  await writeFile(
    config,
    `homeserver: { url: ${hs.url}, accessToken: ${token}, concurrency: 1, requestTimeoutMs: ${REQUEST_TIMEOUT_MS} }
dataDir: ./data
idp: { kind: static, static: { file: directory.yaml } }
mapping:
  rooms:
    - { room: "#a-unreadable:example.org", groups: [ { group: g } ] }
    - { room: "#b-actions:example.org", groups: [ { group: g }, { group: m, role: moderator } ] }
sync: { maxRemovals: {} }
log: { level: error }
`,
  );
});

afterAll(async () => {
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

async function sync(): Promise<{ code: number; report: Report }> {
  const out: string[] = [];
  const io: CliIo = { out: (t) => out.push(t), err: () => undefined, env: {}, cwd: dir, interactive: false };
  const code = await runCli(["sync", "--json", "--config", config], io);
  return { code, report: JSON.parse(out.join("\n")) as Report };
}

/** Waits until `done()` holds: the server notices a client's disconnect a moment after it happened. */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!done()) throw new Error(`still not: ${what}`);
}

/** One key per change: the same change applied twice gives the same key. */
const changeKey = (c: AppliedChange): string => `${c.roomId} ${c.kind} ${c.target ?? JSON.stringify(c.content)}`;

const present = (roomId: string): string[] =>
  Object.entries(hs.members(roomId))
    .filter(([, m]) => m === "join" || m === "invite")
    .map(([user]) => user)
    .sort();

describe("fault: homeserver timeouts", () => {
  it("timed-out actions land at most once, an unreadable room is left alone, the next run converges", async () => {
    // #a-unreadable: a1 belongs; y1 and y2 (level 50) do not, and would be removed by a sync
    // that could read the room.
    const roomA = hs.createRoom({
      creator: BOT,
      alias: "#a-unreadable:example.org",
      members: { [u("a1")]: "join", [u("y1")]: "join", [u("y2")]: "join" },
      powerLevels: levels({ [u("y2")]: 50 }),
    });
    // #b-actions: a1 (a moderator by group m, at 0 now) and a2 belong; x1, x2 and x3 (level 50) do not.
    const roomB = hs.createRoom({
      creator: BOT,
      alias: "#b-actions:example.org",
      members: { [u("a1")]: "join", [u("a2")]: "join", [u("x1")]: "join", [u("x2")]: "join", [u("x3")]: "join" },
      powerLevels: levels({ [u("x3")]: 50 }),
    });
    const membersABefore = hs.members(roomA);
    const levelsABefore = hs.powerLevels(roomA);
    const changesBefore = hs.appliedChanges().length;

    // Six stalls: the /state read of #a-unreadable (1); in #b-actions the first kick (applied,
    // answer lost) and the second (hangs, not applied) (2); the power-levels PUT (applied, answer
    // lost) (1); the first invite (applied, answer lost) and the second (not applied) (2).
    hs.stallNext("state", 1, { apply: false });
    hs.stallNext("kick", 1, { apply: true });
    hs.stallNext("kick", 1, { apply: false });
    hs.stallNext("put_state", 1, { apply: true });
    hs.stallNext("invite", 1, { apply: true });
    hs.stallNext("invite", 1, { apply: false });
    hs.resetCounts();

    const first = await sync();
    expect(first.code).toBe(1);
    expect(first.report.outcome).toBe("failed");
    const [reportA, reportB] = first.report.rooms;
    expect(reportA!.room).toBe("#a-unreadable:example.org");
    expect(reportA!.error).toBe(`reading the state of ${roomA}: the homeserver at ${hs.url} did not answer in time`);
    expect(reportA!.actions).toEqual([]);
    expect(reportA!.held).toEqual([]);
    expect(reportB!.room).toBe("#b-actions:example.org");
    expect(reportB!.error).toBeNull();
    const timedOut = (what: string): { outcome: string; error: string } => ({
      outcome: "failed",
      error: `${what}: the homeserver at ${hs.url} did not answer in time`,
    });
    expect(reportB!.actions).toEqual([
      { kind: "kick", user: u("x1"), reason: expect.any(String), ...timedOut(`kicking ${u("x1")} from ${roomB}`) },
      { kind: "kick", user: u("x2"), reason: expect.any(String), ...timedOut(`kicking ${u("x2")} from ${roomB}`) },
      { kind: "kick", user: u("x3"), reason: expect.any(String), outcome: "applied" },
      { kind: "set-power-levels", user: u("a1"), from: 0, to: 50, ...timedOut(`changing power levels in ${roomB}`) },
      { kind: "set-power-levels", user: u("x3"), from: 50, to: 0, ...timedOut(`changing power levels in ${roomB}`) },
      { kind: "invite", user: u("a3"), ...timedOut(`inviting ${u("a3")} to ${roomB}`) },
      { kind: "invite", user: u("a4"), ...timedOut(`inviting ${u("a4")} to ${roomB}`) },
      { kind: "invite", user: u("a5"), outcome: "applied" },
      { kind: "invite", user: u("a6"), outcome: "applied" },
    ]);
    // Each action was sent once: no retry after a timeout.
    expect(hs.requestCounts()).toMatchObject({ whoami: 1, directory: 2, state: 2, kick: 3, put_state: 1, invite: 4, ban: 0 });
    // What the server did: the stalled-but-applied changes and the answered ones, each once.
    expect(hs.appliedChanges().slice(changesBefore).map((c) => [c.roomId, c.kind, c.target ?? null])).toEqual([
      [roomB, "kick", u("x1")],
      [roomB, "kick", u("x3")],
      [roomB, "power_levels", null],
      [roomB, "invite", u("a3")],
      [roomB, "invite", u("a5")],
      [roomB, "invite", u("a6")],
    ]);
    // The unreadable room: nobody removed, no level changed.
    expect(hs.members(roomA)).toEqual(membersABefore);
    expect(hs.powerLevels(roomA)).toEqual(levelsABefore);
    // The client gave up on every stalled request (its connection is closed).
    await until(() => hs.stalledRequests() === 0, "every stalled request was abandoned by the client");
    expect(hs.requestLog().filter((e) => e.status === null).map((e) => e.kind)).toEqual(["state", "kick", "kick", "put_state", "invite", "invite"]);

    // 2. No faults: what is left is done, once.
    hs.resetCounts();
    const second = await sync();
    expect(second.code, JSON.stringify(second.report, null, 2)).toBe(0);
    expect(second.report.outcome).toBe("ok");
    const byRoom = new Map(second.report.rooms.map((r) => [r.room, r]));
    expect(byRoom.get("#a-unreadable:example.org")!.actions).toEqual([
      { kind: "kick", user: u("y1"), reason: expect.any(String), outcome: "applied" },
      { kind: "kick", user: u("y2"), reason: expect.any(String), outcome: "applied" },
      { kind: "set-power-levels", user: u("y2"), from: 50, to: 0, outcome: "applied" },
      ...DIRECTORY.slice(1).map((n) => ({ kind: "invite", user: u(n), outcome: "applied" })),
    ]);
    // The stalled-but-applied changes (x1 kicked, the levels, a3 invited) are seen and not repeated.
    expect(byRoom.get("#b-actions:example.org")!.actions).toEqual([
      { kind: "kick", user: u("x2"), reason: expect.any(String), outcome: "applied" },
      { kind: "invite", user: u("a4"), outcome: "applied" },
    ]);
    expect(hs.requestCounts()).toMatchObject({ state: 2, kick: 3, put_state: 1, invite: 6 });

    // 3. Nothing left to do.
    hs.resetCounts();
    const changesBeforeThird = hs.appliedChanges().length;
    const third = await sync();
    expect(third.code).toBe(0);
    expect(third.report.rooms.map((r) => [r.room, r.actions, r.held, r.error])).toEqual([
      ["#a-unreadable:example.org", [], [], null],
      ["#b-actions:example.org", [], [], null],
    ]);
    expect(hs.appliedChanges()).toHaveLength(changesBeforeThird);
    expect(hs.requestCounts()).toMatchObject({ kick: 0, invite: 0, put_state: 0 });

    // The end state equals the directory, and no change was ever applied twice.
    for (const roomId of [roomA, roomB]) expect(present(roomId)).toEqual([BOT, ...DIRECTORY.map(u)].sort());
    expect(hs.powerLevels(roomA)!["users"]).toEqual({ [BOT]: 100 });
    expect(hs.powerLevels(roomB)!["users"]).toEqual({ [BOT]: 100, [u("a1")]: 50 });
    const made = hs.appliedChanges().slice(changesBefore);
    expect(made.map(changeKey).length).toBe(new Set(made.map(changeKey)).size);
    expect(made.filter((c) => c.kind === "power_levels").map((c) => c.roomId).sort()).toEqual([roomA, roomB].sort());
  });
});
