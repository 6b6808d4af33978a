/** The PostgreSQL the integration tests use, and whether it answers. */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

export const TEST_DATABASE_URL = process.env["MGS_TEST_DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test";

/** Undefined when reachable, else why not. */
export async function postgresUnreachable(url = TEST_DATABASE_URL): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query("select 1");
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message || err.name : String(err);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A fresh store location per test: a PGlite data folder, or a PostgreSQL schema of its own. */
export interface StoreFixture {
  readonly engine: "pglite" | "postgres";
  readonly options: { dataDir: string; databaseUrl?: string; schema?: string };
  cleanup(): Promise<void>;
}

export async function storeFixture(engine: "pglite" | "postgres", name: string, databaseUrl = TEST_DATABASE_URL): Promise<StoreFixture> {
  if (engine === "pglite") {
    const dataDir = await mkdtemp(join(tmpdir(), `mgs-${name}-`));
    return { engine, options: { dataDir }, cleanup: () => rm(dataDir, { recursive: true, force: true }) };
  }
  const schema = `t_${name}_${randomBytes(6).toString("hex")}`;
  return {
    engine,
    options: { databaseUrl, dataDir: "/nonexistent-unused", schema },
    async cleanup() {
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      try {
        await client.query(`drop schema if exists "${schema}" cascade`);
      } finally {
        await client.end();
      }
    },
  };
}
