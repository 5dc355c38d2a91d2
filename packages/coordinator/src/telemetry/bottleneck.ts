/**
 * Diagnosis: why are the GPUs at 40 %, and what should change. A pure function from per-trial
 * statistics (GPU samples joined with the trial's reports, see telemetry-join.ts) and per-agent idle
 * accounting to findings, each with the numbers that support it and concrete advice.
 *
 * Rules (thresholds are the named settings below, never numbers in the rules):
 *   input-bound          mean GPU utilization < 50 % and data-wait share > 30 %
 *   gpu-under-filled     mean GPU utilization < 50 %, data-wait share <= 30 %, memory high-water < 50 %
 *   multi-gpu-imbalance  GPUs of one trial, sampled together, differ by more than 20 points
 *   host-cpu-saturated   the trial's own CPU >= 90 % of the cores it can have (and the host's >= 90 %
 *                        when that is less than all of them) while its GPUs are < 50 % busy
 *   near-oom             memory high-water above 95 % of the GPU's memory
 *   idle-gpus            more than 20 % (and at least a minute) of an agent's GPU-seconds had no trial
 *
 * What an input-bound trial's loader waits on decides the worker advice (`loaderWaitsOn`):
 *   cpu        the CPU is busy while the loader waits (host >= 75 % meanwhile) and the trial itself
 *              uses at least half the cores it can have: more workers than cores will not help
 *   io         the CPU is mostly idle while the loader waits (host < 75 % meanwhile): the workers
 *              wait on storage or the network, so raise num_workers past the core count (2–4×)
 *   contended  the CPU is busy while the loader waits, but not with this trial (its own CPU below
 *              half its cores): other processes hold the cores; the trial's workers mostly wait
 *   unknown    neither measured (an older agent and helper): both possibilities are named
 * Without `data_wait_host_cpu` (a helper that predates it) the trial's own CPU decides alone: at or
 * above 75 % of its cores is cpu, below is io (or contended when the host was busy meanwhile).
 *
 * Findings are sorted worst first: severity, then the GPU time they waste.
 */

export const FindingKind = {
  inputBound: "input-bound",
  gpuUnderFilled: "gpu-under-filled",
  multiGpuImbalance: "multi-gpu-imbalance",
  hostCpuSaturated: "host-cpu-saturated",
  nearOom: "near-oom",
  idleGpus: "idle-gpus",
  /** Trials that failed (the report adds it from the study's state, not from telemetry). */
  trialsFailed: "trials-failed",
  /** A security finding: an agent published events about attempts it does not hold (from the study's state). */
  forgedEvents: "forged-events",
} as const;
export type FindingKind = (typeof FindingKind)[keyof typeof FindingKind];

export const Severity = { critical: "critical", warning: "warning" } as const;
export type Severity = (typeof Severity)[keyof typeof Severity];

/** Every threshold of the rules. Shares are 0..1; utilization and CPU load are percent (0..100). */
export interface DiagnosisThresholds {
  /** GPU samples a trial needs before a utilization rule judges it. Default 5. */
  readonly minSamples: number;
  /** input-bound: mean GPU utilization below this. Default 50. */
  readonly inputBoundMaxUtilization: number;
  /** input-bound: data-wait share (`data_wait_s / (data_wait_s + compute_s)`) above this. Default 0.3. */
  readonly inputBoundMinDataWait: number;
  /** input-bound when the trial has no GPU samples (CPU trials, telemetry expired): data-wait share above this. Default 0.5. */
  readonly inputBoundNoGpuMinDataWait: number;
  /** gpu-under-filled: mean GPU utilization below this. Default 50. */
  readonly underFilledMaxUtilization: number;
  /** gpu-under-filled: data-wait share at most this (above it the trial is input-bound instead). Default 0.3. */
  readonly underFilledMaxDataWait: number;
  /** gpu-under-filled: memory high-water below this share of the GPU's memory. Default 0.5. */
  readonly underFilledMaxMemory: number;
  /** multi-gpu-imbalance: spread of the per-GPU mean utilization above this many points. Default 20. */
  readonly imbalanceMinSpread: number;
  /**
   * host-cpu-saturated: the trial's own CPU (its processes, measured by its agent) at or above this
   * percent of the cores it can have — all of the host's, or its GPUs' share of them on a host with
   * several GPUs (then the host's CPU must be at least this busy too). Default 90.
   */
  readonly hostCpuSaturatedPercent: number;
  /** host-cpu-saturated: and the trial's mean GPU utilization below this. Default 50. */
  readonly hostCpuIdleGpuMaxUtilization: number;
  /**
   * input-bound advice: the CPU counts as busy while the loader waits when the host's CPU meanwhile
   * (`data_wait_host_cpu`) is at or above this percent; without that number, when the trial's own
   * CPU is at or above this percent of its cores. Default 75.
   */
  readonly loaderBusyCpuPercent: number;
  /**
   * input-bound advice: when the CPU is busy while the loader waits, the loader is CPU-bound if the
   * trial's own CPU is at least this share of the cores it can have; below it other processes hold
   * the cores. Default 0.5.
   */
  readonly loaderOwnCpuShare: number;
  /** near-oom: memory high-water above this share of the GPU's memory. Default 0.95. */
  readonly nearOomMemory: number;
  /** near-oom is critical (rather than a warning) at or above this share. Default 0.99. */
  readonly nearOomCriticalMemory: number;
  /** idle-gpus: share of an agent's observed GPU-seconds with no trial above this. Default 0.2. */
  readonly idleMinShare: number;
  /** idle-gpus: and at least this many idle GPU-seconds, so a short study's start-up is not a finding. Default 60. */
  readonly idleMinGpuSeconds: number;
  /** A finding is critical when the share of GPU time it wastes is at least this. Default 0.6. */
  readonly criticalWasteShare: number;
}

