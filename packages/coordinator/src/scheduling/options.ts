import { SchedulerOptionsError } from "../errors.js";
import { rungCount } from "./rung-ladder.js";

/** Whether a larger metric is better (`max`, accuracy) or a smaller one (`min`, loss). */
export const MetricMode = { max: "max", min: "min" } as const;
export type MetricMode = (typeof MetricMode)[keyof typeof MetricMode];

/**
 * Which scheduler decides. `hyperband` is ASHA with several brackets (`brackets: N`), which is also
 * what Ray Tune's AsyncHyperBandScheduler does with `brackets > 1`; its brackets default to the rung
 * count of bracket 0 (the full Hyperband sweep of brackets), where `asha` defaults to one. `promotion`
 * is ASHA as first published: trials pause at each rung and resume when promoted (promotion.ts).
 */
export const SchedulerType = {
  asha: "asha",
  hyperband: "hyperband",
  promotion: "promotion",
  pbt: "pbt",
  curve: "curve",
  median: "median",
  fifo: "fifo",
} as const;
export type SchedulerType = (typeof SchedulerType)[keyof typeof SchedulerType];

export interface AshaOptions {
  readonly type: "asha" | "hyperband";
  readonly mode: MetricMode;
  /** First milestone of bracket 0, in units of the time attribute. > 0 and <= maxT. Default 1. */
  readonly gracePeriod: number;
  /** rf / eta: milestone spacing and cutoff percentile (1 - 1/rf). > 1. Default 4 (Ray's). */
  readonly reductionFactor: number;
  /** Time limit. > 0. Default 100 (Ray's). */
  readonly maxT: number;
  /** Number of brackets, integer >= 1. Default 1 for asha, the rung count of bracket 0 for hyperband. */
  readonly brackets: number;
  /** Stop every trial once t >= maxT. Default true. */
  readonly stopLastTrials: boolean;
}

/** Promotion-based ASHA (promotion.ts): the rung ladder of ASHA's bracket 0. */
export interface PromotionOptions {
  readonly type: "promotion";
  readonly mode: MetricMode;
  /** The first rung. > 0 and < maxT. Default 1. */
  readonly gracePeriod: number;
  /** Rung spacing, and the share promoted (1/rf). > 1. Default 4. */
  readonly reductionFactor: number;
  /** Where a trial ends. > 0. Default 100. */
  readonly maxT: number;
}

/**
 * Population-based training (Ray Tune's PopulationBasedTraining, Jaderberg et al.): every
 * `perturbationInterval` of its time attribute a trial in the bottom `quantileFraction` of the
 * population (by its latest result) goes on from the checkpoint of one in the top fraction, with that
 * trial's parameters perturbed. The parameters it may change are the study's (study/pbt.ts).
 */
export interface PbtOptions {
  readonly type: "pbt";
  readonly mode: MetricMode;
  /** Time-attribute units between two looks at a trial. > 0. Default 4. */
  readonly perturbationInterval: number;
  /** The share of the population in the bottom and top quantiles. In (0, 0.5]. Default 0.25 (Ray's). */
  readonly quantileFraction: number;
  /** Chance that a parameter is drawn again from its distribution instead of perturbed. In [0, 1]. Default 0.25. */
  readonly resampleProbability: number;
  /** Where a trial ends. > 0. Default 100. */
  readonly maxT: number;
}

/**
 * Learning-curve stopping (curve-stopping.ts): at each rung of an ASHA ladder (grace·rf^k), a trial's
 * curve is extrapolated to maxT (a fitted ensemble of parametric curves mixed with what the completed
 * trials' curves did from the same point) and the trial stops when the chance that it ends better than
 * the k-th best final value so far is below `probability`.
 */
export interface CurveOptions {
  readonly type: "curve";
  readonly mode: MetricMode;
  /** The first decision point. > 0 and < maxT. Default 1. */
  readonly gracePeriod: number;
  /** Spacing of the decision points (grace·rf^k). > 1. Default 3. */
  readonly reductionFactor: number;
  /** The horizon the curve is extrapolated to, and where a trial ends. > 0. Default 100. */
  readonly maxT: number;
  /** Stop when P(ends better than the reference) is below this. In (0, 1). Default 0.01. */
  readonly probability: number;
  /** The reference is the k-th best final value. Integer >= 1. Default 1. */
  readonly topK: number;
}

export interface MedianOptions {
  readonly type: "median";
  readonly mode: MetricMode;
  /** No stop before this time; running means only count results from here on. >= 0. Default 1. */
  readonly gracePeriod: number;
  /** Other trials that must have reached the same time before the rule applies. Integer >= 1. Default 3. */
  readonly minSamplesRequired: number;
  /** STOP once t >= maxT; null: never (the trial ends by itself). Default null. */
  readonly maxT: number | null;
}

export interface FifoOptions {
  readonly type: "fifo";
  readonly mode: MetricMode;
  /** STOP once t >= maxT; null: never (the trial ends by itself). Default null. */
  readonly maxT: number | null;
}

