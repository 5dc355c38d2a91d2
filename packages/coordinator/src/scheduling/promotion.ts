import type { MetricMode, PromotionOptions } from "./options.js";
import { rungMilestones } from "./rung-ladder.js";
import type { Scheduler, SchedulerDecision } from "./scheduler.js";

/**
 * ASHA in its original, promotion-based form (Li et al., "A System for Massively Parallel
 * Hyperparameter Tuning", 2020, Algorithm 2), which Ray Tune does not have. Ray's ASHA (asha.ts) lets a
 * trial run on and stops it when it falls below a rung's cutoff; this one *pauses* every trial at each
 * rung — it checkpoints and exits, and its GPU goes to the next job — and resumes it later, from its
 * checkpoint, when it earns a promotion:
 *
 *   rungs      grace · rf^k below max_t (rung 0 = grace), then max_t itself (the end);
 *   a result   at or past the trial's next rung records its value there and PAUSEs it; at max_t the
 *              trial is done (STOP, as `max_t`);
 *   get_job    (`nextPromotion`) from the highest rung below max_t down to rung 0: the trials in the
 *              top ⌊n_k / rf⌋ of rung k (n_k results recorded there) that were not promoted out of it
 *              yet and are waiting there; the best of them goes on to rung k + 1. None anywhere: the
 *              caller starts a new trial at rung 0.
 *
 * Ties rank by arrival (the first recorded first), NaN ranks last and is never promoted. Decisions and
 * promotions are a pure function of the calls, so a study's stream (its PAUSE decisions and the
 * `queued` events that name a promotion) replays to the same state.
 */

export interface Promotion {
  readonly trial: string;
  /** Index of the rung the trial goes on to (its value is `milestone`). */
  readonly rung: number;
  readonly milestone: number;
}

interface TrialState {
  /** Index of the rung it runs to next. */
  target: number;
  /** The rung index it waits at (paused there), or null while it runs. */
  waitingAt: number | null;
}

export class PromotionAsha implements Scheduler {
  readonly name = "promotion";
  readonly options: PromotionOptions;
  /** Rung milestones, lowest first; the last is max_t. */
  readonly milestones: readonly number[];
  readonly #sign: number;
  readonly #trials = new Map<string, TrialState>();
  /** Per rung index below the top: trial → value, in arrival order. */
  readonly #recorded: Map<string, number>[];
  /** Per rung index below the top: trials promoted out of it. */
  readonly #promoted: Set<string>[];

  constructor(options: PromotionOptions) {
    this.options = options;
    const below = rungMilestones(options.gracePeriod, options.reductionFactor, options.maxT, 0).filter((m) => m < options.maxT);
    this.milestones = [...below, options.maxT];
    this.#sign = signOf(options.mode);
    this.#recorded = below.map(() => new Map());
    this.#promoted = below.map(() => new Set());
  }

  #trial(id: string): TrialState {
    let t = this.#trials.get(id);
    if (!t) {
      t = { target: 0, waitingAt: null };
      this.#trials.set(id, t);
    }
    return t;
  }

  onTrialAdd(trial: string): { bracket: number | null } {
    this.#trial(trial);
    return { bracket: null };
  }

  onResult(trial: string, t: number, value: number): SchedulerDecision {
    const s = this.#trial(trial);
    const top = this.milestones.length - 1;
    if (s.waitingAt !== null)
      return { decision: "CONTINUE", rung: null, cutoff: null, by: this.name, reason: "paused (a late result)" };
    if (t >= this.options.maxT)
      return { decision: "STOP", rung: this.options.maxT, cutoff: null, by: this.name, reason: "max_t" };
    const milestone = this.milestones[s.target] as number;
    if (s.target >= top || t < milestone)
      return { decision: "CONTINUE", rung: null, cutoff: null, by: this.name, reason: "between rungs" };
    (this.#recorded[s.target] as Map<string, number>).set(trial, value);
    s.waitingAt = s.target;
    return { decision: "PAUSE", rung: milestone, cutoff: null, by: this.name, reason: `reached rung ${milestone}` };
  }

  onComplete(): void {}

  /** Trials of rung `k` in rank order (best first; NaN never ranks). */
  #ranked(k: number): string[] {
    const entries = [...(this.#recorded[k] as Map<string, number>).entries()].filter(([, v]) => !Number.isNaN(v));
    // Stable sort: equal values keep their arrival order.
    return entries.sort((a, b) => this.#sign * (b[1] - a[1])).map(([trial]) => trial);
  }

  /**
   * The next promotion, or null: Li et al.'s get_job. `ready` says whether a waiting trial can be
   * resumed now (its paused attempt has ended); one that is not is skipped for now.
   */
  nextPromotion(ready: (trial: string) => boolean = () => true): Promotion | null {
    for (let k = this.#recorded.length - 1; k >= 0; k--) {
      const recorded = this.#recorded[k] as Map<string, number>;
      const quota = Math.floor(recorded.size / this.options.reductionFactor);
      if (quota === 0) continue;
      for (const trial of this.#ranked(k).slice(0, quota)) {
        if ((this.#promoted[k] as Set<string>).has(trial)) continue;
        if (this.#trials.get(trial)?.waitingAt !== k || !ready(trial)) continue;
        return { trial, rung: k + 1, milestone: this.milestones[k + 1] as number };
      }
    }
    return null;
  }

  /**
   * Records a promotion (the live coordinator's, or one read back from a `queued` event; the same one
   * twice changes nothing). `rung` is the index the trial goes on to.
   */
  onPromote(trial: string, rung: number): void {
    const s = this.#trial(trial);
    if (s.target >= rung && s.waitingAt === null) return;
    const from = rung - 1;
    if (from >= 0 && from < this.#promoted.length) (this.#promoted[from] as Set<string>).add(trial);
    s.target = rung;
    s.waitingAt = null;
  }

  /** The rung index a trial waits at, or null while it runs (or was never paused). */
  waitingAt(trial: string): number | null {
    return this.#trials.get(trial)?.waitingAt ?? null;
  }
}

function signOf(mode: MetricMode): number {
  return mode === "max" ? 1 : -1;
}
