/**
 * Child processes of tests. Every process a test starts goes through here, so that it dies
 * with its test whatever the outcome:
 *
 * - started inside a test, it is stopped when that test finishes (passed, failed or timed
 *   out); started elsewhere (beforeAll), when the test file ends (test/helpers/setup.ts);
 * - "stopped" means SIGTERM to its process group (it leads one of its own), then SIGKILL to
 *   the group after a grace period;
 * - if the test worker ends first (vitest stops a worker with SIGTERM, then SIGKILL), a signal
 *   and an exit handler kill what is left, and on Linux the kernel kills it when the worker
 *   dies in any way, SIGKILL included (`setpriv --pdeathsig KILL`, which execs the command:
 *   the pid is the command's own).
 *
 * Readiness is waited for, not guessed: `waitForLine` resolves on a line of output and fails at
 * once when the process exits first, with its output. Its time cap only guards against a hang.
 */
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { accessSync, constants, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { onTestFinished } from "vitest";

/** The installed `matrix-group-sync` command (bin entry). */
export const BIN = join(import.meta.dirname, "../../bin/matrix-group-sync.js");

/** A hang guard for waits on a readiness signal, not an expectation of how long start-up takes. */
export const HANG_GUARD_MS = 120_000;

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Date.now() when the exit was seen. */
  readonly at: number;
}

export interface ProcessOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Default: stdin ignored, stdout and stderr piped and collected. */
  readonly stdio?: StdioOptions;
  /** For messages; default: the command's base name. */
  readonly name?: string;
  /** How long SIGTERM may take before SIGKILL, when the process is stopped (default 5 s). */
  readonly graceMs?: number;
  /**
   * "test": stopped when the running test finishes; "file": when the test file ends. Default:
   * "test" when started inside a test, else "file".
   */
  readonly scope?: "test" | "file";
}

type Stream = "stdout" | "stderr";

const live = new Set<TestProcess>();

export class TestProcess {
  readonly name: string;
  readonly pid: number;
  /** Set once it has exited. */
  exited: Exit | undefined;
  /** Resolves when it has exited (never rejects). */
  readonly exit: Promise<Exit>;
  /** Resolves when it has exited and all its output has been read. */
  readonly ended: Promise<Exit>;
  private readonly text: Record<Stream, string> = { stdout: "", stderr: "" };
  private readonly lines: Record<Stream, string[]> = { stdout: [], stderr: [] };
  private readonly listeners = new Set<() => void>();
  private stopping: Promise<Exit> | undefined;
  /** Exited, and its output streams are read to the end. */
  private closed = false;

