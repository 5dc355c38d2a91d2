import { SchedulerOptionsError } from "../errors.js";
import { normalCdf, predictAt } from "./curve-fit.js";
import type { Scheduler, SchedulerDecision } from "./scheduler.js";

/**
 * Learning-curve-aware stopping: a trial is stopped when it is unlikely to beat the reference at the
 * horizon — P(value at maxT beats the k-th best final seen so far) < `probability`.
 *
 * Two predictions of the value at maxT, both in loss orientation (a "max" metric is negated inside):
 *
 * - the curve's own (curve-fit.ts): an ensemble of parametric learning curves fitted to this trial's
 *   points, mean and sd widened with the distance of extrapolation and with the recent slope, so a
 *   steeply improving curve keeps a fat tail. It needs three points; it cannot see a flat curve that
 *   will drop late.
 * - the peers' (empirical), from trials that reached maxT, two ways, the larger P kept:
 *   by value: the K nearest to this one at t on (value at t, change since t/2), each scaled by the
 *   population's robust spread at t (K = √completed in [5, 20]); neighbour j predicts
 *   final_j + (y(t) − y_j(t));
 *   by rank: this trial's quantile among ALL trials' values at t (stopped ones included) against the
 *   completed trials' quantiles at t; the K nearest within 0.1 quantiles predict their own final (none
 *   that close: no rank evidence).
 *   Each set of predictions is smoothed with a Gaussian kernel (Silverman's bandwidth). The peers are
 *   what knows that curves still flat at t=9 sometimes drop. Why both: completed trials are survivors
 *   of this very scheduler, so a flat-then-late-dropping curve (TaskSet LSTM128's best) has no completed
 *   neighbour by value — those were all stopped — while its rank at t (top 5 % at t=9) still matches
 *   completed trials that did well. The rank view alone is too lenient on easy files, the value view
 *   alone loses such curves; the max of the two was the best worst-file hit rate on the TaskSet
 *   replay (see the report of the change that added this file).
 *
 * The mixture: P = (1 − w)·P_curve + w·P_peers with w = completed / (completed + 10) — the peers count for
 * more as there are more of them; with no usable curve fit (fewer than 3 points) P = P_peers, and with no
 * peer that has a value at t, P = P_curve.
 *
 * The decision, per result (trial, t, value):
 *
 *   record (t, value); t >= maxT and value finite: it is the trial's final (the first such report)
 *   t >= maxT                                      -> STOP "max_t"
 *   value NaN or ±∞                                -> STOP "diverged value"
 *   t < gracePeriod                                -> CONTINUE "grace period"
 *   milestones given and no milestone in (last evaluated, t] not yet evaluated for this trial
 *                                                  -> CONTINUE "not a milestone" (rung null)
 *   fewer than minCompleted finals                 -> fallback, the median rule at t: STOP iff the value is
 *                                                     worse than the median of the other trials' values
 *                                                     at t (their latest value at or before t, trials
 *                                                     that got that far only; at least 3 of them)
 *   reference = k-th best final seen (observed finals only, never predictions)
 *   P < probability                                -> STOP; else CONTINUE
 *
 * `cutoff` is the reference (metric units; the median in the fallback); `rung` the milestone evaluated
 * (a result that jumps past a milestone is evaluated for the highest one it passed), null without
 * milestones; `reason` e.g. "P(beat 0.4300 at 50) = 0.80 % (curve 0.20 %, peers 1.40 %)".
 *
 * Pure and deterministic: no clock, no randomness at all (the seed is kept for the Scheduler contract
 * and for future tie-breaks; every decision is a function of the calls alone), so `rung replay` gets the
 * same decisions. Cost per decision: one curve fit (~90 least squares of O(points)) and one pass over the
 * completed trials (O(completed · log points)).
 */
export interface CurveStoppingOptions {
  readonly mode: "max" | "min";
  /** The horizon: the probability is about the value at maxT. > 0. */
  readonly maxT: number;
  /** No decision before t >= gracePeriod. >= 0. */
  readonly gracePeriod: number;
  /** Decide only when a result reaches one of these t (e.g. ASHA's rungs 1,3,9,27); absent: at every result. */
  readonly milestones?: readonly number[];
  /** Stop when P(value at maxT beats the reference) < probability. In (0, 1). Default 0.05 in the wiring. */
  readonly probability: number;
  /** Reference = the k-th best final value known so far. Integer >= 1. Default 1 (the best). */
  readonly topK?: number;
  /** With fewer trials with a value at maxT than this, the median rule decides instead. Integer >= 1. Default 3. */
  readonly minCompleted?: number;
  readonly seed: number;
}

