import { z } from "zod";
import { issuesToProblems, strictObject } from "../common/index.js";
import { ReplayInputError } from "../errors.js";
import { createScheduler } from "./factory.js";
import type { SchedulerOptionsInput } from "./options.js";
import { compileSchedulerOptions } from "./options.js";
import type { Scheduler } from "./scheduler.js";

/**
 * `rung replay`: feed results through a scheduler and print its decisions, one JSON line in, at most
 * one out. Because decisions are a pure function of the input and the seed, replaying a study's
 * results gives the decisions the coordinator made (invariant 3, docs/architecture.md), and a Ray Tune user can
 * check that Rung decides as Ray would.
 *
 * Input, one JSON object per line (blank lines are skipped but counted):
 *
 *   {"trial":"t1","t":3,"value":0.71}                  a result; may add "kind":"result"
 *   {"trial":"t1","t":3,"value":"NaN","bracket":0}     value may be "NaN", "Infinity", "-Infinity";
 *                                                      "bracket" on a trial's first line fixes its bracket
 *   {"trial":"t1","kind":"complete","t":5,"value":0.8} the trial ended with this last result
 *
 * Output, per result line, in order: {"trial":"t1","t":3,"decision":"CONTINUE"} ("STOP"). Complete
 * lines print nothing. A line that cannot be read is a ReplayInputError naming its line number.
 */
export interface ReplayOptions extends SchedulerOptionsInput {
  /** Seed of the bracket draws. Default 0. */
  readonly seed?: number | undefined;
}

const numberish = z.union([z.number(), z.enum(["NaN", "Infinity", "-Infinity"])]);

const LineSchema = strictObject({
  trial: z.string().min(1),
  kind: z.enum(["result", "complete"]).optional(),
  t: z.number(),
  value: numberish,
  bracket: z.number().int().min(0).optional(),
});

type Line = z.infer<typeof LineSchema>;

const toNumber = (v: Line["value"]): number =>
  typeof v === "number" ? v : v === "NaN" ? Number.NaN : v === "Infinity" ? Number.POSITIVE_INFINITY : Number.NEGATIVE_INFINITY;

/** Line-at-a-time replay, for streaming stdin; `replayLines` is the batch form. */
export class Replayer {
  readonly scheduler: Scheduler;
  private lineNo = 0;
  private readonly seen = new Set<string>();

  /** Throws SchedulerOptionsError for options that break a construction rule. */
  constructor(options: ReplayOptions = {}) {
    const { seed, ...schedulerInput } = options;
    this.scheduler = createScheduler(compileSchedulerOptions(schedulerInput), seed ?? 0);
  }

  /** Feeds one input line; returns the output line, or null for blank and complete lines. */
  push(text: string): string | null {
    const n = ++this.lineNo;
    if (text.trim() === "") return null;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new ReplayInputError(n, `not valid JSON (${(err as Error).message})`, { cause: err });
    }
    if (json === null || typeof json !== "object" || Array.isArray(json)) {
      throw new ReplayInputError(n, 'must be a JSON object like {"trial":"t1","t":3,"value":0.71}');
    }
    const parsed = LineSchema.safeParse(json, { reportInput: true });
    if (!parsed.success) {
      const problems = issuesToProblems(parsed.error.issues).map((p) =>
        p.message.startsWith("must be a number,") && p.path === "value"
          ? `value: must be a number or "NaN", got ${p.message.slice("must be a number, got ".length)}`
          : p.path === ""
            ? p.message
            : `${p.path}: ${p.message}`,
      );
      throw new ReplayInputError(n, problems.join("; "));
    }
    const line = parsed.data;
    const first = !this.seen.has(line.trial);
    this.seen.add(line.trial);
    try {
      if (line.bracket !== undefined) {
        if (!first) {
          const current = this.scheduler.onTrialAdd(line.trial).bracket;
          if (current === null) throw new RangeError(`bracket given, but the ${this.scheduler.name} scheduler has no brackets`);
          if (current !== line.bracket) {
            throw new RangeError(
              `bracket ${line.bracket} given after trial ${line.trial}'s first line (it is in bracket ${current})`,
            );
          }
        } else {
          this.scheduler.onTrialAdd(line.trial, { bracket: line.bracket });
        }
      }
      const value = toNumber(line.value);
      if (line.kind === "complete") {
        this.scheduler.onComplete(line.trial, line.t, value);
        return null;
      }
      const { decision } = this.scheduler.onResult(line.trial, line.t, value);
      return JSON.stringify({ trial: line.trial, t: line.t, decision });
    } catch (err) {
      if (err instanceof RangeError) throw new ReplayInputError(n, err.message, { cause: err });
      throw err;
    }
  }
}

/** Replays all lines and returns the output lines (see `Replayer` for the format). */
export function replayLines(lines: Iterable<string>, options: ReplayOptions = {}): string[] {
  const replayer = new Replayer(options);
  const out: string[] = [];
  for (const line of lines) {
    const o = replayer.push(line);
    if (o !== null) out.push(o);
  }
  return out;
}
