/**
 * A model-based sampler: multivariate TPE (Bergstra et al. 2011; Falkner et al. 2018 for the joint
 * kernel) with a constant liar for running trials, and BOHB's budget rule on top. It suggests the next
 * trial's parameters from the history of earlier trials.
 *
 * It is a pure function of its inputs: (space, history, options, key) → params. No clock, no I/O, no
 * `Math.random`; every draw comes from `createRng(seed, "tpe:" + key)`, so a coordinator that restarts
 * and replays the same history suggests the same parameters, and two trials (two keys) draw differently.
 *
 * Ranking (`tpe`). Only "done" trials with at least one result are ranked, as Optuna ranks pruned trials:
 * a trial that reached a further t is better than one stopped earlier, whatever its value; at the same t
 * the better value (per `mode`) wins. A trial whose value at its last t is NaN or ±Inf (diverged) is worst.
 * The good group is the best gamma(n) = min(ceil(goodShare·n), 25) of the n ranked trials (never a diverged
 * one); everything else is bad: the rest of the ranked trials, failed trials, "done" trials without a
 * result and, with the constant liar, running trials.
 *
 * Constant liar. A running trial has no value yet; counted as a bad observation its parameters lower the
 * score of their neighbourhood, so a batch of suggestions made while trials run spreads out instead of
 * piling onto the current best point. Without the liar running trials are ignored.
 *
 * BOHB's budget rule. Of the `budgets` (rung milestones), use the largest b at which at least
 * max(startupTrials, dims + 2) trials (done or running) have a value: the trial reached b (some reported
 * t >= b) and its value is the one reported at the largest t <= b (a trial with no report at or before b
 * is left out). Those trials are ranked by that value alone. Trials that stopped before b are left out
 * (they speak for lower budgets); failed trials and, with the liar, running trials that have not reached
 * b are bad points. No budget with enough points: a random draw.
 *
 * The model. Each parameter is one dimension in a unit cube: loguniform/qloguniform through log, then
 * all numeric kinds scaled by their bounds to [0, 1] (randint as the cell [v, v+1) of its integer, randn
 * over mean ± 4 sd); choice and grid are categorical. The good and bad groups each define a density, an
 * equal-weight mixture of a prior component and one product kernel per observation (the prior weighs
 * 1/(n+1), as in Optuna). Numeric kernels are Gaussians truncated to [0, 1]; a categorical kernel gives the
 * observed value 1 − eps and each other value eps/(k − 1), with eps = (k − 1)/(k + n) (add-one smoothing:
 * uniform with no data, sharper as the group grows). The prior component is a flat-ish Gaussian (mean 0.5,
 * sd 1) for bounded kinds, the normal itself (sd 1/8 of the unit range) for randn, and uniform for
 * categories.
 *
 * Bandwidth, per dimension and per group (Scott's rule for a d-dimensional product kernel):
 * h = 1.06 · s · m^(−1/(d+4)), where m is the group's size and s its spread with the prior's 0.2 pooled in
 * as one pseudo-observation (s² = (Σ(x − x̄)² + 0.2²)/m), so one or two close points do not collapse the
 * kernel. h is clipped to [minBW, 1], minBW = max(0.01, 0.05/√(1 + n/25)) for n observations in the model
 * (wide early, finer with data), and to at least half a cell for randint and quniform.
 *
 * A suggestion draws `candidates` points from the good density (a component, then every dimension around
 * it), snaps them to the parameter's grid (rounded, quantized, clipped), and returns the one with the
 * largest log l(x) − log g(x). Before `startupTrials` usable trials, a plain random draw.
 */
import type { ParamSpec, ParamValue, Rng } from "../common/index.js";
import { createRng } from "../common/index.js";

/** A parameter value as it reaches the trial (common/params.ts). */
export type SampledValue = ParamValue;

/**
 * One search-space entry, the study's `ParamSpec` (common/params.ts): randint's upper bound is exclusive;
 * quantized kinds are clipped to [lower, upper]; grid is sampled like choice.
 */
export type SpaceParam = ParamSpec;

export interface Observation {
  readonly params: Readonly<Record<string, SampledValue>>;
  /** The trial's reported metric values by time attribute (t ascending, one per t; may be empty). NaN/±Inf allowed = diverged. */
  readonly results: readonly { readonly t: number; readonly value: number }[];
  /** "running": still training (constant liar); "done": completed to the end or stopped early; "failed": crashed, no usable value. */
  readonly state: "running" | "done" | "failed";
}

