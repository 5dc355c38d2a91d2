import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import {
  CommandTemplateError,
  InvalidTokenError,
  parseDuration,
  parseMemoryMiB,
  placeholders,
  renderArgv,
  splitCommand,
  validToken,
} from "@rung/protocol";
import { parseDocument } from "yaml";
import { z } from "zod";
import { issuesToProblems, strictObject } from "../common/index.js";
import type { SpecProblem } from "../errors.js";
import { SpecError } from "../errors.js";
import type {
  AshaOptions,
  CurveOptions,
  FifoOptions,
  MedianOptions,
  MetricMode,
  PbtOptions,
  PromotionOptions,
  SchedulerOptions,
  SchedulerOptionsInput,
} from "../scheduling/index.js";
import { checkSchedulerOptions } from "../scheduling/index.js";
import { PACKING_DEFAULTS, type PackingSpec } from "./packing.js";
import type { ParamSpec, ParamValue, PlannedTrial, SearchSpec } from "./search-space.js";
import { countTrials, MAX_TRIALS, paramToInput, parseParam } from "./search-space.js";

/**
 * The study spec: what the user writes (YAML or JSON, snake_case) and what the coordinator runs on
 * (`StudySpec`, camelCase, defaults applied, every rule checked). Field mapping, spec -> StudySpec:
 *
 *   name                         -> name              a token: letters, digits, - and _ (<= 64)
 *   command (string | argv list) -> argv              split once, shell-style quoting, nothing expanded;
 *                                                     {placeholders}: space parameters, max_t, trial, study
 *   workdir (default ".")        -> workdir           relative to the agent's --workdir, no ".."
 *   env (default {})             -> env               values stringified (OMP_NUM_THREADS: 1 -> "1")
 *   secret_env (default [])      -> secretEnv         names whose values are never logged or shown
 *   metric {name, mode}          -> metric
 *   search {algorithm (random | grid | tpe | bohb), samples (1), seed (0), startup_trials (10, tpe
 *           and bohb only), space}
 *                                -> search {algorithm, samples, seed, startupTrials, space: ParamSpec
 *                                   per key}; tpe and bohb refuse grid (they sample choice)
 *   scheduler {type, time_attr ("epoch"), grace_period, reduction_factor, max_t, brackets,
 *              stop_last_trials, min_samples_required, probability, top_k (curve)}
 *                                -> scheduler {type, timeAttr, gracePeriod, reductionFactor, maxT,
 *                                   brackets, stopLastTrials, minSamplesRequired} (per type; see
 *                                   scheduler-options.ts for defaults and rules); no
 *                                   scheduler section: {type: fifo}, as Ray Tune defaults
 *   early_stopping {monitor (metric.name), mode (metric.mode when monitoring the metric), patience,
 *                   min_delta (0)}  (optional)
 *                                -> earlyStopping {monitor, mode, patience, minDelta} | null
 *   resources {gpus (1), cpus (0), gpu_memory (none)}
 *                                -> resources       gpus: 0 means a CPU slot; 0.01–0.99 a share of one
 *                                                   GPU (placement.ts); gpu_memory "10GiB" -> gpuMemoryMiB
 *   packing (none) | auto | {mode: auto, target_busy (0.8), memory_margin (0.2), max_per_gpu (8),
 *           slowdown (0.25)}
 *                                -> packing          PackingSpec | null: the coordinator picks the trials
 *                                                   per GPU itself (packing.ts); needs resources.gpus 1
 *   budget {gpu_hours, cost}  (optional; at least one)
 *                                -> budget           {gpuHours, cost} | null (budget.ts)
 *   max_concurrent (unlimited)   -> maxConcurrent     number | null
 *   retries (2)                  -> retries           attempts after the first, for crashed trials
 *   report_timeout (none)        -> reportTimeoutMs   "10m": an attempt silent for longer fails the trial
 *   trial_timeout (none)         -> trialTimeoutMs    "2h": wall-clock limit of one attempt; past it the
 *                                                     trial fails
 *   diverged {threshold (none)}  (optional)
 *                                -> diverged          { threshold } | null: a result of the metric that is
 *                                                     NaN or ±∞, or worse than the threshold, stops the
 *                                                     trial at once ("diverged at epoch 3"), whatever
 *                                                     the scheduler (Ray-identical asha never does)
 *   checkpoints {keep (2), keep_best (3)}  (optional)
 *                                -> checkpoints       snapshots kept per trial while it runs, and the
 *                                                     trials whose last one is kept once the study ends
 *                                                     (the best by the metric); null: the defaults
 *
 * Unknown keys are errors at every level; every error names its field path and what is allowed.
 */