  constructor(
    readonly child: ChildProcess,
    name: string,
    private readonly graceMs: number,
  ) {
    this.name = name;
    if (child.pid === undefined) throw new Error(`${name}: not started`);
    this.pid = child.pid;
    for (const stream of ["stdout", "stderr"] as const) {
      let partial = "";
      child[stream]?.on("data", (d: Buffer) => {
        const chunk = d.toString();
        this.text[stream] += chunk;
        const parts = (partial + chunk).split("\n");
        partial = parts.pop() ?? "";
        if (parts.length > 0) {
          this.lines[stream].push(...parts);
          this.notify();
        }
      });
      child[stream]?.on("end", () => {
        if (partial !== "") this.lines[stream].push(partial);
        partial = "";
        this.notify();
      });
    }
    this.exit = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exited = { code, signal, at: Date.now() };
        live.delete(this);
        resolve(this.exited);
        this.notify();
      });
    });
    this.ended = new Promise((resolve) =>
      child.once("close", () => {
        this.closed = true;
        this.notify();
        void this.exit.then(resolve);
      }),
    );
  }

  /** Everything it wrote on stdout so far. */
  stdout(): string {
    return this.text.stdout;
  }

  /** Everything it wrote on stderr so far. */
  stderr(): string {
    return this.text.stderr;
  }

  /** Complete lines written on `stream` so far. */
  outputLines(stream: Stream): readonly string[] {
    return this.lines[stream];
  }

  /** True while it has not exited (nor been reaped). */
  get running(): boolean {
    return this.exited === undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Resolves with the first line on `stream` (default stderr) that matches, including lines
   * already written. Rejects when the process exits without writing one, or after `timeoutMs`
   * (a hang guard, default 120 s), with the process's output in the message.
   */
  waitForLine(match: RegExp | string, opts: { stream?: Stream; timeoutMs?: number } = {}): Promise<string> {
    const stream = opts.stream ?? "stderr";
    const test = (l: string): boolean => (typeof match === "string" ? l.includes(match) : match.test(l));
    return this.waitFor(`a line matching ${String(match)} on ${stream}`, () => this.lines[stream].find(test), opts.timeoutMs);
  }

  /**
   * Resolves with the first value `check` returns that is not undefined or false, checked
   * whenever the process writes a line or exits. Rejects like waitForLine.
   */
  waitFor<T>(what: string, check: () => T | undefined | false, timeoutMs = HANG_GUARD_MS): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const done = (): void => {
        this.listeners.delete(onChange);
        clearTimeout(timer);
      };
      const onChange = (): void => {
        let v: T | undefined | false;
        try {
          v = check();
        } catch (err) {
          done();
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        if (v !== undefined && v !== false) {
          done();
          resolve(v);
        } else if (this.closed && this.exited !== undefined) {
          done();
          reject(new Error(`${this.name} exited (${describeExit(this.exited)}) before ${what}\n${this.tail()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms\n${this.tail()}`));
      }, timeoutMs);
      this.listeners.add(onChange);
      onChange();
    });
  }

  /** Sends `signal` to its process group (it and any children it started). */
  signal(signal: NodeJS.Signals): void {
    signalGroup(this.child, signal);
  }

  /**
   * SIGTERM to its process group, SIGKILL after `graceMs` (default: the one it was started
   * with); resolves when it has exited. Idempotent.
   */
  stop(graceMs = this.graceMs): Promise<Exit> {
    if (this.exited) return Promise.resolve(this.exited);
    return (this.stopping ??= (async () => {
      this.signal("SIGTERM");
      const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
      try {
        return await this.exit;
      } finally {
        clearTimeout(timer);
      }
    })());
  }

  /** SIGKILL to its process group; resolves when it has exited. */
  async kill(): Promise<Exit> {
    this.signal("SIGKILL");
    return this.exit;
  }

  /** The last lines of its output, for failure messages. */
  tail(n = 30): string {
    const part = (s: Stream): string => `--- ${this.name} ${s} (last ${n} lines) ---\n${this.lines[s].slice(-n).join("\n")}`;
    return `${part("stdout")}\n${part("stderr")}`;
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
}

export function describeExit(e: Exit): string {
  return e.signal !== null ? `signal ${e.signal}` : `code ${e.code}`;
}

/**
 * Starts a process that dies with its test (see the top of this file). stdout and stderr are
 * collected (unless `stdio` says otherwise); `waitForLine` waits for readiness.
 */
export function startProcess(file: string, args: readonly string[], opts: ProcessOptions = {}): TestProcess {
  installLastResortHandlers();
  const deathSignal = pdeathsig();
  const [command, argv] = deathSignal === undefined ? [file, [...args]] : [deathSignal, ["--pdeathsig", "KILL", "--", file, ...args]];
  const child = spawn(command, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: opts.stdio ?? ["ignore", "pipe", "pipe"],
    // Its own process group, so that stopping it reaches any process it starts.
    detached: true,
  });
  const name = opts.name ?? file.split("/").at(-1) ?? file;
  // Failures to spawn or to signal are reported as events; without a listener they would
  // crash the worker. A failed spawn has no pid: said here, synchronously.
  child.on("error", () => undefined);
  if (child.pid === undefined) throw new Error(`cannot start ${command}: it does not exist or is not executable`);
  const proc = new TestProcess(child, name, opts.graceMs ?? 5_000);
  live.add(proc);
  const scope = opts.scope ?? (insideTest() ? "test" : "file");
  if (scope === "test") {
    onTestFinished(async () => {
      await proc.stop();
    });
  }
  return proc;
}

