/**
 * The CLI's exit codes, in one place (the entry point and the serve process use them; nothing
 * imports the entry point for them).
 *
 * - 0: done; every mapped group was read completely.
 * - 1: the run had failures (a room or action failed, the directory or homeserver could not
 *   be read), or it was interrupted.
 * - 2: bad usage or config.
 * - 3: degraded: the run itself worked, but a mapped group was incomplete or missing, so the
 *   rooms depending on it got no removals. A directory that keeps failing shows up here.
 */
export const EXIT_OK = 0;
export const EXIT_FAILURES = 1;
export const EXIT_USAGE = 2;
export const EXIT_DEGRADED = 3;