export const DIAGNOSIS_DEFAULTS: Readonly<DiagnosisThresholds> = Object.freeze({
  minSamples: 5,
  inputBoundMaxUtilization: 50,
  inputBoundMinDataWait: 0.3,
  inputBoundNoGpuMinDataWait: 0.5,
  underFilledMaxUtilization: 50,
  underFilledMaxDataWait: 0.3,
  underFilledMaxMemory: 0.5,
  imbalanceMinSpread: 20,
  hostCpuSaturatedPercent: 90,
  hostCpuIdleGpuMaxUtilization: 50,
  loaderBusyCpuPercent: 75,
  loaderOwnCpuShare: 0.5,
  nearOomMemory: 0.95,
  nearOomCriticalMemory: 0.99,
  idleMinShare: 0.2,
  idleMinGpuSeconds: 60,
  criticalWasteShare: 0.6,
});

export type DiagnosisOptions = Partial<DiagnosisThresholds>;

const PERCENT_KEYS = new Set<keyof DiagnosisThresholds>([
  "inputBoundMaxUtilization",
  "underFilledMaxUtilization",
  "imbalanceMinSpread",
  "hostCpuSaturatedPercent",
  "hostCpuIdleGpuMaxUtilization",
  "loaderBusyCpuPercent",
]);
const COUNT_KEYS = new Set<keyof DiagnosisThresholds>(["minSamples", "idleMinGpuSeconds"]);