export type SchedulerSpec =
  | (Omit<AshaOptions, "mode"> & { readonly timeAttr: string })
  | (Omit<PromotionOptions, "mode"> & { readonly timeAttr: string })
  | (Omit<PbtOptions, "mode"> & { readonly timeAttr: string; readonly mutations: readonly string[] })
  | (Omit<CurveOptions, "mode"> & { readonly timeAttr: string })
  | (Omit<MedianOptions, "mode"> & { readonly timeAttr: string })
  | (Omit<FifoOptions, "mode"> & { readonly timeAttr: string });

export interface EarlyStoppingSpec {
  readonly monitor: string;
  readonly mode: MetricMode;
  readonly patience: number;
  readonly minDelta: number;
}

export interface StudySpec {
  readonly name: string;
  readonly argv: readonly string[];
  readonly workdir: string;
  readonly env: Readonly<Record<string, string>>;
  readonly secretEnv: readonly string[];
  readonly metric: { readonly name: string; readonly mode: MetricMode };
  readonly search: SearchSpec;
  readonly scheduler: SchedulerSpec;
  readonly earlyStopping: EarlyStoppingSpec | null;
  readonly resources: { readonly gpus: number; readonly cpus: number; readonly gpuMemoryMiB: number | null };
  /** `packing: auto` (packing.ts): the coordinator picks the share each order asks for; null: the spec's resources. */
  readonly packing: PackingSpec | null;
  /** What the study may spend (budget.ts); null: no limit. */
  readonly budget: { readonly gpuHours: number | null; readonly cost: number | null } | null;
  readonly maxConcurrent: number | null;
  readonly retries: number;
  /** No report (nor start) from a running attempt for this long fails the trial. null: no limit. */
  readonly reportTimeoutMs: number | null;
  /** Wall-clock limit of one attempt, from its start. null: no limit. */
  readonly trialTimeoutMs: number | null;
  /** Stop a trial whose metric diverged (NaN, ±∞, or worse than `threshold`); null: the scheduler's rules only. */
  readonly diverged: { readonly threshold: number | null } | null;
  /** Checkpoint retention; null when the spec does not say (then {@link DEFAULT_CHECKPOINTS}). */
  readonly checkpoints: { readonly keep: number; readonly keepBest: number } | null;
}

/** Snapshots kept per trial while it runs, and the best trials whose last one outlives the study. */
export const DEFAULT_CHECKPOINTS = { keep: 2, keepBest: 3 } as const;

/** Placeholders filled by Rung rather than the search space. */
export const RESERVED_PLACEHOLDERS = ["max_t", "trial", "study"] as const;
export const DEFAULT_TIME_ATTR = "epoch";
export const DEFAULT_RETRIES = 2;
/** Random draws before TPE / BOHB use their model (Optuna's n_startup_trials). */
export const DEFAULT_STARTUP_TRIALS = 10;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Set by the agent for every trial; a spec may not override them. */
const AGENT_ENV = ["CUDA_VISIBLE_DEVICES", "RUNG_PARAMS", "RUNG_REPORT"];

const mode = z.enum(["max", "min"]);
const num = z.number();
const scalar = z.union([z.string(), z.number(), z.boolean()]);

const schedulerCommon = { time_attr: z.string().min(1).optional(), max_t: num.optional() };
const ashaShape = {
  ...schedulerCommon,
  grace_period: num.optional(),
  reduction_factor: num.optional(),
  brackets: num.optional(),
  stop_last_trials: z.boolean().optional(),
};

