/**
 * The `serve` process: metrics and health endpoints, the leader loop (with PostgreSQL), and
 * serve mode while this replica leads; stops cleanly on SIGTERM or SIGINT.
 */
import { sleepUnlessAborted } from "./clock.ts";
import { describeError } from "./result.ts";
import type { Config } from "./config/schema.ts";
import { createLogger } from "./log.ts";
import { EXIT_FAILURES, EXIT_OK } from "./exit-codes.ts";
import type { CliIo } from "./commands/terminal.ts";
import { observeHomeserverResponses } from "./matrix/bot-sdk-gateway.ts";
import { startHttpEndpoints, type HttpEndpoints, type Role } from "./service/http.ts";
import { waitForLeadership, type Leadership } from "./service/leader.ts";
import { Metrics } from "./service/metrics.ts";
import { ServeError, startServe, type ServeHandle } from "./service/serve.ts";

/**
 * `serve`: runs until SIGTERM or SIGINT, then stops cleanly and exits 0. With PostgreSQL
 * several replicas may run: only the one holding the leader lock serves; the others stand by
 * and take over when the leader's database session ends.
 */
export async function serveUntilSignal(config: Config, io: CliIo): Promise<number> {
  const log = createLogger({ level: config.log.level, format: config.log.format });
  const metrics = new Metrics();
  observeHomeserverResponses((status, ms) => metrics.recordHomeserverResponse(status, ms));
  let role: Role = "starting";
  let handle: ServeHandle | undefined;
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    io.err(`${signal}: stopping (the action under way finishes first)`);
    stop.abort();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  const stopped = new Promise<void>((r) => stop.signal.addEventListener("abort", () => r(), { once: true }));

  const http = config.serve?.http;
  let endpoints: HttpEndpoints | undefined;
  if (http?.enabled === true) {
    try {
      endpoints = await startHttpEndpoints({ address: http.address, port: http.port }, metrics, {
        role: () => role,
        database: async () => (handle === undefined ? (role === "standby" ? undefined : "not open yet") : probe(() => handle!.service.app.store.listRuns(1))),
        homeserver: async () => (handle === undefined ? undefined : probe(() => handle!.service.app.gateway.whoami())),
      }, log);
    } catch (err) {
      io.err(`cannot listen on ${http.address}:${http.port} for /healthz, /readyz and /metrics: ${describeError(err)}`);
      return EXIT_FAILURES;
    }
  }
  const retryMs = config.serve?.leaderRetryMs ?? 2_000;
  try {
    while (!stop.signal.aborted) {
      let leadership: Leadership | undefined;
      if (config.database !== undefined) {
        role = "standby";
        metrics.leader.set(0);
        leadership = await waitForLeadership({
          databaseUrl: config.database.url,
          log,
          retryMs,
          signal: stop.signal,
        });
        if (leadership === undefined) break;
        if (leadership.tookOver) {
          // Give the previous leader time to notice its loss (its keep-alive fails within one interval).
          const lostMeanwhile = await Promise.race([sleepUnlessAborted(retryMs, stop.signal).then(() => false), leadership.lost.then(() => true)]);
          if (stop.signal.aborted || lostMeanwhile) {
            await leadership.release();
            continue;
          }
        }
      }
      // The moment the lock is lost, the homeserver gateway refuses to send anything more.
      const mayAct = new AbortController();
      void leadership?.lost.then(() => mayAct.abort());
      try {
        handle = await startServe(config, {
          onRun: (r) => metrics.recordRun(r),
          onDirectoryRequest: (r) => metrics.recordDirectoryRequest(r),
          onDirectoryProbe: (outcome) => metrics.directoryProbes.inc({ outcome }),
          signal: mayAct.signal,
        });
      } catch (err) {
        await leadership?.release();
        io.err(err instanceof ServeError ? err.message : `cannot start: ${describeError(err)}`);
        return EXIT_FAILURES;
      }
      role = "leader";
      metrics.leader.set(1);
      io.err(`matrix-group-sync is serving (management room ${handle.managementRoomId}); stop with SIGTERM or Ctrl-C.`);
      const lost = await Promise.race([stopped.then(() => undefined), leadership?.lost ?? new Promise<never>(() => undefined)]);
      role = "stopping";
      metrics.leader.set(0);
      // Lost the lock: the gateway has sent nothing since (mayAct aborted); the run ends now.
      await handle.stop();
      handle = undefined;
      await leadership?.release();
      if (lost !== undefined) {
        io.err(`lost the leader lock (${lost}); standing by`);
        // Stand back so that a standby takes over rather than this process re-acquiring it.
        role = "standby";
        await sleepUnlessAborted(2 * retryMs, stop.signal);
      }
    }
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    await endpoints?.close();
  }
  return EXIT_OK;
}

async function probe(check: () => Promise<unknown>): Promise<string | undefined> {
  try {
    const r = await check();
    if (r !== null && typeof r === "object" && "ok" in r && r.ok === false) {
      const e = (r as { error?: { message?: unknown } }).error;
      return typeof e?.message === "string" ? e.message : "failed";
    }
    return undefined;
  } catch (err) {
    return describeError(err);
  }
}