/** Applies defaults and checks bounds once; throws a RangeError naming the first bad setting. */
export function compileDiagnosisOptions(o: DiagnosisOptions = {}): DiagnosisThresholds {
  const out = { ...DIAGNOSIS_DEFAULTS } as Record<keyof DiagnosisThresholds, number>;
  for (const [k, v] of Object.entries(o) as [keyof DiagnosisThresholds, number | undefined][]) {
    if (v === undefined) continue;
    if (!(k in DIAGNOSIS_DEFAULTS)) throw new RangeError(`unknown diagnosis setting ${k}`);
    const max = PERCENT_KEYS.has(k) ? 100 : COUNT_KEYS.has(k) ? Number.POSITIVE_INFINITY : 1;
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > max)
      throw new RangeError(`diagnosis setting ${k} must be a number from 0 to ${max}, got ${String(v)}`);
    out[k] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Input: what telemetry-join.ts computes

export interface Distribution {
  readonly mean: number;
  readonly p10: number;
  readonly p90: number;
}

/** One GPU of a trial; `meanUtilization` over the samples where the trial's GPUs reported together. */
export interface TrialGpuStats {
  readonly agent: string;
  readonly gpu: number;
  readonly samples: number;
  readonly meanUtilization: number | null;
}

export interface TrialStats {
  readonly study: string;
  readonly trial: string;
  /** The trial's phase (`completed`, `stopped`, `failed`, `running` …). */
  readonly phase: string;
  readonly params: Readonly<Record<string, string | number | boolean>>;
  readonly agents: readonly string[];
  /** GPUs per attempt (the most any attempt held). */
  readonly gpuCount: number;
  /** GPU samples used for utilization and memory. */
  readonly samples: number;
  /** GPU-seconds covered by telemetry samples (all of them, warm-up included). */
  readonly sampledGpuSeconds: number;
  readonly utilization: Distribution | null;
  readonly memoryHighWaterMiB: number | null;
  readonly memoryTotalMiB: number | null;
  /** Highest used/total of any sample, 0..1. */
  readonly memoryHighWaterShare: number | null;
  readonly gpus: readonly TrialGpuStats[];
  readonly dataWaitS: number;
  readonly computeS: number;
  /** `data_wait_s / (data_wait_s + compute_s)` over all reports; null when the trial never reported them. */
  readonly dataWaitShare: number | null;
  /** A throughput the trial reported itself (`samples_per_s`, `throughput` …), mean over its reports. */
  readonly throughput: { readonly name: string; readonly value: number } | null;
  /** `num_workers` if the trial reports it. */
  readonly numWorkers: number | null;
  /** `batch_size` from the trial's parameters or reports. */
  readonly batchSize: number | null;
  /**
   * The trial's own CPU: the CPU time of its processes (trial, DataLoader workers, their children)
   * per host sample, measured by its agent, in cores. Null when its agent does not measure it.
   */
  readonly trialCpu: { readonly meanCores: number; readonly maxCores: number; readonly samples: number } | null;
  /**
   * Host CPU busy while the trial waited for batches, percent of all cores: `data_wait_host_cpu` of
   * its reports (rung_trial.timed measures it), weighted by each report's wait. Null when not reported.
   */
  readonly waitHostCpuPercent: number | null;
  readonly host: {
    readonly cores: number | null;
    /** GPUs on the trial's host (its DataLoader workers share the cores with the others). */
    readonly gpus: number | null;
    readonly cpuMeanPercent: number | null;
    readonly samples: number;
  };
}

export interface AgentIdleStats {
  readonly agent: string;
  readonly gpus: number;
  /** GPU-seconds seen in telemetry during the study's window. */
  readonly observedGpuSeconds: number;
  readonly busyGpuSeconds: number;
  /** GPU-seconds running another study's trials. */
  readonly otherGpuSeconds: number;
  readonly idleGpuSeconds: number;
  /** idle / observed, 0..1 (0 when nothing was observed). */
  readonly idleShare: number;
  /** Gaps between consecutive trials of the study on the same GPU, from the events. */
  readonly gaps: { readonly count: number; readonly totalS: number; readonly meanS: number; readonly maxS: number };
  readonly pricePerGpuHour: number | null;
}

export interface DiagnosisInput {
  readonly trials: readonly TrialStats[];
  readonly agents: readonly AgentIdleStats[];
}

export type Evidence = Record<string, number | string | null>;

export interface Finding {
  readonly kind: FindingKind;
  readonly severity: Severity;
  readonly trial: string | null;
  readonly agent: string | null;
  /** One sentence with the numbers. */
  readonly summary: string;
  /** The numbers in a few words, for lists of similar findings ("GPU 31 %, data wait 69 %"). */
  readonly short: string;
  readonly evidence: Evidence;
  readonly advice: readonly string[];
  /** Estimated GPU-seconds this wastes; what orders findings of the same severity. */
  readonly wastedGpuSeconds: number;
}

// ---------------------------------------------------------------------------------------------

const pct = (share: number) => `${Math.round(100 * share)}%`;
const pts = (util: number) => `${Math.round(util)}%`;
const gib = (mib: number) => `${(mib / 1024).toFixed(1)} GiB`;
const round = (x: number, digits = 3) => Number(x.toFixed(digits));
/** 8 → "8", 2.5 → "2.5": a count of cores, whole or not. */
const fmtCores = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(1));

function severityOf(wasteShare: number, t: DiagnosisThresholds): Severity {
  return wasteShare >= t.criticalWasteShare ? "critical" : "warning";
}

function hostText(trial: TrialStats): string {
  const h = trial.host;
  if (h.cores === null) return "the host's core count is unknown";
  return h.gpus !== null && h.gpus > 1
    ? `the host has ${h.cores} CPU cores for ${h.gpus} GPUs`
    : `the host has ${h.cores} CPU cores`;
}

/**
 * The cores a trial can have: all of the host's, or its GPUs' share of them on a host with several
 * GPUs (every GPU's trial shares the cores). Null when the host's core count is unknown.
 */
function trialCores(trial: TrialStats): number | null {
  const h = trial.host;
  if (h.cores === null) return null;
  if (h.gpus === null || h.gpus <= 1 || trial.gpuCount < 1) return h.cores;
  return Math.max(1, (h.cores * Math.min(trial.gpuCount, h.gpus)) / h.gpus);
}

/** The trial's own CPU against the host's cores and against the cores it can have. */
interface OwnCpu {
  readonly cores: number;
  /** Cores the trial can have (see `trialCores`). */
  readonly share: number;
  readonly hostCores: number;
  /** Percent of the cores it can have. */
  readonly percentOfShare: number;
  /** Percent of all the host's cores. */
  readonly percentOfHost: number;
}

