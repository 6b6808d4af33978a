/**
 * Writing an import: the config, its secret files (mode 0600, in a 0700 folder) and any
 * placeholder file. Nothing is half-written: every file goes to a temporary name in its
 * folder and is renamed into place; the config comes last. An existing file is refused unless
 * `force`.
 */
import { chmodSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { randomBytes } from "node:crypto";
import { describeFsError } from "../files.ts";

export interface OutFile {
  readonly path: string;
  readonly text: string;
  /** 0o600 for secrets. */
  readonly mode: number;
}

export function writeAll(files: readonly OutFile[], force: boolean): { ok: true } | { ok: false; message: string } {
  if (!force) {
    const existing = files.filter((f) => existsSync(f.path)).map((f) => f.path);
    if (existing.length > 0) return { ok: false, message: `refusing to overwrite ${existing.join(", ")} (give --force to replace)` };
  }
  const temps: string[] = [];
  const placed: string[] = [];
  const createdDirs: string[] = [];
  try {
    // First every file under a temporary name, then the renames: a failure writes nothing.
    const staged = files.map((f) => {
      const dir = dirname(f.path);
      if (!existsSync(dir)) {
        mkdirSync(dir, { recursive: true, mode: f.mode === 0o600 ? 0o700 : 0o755 });
        createdDirs.push(dir);
      }
      const temp = `${f.path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
      writeFileSync(temp, f.text, { mode: f.mode, flag: "wx" });
      chmodSync(temp, f.mode); // the umask may have narrowed or the mode widened nothing
      temps.push(temp);
      return { temp, path: f.path, existed: existsSync(f.path) };
    });
    for (const s of staged) {
      renameSync(s.temp, s.path);
      temps.splice(temps.indexOf(s.temp), 1);
      if (!s.existed) placed.push(s.path);
    }
    return { ok: true };
  } catch (err) {
    for (const t of temps) rmSync(t, { force: true });
    for (const p of placed) rmSync(p, { force: true });
    for (const d of createdDirs.reverse()) rmSync(d, { recursive: true, force: true });
    return { ok: false, message: `cannot write the output: ${describeFsError(err)}` };
  }
}
