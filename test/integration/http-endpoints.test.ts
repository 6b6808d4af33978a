import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/log.ts";
import type { RunReport } from "../../src/reconcile/report.ts";
import { startHttpEndpoints, type HttpEndpoints, type Role } from "../../src/service/http.ts";
import { Metrics } from "../../src/service/metrics.ts";

let endpoints: HttpEndpoints | undefined;
afterEach(async () => {
  await endpoints?.close();
  endpoints = undefined;
});

describe("/healthz, /readyz, /metrics", () => {
  it("reports liveness, readiness with reasons, and run metrics", async () => {
    const metrics = new Metrics({ processMetrics: false });
    let role: Role = "starting";
    let db: string | undefined = "connection refused";
    endpoints = await startHttpEndpoints({ address: "127.0.0.1", port: 0 }, metrics, {
      role: () => role,
      database: () => Promise.resolve(db),
      homeserver: () => Promise.resolve(undefined),
    }, silentLogger);
    expect(endpoints.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    expect((await fetch(`${endpoints.url}/healthz`)).status).toBe(200);
    const notReady = await fetch(`${endpoints.url}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({ ready: false, role: "starting", problems: ["database: connection refused", "role: starting"] });

    role = "standby";
    db = undefined;
    const ready = await fetch(`${endpoints.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, role: "standby", problems: [] });

    const report: RunReport = {
      dryRun: false,
      runId: 1,
      trigger: "schedule",
      startedAt: "2026-11-25T10:00:00.000Z",
      finishedAt: "2026-11-25T10:00:02.000Z",
      outcome: "ok",
      incompleteGroups: [],
      rooms: [
        {
          room: "#a:x",
          roomId: "!a:x",
          actions: [
            { kind: "invite", user: "@u:x", outcome: "applied" },
            { kind: "kick", user: "@v:x", reason: "r", outcome: "failed", error: "403" },
          ],
          held: [{ kind: "kick", user: "@w:x", reason: "r" }],
          notes: [],
          error: null,
        },
      ],
      errors: [],
      notes: [],
      counts: { created: 0, invites: 1, kicks: 1, powerLevels: 0, permissions: 0, state: 0, links: 0, held: 1, failed: 1, roomErrors: 0 },
    };
    metrics.recordRun(report);
    metrics.recordHomeserverResponse(429, 12);
    metrics.leader.set(1);
    const text = await (await fetch(`${endpoints.url}/metrics`)).text();
    expect(text).toContain('mgs_runs_total{trigger="schedule",outcome="ok",dry_run="false"} 1');
    expect(text).toContain('mgs_actions_total{kind="invite",outcome="applied"} 1');
    expect(text).toContain('mgs_actions_total{kind="kick",outcome="failed"} 1');
    expect(text).toContain("mgs_held_removals 1");
    expect(text).toContain("mgs_homeserver_rate_limited_total 1");
    expect(text).toContain("mgs_leader 1");
    expect(text).toMatch(/mgs_run_duration_seconds_sum\{trigger="schedule"\} 2/);
    expect((await fetch(`${endpoints.url}/nope`)).status).toBe(404);
  });
});