function ownCpu(trial: TrialStats): OwnCpu | null {
  const c = trial.trialCpu;
  const share = trialCores(trial);
  const hostCores = trial.host.cores;
  if (c === null || share === null || hostCores === null || c.samples === 0) return null;
  return {
    cores: c.meanCores,
    share,
    hostCores,
    percentOfShare: (100 * c.meanCores) / share,
    percentOfHost: (100 * c.meanCores) / hostCores,
  };
}

/** What a starved loader waits on; the evidence's `loaderWaitsOn`. */
const LoaderWait = { cpu: "cpu", io: "io", contended: "contended", unknown: "unknown" } as const;
type LoaderWait = (typeof LoaderWait)[keyof typeof LoaderWait];

/**
 * What a starved loader waits on, from the host's CPU while it waited (reported by the trial) and the
 * trial's own CPU (measured by its agent). See the comment at the top of this file.
 */
function loaderWaitsOn(trial: TrialStats, t: DiagnosisThresholds): LoaderWait {
  const busy = t.loaderBusyCpuPercent;
  const own = ownCpu(trial);
  const ownIsMost = (o: OwnCpu) => o.percentOfShare >= 100 * t.loaderOwnCpuShare;
  const waitCpu = trial.waitHostCpuPercent;
  if (waitCpu !== null) {
    if (waitCpu < busy) return LoaderWait.io;
    if (own === null) return LoaderWait.cpu;
    return ownIsMost(own) ? LoaderWait.cpu : LoaderWait.contended;
  }
  if (own === null) return LoaderWait.unknown;
  if (own.percentOfShare >= busy) return LoaderWait.cpu;
  const hostCpu = trial.host.cpuMeanPercent;
  return hostCpu !== null && hostCpu >= busy && !ownIsMost(own) ? LoaderWait.contended : LoaderWait.io;
}

/** A worker count worth trying while the CPU sets the limit: the trial's cores, less one for the training loop. */
function workersWithinCores(trial: TrialStats): number {
  const now = trial.numWorkers ?? 0;
  const cores = trialCores(trial);
  if (cores === null) return Math.max(4, now * 2);
  return Math.max(1, Math.min(16, Math.floor(cores) - 1));
}

/**
 * A worker count worth trying when the workers wait on I/O: enough to cover the wait with half as
 * much again to spare (workers / (1 − wait) × 1.5), between two and four times the trial's cores.
 */
function workersPastCores(trial: TrialStats, wait: number): number {
  const now = Math.max(1, trial.numWorkers ?? 1);
  const cores = trialCores(trial);
  const need = Math.ceil((1.5 * now) / Math.max(0.05, 1 - wait));
  if (cores === null) return Math.max(now + 1, Math.min(64, need));
  const lo = Math.ceil(2 * cores);
  const hi = Math.max(lo, Math.floor(4 * cores));
  return Math.max(now + 1, Math.min(hi, Math.max(lo, need)));
}