export interface ModelSamplerOptions {
  readonly algorithm: "tpe" | "bohb";
  readonly mode: "max" | "min";
  readonly seed: number;
  /** Random draws before the model is used (Optuna's n_startup_trials, default 10). */
  readonly startupTrials?: number;
  /** Candidates drawn from l(x) per suggestion (default 24, Optuna's n_ei_candidates). */
  readonly candidates?: number;
  /** Share of observations in the good group: gamma(n) = min(ceil(share*n), 25) by default share 0.1 (Optuna's default_gamma). */
  readonly goodShare?: number;
  /** Constant liar for running trials (default true): a running trial counts as a bad observation. */
  readonly constantLiar?: boolean;
  /** BOHB: the time budgets (rung milestones, e.g. [1,3,9,27,50]); the model is fitted at the largest budget with >= minPoints observations. */
  readonly budgets?: readonly number[];
}

/** The defaults of the optional options, Optuna's where Optuna has one. */
export const MODEL_SAMPLER_DEFAULTS = { startupTrials: 10, candidates: 24, goodShare: 0.1, constantLiar: true } as const;

/** The good group never grows past this many trials (Optuna's default_gamma cap). */
const MAX_GOOD = 25;
/** Spread of the prior pseudo-observation pooled into every numeric bandwidth (unit range). */
const PRIOR_SPREAD = 0.2;
/** Tries of rejection sampling before a truncated normal draw falls back to its mean. */
const MAX_REJECTIONS = 64;

type NumericParam = Extract<SpaceParam, { lower: number } | { mean: number }>;

/** One non-constant parameter as a model dimension. */
type Dim =
  | {
      readonly type: "num";
      readonly key: string;
      readonly param: NumericParam;
      /** The prior component's mean and sd in the unit range. */
      readonly priorMu: number;
      readonly priorSd: number;
      /** The smallest bandwidth that still covers half a cell of a discrete kind (0 for continuous ones). */
      readonly minH: number;
    }
  | { readonly type: "cat"; readonly key: string; readonly values: readonly SampledValue[] };

/** One suggestion for the trial `key` (e.g. "t0042"); the RNG stream is (seed, "tpe:"+key) so the result is a pure function of (space, history, options, key). */
export function suggestParams(
  space: Readonly<Record<string, SpaceParam>>,
  history: readonly Observation[],
  options: ModelSamplerOptions,
  key: string,
): Record<string, SampledValue> {
  return suggest(space, history, options, key).params;
}

/**
 * `suggestParams`, and whether the model drew it: false when the history is still too thin (fewer than
 * `startupTrials` ranked observations, or no BOHB budget with enough of them) and the draw was random.
 */
export function suggest(
  space: Readonly<Record<string, SpaceParam>>,
  history: readonly Observation[],
  options: ModelSamplerOptions,
  key: string,
): { params: Record<string, SampledValue>; usedModel: boolean } {
  const opts = compile(options);
  const keys = Object.keys(space).sort();
  const dims = keys.flatMap((k) => dimOf(k, space[k] as SpaceParam));
  const rng = createRng(opts.seed, `tpe:${key}`);

  const split =
    dims.length === 0 ? null : opts.algorithm === "bohb" ? bohbSplit(dims, history, opts) : tpeSplit(dims, history, opts);
  const drawn = split === null ? randomDraw(dims, rng) : modelDraw(dims, split, opts, rng);

  const out: Record<string, SampledValue> = {};
  for (const k of keys) {
    const p = space[k] as SpaceParam;
    out[k] = p.kind === "constant" ? p.value : (drawn.get(k) as SampledValue);
  }
  return { params: out, usedModel: split !== null };
}

/**
 * The model's score, log l(x) − log g(x), of each of the given points (a finite set of candidate
 * configurations, as in a table of precomputed runs); null when the history is too thin for a model.
 * A point whose params do not fit the space scores −∞. The highest score is what `suggest` would pick
 * among these candidates.
 */
