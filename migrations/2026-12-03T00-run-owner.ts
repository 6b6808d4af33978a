/**
 * Who started each run: the process id and host, and with PostgreSQL the key of the
 * run-owner advisory lock its store holds (store/database.ts). A run still "running" whose
 * lock is free belongs to a process that is gone; any process may then mark it interrupted.
 * Older rows have nulls. FROZEN once released; change the schema with a new dated migration.
 */
import type { Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("sync_runs")
    .addColumn("owner_pid", "integer")
    .addColumn("owner_host", "text")
    .addColumn("owner_lock_key", "integer")
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("sync_runs").dropColumn("owner_lock_key").dropColumn("owner_host").dropColumn("owner_pid").execute();
}
