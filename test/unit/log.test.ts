/**
 * The log sink: pino JSON lines with a named logger per module, a human-readable mode,
 * secrets replaced at any depth, and matrix-bot-sdk's LogService writing into the same sink.
 */
import { createClientLogger, setLogLevel } from "@azure/logger";
import { LogService } from "matrix-bot-sdk";
import { AzureIdentityProvider } from "../../src/idp/azure.ts";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../src/log.ts";
import { routeSdkLogs } from "../../src/matrix/bot-sdk-gateway.ts";

function capture(level: "trace" | "debug" | "info", format: "json" | "pretty" = "json") {
  const lines: string[] = [];
  const log = createLogger({ level, format, write: (l) => lines.push(l), colorize: false });
  return { log, lines };
}

describe("logs", () => {
  it("writes one JSON object a line with level, time, logger name and message", () => {
    const { log, lines } = capture("info");
    log.child("ldap").info("searched", { entries: 3 });
    log.child("ldap").child("pool").warn("slow");
    expect(lines).toHaveLength(2);
    const first = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(first).toMatchObject({ level: "info", logger: "mgs.ldap", msg: "searched", entries: 3 });
    expect(Date.parse(first["time"] as string)).not.toBeNaN();
    expect(JSON.parse(lines[1]!)).toMatchObject({ level: "warn", logger: "mgs.ldap.pool", msg: "slow" });
    // one "logger" key per line, even for a grandchild
    expect(lines[1]!.match(/"logger"/g)).toHaveLength(1);
  });

  it("drops lines below the configured level", () => {
    const { log, lines } = capture("info");
    log.debug("hidden");
    log.trace("hidden");
    log.child("x").info("shown");
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(["shown"]);
  });

  it("replaces secret-looking fields at any depth, strips URL passwords and reduces errors", () => {
    const { log, lines } = capture("trace");
    const err = new Error("bind failed");
    log.error("failed", {
      accessToken: "syt_SECRET1",
      nested: { bindPassword: "SECRET2", list: [{ clientSecret: "SECRET3" }, err] },
      headers: { Authorization: "Bearer SECRET4" },
      url: new URL("postgres://mgs:SECRET5@db/mgs"),
      when: new Date(0),
    });
    const line = lines[0]!;
    for (const secret of ["SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5"]) expect(line).not.toContain(secret);
    const parsed = JSON.parse(line) as Record<string, unknown>;
    expect(parsed["url"]).toBe("postgres://mgs:***@db/mgs");
    expect(parsed["when"]).toBe("1970-01-01T00:00:00.000Z");
    expect(parsed["nested"]).toEqual({ bindPassword: "***", list: [{ clientSecret: "***" }, { name: "Error", message: "bind failed" }] });
    expect(line).not.toContain("at "); // no stack
  });

  it("has a human-readable mode for terminals", () => {
    const { log, lines } = capture("info", "pretty");
    log.child("serve").info("listening", { port: 9090, token: "syt_SECRET" });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: \[mgs\.serve\] listening/);
    expect(lines[0]).toContain('"port":9090');
    expect(lines[0]).not.toContain("syt_SECRET");
    expect(() => JSON.parse(lines[0]!) as unknown).toThrow();
  });

  it("routes matrix-bot-sdk's LogService into the same sink, under its own logger name", () => {
    const { log, lines } = capture("debug");
    routeSdkLogs(log.child("matrix-bot-sdk"));
    LogService.error("MatrixHttpClient", "request failed", { access_token: "syt_SDK_SECRET" });
    LogService.info("MatrixClientLite", "syncing");
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(parsed.map((p) => p["logger"])).toEqual(["mgs.matrix-bot-sdk", "mgs.matrix-bot-sdk"]);
    expect(parsed[0]).toMatchObject({ module: "MatrixHttpClient" });
    expect(parsed[1]).toMatchObject({ module: "MatrixClientLite", detail: "syncing" });
    expect(lines.join("\n")).not.toContain("syt_SDK_SECRET");
  });

  it("routes the Azure SDK's logger (AZURE_LOG_LEVEL) into the same sink, masked", () => {
    const { log, lines } = capture("debug");
    new AzureIdentityProvider({
      settings: {
        tenantId: "contoso.onmicrosoft.com",
        clientId: "11111111-1111-1111-1111-111111111111",
        clientSecret: "SECRET-AZ",
        authorityHost: "https://login.microsoftonline.com",
        graphBaseUrl: "https://graph.microsoft.com/v1.0",
        readOwners: true,
        guests: "skip",
        extraAttributes: [],
        pageSize: 999,
        maxRetries: 3,
        timeoutMs: 10_000,
      },
      userAttributes: ["uid"],
      log,
    });
    setLogLevel("info");
    try {
      createClientLogger("identity").info("token request to https://login.example/?access_token=SECRET-Q failed");
    } finally {
      setLogLevel(undefined);
    }
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ logger: "mgs.azure-sdk", msg: "azure sdk" });
    expect(lines[0]).toContain("access_token=***");
    expect(lines[0]).not.toContain("SECRET-Q");
  });
});
