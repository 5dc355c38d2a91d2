/**
 * One trial's learning curve, extrapolated with its uncertainty: `predictAt(points, T, mode)` says
 * what the metric is likely to be at time T, as a mean and a standard deviation.
 *
 * The model. Three families of learning curves from Domhan et al. 2015, each with one asymptote c and
 * one scale a (which enter linearly) and one or two shape parameters θ (which do not), written in
 * loss orientation (lower is better; a "max" metric is negated on the way in and out):
 *
 *   pow3     y = c + a · t^(−α)                  α in [0.05, 4]
 *   exp3     y = c + a · e^(−β t)                β·t_last in [0.05, 20]
 *   logpow   y = c + a / (1 + (t / s)^α)         α in {0.7, 1.5, 3}, s in [t_first / 2, t_last]
 *                                                (a sigmoid in log t: flat, then a drop, then flat)
 *
 * For each θ on a fixed log-spaced grid, c and a are the closed-form least-squares solution (five running
 * sums, no iterative optimizer), so one θ costs O(n). The best grid point of the 1-D families is then
 * refined by a few golden-section steps, so an exact power law or exponential is recovered to within
 * rounding.
 *
 * The mixture. Every evaluated (family, θ) is a candidate with the profile likelihood RSS_θ^(−n/2); within a
 * family the candidates are weighted by it (a posterior over θ on the grid), across families by BIC
 * (n·log(RSS/n) + k·log n, k = 3 or 4). The predictive distribution at T is that mixture of the candidates'
 * point predictions, plus observation noise, plus a term for extrapolating at all:
 *
 *   var = Σ w (μ_θ − mean)²                          spread of the fits that explain the data (parameter
 *                                                    uncertainty: few points or a still-steep curve → wide)
 *       + σ² · (1 + log(T / t_last))                 noise of the final value, growing with the distance
 *       + (κ · slope · log(T / t_last))²             misspecification: how far the recent slope per unit of
 *                                                    log t would carry the curve (κ = 0.5)
 *
 * σ² is the best candidate's residual variance (RSS / (n − 3)), never less than the noise seen in second
 * differences of the curve. A curve that is flat gets a small sd and is predicted to stay flat; one that is
 * still steep gets a wide one — which is what keeps it alive in CurveStopping. The model is deliberately
 * blind to late drops of a flat curve: that is the population's job (curve-stopping.ts).
 *
 * Input. Points may come in any order (sorted by t), repeat a t (the last report wins), have gaps, and
 * carry NaN or ±∞ values or non-positive or non-finite times: those are dropped and counted. Fewer than three
 * usable points: `usable: false` with a `why`. Nothing here throws on data.
 *
 * Cost: about 42 least-squares evaluations of O(n) each per call (8 + 5 golden steps for pow3 and exp3,
 * 12 for logpow): ~50 µs per call on 25 points; 1,000 trials × 50 results refitted at every result take
 * ~2.5 s on one core (incremental sums per trial would make it O(grid) per result: not done).
 */

/** One reported result: time (> 0) and value in the metric's own units. */
export interface CurvePoint {
  readonly t: number;
  readonly y: number;
}

export type CurveFamily = "pow3" | "exp3" | "logpow";

export interface FamilyFit {
  /** Share of the prediction (BIC weight across families); 0 when the family could not be fitted. */
  readonly weight: number;
  /** The family's own predictive mean and sd at T (its θ-mixture, without noise), metric units. */
  readonly mean: number;
  readonly sd: number;
  /** The best θ's parameters, in loss orientation (negated values for a "max" metric). */
  readonly best: { readonly c: number; readonly a: number; readonly theta: readonly number[]; readonly rss: number };
}

export interface CurvePrediction {
  /** Predicted value at T in the metric's own units; NaN when not usable. */
  readonly mean: number;
  /** Its standard deviation; NaN when not usable. */
  readonly sd: number;
  readonly usable: boolean;
  /** Why not usable (or what was dropped), for reasons and logs. */
  readonly why?: string;
  readonly models: Readonly<Partial<Record<CurveFamily, FamilyFit>>>;
  /** Points used after cleaning, and how many were dropped (duplicates, NaN/±∞, t <= 0). */
  readonly used: number;
  readonly dropped: number;
  readonly nonFinite: number;
  /** Largest usable t; NaN when there is none. */
  readonly lastT: number;
  /** Estimated observation noise (sd), metric units. */
  readonly noise: number;
}