const SpecInputSchema = strictObject({
  name: z.string(),
  command: z.union([z.string(), z.array(z.string()).min(1)]),
  workdir: z.string().optional(),
  env: z.record(z.string(), scalar).optional(),
  secret_env: z.array(z.string()).optional(),
  metric: strictObject({ name: z.string().min(1), mode }),
  search: strictObject({
    algorithm: z.enum(["grid", "random", "tpe", "bohb"]).optional(),
    samples: z.number().int().min(1).optional(),
    startup_trials: z.number().int().min(1).optional(),
    seed: z.number().int().optional(),
    space: z.record(z.string(), z.unknown()),
  }),
  scheduler: z
    .discriminatedUnion("type", [
      strictObject({ type: z.literal("asha"), ...ashaShape }),
      strictObject({ type: z.literal("hyperband"), ...ashaShape }),
      strictObject({
        type: z.literal("promotion"),
        ...schedulerCommon,
        grace_period: num.optional(),
        reduction_factor: num.optional(),
      }),
      strictObject({
        type: z.literal("pbt"),
        ...schedulerCommon,
        perturbation_interval: num.optional(),
        quantile_fraction: num.optional(),
        resample_probability: num.optional(),
        /** The search-space parameters an exploit may change (those a checkpoint does not fix). */
        hyperparam_mutations: z.array(z.string()).min(1),
      }),
      strictObject({
        type: z.literal("curve"),
        ...schedulerCommon,
        grace_period: num.optional(),
        reduction_factor: num.optional(),
        probability: num.optional(),
        top_k: num.optional(),
      }),
      strictObject({
        type: z.literal("median"),
        ...schedulerCommon,
        grace_period: num.optional(),
        min_samples_required: num.optional(),
      }),
      strictObject({ type: z.literal("fifo"), ...schedulerCommon }),
    ])
    .optional(),
  diverged: strictObject({ threshold: num.optional() }).optional(),
  early_stopping: strictObject({
    monitor: z.string().min(1).optional(),
    mode: mode.optional(),
    patience: z.number().int().min(1),
    min_delta: z.number().min(0).optional(),
  }).optional(),
  resources: strictObject({
    gpus: z
      .number()
      .min(0, { error: "must be 0 (a CPU slot), a share of one GPU such as 0.25, or a whole number of GPUs such as 1" })
      .optional(),
    cpus: z.number().int().min(0).optional(),
    gpu_memory: z.union([z.string(), z.number()]).optional(),
  }).optional(),
  packing: z
    .union(
      [
        z.literal("auto"),
        strictObject({
          mode: z.literal("auto"),
          target_busy: num.optional(),
          memory_margin: num.optional(),
          max_per_gpu: z.number().int().optional(),
          slowdown: num.optional(),
        }),
      ],
      { error: "must be auto, or a mapping such as { mode: auto, max_per_gpu: 4 }, or left out" },
    )
    .optional(),
  max_concurrent: z.number().int().min(1).nullable().optional(),
  retries: z.number().int().min(0).optional(),
  report_timeout: z.union([z.string(), z.number()]).optional(),
  trial_timeout: z.union([z.string(), z.number()]).optional(),
  budget: strictObject({ gpu_hours: num.optional(), cost: num.optional() }).optional(),
  checkpoints: strictObject({
    keep: z.number().int().min(1).optional(),
    keep_best: z.number().int().min(0).optional(),
  }).optional(),
});

/** The spec as written (snake_case), after the structural check. */
export type SpecInput = z.input<typeof SpecInputSchema>;

const SNAKE: Record<keyof SchedulerOptionsInput, string> = {
  scheduler: "type",
  mode: "metric.mode",
  gracePeriod: "grace_period",
  reductionFactor: "reduction_factor",
  maxT: "max_t",
  brackets: "brackets",
  stopLastTrials: "stop_last_trials",
  minSamplesRequired: "min_samples_required",
  perturbationInterval: "perturbation_interval",
  quantileFraction: "quantile_fraction",
  resampleProbability: "resample_probability",
  probability: "probability",
  topK: "top_k",
};

/**
 * Validates a parsed spec document (the object YAML or JSON gave) and compiles it. Throws SpecError
 * listing every problem of the failing pass: structure first, then the rules between fields.
 */
