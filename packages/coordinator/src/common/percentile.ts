/**
 * numpy's `nanpercentile` with the default "linear" method (R type 7, Excel PERCENTILE.INC), computed
 * step for step in float64 as numpy >= 1.22 does, so that ASHA cutoffs match Ray Tune to the last bit
 * (see the Ray semantics document, §6):
 *
 *   1. drop NaN; none left -> NaN
 *   2. sort ascending: v[0] <= ... <= v[n-1]
 *   3. f = q / 100, h = (n - 1) * f
 *   4. h >= n - 1 (only n = 1): numpy takes both neighbours as v[n-1]
 *   5. else i = floor(h), g = h - i, a = v[i], b = v[i+1]
 *   6. d = b - a; g >= 0.5 ? b - d * (1 - g) : a + d * g      (numpy's `_lerp`)
 *
 * Consequences kept on purpose, because Ray has them:
 * - rf = 3 tie artifact: f = 0.6666666666666667, and for n = 10 h = 6.000000000000001, so the cutoff
 *   is a hair above v[6] when v[7] > v[6].
 * - Infinities: a neighbour pair touching ±inf makes d infinite or NaN and the result NaN (a single
 *   +inf gives inf - inf = NaN too), except where the formula yields ±inf itself ({-inf, 5} -> -inf).
 */
export function nanPercentile(values: Iterable<number>, q: number): number {
  const v: number[] = [];
  for (const x of values) if (!Number.isNaN(x)) v.push(x);
  const n = v.length;
  if (n === 0) return Number.NaN;
  v.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const f = q / 100;
  const h = (n - 1) * f;
  let a: number;
  let b: number;
  let g: number;
  if (h >= n - 1) {
    // numpy sets both indexes to -1 (the last element); gamma is then h + 1, always >= 0.5.
    a = v[n - 1] as number;
    b = a;
    g = h + 1;
  } else if (h < 0) {
    a = v[0] as number;
    b = a;
    g = h;
  } else {
    const i = Math.floor(h);
    a = v[i] as number;
    b = v[i + 1] as number;
    g = h - i;
  }
  const d = b - a;
  return g >= 0.5 ? b - d * (1 - g) : a + d * g;
}

/** The ASHA rung percentile for a reduction factor: q = (1 - 1/rf) * 100, in float64 as Ray computes it. */
export function ashaPercentile(reductionFactor: number): number {
  return (1 - 1 / reductionFactor) * 100;
}

/**
 * Cutoff of one ASHA rung from the scores recorded there: null when nothing is recorded (no cutoff,
 * the trial continues), NaN when only NaN is recorded, else the rung percentile.
 */
export function ashaCutoff(scores: Iterable<number>, reductionFactor: number): number | null {
  const all = [...scores];
  if (all.length === 0) return null;
  return nanPercentile(all, ashaPercentile(reductionFactor));
}