export interface CleanCurve {
  readonly t: Float64Array;
  readonly y: Float64Array;
  /** Points dropped: duplicates of a t (earlier reports), non-finite values, non-finite or non-positive t. */
  readonly dropped: number;
  /** Of them, values that were NaN or ±∞. */
  readonly nonFinite: number;
  /** Of them, points whose t was not a finite positive number. */
  readonly badTime: number;
}

/** Sorted by t, the last report of each t kept, NaN/±∞ values and t <= 0 dropped (and counted). */
export function cleanCurve(points: readonly CurvePoint[]): CleanCurve {
  // Fast path: already strictly increasing, positive, finite (the usual case).
  let ordered = true;
  let prev = 0;
  for (const p of points) {
    if (!(p.t > prev) || !Number.isFinite(p.t) || !Number.isFinite(p.y)) {
      ordered = false;
      break;
    }
    prev = p.t;
  }
  if (ordered) {
    const t = new Float64Array(points.length);
    const y = new Float64Array(points.length);
    points.forEach((p, i) => {
      t[i] = p.t;
      y[i] = p.y;
    });
    return { t, y, dropped: 0, nonFinite: 0, badTime: 0 };
  }
  const last = new Map<number, number>();
  let badT = 0;
  for (const p of points) {
    if (!Number.isFinite(p.t) || !(p.t > 0)) {
      badT++;
      continue;
    }
    last.delete(p.t); // keep the order of the last report
    last.set(p.t, p.y);
  }
  let nonFinite = 0;
  const kept: [number, number][] = [];
  for (const [t, y] of last) {
    if (Number.isFinite(y)) kept.push([t, y]);
    else nonFinite++;
  }
  kept.sort((a, b) => a[0] - b[0]);
  return {
    t: Float64Array.from(kept, (k) => k[0]),
    y: Float64Array.from(kept, (k) => k[1]),
    dropped: points.length - kept.length,
    nonFinite,
    badTime: badT,
  };
}

const KAPPA = 0.5;
const POW_GRID = logGrid(0.05, 4, 8);
const EXP_GRID = logGrid(0.05, 20, 8); // β · t_last
const LOGPOW_ALPHA = [0.7, 1.5, 3] as const;
const LOGPOW_S = 4;

function logGrid(lo: number, hi: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(lo * (hi / lo) ** (i / (n - 1)));
  return out;
}

interface Candidate {
  rss: number;
  c: number;
  a: number;
  theta: number[];
  at: number; // prediction at T, loss orientation
}

/** One curve, prepared once per call: times, their logs, values centred on their mean. */
interface Data {
  readonly n: number;
  readonly t: Float64Array;
  readonly lt: Float64Array;
  readonly yc: Float64Array;
  readonly ym: number;
  /** Σ (y − ȳ)². */
  readonly syy: number;
}

/** 0: pow3 (θ = α), 1: exp3 (θ = β), 2: logpow (θ = α, s). */
type Basis = 0 | 1 | 2;
const powBasis: Basis = 0;
const expBasis: Basis = 1;
const logpowBasis: Basis = 2;

function basisAt(basis: Basis, t: number, lt: number, k0: number, k1: number): number {
  return basis === 0 ? Math.exp(-k0 * lt) : basis === 1 ? Math.exp(-k0 * t) : 1 / (1 + Math.exp(k0 * (lt - k1)));
}

/**
 * Least squares of y = c + a·φ_θ(t) in one pass (y is centred, so Σφ·yc is the covariance): c, a, RSS,
 * and the prediction at T. φ (almost) constant over the data: a is not identified, the model is the mean.
 */
function evaluate(d: Data, basis: Basis, theta: number[], T: number): Candidate {
  const { n, t, lt, yc } = d;
  const k0 = theta[0] as number;
  const k1 = basis === 2 ? Math.log(theta[1] as number) : 0;
  let sp = 0;
  let spp = 0;
  let spy = 0;
  for (let i = 0; i < n; i++) {
    const p = basisAt(basis, t[i] as number, lt[i] as number, k0, k1);
    sp += p;
    spp += p * p;
    spy += p * (yc[i] as number);
  }
  const mp = sp / n;
  const vpp = spp - sp * mp;
  const a = vpp > 1e-14 * (1 + mp * mp) * n ? spy / vpp : 0;
  const c = d.ym - a * mp;
  const rss = Math.max(0, d.syy - a * spy);
  return { rss, c, a, theta, at: c + a * basisAt(basis, T, Math.log(T), k0, k1) };
}