export function scoreCandidates(
  space: Readonly<Record<string, SpaceParam>>,
  history: readonly Observation[],
  options: ModelSamplerOptions,
  candidates: readonly Readonly<Record<string, SampledValue>>[],
): number[] | null {
  const opts = compile(options);
  const dims = Object.keys(space)
    .sort()
    .flatMap((k) => dimOf(k, space[k] as SpaceParam));
  if (dims.length === 0) return null;
  const split = opts.algorithm === "bohb" ? bohbSplit(dims, history, opts) : tpeSplit(dims, history, opts);
  if (split === null) return null;
  const nModel = split.good.length + split.bad.length;
  const good = buildMixture(dims, split.good, nModel);
  const bad = buildMixture(dims, split.bad, nModel);
  return candidates.map((params) => {
    const x = encodeParams(dims, { params, results: [], state: "done" });
    return x === undefined ? Number.NEGATIVE_INFINITY : logDensity(dims, good, x) - logDensity(dims, bad, x);
  });
}

/**
 * The budget BOHB fits its model at for this history, or null when no budget has enough observations
 * (the suggestion is then random). Pass `space` to get exactly the budget `suggestParams` uses: it drops
 * observations whose params do not fit the space and sets the minimum to max(startupTrials, dims + 2);
 * without it every observation counts and dims is taken as 0.
 */
export function bohbBudget(
  history: readonly Observation[],
  options: ModelSamplerOptions,
  space?: Readonly<Record<string, SpaceParam>>,
): number | null {
  const opts = compile({ ...options, algorithm: "bohb" });
  const dims =
    space === undefined
      ? []
      : Object.keys(space)
          .sort()
          .flatMap((k) => dimOf(k, space[k] as SpaceParam));
  const points = history.flatMap((o) => {
    if (typeof o !== "object" || o === null) return [];
    const x = space === undefined ? new Float64Array(0) : encodeParams(dims, o);
    return x === undefined ? [] : [{ o, x }];
  });
  return chooseBudget(points, dims.length, opts)?.budget ?? null;
}

// ---- options ------------------------------------------------------------------------------------

interface Compiled {
  readonly algorithm: "tpe" | "bohb";
  readonly mode: "max" | "min";
  readonly seed: number;
  readonly startupTrials: number;
  readonly candidates: number;
  readonly goodShare: number;
  readonly constantLiar: boolean;
  /** Ascending, finite, without repeats. */
  readonly budgets: readonly number[];
}

/** Defaults applied and bounds checked once; a bad option is a programming error, so it throws. */
function compile(o: ModelSamplerOptions): Compiled {
  const startupTrials = o.startupTrials ?? MODEL_SAMPLER_DEFAULTS.startupTrials;
  const candidates = o.candidates ?? MODEL_SAMPLER_DEFAULTS.candidates;
  const goodShare = o.goodShare ?? MODEL_SAMPLER_DEFAULTS.goodShare;
  if (o.algorithm !== "tpe" && o.algorithm !== "bohb")
    throw new RangeError(`algorithm must be "tpe" or "bohb", got ${String(o.algorithm)}`);
  if (o.mode !== "max" && o.mode !== "min") throw new RangeError(`mode must be "max" or "min", got ${String(o.mode)}`);
  if (!Number.isSafeInteger(startupTrials) || startupTrials < 0)
    throw new RangeError(`startupTrials must be an integer >= 0, got ${startupTrials}`);
  if (!Number.isSafeInteger(candidates) || candidates < 1)
    throw new RangeError(`candidates must be an integer >= 1, got ${candidates}`);
  if (!(goodShare > 0 && goodShare <= 1)) throw new RangeError(`goodShare must be in (0, 1], got ${goodShare}`);
  const budgets = [...new Set((o.budgets ?? []).filter((b) => Number.isFinite(b)))].sort((a, b) => a - b);
  if (o.algorithm === "bohb" && budgets.length === 0) throw new RangeError("bohb needs budgets (the rung milestones)");
  return {
    algorithm: o.algorithm,
    mode: o.mode,
    seed: o.seed,
    startupTrials,
    candidates,
    goodShare,
    constantLiar: o.constantLiar ?? MODEL_SAMPLER_DEFAULTS.constantLiar,
    budgets,
  };
}

const gamma = (n: number, share: number): number => Math.min(Math.ceil(share * n), MAX_GOOD);

// ---- the space as unit-cube dimensions -----------------------------------------------------------

