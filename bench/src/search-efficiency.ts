import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { compileSchedulerOptions, createRng, createScheduler, PromotionAsha, type Scheduler } from "@rung/coordinator";
import { type BenchContext, type BenchOutcome, fmt, median, PYTHON, REPO, round, table, tempDir } from "./common.js";
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
];

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
): RunResult {
  const promoter = scheduler instanceof PromotionAsha ? scheduler : null;
  const targets = TARGETS.map((q) => file.bestFinal * (1 + q));
  const hits: ({ gpu: number; wall: number } | null)[] = TARGETS.map(() => null);
  const slots: ({ cfg: number; t: number; id: string } | null)[] = Array.from({ length: workers }, () => null);
  const pausedAt = new Map<string, { cfg: number; t: number }>();
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
      slots[w] = { cfg: where.cfg, t: where.t, id: p.trial };
      return;
    }
    if (next >= order.length) {
      slots[w] = null;
      return;
    }
    const cfg = order[next] as number;
    next += 1;
    const id = `c${cfg}`;
    scheduler.onTrialAdd(id);
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
      if (s.t >= MAX_T || d.decision === "STOP" || (stopDiverged && !Number.isFinite(loss))) {
        scheduler.onComplete(s.id, s.t, value);
        if (s.t >= MAX_T) {
          completed += 1;
          targets.forEach((target, i) => {
            if (hits[i] === null && loss <= target) hitNow[i] = true;
          });
        }
        freed.push(w);
      } else if (d.decision === "PAUSE") {
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
  return { hits, gpu, wall: clock, trials: next, completed, gpuOnNaN };
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
): Promise<{ runs: OptunaRun[]; version: string; seconds: number }> {
  const dir = tempDir("optuna-search");
  const input = join(dir, "input.json");
  writeFileSync(input, JSON.stringify({ files, seeds, orders, workers, maxT: MAX_T, targets: TARGETS }));
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

  ctx.log(`  replaying ${files.length} files × ${seeds.length} seeds × ${RUNG_METHODS.length} Rung methods, W=${workers}`);
  const t0 = performance.now();
  const rung: Record<string, Record<string, RunResult[]>> = {};
  for (const f of files) {
    rung[f.name] = {};
    for (const m of RUNG_METHODS) {
      (rung[f.name] as Record<string, RunResult[]>)[m.key] = seeds.map((s, i) =>
        simulate(f, orders[i] as number[], workers, m.make(s), m.report, m.stopDiverged),
      );
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
  const optuna = await runOptuna(paths, orders.slice(0, optunaSeeds), seeds.slice(0, optunaSeeds), workers, ctx);

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
      ratio(get("random").ertGpu, get("rung-asha").ertGpu),
      ratio(get("random").ertWall, get("rung-asha").ertWall),
      ratio(get("random").ertGpu, get("rung-asha-inf").ertGpu),
      ratio(get("random").ertGpu, get("rung-hyperband").ertGpu),
      ratio(get("optuna-sha").ertGpu, get("rung-asha").ertGpu),
      ratio(get("optuna-hyperband").ertGpu, get("rung-hyperband").ertGpu),
      `${Math.round(get("rung-asha").hitRate * 100)} / ${Math.round(get("optuna-sha").hitRate * 100)} %`,
    ]);
  }
  const markdown = [
    `### 5. Search efficiency on the TaskSet curves (W = ${workers} workers, ${nSeeds} seeds for random/Rung, ${optunaSeeds} for Optuna; ERT in units of one curve point)`,
    "",
    "Headline (1 % target): speed-up in expected running time.",
    "",
    table(
      [
        "file",
        "Rung ASHA vs random (GPU)",
        "Rung ASHA vs random (wall)",
        "Rung ASHA, NaN as +∞, vs random (GPU)",
        "Rung Hyperband vs random (GPU)",
        "Rung ASHA vs Optuna SHA (GPU)",
        "Rung HB vs Optuna HB (GPU)",
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