/** Golden-section refinement of a 1-D θ between two grid neighbours, on RSS. */
function refine(d: Data, basis: Basis, lo: number, hi: number, T: number, steps: number): Candidate[] {
  const g = (Math.sqrt(5) - 1) / 2;
  let a = Math.log(lo);
  let b = Math.log(hi);
  let x1 = b - g * (b - a);
  let x2 = a + g * (b - a);
  let f1 = evaluate(d, basis, [Math.exp(x1)], T);
  let f2 = evaluate(d, basis, [Math.exp(x2)], T);
  const out: Candidate[] = [f1, f2];
  for (let i = 0; i < steps; i++) {
    if (f1.rss < f2.rss) {
      b = x2;
      x2 = x1;
      f2 = f1;
      x1 = b - g * (b - a);
      f1 = evaluate(d, basis, [Math.exp(x1)], T);
      out.push(f1);
    } else {
      a = x1;
      x1 = x2;
      f1 = f2;
      x2 = a + g * (b - a);
      f2 = evaluate(d, basis, [Math.exp(x2)], T);
      out.push(f2);
    }
  }
  return out;
}

function fitOneDim(d: Data, basis: Basis, grid: readonly number[], T: number) {
  const cands = grid.map((g) => evaluate(d, basis, [g], T));
  let best = 0;
  for (let i = 1; i < cands.length; i++) if ((cands[i] as Candidate).rss < (cands[best] as Candidate).rss) best = i;
  const lo = grid[Math.max(0, best - 1)] as number;
  const hi = grid[Math.min(grid.length - 1, best + 1)] as number;
  // Grid candidates carry the θ-posterior; refined ones only sharpen the best (they are not extra mass).
  return { grid: cands, refined: refine(d, basis, lo, hi, T, 5) };
}

/** Weighted mean and variance of candidate predictions by profile likelihood RSS^(−n/2). */
function thetaMixture(cands: readonly Candidate[], n: number, rssFloor: number): { mean: number; v: number; minRss: number } {
  let minRss = Number.POSITIVE_INFINITY;
  for (const c of cands) if (c.rss < minRss) minRss = c.rss;
  const m = Math.max(minRss, rssFloor);
  let sw = 0;
  let s1 = 0;
  for (const c of cands) {
    const w = Math.exp((-n / 2) * Math.log(Math.max(c.rss, rssFloor) / m));
    sw += w;
    s1 += w * c.at;
  }
  const mean = s1 / sw;
  let v = 0;
  for (const c of cands) {
    const w = Math.exp((-n / 2) * Math.log(Math.max(c.rss, rssFloor) / m));
    v += (w * (c.at - mean) ** 2) / sw;
  }
  return { mean, v, minRss };
}

/**
 * Predictive distribution of the metric at time T from one trial's points. `mode` "max": larger is better
 * (fitted negated). Never throws on data; `usable: false` with `why` when it cannot predict.
 */
