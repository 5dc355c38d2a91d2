import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  compileSchedulerOptions,
  createRng,
  createScheduler,
  type ModelSamplerOptions,
  type Observation,
  PromotionAsha,
  rungMilestones,
  type Scheduler,
  type SchedulerDecision,
  scoreCandidates,
} from "@rung/coordinator";
import { type BenchContext, type BenchOutcome, fmt, median, PYTHON, REPO, round, table, tempDir } from "./common.js";
import { loadHyperparameters, nearestUnused, type TabularSpace, tabularSpace } from "./tabular-search.js";
import { type CurveFile, loadCurveFile, taskSetFiles } from "./taskset.js";

/**
 * 5. Search efficiency on real learning curves.
 *
 * Each TaskSet file is replayed with W workers in simulated time: one curve point = one unit of GPU
 * time, every worker advances its trial by one point per unit of wall time, and a free worker takes
 * the next configuration at once (asynchronous, like the live dispatcher). A seed fixes the order in
 * which the 1,000 configurations are drawn (the same order for every method) and the scheduler's own
 * seed. A run ends when the best configuration trained to the end (point 50) is within 1 % of the
 * best final validation loss in the file, or when every configuration has been drawn once and
 * finished (the budget: one pass over the file). Expected running time (ERT) = time spent over all
 * seeds, hits or not, divided by the seeds that hit: a method that throws the best configuration away
 * pays for the whole pass and cannot look fast.
 *
 * Rung's side drives the real schedulers from @rung/coordinator (`createScheduler`) exactly as the
 * coordinator's StudyDecider does: onTrialAdd, onResult per point, onComplete after a STOP (max_t
 * included). Optuna's side (bench/optuna-search.py) runs the same loop with ask/tell, trial.report and
 * should_prune, in-memory storage.
 */

export const MAX_T = 50;
const TARGETS = [0.01, 0.05] as const;

export interface RunResult {
  /** Per target (1 %, 5 %): simulated GPU units and wall units when first hit, or null. */
  hits: ({ gpu: number; wall: number } | null)[];
  /** Units spent until the run ended (the hit of the strictest target, or the end of the pass). */
  gpu: number;
  wall: number;
  trials: number;
  completed: number;
  /** GPU units spent on configurations whose final loss is NaN (diverged). */
  gpuOnNaN: number;
}

export interface SimMethod {
  key: string;
  label: string;
  make(seed: number): Scheduler;
  /** Model-based sampling (search.algorithm tpe / bohb) over the file's own hyperparameters; absent: the draw order. */
  sampler?: { algorithm: "tpe" | "bohb"; budgets: readonly number[]; nearest?: boolean };
  /** The spec's `diverged`: a NaN or ±∞ loss stops the trial at once, whatever the scheduler said. */
  stopDiverged?: boolean;
  /** What the trial reports for a measured loss (default: the loss, NaN included). */
  report?: (loss: number) => number;
}

const asha = (rf: number, grace: number) => (seed: number) =>
  createScheduler(
    compileSchedulerOptions({ scheduler: "asha", mode: "min", gracePeriod: grace, reductionFactor: rf, maxT: MAX_T }),
    seed,
  );

