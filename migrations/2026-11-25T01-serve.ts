/**
 * Serve mode: commands already handled (so a restart never replays one) and the command
 * allow list. FROZEN once released; change the schema with a new dated migration.
 */
import type { Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("handled_events")
    .addColumn("event_id", "text", (c) => c.primaryKey())
    .addColumn("room_id", "text", (c) => c.notNull())
    .addColumn("handled_at", "timestamptz", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("handled_events_handled_at_idx").on("handled_events").column("handled_at").execute();

  // One row per entry: a user id or a regular expression over user ids. `source` tells
  // whether it came from the config (re-seeded at start) or from a command.
  await db.schema
    .createTable("command_allow")
    .addColumn("scope", "text", (c) => c.notNull())
    .addColumn("entry", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("source", "text", (c) => c.notNull())
    .addColumn("added_by", "text", (c) => c.notNull())
    .addColumn("added_at", "timestamptz", (c) => c.notNull())
    .addPrimaryKeyConstraint("command_allow_pkey", ["scope", "entry"])
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("command_allow").execute();
  await db.schema.dropTable("handled_events").execute();
}