function inputBound(trial: TrialStats, t: DiagnosisThresholds, hostSaturated: boolean): Finding | undefined {
  const wait = trial.dataWaitShare;
  if (wait === null) return undefined;
  const u = trial.utilization;
  const judged = u !== null && trial.samples >= t.minSamples;
  if (judged) {
    if (!(u.mean < t.inputBoundMaxUtilization && wait > t.inputBoundMinDataWait)) return undefined;
  } else if (!(wait > t.inputBoundNoGpuMinDataWait)) {
    return undefined;
  }
  const workers = trial.numWorkers;
  const on: LoaderWait = hostSaturated ? LoaderWait.cpu : loaderWaitsOn(trial, t);
  const own = ownCpu(trial);
  const waitCpu = trial.waitHostCpuPercent;
  const cores = trialCores(trial);
  const coresText = cores === null ? "the cores" : `the ${fmtCores(cores)} cores it can have`;
  const within = workersWithinCores(trial);
  const past = workersPastCores(trial, wait);
  const from = workers !== null ? ` from ${workers}` : "";
  const unreported =
    workers === null ? "; the trial did not report num_workers — report it with rung_trial.report(num_workers=…)" : "";
  // What was measured, for the advice: the host while the loader waited, and the trial itself.
  const measured = [
    waitCpu !== null ? `the host's CPU was ${pts(waitCpu)} busy while the loader waited` : null,
    own !== null ? `the trial itself used ${fmtCores(own.cores)} cores (${pts(own.percentOfShare)} of ${coresText})` : null,
  ]
    .filter((x) => x !== null)
    .join(" and ");
  const advice: string[] = [];
  let suggest: number;
  if (on === "io" || on === "contended") {
    suggest = past;
    advice.push(
      `raise DataLoader num_workers${from} to about ${past}, past the core count (${hostText(trial)}): ${measured}, so its workers wait on storage or the network rather than compute, and more of them keep more reads in flight${unreported}`,
    );
    if (on === "contended")
      advice.push(
        "other processes keep the CPU busy while this trial waits: stop them, or give the trial a box (or cores) of its own — it will not get CPU time they hold",
      );
    advice.push("prefetch_factor=4 or more, so each worker keeps more batches in flight");
    advice.push(
      "cache the dataset on local disk (or in memory) once, rather than reading it from network storage every epoch; read bigger chunks (sharded tar/record files) rather than many small files",
    );
  } else if (on === "cpu") {
    suggest = within;
    if (workers !== null && workers >= within)
      advice.push(
        `num_workers is already ${workers} and ${hostText(trial)}: ${measured}, so the loader is CPU-bound and more workers than cores will not help — make each item cheaper (below) or use a box with more cores per GPU`,
      );
    else
      advice.push(
        `raise DataLoader num_workers${from} to about ${within}, not past the cores (${hostText(trial)}): ${measured}, so the loader is CPU-bound${unreported}`,
      );
    advice.push("prefetch_factor=4 (default 2), so each worker keeps more batches ready");
  } else {
    suggest = workers !== null && workers >= within ? past : within;
    const which =
      "whether they wait on the CPU or on storage was not measured (an agent or rung_trial that predates it; update both)";
    if (workers !== null && workers >= within)
      advice.push(
        `num_workers is already ${workers} and ${hostText(trial)}: if its workers wait on storage or the network (the CPU idle meanwhile), raise it past the core count, to about ${past}; if they keep the CPU busy, more will not help — make each item cheaper (below). ${which}`,
      );
    else
      advice.push(
        `raise DataLoader num_workers${from} to about ${within} (${hostText(trial)}; workers that mostly wait on storage or the network can go well above the core count${unreported}) — ${which}`,
      );
    advice.push("prefetch_factor=4 (default 2), so each worker keeps more batches ready");
  }
  advice.push("pin_memory=True, and .to(device, non_blocking=True) on each batch");
  advice.push("persistent_workers=True, so workers are not restarted every epoch");
  if (on !== "io" && on !== "contended")
    advice.push(
      "move decoding and augmentation off the training loop: decode once into a tensor or numpy memmap, cache on local disk, or decode on the GPU (DALI, torchvision.io.decode_jpeg(device='cuda'))",
    );
  if (hostSaturated && own !== null)
    advice.push(
      `the trial's own CPU averaged ${pts(own.percentOfShare)} of ${coresText} meanwhile: the fix is cheaper items or more cores, not more workers`,
    );
  const gpuPart = judged ? `GPU ${pts(u.mean)} busy (p10 ${pts(u.p10)}, p90 ${pts(u.p90)})` : "no GPU samples";
  const waitsOn =
    on === "io"
      ? "; its loader waits on storage or the network (the CPU idle meanwhile)"
      : on === "contended"
        ? "; its loader waits while other processes hold the CPU"
        : on === "cpu"
          ? "; its loader is CPU-bound"
          : "";
  const waste = judged ? 1 - u.mean / 100 : wait;
  const speedup = wait < 1 ? 1 / (1 - wait) : Number.POSITIVE_INFINITY;
  return {
    kind: "input-bound",
    severity: severityOf(waste, t),
    trial: trial.trial,
    agent: trial.agents[0] ?? null,
    summary: `${trial.trial} is input-bound: ${gpuPart} while it waited for batches ${pct(wait)} of the time (${trial.dataWaitS.toFixed(1)} s waiting, ${trial.computeS.toFixed(1)} s computing)${workers !== null ? ` with num_workers=${workers}` : ""}${waitsOn}; removing the wait would make its epochs up to ${Number.isFinite(speedup) ? `${speedup.toFixed(1)}×` : "much"} faster`,
    short: `${judged ? `GPU ${pts(u.mean)}, ` : ""}data wait ${pct(wait)}${workers !== null ? `, num_workers=${workers}` : ""}${on !== "unknown" ? `, waits on ${on === "io" ? "I/O" : on === "cpu" ? "CPU" : "I/O (CPU held by others)"}` : ""}`,
    evidence: {
      meanUtilization: judged ? round(u.mean, 1) : null,
      p10Utilization: judged ? round(u.p10, 1) : null,
      p90Utilization: judged ? round(u.p90, 1) : null,
      dataWaitShare: round(wait),
      dataWaitS: round(trial.dataWaitS, 2),
      computeS: round(trial.computeS, 2),
      numWorkers: workers,
      suggestedWorkers: suggest,
      loaderWaitsOn: on,
      waitHostCpuPercent: waitCpu === null ? null : round(waitCpu, 1),
      trialCpuCores: own === null ? null : round(own.cores, 2),
      trialCpuPercent: own === null ? null : round(own.percentOfShare, 1),
      trialCores: cores === null ? null : round(cores, 2),
      hostCores: trial.host.cores,
      hostGpus: trial.host.gpus,
      samples: trial.samples,
    },
    advice,
    wastedGpuSeconds: trial.sampledGpuSeconds * waste,
  };
}

