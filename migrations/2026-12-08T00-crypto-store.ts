/**
 * The bot's end-to-end encryption state (matrix/crypto-persistence.ts): the crypto library's
 * IndexedDB databases, their layout and their records, per bot user. The records are what the
 * library wrote, encrypted by it with the key derived from `serve.encryption.storeKey`. And the
 * session of a password login (matrix/login.ts): the device, and the access token sealed with a
 * key derived from the password. FROZEN once released; change the schema with a new dated
 * migration.
 */
import type { Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("crypto_databases")
    .addColumn("owner", "text", (c) => c.notNull())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("version", "integer", (c) => c.notNull())
    .addColumn("layout", "jsonb", (c) => c.notNull())
    .addPrimaryKeyConstraint("crypto_databases_pkey", ["owner", "name"])
    .execute();
  await db.schema
    .createTable("crypto_records")
    .addColumn("owner", "text", (c) => c.notNull())
    .addColumn("database", "text", (c) => c.notNull())
    .addColumn("store", "text", (c) => c.notNull())
    .addColumn("key", "bytea", (c) => c.notNull())
    .addColumn("value", "bytea", (c) => c.notNull())
    .addPrimaryKeyConstraint("crypto_records_pkey", ["owner", "database", "store", "key"])
    .execute();
  await db.schema
    .createTable("bot_sessions")
    .addColumn("login", "text", (c) => c.primaryKey())
    .addColumn("user_id", "text", (c) => c.notNull())
    .addColumn("device_id", "text", (c) => c.notNull())
    .addColumn("sealed_token", "bytea", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull())
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("bot_sessions").execute();
  await db.schema.dropTable("crypto_records").execute();
  await db.schema.dropTable("crypto_databases").execute();
}