export interface Finished {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end (stopped with its test if it hangs). */
export async function runProcess(file: string, args: readonly string[], opts: ProcessOptions = {}): Promise<Finished> {
  const proc = startProcess(file, args, opts);
  // The exit can be seen before the last output is read: wait for both.
  const exit = await proc.ended;
  return { code: exit.code, signal: exit.signal, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** `matrix-group-sync ARGS` as a process (the bin entry, under this Node). */
export function startBin(args: readonly string[], opts: ProcessOptions = {}): TestProcess {
  return startProcess(process.execPath, [BIN, ...args], { name: `matrix-group-sync ${args[0] ?? ""}`.trim(), ...opts });
}

/** `matrix-group-sync ARGS` run to its end. */
export function runBin(args: readonly string[], opts: ProcessOptions = {}): Promise<Finished> {
  return runProcess(process.execPath, [BIN, ...args], { name: `matrix-group-sync ${args[0] ?? ""}`.trim(), ...opts });
}

/** Processes started here that are still running. */
export function liveProcesses(): readonly TestProcess[] {
  return [...live];
}

/** Stops every process started here that is still running (SIGTERM, SIGKILL after its grace). */
export async function stopAllProcesses(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop()));
}

/**
 * Children of this worker that were not started here (a plain child_process call) and are
 * still running: killed, and described, so that the caller can say so. Linux only (/proc).
 */
export function killStrayChildren(): string[] {
  const ours = new Set([...live].map((p) => p.pid));
  const stray: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc").filter((e) => /^\d+$/.test(e));
  } catch {
    return stray;
  }
  for (const entry of entries) {
    const pid = Number(entry);
    if (ours.has(pid)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // pid (comm) state ppid ...; comm may hold spaces and parentheses: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(fields[1]) !== process.pid || fields[0] === "Z") continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").join(" ").trim();
    } catch {
      continue;
    }
    try {
      process.kill(pid, "SIGKILL");
      stray.push(`${pid} ${cmd}`);
    } catch {
      // gone meanwhile
    }
  }
  return stray;
}

function insideTest(): boolean {
  try {
    // Throws outside a running test (in beforeAll, afterAll, at import time).
    onTestFinished(() => undefined);
    return true;
  } catch {
    return false;
  }
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  // Only while it has not been reaped: after that its pid (and group id) may be reused.
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

let deathSignalTool: string | null | undefined;
/** `setpriv` (util-linux) when it can set the parent-death signal: Linux only. */
function pdeathsig(): string | undefined {
  if (deathSignalTool === undefined) {
    deathSignalTool = null;
    if (process.platform === "linux") {
      for (const dir of ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]) {
        try {
          accessSync(join(dir, "setpriv"), constants.X_OK);
          deathSignalTool = join(dir, "setpriv");
          break;
        } catch {
          // not here
        }
      }
    }
  }
  return deathSignalTool ?? undefined;
}

const HANDLERS = Symbol.for("mgs.test.processes.handlers");
/** When the worker ends before the tests' own cleanup ran: kill every process still running. */
function installLastResortHandlers(): void {
  const g = globalThis as { [HANDLERS]?: boolean };
  if (g[HANDLERS]) return;
  g[HANDLERS] = true;
  const killAll = (): void => {
    for (const p of live) {
      // SIGKILL: there is no time left for a graceful stop.
      signalGroup(p.child, "SIGKILL");
    }
  };
  process.on("exit", killAll);
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    const onSignal = (): void => {
      killAll();
      process.off(signal, onSignal);
      // Nobody else handles it: die of it as the default would have.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}
