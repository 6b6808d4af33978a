/**
 * The service's own HTTP endpoints, on `serve.http` (default 127.0.0.1:9090):
 * - /healthz: the process is alive (200);
 * - /readyz: database reachable, homeserver reachable, and leader or standby (200, else 503),
 *   with the reasons as JSON;
 * - /metrics: Prometheus text.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../log.ts";
import { describeError } from "../result.ts";
import type { Metrics } from "./metrics.ts";

export type Role = "starting" | "leader" | "standby" | "stopping";

export interface ReadinessChecks {
  role(): Role;
  /** undefined when fine, else why not. */
  database(): Promise<string | undefined>;
  homeserver(): Promise<string | undefined>;
}

export interface HttpEndpoints {
  readonly url: string;
  close(): Promise<void>;
}

export async function startHttpEndpoints(
  listen: { address: string; port: number },
  metrics: Metrics,
  checks: ReadinessChecks,
  log: Logger,
): Promise<HttpEndpoints> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method !== "GET" && req.method !== "HEAD") return json(405, { error: "method not allowed" });
    if (path === "/healthz") return json(200, { status: "ok" });
    if (path === "/readyz") {
      void readiness(checks).then(
        (r) => json(r.ready ? 200 : 503, r),
        (err: unknown) => json(503, { ready: false, problems: [describeError(err)] }),
      );
      return;
    }
    if (path === "/metrics") {
      void metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": metrics.registry.contentType });
          res.end(text);
        },
        (err: unknown) => json(500, { error: describeError(err) }),
      );
      return;
    }
    json(404, { error: "not found" });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.address, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}`;
  log.info("health and metrics endpoints", { url });
  return {
    url,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function readiness(checks: ReadinessChecks): Promise<{ ready: boolean; role: Role; problems: string[] }> {
  const role = checks.role();
  const [db, hs] = await Promise.all([withTimeout(checks.database()), withTimeout(checks.homeserver())]);
  const problems = [
    ...(db !== undefined ? [`database: ${db}`] : []),
    ...(hs !== undefined ? [`homeserver: ${hs}`] : []),
    ...(role === "leader" || role === "standby" ? [] : [`role: ${role}`]),
  ];
  return { ready: problems.length === 0, role, problems };
}

function withTimeout(p: Promise<string | undefined>, ms = 5_000): Promise<string | undefined> {
  return Promise.race([p, new Promise<string>((r) => setTimeout(() => r(`no answer within ${ms} ms`), ms).unref())]);
}
