import { type Logger, pino } from "pino";

export type { Logger };

export interface LoggerOptions {
  /** pino level; default `info`, or `RUNG_LOG_LEVEL`. */
  level?: string;
  /** Base fields on every line (`{ agent }`, `{ study }`). */
  base?: Record<string, unknown>;
  /** Where lines go: default stderr, so stdout stays the command's own output. */
  destination?: number | string;
}

/**
 * Structured JSON logs with stable keys (`study`, `trial`, `agent`, `gpu`). The CLI pipes them through
 * pino-pretty on a TTY; everywhere else they stay JSON.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env.RUNG_LOG_LEVEL ?? "info";
  return pino(
    { level, base: options.base ?? {}, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ dest: options.destination ?? 2, sync: true }),
  );
}

/** A logger that drops everything, for library callers that pass none. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