function underFilled(trial: TrialStats, t: DiagnosisThresholds): Finding | undefined {
  const u = trial.utilization;
  const mem = trial.memoryHighWaterShare;
  if (u === null || trial.samples < t.minSamples || mem === null) return undefined;
  const wait = trial.dataWaitShare;
  if (
    !(u.mean < t.underFilledMaxUtilization && (wait === null || wait <= t.underFilledMaxDataWait) && mem < t.underFilledMaxMemory)
  )
    return undefined;
  const bs = trial.batchSize;
  const perGpu = Math.max(1, Math.floor(t.underFilledMaxMemory / Math.max(mem, 0.01)));
  const advice = [
    `raise batch_size${bs !== null ? ` from ${bs} to ${bs * 2}–${bs * 4}` : " 2–4×"} and scale the learning rate with it (memory peaked at ${pct(mem)})`,
    `or run several trials per GPU: at this footprint about ${Math.max(2, perGpu)} fit`,
    "a small model spends its time launching kernels: torch.compile or CUDA graphs cut that overhead",
  ];
  return {
    kind: "gpu-under-filled",
    severity: severityOf(1 - u.mean / 100, t),
    trial: trial.trial,
    agent: trial.agents[0] ?? null,
    summary: `${trial.trial} leaves its GPU under-filled: ${pts(u.mean)} busy (p10 ${pts(u.p10)}, p90 ${pts(u.p90)}) without waiting for data (${wait === null ? "no data-wait reported" : `data wait ${pct(wait)}`}), memory high-water ${trial.memoryHighWaterMiB !== null ? gib(trial.memoryHighWaterMiB) : "?"} of ${trial.memoryTotalMiB !== null ? gib(trial.memoryTotalMiB) : "?"} (${pct(mem)})`,
    short: `GPU ${pts(u.mean)}, data wait ${wait === null ? "?" : pct(wait)}, memory ${pct(mem)}`,
    evidence: {
      meanUtilization: round(u.mean, 1),
      p10Utilization: round(u.p10, 1),
      p90Utilization: round(u.p90, 1),
      dataWaitShare: wait === null ? null : round(wait),
      memoryHighWaterShare: round(mem),
      memoryHighWaterMiB: trial.memoryHighWaterMiB,
      batchSize: bs,
      samples: trial.samples,
    },
    advice,
    wastedGpuSeconds: trial.sampledGpuSeconds * (1 - u.mean / 100),
  };
}

function imbalance(trial: TrialStats, t: DiagnosisThresholds): Finding | undefined {
  const gpus = trial.gpus.filter((g) => g.meanUtilization !== null && g.samples >= t.minSamples);
  if (gpus.length < 2) return undefined;
  let lo = gpus[0] as TrialGpuStats;
  let hi = lo;
  for (const g of gpus) {
    if ((g.meanUtilization as number) < (lo.meanUtilization as number)) lo = g;
    if ((g.meanUtilization as number) > (hi.meanUtilization as number)) hi = g;
  }
  const spread = (hi.meanUtilization as number) - (lo.meanUtilization as number);
  if (!(spread > t.imbalanceMinSpread)) return undefined;
  const behind = gpus.reduce((s, g) => s + ((hi.meanUtilization as number) - (g.meanUtilization as number)) / 100, 0);
  const wasteShare = behind / gpus.length;
  const list = gpus.map((g) => `gpu${g.gpu} ${pts(g.meanUtilization as number)}`).join(", ");
  return {
    kind: "multi-gpu-imbalance",
    severity: severityOf(wasteShare, t),
    trial: trial.trial,
    agent: hi.agent,
    summary: `${trial.trial}'s ${gpus.length} GPUs are unevenly loaded: ${list} — gpu${hi.gpu} and gpu${lo.gpu} differ by ${Math.round(spread)} points`,
    short: `${list}`,
    evidence: {
      gpus: gpus.length,
      spread: round(spread, 1),
      busiestGpu: hi.gpu,
      busiestUtilization: round(hi.meanUtilization as number, 1),
      idlestGpu: lo.gpu,
      idlestUtilization: round(lo.meanUtilization as number, 1),
    },
    advice: [
      "use DistributedDataParallel (one process per GPU) rather than DataParallel, which gathers outputs and computes the loss on GPU 0",
      "give every rank the same per-GPU batch size and an equal shard (DistributedSampler, drop_last=True)",
      "keep evaluation, logging and checkpointing off the training step of one rank, or spread them over all ranks",
    ],
    wastedGpuSeconds: trial.sampledGpuSeconds * wasteShare,
  };
}

