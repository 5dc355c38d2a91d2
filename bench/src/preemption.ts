import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { readStudyEvents, StudyState } from "@rung/coordinator";
import { connectNats, MeshNames } from "@rung/protocol";
import {
  type BenchContext,
  type BenchOutcome,
  CURVE_TRIAL,
  fmt,
  median,
  type Proc,
  round,
  rung,
  sleep,
  startAgents,
  startBenchNats,
  stopAll,
  table,
  tempDir,
} from "./common.js";

/**
 * 6. GPU time lost per preemption, with and without checkpoints in the mesh.
 *
 * One trial of EPOCHS epochs of EPOCH_MS each (test/fixtures/curve-trial.mjs) runs on agent `spot`; after
 * K epochs the box is reclaimed — SIGTERM to the agent, which preempts the trial — and agent `ondemand`,
 * started a moment before, finishes it. The trial's GPU time is summed over its attempts (claim to end,
 * from the study's events: StudyState.attemptGpuSeconds), and the loss is that minus the GPU time of the
 * same trial run once without interruption in the same run. Side by side:
 *   checkpoints   the trial writes its checkpoint every epoch and reports `"checkpoint": true`: the
 *                 next attempt restores the last snapshot and goes on from it;
 *   none          the same trial without --checkpoint: the next attempt starts again from epoch 0, as
 *                 any tuner without checkpoints in a shared store does after losing the box.
 */

const EPOCHS = 10;
const EPOCH_MS = 500;
const K = 5;

interface Run {
  mode: "checkpoints" | "none" | "uninterrupted";
  gpuSeconds: number;
  attempts: number;
  resumedFrom: number | null;
}

async function runOnce(mode: Run["mode"], ctx: BenchContext): Promise<Run> {
  const nats = await startBenchNats();
  const prefix = `pre${Math.random().toString(36).slice(2, 8)}`;
  const names = new MeshNames(prefix);
  const dir = tempDir("preemption");
  const spec = join(dir, "pre.json");
  writeFileSync(
    spec,
    JSON.stringify({
      name: "pre",
      command: `${process.execPath} ${CURVE_TRIAL} --quality 0.8 --epochs {max_t} --epoch-ms ${EPOCH_MS}${mode === "checkpoints" ? " --checkpoint" : ""}`,
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { quality: { grid: [0.8] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: EPOCHS },
      resources: { gpus: 1 },
      retries: 0,
    }),
  );
  const procs: Proc[] = [];
  const nc = await connectNats({ url: nats.url, name: "bench-preemption" });
  try {
    const [spot] = startAgents(nats.url, prefix, [{ name: "spot", fakeGpus: 1 }]);
    procs.push(spot as Proc);
    const study = rung(["study", "run", spec, "--nats", nats.url, "--prefix", prefix]);
    procs.push(study);
    if (mode !== "uninterrupted") {
      for (;;) {
        const evs = await readStudyEvents(nc, names, "pre").catch(() => []);
        const t = Math.max(0, ...evs.map((s) => (s.event.type === "report" ? (s.event.metrics.epoch ?? 0) : 0)));
        if (t >= K) break;
        if (study.child.exitCode !== null) throw new Error(`the study ended before epoch ${K}: ${study.out().slice(-500)}`);
        await sleep(50);
      }
      procs.push(...startAgents(nats.url, prefix, [{ name: "ondemand", fakeGpus: 1 }]));
      await sleep(300);
      (spot as Proc).child.kill("SIGTERM");
    }
    const code = await study.exited;
    if (code !== 0) throw new Error(`rung study run exited ${code}: ${study.out().slice(-500)}`);
    const state = new StudyState({ study: "pre", metric: "val_acc", mode: "max", timeAttr: "epoch" });
    const stored = await readStudyEvents(nc, names, "pre");
    for (const { event, from } of stored) state.apply(event, from);
    const t = state.trials.get("t0001");
    if (!t) throw new Error("the study has no trial t0001");
    const gpuSeconds = t.attempts.reduce((s, a) => s + StudyState.attemptGpuSeconds(a, Date.now()), 0);
    const resumed = t.attempts.at(-1)?.resumedFrom?.t ?? null;
    ctx.log(
      `  ${mode}: ${t.attempts.length} attempt(s), ${gpuSeconds.toFixed(2)} GPU-s${resumed === null ? "" : `, resumed at epoch ${resumed}`}`,
    );
    return { mode, gpuSeconds, attempts: t.attempts.length, resumedFrom: resumed };
  } finally {
    await stopAll(procs);
    await nc.close();
    await nats.destroy();
  }
}

export async function preemptionLoss(ctx: BenchContext): Promise<BenchOutcome> {
  const reps = Number(process.env.BENCH_REPS ?? (ctx.quick ? 1 : 3));
  ctx.log(`  ${reps} run(s) of each: a ${EPOCHS}-epoch trial (${EPOCH_MS} ms an epoch), its box reclaimed after epoch ${K}`);
  const runs: Run[] = [];
  for (let i = 0; i < reps; i++)
    for (const mode of ["uninterrupted", "checkpoints", "none"] as const) runs.push(await runOnce(mode, ctx));
  const base = median(runs.filter((r) => r.mode === "uninterrupted").map((r) => r.gpuSeconds));
  const rows = (["checkpoints", "none"] as const).map((mode) => {
    const mine = runs.filter((r) => r.mode === mode);
    const lost = mine.map((r) => r.gpuSeconds - base);
    return {
      mode,
      lostGpuS: round(median(lost), 2),
      lostShare: round(median(lost) / base, 3),
      resumedFrom: mine.map((r) => r.resumedFrom),
      runs: mine.map((r) => round(r.gpuSeconds, 2)),
    };
  });
  const markdown = [
    `Figures: GPU time lost per preemption (a ${EPOCHS}-epoch trial of ${EPOCH_MS} ms epochs, its box reclaimed with SIGTERM after epoch ${K}; median of ${reps} run(s); uninterrupted: ${fmt(base, 2)} GPU-s)`,
    "",
    table(
      [
        "checkpoints in the mesh",
        "GPU-s lost per preemption",
        "share of the trial",
        "next attempt resumed at epoch",
        "GPU-s per run",
      ],
      rows.map((r) => [
        r.mode === "checkpoints" ? "yes (every epoch)" : "no",
        fmt(r.lostGpuS, 2),
        `${Math.round(100 * r.lostShare)} %`,
        r.resumedFrom.map((x) => (x === null ? "0 (from scratch)" : String(x))).join(", "),
        r.runs.join(", "),
      ]),
    ),
  ].join("\n");
  return { markdown, data: { epochs: EPOCHS, epochMs: EPOCH_MS, reclaimedAfter: K, uninterruptedGpuS: round(base, 2), rows } };
}
