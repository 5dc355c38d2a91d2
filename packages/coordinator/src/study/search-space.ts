import type { ParamSpec, ParamValue, Rng } from "../common/index.js";
import { createRng } from "../common/index.js";

export type { ParamSpec, ParamValue } from "../common/index.js";

export type ParamKind = ParamSpec["kind"];

export const SearchAlgorithm = { grid: "grid", random: "random", tpe: "tpe", bohb: "bohb" } as const;
export type SearchAlgorithm = (typeof SearchAlgorithm)[keyof typeof SearchAlgorithm];

/**
 * The compiled `search` section.
 * - `random`: `samples` random draws; each draw is repeated for every point of the grid axes.
 * - `grid`: every combination of the `grid` and `choice` axes, `samples` times over (continuous
 *   distributions are refused: they cannot be enumerated).
 * - `tpe` / `bohb`: `samples` trials; the first `startupTrials` are the random draws, each later one is
 *   drawn by the model (search/tpe.ts) from the study's results when the coordinator creates it
 *   (study/sampling.ts). Their planned parameters here are the random draws a model falls back to.
 */
export interface SearchSpec {
  readonly algorithm: SearchAlgorithm;
  readonly samples: number;
  readonly seed: number;
  readonly space: Readonly<Record<string, ParamSpec>>;
  /** tpe / bohb: random draws before the model is used. */
  readonly startupTrials?: number;
}

/** A trial to run: its id (`t0001`, …) and its parameters, keys in sorted order. */
export interface PlannedTrial {
  readonly trial: string;
  readonly params: Readonly<Record<string, ParamValue>>;
}

export const DISTRIBUTIONS = ["uniform", "quniform", "loguniform", "qloguniform", "randint", "randn", "choice", "grid"] as const;

/** No study plans more trials than this; a bigger grid is almost certainly a typo. */
export const MAX_TRIALS = 100_000;

/** The axes that are enumerated rather than sampled, for an algorithm. */
function isAxis(p: ParamSpec, algorithm: SearchAlgorithm): p is Extract<ParamSpec, { kind: "grid" | "choice" }> {
  return p.kind === "grid" || (p.kind === "choice" && algorithm === "grid");
}

/** How many trials `generateTrials` makes for this search section. */
export function countTrials(search: SearchSpec): number {
  let n = search.samples;
  for (const p of Object.values(search.space)) if (isAxis(p, search.algorithm)) n *= p.values.length;
  return n;
}

/** `t0001` for index 0; the width grows past 9999 trials so ids sort as they were generated. */
export function trialId(index: number, total: number): string {
  const width = Math.max(4, String(Math.max(total, index + 1)).length);
  return `t${String(index + 1).padStart(width, "0")}`;
}

/**
 * The study's trials, in order. Deterministic: the same search section gives the same trials on every
 * machine. Parameters are visited in sorted key order and each sampled parameter has its own RNG
 * stream (seed + parameter name), so the order of keys in the file does not matter, adding a parameter
 * does not change the others' draws, and raising `samples` keeps the earlier trials as they were.
 *
 * Order: for each sample, every grid point, the first grid key (sorted) varying slowest. All grid
 * points of one sample share that sample's random values (a paired design, so grid values can be
 * compared on equal footing).
 */
export function generateTrials(spec: { readonly search: SearchSpec }): PlannedTrial[] {
  const { search } = spec;
  const keys = Object.keys(search.space).sort();
  const axes = keys.filter((k) => isAxis(search.space[k] as ParamSpec, search.algorithm));
  const rngs = new Map<string, Rng>();
  for (const k of keys) rngs.set(k, createRng(search.seed, `search:${k}`));

  let points: Record<string, ParamValue>[] = [{}];
  for (const axis of axes) {
    const values = (search.space[axis] as Extract<ParamSpec, { kind: "grid" | "choice" }>).values;
    const next: Record<string, ParamValue>[] = [];
    for (const p of points) for (const v of values) next.push({ ...p, [axis]: v });
    points = next;
  }

  const total = countTrials(search);
  const out: PlannedTrial[] = [];
  for (let sample = 0; sample < search.samples; sample++) {
    const drawn: Record<string, ParamValue> = {};
    for (const k of keys) {
      const p = search.space[k] as ParamSpec;
      if (isAxis(p, search.algorithm)) continue;
      drawn[k] = p.kind === "constant" ? p.value : sampleParam(p, rngs.get(k) as Rng);
    }
    for (const point of points) {
      const params: Record<string, ParamValue> = {};
      for (const k of keys) params[k] = (k in point ? point[k] : drawn[k]) as ParamValue;
      out.push({ trial: trialId(out.length, total), params });
    }
  }
  return out;
}

