import { SchedulerOptionsError } from "../errors.js";
import type { FifoOptions } from "./options.js";
import { checkSchedulerOptions } from "./options.js";
import type { Scheduler, SchedulerDecision } from "./scheduler.js";

/**
 * First in, first out: every trial runs to the end. The only STOP is at t >= max_t (when max_t is set),
 * so a trial that keeps reporting past its budget ends there, as with ASHA's max_t rule.
 */
export class FifoScheduler implements Scheduler {
  readonly name = "fifo";
  readonly options: FifoOptions;

  constructor(options: FifoOptions) {
    const { problems } = checkSchedulerOptions({ scheduler: "fifo", mode: options.mode, maxT: options.maxT });
    if (problems.length > 0) throw new SchedulerOptionsError(problems);
    this.options = options;
  }

  onTrialAdd(_trial: string, options?: { readonly bracket?: number | null | undefined }): { bracket: number | null } {
    if (options?.bracket !== undefined && options.bracket !== null) {
      throw new RangeError(`bracket ${options.bracket} given, but the fifo scheduler has no brackets`);
    }
    return { bracket: null };
  }

  onResult(_trial: string, t: number, _value: number): SchedulerDecision {
    const stop = this.options.maxT !== null && t >= this.options.maxT;
    return { decision: stop ? "STOP" : "CONTINUE", rung: null, cutoff: null, by: this.name, reason: stop ? "max_t" : "fifo" };
  }

  onComplete(): void {}
}
