/**
 * Registration tokens: every token action, who did it, where, and how it ended. FROZEN once
 * released; change the schema with a new dated migration.
 */
import type { Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("token_audit")
    .addColumn("id", "bigserial", (c) => c.primaryKey())
    .addColumn("at", "timestamptz", (c) => c.notNull())
    .addColumn("actor", "text", (c) => c.notNull())
    .addColumn("place", "text", (c) => c.notNull())
    .addColumn("action", "text", (c) => c.notNull())
    .addColumn("token_ref", "text")
    .addColumn("result", "text", (c) => c.notNull())
    .addColumn("detail", "jsonb")
    .execute();
  await db.schema.createIndex("token_audit_at_idx").on("token_audit").column("at").execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("token_audit").execute();
}
