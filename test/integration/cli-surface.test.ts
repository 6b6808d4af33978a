/**
 * The CLI surface of the one command table, from the outside: every command the table offers
 * on the command line has its generated `--help` and `help <name>`; a recorded run read back
 * with status / history / release and applied by the next run (end state in the test
 * homeserver); `--json` for every command that can run here; named parameters and flag
 * aliases; each exit code provoked by a real situation; the token audit, masked.
 *
 * Each CLI call is a whole run of `runCli` (config loaded, store opened and closed) against
 * the test homeserver, a static directory file and an embedded PGlite data folder.
 */
import { join, resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { commandTable } from "../../src/commands/table.ts";
import type { Command } from "../../src/commands/command.ts";
import { runIn, startCliWorld, type CliResult, type CliWorld } from "../helpers/cli-world.ts";

const SERVER = "example.org";
const BOT = `@mgs-bot:${SERVER}`;
const u = (name: string): string => `@${name}:${SERVER}`;
const STAFF = `#staff:${SERVER}`;
const OPS = `#ops:${SERVER}`;
const OTHER = `#other:${SERVER}`;
const FIXTURES = resolve(import.meta.dirname, "../fixtures/import");

const cliCommands: readonly Command[] = commandTable().commands.filter((c) => c.surfaces.includes("cli"));
const roomOnly: readonly Command[] = commandTable().commands.filter((c) => !c.surfaces.includes("cli"));

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The usage line as a person reads the table: name, each flag, each parameter. */
function expectUsage(text: string, c: Command): void {
  const line = text.split("\n").find((l) => l.startsWith(`Usage: matrix-group-sync ${c.name}`));
  expect(line, `${c.name}: no usage line in\n${text}`).toBeDefined();
  const words = line!.slice("Usage: ".length).split(" ");
  expect(words.slice(0, 1 + c.name.split(" ").length).join(" ")).toBe(`matrix-group-sync ${c.name}`);
  for (const f of c.flags ?? []) expect(line).toContain(`[--${f.name}]`);
  for (const p of c.params) {
    const name = p.variadic === true ? `${p.name}…` : p.name;
    expect(line).toContain(p.optional === true ? `[${name}]` : `<${name}>`);
  }
}

describe("help, generated from the table", () => {
  it.each(cliCommands.map((c) => ({ name: c.name, c })))("$name --help and help $name print its usage line and what it does", async ({ c }) => {
    const dir = import.meta.dirname;
    const viaFlag = await runIn(dir, [...c.name.split(" "), "--help"]);
    expect(viaFlag.code, viaFlag.err).toBe(0);
    expect(viaFlag.err).toBe("");
    expectUsage(viaFlag.out, c);
    // `<command> --help` shows the description when there is one, else the summary.
    expect(viaFlag.out).toContain(c.description ?? c.summary);
    for (const f of c.flags ?? []) expect(viaFlag.out).toContain(`--${f.name}`);
    const viaHelp = await runIn(dir, ["help", ...c.name.split(" ")]);
    expect(viaHelp.code, viaHelp.err).toBe(0);
    expect(viaHelp.out).toBe(viaFlag.out);
  });

  it("help lists every CLI command with its usage and summary, and no room-only one", async () => {
    const help = await runIn(import.meta.dirname, ["help"]);
    expect(help.code).toBe(0);
    const listed = help.out.split("\n").filter((l) => l.startsWith("• matrix-group-sync "));
    expect(listed).toHaveLength(cliCommands.length);
    for (const c of cliCommands) {
      const line = listed.find((l) => new RegExp(`^• matrix-group-sync ${escape(c.name)}( [[<].*)? — `).test(l));
      expect(line, c.name).toBeDefined();
      expect(line).toContain(` — ${c.summary}`);
    }
    for (const c of roomOnly) expect(help.out).not.toMatch(new RegExp(`matrix-group-sync ${escape(c.name)}\\b`));
    // `--help` alone is the same listing, on stdout with 0; no command at all is bad usage.
    const bare = await runIn(import.meta.dirname, ["--help"]);
    expect(bare).toEqual({ code: 0, out: help.out, err: "" });
    const none = await runIn(import.meta.dirname, []);
    expect(none.code).toBe(2);
    expect(none.err).toBe(help.out);
  });

  // Every command of the table is offered on the CLI today (the management room has none of its
  // own), so there is no room-only command to type here; this runs once the table has one.
  it.skipIf(roomOnly.length === 0)("a room-only command on the CLI exits 2 saying it is a management-room command", async () => {
    for (const c of roomOnly) {
      const r = await runIn(import.meta.dirname, c.name.split(" "));
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/management-room command/);
    }
  });
});

