import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadSpec, type StudyStatusJson, specToInput } from "@rung/coordinator";
import { type BenchContext, type BenchOutcome, fmt, REPO, round, rung, table, tempDir } from "./common.js";

/**
 * 8. The digits example under each search method: the whole study's GPU time and the best accuracy.
 *
 * `rung demo --spec S` (an embedded nats-server, 4 agents with a fake GPU each, real PyTorch training of
 * the digits classifier on the CPU) runs configs/digits.yaml with only `search` and `scheduler` changed,
 * one method after another, the same seed and samples. GPU time is what the study's attempts held
 * (`gpuSeconds` of `rung study status --json`, summed), start-up of each Python process included — on a
 * real GPU the epochs are faster and the start-up is the same. One run per method (`--quick`: four
 * methods); the digits space is small and easy, so the best accuracy differs little: what differs is the
 * GPU time spent to get it.
 */

interface Method {
  key: string;
  label: string;
  search: Record<string, unknown>;
  scheduler: Record<string, unknown>;
  diverged?: boolean;
  quick?: boolean;
}

const METHODS: readonly Method[] = [
  {
    key: "random-fifo",
    label: "random search, every trial to max_t",
    search: { algorithm: "random" },
    scheduler: { type: "fifo" },
    quick: true,
  },
  {
    key: "random-asha",
    label: "random + ASHA rf 3 (Ray's rule)",
    search: { algorithm: "random" },
    scheduler: { type: "asha", grace_period: 1, reduction_factor: 3 },
    quick: true,
  },
  {
    key: "random-asha4",
    label: "random + ASHA rf 4, `diverged`",
    search: { algorithm: "random" },
    scheduler: { type: "asha", grace_period: 1, reduction_factor: 4 },
    diverged: true,
  },
  {
    key: "tpe-asha4",
    label: "TPE + ASHA rf 4, `diverged`",
    search: { algorithm: "tpe", startup_trials: 8 },
    scheduler: { type: "asha", grace_period: 1, reduction_factor: 4 },
    diverged: true,
  },
  {
    key: "tpe-curve",
    label: "TPE + learning-curve stopping, `diverged`",
    search: { algorithm: "tpe", startup_trials: 8 },
    scheduler: { type: "curve", grace_period: 1, reduction_factor: 3 },
    diverged: true,
  },
  {
    key: "bohb-promotion4",
    label: "BOHB + promotion ASHA rf 4, `diverged`",
    search: { algorithm: "bohb", startup_trials: 8 },
    scheduler: { type: "promotion", grace_period: 1, reduction_factor: 4 },
    diverged: true,
  },
  {
    key: "tpe-promotion4",
    label: "**recommended**: TPE + promotion ASHA rf 4, `diverged` (configs/digits.yaml)",
    search: { algorithm: "tpe", startup_trials: 8 },
    scheduler: { type: "promotion", grace_period: 1, reduction_factor: 4 },
    diverged: true,
    quick: true,
  },
];

interface Row {
  key: string;
  label: string;
  gpuSeconds: number;
  wallSeconds: number;
  best: number | null;
  trials: number;
  stopped: number;
  exitCode: number | null;
}

export async function digitsSearch(ctx: BenchContext): Promise<BenchOutcome> {
  const base = specToInput(await loadSpec(join(REPO, "configs", "digits.yaml"))) as Record<string, unknown>;
  const dir = tempDir("digits-search");
  const rows: Row[] = [];
  for (const m of METHODS.filter((x) => !ctx.quick || x.quick)) {
    const spec: Record<string, unknown> = {
      ...base,
      name: `digits-${m.key}`,
      search: { ...(base.search as Record<string, unknown>), algorithm: undefined, startup_trials: undefined, ...m.search },
      scheduler: { time_attr: "epoch", max_t: (base.scheduler as { max_t: number }).max_t, ...m.scheduler },
    };
    if (!m.diverged) delete spec.diverged;
    const search = spec.search as Record<string, unknown>;
    for (const k of Object.keys(search)) if (search[k] === undefined) delete search[k];
    const file = join(dir, `${m.key}.json`);
    writeFileSync(file, JSON.stringify(spec));
    const out = join(dir, `${m.key}.status.json`);
    ctx.log(`  ${m.key}: rung demo --spec ${file}`);
    const t0 = performance.now();
    const p = rung(["demo", "--spec", file, "--workdir", REPO, "--out", out]);
    const code = await p.exited;
    const wall = (performance.now() - t0) / 1000;
    if (code !== 0) ctx.log(`  ${m.key} exited ${code}: ${p.out().trim().split("\n").slice(-3).join(" / ")}`);
    const status = JSON.parse(readFileSync(out, "utf8")) as StudyStatusJson;
    rows.push({
      key: m.key,
      label: m.label,
      gpuSeconds: round(
        status.trials.reduce((s, t) => s + (t.gpuSeconds ?? 0), 0),
        1,
      ),
      wallSeconds: round(wall, 1),
      best: status.best?.value ?? null,
      trials: status.trials.length,
      stopped: status.counts.stopped ?? 0,
      exitCode: code,
    });
    ctx.log(`    ${fmt(rows.at(-1)?.gpuSeconds, 1)} GPU-s, best ${fmt(rows.at(-1)?.best, 4)}`);
  }
  const fifo = rows.find((r) => r.key === "random-fifo");
  const markdown = [
    `### 8. The digits example under each search method (configs/digits.yaml, ${rows[0]?.trials ?? 0} trials, max_t ${(base.scheduler as { max_t: number }).max_t} epochs, 4 agents, one run each)`,
    "",
    table(
      [
        "method",
        "whole-study GPU time",
        "GPU-hours",
        "vs every trial to max_t",
        "best val_acc",
        "trials stopped early",
        "wall (demo, incl. start-up)",
      ],
      rows.map((r) => [
        r.label,
        `${fmt(r.gpuSeconds, 0)} GPU-s`,
        fmt(r.gpuSeconds / 3600, 4),
        fifo ? `${fmt((100 * r.gpuSeconds) / fifo.gpuSeconds, 0)} %` : "–",
        r.best === null ? "–" : r.best.toFixed(4),
        String(r.stopped),
        `${fmt(r.wallSeconds, 0)} s`,
      ]),
    ),
  ].join("\n");
  return { markdown, data: { rows } };
}