export function compileSpec(input: unknown, options?: { file?: string | null }): StudySpec {
  const file = options?.file ?? null;
  if (input === null || input === undefined) {
    throw new SpecError([{ path: "", message: "is empty; a study spec needs name, command, metric, search and scheduler" }], {
      file,
    });
  }
  if (typeof input !== "object" || Array.isArray(input)) {
    throw new SpecError(
      [
        {
          path: "",
          message: `must be a mapping of study settings (name, command, metric, search, scheduler, …), got ${Array.isArray(input) ? "a list" : typeof input}`,
        },
      ],
      { file },
    );
  }
  const parsed = SpecInputSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) throw new SpecError(issuesToProblems(parsed.error.issues), { file });
  const raw = parsed.data;
  const problems: SpecProblem[] = [];
  const bad = (path: string, message: string) => problems.push({ path, message });

  // name
  try {
    validToken(raw.name, "name");
  } catch (err) {
    if (!(err instanceof InvalidTokenError)) throw err;
    bad("name", `${JSON.stringify(raw.name)} ${err.problem}; use letters, digits, "-" and "_" only (at most 64 characters)`);
  }

  // command
  let argv: string[] = [];
  if (typeof raw.command === "string") {
    try {
      argv = splitCommand(raw.command);
    } catch (err) {
      if (!(err instanceof CommandTemplateError)) throw err;
      bad("command", err.message.replace(/^command: /, ""));
    }
  } else {
    argv = [...raw.command];
    if ((argv[0] ?? "") === "") bad("command[0]", "must name the program to run, e.g. python");
  }

  // workdir
  const workdir = raw.workdir ?? ".";
  if (workdir === "" || workdir.startsWith("/") || workdir.startsWith("\\") || /^[A-Za-z]:/.test(workdir)) {
    bad("workdir", `must be a relative path (it is resolved under the agent's --workdir), got ${JSON.stringify(workdir)}`);
  } else if (workdir.split(/[\\/]/).includes("..")) {
    bad("workdir", `must stay inside the agent's --workdir (no ".."), got ${JSON.stringify(workdir)}`);
  }

  // env
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw.env ?? {})) {
    const path = `env.${key}`;
    if (!ENV_NAME.test(key))
      bad(path, "is not an environment variable name; use letters, digits and _, not starting with a digit");
    else if (AGENT_ENV.includes(key) || key.startsWith("RUNG_")) bad(path, "is set by the agent for every trial; remove it");
    else if (typeof value === "number" && !Number.isFinite(value)) bad(path, `must be a string, got ${value}`);
    else env[key] = String(value);
  }
  const secretEnv = raw.secret_env ?? [];
  secretEnv.forEach((key, i) => {
    if (!ENV_NAME.test(key)) bad(`secret_env[${i}]`, `${JSON.stringify(key)} is not an environment variable name`);
    else if (secretEnv.indexOf(key) !== i) bad(`secret_env[${i}]`, `${key} is listed twice`);
  });

  // search
  const algorithm = raw.search.algorithm ?? "random";
  const space: Record<string, ParamSpec> = {};
  for (const [key, value] of Object.entries(raw.search.space)) {
    const path = `search.space.${key}`;
    if (!PARAM_NAME.test(key)) {
      bad(
        path,
        "is not a usable parameter name; use letters, digits and _, not starting with a digit (it becomes {name} in the command)",
      );
      continue;
    }
    if ((RESERVED_PLACEHOLDERS as readonly string[]).includes(key)) {
      bad(path, `is reserved: {${key}} is filled by Rung; pick another name`);
      continue;
    }
    const r = parseParam(value);
    if (r.problems) {
      for (const p of r.problems) bad(p.subpath === "" ? path : `${path}.${p.subpath}`, p.message);
      continue;
    }
    const param = r.param;
    if (algorithm === "grid" && param.kind !== "constant" && param.kind !== "grid" && param.kind !== "choice") {
      bad(path, `${param.kind} needs search.algorithm: random; a grid search takes grid, choice or plain values`);
      continue;
    }
    if ((algorithm === "tpe" || algorithm === "bohb") && param.kind === "grid") {
      bad(
        path,
        `grid is not sampled by ${algorithm}: write { choice: ${JSON.stringify(param.values)} } and the model picks among the values`,
      );
      continue;
    }
    space[key] = param;
  }
  if (raw.search.startup_trials !== undefined && algorithm !== "tpe" && algorithm !== "bohb")
    bad(
      "search.startup_trials",
      `applies to search.algorithm tpe or bohb (the random draws before the model is used), not ${algorithm}`,
    );
  const search: SearchSpec = {
    algorithm,
    samples: raw.search.samples ?? 1,
    seed: raw.search.seed ?? 0,
    space,
    // Only for the model-based algorithms: a random or grid study's compiled spec (and hash) is as before.
    ...(algorithm === "tpe" || algorithm === "bohb"
      ? { startupTrials: raw.search.startup_trials ?? DEFAULT_STARTUP_TRIALS }
      : {}),
  };

  // metric
  const metric = { name: raw.metric.name, mode: raw.metric.mode };

  // scheduler
  // No scheduler section: FIFO, every trial runs to its end (what Ray Tune does when none is given).
  const s = raw.scheduler ?? { type: "fifo" as const };
  const schedulerInput: SchedulerOptionsInput = {
    scheduler: s.type,
    mode: metric.mode,
    maxT: s.max_t,
    ...("grace_period" in s ? { gracePeriod: s.grace_period } : {}),
    ...("reduction_factor" in s ? { reductionFactor: s.reduction_factor } : {}),
    ...("brackets" in s ? { brackets: s.brackets } : {}),
    ...("stop_last_trials" in s ? { stopLastTrials: s.stop_last_trials } : {}),
    ...("min_samples_required" in s ? { minSamplesRequired: s.min_samples_required } : {}),
    ...("perturbation_interval" in s ? { perturbationInterval: s.perturbation_interval } : {}),
    ...("quantile_fraction" in s ? { quantileFraction: s.quantile_fraction } : {}),
    ...("resample_probability" in s ? { resampleProbability: s.resample_probability } : {}),
    ...("probability" in s ? { probability: s.probability } : {}),
    ...("top_k" in s ? { topK: s.top_k } : {}),
  };
  const checked = checkSchedulerOptions(schedulerInput, (o) => SNAKE[o]);
  for (const p of checked.problems) bad(p.option === "mode" ? "metric.mode" : `scheduler.${SNAKE[p.option]}`, p.message);
  let scheduler: SchedulerSpec | null = null;
  if (checked.options !== null) {
    const { mode: _mode, ...rest } = checked.options;
    scheduler = { ...rest, timeAttr: s.time_attr ?? DEFAULT_TIME_ATTR } as SchedulerSpec;
    if (s.type === "pbt") {
      // Each parameter an exploit may change must be one the search space draws.
      for (const name of s.hyperparam_mutations) {
        const p = space[name];
        if (p === undefined) bad("scheduler.hyperparam_mutations", `${name} is not a search.space parameter`);
        else if (p.kind === "constant")
          bad(
            "scheduler.hyperparam_mutations",
            `${name} is a constant in search.space; give it a distribution or a grid to perturb`,
          );
      }
      scheduler = { ...scheduler, mutations: [...s.hyperparam_mutations] } as SchedulerSpec;
    }
  }
  if ((algorithm === "tpe" || algorithm === "bohb") && s.type === "pbt")
    bad(
      "search.algorithm",
      `${algorithm} learns which parameters give which results, and pbt changes a trial's parameters while it trains; use search.algorithm: random with pbt`,
    );
  else if (algorithm === "bohb" && !["asha", "hyperband", "promotion", "curve"].includes(s.type))
    bad(
      "search.algorithm",
      `bohb learns from the results at the scheduler's rungs, and the ${s.type} scheduler has none; use scheduler type asha, hyperband, promotion or curve, or search.algorithm: tpe`,
    );

  // early stopping
  let earlyStopping: EarlyStoppingSpec | null = null;
  if (raw.early_stopping !== undefined) {
    const es = raw.early_stopping;
    const monitor = es.monitor ?? metric.name;
    let esMode = es.mode;
    if (esMode === undefined) {
      if (monitor === metric.name) esMode = metric.mode;
      else bad("early_stopping.mode", `is required (max or min) when monitor (${monitor}) is not metric.name (${metric.name})`);
    }
    if (esMode !== undefined) earlyStopping = { monitor, mode: esMode, patience: es.patience, minDelta: es.min_delta ?? 0 };
  }

  // placeholders
  if (argv.length > 0) {
    const known = [...Object.keys(raw.search.space), ...RESERVED_PLACEHOLDERS];
    for (const name of placeholders(argv)) {
      if (name === "max_t") {
        if (scheduler !== null && scheduler.maxT === null) {
          bad("command", `{max_t} needs scheduler.max_t, which the ${scheduler.type} scheduler here does not set`);
        }
      } else if (!known.includes(name)) {
        const params = Object.keys(raw.search.space);
        bad(
          "command",
          `{${name}} is not a search.space parameter; use ${params.length > 0 ? `one of ${params.join(", ")}, or ` : ""}max_t, trial, study`,
        );
      }
    }
  }

  // size
  if (problems.length === 0) {
    const n = countTrials(search);
    if (n > MAX_TRIALS) bad("search", `would create ${n} trials; at most ${MAX_TRIALS} (check samples and the grid sizes)`);
  }

  // limits
  const limit = (key: "report_timeout" | "trial_timeout"): number | null => {
    const v = raw[key];
    if (v === undefined) return null;
    const ms = typeof v === "number" ? v * 1000 : durationMs(v);
    if (ms === null || !Number.isFinite(ms) || ms < 1000) {
      bad(key, `must be a duration of at least 1s such as "30s", "10m" or "2h" (a number is seconds), got ${JSON.stringify(v)}`);
      return null;
    }
    return ms;
  };
  const reportTimeoutMs = limit("report_timeout");
  const trialTimeoutMs = limit("trial_timeout");

  const resources = compileResources(raw.resources, bad);
  const budget = compileBudget(raw.budget, bad);
  const packing = compilePacking(raw.packing, resources, bad);

  if (problems.length > 0 || scheduler === null) throw new SpecError(problems, { file });
  return {
    name: raw.name,
    argv,
    workdir,
    env,
    secretEnv: [...secretEnv],
    metric,
    search,
    scheduler,
    earlyStopping,
    resources,
    packing,
    budget,
    maxConcurrent: raw.max_concurrent ?? null,
    retries: raw.retries ?? DEFAULT_RETRIES,
    reportTimeoutMs,
    trialTimeoutMs,
    diverged: raw.diverged === undefined ? null : { threshold: raw.diverged.threshold ?? null },
    checkpoints:
      raw.checkpoints === undefined
        ? null
        : {
            keep: raw.checkpoints.keep ?? DEFAULT_CHECKPOINTS.keep,
            keepBest: raw.checkpoints.keep_best ?? DEFAULT_CHECKPOINTS.keepBest,
          },
  };
}

