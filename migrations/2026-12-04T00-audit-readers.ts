/**
 * The audit, readable: indexes for reading everything done to one user (run_actions by
 * user, newest first) and the audit of one registration token (newest first). Pruning old
 * runs needs none: sync_runs_started_at_idx and run_actions_run_id_idx serve it. FROZEN once
 * released; change the schema with a new dated migration.
 *
 * run_actions keeps one row per user and change (a power-levels event is recorded as one row
 * per changed user, see reconcile/report.ts), so the user is always the `user_id` column and
 * a plain b-tree serves; rows without a user (template fields, state, room errors) stay out
 * of it.
 */
import { sql, type Kysely } from "kysely";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createIndex("run_actions_user_at_idx")
    .on("run_actions")
    .columns(["user_id", "at", "id"])
    .where(sql.ref("user_id"), "is not", null)
    .execute();
  await db.schema
    .createIndex("token_audit_token_ref_at_idx")
    .on("token_audit")
    .columns(["token_ref", "at", "id"])
    .where(sql.ref("token_ref"), "is not", null)
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("token_audit_token_ref_at_idx").execute();
  await db.schema.dropIndex("run_actions_user_at_idx").execute();
}