function hostSaturated(trial: TrialStats, t: DiagnosisThresholds): Finding | undefined {
  const u = trial.utilization;
  const own = ownCpu(trial);
  if (u === null || own === null || trial.samples < t.minSamples) return undefined;
  // The trial's own CPU decides, never its neighbours' load. A trial that can have only part of the
  // host's cores (one GPU of several) fills "its" cores only if the host is full too.
  const hostCpu = trial.host.cpuMeanPercent;
  const fillsItsCores = own.percentOfShare >= t.hostCpuSaturatedPercent;
  const hostFull = own.share >= own.hostCores || (hostCpu !== null && hostCpu >= t.hostCpuSaturatedPercent);
  if (!(fillsItsCores && hostFull && u.mean < t.hostCpuIdleGpuMaxUtilization)) return undefined;
  const cores = trial.host.cores;
  const workers = trial.numWorkers;
  const advice: string[] = [];
  if (workers !== null && workers >= Math.ceil(own.share))
    advice.push(
      `num_workers=${workers} is at or above the ${fmtCores(own.share)} cores this trial can have: lower it to about ${Math.max(1, Math.floor(own.share) - 1)}`,
    );
  advice.push(
    "set OMP_NUM_THREADS=1 (or torch.set_num_threads(1) in worker_init_fn) so DataLoader workers do not oversubscribe the cores",
  );
  advice.push(
    "make each item cheaper: resize and decode once ahead of time, keep uint8 tensors and normalise on the GPU, move augmentation to the GPU",
  );
  advice.push(
    `or rent a box with more CPU cores per GPU${cores !== null ? ` (this one has ${cores}${trial.host.gpus ? ` for ${trial.host.gpus} GPUs` : ""})` : ""}`,
  );
  const shareText = own.share < own.hostCores ? ` (its GPUs' share of the host's ${own.hostCores})` : "";
  return {
    kind: "host-cpu-saturated",
    severity: severityOf(1 - u.mean / 100, t),
    trial: trial.trial,
    agent: trial.agents[0] ?? null,
    summary: `${trial.trial}'s own processes kept ${fmtCores(own.cores)} of its ${fmtCores(own.share)} CPU cores busy${shareText} (${pts(own.percentOfShare)}) while its GPU was only ${pts(u.mean)} busy${workers !== null ? ` (num_workers=${workers})` : ""}: the CPU, not the GPU, sets the pace`,
    short: `trial CPU ${pts(own.percentOfShare)} of ${fmtCores(own.share)} cores, GPU ${pts(u.mean)}`,
    evidence: {
      trialCpuCores: round(own.cores, 2),
      trialCpuPercent: round(own.percentOfShare, 1),
      trialCores: round(own.share, 2),
      trialCpuSamples: trial.trialCpu?.samples ?? 0,
      hostCpuMeanPercent: hostCpu === null ? null : round(hostCpu, 1),
      hostCores: cores,
      hostSamples: trial.host.samples,
      meanUtilization: round(u.mean, 1),
      numWorkers: workers,
    },
    advice,
    wastedGpuSeconds: trial.sampledGpuSeconds * (1 - u.mean / 100),
  };
}

function nearOom(trial: TrialStats, t: DiagnosisThresholds): Finding | undefined {
  const mem = trial.memoryHighWaterShare;
  if (mem === null || !(mem > t.nearOomMemory)) return undefined;
  const bs = trial.batchSize;
  return {
    kind: "near-oom",
    severity: mem >= t.nearOomCriticalMemory || trial.phase === "failed" ? "critical" : "warning",
    trial: trial.trial,
    agent: trial.agents[0] ?? null,
    summary: `${trial.trial} came close to running out of GPU memory: it peaked at ${trial.memoryHighWaterMiB !== null ? gib(trial.memoryHighWaterMiB) : "?"} of ${trial.memoryTotalMiB !== null ? gib(trial.memoryTotalMiB) : "?"} (${pct(mem)})${trial.phase === "failed" ? ", and it failed" : ""}`,
    short: `memory ${pct(mem)}`,
    evidence: {
      memoryHighWaterShare: round(mem, 4),
      memoryHighWaterMiB: trial.memoryHighWaterMiB,
      memoryTotalMiB: trial.memoryTotalMiB,
      batchSize: bs,
      phase: trial.phase,
    },
    advice: [
      `lower batch_size${bs !== null ? ` (now ${bs})` : ""} and keep the effective batch with gradient accumulation`,
      "mixed precision (torch.autocast with bf16 or fp16) roughly halves activation memory",
      "activation checkpointing trades compute for memory on deep models",
      "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True reduces fragmentation near the limit",
    ],
    wastedGpuSeconds: 0,
  };
}