/**
 * `resources`: whole GPUs as before; a share of one GPU (0.01–0.99, whole percent: shares on a GPU
 * must add up exactly); `gpu_memory` a size with a unit, only with GPUs.
 */
function compileResources(
  raw: { gpus?: number; cpus?: number; gpu_memory?: string | number } | undefined,
  bad: (path: string, message: string) => void,
): StudySpec["resources"] {
  const gpus = raw?.gpus ?? 1;
  if (gpus > 1 && !Number.isInteger(gpus))
    bad("resources.gpus", `more than one GPU must be a whole number, got ${gpus}; use a share below 1 (such as 0.5) or 1, 2, …`);
  else if (gpus > 0 && gpus < 1 && (gpus < 0.01 || Math.abs(gpus * 100 - Math.round(gpus * 100)) > 1e-9))
    bad("resources.gpus", `a share of one GPU is 0.01 to 0.99 in steps of 0.01, got ${gpus}; write for example 0.25 or 0.33`);
  let gpuMemoryMiB: number | null = null;
  if (raw?.gpu_memory !== undefined) {
    const v = raw.gpu_memory;
    gpuMemoryMiB = typeof v === "string" ? parseMemoryMiB(v) : null;
    if (gpuMemoryMiB === null)
      bad("resources.gpu_memory", `must be a size with a unit such as "10GiB" or "512MiB", got ${JSON.stringify(v)}`);
    else if (gpus === 0)
      bad("resources.gpu_memory", "is set but resources.gpus is 0; set gpus (for example 0.25) or drop gpu_memory");
  }
  return { gpus, cpus: raw?.cpus ?? 0, gpuMemoryMiB };
}