/** Peers' weight in the mixture: completed / (completed + PEER_PRIOR). */
const PEER_PRIOR = 10;
const FALLBACK_MIN_OTHERS = 3;
/** The rank view's neighbourhood: completed trials within this many quantiles of the trial at t. */
const RANK_WINDOW = 0.1;

interface TrialCurve {
  /** Sorted by t; one value per t (the last report wins); values in loss orientation. */
  readonly ts: number[];
  readonly ys: number[];
  /** Index into the sorted milestones of the next one not evaluated yet. */
  nextMilestone: number;
  final: number | null;
}

export class CurveStopping implements Scheduler {
  readonly name = "curve";
  readonly options: Required<Omit<CurveStoppingOptions, "milestones">> & { readonly milestones: readonly number[] | null };
  private readonly sign: 1 | -1;
  private readonly trials = new Map<string, TrialCurve>();
  /** Trials with a final value, in the order they got it. */
  private readonly completed: TrialCurve[] = [];
  /** Their finals, loss orientation, sorted ascending (best first). */
  private readonly finals: number[] = [];
  /** Every trial's value at each exact t it reported (latest report), loss orientation, sorted; ±∞ for non-finite. */
  private readonly atT = new Map<number, number[]>();

  constructor(o: CurveStoppingOptions) {
    const problems: { option: string; message: string }[] = [];
    const bad = (option: string, message: string) => problems.push({ option, message });
    if (o.mode !== "max" && o.mode !== "min") bad("mode", `must be one of max, min, got ${String(o.mode)}`);
    if (!(Number.isFinite(o.maxT) && o.maxT > 0)) bad("maxT", `must be a finite number > 0, got ${o.maxT}`);
    if (!(Number.isFinite(o.gracePeriod) && o.gracePeriod >= 0))
      bad("gracePeriod", `must be a finite number >= 0, got ${o.gracePeriod}`);
    if (!(o.probability > 0 && o.probability < 1)) bad("probability", `must be in (0, 1), got ${o.probability}`);
    const topK = o.topK ?? 1;
    if (!Number.isSafeInteger(topK) || topK < 1) bad("topK", `must be an integer >= 1, got ${topK}`);
    const minCompleted = o.minCompleted ?? 3;
    if (!Number.isSafeInteger(minCompleted) || minCompleted < 1)
      bad("minCompleted", `must be an integer >= 1, got ${minCompleted}`);
    if (!Number.isSafeInteger(o.seed)) bad("seed", `must be a safe integer, got ${o.seed}`);
    let milestones: number[] | null = null;
    if (o.milestones !== undefined) {
      if (o.milestones.some((m) => !(Number.isFinite(m) && m > 0)))
        bad("milestones", `must be finite numbers > 0, got ${o.milestones.join(", ")}`);
      milestones = [...new Set(o.milestones)].sort((a, b) => a - b);
    }
    if (problems.length > 0) throw new SchedulerOptionsError(problems);
    this.options = {
      mode: o.mode,
      maxT: o.maxT,
      gracePeriod: o.gracePeriod,
      milestones,
      probability: o.probability,
      topK,
      minCompleted,
      seed: o.seed,
    };
    this.sign = o.mode === "max" ? -1 : 1;
  }

  onTrialAdd(trial: string, options?: { readonly bracket?: number | null | undefined }): { bracket: number | null } {
    if (options?.bracket !== undefined && options.bracket !== null) {
      throw new RangeError(`bracket ${options.bracket} given, but the curve scheduler has no brackets`);
    }
    this.curve(trial);
    return { bracket: null };
  }

