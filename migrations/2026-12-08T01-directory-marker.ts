/**
 * The directory's change marker as serve last saw it (serve.pollIntervalMs), so that a change
 * made while the service was down starts a run when it comes back. One row per directory
 * kind. FROZEN once released; change the schema with a new dated migration.
 */
import type { Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("directory_markers")
    .addColumn("directory", "text", (c) => c.primaryKey())
    .addColumn("marker", "text", (c) => c.notNull())
    .addColumn("seen_at", "timestamptz", (c) => c.notNull())
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("directory_markers").execute();
}