/**
 * `packing: auto` or `{ mode: auto, … }` (packing.ts): defaults applied, bounds checked. It sizes each
 * trial's share of one GPU itself, so the spec asks for one whole GPU (the observing trials run alone).
 */
function compilePacking(
  raw:
    | "auto"
    | { mode: "auto"; target_busy?: number; memory_margin?: number; max_per_gpu?: number; slowdown?: number }
    | undefined,
  resources: StudySpec["resources"],
  bad: (path: string, message: string) => void,
): PackingSpec | null {
  if (raw === undefined) return null;
  const o = raw === "auto" ? { mode: "auto" as const } : raw;
  const p: PackingSpec = {
    mode: "auto",
    targetBusy: o.target_busy ?? PACKING_DEFAULTS.targetBusy,
    memoryMargin: o.memory_margin ?? PACKING_DEFAULTS.memoryMargin,
    maxPerGpu: o.max_per_gpu ?? PACKING_DEFAULTS.maxPerGpu,
    slowdown: o.slowdown ?? PACKING_DEFAULTS.slowdown,
  };
  if (!(p.targetBusy > 0 && p.targetBusy <= 1))
    bad("packing.target_busy", `is the GPU busy share to stay under, above 0 and at most 1 (such as 0.8), got ${p.targetBusy}`);
  if (!(p.memoryMargin >= 0 && p.memoryMargin <= 4))
    bad("packing.memory_margin", `is the share added to the peak memory seen, 0 to 4 (such as 0.2), got ${p.memoryMargin}`);
  if (!(p.maxPerGpu >= 1 && p.maxPerGpu <= 16))
    bad("packing.max_per_gpu", `must be a whole number of trials from 1 to 16, got ${p.maxPerGpu}`);
  if (!(p.slowdown > 0 && p.slowdown <= 10))
    bad("packing.slowdown", `is how much slower packed epochs may be than alone ones, above 0 (such as 0.25), got ${p.slowdown}`);
  if (resources.gpus !== 1)
    bad(
      "resources.gpus",
      `is ${resources.gpus}, but packing: auto picks each trial's share of one GPU itself; set resources.gpus to 1 (or leave it out), or drop packing`,
    );
  return p;
}

/** `budget: { gpu_hours: 10 }` and/or `{ cost: 25 }` (in the agents' price unit): positive numbers. */
function compileBudget(
  raw: { gpu_hours?: number; cost?: number } | undefined,
  bad: (path: string, message: string) => void,
): StudySpec["budget"] {
  if (raw === undefined) return null;
  const gpuHours = raw.gpu_hours ?? null;
  const cost = raw.cost ?? null;
  if (gpuHours === null && cost === null)
    bad("budget", "names no limit; set gpu_hours (such as 10) or cost (such as 25), or drop budget");
  if (gpuHours !== null && !(gpuHours > 0 && Number.isFinite(gpuHours)))
    bad("budget.gpu_hours", `must be a number of GPU-hours above 0, got ${gpuHours}`);
  if (cost !== null && !(cost > 0 && Number.isFinite(cost)))
    bad("budget.cost", `must be an amount above 0 (priced from the agents' --price-per-gpu-hour), got ${cost}`);
  return { gpuHours, cost };
}

function durationMs(text: string): number | null {
  try {
    return parseDuration(text);
  } catch {
    return null;
  }
}

/**
 * Parses spec text and compiles it. JSON when `filename` ends in `.json`, YAML otherwise (YAML 1.2,
 * duplicate keys refused). `filename` only labels errors and picks the format.
 */