  onResult(trial: string, t: number, value: number): SchedulerDecision {
    const c = this.curve(trial);
    this.record(c, t, value);
    const decided = (
      decision: "CONTINUE" | "STOP",
      reason: string,
      rung: number | null = null,
      cutoff: number | null = null,
    ) => ({
      decision,
      rung,
      cutoff,
      by: this.name,
      reason,
    });
    const { maxT, gracePeriod, milestones, minCompleted, probability, topK } = this.options;
    if (t >= maxT) return decided("STOP", "max_t");
    if (!Number.isFinite(value)) return decided("STOP", "diverged value");
    if (!(t >= gracePeriod)) return decided("CONTINUE", "grace period");

    let rung: number | null = null;
    if (milestones !== null) {
      let m: number | null = null;
      while (c.nextMilestone < milestones.length && (milestones[c.nextMilestone] as number) <= t) {
        const candidate = milestones[c.nextMilestone] as number;
        c.nextMilestone++;
        if (candidate >= gracePeriod) m = candidate;
      }
      if (m === null) return decided("CONTINUE", "not a milestone");
      rung = m;
    }

    const y = this.sign * value;
    if (this.finals.length < minCompleted) return this.fallback(trial, t, y, rung);

    const ref = this.finals[Math.min(topK, this.finals.length) - 1] as number;
    const curve = predictAt(
      c.ts.map((tt, i) => ({ t: tt, y: c.ys[i] as number })),
      maxT,
      "min",
    );
    const pCurve = curve.usable ? normalCdf((ref - curve.mean) / curve.sd) : Number.NaN;
    const pPeers = this.peers(c, t, y, ref);
    const n = this.completed.length;
    const w = n / (n + PEER_PRIOR);
    const p = Number.isNaN(pCurve)
      ? Number.isNaN(pPeers)
        ? Number.NaN
        : pPeers
      : Number.isNaN(pPeers)
        ? pCurve
        : (1 - w) * pCurve + w * pPeers;
    const cutoff = this.sign * ref;
    if (Number.isNaN(p)) return decided("CONTINUE", `no prediction at ${t} (${curve.why ?? "no peers"})`, rung, cutoff);
    const reason = `P(beat ${fmt(cutoff)} at ${maxT}) = ${pct(p)} (curve ${Number.isNaN(pCurve) ? "–" : pct(pCurve)}, peers ${
      Number.isNaN(pPeers) ? "–" : pct(pPeers)
    })`;
    return decided(p < probability ? "STOP" : "CONTINUE", reason, rung, cutoff);
  }

  onComplete(trial: string, t: number, value: number): void {
    this.record(this.curve(trial), t, value);
  }

  private curve(trial: string): TrialCurve {
    let c = this.trials.get(trial);
    if (!c) {
      c = { ts: [], ys: [], nextMilestone: 0, final: null };
      this.trials.set(trial, c);
    }
    return c;
  }

  private record(c: TrialCurve, t: number, value: number): void {
    if (!Number.isFinite(t)) return;
    const y = this.sign * value;
    const { ts, ys } = c;
    const last = ts.length - 1;
    const yb = Number.isFinite(y) ? y : Number.POSITIVE_INFINITY;
    let bucket = this.atT.get(t);
    if (!bucket) {
      bucket = [];
      this.atT.set(t, bucket);
    }
    if (last < 0 || (ts[last] as number) < t) {
      ts.push(t);
      ys.push(y);
      bucket.splice(upperBound(bucket, yb), 0, yb);
    } else {
      const i = lowerBound(ts, t);
      if (ts[i] === t) {
        const old = Number.isFinite(ys[i] as number) ? (ys[i] as number) : Number.POSITIVE_INFINITY;
        bucket.splice(lowerBound(bucket, old), 1);
        bucket.splice(upperBound(bucket, yb), 0, yb);
        ys[i] = y;
      } else {
        bucket.splice(upperBound(bucket, yb), 0, yb);
        ts.splice(i, 0, t);
        ys.splice(i, 0, y);
      }
    }
    if (c.final === null && t >= this.options.maxT && Number.isFinite(y)) {
      c.final = y;
      this.completed.push(c);
      this.finals.splice(upperBound(this.finals, y), 0, y);
    }
  }

  /** The median rule at t, before there are enough finals to compare with. */
  private fallback(trial: string, t: number, y: number, rung: number | null): SchedulerDecision {
    const at: number[] = [];
    for (const [other, c] of this.trials) {
      if (other === trial || c.ts.length === 0 || !((c.ts[c.ts.length - 1] as number) >= t)) continue;
      const v = valueAt(c, t);
      if (v !== undefined && !Number.isNaN(v)) at.push(v);
    }
    const pre = `${this.finals.length} of ${this.options.minCompleted} completed trials needed; median rule`;
    if (at.length < FALLBACK_MIN_OTHERS)
      return { decision: "CONTINUE", rung, cutoff: null, by: this.name, reason: `${pre}: ${at.length} others reached ${t}` };
    at.sort((a, b) => a - b);
    const mid = at.length >> 1;
    const median = at.length % 2 === 1 ? (at[mid] as number) : ((at[mid - 1] as number) + (at[mid] as number)) / 2;
    const stop = y > median;
    return {
      decision: stop ? "STOP" : "CONTINUE",
      rung,
      cutoff: this.sign * median,
      by: this.name,
      reason: `${pre}: ${stop ? "worse than" : "not worse than"} the median ${fmt(this.sign * median)} at ${t}`,
    };
  }

  /** P(final beats ref) from the completed trials nearest to this one at t; NaN when none has a value at t. */
  private peers(c: TrialCurve, t: number, y: number, ref: number): number {
    const byValue = this.peersByValue(c, t, y, ref);
    const byRank = this.peersByRank(t, y, ref);
    if (Number.isNaN(byRank)) return byValue;
    if (Number.isNaN(byValue)) return byRank;
    return Math.max(byValue, byRank);
  }

