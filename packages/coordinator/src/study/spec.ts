import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import {
  CommandTemplateError,
  InvalidTokenError,
  parseDuration,
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
  FifoOptions,
  MedianOptions,
  MetricMode,
  PbtOptions,
  PromotionOptions,
  SchedulerOptions,
  SchedulerOptionsInput,
} from "../scheduling/index.js";
import { checkSchedulerOptions } from "../scheduling/index.js";
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
 *   search {algorithm (random), samples (1), seed (0), space}
 *                                -> search {algorithm, samples, seed, space: ParamSpec per key}
 *   scheduler {type, time_attr ("epoch"), grace_period, reduction_factor, max_t, brackets,
 *              stop_last_trials, min_samples_required}
 *                                -> scheduler {type, timeAttr, gracePeriod, reductionFactor, maxT,
 *                                   brackets, stopLastTrials, minSamplesRequired} (per type; see
 *                                   scheduler-options.ts for defaults and rules); no
 *                                   scheduler section: {type: fifo}, as Ray Tune defaults
 *   early_stopping {monitor (metric.name), mode (metric.mode when monitoring the metric), patience,
 *                   min_delta (0)}  (optional)
 *                                -> earlyStopping {monitor, mode, patience, minDelta} | null
 *   resources {gpus (1), cpus (0)} -> resources       gpus: 0 means a CPU slot
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
  readonly resources: { readonly gpus: number; readonly cpus: number };
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
    algorithm: z.enum(["grid", "random"]).optional(),
    samples: z.number().int().min(1).optional(),
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
    gpus: z.number().int().min(0).optional(),
    cpus: z.number().int().min(0).optional(),
  }).optional(),
  max_concurrent: z.number().int().min(1).nullable().optional(),
  retries: z.number().int().min(0).optional(),
  report_timeout: z.union([z.string(), z.number()]).optional(),
  trial_timeout: z.union([z.string(), z.number()]).optional(),
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
    space[key] = param;
  }
  const search: SearchSpec = { algorithm, samples: raw.search.samples ?? 1, seed: raw.search.seed ?? 0, space };

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
    resources: { gpus: raw.resources?.gpus ?? 1, cpus: raw.resources?.cpus ?? 0 },
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
      space: Object.fromEntries(Object.entries(spec.search.space).map(([k, p]) => [k, paramToInput(p)])),
    },
    scheduler,
    resources: { ...spec.resources },
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
  const { reportTimeoutMs, trialTimeoutMs, checkpoints, diverged, ...rest } = spec;
  return createHash("sha256")
    .update(
      canonicalJson({
        ...rest,
        reportTimeoutMs: reportTimeoutMs ?? undefined,
        trialTimeoutMs: trialTimeoutMs ?? undefined,
        checkpoints: checkpoints ?? undefined,
        diverged: diverged ?? undefined,
      }),
    )
    .digest("hex");
}

/**
 * How `next` may continue a recorded study (its stored spec hash and sample count): "same" spec,
 * "extended" (only `search.samples` grew: the trials already planned keep their ids and parameters, new
 * ones follow), or what changed, as a sentence.
 */
export function specContinuation(
  stored: { readonly hash: string; readonly samples: number },
  next: StudySpec,
): "same" | "extended" | { readonly changed: string } {
  if (specHash(next) === stored.hash) return "same";
  const asStored: StudySpec = { ...next, search: { ...next.search, samples: stored.samples } };
  if (specHash(asStored) !== stored.hash) return { changed: "the spec differs from the one the study was started with" };
  if (next.search.samples < stored.samples)
    return {
      changed: `search.samples can only grow (the study has ${stored.samples}, the spec asks for ${next.search.samples})`,
    };
  return "extended";
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