export function parseSpec(text: string, filename: string | null = null): StudySpec {
  let doc: unknown;
  if (filename?.toLowerCase().endsWith(".json")) {
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new SpecError([{ path: "", message: `is not valid JSON (${(err as Error).message})` }], {
        file: filename,
        cause: err,
      });
    }
  } else {
    const parsed = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
    if (parsed.errors.length > 0) {
      throw new SpecError(
        parsed.errors.map((e) => ({
          path: "",
          message: `is not valid YAML: ${(e.message.split("\n")[0] ?? "").replace(/:$/, "")}`,
        })),
        { file: filename, cause: parsed.errors[0] },
      );
    }
    doc = parsed.toJS({ maxAliasCount: 1000 });
  }
  return compileSpec(doc, { file: filename });
}

/** Reads and compiles a spec file; an unreadable file is a SpecError too. */
export async function loadSpec(path: string): Promise<StudySpec> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT" ? "no such file" : code === "EISDIR" ? "it is a directory" : ((err as Error).message ?? String(err));
    throw new SpecError([{ path: "", message: `cannot read the study spec: ${why}` }], { file: path, cause: err });
  }
  return parseSpec(text, path);
}

/** The spec in its written form (snake_case, argv list), defaults spelled out: `compileSpec` of it gives `spec` back. */
export function specToInput(spec: StudySpec): Record<string, unknown> {
  const s = spec.scheduler;
  const scheduler: Record<string, unknown> = { type: s.type, time_attr: s.timeAttr };
  if (s.type === "asha" || s.type === "hyperband") {
    Object.assign(scheduler, {
      grace_period: s.gracePeriod,
      reduction_factor: s.reductionFactor,
      max_t: s.maxT,
      brackets: s.brackets,
      stop_last_trials: s.stopLastTrials,
    });
  } else if (s.type === "promotion") {
    Object.assign(scheduler, { grace_period: s.gracePeriod, reduction_factor: s.reductionFactor, max_t: s.maxT });
  } else if (s.type === "curve") {
    Object.assign(scheduler, {
      grace_period: s.gracePeriod,
      reduction_factor: s.reductionFactor,
      max_t: s.maxT,
      probability: s.probability,
      top_k: s.topK,
    });
  } else if (s.type === "pbt") {
    Object.assign(scheduler, {
      perturbation_interval: s.perturbationInterval,
      quantile_fraction: s.quantileFraction,
      resample_probability: s.resampleProbability,
      max_t: s.maxT,
      hyperparam_mutations: [...s.mutations],
    });
  } else {
    if (s.type === "median")
      Object.assign(scheduler, { grace_period: s.gracePeriod, min_samples_required: s.minSamplesRequired });
    if (s.maxT !== null) scheduler.max_t = s.maxT;
  }
  const out: Record<string, unknown> = {
    name: spec.name,
    command: [...spec.argv],
    workdir: spec.workdir,
    env: { ...spec.env },
    secret_env: [...spec.secretEnv],
    metric: { ...spec.metric },
    search: {
      algorithm: spec.search.algorithm,
      samples: spec.search.samples,
      seed: spec.search.seed,
      ...(spec.search.algorithm === "tpe" || spec.search.algorithm === "bohb"
        ? { startup_trials: spec.search.startupTrials ?? DEFAULT_STARTUP_TRIALS }
        : {}),
      space: Object.fromEntries(Object.entries(spec.search.space).map(([k, p]) => [k, paramToInput(p)])),
    },
    scheduler,
    resources: {
      gpus: spec.resources.gpus,
      cpus: spec.resources.cpus,
      ...(spec.resources.gpuMemoryMiB === null ? {} : { gpu_memory: `${spec.resources.gpuMemoryMiB}MiB` }),
    },
    ...(spec.packing === null
      ? {}
      : {
          packing: {
            mode: spec.packing.mode,
            target_busy: spec.packing.targetBusy,
            memory_margin: spec.packing.memoryMargin,
            max_per_gpu: spec.packing.maxPerGpu,
            slowdown: spec.packing.slowdown,
          },
        }),
    ...(spec.budget === null
      ? {}
      : {
          budget: {
            ...(spec.budget.gpuHours === null ? {} : { gpu_hours: spec.budget.gpuHours }),
            ...(spec.budget.cost === null ? {} : { cost: spec.budget.cost }),
          },
        }),
    retries: spec.retries,
  };
  if (spec.earlyStopping !== null) {
    const e = spec.earlyStopping;
    out.early_stopping = { monitor: e.monitor, mode: e.mode, patience: e.patience, min_delta: e.minDelta };
  }
  if (spec.maxConcurrent !== null) out.max_concurrent = spec.maxConcurrent;
  if (spec.reportTimeoutMs !== null) out.report_timeout = `${spec.reportTimeoutMs}ms`;
  if (spec.trialTimeoutMs !== null) out.trial_timeout = `${spec.trialTimeoutMs}ms`;
  if (spec.checkpoints !== null) out.checkpoints = { keep: spec.checkpoints.keep, keep_best: spec.checkpoints.keepBest };
  if (spec.diverged !== null) out.diverged = spec.diverged.threshold === null ? {} : { threshold: spec.diverged.threshold };
  return out;
}