/** Compiled scheduler options: defaults applied, construction rules checked. */
export type SchedulerOptions = AshaOptions | PromotionOptions | PbtOptions | CurveOptions | MedianOptions | FifoOptions;

/** What a caller (the CLI's `rung replay`, a test) passes; `compileSchedulerOptions` fills the rest. */
export interface SchedulerOptionsInput {
  /** Default "asha". */
  readonly scheduler?: SchedulerType | undefined;
  /** Default "max". */
  readonly mode?: MetricMode | undefined;
  readonly gracePeriod?: number | undefined;
  readonly reductionFactor?: number | undefined;
  readonly maxT?: number | null | undefined;
  readonly brackets?: number | undefined;
  readonly stopLastTrials?: boolean | undefined;
  readonly minSamplesRequired?: number | undefined;
  readonly perturbationInterval?: number | undefined;
  readonly quantileFraction?: number | undefined;
  readonly resampleProbability?: number | undefined;
  readonly probability?: number | undefined;
  readonly topK?: number | undefined;
}

export const SCHEDULER_DEFAULTS = {
  scheduler: "asha",
  mode: "max",
  gracePeriod: 1,
  reductionFactor: 4,
  ashaMaxT: 100,
  brackets: 1,
  stopLastTrials: true,
  minSamplesRequired: 3,
} as const;

/** Learning-curve stopping's defaults (see docs/schedulers.md for how they were chosen). */
export const CURVE_DEFAULTS = { probability: 0.01, topK: 1 } as const;

const APPLIES: Record<SchedulerType, readonly (keyof SchedulerOptionsInput)[]> = {
  asha: ["scheduler", "mode", "gracePeriod", "reductionFactor", "maxT", "brackets", "stopLastTrials"],
  hyperband: ["scheduler", "mode", "gracePeriod", "reductionFactor", "maxT", "brackets", "stopLastTrials"],
  promotion: ["scheduler", "mode", "gracePeriod", "reductionFactor", "maxT"],
  pbt: ["scheduler", "mode", "perturbationInterval", "quantileFraction", "resampleProbability", "maxT"],
  curve: ["scheduler", "mode", "gracePeriod", "reductionFactor", "maxT", "probability", "topK"],
  median: ["scheduler", "mode", "gracePeriod", "minSamplesRequired", "maxT"],
  fifo: ["scheduler", "mode", "maxT"],
};

export interface OptionProblem {
  /** camelCase option name, as in SchedulerOptionsInput. */
  readonly option: keyof SchedulerOptionsInput;
  readonly message: string;
}

const show = (x: unknown): string => (typeof x === "string" ? JSON.stringify(x) : String(x));

/**
 * Checks the construction rules (Ray's for ASHA: max_t > 0, grace_period > 0, grace_period <= max_t,
 * rf > 1, brackets > 0) and applies defaults, without throwing. `nameOf` renders an option name inside
 * messages (the spec passes snake_case: "must be <= max_t (27)").
 */
