/**
 * Settings of the Azure provider pointed at a Graph stand-in: the same defaults for every
 * test (no owners, guests skipped, full pages, no retries, a 10 s deadline), each test
 * naming only what it is about.
 */
import type { AzureSettings } from "../../src/idp/azure.ts";
import type { GraphServer } from "./graph-server.ts";

export function azureSettings(
  graph: Pick<GraphServer, "tenantId" | "authorityHost" | "graphBaseUrl">,
  app: { clientId: string; secret: string },
  overrides: Partial<AzureSettings> = {},
): AzureSettings {
  return {
    tenantId: graph.tenantId,
    clientId: app.clientId,
    clientSecret: app.secret,
    authorityHost: graph.authorityHost,
    graphBaseUrl: graph.graphBaseUrl,
    readOwners: false,
    guests: "skip",
    extraAttributes: [],
    pageSize: 999,
    maxRetries: 0,
    timeoutMs: 10_000,
    ...overrides,
  };
}
