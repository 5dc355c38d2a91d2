import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readStudyEvents } from "@rung/coordinator";
import { connectNats, MeshNames, type TrialEvent, type TrialEventOf } from "@rung/protocol";
import { FakeNvidiaSmi, fakeGpu } from "@rung/testkit";
import { type BenchContext, type BenchOutcome, fmt, round, rung, startAgents, startBenchNats, stopAll, table } from "./common.js";

/**
 * 10. Several trials per GPU: one per GPU vs a fixed share vs `packing: auto`.
 *
 * One agent with two fake GPUs (80 GiB each; packages/testkit/bin/fake-nvidia-smi.mjs) runs a study of
 * small synthetic trials (test/fixtures/gpu-trial.mjs): each declares 1.2 GiB of memory and 10 % of a
 * GPU's compute to the fake GPU, which slows co-located trials only when their demands on one GPU add up
 * to more than 100 %. The same study runs three ways, one after another: `resources.gpus: 1` (one trial
 * per GPU, as every tuner without packing), `gpus: 0.25` with `gpu_memory` (four per GPU, fixed by hand),
 * and `packing: auto` (the coordinator measures the first trials alone and raises the trials per GPU while
 * the GPU stays under 80 % busy and memory fits). From the study's events: the makespan (first `queued` to
 * last `ended`), the GPU-hours paid for it (makespan × GPUs), trials per GPU-hour, and the GPU-busy share
 * (the trials' declared compute × their running time, over makespan × GPUs). On a real GPU the trials would
 * be real; the figures here show what the placement does, not a GPU's speed.
 */

const TRIALS = 24;
const EPOCHS = 8;
const EPOCH_MS = 400;
const COMPUTE = 0.1;

interface Mode {
  key: string;
  label: string;
  extra: Record<string, unknown>;
}

const MODES: readonly Mode[] = [
  { key: "whole", label: "one trial per GPU (`gpus: 1`)", extra: { resources: { gpus: 1 } } },
  {
    key: "fixed",
    label: "fixed: four per GPU (`gpus: 0.25, gpu_memory: 1536MiB`)",
    extra: { resources: { gpus: 0.25, gpu_memory: "1536MiB" } },
  },
  { key: "auto", label: "`packing: auto`", extra: { resources: { gpus: 1 }, packing: "auto" } },
];

interface Row {
  key: string;
  label: string;
  makespanS: number;
  gpuHours: number;
  trialsPerGpuHour: number;
  busyShare: number;
  mostAtOnce: number;
  completed: number;
}

export async function packingBench(ctx: BenchContext): Promise<BenchOutcome> {
  const rows: Row[] = [];
  const trials = ctx.quick ? 16 : TRIALS;
  for (const mode of MODES) {
    const nats = await startBenchNats();
    const prefix = `pk${Math.random().toString(36).slice(2, 8)}`;
    const dir = mkdtempSync(join(tmpdir(), "rung-bench-packing-"));
    const smi = new FakeNvidiaSmi(join(dir, "smi"), [fakeGpu(0), fakeGpu(1)]);
    const agents = startAgents(nats.url, prefix, [{ name: "box", extra: ["--nvidia-smi", smi.path] }]);
    try {
      const spec = join(dir, `${mode.key}.json`);
      writeFileSync(
        spec,
        JSON.stringify({
          name: `pack-${mode.key}`,
          command: `${process.execPath} test/fixtures/gpu-trial.mjs --memory 1200 --compute ${COMPUTE} --epochs {max_t} --epoch-ms ${EPOCH_MS} --quality {q}`,
          workdir: ".",
          env: smi.stateEnv,
          metric: { name: "val_acc", mode: "max" },
          search: {
            algorithm: "grid",
            space: { q: { grid: Array.from({ length: trials }, (_, i) => round((i + 1) / (trials + 1), 4)) } },
          },
          scheduler: { type: "fifo", time_attr: "epoch", max_t: EPOCHS },
          retries: 0,
          ...mode.extra,
        }),
      );
      ctx.log(`  ${mode.key}: ${trials} trials of ${EPOCHS} × ${EPOCH_MS} ms on 2 fake GPUs`);
      const p = rung(["study", "run", spec, "--nats", nats.url, "--prefix", prefix]);
      const code = await p.exited;
      if (code !== 0) ctx.log(`  ${mode.key} exited ${code}: ${p.out().trim().split("\n").slice(-3).join(" / ")}`);
      const nc = await connectNats({ url: nats.url });
      let events: TrialEvent[];
      try {
        events = (await readStudyEvents(nc, new MeshNames(prefix), `pack-${mode.key}`)).map((e) => e.event);
      } finally {
        await nc.close();
      }
      const queued = events.filter((e) => e.type === "queued").map((e) => e.ts);
      const ended = events.filter((e): e is TrialEventOf<"ended"> => e.type === "ended");
      const makespanS = (Math.max(...ended.map((e) => e.ts)) - Math.min(...queued)) / 1000;
      const gpuHours = (makespanS * 2) / 3600;
      let busy = 0;
      const edges: { ts: number; d: number }[] = [];
      for (const s of events.filter((e): e is TrialEventOf<"started"> => e.type === "started")) {
        const end = events.find((e) => e.type === "finished" && e.trial === s.trial && e.attempt === s.attempt);
        if (!end) continue;
        busy += ((end.ts - s.ts) / 1000) * COMPUTE;
        edges.push({ ts: s.ts, d: 1 }, { ts: end.ts, d: -1 });
      }
      edges.sort((a, b) => a.ts - b.ts || a.d - b.d);
      let now = 0;
      let most = 0;
      for (const e of edges) {
        now += e.d;
        most = Math.max(most, now);
      }
      rows.push({
        key: mode.key,
        label: mode.label,
        makespanS: round(makespanS, 1),
        gpuHours: round(gpuHours, 5),
        trialsPerGpuHour: round(ended.filter((e) => e.status === "completed").length / gpuHours, 0),
        busyShare: round(busy / (makespanS * 2), 3),
        mostAtOnce: most,
        completed: ended.filter((e) => e.status === "completed").length,
      });
      ctx.log(`    makespan ${fmt(makespanS, 1)} s, ${most} at once, busy ${fmt(100 * (busy / (makespanS * 2)), 0)} %`);
    } finally {
      await stopAll(agents);
      await nats.destroy();
    }
  }
  const base = rows[0];
  const markdown = [
    `### 10. Several trials per GPU (${trials} synthetic trials of ${EPOCHS} × ${EPOCH_MS} ms, 1.2 GiB and ${100 * COMPUTE} % of a GPU each; one agent, 2 fake GPUs)`,
    "",
    table(
      [
        "placement",
        "makespan",
        "GPU-hours paid",
        "trials per GPU-hour",
        "vs one per GPU",
        "GPU-busy share",
        "most trials at once",
        "completed",
      ],
      rows.map((r) => [
        r.label,
        `${fmt(r.makespanS, 1)} s`,
        fmt(r.gpuHours, 4),
        fmt(r.trialsPerGpuHour, 0),
        base ? `${fmt(r.trialsPerGpuHour / base.trialsPerGpuHour, 1)}×` : "–",
        `${fmt(100 * r.busyShare, 0)} %`,
        String(r.mostAtOnce),
        String(r.completed),
      ]),
    ),
  ].join("\n");
  return { markdown, data: { rows } };
}