/** The world every other test starts from: two mapped rooms, one unmapped, a guard of 1 removal. */
interface Setup {
  world: CliWorld;
  staffRoom: string;
  opsRoom: string;
  config: string;
}

const directoryYaml = `users: [alice, bob, carol]
groups:
  - { id: staff, members: [alice, bob] }
  - { id: ops, members: [carol] }
`;

function configYaml(url: string, token: string, opts: { directory?: string; rooms?: string; dataDir?: string } = {}): string {
  return `homeserver: { url: "${url}", accessToken: ${token} }
dataDir: ${opts.dataDir ?? "./data"}
idp: { kind: static, static: { file: ${opts.directory ?? "directory.yaml"} } }
mapping:
  rooms:
${
  opts.rooms ??
  `    - { room: "${STAFF}", groups: [ { group: staff } ] }
    - { room: "${OPS}", groups: [ { group: ops } ] }`
}
sync:
  maxRemovals: { count: 1 }
tokens:
  backend: synapse
  defaults: { uses: 1, expiry: 7d }
log: { level: error }
`;
}

let setup: Setup | undefined;

async function start(): Promise<Setup> {
  const world = await startCliWorld({ bot: BOT, serverName: SERVER, admin: true });
  await world.file("directory.yaml", directoryYaml);
  const staffRoom = world.hs.createRoom({
    creator: BOT,
    alias: STAFF,
    members: { [u("alice")]: "join", [u("mallory")]: "join", [u("trudy")]: "join" },
  });
  const opsRoom = world.hs.createRoom({ creator: BOT, alias: OPS });
  world.hs.createRoom({ creator: BOT, alias: OTHER, members: { [u("zed")]: "join" } });
  const config = await world.config("config.yaml", configYaml(world.hs.url, world.botToken));
  return { world, staffRoom, opsRoom, config };
}

afterEach(async () => {
  await setup?.world.close();
  setup = undefined;
});

function json<T = Record<string, unknown>>(r: CliResult): T {
  try {
    return JSON.parse(r.out) as T;
  } catch (e) {
    throw new Error(`not JSON (exit ${r.code}):\n${r.out}\n--- stderr:\n${r.err}`, { cause: e });
  }
}

