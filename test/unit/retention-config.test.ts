/** Config `retention`: periods as written, what is refused and why, and the cut-off times they give. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatConfigError, loadConfig, type ConfigResult } from "../../src/config/load.ts";
import { retentionMs } from "../../src/config/schema.ts";
import { retentionCutoffs } from "../../src/store/retention.ts";

const MINIMAL = `
homeserver: { url: http://127.0.0.1:8008, accessToken: t }
idp: { kind: static, static: { file: directory.yaml } }
`;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "mgs-retention-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function load(yaml: string, env: NodeJS.ProcessEnv = {}): ConfigResult {
  const path = join(dir, "config.yaml");
  writeFileSync(path, yaml);
  return loadConfig({ path, env, cwd: dir });
}

function errors(result: ConfigResult): string[] {
  return result.ok ? [] : result.errors.map(formatConfigError);
}

describe("retention in the config", () => {
  it("defaults to 90 days of runs and a year of token audit", () => {
    const r = load(MINIMAL);
    expect(errors(r)).toEqual([]);
    if (r.ok) expect(r.config.retention).toEqual({ runs: "90d", tokenAudit: "365d" });
  });

  it("takes periods in the expiry style, and never", () => {
    const r = load(`${MINIMAL}retention: { runs: 2w3d, tokenAudit: never }\n`);
    expect(errors(r)).toEqual([]);
    if (r.ok) expect(r.config.retention).toEqual({ runs: "2w3d", tokenAudit: "never" });
    const fromEnv = load(MINIMAL, { MGS_RETENTION_RUNS: "30d", MGS_RETENTION_TOKEN_AUDIT: "NEVER" });
    expect(errors(fromEnv)).toEqual([]);
    if (fromEnv.ok) expect(fromEnv.config.retention).toEqual({ runs: "30d", tokenAudit: "NEVER" });
  });

  it("refuses what is not a period, less than a day (3m is minutes) or over 100 years, naming the key", () => {
    const r = load(`${MINIMAL}retention:\n  runs: 3m\n  tokenAudit: 1 year\n`);
    const e = r.ok ? [] : r.errors;
    expect(e.map((x) => [x.path, x.message, x.line])).toEqual([
      ["/retention/runs", `"3m" is shorter than a day (m means minutes): keep at least 1d, or never`, 5],
      ["/retention/tokenAudit", `"1 year" is not a retention period: use e.g. 90d, 52w, 36h, or never`, 6],
    ]);
    expect(errors(load(`${MINIMAL}retention: { runs: 0d }\n`))[0]).toMatch(/retention\/runs.*shorter than a day/);
    expect(errors(load(`${MINIMAL}retention: { runs: 36501d }\n`))[0]).toMatch(/retention\/runs.*longer than 100 years/);
    expect(errors(load(`${MINIMAL}retention: { run: 90d }\n`))[0]).toMatch(/retention/);
    expect(errors(load(MINIMAL, { MGS_RETENTION_RUNS: "5m" }))[0]).toMatch(/MGS_RETENTION_RUNS/);
  });

  it("retentionMs reads every unit, and nothing else", () => {
    expect(retentionMs("90d")).toBe(90 * 86_400_000);
    expect(retentionMs("1w2d3h4m5s")).toBe(((((7 + 2) * 24 + 3) * 60 + 4) * 60 + 5) * 1000);
    expect(retentionMs("never")).toBeNull();
    for (const bad of ["", "90", "d", "90 d", "-1d", "1.5d", "90days"]) expect(retentionMs(bad)).toBeUndefined();
  });

  it("gives the cut-off times before now", () => {
    const now = new Date("2026-12-04T12:00:00Z");
    expect(retentionCutoffs({ runs: "90d", tokenAudit: "365d" }, now)).toEqual({ runs: new Date("2026-09-05T12:00:00Z"), tokenAudit: new Date("2025-12-04T12:00:00Z") });
    expect(retentionCutoffs({ runs: "never", tokenAudit: "36h" }, now)).toEqual({ runs: null, tokenAudit: new Date("2026-12-03T00:00:00Z") });
    expect(() => retentionCutoffs({ runs: "soon", tokenAudit: "1d" }, now)).toThrow(/retention\.runs/);
  });
});
