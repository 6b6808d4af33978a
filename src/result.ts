/**
 * Ports return results instead of throwing: an adapter turns exceptions into values once,
 * at its edge, so one failed room or user never aborts a run. Programmer errors still throw.
 */
export interface Failure {
  /** What went wrong, for a person: names what and where. */
  readonly message: string;
  /** A machine-readable code, when the remote gave one (e.g. `M_FORBIDDEN`, HTTP status). */
  readonly code?: string;
  readonly cause?: unknown;
}

export type Result<T, E = Failure> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: E };

export function ok<T>(value: T): Result<T, never> {
  return { ok: true, value };
}

export function fail(message: string, extra: { code?: string; cause?: unknown } = {}): Result<never, Failure> {
  return { ok: false, error: { message, ...extra } };
}

export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === "string") return err;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}