export const RUNG_METHODS: readonly SimMethod[] = [
  {
    key: "random",
    label: "random search to the end",
    make: () => createScheduler(compileSchedulerOptions({ scheduler: "fifo", mode: "min", maxT: MAX_T })),
  },
  {
    key: "rung-asha",
    label: "Rung ASHA (rf 3, grace 1)",
    make: (seed) =>
      createScheduler(
        compileSchedulerOptions({ scheduler: "asha", mode: "min", gracePeriod: 1, reductionFactor: 3, maxT: MAX_T }),
        seed,
      ),
  },
  {
    key: "rung-asha-inf",
    label: "Rung ASHA, a diverged (NaN) loss reported as +∞",
    make: asha(3, 1),
    report: (loss) => (Number.isNaN(loss) ? Number.POSITIVE_INFINITY : loss),
  },
  {
    key: "rung-asha-diverged",
    label: "Rung ASHA with the spec's `diverged` stop",
    make: asha(3, 1),
    stopDiverged: true,
  },
  {
    key: "rung-promotion",
    label: "Rung ASHA, promotion-based (rf 3, grace 1)",
    make: () =>
      createScheduler(
        compileSchedulerOptions({ scheduler: "promotion", mode: "min", gracePeriod: 1, reductionFactor: 3, maxT: MAX_T }),
      ),
  },
  {
    key: "rung-hyperband",
    label: "Rung Hyperband (rf 3, grace 1, 4 brackets)",
    make: (seed) =>
      createScheduler(
        compileSchedulerOptions({ scheduler: "hyperband", mode: "min", gracePeriod: 1, reductionFactor: 3, maxT: MAX_T }),
        seed,
      ),
  },
  {
    key: "top-k-1",
    label: "keep the top 5 % after one epoch (Egele et al.'s baseline)",
    make: () => new TopKAfterFirst(0.05),
    stopDiverged: true,
  },
  {
    key: "rung-curve",
    label: "Rung learning-curve stopping (scheduler curve, defaults)",
    make: (seed) => createScheduler(compileSchedulerOptions({ scheduler: "curve", mode: "min", maxT: MAX_T }), seed),
    stopDiverged: true,
  },
  {
    key: "rung-asha4",
    label: "Rung ASHA rf 4 (Ray's default ladder) with `diverged`",
    make: asha(4, 1),
    stopDiverged: true,
  },
  {
    key: "tpe-asha4",
    label: "Rung TPE + ASHA rf 4, `diverged`",
    make: asha(4, 1),
    stopDiverged: true,
    sampler: { algorithm: "tpe", budgets: ladder(4) },
  },
  {
    key: "tpe-curve",
    label: "Rung TPE + learning-curve stopping (rf 4 decision points), `diverged`",
    make: (seed) =>
      createScheduler(compileSchedulerOptions({ scheduler: "curve", mode: "min", reductionFactor: 4, maxT: MAX_T }), seed),
    stopDiverged: true,
    sampler: { algorithm: "tpe", budgets: ladder(4) },
  },
  {
    key: "bohb-promotion4",
    label: "Rung BOHB + promotion ASHA rf 4, `diverged`",
    make: promotion(4),
    stopDiverged: true,
    sampler: { algorithm: "bohb", budgets: ladder(4) },
  },
  {
    key: "rung-promotion4",
    label: "Rung promotion ASHA rf 4, `diverged` (random search)",
    make: promotion(4),
    stopDiverged: true,
  },
  {
    key: "nearest-promotion4",
    label:
      "no model: uniform points of the space mapped to the nearest unused configuration (Optuna TPE's access path) + promotion rf 4, `diverged`",
    make: promotion(4),
    stopDiverged: true,
    sampler: { algorithm: "tpe", budgets: ladder(4), nearest: true },
  },
  {
    key: "tpe-promotion4",
    label: "**Rung recommended**: TPE + promotion ASHA rf 4, `diverged`",
    make: promotion(4),
    stopDiverged: true,
    sampler: { algorithm: "tpe", budgets: ladder(4) },
  },
];

/** The rungs of an rf ladder from grace 1 below MAX_T, then MAX_T: BOHB's budgets. */
function ladder(rf: number): number[] {
  return [...rungMilestones(1, rf, MAX_T, 0).filter((m) => m < MAX_T), MAX_T];
}

function promotion(rf: number) {
  return () =>
    createScheduler(
      compileSchedulerOptions({ scheduler: "promotion", mode: "min", gracePeriod: 1, reductionFactor: rf, maxT: MAX_T }),
    );
}

/**
 * The "one epoch, then the top k" baseline of Egele et al. (2023), asynchronous: a trial goes on past its
 * first result only when that result is among the best `share` of all first results so far (itself
 * included), and then trains to max_t. Not a Rung scheduler: a baseline to beat.
 */
