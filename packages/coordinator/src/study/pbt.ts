import { createRng, type Rng } from "../common/index.js";
import type { PbtOptions, Scheduler, SchedulerDecision } from "../scheduling/index.js";
import { type ParamSpec, type ParamValue, sampleParam } from "./search-space.js";

/**
 * Population-based training (Jaderberg et al. 2017), as Ray Tune's PopulationBasedTraining does it
 * asynchronously:
 *
 *   ready      a trial's result at least `perturbationInterval` past its last look is looked at: its
 *              score is recorded and the population (every trial with a recorded score) is ranked;
 *   quantiles  n = ⌈population · quantileFraction⌉, at most ⌊population / 2⌋ (none with one trial): the
 *              bottom n and the top n;
 *   exploit    a trial in the bottom n goes on from the latest checkpoint of a trial drawn from the top
 *              n (one that has stored a checkpoint and has not ended), with that trial's parameters …
 *   explore    … perturbed: each parameter named in `hyperparam_mutations` is drawn again from its
 *              search-space distribution with probability `resampleProbability`, else a number is
 *              multiplied by 0.8 or 1.2 (rounded for randint) and a grid or choice value moves one
 *              place left or right in its list (staying at the ends).
 *
 * The decision is EXPLOIT, carrying the donor and the new parameters; the coordinator stops the trial,
 * points its checkpoint index at the donor's snapshot and queues its next attempt with the new
 * parameters (a `queued` event with `exploitOf` and `params`, which `onExploit` reads back). Every
 * random draw comes from one seeded stream, in call order: the decisions are a pure function of the
 * event stream, as for every scheduler.
 */

interface TrialState {
  params: Record<string, ParamValue>;
  /** The time attribute of its last look (0 before any). */
  lastLook: number;
  /** Its score at that look; null before any. */
  score: number | null;
  /** It has stored a checkpoint: it may donate. */
  canDonate: boolean;
  /** It reached max_t: nothing is left to train from its checkpoint, so it donates no more. */
  done: boolean;
  /** Arrival order, for ties. */
  order: number;
}

export class Pbt implements Scheduler {
  readonly name = "pbt";
  readonly options: PbtOptions;
  readonly #mutations: Readonly<Record<string, ParamSpec>>;
  readonly #rng: Rng;
  readonly #sign: number;
  readonly #trials = new Map<string, TrialState>();

  constructor(options: PbtOptions, mutations: Readonly<Record<string, ParamSpec>>, seed: number) {
    this.options = options;
    this.#mutations = mutations;
    this.#rng = createRng(seed, "pbt");
    this.#sign = options.mode === "max" ? 1 : -1;
  }

  #trial(id: string): TrialState {
    let t = this.#trials.get(id);
    if (!t) {
      t = { params: {}, lastLook: 0, score: null, canDonate: false, done: false, order: this.#trials.size };
      this.#trials.set(id, t);
    }
    return t;
  }

  onTrialAdd(trial: string): { bracket: number | null } {
    this.#trial(trial);
    return { bracket: null };
  }

  /** A trial's parameters: its first ones (`created`), then those of each exploit. */
  setParams(trial: string, params: Readonly<Record<string, ParamValue>>): void {
    this.#trial(trial).params = { ...params };
  }

  /** The trial stored a checkpoint: from now on it may donate one. */
  onCheckpoint(trial: string): void {
    this.#trial(trial).canDonate = true;
  }

  /** Scores rank best first; NaN and no score rank last. */
  #rank(): string[] {
    const scored = [...this.#trials.entries()].filter(([, s]) => s.score !== null);
    const key = (s: TrialState) => (s.score === null || Number.isNaN(s.score) ? Number.NEGATIVE_INFINITY : this.#sign * s.score);
    return scored.sort((a, b) => key(b[1]) - key(a[1]) || a[1].order - b[1].order).map(([id]) => id);
  }

  onResult(trial: string, t: number, value: number): SchedulerDecision {
    const s = this.#trial(trial);
    if (t >= this.options.maxT) return { decision: "STOP", rung: null, cutoff: null, by: this.name, reason: "max_t" };
    if (t - s.lastLook < this.options.perturbationInterval)
      return { decision: "CONTINUE", rung: null, cutoff: null, by: this.name, reason: "between looks" };
    s.lastLook = t;
    s.score = value;
    const ranked = this.#rank();
    if (ranked.length <= 1) return { decision: "CONTINUE", rung: t, cutoff: null, by: this.name, reason: "no population yet" };
    let n = Math.ceil(ranked.length * this.options.quantileFraction);
    if (n > ranked.length / 2) n = Math.floor(ranked.length / 2);
    const top = ranked.slice(0, n);
    const bottom = ranked.slice(ranked.length - n);
    if (!bottom.includes(trial))
      return { decision: "CONTINUE", rung: t, cutoff: null, by: this.name, reason: "not in the bottom quantile" };
    const donors = top.filter((d) => d !== trial && this.#trials.get(d)?.canDonate && !this.#trials.get(d)?.done);
    if (donors.length === 0)
      return {
        decision: "CONTINUE",
        rung: t,
        cutoff: null,
        by: this.name,
        reason: "no trial of the top quantile has a checkpoint",
      };
    const donor = donors[Math.floor(this.#rng.next() * donors.length)] as string;
    const params = this.#explore((this.#trials.get(donor) as TrialState).params);
    const cutoff = this.#trials.get(top.at(-1) as string)?.score ?? null;
    return {
      decision: "EXPLOIT",
      rung: t,
      cutoff,
      by: this.name,
      reason: `bottom ${n} of ${ranked.length}: exploit ${donor}`,
      exploit: { donor, params },
    };
  }

  /** The explore step on a donor's parameters (see the class comment). */
  #explore(from: Readonly<Record<string, ParamValue>>): Record<string, ParamValue> {
    const out: Record<string, ParamValue> = { ...from };
    for (const [name, spec] of Object.entries(this.#mutations)) {
      const cur = from[name];
      if (cur === undefined || spec.kind === "constant") continue;
      if (this.#rng.next() < this.options.resampleProbability) {
        out[name] = sampleParam(spec, this.#rng);
        continue;
      }
      if (spec.kind === "grid" || spec.kind === "choice") {
        const i = spec.values.indexOf(cur);
        const step = this.#rng.next() < 0.5 ? -1 : 1;
        out[name] = spec.values[Math.max(0, Math.min(spec.values.length - 1, Math.max(0, i) + step))] as ParamValue;
        continue;
      }
      if (typeof cur !== "number") continue;
      const factor = this.#rng.next() < 0.5 ? 0.8 : 1.2;
      out[name] = spec.kind === "randint" ? Math.round(cur * factor) : cur * factor;
    }
    return out;
  }

  /**
   * The trial went on from `donor`'s checkpoint with `params` (the coordinator's `queued` event says
   * so): it takes the donor's last look and score, as Ray's exploit leaves them.
   */
  onExploit(trial: string, donor: string, params: Readonly<Record<string, ParamValue>>): void {
    const s = this.#trial(trial);
    const d = this.#trials.get(donor);
    s.params = { ...params };
    if (d) {
      s.lastLook = d.lastLook;
      s.score = d.score;
    }
  }

  onComplete(trial: string): void {
    this.#trial(trial).done = true;
  }
}