/** One draw from a parameter's distribution. A grid parameter yields its first value. */
export function sampleParam(p: ParamSpec, rng: Rng): ParamValue {
  switch (p.kind) {
    case "constant":
      return p.value;
    case "grid":
      return p.values[0] as ParamValue;
    case "choice":
      return p.values[Math.min(p.values.length - 1, Math.floor(rng.next() * p.values.length))] as ParamValue;
    case "uniform":
      return uniform(p.lower, p.upper, rng);
    case "loguniform":
      return logUniform(p.lower, p.upper, rng);
    case "quniform":
      return quantize(uniform(p.lower, p.upper, rng), p.q, p.lower, p.upper);
    case "qloguniform":
      return quantize(logUniform(p.lower, p.upper, rng), p.q, p.lower, p.upper);
    case "randint": {
      const span = p.upper - p.lower;
      return p.lower + Math.min(span - 1, Math.floor(span * rng.next()));
    }
    case "randn": {
      const u1 = 1 - rng.next(); // (0, 1]: log is finite
      const u2 = rng.next();
      return p.mean + p.sd * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }
  }
}

function uniform(lower: number, upper: number, rng: Rng): number {
  // lower + span * u can round up to `upper`; draw again (rare, and still deterministic).
  for (;;) {
    const x = lower + (upper - lower) * rng.next();
    if (x >= lower && x < upper) return x;
  }
}

function logUniform(lower: number, upper: number, rng: Rng): number {
  const a = Math.log(lower);
  const b = Math.log(upper);
  for (;;) {
    const x = Math.exp(a + (b - a) * rng.next());
    if (x >= lower && x < upper) return x;
  }
}

/** numpy's round (half to even). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * round(x / q) * q as Ray does, then trimmed to 15 significant digits so that 0.1-steps print as
 * `0.3`, not `0.30000000000000004`, on the trial's command line.
 */
function quantize(x: number, q: number, lower: number, upper: number): number {
  const v = Number((roundHalfEven(x / q) * q).toPrecision(15));
  return Math.min(upper, Math.max(lower, v));
}

/** Whether x is an integer multiple of q, allowing for float noise (0.3 / 0.1 = 2.9999999999999996). */
export function isMultipleOf(x: number, q: number): boolean {
  const r = x / q;
  return Math.abs(r - Math.round(r)) <= 1e-9 * Math.max(1, Math.abs(r));
}

export interface ParamProblem {
  /** Path below the parameter's own (`loguniform`), "" for the parameter itself. */
  readonly subpath: string;
  readonly message: string;
}

const isParamValue = (x: unknown): x is ParamValue =>
  typeof x === "string" || typeof x === "boolean" || (typeof x === "number" && Number.isFinite(x));

const show = (x: unknown): string => {
  if (x === undefined) return "nothing";
  try {
    return JSON.stringify(x) ?? String(x);
  } catch {
    return String(x);
  }
};

/**
 * Reads one raw search-space entry (already parsed from YAML/JSON) into a ParamSpec, or says what is
 * wrong with it. Messages name the expected form, so the user can fix the entry from the message alone.
 */