export class TopKAfterFirst implements Scheduler {
  readonly name = "top-k-1";
  readonly #first: number[] = [];
  constructor(readonly share: number) {}
  onTrialAdd(): { bracket: number | null } {
    return { bracket: null };
  }
  onResult(_trial: string, t: number, value: number): SchedulerDecision {
    if (t >= MAX_T) return { decision: "STOP", rung: null, cutoff: null, by: this.name, reason: "max_t" };
    if (t !== 1) return { decision: "CONTINUE", rung: null, cutoff: null, by: this.name, reason: "kept" };
    const v = Number.isNaN(value) ? Number.POSITIVE_INFINITY : value;
    this.#first.push(v);
    const better = this.#first.filter((x) => x < v).length;
    const keep = better < Math.ceil(this.share * this.#first.length);
    return { decision: keep ? "CONTINUE" : "STOP", rung: 1, cutoff: null, by: this.name, reason: keep ? "top k" : "not top k" };
  }
  onComplete(): void {}
}

/** Model-based sampling in the simulation: the file's space and the sampler's options. */
export interface ModelPicker {
  readonly space: TabularSpace;
  readonly options: ModelSamplerOptions;
  /** No model: a uniform point of the space, mapped to the nearest unused configuration. */
  readonly nearest?: boolean;
}

/** Unused configurations the model scores per draw (a uniform sample of what is left). */
const POOL_CANDIDATES = 128;

/** The order in which a seed draws the configurations: a seeded Fisher–Yates shuffle. */
export function drawOrder(n: number, seed: number): number[] {
  const rng = createRng(seed, "taskset-order");
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
}

/** Rung ASHA with other ladders, for the sensitivity table. */
const SENSITIVITY: readonly { rf: number; grace: number }[] = [
  { rf: 2, grace: 1 },
  { rf: 3, grace: 1 },
  { rf: 4, grace: 1 },
  { rf: 3, grace: 3 },
  { rf: 2, grace: 5 },
];

/**
 * One seed's run of a file. With `stopDiverged`, a NaN or ±∞ loss stops the trial as the spec's
 * `diverged` does (the scheduler sees the result first). A PromotionAsha scheduler (promotion-based
 * ASHA) pauses a trial at each rung, keeping its place on its curve as a checkpoint would, and a free
 * worker first asks it for a promotion (Li et al.'s get_job), resuming that configuration where it
 * paused, and takes a new configuration only when there is none. Pausing and resuming cost nothing here;
 * in the mesh they cost a checkpoint's upload and restore.
 */
export function simulate(
  file: CurveFile,
  order: readonly number[],
  workers: number,
  scheduler: Scheduler,
  report: (loss: number) => number = (x) => x,
  stopDiverged = false,
  picker: ModelPicker | null = null,
): RunResult {
  const promoter = scheduler instanceof PromotionAsha ? scheduler : null;
  const targets = TARGETS.map((q) => file.bestFinal * (1 + q));
  const hits: ({ gpu: number; wall: number } | null)[] = TARGETS.map(() => null);
  const slots: ({ cfg: number; t: number; id: string } | null)[] = Array.from({ length: workers }, () => null);
  const pausedAt = new Map<string, { cfg: number; t: number }>();
  // Model-based sampling: the first startupTrials configurations come from the draw order (the random
  // draws); every later one is the unused configuration the model scores best (log l(x) − log g(x)) among
  // the next POOL_CANDIDATES unused ones of the draw order — a uniform sample of what is left, so the model
  // sees the same table random search does. Until the model has enough results, the draw order goes on.
  // `nearest` instead draws a uniform point of the space and takes the nearest unused configuration (the
  // access path Optuna's side uses for its TPE), with no model: what that mapping alone is worth.
  const used = new Uint8Array(order.length);
  const observed = new Map<string, Observation & { results: { t: number; value: number }[]; state: Observation["state"] }>();
  let drawn = 0;
  const inOrder = (): number | null => {
    while (next < order.length && used[order[next] as number]) next += 1;
    return next < order.length ? (order[next] as number) : null;
  };
  const nextConfig = (): number | null => {
    if (picker === null || drawn < (picker.options.startupTrials ?? 10)) return inOrder();
    if (picker.nearest) {
      const u = createRng(picker.options.seed, `nearest:${drawn}`);
      const point: Record<string, number> = {};
      for (const k of picker.space.keys) {
        const p = picker.space.space[k] as { kind: string; lower: number; upper: number };
        const r = u.next();
        point[k] =
          p.kind === "loguniform"
            ? Math.exp(Math.log(p.lower) + r * (Math.log(p.upper) - Math.log(p.lower)))
            : p.lower + r * (p.upper - p.lower);
      }
      return nearestUnused(picker.space, point, used);
    }
    const pool: number[] = [];
    for (let i = next; i < order.length && pool.length < POOL_CANDIDATES; i++)
      if (!used[order[i] as number]) pool.push(order[i] as number);
    if (pool.length === 0) return null;
    const scores = scoreCandidates(
      picker.space.space,
      [...observed.values()],
      picker.options,
      pool.map((c) => picker.space.params[c] as Record<string, number>),
    );
    if (scores === null) return inOrder();
    let best = 0;
    for (let i = 1; i < pool.length; i++) if ((scores[i] as number) > (scores[best] as number)) best = i;
    return pool[best] as number;
  };
  let next = 0;
  let clock = 0;
  let gpu = 0;
  let gpuOnNaN = 0;
  let completed = 0;
  const take = (w: number) => {
    const p = promoter?.nextPromotion((trial) => pausedAt.has(trial));
    if (promoter && p) {
      const where = pausedAt.get(p.trial) as { cfg: number; t: number };
      pausedAt.delete(p.trial);
      promoter.onPromote(p.trial, p.rung);
      const resumed = observed.get(p.trial);
      if (resumed) resumed.state = "running";
      slots[w] = { cfg: where.cfg, t: where.t, id: p.trial };
      return;
    }
    const cfg = drawn >= order.length ? null : nextConfig();
    if (cfg === null) {
      slots[w] = null;
      return;
    }
    used[cfg] = 1;
    drawn += 1;
    const id = `c${cfg}`;
    scheduler.onTrialAdd(id);
    if (picker !== null)
      observed.set(id, { params: picker.space.params[cfg] as Record<string, number>, results: [], state: "running" });
    slots[w] = { cfg, t: 0, id };
  };
  for (let w = 0; w < workers; w++) take(w);
  const freed: number[] = [];
  const hitNow: boolean[] = TARGETS.map(() => false);
  while (slots.some((s) => s !== null)) {
    clock += 1;
    freed.length = 0;
    for (let w = 0; w < workers; w++) {
      const s = slots[w];
      if (!s) continue;
      s.t += 1;
      gpu += 1;
      const curve = file.valid[s.cfg] as Float64Array;
      if (Number.isNaN(curve[MAX_T] as number)) gpuOnNaN += 1;
      const loss = curve[s.t] as number;
      const value = report(loss);
      const d = scheduler.onResult(s.id, s.t, value);
      const seen = observed.get(s.id);
      seen?.results.push({ t: s.t, value });
      if (s.t >= MAX_T || d.decision === "STOP" || (stopDiverged && !Number.isFinite(loss))) {
        scheduler.onComplete(s.id, s.t, value);
        if (seen) seen.state = "done";
        if (s.t >= MAX_T) {
          completed += 1;
          targets.forEach((target, i) => {
            if (hits[i] === null && loss <= target) hitNow[i] = true;
          });
        }
        freed.push(w);
      } else if (d.decision === "PAUSE") {
        // A paused trial is ranked by where it got (study/sampling.ts does the same in the coordinator).
        if (seen) seen.state = "done";
        pausedAt.set(s.id, { cfg: s.cfg, t: s.t });
        freed.push(w);
      }
    }
    // A hit counts the GPU time of the whole step (every busy worker spent its unit).
    hitNow.forEach((h, i) => {
      if (h && hits[i] === null) hits[i] = { gpu, wall: clock };
      hitNow[i] = false;
    });
    if (hits.every((h) => h !== null)) break;
    for (const w of freed) take(w);
    // A promotion may have become due while a worker sat idle (the pass of new configurations is over).
    if (promoter) for (let w = 0; w < workers; w++) if (slots[w] === null) take(w);
  }
  return { hits, gpu, wall: clock, trials: drawn, completed, gpuOnNaN };
}

export interface MethodSummary {
  method: string;
  label: string;
  /** Per target: hit rate and ERT in GPU units and wall units. */
  targets: { target: number; hitRate: number; ertGpu: number; ertWall: number }[];
  medianTrials: number;
  gpuPerTrial: number;
  gpuOnNaNShare: number;
}

/** ERT = all time spent (a seed that missed spends its whole pass) / seeds that hit. */
export function summarize(method: string, label: string, runs: readonly RunResult[]): MethodSummary {
  return {
    method,
    label,
    targets: TARGETS.map((target, i) => {
      const hitsI = runs.filter((r) => r.hits[i] !== null);
      // For the looser target, a seed that hit spent until that hit; one that missed, its whole run.
      const gpu = runs.reduce((a, r) => a + (r.hits[i]?.gpu ?? r.gpu), 0);
      const wall = runs.reduce((a, r) => a + (r.hits[i]?.wall ?? r.wall), 0);
      return {
        target,
        hitRate: hitsI.length / runs.length,
        ertGpu: hitsI.length ? gpu / hitsI.length : Number.POSITIVE_INFINITY,
        ertWall: hitsI.length ? wall / hitsI.length : Number.POSITIVE_INFINITY,
      };
    }),
    medianTrials: median(runs.map((r) => r.trials)),
    gpuPerTrial:
      runs.reduce((a, r) => a + r.gpu, 0) /
      Math.max(
        1,
        runs.reduce((a, r) => a + r.trials, 0),
      ),
    gpuOnNaNShare:
      runs.reduce((a, r) => a + r.gpuOnNaN, 0) /
      Math.max(
        1,
        runs.reduce((a, r) => a + r.gpu, 0),
      ),
  };
}

/** Spearman rank correlation between the loss at point t and the final loss (NaN pairs left out). */
function spearman(file: CurveFile, t: number): number {
  const pairs = file.valid
    .map((v) => [v[t] as number, v[MAX_T] as number] as const)
    .filter(([a, b]) => Number.isFinite(a) && Number.isFinite(b));
  const rank = (xs: number[]) => {
    const idx = xs.map((x, i) => [x, i] as const).sort((a, b) => a[0] - b[0]);
    const r = new Array<number>(xs.length);
    idx.forEach(([, i], k) => {
      r[i] = k;
    });
    return r;
  };
  const ra = rank(pairs.map((p) => p[0]));
  const rb = rank(pairs.map((p) => p[1]));
  const n = pairs.length;
  const mean = (n - 1) / 2;
  let cov = 0;
  let va = 0;
  for (let i = 0; i < n; i++) {
    const a = (ra[i] as number) - mean;
    const b = (rb[i] as number) - mean;
    cov += a * b;
    va += a * a;
  }
  return cov / va;
}

/** Where the configurations within 1 % of the best final loss rank at the early rungs (0 = best). */
function nearBestRanks(file: CurveFile, t: number): number[] {
  const target = file.bestFinal * 1.01;
  const col = file.valid.map((v, i) => [Number.isNaN(v[t] as number) ? Number.POSITIVE_INFINITY : (v[t] as number), i] as const);
  col.sort((a, b) => a[0] - b[0]);
  const out: number[] = [];
  col.forEach(([, i], rank) => {
    if ((file.valid[i]?.[MAX_T] as number) <= target) out.push(rank);
  });
  return out;
}

interface OptunaRun extends RunResult {
  file: string;
  pruner: string;
  seed: number;
}

async function runOptuna(
  files: readonly string[],
  orders: readonly number[][],
  seeds: readonly number[],
  workers: number,
  ctx: BenchContext,
  methods: readonly string[] = ["optuna-sha", "optuna-hyperband"],
): Promise<{ runs: OptunaRun[]; version: string; seconds: number }> {
  const dir = tempDir("optuna-search");
  const input = join(dir, "input.json");
  writeFileSync(input, JSON.stringify({ files, seeds, orders, workers, maxT: MAX_T, targets: TARGETS, methods }));
  const started = performance.now();
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(PYTHON, [join(REPO, "bench", "optuna-search.py"), input, "--jobs", "2"], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, PYTHONHASHSEED: "0" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d;
      for (const line of d.toString().split("\n")) if (line.startsWith("progress")) ctx.log(`  optuna ${line}`);
    });
    child.once("error", (err) => reject(new Error(`cannot run ${PYTHON} for the Optuna side: ${err.message}`)));
    child.once("exit", (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`bench/optuna-search.py exited with ${code}: ${stderr.trim().split("\n").slice(-5).join(" / ")}`));
    });
  });
  const parsed = JSON.parse(out) as { version: string; runs: OptunaRun[] };
  return { ...parsed, seconds: (performance.now() - started) / 1000 };
}