function dimOf(key: string, p: SpaceParam): Dim[] {
  switch (p.kind) {
    case "constant":
      return [];
    case "grid":
    case "choice":
      return [{ type: "cat", key, values: p.values }];
    case "randn":
      return [{ type: "num", key, param: p, priorMu: 0.5, priorSd: 1 / 8, minH: 0 }];
    case "randint":
      return [{ type: "num", key, param: p, priorMu: 0.5, priorSd: 1, minH: 0.5 / (p.upper - p.lower) }];
    case "quniform":
      return [{ type: "num", key, param: p, priorMu: 0.5, priorSd: 1, minH: (0.5 * p.q) / (p.upper - p.lower) }];
    default:
      return [{ type: "num", key, param: p, priorMu: 0.5, priorSd: 1, minH: 0 }];
  }
}

const clamp01 = (u: number): number => Math.min(1, Math.max(0, u));

/** A parameter value's coordinate in [0, 1], or undefined when the value cannot be one of this kind. */
function toUnit(p: NumericParam, v: unknown): number | undefined {
  if (typeof v !== "number" || !Number.isFinite(v)) return undefined;
  switch (p.kind) {
    case "uniform":
    case "quniform":
      return clamp01((v - p.lower) / (p.upper - p.lower));
    case "loguniform":
    case "qloguniform": {
      if (!(v > 0)) return undefined;
      const a = Math.log(p.lower);
      return clamp01((Math.log(v) - a) / (Math.log(p.upper) - a));
    }
    case "randint":
      return Number.isInteger(v) ? clamp01((v - p.lower + 0.5) / (p.upper - p.lower)) : undefined;
    case "randn":
      return clamp01((v - (p.mean - 4 * p.sd)) / (8 * p.sd));
  }
}

/** The parameter value at a unit coordinate: rounded, quantized and clipped as the kind requires. */
function fromUnit(p: NumericParam, u: number): number {
  switch (p.kind) {
    case "uniform":
      return below(p.lower + (p.upper - p.lower) * u, p.lower, p.upper);
    case "loguniform":
      return below(logAt(p.lower, p.upper, u), p.lower, p.upper);
    case "quniform":
      return quantize(p.lower + (p.upper - p.lower) * u, p.q, p.lower, p.upper);
    case "qloguniform":
      return quantize(logAt(p.lower, p.upper, u), p.q, p.lower, p.upper);
    case "randint":
      return Math.min(p.upper - 1, Math.max(p.lower, Math.floor(p.lower + (p.upper - p.lower) * u)));
    case "randn":
      return p.mean + p.sd * (8 * u - 4);
  }
}

const logAt = (lower: number, upper: number, u: number): number =>
  Math.exp(Math.log(lower) + (Math.log(upper) - Math.log(lower)) * u);

/** Keeps an upper-exclusive continuous value inside [lower, upper). */
function below(x: number, lower: number, upper: number): number {
  if (x < lower) return lower;
  if (x < upper) return x;
  const inside = upper - (upper - lower) * 1e-12;
  return inside < upper && inside >= lower ? inside : lower;
}

/** numpy's round (half to even), as search-space.ts rounds. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** round(x / q) * q, trimmed to 15 significant digits and clipped to [lower, upper], as search-space.ts does. */
function quantize(x: number, q: number, lower: number, upper: number): number {
  const v = Number((roundHalfEven(x / q) * q).toPrecision(15));
  return Math.min(upper, Math.max(lower, v));
}

/**
 * An observation's params as a point (numeric dims: unit coordinate; categorical dims: value index), or
 * undefined when a param is missing or cannot be a value of its dimension: such an observation is ignored.
 */
function encodeParams(dims: readonly Dim[], o: Observation): Float64Array | undefined {
  const params: unknown = (o as { params?: unknown } | null)?.params;
  if (typeof params !== "object" || params === null) return undefined;
  const x = new Float64Array(dims.length);
  for (let d = 0; d < dims.length; d++) {
    const dim = dims[d] as Dim;
    if (!Object.hasOwn(params, dim.key)) return undefined;
    const v: unknown = (params as Record<string, unknown>)[dim.key];
    const c = dim.type === "num" ? toUnit(dim.param, v) : dim.values.indexOf(v as SampledValue);
    if (c === undefined || c < 0) return undefined;
    x[d] = c;
  }
  return x;
}

