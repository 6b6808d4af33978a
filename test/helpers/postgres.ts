/** The PostgreSQL the integration tests use, and whether it answers. */
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
