import type { ParamValue, StudyPlan } from "../study/index.js";
import { fmt } from "./format.js";

/**
 * `rung study run SPEC --dry-run`, as text:
 *
 *   study digits-asha: 16 trials · asha on val_acc (max) · time attribute epoch · 1 GPU each, at most 4 at once · 2 retries
 *   first trial runs: /usr/bin/python3 train.py --lr 0.0123 --batch-size 64 … (in examples/digits)
 *
 *   trial  batch_size  dropout  hidden  lr        optimizer
 *   t0001  64          0.1834   87      0.002319  sgd
 *   …
 *
 *   rung ladder (asha: reduction factor 3, max_t 9; a trial goes on past a rung when it is in the top 1/3 there)
 *     bracket 0 (16 trials): epoch 1: 16 → epoch 3: ~6 → epoch 9 (max_t): ~2
 *   budget: about 46 epochs in all; 144 if every trial ran to max_t
 *
 *   dry run: nothing was started
 */

/** Trials listed before the table says "… N more". */
const MAX_ROWS = 500;

function cell(v: ParamValue | undefined): string {
  if (v === undefined) return "";
  // 4 significant digits, no trailing zeros: 0.001, 0.002459, 0.452
  return typeof v === "number" && !Number.isInteger(v) ? String(Number(v.toPrecision(4))) : String(v);
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((x, c) => (c === r.length - 1 ? x : x.padEnd(widths[c] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

function fmtMiB(mib: number): string {
  return mib % 1024 === 0 ? `${mib / 1024} GiB` : `${mib} MiB`;
}

function budgetLimits(b: { gpuHours: number | null; cost: number | null }): string {
  return [b.gpuHours === null ? null : `${b.gpuHours} GPU-hours`, b.cost === null ? null : `cost ${b.cost}`]
    .filter((x) => x !== null)
    .join(" and ");
}

export function studyPlanText(plan: StudyPlan): string {
  const { spec } = plan;
  const s = spec.scheduler;
  const unit = s.timeAttr;
  const out: string[] = [];
  const mem = spec.resources.gpuMemoryMiB === null ? "" : ` with ${fmtMiB(spec.resources.gpuMemoryMiB)} of GPU memory`;
  const gpus =
    spec.resources.gpus === 0
      ? "a CPU slot each"
      : spec.packing !== null
        ? `1 GPU each at first${mem}, then up to ${spec.packing.maxPerGpu} per GPU (packing: auto)`
        : spec.resources.gpus < 1
          ? `${spec.resources.gpus} of a GPU each${mem}`
          : `${spec.resources.gpus} GPU${spec.resources.gpus === 1 ? "" : "s"} each${mem}`;
  const budget = spec.budget === null ? [] : [`stops at ${budgetLimits(spec.budget)} (budget)`];
  out.push(
    [
      `study ${spec.name}: ${plan.trials.length} trial${plan.trials.length === 1 ? "" : "s"}`,
      `${s.type} on ${spec.metric.name} (${spec.metric.mode})`,
      `time attribute ${unit}`,
      spec.maxConcurrent === null ? gpus : `${gpus}, at most ${spec.maxConcurrent} at once`,
      `${spec.retries} retr${spec.retries === 1 ? "y" : "ies"}`,
      ...budget,
    ].join(" · "),
  );
  if (plan.firstArgv)
    out.push(
      `first trial runs: ${plan.firstArgv.map(shellWord).join(" ")}${spec.workdir === "." ? "" : ` (in ${spec.workdir})`}`,
    );

  const keys = Object.keys(spec.search.space).sort();
  const withBracket = plan.brackets !== null && plan.brackets.length > 1;
  const rows: string[][] = [["trial", ...(withBracket ? ["bracket"] : []), ...keys]];
  // tpe / bohb: trials after the startup ones are drawn by the model when they are created.
  const model = spec.search.algorithm === "tpe" || spec.search.algorithm === "bohb" ? spec.search.algorithm : null;
  const startup = spec.search.startupTrials ?? 10;
  for (const [i, t] of plan.trials.slice(0, Math.min(MAX_ROWS, model ? startup : MAX_ROWS)).entries()) {
    rows.push([t.trial, ...(withBracket ? [String(plan.trials[i]?.bracket ?? "-")] : []), ...keys.map((k) => cell(t.params[k]))]);
  }
  out.push("", table(rows));
  if (model && plan.trials.length > startup)
    out.push(
      `${plan.trials[startup]?.trial} … ${plan.trials.at(-1)?.trial}: ${plan.trials.length - startup} trials drawn by ${model.toUpperCase()} from the results so far, each when it is created`,
    );
  else if (plan.trials.length > MAX_ROWS) out.push(`… and ${plan.trials.length - MAX_ROWS} more trials`);

  out.push("");
  if (s.type === "asha" || s.type === "hyperband" || s.type === "promotion") {
    const rf = fmt(s.reductionFactor);
    out.push(
      s.type === "promotion"
        ? `rung ladder (promotion: reduction factor ${rf}, max_t ${fmt(s.maxT)}; every trial pauses at each rung with its checkpoint, and the top 1/${rf} of those there resume, on any free GPU)`
        : `rung ladder (${s.type}: reduction factor ${rf}, max_t ${fmt(s.maxT)}; a trial goes on past a rung when it is in the top 1/${rf} of those recorded there)`,
    );
    for (const b of plan.brackets ?? []) {
      const share = (plan.brackets?.length ?? 1) > 1 ? `, ${(100 * b.probability).toFixed(0)}% of new trials` : "";
      const steps = [
        ...b.rungs.map((r, k) => `${unit} ${fmt(r.milestone)}: ${k === 0 ? "" : "~"}${r.expected}`),
        `${unit} ${fmt(s.maxT)} (max_t): ${b.rungs.length === 0 ? "" : "~"}${b.toMaxT}`,
      ];
      out.push(`  bracket ${b.bracket} (${b.trials} trial${b.trials === 1 ? "" : "s"}${share}): ${steps.join(" → ")}`);
    }
    out.push(
      s.type === "promotion"
        ? "  (~: what halving promotes once every trial has reached the rung; promotions start as soon as rf results are there)"
        : "  (~: what halving keeps when results come in no particular order; ASHA is asynchronous, so early arrivals can take more trials further)",
    );
    if (plan.budget)
      out.push(
        `budget: about ${fmt(plan.budget.expected)} ${unit}s in all; ${fmt(plan.budget.full)} if every trial ran to max_t`,
      );
  } else if (s.type === "pbt") {
    out.push(
      `no rung ladder (population-based training): every ${fmt(s.perturbationInterval)} ${unit}s a trial in the bottom ${Math.round(100 * s.quantileFraction)}% goes on from the checkpoint of one in the top ${Math.round(100 * s.quantileFraction)}%, with ${s.mutations.join(", ")} perturbed (drawn again with probability ${s.resampleProbability}); every trial runs to ${unit} ${fmt(s.maxT)} (max_t)`,
    );
  } else if (s.type === "median") {
    out.push(
      `no rung ladder (median stopping rule): from ${unit} ${fmt(s.gracePeriod)} a trial whose best ${spec.metric.name} is worse than the median of the others' running means stops, once ${s.minSamplesRequired} others got that far` +
        (s.maxT === null ? "" : `; every trial stops at ${unit} ${fmt(s.maxT)} (max_t)`),
    );
  } else {
    out.push(
      `no rung ladder (fifo): every trial runs to its end${s.maxT === null ? "" : `, or to ${unit} ${fmt(s.maxT)} (max_t)`}`,
    );
  }
  const es = spec.earlyStopping;
  if (es)
    out.push(
      `early stopping: a trial stops when ${es.monitor} (${es.mode}) has not improved${es.minDelta > 0 ? ` by ${es.minDelta}` : ""} for ${es.patience} report${es.patience === 1 ? "" : "s"}`,
    );
  out.push("", "dry run: nothing was started");
  return `${out.join("\n")}\n`;
}
