/**
 * Reading files a person points us at (config, secrets, certificates) with bounds: a path
 * given by mistake or malice (`/dev/zero`, a FIFO, a folder, a huge file) is a clear error,
 * never a hang.
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, type Stats } from "node:fs";

/** A PEM bundle of CA certificates or a certificate with its key stays far below this. */
export const CERTIFICATE_FILE_MAX_BYTES = 1024 * 1024;

/**
 * The text of a regular file of at most `max` bytes. Only a regular file (or a link to one)
 * is read: a FIFO would block until someone writes to it, `/dev/zero` never ends, a folder is
 * no file. The file is opened non-blocking (opening a FIFO for reading otherwise waits for a
 * writer) and checked on its descriptor, so what is checked is what is read. `what` names the
 * file in messages ("a secret file", "the config file", "idp.ldap.caFile").
 */
export function readRegularFile(file: string, max: number, what: string): { ok: true; text: string } | { ok: false; message: string } {
  let fd: number;
  try {
    fd = openSync(file, fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0));
  } catch (err) {
    return { ok: false, message: `cannot read ${file}: ${describeFsError(err)}` };
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) return { ok: false, message: `${file} is ${describeFileType(stats)}, not a regular file; ${what} must be a plain file` };
    if (stats.size > max) return { ok: false, message: tooLarge(file, max, what) };
    // Read one byte past the bound: a file that grows after fstat is caught too.
    const buffer = Buffer.alloc(Math.min(max, stats.size + 64 * 1024) + 1);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > max) return { ok: false, message: tooLarge(file, max, what) };
      if (length === buffer.length) return { ok: false, message: `${file} grew while it was read; try again` };
    }
    return { ok: true, text: buffer.subarray(0, length).toString("utf8") };
  } catch (err) {
    return { ok: false, message: `cannot read ${file}: ${describeFsError(err)}` };
  } finally {
    closeSync(fd);
  }
}

function tooLarge(file: string, max: number, what: string): string {
  return `${file} is larger than ${max / 1024} KiB${what === "a secret file" ? "; a secret file holds one secret" : `, too large for ${what}`}`;
}

function describeFileType(stats: Stats): string {
  if (stats.isDirectory()) return "a folder";
  if (stats.isFIFO()) return "a named pipe (FIFO)";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  if (stats.isSocket()) return "a socket";
  return "something other than a file";
}

export function describeFsError(err: unknown): string {
  const code = typeof err === "object" && err !== null && "code" in err ? err.code : undefined;
  switch (code) {
    case "ENOENT":
      return "no such file";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "it is a folder, not a file";
    default:
      return err instanceof Error ? err.message : String(err);
  }
}