export function parseParam(
  raw: unknown,
): { param: ParamSpec; problems?: undefined } | { param?: undefined; problems: ParamProblem[] } {
  const fail = (message: string, subpath = "") => ({ problems: [{ subpath, message }] });
  if (isParamValue(raw)) return { param: { kind: "constant", value: raw } };
  if (typeof raw === "number") return fail(`must be a finite number, got ${String(raw)}`);
  if (Array.isArray(raw)) {
    return fail(`a list is not a value; write { choice: ${show(raw)} } to sample one or { grid: ${show(raw)} } to try each`);
  }
  if (raw === null || typeof raw !== "object") {
    return fail(`must be a value or a distribution like { uniform: [0, 1] }, got ${show(raw)}`);
  }
  const entries = Object.entries(raw);
  if (entries.length !== 1) {
    return fail(
      `must name exactly one distribution (${DISTRIBUTIONS.join(", ")}), got ${entries.length === 0 ? "an empty mapping" : entries.map(([k]) => k).join(", ")}`,
    );
  }
  const [kind, args] = entries[0] as [string, unknown];
  if (!(DISTRIBUTIONS as readonly string[]).includes(kind)) {
    return fail(`unknown distribution ${JSON.stringify(kind)}; use one of ${DISTRIBUTIONS.join(", ")}`);
  }
  const k = kind as (typeof DISTRIBUTIONS)[number];
  if (k === "choice" || k === "grid") {
    if (!Array.isArray(args) || args.length === 0) return fail(`must be a non-empty list of values, got ${show(args)}`, k);
    const badAt = args.findIndex((v) => !isParamValue(v));
    if (badAt >= 0) {
      return fail(`must be a string, number or true/false, got ${show(args[badAt])}`, `${k}[${badAt}]`);
    }
    return { param: { kind: k, values: args as ParamValue[] } };
  }

  const arity = k === "quniform" || k === "qloguniform" ? 3 : 2;
  const form = k === "randn" ? "[mean, sd]" : arity === 3 ? "[lower, upper, q]" : "[lower, upper]";
  if (!Array.isArray(args) || args.length !== arity || !args.every((x) => typeof x === "number" && Number.isFinite(x))) {
    return fail(`must be ${form} (numbers), got ${show(args)}`, k);
  }
  const [a, b, q] = args as number[];
  const lower = a as number;
  const upper = b as number;
  if (k === "randn") {
    if (!(upper > 0)) return fail(`sd must be > 0, got ${upper}`, k);
    return { param: { kind: k, mean: lower, sd: upper } };
  }
  if (!(lower < upper)) return fail(`lower must be < upper, got [${args.join(", ")}]`, k);
  if ((k === "loguniform" || k === "qloguniform") && !(lower > 0)) {
    return fail(`lower must be > 0 for a log scale, got ${lower}`, k);
  }
  if (k === "randint") {
    if (!Number.isSafeInteger(lower) || !Number.isSafeInteger(upper)) {
      return fail(`lower and upper must be integers (upper exclusive), got [${args.join(", ")}]`, k);
    }
    return { param: { kind: k, lower, upper } };
  }
  if (k === "quniform" || k === "qloguniform") {
    const step = q as number;
    if (!(step > 0)) return fail(`q must be > 0, got ${step}`, k);
    if (!isMultipleOf(lower, step) || !isMultipleOf(upper, step)) {
      return fail(`lower and upper must be multiples of q (${step}), got [${lower}, ${upper}]`, k);
    }
    return { param: { kind: k, lower, upper, q: step } };
  }
  return { param: { kind: k, lower, upper } };
}

/** The spec form of a compiled parameter (inverse of parseParam). */
export function paramToInput(p: ParamSpec): unknown {
  switch (p.kind) {
    case "constant":
      return p.value;
    case "grid":
    case "choice":
      return { [p.kind]: [...p.values] };
    case "uniform":
    case "loguniform":
    case "randint":
      return { [p.kind]: [p.lower, p.upper] };
    case "quniform":
    case "qloguniform":
      return { [p.kind]: [p.lower, p.upper, p.q] };
    case "randn":
      return { randn: [p.mean, p.sd] };
  }
}
