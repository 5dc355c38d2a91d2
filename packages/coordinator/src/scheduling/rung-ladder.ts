/**
 * The ASHA rung ladder, computed exactly as Ray Tune's `_Bracket` does.
 *
 * Bracket s (0-based) has
 *
 *     count_s = trunc( ln(max_t / grace) / ln(rf) - s + 1 )
 *
 * rungs, in float64 with natural logs, truncated toward zero (Python `int()`); zero or less is an
 * empty bracket. Its milestones are grace * rf^(s+k) for k = 0 .. count_s - 1, so bracket s starts at
 * grace * rf^s, not at grace. The top milestone is at most max_t and equals it only when max_t/grace is
 * an exact power of rf AND the float64 log ratio does not land one ulp below that integer.
 *
 * That last clause is platform dependent in Ray (numpy's AVX-512 log differs from libm). What
 * JavaScript's `Math.log` (V8) gives for the known hazard cases, pinned in asha.test.ts:
 *
 *     grace, rf, max_t   ratio in JS             rungs   (AVX-512 numpy / libm / exact)
 *     1, 3, 243          5                       6       (6 / 5 / 6)
 *     1, 10, 1000        2.9999999999999996      3       (4 / 3 / 4)
 *     1, 6, 216          3.0000000000000004      4       (3 / 4 / 4)
 *
 * Only the rung equal to max_t can be affected, and with the default stop_last_trials=true no result
 * ever evaluates that rung (the max_t short-circuit answers first); it matters only with
 * stop_last_trials=false or through on_trial_complete recording.
 */

/** Number of rungs of bracket `s` (may be <= 0: an empty bracket). */
export function rungCount(gracePeriod: number, reductionFactor: number, maxT: number, s: number): number {
  return Math.trunc(Math.log(maxT / gracePeriod) / Math.log(reductionFactor) - s + 1);
}

/** Milestones of bracket `s`, lowest first (Ray stores and scans them highest first). */
export function rungMilestones(gracePeriod: number, reductionFactor: number, maxT: number, s: number): number[] {
  const count = rungCount(gracePeriod, reductionFactor, maxT, s);
  const out: number[] = [];
  for (let k = 0; k < count; k++) out.push(gracePeriod * reductionFactor ** (k + s));
  return out;
}

/**
 * Bracket assignment probabilities: a softmax over rung counts, exp(count_b - max_count) normalised,
 * where an empty bracket counts as 0 rungs (Ray uses `len(bracket._rungs)`). Counts 5, 4, 3 give about
 * 0.665, 0.245, 0.090.
 */
export function bracketProbabilities(rungCounts: readonly number[]): number[] {
  const sizes = rungCounts.map((c) => Math.max(0, c));
  const max = Math.max(...sizes);
  const e = sizes.map((s) => Math.E ** (s - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

/**
 * numpy `random.choice(len(p), p=p)`: cumulative sums normalised by the last one, then the first
 * index whose cumulative value exceeds `u` (searchsorted, side="right"). `u` is uniform in [0, 1).
 */
export function drawIndex(probabilities: readonly number[], u: number): number {
  const cdf: number[] = [];
  let acc = 0;
  for (const p of probabilities) {
    acc += p;
    cdf.push(acc);
  }
  const last = cdf[cdf.length - 1] ?? 1;
  for (let i = 0; i < cdf.length; i++) if ((cdf[i] as number) / last > u) return i;
  return cdf.length - 1;
}
