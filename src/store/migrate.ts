/**
 * Brings the schema up to date at start-up. Kysely's Migrator takes an advisory lock in a
 * transaction, so replicas starting together on PostgreSQL apply each migration once; each
 * migration runs in that transaction, so a failed one leaves the schema as it was.
 */
import { Migrator, sql, type Kysely, type MigrationResult } from "kysely";
import { migrations } from "../../migrations/index.ts";
import { describeError, fail, ok, type Result } from "../result.ts";

export interface MigrationSummary {
  /** Names of the migrations applied by this call, in order; empty when already up to date. */
  readonly applied: readonly string[];
}

export async function migrateToLatest<DB>(db: Kysely<DB>): Promise<Result<MigrationSummary>> {
  let schema: string;
  try {
    // The migration bookkeeping tables must live next to the tables: in the session's
    // current schema (search_path), not in whichever schema Kysely happens to find them.
    const { rows } = await sql<{ schema: string | null }>`select current_schema() as schema`.execute(db);
    const current = rows[0]?.schema;
    if (current == null) return fail("cannot migrate the database: no schema is selected (check search_path)");
    schema = current;
  } catch (err) {
    return fail(`cannot migrate the database: ${describeError(err)}`, { cause: err });
  }

  const migrator = new Migrator({
    db,
    provider: { getMigrations: () => Promise.resolve({ ...migrations }) },
    migrationTableSchema: schema,
  });
  const { error, results } = await migrator.migrateToLatest();
  const applied = (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
  if (error === undefined) return ok({ applied });

  const failed: MigrationResult | undefined = results?.find((r) => r.status === "Error");
  const message = failed
    ? `database migration ${failed.migrationName} failed: ${describeError(error)}`
    : `cannot migrate the database: ${describeError(error)}`;
  return fail(message, { cause: error });
}
