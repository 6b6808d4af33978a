/**
 * One leader among replicas, chosen by a PostgreSQL session advisory lock held on a
 * dedicated connection. Standbys retry the lock; when the leader's connection drops, its
 * lock is released by the server and a standby takes over at its next try. The leader
 * notices a dead connection (error, end, or a keep-alive that fails or hangs past the retry
 * interval) and stops acting at once; it then stands back for two retry intervals before
 * trying the lock again, so that a standby takes over rather than the old leader
 * re-acquiring it. A leader that took over waits one retry interval before acting.
 *
 * With embedded PGlite there is one process by nature: the store holds a lock file on the
 * data folder, and a second process refuses to start.
 */
import pg from "pg";
import { sleepUnlessAborted } from "../clock.ts";
import type { Logger } from "../log.ts";
import { describeError } from "../result.ts";

export interface Leadership {
  /** Settles (with the reason) when the lock's connection is lost: stop acting at once. */
  readonly lost: Promise<string>;
  /**
   * Whether another replica was seen holding the lock before this one got it: a leader that
   * takes over waits one retry interval before acting, so that the previous leader has
   * noticed its loss (its keep-alive fails within that time) and stopped.
   */
  readonly tookOver: boolean;
  release(): Promise<void>;
}

export interface LeaderOptions {
  readonly databaseUrl: string;
  readonly log: Logger;
  /** How often a standby tries the lock, and how often the leader checks its connection. */
  readonly retryMs?: number;
  readonly signal?: AbortSignal;
  /** Told each time the lock is found taken. */
  readonly onStandby?: () => void;
}

/** The lock key: one per database schema, so that separate installations never collide. */
const LOCK_SQL = "select pg_try_advisory_lock(hashtext('matrix-group-sync:' || coalesce(current_schema(), ''))) as ok";

/** Resolves once this process holds the lock; undefined when `signal` aborts first. */
export async function waitForLeadership(opts: LeaderOptions): Promise<Leadership | undefined> {
  const retryMs = opts.retryMs ?? 2_000;
  const log = opts.log.child("leader");
  let announced = false;
  while (!isAborted(opts.signal)) {
    // query_timeout: a keep-alive that hangs (a silent network partition) counts as lost.
    const client = new pg.Client({
      connectionString: opts.databaseUrl,
      connectionTimeoutMillis: 5_000,
      query_timeout: Math.max(1_000, retryMs),
      keepAlive: true,
    });
    client.on("error", () => undefined); // reported through `lost` or the next attempt
    try {
      await client.connect();
      for (;;) {
        if (isAborted(opts.signal)) {
          await client.end().catch(() => undefined);
          return undefined;
        }
        const r = await client.query<{ ok: boolean }>(LOCK_SQL);
        if (r.rows[0]?.ok === true) {
          log.info("became leader");
          return holding(client, retryMs, log, announced);
        }
        if (!announced) log.info("standing by: another replica is the leader");
        announced = true;
        opts.onStandby?.();
        await sleepUnlessAborted(retryMs, opts.signal);
      }
    } catch (err) {
      log.warn("leader lock: database unavailable, retrying", { error: describeError(err) });
      await client.end().catch(() => undefined);
      await sleepUnlessAborted(retryMs, opts.signal);
    }
  }
  return undefined;
}

function holding(client: pg.Client, checkMs: number, log: Logger, tookOver: boolean): Leadership {
  let resolveLost!: (reason: string) => void;
  let done = false;
  const lost = new Promise<string>((r) => (resolveLost = r));
  const lose = (reason: string): void => {
    if (done) return;
    done = true;
    clearInterval(timer);
    log.warn("lost leadership", { reason });
    resolveLost(reason);
  };
  client.on("error", (err) => lose(`the lock's database connection failed: ${describeError(err)}`));
  client.on("end", () => lose("the lock's database connection ended"));
  const timer = setInterval(() => {
    client.query("select 1").catch((err: unknown) => lose(`the lock's database connection failed: ${describeError(err)}`));
  }, checkMs);
  timer.unref();
  return {
    lost,
    tookOver,
    async release() {
      if (done) return;
      done = true;
      clearInterval(timer);
      await client.end().catch(() => undefined); // ending the session releases the lock
    },
  };
}

/** Read through a call: the flag changes while we wait, which TypeScript's narrowing cannot see. */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}