/** What a secret value is stored as in the study record. */
export const REDACTED = "***";

/**
 * The spec as the study record keeps it: `specToInput`, with the values of the `secret_env` names
 * replaced by `***`. The record is read by everyone allowed to look at the mesh (`study status`,
 * `tail`, viewers); the values travel only inside work orders, which viewers cannot read.
 */
export function specForRecord(spec: StudySpec): Record<string, unknown> {
  const input = specToInput(spec);
  const env = { ...(input.env as Record<string, string>) };
  for (const name of spec.secretEnv) if (name in env) env[name] = REDACTED;
  return { ...input, env };
}

/** JSON with object keys sorted at every level and no whitespace: equal values, equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    if (typeof value === "number" && !Number.isFinite(value)) throw new RangeError(`cannot encode ${value} as JSON`);
    return JSON.stringify(value) ?? "null";
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
  const entries = Object.entries(value)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

/**
 * sha256 (hex) of the compiled spec's canonical JSON: the same study whatever the key order,
 * formatting, comments or spelled-out defaults of the file. Stored with the study so a restarted
 * coordinator (or `rung study run` on a changed file) can tell it is the same study.
 */
export function specHash(spec: StudySpec): string {
  // Limits that are not set stay out of the hash, so a study recorded before they existed keeps its hash.
  const { reportTimeoutMs, trialTimeoutMs, checkpoints, diverged, budget, resources, packing, ...rest } = spec;
  const { gpuMemoryMiB, ...wholeResources } = resources;
  return createHash("sha256")
    .update(
      canonicalJson({
        ...rest,
        resources: gpuMemoryMiB === null ? wholeResources : resources,
        reportTimeoutMs: reportTimeoutMs ?? undefined,
        trialTimeoutMs: trialTimeoutMs ?? undefined,
        checkpoints: checkpoints ?? undefined,
        diverged: diverged ?? undefined,
        budget: budget ?? undefined,
        packing: packing ?? undefined,
      }),
    )
    .digest("hex");
}

/**
 * How `next` may continue a recorded study (its stored spec hash, sample count and budget): "same"
 * spec, "extended" (only `search.samples` and/or the `budget` grew: the trials already planned keep
 * their ids and parameters, new ones follow — so a `budget-spent` study given a bigger budget runs on),
 * or what changed, as a sentence. `stored.budget` absent: the budget must be the same as well.
 */
export function specContinuation(
  stored: { readonly hash: string; readonly samples: number; readonly budget?: StudySpec["budget"] },
  next: StudySpec,
): "same" | "extended" | { readonly changed: string } {
  if (specHash(next) === stored.hash) return "same";
  const storedBudget = stored.budget === undefined ? next.budget : stored.budget;
  const asStored: StudySpec = { ...next, search: { ...next.search, samples: stored.samples }, budget: storedBudget };
  if (specHash(asStored) !== stored.hash) return { changed: "the spec differs from the one the study was started with" };
  if (next.search.samples < stored.samples)
    return {
      changed: `search.samples can only grow (the study has ${stored.samples}, the spec asks for ${next.search.samples})`,
    };
  const lowered = budgetLowered(storedBudget, next.budget);
  return lowered === null ? "extended" : { changed: lowered };
}

/** Why `next` is not the stored budget or a bigger one (each limit kept, raised or dropped), or null. */
function budgetLowered(stored: StudySpec["budget"], next: StudySpec["budget"]): string | null {
  if (next === null) return null;
  const limits = [
    ["gpu_hours", stored?.gpuHours ?? null, next.gpuHours],
    ["cost", stored?.cost ?? null, next.cost],
  ] as const;
  for (const [key, was, now] of limits) {
    if (now === null) continue;
    if (was === null)
      return `budget.${key} can only grow, and the study was started without it; drop it, or delete the study to start again with it`;
    if (now < was) return `budget.${key} can only grow (the study has ${was}, the spec asks for ${now})`;
  }
  return null;
}

/** The scheduler options of a spec (its scheduler section plus the metric's mode). */
export function schedulerOptionsOf(spec: StudySpec): SchedulerOptions {
  const { timeAttr: _timeAttr, ...rest } = spec.scheduler;
  if ("mutations" in rest) {
    const { mutations: _mutations, ...options } = rest;
    return { ...options, mode: spec.metric.mode } as SchedulerOptions;
  }
  return { ...rest, mode: spec.metric.mode } as SchedulerOptions;
}

/** The exact argv for one trial: parameters, `{max_t}`, `{trial}` and `{study}` substituted. */
export function trialArgv(spec: StudySpec, trial: PlannedTrial): string[] {
  const values: Record<string, ParamValue> = { ...trial.params, trial: trial.trial, study: spec.name };
  if (spec.scheduler.maxT !== null) values.max_t = spec.scheduler.maxT;
  return renderArgv(spec.argv, values);
}