// ---- results ------------------------------------------------------------------------------------

type Result = { readonly t: number; readonly value: number };

/** The well-formed results (finite t), in the order given. A report that is not a number reads as NaN. */
function resultsOf(o: Observation): Result[] {
  const raw: unknown = o.results;
  if (!Array.isArray(raw)) return [];
  const out: Result[] = [];
  for (const r of raw as unknown[]) {
    if (typeof r !== "object" || r === null) continue;
    const { t, value } = r as { t?: unknown; value?: unknown };
    if (typeof t !== "number" || !Number.isFinite(t)) continue;
    out.push({ t, value: typeof value === "number" ? value : Number.NaN });
  }
  return out;
}

/** The result at the largest t <= limit; of several at that t, the last reported. */
function lastAtOrBefore(results: readonly Result[], limit: number): Result | undefined {
  let best: Result | undefined;
  for (const r of results) if (r.t <= limit && (best === undefined || r.t >= best.t)) best = r;
  return best;
}

/** A point with the trial's standing: the furthest t it reached and its value there. */
interface Ranked {
  readonly x: Float64Array;
  readonly t: number;
  readonly value: number;
}

/** Better first: finite before diverged, then (for TPE) further t, then the better value per mode. */
function compareRanked(mode: "max" | "min", byT: boolean) {
  return (a: Ranked, b: Ranked): number => {
    const fa = Number.isFinite(a.value);
    const fb = Number.isFinite(b.value);
    if (fa !== fb) return fa ? -1 : 1;
    if (byT && a.t !== b.t) return b.t - a.t;
    if (!fa) return 0;
    return mode === "max" ? b.value - a.value : a.value - b.value;
  };
}

interface Split {
  readonly good: readonly Float64Array[];
  readonly bad: readonly Float64Array[];
}

/** Top gamma(n) of the ranked points (never a diverged one) are good, the rest join `bad`. */
function splitRanked(ranked: Ranked[], bad: Float64Array[], opts: Compiled, byT: boolean): Split {
  ranked.sort(compareRanked(opts.mode, byT));
  const finite = ranked.filter((r) => Number.isFinite(r.value)).length;
  const nGood = Math.min(gamma(ranked.length, opts.goodShare), finite);
  return { good: ranked.slice(0, nGood).map((r) => r.x), bad: [...ranked.slice(nGood).map((r) => r.x), ...bad] };
}

function tpeSplit(dims: readonly Dim[], history: readonly Observation[], opts: Compiled): Split | null {
  const ranked: Ranked[] = [];
  const bad: Float64Array[] = [];
  for (const o of history) {
    const x = encodeParams(dims, o);
    if (x === undefined) continue;
    if (o.state === "running") {
      if (opts.constantLiar) bad.push(x);
    } else if (o.state === "failed") bad.push(x);
    else if (o.state === "done") {
      const last = lastAtOrBefore(resultsOf(o), Number.POSITIVE_INFINITY);
      if (last === undefined) bad.push(x);
      else ranked.push({ x, t: last.t, value: last.value });
    }
  }
  if (ranked.length < opts.startupTrials) return null;
  return splitRanked(ranked, bad, opts, true);
}

function chooseBudget(
  points: readonly { readonly o: Observation; readonly x: Float64Array }[],
  nDims: number,
  opts: Compiled,
): { readonly budget: number; readonly ranked: Ranked[] } | null {
  const minPoints = Math.max(opts.startupTrials, nDims + 2);
  const live = points
    .filter(({ o }) => o.state === "done" || o.state === "running")
    .map(({ o, x }) => {
      const results = resultsOf(o);
      return { x, results, reached: results.reduce((m, r) => Math.max(m, r.t), Number.NEGATIVE_INFINITY) };
    });
  for (let i = opts.budgets.length - 1; i >= 0; i--) {
    const budget = opts.budgets[i] as number;
    const ranked: Ranked[] = [];
    for (const p of live) {
      if (p.reached < budget) continue;
      const at = lastAtOrBefore(p.results, budget);
      if (at !== undefined) ranked.push({ x: p.x, t: budget, value: at.value });
    }
    if (ranked.length >= minPoints) return { budget, ranked };
  }
  return null;
}

