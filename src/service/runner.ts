/**
 * One sync at a time. A run asked for while another is in progress is queued once (the
 * next run will see everything that changed meanwhile); a further request while one is
 * queued is skipped. Whoever asks is told which of the three happened.
 */
export type RunStart = "started" | "queued" | "skipped";

export interface RunRequest<T> {
  readonly status: RunStart;
  /** Settles with the run's outcome; for a skipped request, undefined at once. */
  readonly done: Promise<T | undefined>;
}

export class SerialRunner<T> {
  private current: Promise<T> | undefined;
  private queued: { job: () => Promise<T>; resolve: (v: T | undefined) => void; reject: (e: unknown) => void } | undefined;
  private closed = false;

  /** Whether a run is in progress now. */
  get busy(): boolean {
    return this.current !== undefined;
  }

  request(job: () => Promise<T>): RunRequest<T> {
    if (this.closed) return { status: "skipped", done: Promise.resolve(undefined) };
    if (this.current === undefined) return { status: "started", done: this.start(job) };
    if (this.queued !== undefined) return { status: "skipped", done: Promise.resolve(undefined) };
    let resolve!: (v: T | undefined) => void;
    let reject!: (e: unknown) => void;
    const done = new Promise<T | undefined>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.queued = { job, resolve, reject };
    return { status: "queued", done };
  }

  /** No new runs; a queued one is dropped. Resolves when the current run has finished. */
  async close(): Promise<void> {
    this.closed = true;
    const queued = this.queued;
    this.queued = undefined;
    queued?.resolve(undefined);
    await this.current?.catch(() => undefined);
  }

  private start(job: () => Promise<T>): Promise<T> {
    const run = job();
    this.current = run;
    const next = (): void => {
      this.current = undefined;
      const q = this.queued;
      this.queued = undefined;
      if (q !== undefined && !this.closed) this.start(q.job).then(q.resolve, q.reject);
      else q?.resolve(undefined);
    };
    run.then(next, next);
    return run;
  }
}
