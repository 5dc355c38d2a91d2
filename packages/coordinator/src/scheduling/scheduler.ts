import type { Decision } from "@rung/protocol";

/** What a scheduler says about one result. */
export interface SchedulerDecision {
  readonly decision: Decision;
  /** The rung (milestone) evaluated for this result, when one was. */
  readonly rung: number | null;
  /**
   * The threshold the value was compared with, in the metric's own units (for ASHA in min mode this
   * is the negated score cutoff, i.e. a loss: values above it stop). null when there was none; NaN
   * when the threshold itself was NaN (it stops nobody).
   */
  readonly cutoff: number | null;
  /** Who decided: "asha", "hyperband", "median", "fifo" or "early-stopping". */
  readonly by: string;
  /** Short why, for logs and `rung replay --explain`: "max_t", "below cutoff", "first at rung", … */
  readonly reason: string;
  /** EXPLOIT (population-based training): whose checkpoint the trial goes on from, with which parameters. */
  readonly exploit?: { readonly donor: string; readonly params: Readonly<Record<string, string | number | boolean>> };
}

/**
 * Every scheduler (ASHA, Hyperband, median, FIFO, early stopping) answers the same three calls, as
 * Ray Tune's TrialScheduler does. Decisions are a pure function of the sequence of calls and the
 * seed: no clock, no `Math.random`, no I/O — which is what makes `rung replay` and coordinator
 * restarts reproduce the live decisions.
 */
export interface Scheduler {
  readonly name: string;
  /**
   * Registers a trial. Schedulers with brackets draw one from their seeded RNG unless `bracket` is
   * given (a replay or a restarted coordinator fixes it from the trial's `created` event). Idempotent
   * for an already known trial; a different injected bracket for a known trial throws RangeError.
   */
  onTrialAdd(trial: string, options?: { readonly bracket?: number | null | undefined }): { bracket: number | null };
  /** One reported result at time `t`. A trial never added is added first (drawing its bracket). */
  onResult(trial: string, t: number, value: number): SchedulerDecision;
  /** The trial ended (after a STOP, or by itself), with its last result. Never decides anything. */
  onComplete(trial: string, t: number, value: number): void;
}
