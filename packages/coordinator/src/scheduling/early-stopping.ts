import type { MetricMode } from "./options.js";
import type { Scheduler, SchedulerDecision } from "./scheduler.js";

export interface EarlyStoppingOptions {
  /** Whether larger (`max`) or smaller (`min`) monitored values are better. */
  readonly mode: MetricMode;
  /** Reports without improvement before the trial is stopped. Integer >= 1. */
  readonly patience: number;
  /** An improvement must beat the best so far by more than this. >= 0. Default 0. */
  readonly minDelta?: number | undefined;
}

/**
 * Per-trial patience on one monitored metric, as Keras' EarlyStopping callback:
 *
 *   best starts at -inf (max) / +inf (min); wait starts at 0
 *   on each value: improved = (max) value - min_delta > best  |  (min) value + min_delta < best
 *     improved -> best = value, wait = 0
 *     else     -> wait += 1; wait >= patience -> STOP
 *
 * Strict comparisons, so an equal value is no improvement; NaN never improves. It applies on top of any
 * scheduler (see study/policy.ts): the scheduler always sees the result, and early stopping can turn
 * its CONTINUE into a STOP. It keeps no order between trials, only each trial's own history.
 */
export class EarlyStopping implements Scheduler {
  readonly name = "early-stopping";
  private readonly state = new Map<string, { best: number; wait: number }>();
  private readonly mode: MetricMode;
  private readonly patience: number;
  private readonly minDelta: number;

  constructor(options: EarlyStoppingOptions) {
    if (!Number.isSafeInteger(options.patience) || options.patience < 1) {
      throw new RangeError(`patience must be an integer >= 1, got ${options.patience}`);
    }
    const minDelta = options.minDelta ?? 0;
    if (!Number.isFinite(minDelta) || minDelta < 0) throw new RangeError(`minDelta must be >= 0, got ${minDelta}`);
    this.mode = options.mode;
    this.patience = options.patience;
    this.minDelta = minDelta;
  }

  onTrialAdd(): { bracket: number | null } {
    return { bracket: null };
  }

  /** `t` is not used: patience counts reports, not time. */
  onResult(trial: string, _t: number, value: number): SchedulerDecision {
    let s = this.state.get(trial);
    if (s === undefined) {
      s = { best: this.mode === "max" ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY, wait: 0 };
      this.state.set(trial, s);
    }
    const improved = this.mode === "max" ? value - this.minDelta > s.best : value + this.minDelta < s.best;
    if (improved) {
      s.best = value;
      s.wait = 0;
    } else {
      s.wait += 1;
    }
    const stop = s.wait >= this.patience;
    return {
      decision: stop ? "STOP" : "CONTINUE",
      rung: null,
      cutoff: Number.isFinite(s.best) ? s.best : null,
      by: this.name,
      reason: improved ? "improved" : `no improvement for ${s.wait} report${s.wait === 1 ? "" : "s"} (patience ${this.patience})`,
    };
  }

  onComplete(trial: string): void {
    this.state.delete(trial);
  }
}
