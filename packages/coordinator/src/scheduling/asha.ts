import type { Decision } from "@rung/protocol";
import type { Rng } from "../common/index.js";
import { ashaCutoff, createRng } from "../common/index.js";
import { SchedulerOptionsError } from "../errors.js";
import type { AshaOptions } from "./options.js";
import { checkSchedulerOptions } from "./options.js";
import { bracketProbabilities, drawIndex, rungMilestones } from "./rung-ladder.js";
import type { Scheduler, SchedulerDecision } from "./scheduler.js";

/**
 * Asynchronous successive halving, decision for decision as Ray Tune's AsyncHyperBandScheduler
 * (ASHAScheduler); every one of its rules, the floating-point corner cases included, is pinned in
 * asha.test.ts.
 *
 * `hyperband` is this same class with several brackets (Ray's ASHA with `brackets > 1`, "asynchronous
 * Hyperband"): each trial is put in one bracket by a softmax over rung counts, and brackets never
 * interact.
 *
 * The state machine, per result (trial, t, value):
 *
 *   score = value * (+1 in max mode, -1 in min mode)   -- lower score is always worse
 *   if stop_last_trials and t >= max_t: STOP            -- bracket not consulted, nothing recorded,
 *                                                          whatever the value (NaN too)
 *   else scan the trial's bracket, milestones highest first:
 *     (stop_last_trials = false only) m <= t and trial recorded at m -> CONTINUE, stop scanning
 *     m > t, or trial already recorded at m                          -> next lower milestone
 *     otherwise evaluate THIS rung:
 *        cutoff = percentile (1 - 1/rf) of the scores recorded here before this trial, NaN dropped
 *                 (none recorded: no cutoff; only NaN recorded: NaN cutoff)
 *        STOP iff a cutoff exists and score < cutoff (strict; NaN on either side continues)
 *        record the score here -- STOP or not, NaN or not; the first record is frozen
 *        stop scanning
 *   no rung evaluated -> CONTINUE
 *
 * So at most one rung is evaluated per result: the highest milestone <= t the trial has no record at.
 * In the default mode skipped milestones are back-filled by later results (first report at t=5 with
 * rungs 1,2,4,… records at 4, the next result at 2, the next at 1), and a back-fill can STOP.
 * Records are never removed: stopped trials keep shaping later cutoffs. Nothing is re-evaluated when a
 * cutoff later moves, and no decision is remembered — a stopped trial that reported again would be
 * judged like any other.
 *
 * on_trial_complete runs the same scan (no max_t check, no decision) and then forgets the trial's
 * bracket: after a STOP it records the last score at the next lower unrecorded rung; after a max_t
 * STOP at the highest unrecorded milestone <= t (the max_t rung if the ladder has one).
 *
 * Departures, all where Ray would raise: a result or completion for a trial never added adds it
 * (drawing its bracket) instead of a KeyError; an injected bracket is checked against the range.
 */
export class Asha implements Scheduler {
  readonly name: "asha" | "hyperband";
  readonly options: AshaOptions;
  private readonly brackets: readonly Bracket[];
  private readonly probabilities: readonly number[];
  private readonly assigned = new Map<string, number>();
  private readonly rng: Rng;
  private readonly sign: 1 | -1;

  constructor(options: AshaOptions, seed = 0) {
    const { problems } = checkSchedulerOptions({
      scheduler: options.type,
      mode: options.mode,
      gracePeriod: options.gracePeriod,
      reductionFactor: options.reductionFactor,
      maxT: options.maxT,
      brackets: options.brackets,
      stopLastTrials: options.stopLastTrials,
    });
    if (problems.length > 0) throw new SchedulerOptionsError(problems);
    this.name = options.type;
    this.options = options;
    this.sign = options.mode === "max" ? 1 : -1;
    const brackets: Bracket[] = [];
    for (let s = 0; s < options.brackets; s++) {
      brackets.push(new Bracket(rungMilestones(options.gracePeriod, options.reductionFactor, options.maxT, s)));
    }
    this.brackets = brackets;
    this.probabilities = bracketProbabilities(brackets.map((b) => b.rungs.length));
    this.rng = createRng(seed, "brackets");
  }

  /** Probability of each bracket for a new trial (softmax over rung counts). */
  bracketProbabilities(): number[] {
    return [...this.probabilities];
  }

  /** Milestones of each bracket, lowest first; an empty bracket has none. */
  ladders(): number[][] {
    return this.brackets.map((b) => b.rungs.map((r) => r.milestone).reverse());
  }

  /** The bracket a live trial is in; null for an unknown or completed one. */
  bracketOf(trial: string): number | null {
    return this.assigned.get(trial) ?? null;
  }