export function checkSchedulerOptions(
  input: SchedulerOptionsInput,
  nameOf: (option: keyof SchedulerOptionsInput) => string = (o) => o,
): { options: SchedulerOptions | null; problems: OptionProblem[] } {
  const problems: OptionProblem[] = [];
  const bad = (option: keyof SchedulerOptionsInput, message: string) => problems.push({ option, message });

  const type = input.scheduler ?? SCHEDULER_DEFAULTS.scheduler;
  if (!Object.hasOwn(SchedulerType, type)) {
    bad("scheduler", `must be one of ${Object.values(SchedulerType).join(", ")}, got ${show(type)}`);
    return { options: null, problems };
  }
  const mode = input.mode ?? SCHEDULER_DEFAULTS.mode;
  if (mode !== "max" && mode !== "min") bad("mode", `must be one of max, min, got ${show(mode)}`);

  for (const key of Object.keys(input) as (keyof SchedulerOptionsInput)[]) {
    if (input[key] !== undefined && !APPLIES[type].includes(key)) {
      bad(
        key,
        `does not apply to the ${type} scheduler (it takes ${APPLIES[type]
          .filter((k) => k !== "scheduler")
          .map(nameOf)
          .join(", ")})`,
      );
    }
  }

  const finite = (key: keyof SchedulerOptionsInput, x: unknown): x is number => {
    if (typeof x === "number" && Number.isFinite(x)) return true;
    bad(key, `must be a finite number, got ${show(x)}`);
    return false;
  };
  const positiveOrNull = (key: "maxT", x: number | null | undefined): number | null => {
    if (x === undefined || x === null) return null;
    if (finite(key, x) && !(x > 0)) bad(key, `must be > 0, got ${show(x)}`);
    return x;
  };
  const integerAtLeast = (key: "brackets" | "minSamplesRequired" | "topK", x: number, min: number) => {
    if (!Number.isSafeInteger(x) || x < min) bad(key, `must be an integer >= ${min}, got ${show(x)}`);
  };

  if (type === "fifo") {
    const maxT = positiveOrNull("maxT", input.maxT);
    return { options: problems.length === 0 ? { type, mode, maxT } : null, problems };
  }

  if (type === "pbt") {
    const maxT = input.maxT ?? SCHEDULER_DEFAULTS.ashaMaxT;
    if (finite("maxT", maxT) && !(maxT > 0)) bad("maxT", `must be > 0, got ${show(maxT)}`);
    const perturbationInterval = input.perturbationInterval ?? 4;
    if (finite("perturbationInterval", perturbationInterval) && !(perturbationInterval > 0))
      bad("perturbationInterval", `must be > 0, got ${show(perturbationInterval)}`);
    const quantileFraction = input.quantileFraction ?? 0.25;
    if (finite("quantileFraction", quantileFraction) && !(quantileFraction > 0 && quantileFraction <= 0.5))
      bad("quantileFraction", `must be in (0, 0.5], got ${show(quantileFraction)}`);
    const resampleProbability = input.resampleProbability ?? 0.25;
    if (finite("resampleProbability", resampleProbability) && !(resampleProbability >= 0 && resampleProbability <= 1))
      bad("resampleProbability", `must be in [0, 1], got ${show(resampleProbability)}`);
    return {
      options: problems.length === 0 ? { type, mode, perturbationInterval, quantileFraction, resampleProbability, maxT } : null,
      problems,
    };
  }

  if (type === "median") {
    const gracePeriod = input.gracePeriod ?? SCHEDULER_DEFAULTS.gracePeriod;
    if (finite("gracePeriod", gracePeriod) && !(gracePeriod >= 0)) bad("gracePeriod", `must be >= 0, got ${show(gracePeriod)}`);
    const minSamplesRequired = input.minSamplesRequired ?? SCHEDULER_DEFAULTS.minSamplesRequired;
    integerAtLeast("minSamplesRequired", minSamplesRequired, 1);
    const maxT = positiveOrNull("maxT", input.maxT);
    return {
      options: problems.length === 0 ? { type, mode, gracePeriod, minSamplesRequired, maxT } : null,
      problems,
    };
  }

  // asha / hyperband
  const maxT = input.maxT ?? SCHEDULER_DEFAULTS.ashaMaxT;
  let maxTok = false;
  if (finite("maxT", maxT)) {
    if (!(maxT > 0)) bad("maxT", `must be > 0, got ${show(maxT)}`);
    else maxTok = true;
  }
  const gracePeriod = input.gracePeriod ?? SCHEDULER_DEFAULTS.gracePeriod;
  let graceOk = false;
  if (finite("gracePeriod", gracePeriod)) {
    if (!(gracePeriod > 0)) bad("gracePeriod", `must be > 0, got ${show(gracePeriod)}`);
    else if (maxTok && gracePeriod > maxT) bad("gracePeriod", `must be <= ${nameOf("maxT")} (${maxT}), got ${show(gracePeriod)}`);
    else graceOk = true;
  }
  const reductionFactor = input.reductionFactor ?? (type === "curve" ? 3 : SCHEDULER_DEFAULTS.reductionFactor);
  let rfOk = false;
  if (finite("reductionFactor", reductionFactor)) {
    if (!(reductionFactor > 1)) bad("reductionFactor", `must be > 1, got ${show(reductionFactor)}`);
    else rfOk = true;
  }
  if (type === "promotion")
    return { options: problems.length === 0 ? { type, mode, gracePeriod, reductionFactor, maxT } : null, problems };
  if (type === "curve") {
    const probability = input.probability ?? CURVE_DEFAULTS.probability;
    if (finite("probability", probability) && !(probability > 0 && probability < 1))
      bad("probability", `must be in (0, 1), got ${show(probability)}`);
    const topK = input.topK ?? CURVE_DEFAULTS.topK;
    integerAtLeast("topK", topK, 1);
    return {
      options: problems.length === 0 ? { type, mode, gracePeriod, reductionFactor, maxT, probability, topK } : null,
      problems,
    };
  }
  const stopLastTrials = input.stopLastTrials ?? SCHEDULER_DEFAULTS.stopLastTrials;
  if (typeof stopLastTrials !== "boolean") bad("stopLastTrials", `must be true or false, got ${show(stopLastTrials)}`);
  let brackets = input.brackets;
  if (brackets === undefined) {
    brackets =
      type === "hyperband" && maxTok && graceOk && rfOk
        ? Math.max(1, rungCount(gracePeriod, reductionFactor, maxT, 0))
        : SCHEDULER_DEFAULTS.brackets;
  }
  integerAtLeast("brackets", brackets, 1);
  return {
    options: problems.length === 0 ? { type, mode, gracePeriod, reductionFactor, maxT, brackets, stopLastTrials } : null,
    problems,
  };
}

/** Applies defaults and checks the construction rules; throws SchedulerOptionsError listing every problem. */
export function compileSchedulerOptions(input: SchedulerOptionsInput): SchedulerOptions {
  const { options, problems } = checkSchedulerOptions(input);
  if (options === null) throw new SchedulerOptionsError(problems);
  return options;
}