function ratio(a: number, b: number): string {
  if (a === Number.POSITIVE_INFINITY && Number.isFinite(b)) return "∞ (the other never hit)";
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "–";
  return `${(a / b).toFixed(1)}×`;
}

export async function searchEfficiency(ctx: BenchContext): Promise<BenchOutcome> {
  const workers = Number(process.env.BENCH_WORKERS ?? 8);
  const nSeeds = Number(process.env.BENCH_SEEDS ?? 20);
  const optunaSeeds = Number(process.env.BENCH_OPTUNA_SEEDS ?? (ctx.quick ? 5 : nSeeds));
  const seeds = Array.from({ length: nSeeds }, (_, i) => i + 1);
  const paths = taskSetFiles();
  const files = paths.map(loadCurveFile);
  const orders = seeds.map((s) => drawOrder(files[0]?.valid.length ?? 1000, s));
  const spaces: Record<string, TabularSpace> = Object.fromEntries(
    paths.map((p, i) => [files[i]?.name ?? p, tabularSpace(loadHyperparameters(p))]),
  );

  ctx.log(`  replaying ${files.length} files × ${seeds.length} seeds × ${RUNG_METHODS.length} Rung methods, W=${workers}`);
  const t0 = performance.now();
  const rung: Record<string, Record<string, RunResult[]>> = {};
  for (const f of files) {
    rung[f.name] = {};
    for (const m of RUNG_METHODS) {
      const t1 = performance.now();
      (rung[f.name] as Record<string, RunResult[]>)[m.key] = seeds.map((s, i) =>
        simulate(
          f,
          orders[i] as number[],
          workers,
          m.make(s),
          m.report,
          m.stopDiverged,
          m.sampler
            ? {
                space: spaces[f.name] as TabularSpace,
                options: { algorithm: m.sampler.algorithm, mode: "min", seed: s, budgets: m.sampler.budgets },
                nearest: m.sampler.nearest ?? false,
              }
            : null,
        ),
      );
      if (m.sampler) ctx.log(`    ${f.label} ${m.key}: ${((performance.now() - t1) / 1000).toFixed(1)} s`);
    }
  }
  const sensitivity = SENSITIVITY.map(({ rf, grace }) => ({
    rf,
    grace,
    ladder: createScheduler(
      compileSchedulerOptions({ scheduler: "asha", mode: "min", gracePeriod: grace, reductionFactor: rf, maxT: MAX_T }),
    ),
    files: Object.fromEntries(
      files.map((f) => [
        f.name,
        summarize(
          "asha",
          "",
          seeds.map((s, i) => simulate(f, orders[i] as number[], workers, asha(rf, grace)(s))),
        ),
      ]),
    ),
  }));
  const rungSeconds = (performance.now() - t0) / 1000;

  ctx.log(`  Optuna: ${files.length} files × ${optunaSeeds} seeds × 2 pruners (python, 2 processes)`);
  const optunaPruners = await runOptuna(paths, orders.slice(0, optunaSeeds), seeds.slice(0, optunaSeeds), workers, ctx);
  // Optuna's TPE costs seconds per run (its sampler is slow with hundreds of trials): fewer seeds.
  const tpeSeeds = Number(process.env.BENCH_OPTUNA_TPE_SEEDS ?? (ctx.quick ? 3 : 10));
  ctx.log(`  Optuna TPE: ${files.length} files × ${tpeSeeds} seeds × 2 pruners (python, 2 processes)`);
  const optunaTpe = await runOptuna(paths, orders.slice(0, tpeSeeds), seeds.slice(0, tpeSeeds), workers, ctx, [
    "optuna-tpe-sha",
    "optuna-tpe-hyperband",
  ]);
  const optuna = {
    version: optunaPruners.version,
    runs: [...optunaPruners.runs, ...optunaTpe.runs],
    seconds: optunaPruners.seconds + optunaTpe.seconds,
  };

  const summaries: Record<string, MethodSummary[]> = {};
  const why: Record<string, unknown> = {};
  const sections: string[] = [];
  const headline: string[][] = [];
  for (const f of files) {
    const byMethod = rung[f.name] as Record<string, RunResult[]>;
    const s: MethodSummary[] = RUNG_METHODS.map((m) => summarize(m.key, m.label, byMethod[m.key] as RunResult[]));
    for (const [pruner, label] of [
      ["optuna-sha", "Optuna SuccessiveHalvingPruner (rf 3, min 1)"],
      ["optuna-hyperband", "Optuna HyperbandPruner (rf 3, min 1, max 50)"],
      ["optuna-tpe-sha", `Optuna TPE (multivariate, constant liar) + SuccessiveHalvingPruner (${tpeSeeds} seeds)`],
      ["optuna-tpe-hyperband", `Optuna TPE (multivariate, constant liar) + HyperbandPruner (${tpeSeeds} seeds)`],
    ] as const) {
      const runs = optuna.runs.filter((r) => r.file === f.name && r.pruner === pruner);
      s.push(summarize(pruner, label, runs));
    }
    summaries[f.name] = s;
    const k1 = f.valid.filter((v) => (v[MAX_T] as number) <= f.bestFinal * 1.01).length;
    const k5 = f.valid.filter((v) => (v[MAX_T] as number) <= f.bestFinal * 1.05).length;
    const nan = f.valid.filter((v) => Number.isNaN(v[MAX_T] as number)).length;
    why[f.name] = {
      bestFinal: f.bestFinal,
      within1pct: k1,
      within5pct: k5,
      nanConfigs: nan,
      spearmanToFinal: Object.fromEntries([1, 3, 9, 27].map((t) => [t, round(spearman(f, t), 3)])),
      nearBestRankAt: Object.fromEntries([1, 3, 9, 27].map((t) => [t, nearBestRanks(f, t)])),
    };
    const rnd = s.find((x) => x.method === "random") as MethodSummary;
    const rows = s.map((x) => {
      const [a, b] = x.targets as [MethodSummary["targets"][0], MethodSummary["targets"][0]];
      const [ra, rb] = rnd.targets as [MethodSummary["targets"][0], MethodSummary["targets"][0]];
      return [
        x.label,
        `${Math.round(a.hitRate * 100)} %`,
        fmt(a.ertGpu, 0),
        fmt(a.ertWall, 0),
        ratio(ra.ertGpu, a.ertGpu),
        ratio(ra.ertWall, a.ertWall),
        `${Math.round(b.hitRate * 100)} %`,
        fmt(b.ertGpu, 0),
        ratio(rb.ertGpu, b.ertGpu),
        fmt(x.gpuPerTrial, 1),
        `${Math.round(100 * x.gpuOnNaNShare)} %`,
      ];
    });
    sections.push(
      [
        `**${f.label}** (\`${f.name}\`): best final loss ${f.bestFinal.toFixed(4)}; ${k1} configuration(s) within 1 %, ${k5} within 5 %; ${nan} diverged (NaN) configurations.`,
        "",
        table(
          [
            "method",
            "hit 1 %",
            "ERT GPU (1 %)",
            "ERT wall (1 %)",
            "GPU speed-up vs random",
            "wall speed-up vs random",
            "hit 5 %",
            "ERT GPU (5 %)",
            "GPU speed-up (5 %)",
            "GPU units / config",
            "GPU on diverged configs",
          ],
          rows,
        ),
      ].join("\n"),
    );
    const get = (k: string) => s.find((x) => x.method === k)?.targets[0] as MethodSummary["targets"][0];
    headline.push([
      f.label,
      ratio(get("random").ertGpu, get("tpe-promotion4").ertGpu),
      ratio(get("random").ertWall, get("tpe-promotion4").ertWall),
      `${Math.round(get("tpe-promotion4").hitRate * 100)} %`,
      ratio(get("random").ertGpu, get("optuna-tpe-sha").ertGpu),
      `${Math.round(get("optuna-tpe-sha").hitRate * 100)} %`,
      ratio(get("optuna-tpe-sha").ertGpu, get("tpe-promotion4").ertGpu),
      ratio(get("random").ertGpu, get("rung-asha").ertGpu),
      ratio(get("random").ertGpu, get("rung-hyperband").ertGpu),
      `${Math.round(get("rung-asha").hitRate * 100)} / ${Math.round(get("optuna-sha").hitRate * 100)} %`,
    ]);
  }
  const markdown = [
    `### 5. Search efficiency on the TaskSet curves (W = ${workers} workers, ${nSeeds} seeds for random/Rung, ${optunaSeeds} for Optuna; ERT in units of one curve point)`,
    "",
    "Headline (1 % target): speed-up in expected running time. Rung recommended = `search.algorithm: tpe`, `scheduler: {type: promotion, reduction_factor: 4}`, `diverged: {}`.",
    "",
    table(
      [
        "file",
        "Rung recommended vs random (GPU)",
        "(wall)",
        "hit rate",
        "Optuna TPE + SHA vs random (GPU)",
        "hit rate",
        "Rung recommended vs Optuna TPE + SHA (GPU)",
        "Rung ASHA (Ray's rule) vs random (GPU)",
        "Rung Hyperband vs random (GPU)",
        "hit rate Rung ASHA / Optuna SHA",
      ],
      headline,
    ),
    "",
    "Per method, its worst file (1 % target): the smallest GPU and wall speed-up over random search, and the lowest hit rate.",
    "",
    table(
      ["method", "min GPU speed-up", "min wall speed-up", "min hit rate"],
      (summaries[files[0]?.name ?? ""] ?? []).map((m0) => {
        const per = files.map((f) => {
          const s = summaries[f.name] as MethodSummary[];
          const r = s.find((x) => x.method === "random")?.targets[0] as MethodSummary["targets"][0];
          const a = s.find((x) => x.method === m0.method)?.targets[0] as MethodSummary["targets"][0];
          return { gpu: r.ertGpu / a.ertGpu, wall: r.ertWall / a.ertWall, hit: a.hitRate };
        });
        const min = (xs: number[]) => Math.min(...xs.map((x) => (Number.isFinite(x) ? x : 0)));
        return [
          m0.label,
          `${min(per.map((p) => p.gpu)).toFixed(1)}×`,
          `${min(per.map((p) => p.wall)).toFixed(1)}×`,
          `${Math.round(100 * Math.min(...per.map((p) => p.hit)))} %`,
        ];
      }),
    ),
    "",
    ...sections.flatMap((s) => [s, ""]),
    "Rung ASHA with other ladders (GPU speed-up over random search at the 1 % target, hit rate in brackets):",
    "",
    table(
      ["reduction factor, grace", "rungs (max_t 50)", ...files.map((f) => f.label)],
      sensitivity.map((v) => {
        const ladder = (v.ladder as unknown as { ladders(): number[][] }).ladders()[0] ?? [];
        return [
          `rf ${v.rf}, grace ${v.grace}`,
          ladder.join(", "),
          ...files.map((f) => {
            const a = (v.files[f.name] as MethodSummary).targets[0] as MethodSummary["targets"][0];
            const r = (summaries[f.name] as MethodSummary[]).find((x) => x.method === "random")
              ?.targets[0] as MethodSummary["targets"][0];
            return `${ratio(r.ertGpu, a.ertGpu)} (${Math.round(100 * a.hitRate)} %)`;
          }),
        ];
      }),
    ),
  ].join("\n");
  return {
    markdown,
    data: {
      workers,
      seeds: nSeeds,
      optunaSeeds,
      optunaVersion: optuna.version,
      maxT: MAX_T,
      budget: "one pass over the file (each configuration drawn once)",
      simulationSeconds: { rung: round(rungSeconds, 2), optuna: round(optuna.seconds, 1) },
      summaries,
      sensitivity: sensitivity.map((v) => ({ rf: v.rf, grace: v.grace, files: v.files })),
      why,
    },
  };
}
