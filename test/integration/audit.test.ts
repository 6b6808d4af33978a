/**
 * The per-action audit is readable: a real run against the test homeserver is recorded in
 * the embedded store, read back (`listActions`) and shown by `!history`'s renderer in the
 * run report's words, every action with its outcome.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { settingsFrom } from "../../src/app.ts";
import { systemClock } from "../../src/clock.ts";
import { auditParts } from "../../src/commands/audit-parts.ts";
import { loadConfig } from "../../src/config/load.ts";
import { StaticIdentityProvider } from "../../src/idp/static.ts";
import { silentLogger } from "../../src/log.ts";
import { createBotSdkGateway } from "../../src/matrix/bot-sdk-gateway.ts";
import { runSync } from "../../src/reconcile/run.ts";
import { openStore } from "../../src/store/kysely-store.ts";
import type { Store } from "../../src/store/store.ts";
import { FakeHomeserver } from "../fakes/homeserver.ts";

const BOT = "@bot:example.org";
const u = (name: string): string => `@${name}:example.org`;

let dir: string;
let hs: FakeHomeserver;
let store: Store | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "mgs-audit-"));
  hs = await FakeHomeserver.start({ serverName: "example.org" });
});

afterEach(async () => {
  await store?.close();
  store = undefined;
  await hs.close();
  await rm(dir, { recursive: true, force: true });
});

describe("the audit of a run", () => {
  it("shows every recorded action of a real run per room with its outcome, and says so for a run that does not exist", async () => {
    const token = hs.registerUser(BOT);
    await writeFile(join(dir, "directory.json"), JSON.stringify({ users: ["alice", "bob", "carol"], groups: [{ id: "eng", members: ["alice", "bob"] }, { id: "leads", members: ["carol"] }] }));
    await writeFile(
      join(dir, "config.yaml"),
      `homeserver: { url: "${hs.url}", accessToken: ${token} }
idp: { kind: static, static: { file: directory.json } }
mapping:
  rooms:
    - { room: "#eng:example.org", groups: [ { group: eng }, { group: leads, role: moderator } ] }
    - { room: "#new:example.org", groups: [ { group: leads } ] }
rooms:
  defaults: { historyVisibility: shared }
`,
    );
    const loaded = loadConfig({ path: join(dir, "config.yaml"), env: {} });
    if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));
    const eng = hs.createRoom({ creator: BOT, alias: "#eng:example.org", members: { [u("alice")]: "join", [u("carol")]: "join", [u("mallory")]: "join" } });
    hs.putLegacyState(eng, "m.room.history_visibility", "", { history_visibility: "joined" }, BOT);
    store = await openStore({ dataDir: join(dir, "data") });
    const gateway = createBotSdkGateway({ homeserverUrl: hs.url, accessToken: token, requestTimeoutMs: 10_000, maxRetries: 5, log: silentLogger });
    const idp = new StaticIdentityProvider(join(dir, "directory.json"));
    const report = await runSync({ idp, gateway, store, clock: systemClock, log: silentLogger }, settingsFrom(loaded.config), { dryRun: false, trigger: "cli" });
    expect(report.outcome).toBe("ok");
    const runId = report.runId as number;

    const text = auditParts(await store.getRun(runId), runId, await store.listActions(runId))
      .map((p) => p.text)
      .join("\n");
    expect(text).toContain(`Run ${runId}: real run, cli, started`);
    expect(text).toMatch(new RegExp(`#eng:example.org \\(${eng.replace(/[!.]/g, "\\$&")}\\)`));
    expect(text).toMatch(/kick\s*\|?\s*@mallory:example.org.*done/);
    expect(text).toMatch(/level\s*\|?\s*@carol:example.org\s*\|?\s*0 → 50.*done/);
    expect(text).toMatch(/state\s*\|?\s*m.room.history_visibility\s*\|?\s*joined → shared.*done/);
    expect(text).toMatch(/invite\s*\|?\s*@bob:example.org.*done/);
    expect(text).toMatch(/create\s*\|?\s*#new:example.org\s*\|?\s*1 member\(s\) invited, !.*done/);

    expect(auditParts(await store.getRun(999), 999, []).map((p) => p.text).join("\n")).toContain("There is no run 999");
    await idp.close();
  });
});
