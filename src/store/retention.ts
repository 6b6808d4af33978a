/**
 * Retention: how long the audit is kept (config `retention`). `pruneHistory` turns the
 * configured periods into cut-off times before `now` (the caller's clock) and prunes the
 * store; the service calls it after a run or once a day. What is kept whatever its age (a
 * run still running, the run a managed room or a held removal points at) is the store's
 * rule: see `Store.prune`.
 */
import { retentionMs, type RetentionConfig } from "../config/schema.ts";
import { describeError, fail, ok, type Result } from "../result.ts";
import type { PruneCounts, Store } from "./store.ts";

/** What one prune did, as log fields: counts, and the cut-off times (ISO; null: kept forever). */
export interface PruneReport extends PruneCounts {
  /** Command events recorded as handled (so that a restart never replays them), kept as long as runs. */
  readonly handledEvents: number;
  readonly runsBefore: string | null;
  readonly tokenAuditBefore: string | null;
}

export interface RetentionCutoffs {
  readonly runs: Date | null;
  readonly tokenAudit: Date | null;
}

/** The times before which rows go. Throws on a period the config schema would have refused. */
export function retentionCutoffs(retention: RetentionConfig, now: Date): RetentionCutoffs {
  const before = (key: keyof RetentionConfig): Date | null => {
    const ms = retentionMs(retention[key]);
    if (ms === undefined) throw new Error(`retention.${key}: "${retention[key]}" is not a retention period`);
    return ms === null ? null : new Date(now.getTime() - ms);
  };
  return { runs: before("runs"), tokenAudit: before("tokenAudit") };
}

/**
 * Prunes what is older than the configured periods. A database error is returned, not
 * thrown (the caller is a timer: it logs the failure and tries again next time).
 */
export async function pruneHistory(store: Pick<Store, "prune" | "pruneHandled">, retention: RetentionConfig, now: Date): Promise<Result<PruneReport>> {
  const cutoffs = retentionCutoffs(retention, now);
  try {
    const counts = await store.prune(cutoffs);
    // A command older than that is never replayed anyway: the first sync after a start is history.
    const handledEvents = cutoffs.runs === null ? 0 : await store.pruneHandled(cutoffs.runs);
    return ok({
      ...counts,
      handledEvents,
      runsBefore: cutoffs.runs?.toISOString() ?? null,
      tokenAuditBefore: cutoffs.tokenAudit?.toISOString() ?? null,
    });
  } catch (err) {
    return fail(`cannot prune the audit history: ${describeError(err)}`, { cause: err });
  }
}