function idle(a: AgentIdleStats, t: DiagnosisThresholds): Finding | undefined {
  if (a.observedGpuSeconds <= 0) return undefined;
  if (!(a.idleShare > t.idleMinShare && a.idleGpuSeconds >= t.idleMinGpuSeconds)) return undefined;
  const idleH = a.idleGpuSeconds / 3600;
  const cost = a.pricePerGpuHour !== null ? idleH * a.pricePerGpuHour : null;
  const gaps =
    a.gaps.count > 0
      ? `; ${a.gaps.count} gap(s) between trials, mean ${a.gaps.meanS.toFixed(0)} s, longest ${a.gaps.maxS.toFixed(0)} s`
      : "";
  const advice = ["raise max_concurrent (or leave it unset) so that every GPU of the mesh gets a trial"];
  if (a.gaps.count > 0)
    advice.push(
      "shorten the gap between trials: bake dependencies and datasets into the box's image or local disk, so a trial starts computing within seconds",
    );
  advice.push(
    "when the study's tail leaves GPUs idle, let agents exit after a while without work (agent option idleExit with onIdle, e.g. a poweroff) so rented boxes stop billing",
  );
  advice.push("or run a second study on the same mesh: its trials fill the free GPUs");
  return {
    kind: "idle-gpus",
    severity: severityOf(a.idleShare, t),
    trial: null,
    agent: a.agent,
    summary: `agent ${a.agent}: ${pct(a.idleShare)} of its GPU time had no trial (${(a.idleGpuSeconds / 3600).toFixed(2)} of ${(a.observedGpuSeconds / 3600).toFixed(2)} GPU-hours on ${a.gpus} GPU(s)${cost !== null ? `, costing ${cost.toFixed(2)} at ${a.pricePerGpuHour}/GPU-hour` : ""})${gaps}`,
    short: `${pct(a.idleShare)} idle, ${(a.idleGpuSeconds / 3600).toFixed(2)} GPU-h${a.gaps.count > 0 ? `, ${a.gaps.count} gaps` : ""}`,
    evidence: {
      idleShare: round(a.idleShare),
      idleGpuSeconds: round(a.idleGpuSeconds, 1),
      observedGpuSeconds: round(a.observedGpuSeconds, 1),
      gpus: a.gpus,
      gaps: a.gaps.count,
      meanGapS: round(a.gaps.meanS, 1),
      maxGapS: round(a.gaps.maxS, 1),
      idleCost: cost === null ? null : round(cost, 2),
    },
    advice,
    wastedGpuSeconds: a.idleGpuSeconds,
  };
}

const SEVERITY_RANK: Record<Severity, number> = { critical: 0, warning: 1 };
const KIND_RANK: Record<FindingKind, number> = {
  "forged-events": -1,
  "near-oom": 0,
  "input-bound": 1,
  "host-cpu-saturated": 2,
  "gpu-under-filled": 3,
  "multi-gpu-imbalance": 4,
  "idle-gpus": 5,
  "trials-failed": 6,
};

export function compareFindings(a: Finding, b: Finding): number {
  return (
    SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity] ||
    b.wastedGpuSeconds - a.wastedGpuSeconds ||
    KIND_RANK[a.kind] - KIND_RANK[b.kind] ||
    (a.trial ?? a.agent ?? "").localeCompare(b.trial ?? b.agent ?? "")
  );
}

/** Every finding for the input, worst first. Pure: the same input gives the same findings. */
export function diagnose(input: DiagnosisInput, options: DiagnosisOptions | DiagnosisThresholds = {}): Finding[] {
  const t = compileDiagnosisOptions(options);
  const out: Finding[] = [];
  for (const trial of input.trials) {
    const host = hostSaturated(trial, t);
    for (const f of [
      inputBound(trial, t, host !== undefined),
      underFilled(trial, t),
      imbalance(trial, t),
      host,
      nearOom(trial, t),
    ])
      if (f) out.push(f);
  }
  for (const a of input.agents) {
    const f = idle(a, t);
    if (f) out.push(f);
  }
  return out.sort(compareFindings);
}