function bohbSplit(dims: readonly Dim[], history: readonly Observation[], opts: Compiled): Split | null {
  const points = history.flatMap((o) => {
    const x = encodeParams(dims, o);
    return x === undefined ? [] : [{ o, x }];
  });
  const chosen = chooseBudget(points, dims.length, opts);
  if (chosen === null) return null;
  const bad: Float64Array[] = [];
  for (const { o, x } of points) {
    const results = resultsOf(o);
    if (o.state === "failed" || (o.state === "done" && results.length === 0)) bad.push(x);
    else if (o.state === "running" && opts.constantLiar && !results.some((r) => r.t >= chosen.budget)) bad.push(x);
  }
  return splitRanked(chosen.ranked, bad, opts, false);
}

// ---- drawing ------------------------------------------------------------------------------------

/** A draw from each distribution, as search-space.ts's sampleParam draws (grid like choice). */
function randomDraw(dims: readonly Dim[], rng: Rng): Map<string, SampledValue> {
  const out = new Map<string, SampledValue>();
  for (const dim of dims) {
    if (dim.type === "cat") {
      out.set(dim.key, dim.values[Math.min(dim.values.length - 1, Math.floor(rng.next() * dim.values.length))] as SampledValue);
      continue;
    }
    const p = dim.param;
    if (p.kind === "randn") {
      const u1 = 1 - rng.next(); // (0, 1]: log is finite
      const u2 = rng.next();
      out.set(dim.key, p.mean + p.sd * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2));
    } else out.set(dim.key, fromUnit(p, rng.next()));
  }
  return out;
}

/**
 * A group's density as flat arrays, component-major (component 0 is the prior, then one per point).
 * Numeric dims: `mu`, `invH` (1/bandwidth) and `logNorm` (the truncated Gaussian's log normaliser).
 * Categorical dims: `mu` is the value index, `logNorm` the log weight of that value and `invH` the log
 * weight of any other (the prior: both log(1/k)).
 */
interface Mixture {
  readonly size: number;
  readonly mu: Float64Array;
  readonly invH: Float64Array;
  readonly logNorm: Float64Array;
  /** Categorical smoothing per dim (for drawing from the group). */
  readonly eps: Float64Array;
}

const LOG_SQRT_2PI = 0.5 * Math.log(2 * Math.PI);

function buildMixture(dims: readonly Dim[], points: readonly Float64Array[], nModel: number): Mixture {
  const D = dims.length;
  const m = points.length;
  const size = m + 1;
  const mu = new Float64Array(size * D);
  const invH = new Float64Array(size * D);
  const logNorm = new Float64Array(size * D);
  const eps = new Float64Array(D);
  const minBW = Math.max(0.01, 0.05 / Math.sqrt(1 + nModel / 25));
  const scott = Math.max(1, m) ** (-1 / (D + 4));

  for (let d = 0; d < D; d++) {
    const dim = dims[d] as Dim;
    if (dim.type === "cat") {
      const k = dim.values.length;
      const e = (k - 1) / (k + m);
      eps[d] = e;
      mu[d] = -1;
      logNorm[d] = -Math.log(k);
      invH[d] = -Math.log(k);
      const hit = Math.log(1 - e);
      const miss = k > 1 ? Math.log(e / (k - 1)) : 0;
      for (let j = 1; j < size; j++) {
        mu[j * D + d] = (points[j - 1] as Float64Array)[d] as number;
        logNorm[j * D + d] = hit;
        invH[j * D + d] = miss;
      }
      continue;
    }
    let mean = 0;
    for (const x of points) mean += x[d] as number;
    mean /= Math.max(1, m);
    let ss = PRIOR_SPREAD * PRIOR_SPREAD;
    for (const x of points) ss += ((x[d] as number) - mean) ** 2;
    const spread = Math.sqrt(ss / Math.max(1, m));
    const h = Math.min(1, Math.max(minBW, dim.minH, 1.06 * spread * scott));
    setKernel(mu, invH, logNorm, d, dim.priorMu, dim.priorSd);
    for (let j = 1; j < size; j++) setKernel(mu, invH, logNorm, j * D + d, (points[j - 1] as Float64Array)[d] as number, h);
  }
  return { size, mu, invH, logNorm, eps };
}

