import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger };

export interface LoggerOptions {
  /** pino level; default `info`, or `RUNG_LOG_LEVEL`. */
  level?: string;
  /** Base fields on every line (`{ agent }`, `{ study }`). */
  base?: Record<string, unknown>;
  /** Where lines go: default stderr, so stdout stays the command's own output. */
  destination?: number | string;
  /**
   * `json`: pino's JSON lines (default); `pretty`: one readable line per entry (time, level, agent,
   * message, then the other fields as key=value); `auto`: pretty when the destination is a terminal,
   * JSON when it is a pipe or a file — what a person at a terminal and a log collector each want.
   */
  format?: "auto" | "json" | "pretty";
}

/**
 * Structured JSON logs with stable keys (`study`, `trial`, `agent`, `gpu`); readable lines instead on
 * a terminal when the caller asks for `format: "auto"` or `"pretty"`.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env.RUNG_LOG_LEVEL ?? "info";
  const dest = options.destination ?? 2;
  const out = pino.destination({ dest, sync: true });
  const tty = typeof dest === "number" && (dest === 2 ? process.stderr.isTTY : dest === 1 ? process.stdout.isTTY : false);
  const format = options.format ?? "json";
  const pretty = format === "pretty" || (format === "auto" && tty === true);
  const stream: DestinationStream = pretty ? { write: (line: string) => void out.write(prettyLine(line, tty === true)) } : out;
  return pino({ level, base: options.base ?? {}, timestamp: pino.stdTimeFunctions.isoTime }, stream);
}

/** A logger that drops everything, for library callers that pass none. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

const LEVELS: Record<number, [string, string]> = {
  10: ["TRACE", "\x1b[90m"],
  20: ["DEBUG", "\x1b[90m"],
  30: ["INFO ", "\x1b[32m"],
  40: ["WARN ", "\x1b[33m"],
  50: ["ERROR", "\x1b[31m"],
  60: ["FATAL", "\x1b[35m"],
};
const RESET = "\x1b[0m";
const DIM = "\x1b[2m";
/** Fields every line has, shown in the line's head or not at all. */
const HEAD = new Set(["level", "time", "msg", "agent", "pid", "hostname"]);

/**
 * One pino JSON line as a person reads it: `12:03:04 WARN  a1  cannot run this order here (…)
 * study=s trial=t0001`. A line that is not JSON is passed through.
 */
export function prettyLine(json: string, color: boolean): string {
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const [name, tint] = LEVELS[Number(e.level)] ?? [String(e.level).toUpperCase().padEnd(5), ""];
  const time = typeof e.time === "string" ? e.time.slice(11, 19) : "";
  const fields = Object.entries(e)
    .filter(([k, v]) => !HEAD.has(k) && v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === "string" && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v)}`)
    .join(" ");
  const paint = (s: string, c: string) => (color && c ? `${c}${s}${RESET}` : s);
  const who = typeof e.agent === "string" ? `${e.agent}  ` : "";
  return `${paint(time, DIM)} ${paint(name, tint)} ${who}${String(e.msg ?? "")}${fields ? `  ${paint(fields, DIM)}` : ""}\n`;
}
