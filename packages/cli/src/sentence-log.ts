import { type Logger, pino } from "pino";

/**
 * A logger for a command's own terminal (`rung study run`): each line is the message as a sentence —
 * "warning: t0003 attempt 1 failed (exit 1); retrying" — not a JSON object. `--verbose`
 * (RUNG_LOG_LEVEL=debug) or RUNG_LOG_FORMAT=json keeps the structured JSON on stderr for whoever wants
 * the fields (a script reading the coordinator's drop counts, say).
 */
export function sentenceLogger(level: string, out: NodeJS.WritableStream = process.stderr): Logger {
  if (level === "debug" || level === "trace" || process.env.RUNG_LOG_FORMAT === "json")
    return pino({ level, base: {}, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
  const words: Record<number, string> = { 60: "fatal", 50: "error", 40: "warning" };
  return pino(
    { level, base: {}, timestamp: false },
    {
      write(line: string) {
        let o: { level?: number; msg?: string };
        try {
          o = JSON.parse(line) as { level?: number; msg?: string };
        } catch {
          out.write(line);
          return;
        }
        const word = words[o.level ?? 30];
        out.write(`${word ? `${word}: ` : ""}${o.msg ?? ""}\n`);
      },
    },
  );
}
