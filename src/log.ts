/**
 * Structured logs through pino: a constant message plus fields, one named logger per module
 * (`logger: "mgs.ldap"`), JSON lines on stderr, or human-readable lines (pino-pretty) with
 * `format: "pretty"`. Fields whose names look like secrets are replaced before anything is
 * written, at any depth, so a stray token never reaches the sink; errors are reduced to
 * their name and message (a stack or a request object may carry headers), and credentials
 * written inside text (`access_token=…`, `Bearer …`, the `user:password@` or `token@` of a
 * URL) are masked too.
 *
 * Writes are synchronous: a line logged just before a crash or an exit is not lost.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from "pino";
import { prettyFactory } from "pino-pretty";
import { redactUrl, redactUrlsInText } from "./redact-url.ts";

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "silent";

const SECRET_KEY = /token|password|secret|authorization|cookie|credential/i;
const MAX_DEPTH = 6;

export interface Logger {
  trace(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger for a module: its name is appended (`mgs` → `mgs.ldap`). */
  child(name: string): Logger;
}

export interface LogOptions {
  level: LogLevel;
  format: "json" | "pretty";
  /** Receives each line without its newline (tests); default: stderr. */
  write?: (line: string) => void;
  /** Colours in pretty mode; default: whether stderr is a terminal. */
  colorize?: boolean;
}

export function createLogger(opts: LogOptions, name = "mgs"): Logger {
  const root = pino(
    {
      level: opts.level,
      base: null,
      messageKey: "msg",
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: {
        level: (label) => ({ level: label }),
        log: (fields) => scrub(fields, 0),
        bindings: (bindings) => bindings,
      },
    },
    destination(opts),
  );
  return wrap(root, name);
}

function destination(opts: LogOptions): DestinationStream {
  const write = opts.write ?? ((line: string) => void process.stderr.write(line + "\n"));
  if (opts.format === "pretty") {
    const format = prettyFactory({
      colorize: opts.colorize ?? (opts.write === undefined && process.stderr.isTTY),
      translateTime: "SYS:yyyy-mm-dd HH:MM:ss.l",
      messageKey: "msg",
      messageFormat: "[{logger}] {msg}",
      ignore: "logger",
      singleLine: true,
    });
    return { write: (line: string) => write(format(line).replace(/\n$/, "")) };
  }
  if (opts.write === undefined) return pino.destination({ fd: 2, sync: true });
  return { write: (line: string) => write(line.replace(/\n$/, "")) };
}

function wrap(root: PinoLogger, name: string): Logger {
  const named = root.child({ logger: name });
  const emit =
    (level: "trace" | "debug" | "info" | "warn" | "error") =>
    (msg: string, fields?: Record<string, unknown>): void => {
      if (fields === undefined) named[level](msg);
      else named[level](fields, msg);
    };
  return {
    trace: emit("trace"),
    debug: emit("debug"),
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
    child: (child) => wrap(root, `${name}.${child}`),
  };
}

export const silentLogger: Logger = createLogger({ level: "silent", format: "json", write: () => undefined });

function scrub(value: Record<string, unknown>, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) ? "***" : scrubValue(v, depth + 1);
  }
  return out;
}

/** Credentials inside free text: `access_token=...` in a query, `Bearer ...` in a header dump (URL userinfo: redact-url.ts). */
const SECRET_IN_TEXT = /(access_token=|"access_token"\s*:\s*"|Bearer\s+|Basic\s+)[^&\s"]+/gi;

function scrubValue(v: unknown, depth: number): unknown {
  if (typeof v === "string") return redactUrlsInText(v.replace(SECRET_IN_TEXT, "$1***"));
  if (v instanceof Error) return { name: v.name, message: scrubValue(v.message, depth) };
  if (v === null || typeof v !== "object") return v;
  if (depth > MAX_DEPTH) return "[nested too deep]";
  if (Array.isArray(v)) return v.map((item) => scrubValue(item, depth + 1));
  if (v instanceof Date) return v.toISOString();
  if (v instanceof URL) return redactUrl(v);
  const proto = Object.getPrototypeOf(v) as unknown;
  if (proto !== Object.prototype && proto !== null) return `[${(v).constructor.name}]`;
  return scrub(v as Record<string, unknown>, depth);
}