function setKernel(mu: Float64Array, invH: Float64Array, logNorm: Float64Array, at: number, m: number, h: number): void {
  mu[at] = m;
  invH[at] = 1 / h;
  const mass = normalCdf((1 - m) / h) - normalCdf(-m / h);
  logNorm[at] = -Math.log(h) - LOG_SQRT_2PI - Math.log(Math.max(mass, 1e-300));
}

/** log of the mixture density at x: log-sum-exp over equally weighted components of the product kernels. */
function logDensity(dims: readonly Dim[], mix: Mixture, x: Float64Array): number {
  const D = dims.length;
  const logs = new Float64Array(mix.size);
  let top = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < mix.size; j++) {
    let s = 0;
    const base = j * D;
    for (let d = 0; d < D; d++) {
      const at = base + d;
      if ((dims[d] as Dim).type === "cat") {
        s += x[d] === mix.mu[at] ? (mix.logNorm[at] as number) : (mix.invH[at] as number);
      } else {
        const z = ((x[d] as number) - (mix.mu[at] as number)) * (mix.invH[at] as number);
        s += (mix.logNorm[at] as number) - 0.5 * z * z;
      }
    }
    logs[j] = s;
    if (s > top) top = s;
  }
  if (top === Number.NEGATIVE_INFINITY) return top;
  let sum = 0;
  for (let j = 0; j < mix.size; j++) sum += Math.exp((logs[j] as number) - top);
  return top + Math.log(sum / mix.size);
}

function modelDraw(dims: readonly Dim[], split: Split, opts: Compiled, rng: Rng): Map<string, SampledValue> {
  const nModel = split.good.length + split.bad.length;
  const good = buildMixture(dims, split.good, nModel);
  const bad = buildMixture(dims, split.bad, nModel);
  const D = dims.length;

  let bestScore = Number.NEGATIVE_INFINITY;
  let bestValues: SampledValue[] | undefined;
  for (let c = 0; c < opts.candidates; c++) {
    const j = Math.min(good.size - 1, Math.floor(rng.next() * good.size));
    const x = new Float64Array(D);
    const values: SampledValue[] = [];
    for (let d = 0; d < D; d++) {
      const dim = dims[d] as Dim;
      const at = j * D + d;
      if (dim.type === "cat") {
        const idx = drawCategory(dim.values.length, good.mu[at] as number, good.eps[d] as number, rng);
        x[d] = idx;
        values.push(dim.values[idx] as SampledValue);
      } else {
        const u = truncatedNormal(good.mu[at] as number, 1 / (good.invH[at] as number), rng);
        const v = fromUnit(dim.param, u);
        x[d] = toUnit(dim.param, v) ?? u;
        values.push(v);
      }
    }
    const score = logDensity(dims, good, x) - logDensity(dims, bad, x);
    // NaN never wins, but the first candidate is always kept so there is an answer.
    if (bestValues === undefined || score > bestScore) {
      bestScore = score;
      bestValues = values;
    }
  }
  const out = new Map<string, SampledValue>();
  for (let d = 0; d < D; d++) out.set((dims[d] as Dim).key, (bestValues as SampledValue[])[d] as SampledValue);
  return out;
}

/** Prior component (observed < 0): uniform; else keep the observed value with 1 − eps, another with eps. */
function drawCategory(k: number, observed: number, eps: number, rng: Rng): number {
  if (observed < 0 || k === 1) return Math.min(k - 1, Math.floor(rng.next() * k));
  if (rng.next() >= eps) return observed;
  const other = Math.min(k - 2, Math.floor(rng.next() * (k - 1)));
  return other >= observed ? other + 1 : other;
}

/** A normal draw around mu with sd h, truncated to [0, 1] by rejection (mu is in [0, 1], so >= ~1/3 is accepted). */
function truncatedNormal(mu: number, h: number, rng: Rng): number {
  for (let i = 0; i < MAX_REJECTIONS; i++) {
    const u1 = 1 - rng.next();
    const u2 = rng.next();
    const x = mu + h * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    if (x >= 0 && x <= 1) return x;
  }
  return clamp01(mu);
}

/** Standard normal CDF through erfc (Numerical Recipes' erfcc, relative error < 1.2e-7). */
function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.5 * z);
  const erfc =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - 0.5 * erfc : 0.5 * erfc;
}
