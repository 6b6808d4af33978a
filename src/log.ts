/**
 * Structured logs: a constant message plus fields, one named logger per module, JSON lines on
 * stderr (or a human-readable line with `format: "pretty"`). Fields whose names look like
 * secrets are replaced before writing, so a stray token never reaches the sink.
 */
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "silent";

const ORDER: Record<LogLevel, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, silent: 100 };
const SECRET_KEY = /token|password|secret|authorization|cookie/i;

export interface Logger {
  trace(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(name: string): Logger;
}

export interface LogOptions {
  level: LogLevel;
  format: "json" | "pretty";
  write?: (line: string) => void;
}

export function createLogger(opts: LogOptions, name = "mgs"): Logger {
  const threshold = ORDER[opts.level];
  const write = opts.write ?? ((line: string) => process.stderr.write(line + "\n"));
  const emit = (level: Exclude<LogLevel, "silent">, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[level] < threshold) return;
    const clean = fields ? scrub(fields) : {};
    if (opts.format === "pretty") {
      const extra = Object.keys(clean).length > 0 ? " " + JSON.stringify(clean) : "";
      write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} [${name}] ${msg}${extra}`);
    } else {
      write(JSON.stringify({ time: new Date().toISOString(), level, logger: name, msg, ...clean }));
    }
  };
  return {
    trace: (m, f) => emit("trace", m, f),
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (child) => createLogger(opts, `${name}.${child}`),
  };
}

export const silentLogger: Logger = createLogger({ level: "silent", format: "json" });

function scrub(value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (SECRET_KEY.test(k)) out[k] = "***";
    else if (v instanceof Error) out[k] = { name: v.name, message: v.message };
    else out[k] = v;
  }
  return out;
}
