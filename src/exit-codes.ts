/**
 * The CLI's exit codes, in one place (the entry point and the serve process use them; nothing
 * imports the entry point for them).
 *
 * - 0: done; every mapped group was read completely.
 * - 1: the run had failures (a room or action failed, the directory or homeserver could not
 *   be read), or it was interrupted.
 * - 2: bad usage or config: the command line could not be understood (an unknown command or
 *   flag, a missing argument, a value of the wrong form such as `--run x`), or the config is
 *   not valid. Nothing was done.
 * - 3: degraded: the run itself worked, but a mapped group was incomplete or missing, so the
 *   rooms depending on it got no removals. A directory that keeps failing shows up here.
 * - 4: refused: the command was understood but not done as asked, because of what a value
 *   names (no such token or run, not a managed room, a file that cannot be imported, nothing
 *   to change). Nothing was changed.
 */
export const EXIT_OK = 0;
export const EXIT_FAILURES = 1;
export const EXIT_USAGE = 2;
export const EXIT_DEGRADED = 3;
export const EXIT_REFUSED = 4;
