import type { MeshWatch } from "@rung/coordinator";
import type { TrialEvent } from "@rung/protocol";
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/**
 * `rung ui`'s `/metrics`: the whole mesh as one Prometheus target. GPU gauges come from the latest
 * telemetry of every agent (the same names `rung agent --metrics-port` exposes for its own GPUs);
 * the trial counters and the latency histograms from the trial events published while `rung ui` runs
 * (counters start at zero with the process, as Prometheus expects; `rate()` and `increase()` handle it).
 *
 *   claim latency    an order queued → an agent's `claimed` (time waiting in the work queue)
 *   dispatch latency an order queued → the trial's `started` (queue, admission, checkpoint restore, spawn)
 *
 * Trials running are counted at scrape time from the GPUs' latest samples (each agent tags a GPU with
 * the trial on it), not from events: an attempt lost with its agent, or started before `rung ui`, is
 * then neither counted for ever nor missed. No label names a trial (one series per trial would grow
 * Prometheus without bound); `rung_gpu_trial` says which study a GPU works for.
 */

const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

export interface UiMetrics {
  readonly registry: Registry;
  close(): void;
}

/** What `rung ui` itself holds, for its own gauges. */
export interface UiServerGauges {
  /** Studies followed now (one `StudyWatch` each). */
  studyWatches(): number;
  /** Browsers connected to a study's live stream. */
  browsers(): number;
}

/** How long a queued order is remembered for its latency when its trial never ends (a study deleted). */
const QUEUED_FORGET_MS = 24 * 3_600_000;

export function uiMetrics(mesh: MeshWatch, self: UiServerGauges): UiMetrics {
  const registry = new Registry();
  const gpuLabels = ["agent", "gpu"] as const;
  const util = new Gauge({
    name: "rung_gpu_utilization_percent",
    help: "GPU utilization, 0-100",
    labelNames: gpuLabels,
    registers: [registry],
  });
  const memUsed = new Gauge({
    name: "rung_gpu_memory_used_bytes",
    help: "GPU memory in use",
    labelNames: gpuLabels,
    registers: [registry],
  });
  const memTotal = new Gauge({
    name: "rung_gpu_memory_total_bytes",
    help: "GPU memory",
    labelNames: gpuLabels,
    registers: [registry],
  });
  const power = new Gauge({ name: "rung_gpu_power_watts", help: "GPU power draw", labelNames: gpuLabels, registers: [registry] });
  const trialOn = new Gauge({
    name: "rung_gpu_trial",
    help: "1 while a trial of the study runs on the GPU",
    labelNames: [...gpuLabels, "study"],
    registers: [registry],
  });
  const dataWait = new Gauge({
    name: "rung_gpu_data_wait_ratio",
    help: "share of the GPU's trial's time spent waiting for data (its latest report), 0-1",
    labelNames: gpuLabels,
    registers: [registry],
  });
  const running = new Gauge({
    name: "rung_trials_running",
    help: "trials running now (from the GPUs' latest samples)",
    labelNames: ["study"],
    registers: [registry],
  });
  new Gauge({
    name: "rung_ui_study_watches",
    help: "studies rung ui follows now (one per study shown in a browser, kept a while after)",
    registers: [registry],
    collect() {
      this.set(self.studyWatches());
    },
  });
  new Gauge({
    name: "rung_ui_browsers",
    help: "browsers connected to a study's live updates",
    registers: [registry],
    collect() {
      this.set(self.browsers());
    },
  });
  const finished = new Counter({
    name: "rung_trials_finished_total",
    help: "trials ended, by how (completed, stopped, failed, cancelled)",
    labelNames: ["study", "status"],
    registers: [registry],
  });
  const failed = new Counter({
    name: "rung_trials_failed_total",
    help: "trials failed",
    labelNames: ["study"],
    registers: [registry],
  });
  const claim = new Histogram({
    name: "rung_claim_latency_seconds",
    help: "an order queued until an agent claimed it",
    labelNames: ["study"],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const dispatch = new Histogram({
    name: "rung_dispatch_latency_seconds",
    help: "an order queued until its trial started on an agent",
    labelNames: ["study"],
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });

  // GPU gauges are set at scrape time from the latest samples, so GPUs that left disappear.
  const collect = () => {
    util.reset();
    memUsed.reset();
    memTotal.reset();
    power.reset();
    trialOn.reset();
    dataWait.reset();
    running.reset();
    const data = mesh.data();
    const trialsOf = new Map<string, Set<string>>();
    for (const g of data.gpus) {
      const l = { agent: g.agent, gpu: String(g.index) };
      if (g.utilization !== null) util.set(l, g.utilization);
      if (g.memoryUsedMiB !== null) memUsed.set(l, g.memoryUsedMiB * 1024 * 1024);
      if (g.memoryTotalMiB !== null) memTotal.set(l, g.memoryTotalMiB * 1024 * 1024);
      if (g.powerW !== null) power.set(l, g.powerW);
      if (g.study && g.trial) {
        trialOn.set({ ...l, study: g.study }, 1);
        const set = trialsOf.get(g.study) ?? new Set<string>();
        set.add(g.trial); // a trial on several GPUs is one trial
        trialsOf.set(g.study, set);
      }
      if (g.dataWaitShare !== null) dataWait.set(l, g.dataWaitShare);
    }
    for (const [study, trials] of trialsOf) running.set({ study }, trials.size);
    const old = Date.now() - QUEUED_FORGET_MS;
    for (const [key, ts] of queuedAt) if (ts < old) queuedAt.delete(key);
  };

  const queuedAt = new Map<string, number>();
  const off = mesh.onEvent((e: TrialEvent) => {
    const key = `${e.study}/${e.trial}`;
    switch (e.type) {
      case "queued":
        queuedAt.set(key, e.ts);
        break;
      case "claimed": {
        const q = queuedAt.get(key);
        if (q !== undefined) claim.observe({ study: e.study }, Math.max(0, e.ts - q) / 1000);
        break;
      }
      case "started": {
        const q = queuedAt.get(key);
        if (q !== undefined) dispatch.observe({ study: e.study }, Math.max(0, e.ts - q) / 1000);
        break;
      }
      case "ended":
        queuedAt.delete(key);
        finished.inc({ study: e.study, status: e.status });
        if (e.status === "failed") failed.inc({ study: e.study });
        break;
    }
  });
  const metrics = registry.metrics.bind(registry);
  registry.metrics = async () => {
    collect();
    return metrics();
  };
  return { registry, close: off };
}
