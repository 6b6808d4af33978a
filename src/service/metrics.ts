/**
 * Prometheus metrics (prom-client), one registry per process. Runs, actions and held
 * removals are recorded from each run's report; homeserver requests from the transport;
 * directory requests from the identity provider.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { DirectoryRequest } from "../idp/types.ts";
import type { RunReport } from "../reconcile/report.ts";

export class Metrics {
  readonly registry = new Registry();
  readonly runs = new Counter({ name: "mgs_runs_total", help: "Sync runs by trigger and outcome", labelNames: ["trigger", "outcome", "dry_run"], registers: [this.registry] });
  readonly runSeconds = new Histogram({
    name: "mgs_run_duration_seconds",
    help: "Duration of sync runs",
    labelNames: ["trigger"],
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 1800],
    registers: [this.registry],
  });
  readonly actions = new Counter({ name: "mgs_actions_total", help: "Actions by kind and outcome", labelNames: ["kind", "outcome"], registers: [this.registry] });
  readonly held = new Gauge({ name: "mgs_held_removals", help: "Removals held by the mass-removal guard after the last run", registers: [this.registry] });
  readonly homeserverRequests = new Counter({ name: "mgs_homeserver_requests_total", help: "Homeserver requests by HTTP status", labelNames: ["status"], registers: [this.registry] });
  readonly homeserverSeconds = new Histogram({
    name: "mgs_homeserver_request_duration_seconds",
    help: "Homeserver request latency",
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [this.registry],
  });
  readonly directoryRequests = new Counter({
    name: "mgs_directory_requests_total",
    help: "Directory requests (LDAP binds and pages, Graph GETs) by provider, operation and outcome",
    labelNames: ["provider", "operation", "outcome"],
    registers: [this.registry],
  });
  readonly directorySeconds = new Histogram({
    name: "mgs_directory_request_duration_seconds",
    help: "Directory request latency",
    labelNames: ["provider", "operation"],
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [this.registry],
  });
  readonly rateLimited = new Counter({ name: "mgs_homeserver_rate_limited_total", help: "429 answers seen from the homeserver", registers: [this.registry] });
  readonly incompleteGroups = new Gauge({
    name: "mgs_directory_groups_incomplete",
    help: "Mapped groups that were incomplete or missing in the last run (their rooms got no removals)",
    registers: [this.registry],
  });
  readonly directoryProbes = new Counter({
    name: "mgs_directory_probes_total",
    help: "Directory change probes (serve.pollIntervalMs) by outcome: unchanged, changed, failed",
    labelNames: ["outcome"],
    registers: [this.registry],
  });
  readonly leader = new Gauge({ name: "mgs_leader", help: "1 when this process is the leader, 0 on standby", registers: [this.registry] });

  constructor(opts: { processMetrics?: boolean } = {}) {
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: "mgs_" });
  }

  recordRun(report: RunReport): void {
    this.runs.inc({ trigger: report.trigger, outcome: report.outcome, dry_run: String(report.dryRun) });
    this.runSeconds.observe({ trigger: report.trigger }, (Date.parse(report.finishedAt) - Date.parse(report.startedAt)) / 1000);
    for (const room of report.rooms) {
      for (const a of room.actions) this.actions.inc({ kind: a.kind, outcome: a.outcome ?? "planned" });
      if (room.error !== null) this.actions.inc({ kind: "room", outcome: "failed" });
    }
    if (!report.dryRun) this.held.set(report.counts.held);
    this.incompleteGroups.set(report.incompleteGroups.length);
  }

  recordDirectoryRequest(request: DirectoryRequest): void {
    this.directoryRequests.inc({ provider: request.provider, operation: request.operation, outcome: request.outcome });
    this.directorySeconds.observe({ provider: request.provider, operation: request.operation }, request.seconds);
  }

  recordHomeserverResponse(status: number, ms: number): void {
    this.homeserverRequests.inc({ status: String(status) });
    this.homeserverSeconds.observe(ms / 1000);
    if (status === 429) this.rateLimited.inc();
  }
}