  /** Quantile of y among all trials' values at exactly t (0 = best); NaN with fewer than 2 values. */
  private quantile(t: number, y: number): number {
    const b = this.atT.get(t);
    if (!b || b.length < 2) return Number.NaN;
    const lo = lowerBound(b, y);
    const hi = upperBound(b, y);
    return (lo + (hi - lo) / 2) / b.length;
  }

  private peersByRank(t: number, y: number, ref: number): number {
    const q = this.quantile(t, y);
    if (Number.isNaN(q)) return Number.NaN;
    const qs: number[] = [];
    const fs: number[] = [];
    for (const p of this.completed) {
      const v = valueAt(p, t);
      if (v === undefined) continue;
      qs.push(this.quantile(t, Number.isFinite(v) ? v : Number.POSITIVE_INFINITY));
      fs.push(p.final as number);
    }
    const n = qs.length;
    if (n === 0) return Number.NaN;
    const k = Math.min(n, Math.max(5, Math.min(20, Math.round(Math.sqrt(n)))));
    // Only peers of a similar rank: a trial ranked far below every completed one is not like them.
    const idx = qs
      .map((d, i) => [Math.abs(d - q), i] as const)
      .filter(([d]) => d <= RANK_WINDOW)
      .sort((a, b) => a[0] - b[0] || a[1] - b[1])
      .slice(0, k)
      .map(([, i]) => i);
    if (idx.length === 0) return Number.NaN;
    const preds = idx.map((i) => fs[i] as number);
    return kernelShare(preds, ref);
  }

  private peersByValue(c: TrialCurve, t: number, y: number, ref: number): number {
    const tPrev = previousTime(c, t);
    const dy = tPrev === undefined ? 0 : y - (valueAt(c, tPrev) as number);
    const ys: number[] = [];
    const ds: number[] = [];
    const fs: number[] = [];
    for (const p of this.completed) {
      const v = valueAt(p, t);
      if (v === undefined || !Number.isFinite(v)) continue;
      let d = 0;
      if (tPrev !== undefined) {
        const pv = valueAt(p, tPrev);
        d = pv === undefined || !Number.isFinite(pv) ? 0 : v - pv;
      }
      ys.push(v);
      ds.push(d);
      fs.push(p.final as number);
    }
    const n = ys.length;
    if (n === 0) return Number.NaN;
    const hy = spread(ys);
    const hd = spread(ds);
    const dist = ys.map((v, i) => ((v - y) / hy) ** 2 + (tPrev === undefined ? 0 : (((ds[i] as number) - dy) / hd) ** 2));
    const k = Math.min(n, Math.max(5, Math.min(20, Math.round(Math.sqrt(n)))));
    const idx = dist
      .map((d, i) => [d, i] as const)
      .sort((a, b) => a[0] - b[0] || a[1] - b[1])
      .slice(0, k)
      .map(([, i]) => i);
    const preds = idx.map((i) => (fs[i] as number) + (y - (ys[i] as number)));
    return kernelShare(preds, ref);
  }
}

/** Share of a Gaussian-kernel density over `preds` (Silverman's bandwidth) below ref. */
function kernelShare(preds: readonly number[], ref: number): number {
  const k = preds.length;
  const mean = preds.reduce((a, b) => a + b, 0) / k;
  const sd = Math.sqrt(preds.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, k - 1));
  const h = Math.max(1.06 * sd * k ** -0.2, 1e-9 * (Math.abs(mean) + 1e-300));
  let p = 0;
  for (const f of preds) p += normalCdf((ref - f) / h);
  return p / k;
}

function lowerBound(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((xs[mid] as number) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function upperBound(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((xs[mid] as number) <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The latest value at or before t; undefined when the curve starts after t. */
function valueAt(c: TrialCurve, t: number): number | undefined {
  const i = upperBound(c.ts, t) - 1;
  return i < 0 ? undefined : c.ys[i];
}

/** The trial's own latest time at or before t/2 (the start of the "recent change"); undefined if none. */
function previousTime(c: TrialCurve, t: number): number | undefined {
  const i = upperBound(c.ts, t / 2) - 1;
  return i < 0 ? undefined : c.ts[i];
}

/** Robust spread (IQR / 1.349), never zero. */
function spread(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.round(p * (s.length - 1))))] as number;
  const iqr = (q(0.75) - q(0.25)) / 1.349;
  const med = q(0.5);
  return Math.max(iqr, 1e-3 * Math.abs(med), 1e-12);
}

function fmt(x: number): string {
  return Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : x.toFixed(4);
}

function pct(p: number): string {
  return `${(100 * p).toFixed(p < 0.1 ? 2 : 1)} %`;
}