export function predictAt(points: readonly CurvePoint[], T: number, mode: "max" | "min"): CurvePrediction {
  const clean = cleanCurve(points);
  const n = clean.t.length;
  const notes: string[] = [];
  if (clean.nonFinite > 0) notes.push(`${clean.nonFinite} non-finite value${clean.nonFinite === 1 ? "" : "s"} dropped`);
  if (clean.badTime > 0)
    notes.push(`${clean.badTime} point${clean.badTime === 1 ? "" : "s"} with t <= 0 or non-finite t dropped`);
  const dropNote = notes.length > 0 ? notes.join("; ") : undefined;
  const unusable = (why: string): CurvePrediction => ({
    mean: Number.NaN,
    sd: Number.NaN,
    usable: false,
    why: dropNote ? `${why}; ${dropNote}` : why,
    models: {},
    used: n,
    dropped: clean.dropped,
    nonFinite: clean.nonFinite,
    lastT: n > 0 ? (clean.t[n - 1] as number) : Number.NaN,
    noise: Number.NaN,
  });
  if (!Number.isFinite(T) || !(T > 0)) return unusable(`horizon ${T} is not a positive time`);
  if (n < 3) return unusable(`too few points (${n} usable, 3 needed)`);

  const sign = mode === "max" ? -1 : 1;
  const ts = clean.t;
  const ys = clean.y.map((y) => sign * y);
  const tFirst = ts[0] as number;
  const tLast = ts[n - 1] as number;
  let scale = 0;
  for (const y of ys) scale = Math.max(scale, Math.abs(y));
  const rssFloor = n * (1e-9 * (scale + 1e-300)) ** 2;
  let ym = 0;
  for (const y of ys) ym += y / n;
  const yc = ys.map((y) => y - ym);
  let syy = 0;
  for (const y of yc) syy += y * y;
  const d: Data = { n, t: ts, lt: ts.map(Math.log), yc, ym, syy };

  // Work in t / t_last for the exponential so its grid fits any time unit.
  const pow = fitOneDim(d, powBasis, POW_GRID, T);
  const exp = fitOneDim(
    d,
    expBasis,
    EXP_GRID.map((b) => b / tLast),
    T,
  );
  const logpowGrid: Candidate[] = [];
  const sGrid = logGrid(tFirst / 2, Math.max(tLast, tFirst), LOGPOW_S);
  for (const al of LOGPOW_ALPHA) for (const s of sGrid) logpowGrid.push(evaluate(d, logpowBasis, [al, s], T));

  const families: { name: CurveFamily; k: number; cands: Candidate[]; best: Candidate }[] = [];
  const bestOf = (cs: readonly Candidate[]) => cs.reduce((b, c) => (c.rss < b.rss ? c : b));
  families.push({ name: "pow3", k: 3, cands: pow.grid, best: bestOf([...pow.grid, ...pow.refined]) });
  families.push({ name: "exp3", k: 3, cands: exp.grid, best: bestOf([...exp.grid, ...exp.refined]) });
  if (n >= 4) families.push({ name: "logpow", k: 4, cands: logpowGrid, best: bestOf(logpowGrid) });

  // BIC across families (their best fit); θ-mixture within, centred on the refined best.
  const bics = families.map((f) => n * Math.log(Math.max(f.best.rss, rssFloor) / n) + f.k * Math.log(n));
  const minBic = Math.min(...bics);
  const raw = bics.map((b) => Math.exp(-(b - minBic) / 2));
  const total = raw.reduce((a, b) => a + b, 0);
  let mean = 0;
  const fams: { w: number; mean: number; v: number }[] = [];
  const models: Partial<Record<CurveFamily, FamilyFit>> = {};
  families.forEach((f, i) => {
    const w = (raw[i] as number) / total;
    const mix = thetaMixture([...f.cands, f.best], n, rssFloor);
    // The refined best carries the family's point prediction; the grid gives its spread.
    const fm = f.best.at;
    const v = mix.v + (mix.mean - f.best.at) ** 2;
    fams.push({ w, mean: fm, v });
    mean += w * fm;
    models[f.name] = {
      weight: w,
      mean: sign * fm,
      sd: Math.sqrt(v),
      best: { c: f.best.c, a: f.best.a, theta: f.best.theta, rss: f.best.rss },
    };
  });
  let vModel = 0;
  for (const f of fams) vModel += f.w * (f.v + (f.mean - mean) ** 2);

  // Noise: the best fit's residual variance, at least what second differences show.
  const bestFit = families.reduce((b, f) => (f.best.rss < b.best.rss ? f : b));
  const dof = n - bestFit.k;
  let noiseVar = dof > 0 ? bestFit.best.rss / dof : 0;
  if (n >= 3) {
    let s2 = 0;
    for (let i = 1; i < n - 1; i++) {
      const d = (ys[i + 1] as number) - 2 * (ys[i] as number) + (ys[i - 1] as number);
      s2 += d * d;
    }
    // Var of a second difference of white noise is 6σ²; trends inflate it, so only a floor.
    const sdd = s2 / (6 * (n - 2));
    noiseVar = Math.max(noiseVar, dof > 0 ? 0.25 * sdd : sdd);
  }

  // Recent slope per unit of log t, over the last three points (or fewer).
  const j = Math.max(0, n - 3);
  const dlog = Math.log(tLast / (ts[j] as number));
  const slope = dlog > 0 ? ((ys[n - 1] as number) - (ys[j] as number)) / dlog : 0;
  const ext = Math.log(Math.max(1, T / tLast));
  const v = vModel + noiseVar * (1 + ext) + (KAPPA * slope * ext) ** 2;
  return {
    mean: sign * mean,
    sd: Math.sqrt(v),
    usable: true,
    ...(dropNote ? { why: dropNote } : {}),
    models,
    used: n,
    dropped: clean.dropped,
    nonFinite: clean.nonFinite,
    lastT: tLast,
    noise: Math.sqrt(noiseVar),
  };
}

/** Standard normal CDF (Abramowitz–Stegun 7.1.26 via erf; |error| < 1.5e-7). */
export function normalCdf(z: number): number {
  if (Number.isNaN(z)) return Number.NaN;
  if (z === Number.POSITIVE_INFINITY) return 1;
  if (z === Number.NEGATIVE_INFINITY) return 0;
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const y =
    1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + y) : 0.5 * (1 - y);
}
