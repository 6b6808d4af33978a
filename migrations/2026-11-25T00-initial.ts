/**
 * Initial schema. FROZEN: once released this file is never edited; change the schema with
 * a new dated migration instead. It takes `Kysely<any>` on purpose: a migration describes
 * the database as it was on its date, not the current `Database` interface.
 *
 * Tables are created unqualified, in the first schema of the connection's search_path
 * (see `openDatabase({ schema })`).
 */
import { sql, type Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("sync_runs")
    .addColumn("id", "bigserial", (c) => c.primaryKey())
    .addColumn("trigger", "text", (c) => c.notNull())
    .addColumn("dry_run", "boolean", (c) => c.notNull())
    .addColumn("started_at", "timestamptz", (c) => c.notNull())
    .addColumn("finished_at", "timestamptz")
    .addColumn("outcome", "text", (c) => c.notNull())
    .addColumn("summary", "jsonb")
    .addColumn("error", "text")
    .execute();
  // listRuns: newest first.
  await db.schema.createIndex("sync_runs_started_at_idx").on("sync_runs").columns(["started_at", "id"]).execute();
  // interruptDanglingRuns looks for the (few) runs still running.
  await db.schema
    .createIndex("sync_runs_running_idx")
    .on("sync_runs")
    .column("id")
    .where(sql.ref("outcome"), "=", "running")
    .execute();

  await db.schema
    .createTable("run_actions")
    .addColumn("id", "bigserial", (c) => c.primaryKey())
    .addColumn("run_id", "bigint", (c) => c.notNull().references("sync_runs.id").onDelete("cascade"))
    .addColumn("room", "text", (c) => c.notNull())
    .addColumn("room_id", "text")
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("user_id", "text")
    .addColumn("detail", "jsonb")
    .addColumn("outcome", "text", (c) => c.notNull())
    .addColumn("error", "text")
    .addColumn("at", "timestamptz", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("run_actions_run_id_idx").on("run_actions").column("run_id").execute();

  // No foreign key to sync_runs: pruning old runs must not drop a held removal.
  await db.schema
    .createTable("held_removals")
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("room", "text", (c) => c.notNull())
    .addColumn("reason", "text", (c) => c.notNull())
    .addColumn("run_id", "bigint", (c) => c.notNull())
    .addColumn("held_at", "timestamptz", (c) => c.notNull())
    .addColumn("released_at", "timestamptz")
    .addPrimaryKeyConstraint("held_removals_pkey", ["room_id", "user_id"])
    .execute();

  await db.schema
    .createTable("external_members")
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("role", "text", (c) => c.notNull())
    .addColumn("added_by", "text", (c) => c.notNull())
    .addColumn("added_at", "timestamptz", (c) => c.notNull())
    .addPrimaryKeyConstraint("external_members_pkey", ["room_id", "user_id"])
    .execute();

  // last_run_id has no foreign key either, for the same reason as held_removals.run_id.
  await db.schema
    .createTable("managed_rooms")
    .addColumn("room", "text", (c) => c.primaryKey())
    .addColumn("room_id", "text")
    .addColumn("managed", "boolean", (c) => c.notNull().defaultTo(true))
    .addColumn("last_run_id", "bigint")
    .addColumn("last_outcome", "text")
    .addColumn("last_summary", "jsonb")
    .addColumn("updated_at", "timestamptz", (c) => c.notNull())
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("managed_rooms").execute();
  await db.schema.dropTable("external_members").execute();
  await db.schema.dropTable("held_removals").execute();
  await db.schema.dropTable("run_actions").execute();
  await db.schema.dropTable("sync_runs").execute();
}