describe("a recorded run, read back and released on the CLI", () => {
  it("status and history show the run and its held removals; release lets the next sync kick", async () => {
    setup = await start();
    const { world, config, staffRoom } = setup;
    const cli = (...args: string[]): Promise<CliResult> => world.cli(config, args);

    const first = await cli("sync");
    expect(first.code, first.err).toBe(0);
    const runId = Number(/\(run (\d+)\)/.exec(first.out)?.[1]);
    expect(runId, first.out).toBeGreaterThan(0);
    expect(first.out).toMatch(/held\s+@mallory:example.org/);
    expect(first.out).toMatch(/held\s+@trudy:example.org/);
    expect(first.out).toMatch(/invite\s+@bob:example.org\s+done/);
    expect(world.hs.members(staffRoom)).toMatchObject({ [u("mallory")]: "join", [u("trudy")]: "join", [u("bob")]: "invite" });

    const status = await cli("status");
    expect(status.code, status.err).toBe(0);
    expect(status.out).toMatch(new RegExp(`^\\s*${runId}\\s.*\\bcli\\b.*\\breal\\b.*\\bok\\b.*2 held`, "m"));
    expect(status.out).toContain("2 removal(s) held by the mass-removal guard");
    expect(status.out).toMatch(new RegExp(`${escape(STAFF)}.*@mallory:example.org.*\\bno\\b`));
    expect(status.out).toMatch(new RegExp(`${escape(STAFF)}.*@trudy:example.org.*\\bno\\b`));

    const history = await cli("history");
    expect(history.code, history.err).toBe(0);
    expect(history.out).toContain(`Run ${runId}: real run, cli`);
    expect(history.out).toMatch(/invite\s*\|?\s*@bob:example.org.*done/);
    expect(history.out).toMatch(/invite\s*\|?\s*@carol:example.org.*done/);
    expect(history.out).toMatch(/@mallory:example.org.*held/);
    expect(history.out).toMatch(/@trudy:example.org.*held/);
    const byId = await cli("history", String(runId));
    expect(byId).toEqual(history);

    const none = await cli("history", "99999");
    expect(none.code).toBe(4);
    expect(none.err).toMatch(/There is no run 99999/);

    // Nothing held in #ops; a room that is not mapped, and one that does not exist, are refused.
    const empty = await cli("release", OPS);
    expect(empty.code, empty.err).toBe(0);
    expect(empty.out).toBe(`Nothing is held in ${OPS}.`);
    const unmapped = await cli("release", OTHER);
    expect(unmapped.code).toBe(4);
    expect(unmapped.err).toMatch(/#other:example.org is not a room this service manages/);
    const missing = await cli("release", `#not-managed:${SERVER}`);
    expect(missing.code).toBe(4);
    expect(missing.err).toContain(`#not-managed:${SERVER}`);

    const released = await cli("release", STAFF, u("mallory"));
    expect(released.code, released.err).toBe(0);
    expect(released.out).toMatch(/Released 1 held removal\(s\) in #staff:example.org/);
    await world.withStore("data", async (store) => {
      const held = await store.listHeld(staffRoom);
      expect(held.map((h) => [h.userId, h.releasedAt !== null]).sort()).toEqual([
        [u("mallory"), true],
        [u("trudy"), false],
      ]);
    });
    // Released, not yet applied: nothing changed in the room.
    expect(world.hs.members(staffRoom)[u("mallory")]).toBe("join");

    const second = await cli("sync");
    expect(second.code, second.err).toBe(0);
    const secondId = Number(/\(run (\d+)\)/.exec(second.out)?.[1]);
    expect(world.hs.members(staffRoom)[u("mallory")]).toBe("leave");
    expect(world.hs.members(staffRoom)[u("trudy")]).toBe("join");
    expect(second.out).toMatch(/kick\s+@mallory:example.org.*done/);

    // Everything done to mallory across the two runs, newest first.
    const mallory = await cli("history", u("mallory"));
    expect(mallory.code, mallory.err).toBe(0);
    const rows = mallory.out.split("\n").filter((l) => l.includes(STAFF));
    expect(rows, mallory.out).toHaveLength(2);
    expect(rows[0]).toMatch(new RegExp(`\\b${secondId}\\b.*kick.*applied`));
    expect(rows[1]).toMatch(new RegExp(`\\b${runId}\\b.*held`));
    const nobody = await cli("history", u("nobody"));
    expect(nobody.code).toBe(0);
    expect(nobody.out).toMatch(/No run has done anything to @nobody:example.org/);

    const statusAfter = await cli("status", "--json");
    const after = json<{ runs: { id: number }[]; held: { user: string; released: boolean }[] }>(statusAfter);
    expect(after.runs.map((r) => r.id)).toEqual([secondId, runId]);
    expect(after.held.map((h) => [h.user, h.released])).toEqual([[u("trudy"), false]]);
  });
});

/** What each command prints with --json: one or more CLI runs and a check of the shape. */
interface JsonCase {
  readonly args: readonly string[];
  /** Default 0. */
  readonly code?: number;
  readonly check: (data: Record<string, unknown>) => void;
}

const isArray = (v: unknown): void => {
  expect(Array.isArray(v), JSON.stringify(v)).toBe(true);
};

describe("--json", () => {
  it("every CLI command that can run here prints parseable JSON of its shape; refusals carry status: refused", async () => {
    setup = await start();
    const { world, config, staffRoom } = setup;
    const imported = join(world.dir, "imported.yaml");
    const TOKEN = "cli-surface-json-token";
    // In the order they run: each may rely on the ones before (a run to read back, a token to show).
    const cases: Record<string, JsonCase[]> = {
      help: [{ args: ["help"], check: (d) => expect(d).toEqual({ status: "ok", message: expect.stringContaining("matrix-group-sync sync") }) }],
      token: [{ args: ["token"], check: (d) => expect(d).toEqual({ status: "ok", message: expect.stringContaining("matrix-group-sync token list") }) }],
      "check-config": [
        {
          args: ["check-config"],
          check: (d) => {
            expect(d["path"]).toBe(config);
            expect(d).toHaveProperty("config.mapping.rooms");
            isArray(d["sources"]);
            expect(d["overrides"]).toEqual([]);
            // The access token is a secret: redacted.
            expect(JSON.stringify(d)).not.toContain(world.botToken);
          },
        },
      ],
      migrate: [{ args: ["migrate"], check: (d) => expect(d).toEqual({ engine: expect.any(String), upToDate: true }) }],
      "crypto-reset": [
        { args: ["crypto-reset"], code: 4, check: (d) => expect(d).toEqual({ status: "refused", message: expect.stringContaining("--yes") }) },
        { args: ["crypto-reset", "--yes"], check: (d) => expect(d).toEqual({ deleted: 0 }) },
      ],
      idp: [
        {
          args: ["idp"],
          check: (d) => {
            const rooms = d["rooms"] as { room: string; members: { user: string }[] }[];
            expect(rooms.map((r) => r.room).sort()).toEqual([OPS, STAFF]);
            expect(rooms.find((r) => r.room === STAFF)!.members.map((m) => m.user).sort()).toEqual([u("alice"), u("bob")]);
          },
        },
      ],
      sync: [
        {
          args: ["sync"],
          check: (d) => {
            expect(d).toMatchObject({ dryRun: false, trigger: "cli", outcome: "ok", errors: [], counts: { invites: 2, held: 2, kicks: 0 } });
            expect(d["runId"]).toEqual(expect.any(Number));
            const staff = (d["rooms"] as { room: string; held: { user: string }[] }[]).find((r) => r.room === STAFF)!;
            expect(staff.held.map((h) => h.user).sort()).toEqual([u("mallory"), u("trudy")]);
          },
        },
      ],
      status: [
        {
          args: ["status"],
          check: (d) => {
            expect((d["runs"] as unknown[]).length).toBe(1);
            expect(d["runs"]).toEqual([expect.objectContaining({ trigger: "cli", dryRun: false, outcome: "ok" })]);
            expect((d["held"] as { user: string }[]).map((h) => h.user).sort()).toEqual([u("mallory"), u("trudy")]);
          },
        },
      ],
      history: [
        {
          args: ["history"],
          check: (d) => {
            expect(d["run"]).toEqual(expect.objectContaining({ id: expect.any(Number), dryRun: false, outcome: "ok" }));
            const actions = d["actions"] as { kind: string; user: string; outcome: string }[];
            expect(actions).toContainEqual(expect.objectContaining({ kind: "invite", user: u("bob"), outcome: "applied" }));
            expect(actions.filter((a) => a.outcome === "held").map((a) => a.user).sort()).toEqual([u("mallory"), u("trudy")]);
          },
        },
        { args: ["history", "99999"], code: 4, check: (d) => expect(d).toEqual({ status: "refused", message: expect.stringContaining("There is no run 99999") }) },
        {
          args: ["history", u("bob")],
          check: (d) => {
            expect(d["user"]).toBe(u("bob"));
            expect(d["actions"]).toEqual([expect.objectContaining({ kind: "invite", room: STAFF, outcome: "applied", dryRun: false })]);
          },
        },
      ],
      release: [
        { args: ["release", OPS], check: (d) => expect(d).toEqual({ room: OPS, released: 0 }) },
        { args: ["release", STAFF, u("trudy")], check: (d) => expect(d).toEqual({ room: STAFF, released: 1, notHeld: [] }) },
        { args: ["release", OTHER], code: 4, check: (d) => expect(d).toEqual({ status: "refused", message: expect.stringContaining("not a room this service manages") }) },
      ],
      managed: [
        {
          args: ["managed"],
          check: (d) => {
            expect(d["directoryRead"]).toBe(true);
            expect((d["rooms"] as { room: string; state: string }[]).map((r) => [r.room, r.state]).sort()).toEqual([
              [OPS, "managed"],
              [STAFF, "managed"],
            ]);
          },
        },
      ],
      joined: [
        {
          args: ["joined"],
          check: (d) => {
            const rooms = d["rooms"] as { roomId: string; managedAs: string | null }[];
            expect(rooms).toHaveLength(3);
            expect(rooms.find((r) => r.roomId === staffRoom)?.managedAs).toBe(STAFF);
          },
        },
      ],
      "invite-member": [
        {
          args: ["invite-member", STAFF, "@guest:other.org"],
          check: (d) => expect(d).toEqual({ room: STAFF, user: "@guest:other.org", role: "member", steps: ["invited @guest:other.org"] }),
        },
      ],
      "invite-admin": [
        {
          args: ["invite-admin", STAFF, "@boss:other.org"],
          check: (d) => expect(d).toMatchObject({ room: STAFF, user: "@boss:other.org", role: "admin" }),
        },
      ],
      "kick-member": [
        {
          args: ["kick-member", STAFF, "@guest:other.org"],
          check: (d) => expect(d).toMatchObject({ room: STAFF, user: "@guest:other.org", steps: expect.arrayContaining(["removed from the room"]) }),
        },
        { args: ["kick-member", STAFF, u("alice")], code: 4, check: (d) => expect(d).toMatchObject({ status: "refused" }) },
      ],
      // bob is invited, not joined: refused, nothing handed over.
      unmanage: [{ args: ["unmanage", STAFF, u("bob")], code: 4, check: (d) => expect(d).toEqual({ status: "refused", message: expect.stringContaining("has not joined") }) }],
      manage: [{ args: ["manage", STAFF], check: (d) => expect(d).toEqual({ room: STAFF, managed: true }) }],
      "token create": [
        {
          args: ["token", "create", "2", "7d", TOKEN],
          check: (d) => expect(d["token"]).toEqual({ token: TOKEN, valid: true, usesAllowed: 2, expiresAt: expect.any(String) }),
        },
      ],
      "token list": [{ args: ["token", "list"], check: (d) => expect(d).toEqual({ tokens: [expect.objectContaining({ token: TOKEN, valid: true })] }) }],
      "token show": [
        { args: ["token", "show", TOKEN], check: (d) => expect(d["token"]).toEqual(expect.objectContaining({ token: TOKEN })) },
        { args: ["token", "show", "no-such-token"], code: 4, check: (d) => expect(d).toEqual({ status: "refused", message: "There is no registration token no-such-token." }) },
      ],
      "token update": [{ args: ["token", "update", TOKEN, "5"], check: (d) => expect(d["token"]).toEqual(expect.objectContaining({ token: TOKEN, usesAllowed: 5 })) }],
      // Synapse has no revoked tokens: a failure, still JSON.
      "token unrevoke": [{ args: ["token", "unrevoke", TOKEN], code: 1, check: (d) => expect(d).toEqual({ status: "failed", message: expect.stringContaining("MAS") }) }],
      "token allow": [{ args: ["token", "allow", u("alice")], check: (d) => expect(d).toEqual({ entry: u("alice"), kind: "user" }) }],
      "token allowed": [{ args: ["token", "allowed"], check: (d) => expect(d).toEqual({ entries: [{ entry: u("alice"), kind: "user", source: "command", addedBy: "cli" }] }) }],
      "token disallow": [
        { args: ["token", "disallow", u("alice")], check: (d) => expect(d).toEqual({ removed: u("alice") }) },
        { args: ["token", "disallow", u("alice")], code: 4, check: (d) => expect(d).toMatchObject({ status: "refused" }) },
      ],
      "token delete-all": [{ args: ["token", "delete-all"], check: (d) => expect(d).toEqual({ wouldDelete: 1 }) }],
      "token delete": [{ args: ["token", "delete", TOKEN], check: (d) => expect(d).toEqual({ results: [{ token: TOKEN, ok: true, result: "deleted" }] }) }],
      "token audit": [
        {
          args: ["token", "audit"],
          check: (d) => {
            const entries = d["entries"] as { action: string; token: string | null }[];
            expect(entries[0]).toMatchObject({ action: "delete", token: expect.stringMatching(/^cli…\(22\) #[0-9a-f]{6}$/) as unknown });
            expect(entries.at(-1)).toMatchObject({ action: "create" });
            expect(JSON.stringify(d)).not.toContain(TOKEN);
          },
        },
      ],
      import: [
        {
          args: ["import", "inviterbot", join(FIXTURES, "inviterbot-ldap.yaml"), "--out", imported],
          check: (d) => {
            expect(d["written"]).toContain(imported);
            expect(d).toHaveProperty("report");
          },
        },
      ],
    };
    // `serve` runs until a signal: it has no outcome to print (serve.test.ts drives it).
    const notHere = new Set(["serve"]);
    expect(Object.keys(cases).sort()).toEqual(cliCommands.map((c) => c.name).filter((n) => !notHere.has(n)).sort());

    for (const [name, list] of Object.entries(cases)) {
      for (const c of list) {
        const r = await world.cli(config, [...c.args, "--json"]);
        expect(r.code, `${name}: ${c.args.join(" ")}\n${r.out}\n${r.err}`).toBe(c.code ?? 0);
        const data = json(r);
        expect(data, c.args.join(" ")).toBeTypeOf("object");
        c.check(data);
      }
    }
    // invite-member and kick-member changed the room as they said.
    expect(world.hs.members(staffRoom)["@guest:other.org"]).toBe("leave");
    expect(world.hs.members(staffRoom)["@boss:other.org"]).toBe("invite");
    expect(world.hs.registrationTokens().map((t) => t.token)).not.toContain(TOKEN);
  });
});

describe("named parameters and flag aliases", () => {
  it("sync --room R --dry-run is sync R --dry; idp --room A --room B is idp A B; release takes --room and repeated --user", async () => {
    setup = await start();
    const { world, config, staffRoom } = setup;
    const cli = (...args: string[]): Promise<CliResult> => world.cli(config, args);
    type Report = { dryRun: boolean; rooms: { room: string; actions: unknown[]; held: unknown[] }[]; outcome: string };

    const named = json<Report>(await cli("sync", "--room", STAFF, "--dry-run", "--json"));
    const positional = json<Report>(await cli("sync", STAFF, "--dry", "--json"));
    const word = json<Report>(await cli("sync", "dry", `--room=${STAFF}`, "--json"));
    expect(named.dryRun).toBe(true);
    expect(named.rooms.map((r) => r.room)).toEqual([STAFF]);
    expect(named.rooms[0]!.held).toHaveLength(2);
    expect(named.rooms).toEqual(positional.rooms);
    expect(word.rooms).toEqual(positional.rooms);
    expect([named.outcome, positional.outcome, word.outcome]).toEqual(["ok", "ok", "ok"]);
    // A dry run is a dry run, whichever way it was asked for.
    expect(world.hs.appliedChanges()).toEqual([]);
    const both = json<Report>(await cli("sync", "--dry-run", "--room", STAFF, "--room", OPS, "--json"));
    expect(both.rooms.map((r) => r.room).sort()).toEqual([OPS, STAFF]);

    const idpNamed = await cli("idp", "--room", STAFF, "--room", OPS, "--json");
    const idpPositional = await cli("idp", STAFF, OPS, "--json");
    expect(idpNamed.code, idpNamed.err).toBe(0);
    expect(json(idpNamed)).toEqual(json(idpPositional));
    expect((json<{ rooms: { room: string }[] }>(idpNamed).rooms).map((r) => r.room).sort()).toEqual([OPS, STAFF]);
    const idpOne = json<{ rooms: { room: string }[] }>(await cli("idp", "--room", OPS, "--json"));
    expect(idpOne.rooms.map((r) => r.room)).toEqual([OPS]);
    // By id as well as by alias.
    expect(json<{ rooms: { room: string }[] }>(await cli("idp", "--room", staffRoom, "--json")).rooms.map((r) => r.room)).toEqual([STAFF]);

    expect((await cli("sync")).code).toBe(0);
    const released = await cli("release", "--room", STAFF, "--user", u("mallory"), "--user", u("trudy"), "--json");
    expect(released.code, released.err).toBe(0);
    expect(json(released)).toEqual({ room: STAFF, released: 2, notHeld: [] });
  });

  it("an unknown flag, a missing argument or a value of the wrong form exits 2 with the usage line", async () => {
    setup = await start();
    const { world, config } = setup;
    const cli = (...args: string[]): Promise<CliResult> => world.cli(config, args);
    // The whole usage line, as the table defines the command: name, flags, parameters.
    const usage = (name: string): RegExp => {
      const c = commandTable().find(name)!;
      const param = (p: Command["params"][number]): string => {
        const n = p.variadic === true ? `${p.name}…` : p.name;
        return p.optional === true ? `[${n}]` : `<${n}>`;
      };
      const words = [`matrix-group-sync ${c.name}`, ...(c.flags ?? []).map((f) => `[--${f.name}]`), ...c.params.map(param)];
      return new RegExp(`^Usage: ${escape(words.join(" "))}$`, "m");
    };
    const cases: { args: string[]; command: string; says: RegExp }[] = [
      { args: ["sync", "--dyr"], command: "sync", says: /unknown flag '--dyr' \(did you mean --dry\?\)/ },
      { args: ["sync", "--frobnicate"], command: "sync", says: /unknown flag '--frobnicate'; flags: --dry/ },
      { args: ["status", "--verbose"], command: "status", says: /unknown flag '--verbose'; this command has no flags/ },
      { args: ["token", "delete-all", "--yse"], command: "token delete-all", says: /did you mean --yes\?/ },
      { args: ["release"], command: "release", says: /^missing room$/m },
      { args: ["invite-member", STAFF], command: "invite-member", says: /^missing user$/m },
      { args: ["token", "show"], command: "token show", says: /^missing token$/m },
      { args: ["token", "delete"], command: "token delete", says: /missing token \(at least one\)/ },
      { args: ["release", "not-a-room"], command: "release", says: /^room: / },
      { args: ["release", STAFF, "mallory"], command: "release", says: /^user: / },
      { args: ["release", "--room", STAFF, "--room", OPS], command: "release", says: /--room is given twice/ },
      { args: ["release", "--room"], command: "release", says: /--room needs a value/ },
      { args: ["status", "extra"], command: "status", says: /unexpected argument: 'extra'/ },
      // The command's own check of the form: neither a run number nor a user id.
      { args: ["history", "yesterday"], command: "history", says: /"yesterday" is neither a run number nor a user id/ },
    ];
    for (const c of cases) {
      const r = await cli(...c.args);
      const what = `${c.args.join(" ")}\n${r.out}\n${r.err}`;
      expect(r.code, what).toBe(2);
      expect(r.err, what).toMatch(c.says);
      expect(r.err, what).toMatch(usage(c.command));
    }
    // Nothing ran.
    await world.withStore("data", async (store) => expect(await store.listRuns(10)).toEqual([]));

    const typo = await runIn(world.dir, ["stauts"]);
    expect(typo.code).toBe(2);
    expect(typo.err).toMatch(/unknown command: stauts\. Did you mean "status"\?/);
  });
});

describe("exit codes, each from a real situation", () => {
  it("0 done, 1 failed, 2 bad config, 3 degraded, 4 refused", async () => {
    setup = await start();
    const { world, config, staffRoom, opsRoom } = setup;

    // 0: nothing run yet is no error.
    const fresh = await world.cli(config, ["status"]);
    expect(fresh.code, fresh.err).toBe(0);
    expect(fresh.out).toMatch(/No run yet\./);
    const noHistory = await world.cli(config, ["history", "--json"]);
    expect(noHistory.code).toBe(0);
    expect(json(noHistory)).toEqual({ run: null, actions: [] });

    // 2: a config key that does not exist, named with its path; nothing opened.
    const badConfig = await world.config("bad.yaml", `${configYaml(world.hs.url, world.botToken)}colour: blue\n`);
    const bad = await world.cli(badConfig, ["status"]);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/\/colour: unknown key/);

    // 3: the staff group could not be read completely: invites go out, nobody is removed.
    await world.file(
      "directory-incomplete.yaml",
      directoryYaml.replace("{ id: staff, members: [alice, bob] }", '{ id: staff, members: [alice, bob], incomplete: "size limit exceeded" }'),
    );
    const degradedConfig = await world.config("degraded.yaml", configYaml(world.hs.url, world.botToken, { directory: "directory-incomplete.yaml" }));
    const degraded = await world.cli(degradedConfig, ["sync"]);
    expect(degraded.code, `${degraded.out}\n${degraded.err}`).toBe(3);
    expect(degraded.out).toMatch(/DEGRADED directory group staff was incomplete or missing/);
    expect(world.hs.members(staffRoom)).toMatchObject({ [u("mallory")]: "join", [u("trudy")]: "join", [u("bob")]: "invite" });
    expect(world.hs.members(opsRoom)[u("carol")]).toBe("invite");
    const degradedJson = await world.cli(degradedConfig, ["sync", "--json"]);
    expect(degradedJson.code).toBe(3);
    expect(json(degradedJson)).toMatchObject({ outcome: "degraded", incompleteGroups: ["staff"] });
    const status = json<{ runs: { outcome: string }[] }>(await world.cli(config, ["status", "--json"]));
    expect(status.runs.map((r) => r.outcome)).toEqual(["degraded", "degraded"]);

    // 1: a mapped room the bot is not in fails that room; the run fails, the others still sync.
    world.hs.createRoom({ creator: u("owner"), alias: `#closed:${SERVER}` });
    await world.file("directory-more.yaml", `${directoryYaml}  - { id: newcomers, members: [dave] }\n`.replace("users: [alice, bob, carol]", "users: [alice, bob, carol, dave]"));
    const failingConfig = await world.config(
      "failing.yaml",
      configYaml(world.hs.url, world.botToken, {
        directory: "directory-more.yaml",
        rooms: `    - { room: "#closed:${SERVER}", groups: [ { group: newcomers } ] }\n    - { room: "${OPS}", groups: [ { group: ops }, { group: newcomers } ] }`,
      }),
    );
    const failed = await world.cli(failingConfig, ["sync"]);
    expect(failed.code, `${failed.out}\n${failed.err}`).toBe(1);
    expect(failed.out).toMatch(/#closed:example.org.*\n\s+ERROR .*M_FORBIDDEN/);
    expect(world.hs.members(opsRoom)[u("dave")]).toBe("invite");
    // An unreadable directory: idp fails, and says why.
    await world.file("directory-broken.yaml", "groups: [ { id: x, members: 3 } ]\n");
    const brokenConfig = await world.config("broken.yaml", configYaml(world.hs.url, world.botToken, { directory: "directory-broken.yaml" }));
    const broken = await world.cli(brokenConfig, ["idp"]);
    expect(broken.code).toBe(1);
    expect(`${broken.out}\n${broken.err}`).toMatch(/The directory could not be read: .*directory-broken.yaml/);

    // 4: understood, not done: nothing changed.
    const before = world.hs.appliedChanges().length;
    for (const args of [["history", "99999"], ["manage", OTHER], ["sync", OTHER], ["token", "show", "nope"], ["token", "update", "nope"]]) {
      const r = await world.cli(config, args);
      expect(r.code, `${args.join(" ")}\n${r.out}\n${r.err}`).toBe(4);
      expect(r.err, args.join(" ")).not.toBe("");
    }
    expect(world.hs.appliedChanges().length).toBe(before);
  });
});

describe("token audit", () => {
  const ALPHA = "alpha-token-0001";
  const BRAVO = "bravo-token-0002";

  it("lists token commands newest first with masked strings, and filters by token", async () => {
    setup = await start();
    const { world, config } = setup;
    const token = async (...args: string[]): Promise<CliResult> => {
      const r = await world.cli(config, ["token", ...args]);
      expect(r.code, `token ${args.join(" ")}\n${r.out}\n${r.err}`).toBe(0);
      return r;
    };
    await token("create", "1", "7d", ALPHA);
    await token("create", "2", "7d", BRAVO);
    await token("show", ALPHA);
    await token("update", BRAVO, "3");
    await token("delete", ALPHA);
    expect(world.hs.registrationTokens().map((t) => t.token)).toEqual([BRAVO]);

    const all = await token("audit");
    expect(all.out).toMatch(/^5 token action\(s\), newest first:/);
    const rows = all.out.split("\n").filter((l) => /^\s*\|?\s*\d{4}-\d\d-\d\dT/.test(l));
    const actions = rows.map((l) => {
      const m = /\b(create|show|update|delete|list)\b.*?\b(alp…\(16\)|bra…\(16\))/.exec(l);
      expect(m, l).not.toBeNull();
      return `${m![1]!} ${m![2]!}`;
    });
    expect(actions).toEqual(["delete alp…(16)", "update bra…(16)", "show alp…(16)", "create bra…(16)", "create alp…(16)"]);
    expect(rows.every((l) => /\bcli\b.*\bcli\b/.test(l))).toBe(true);
    // Never the whole token, in text or JSON.
    for (const text of [all.out, (await token("audit", "--json")).out]) {
      expect(text).not.toContain(ALPHA);
      expect(text).not.toContain(BRAVO);
    }

    const alpha = json<{ entries: { action: string; token: string; result: string; at: string }[] }>(await token("audit", ALPHA, "--json"));
    expect(alpha.entries.map((e) => [e.action, e.token, e.result])).toEqual([
      ["delete", expect.stringMatching(/^alp…\(16\) #[0-9a-f]{6}$/), "deleted"],
      ["show", expect.stringMatching(/^alp…\(16\) #[0-9a-f]{6}$/), "ok"],
      ["create", expect.stringMatching(/^alp…\(16\) #[0-9a-f]{6}$/), "ok"],
    ]);
    // One digest for one token, another for another token that starts alike.
    expect(new Set(alpha.entries.map((e) => e.token)).size).toBe(1);
    const times = alpha.entries.map((e) => Date.parse(e.at));
    expect([...times].sort((a, b) => b - a)).toEqual(times);
    const bravoText = await token("audit", BRAVO);
    expect(bravoText.out).toMatch(/^2 token action\(s\), newest first:/);
    expect(bravoText.out).not.toContain("alp…");
    expect(bravoText.out).not.toContain(BRAVO);
    const nothing = await token("audit", "charlie-token-03");
    expect(nothing.out).toBe("The token audit has nothing on charlie-token-03.");
  });

  // Found by this test (fixed): the audit stored a token only as its first 3 characters and
  // length, so `token audit TOKEN` listed another token with the same start and length as this
  // one's history. The mask now carries a short digest of the token.
  it("token audit TOKEN does not list another token that shares its first characters and length", async () => {
    setup = await start();
    const { world, config } = setup;
    for (const args of [["create", "1", "7d", ALPHA], ["create", "1", "7d", "alpha-token-0009"], ["delete", "alpha-token-0009"]]) {
      expect((await world.cli(config, ["token", ...args])).code).toBe(0);
    }
    const alpha = json<{ entries: { action: string }[] }>(await world.cli(config, ["token", "audit", ALPHA, "--json"]));
    // ALPHA was only created; the delete was of alpha-token-0009.
    expect(alpha.entries.map((e) => e.action)).toEqual(["create"]);
  });
});
