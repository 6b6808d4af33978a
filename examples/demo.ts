/**
 * `npm run demo`: the main job on embedded defaults, end to end, with nothing to install.
 *
 * Starts the test homeserver (the stand-in our tests use) with a few sample rooms, points the
 * sample config (examples/config.yaml, directory examples/directory.yaml) at it through the
 * environment, and runs the real CLI three times on an embedded PGlite database:
 *   1. `sync --dry-run`  — what would change (invites, kicks, level changes, a held removal,
 *                          template corrections, a room and a space to create, space links);
 *   2. `sync`            — apply it;
 *   3. `sync --dry-run`  — nothing left to do (the held removal stays held until released).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runCli } from "../src/main.ts";
import { FakeHomeserver } from "../test/fakes/homeserver.ts";

const here = dirname(fileURLToPath(import.meta.url));
const BOT = "@mgs-bot:example.org";
const u = (name: string): string => `@${name}:example.org`;

const hs = await FakeHomeserver.start({ serverName: "example.org" });
const dataDir = await mkdtemp(join(tmpdir(), "mgs-demo-"));
let exitCode: number;
try {
  const token = hs.registerUser(BOT);
  // #engineering: carol leads (should be moderator), bob is missing, mallory left the company,
  // a guest from another server is left alone.
  // Its settings drifted from the room template: history visible to joined members only, a
  // hand-made name, and nobody below 100 may invite.
  const engineering = hs.createRoom({
    creator: BOT,
    alias: "#engineering:example.org",
    name: "eng",
    members: { [u("alice")]: "join", [u("carol")]: "join", [u("mallory")]: "join", "@guest:partner.example": "join" },
  });
  hs.putLegacyState(engineering, "m.room.history_visibility", "", { history_visibility: "joined" }, BOT);
  // #design and the space #company do not exist yet: the real run creates them.
  // #everyone: most of the staff already joined, but five former staff are still here —
  // more than the guard allows in one run (maxRemovals), so those kicks are held.
  hs.createRoom({
    creator: BOT,
    alias: "#everyone:example.org",
    members: Object.fromEntries(
      [...["alice", "bob", "carol", "dave", "erin"], ...["trent", "victor", "walter", "oscar", "peggy"]].map((n) => [u(n), "join"]),
    ),
  });
  // #ops: managed by the naming convention (groups "xxxopsxxxexample.org" and its "_owners").
  // A room version 12 room: its creator has unlimited power and is never written into `users`.
  hs.createRoom({
    creator: u("heidi"),
    version: "12",
    additionalCreators: [BOT],
    alias: "#ops:example.org",
    members: { [BOT]: "join", [u("frank")]: "join", [u("dave")]: "invite" },
  });

  const env = {
    ...process.env,
    MGS_CONFIG: join(here, "config.yaml"),
    MGS_HOMESERVER_URL: hs.url,
    MGS_HOMESERVER_ACCESS_TOKEN: token,
    MGS_DATA_DIR: dataDir,
    MGS_LOG_LEVEL: "warn",
  };
  const io = {
    out: (t: string) => process.stdout.write(t + "\n"),
    err: (t: string) => process.stderr.write(t.endsWith("\n") ? t : t + "\n"),
    env,
    cwd: process.cwd(),
    interactive: false,
  };
  const step = async (title: string, args: string[]): Promise<number> => {
    process.stdout.write(`\n=== ${title}: matrix-group-sync ${args.join(" ")} ===\n`);
    return runCli(args, io);
  };

  const first = await step("1. What would change", ["sync", "--dry-run"]);
  const applied = await step("2. Apply it", ["sync"]);
  const second = await step("3. Again: nothing left to do", ["sync", "--dry-run"]);
  process.stdout.write(
    `\nThe test homeserver answered ${hs.totalRequests()} requests. Data folder: ${dataDir} (removed on exit).\n`,
  );
  exitCode = Math.max(first, applied, second);
} finally {
  await hs.close();
  await rm(dataDir, { recursive: true, force: true });
}
process.exitCode = exitCode;