  /**
   * Everything recorded, lowest milestone first, with values in the metric's own units (so a min-mode
   * rung lists losses). For reports and tests; the scheduler's decisions never read it.
   */
  snapshot(): AshaSnapshot {
    return {
      brackets: this.brackets.map((b, bracket) => ({
        bracket,
        rungs: b.rungs
          .map((r) => ({
            milestone: r.milestone,
            values: Object.fromEntries([...r.recorded].map(([trial, score]) => [trial, this.sign * score])),
          }))
          .reverse(),
      })),
    };
  }

  onTrialAdd(trial: string, options?: { readonly bracket?: number | null | undefined }): { bracket: number | null } {
    const known = this.assigned.get(trial);
    const injected = options?.bracket;
    if (injected !== undefined && injected !== null) {
      const n = this.brackets.length;
      if (!Number.isInteger(injected) || injected < 0 || injected >= n) {
        throw new RangeError(
          `bracket ${injected} is out of range: this ${this.name} scheduler has ${n} bracket${n === 1 ? "" : "s"} (0..${n - 1})`,
        );
      }
      if (known !== undefined && known !== injected) {
        throw new RangeError(`trial ${trial} is already in bracket ${known}, not ${injected}`);
      }
      this.assigned.set(trial, injected);
      return { bracket: injected };
    }
    if (known !== undefined) return { bracket: known };
    // An injected bracket consumes no draw, so fixing some trials' brackets does not move the others'.
    const drawn = this.brackets.length === 1 ? 0 : drawIndex(this.probabilities, this.rng.next());
    this.assigned.set(trial, drawn);
    return { bracket: drawn };
  }

  onResult(trial: string, t: number, value: number): SchedulerDecision {
    const { bracket } = this.onTrialAdd(trial);
    if (t >= this.options.maxT && this.options.stopLastTrials) {
      return { decision: "STOP", rung: null, cutoff: null, by: this.name, reason: "max_t" };
    }
    const r = this.bracket(bracket).scan(trial, t, this.sign * value, this.options);
    return {
      decision: r.decision,
      rung: r.rung,
      cutoff: r.cutoff === null ? null : this.sign * r.cutoff,
      by: this.name,
      reason: r.reason,
    };
  }

  onComplete(trial: string, t: number, value: number): void {
    const bracket = this.assigned.get(trial) ?? (this.onTrialAdd(trial).bracket as number);
    this.bracket(bracket).scan(trial, t, this.sign * value, this.options);
    this.assigned.delete(trial);
  }

  private bracket(index: number | null): Bracket {
    return this.brackets[index ?? 0] as Bracket;
  }
}

export interface AshaSnapshot {
  readonly brackets: readonly {
    readonly bracket: number;
    readonly rungs: readonly { readonly milestone: number; readonly values: Readonly<Record<string, number>> }[];
  }[];
}

interface Rung {
  readonly milestone: number;
  /** trial -> score; the first score recorded is frozen. */
  readonly recorded: Map<string, number>;
}

class Bracket {
  /** Highest milestone first: the scan order. */
  readonly rungs: readonly Rung[];

  constructor(milestonesLowestFirst: readonly number[]) {
    this.rungs = [...milestonesLowestFirst].reverse().map((milestone) => ({ milestone, recorded: new Map() }));
  }

  /** Ray's `_Bracket.on_result`, comparisons written the same way so NaN times behave the same too. */
  scan(
    trial: string,
    t: number,
    score: number,
    options: Pick<AshaOptions, "reductionFactor" | "stopLastTrials">,
  ): { decision: Decision; rung: number | null; cutoff: number | null; reason: string } {
    for (const { milestone, recorded } of this.rungs) {
      if (t >= milestone && recorded.has(trial) && !options.stopLastTrials) {
        return { decision: "CONTINUE", rung: null, cutoff: null, reason: `already recorded at rung ${milestone}` };
      }
      if (t < milestone || recorded.has(trial)) continue;
      const cutoff = ashaCutoff(recorded.values(), options.reductionFactor);
      const stop = cutoff !== null && score < cutoff;
      recorded.set(trial, score);
      const reason = stop
        ? "worse than cutoff"
        : cutoff === null
          ? "first at rung"
          : Number.isNaN(cutoff) || Number.isNaN(score)
            ? "not comparable (NaN)"
            : "not worse than cutoff";
      return { decision: stop ? "STOP" : "CONTINUE", rung: milestone, cutoff, reason };
    }
    return { decision: "CONTINUE", rung: null, cutoff: null, reason: "no rung to evaluate" };
  }
}
