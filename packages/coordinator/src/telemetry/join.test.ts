import { type GpuSample, sourceOf, type Telemetry, type TrialEvent } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { diagnose, joinTelemetry, StudyState, type TrialStats } from "../index.js";

const T0 = 1_700_000_000_000;
const at = (s: number) => T0 + s * 1000;

function events(): TrialEvent[] {
  const base = { v: 1 as const, study: "s" };
  const out: TrialEvent[] = [];
  const created = (trial: string, s: number, params: Record<string, number> = {}) =>
    out.push({ ...base, trial, ts: at(s), type: "created", params, bracket: 0 });
  // An attempt as the stream has it: queued, claimed by its agent, started.
  const started = (trial: string, attempt: number, agent: string, gpus: number[], s: number) =>
    out.push(
      { ...base, trial, ts: at(s), type: "queued", attempt },
      { ...base, trial, ts: at(s), type: "claimed", attempt, agent, gpus },
      { ...base, trial, ts: at(s), type: "started", attempt, agent, pid: 1, gpus },
    );
  const report = (trial: string, attempt: number, agent: string, s: number, epoch: number, metrics: Record<string, number>) =>
    out.push({ ...base, trial, ts: at(s), type: "report", attempt, agent, seq: epoch, metrics: { epoch, ...metrics } });
  const finished = (trial: string, attempt: number, agent: string, s: number, status: "completed" | "failed") =>
    out.push({
      ...base,
      trial,
      ts: at(s),
      type: "finished",
      attempt,
      agent,
      status,
      exitCode: status === "completed" ? 0 : 1,
      signal: null,
      reason: status,
      logTail: [],
    });
  const ended = (trial: string, s: number) =>
    out.push({ ...base, trial, ts: at(s), type: "ended", status: "completed", reason: "done", attempts: 1 });

  created("t1", 0, { batch_size: 32 });
  created("t2", 0);
  created("t3", 0);
  // t1: a1 gpu0, 0..100 s, input-bound (70 % waiting), with num_workers and a throughput.
  started("t1", 1, "a1", [0], 0);
  for (let e = 1; e <= 5; e++)
    report("t1", 1, "a1", 20 * e, e, {
      val_acc: 0.5 + e / 20,
      data_wait_s: 14,
      compute_s: 6,
      num_workers: 0,
      samples_per_s: 100 + e,
    });
  finished("t1", 1, "a1", 100, "completed");
  ended("t1", 100);
  // t2: a1 gpu1, attempt 1 10..60 s fails, attempt 2 70..120 s completes.
  started("t2", 1, "a1", [1], 10);
  finished("t2", 1, "a1", 60, "failed");
  started("t2", 2, "a1", [1], 70);
  report("t2", 2, "a1", 80, 1, { val_acc: 0.8, data_wait_s: 1, compute_s: 19 });
  finished("t2", 2, "a1", 120, "completed");
  ended("t2", 120);
  // t3: a2 (an agent that does not tag its samples) gpu0, 0..50 s.
  started("t3", 1, "a2", [0], 0);
  report("t3", 1, "a2", 25, 1, { val_acc: 0.7 });
  finished("t3", 1, "a2", 50, "completed");
  ended("t3", 130);
  return out.sort((a, b) => a.ts - b.ts);
}

function state(evs: TrialEvent[]): StudyState {
  const s = new StudyState({ study: "s", metric: "val_acc", mode: "max", timeAttr: "epoch" });
  for (const e of evs) s.apply(e, sourceOf(e));
  return s;
}

function gpu(index: number, util: number, study: string | null, trial: string | null, memShare = util / 200): GpuSample {
  return {
    index,
    uuid: `GPU-${index}`,
    utilizationGpu: util,
    utilizationMemory: null,
    memoryUsedMiB: memShare * 24_576,
    memoryTotalMiB: 24_576,
    powerW: 100,
    temperatureC: 50,
    smClockMHz: null,
    study,
    trial,
  };
}

/** 1 Hz samples, 0..130 s: a1 tags its GPUs (and is fake), a2 does not; host samples every 5 s. */
function telemetry(): Telemetry[] {
  const out: Telemetry[] = [];
  for (let s = 0; s <= 130; s++) {
    const g0 = s < 100 ? gpu(0, s < 20 ? 5 : 30, "s", "t1") : gpu(0, 60, "other", "x9");
    const t2 = (s >= 10 && s < 60) || (s >= 70 && s < 120);
    const g1 = t2 ? gpu(1, s < 80 ? 5 : 95, "s", "t2") : gpu(1, 0, null, null, 0);
    out.push({ v: 1, type: "gpu", agent: "a1", ts: at(s), fake: true, gpus: [g0, g1] });
    out.push({ v: 1, type: "gpu", agent: "a2", ts: at(s), fake: false, gpus: [gpu(0, s < 50 ? 70 : 0, null, null)] });
    if (s % 5 === 0) {
      out.push({
        v: 1,
        type: "host",
        agent: "a1",
        ts: at(s),
        cpuLoadPercent: 50,
        cpuCores: 8,
        memoryUsedBytes: 1,
        memoryTotalBytes: 2,
      });
    }
  }
  return out;
}

const byTrial = (trials: readonly TrialStats[], id: string) => trials.find((t) => t.trial === id) as TrialStats;

describe("joinTelemetry", () => {
  const evs = events();
  const joined = joinTelemetry(state(evs), telemetry(), { events: evs, now: at(500) });

  it("uses the agent's tag, and leaves a fake GPU's samples before the first report out of utilization", () => {
    const t1 = byTrial(joined.trials, "t1");
    expect(t1.sampledGpuSeconds).toBe(100);
    // samples 20..99 s: a fake GPU says nothing real before the first report at 20 s
    expect(t1.samples).toBe(80);
    expect(t1.utilization?.mean).toBe(30);
    expect(t1.dataWaitShare).toBeCloseTo(0.7);
    expect(t1.numWorkers).toBe(0);
    expect(t1.batchSize).toBe(32);
    expect(t1.throughput).toEqual({ name: "samples_per_s", value: 103 });
    expect(t1.host).toEqual({ cores: 8, gpus: 2, cpuMeanPercent: 50, samples: 17 });
  });

  it("covers every attempt of a retried trial", () => {
    const t2 = byTrial(joined.trials, "t2");
    expect(t2.sampledGpuSeconds).toBe(100);
    expect(t2.samples).toBe(40); // 80..119 s, after attempt 2's first report
    expect(t2.utilization?.mean).toBe(95);
  });

  it("falls back to the attempt windows for untagged samples", () => {
    const t3 = byTrial(joined.trials, "t3");
    expect(t3.samples).toBe(51); // 0..50 s inclusive: the window includes its end
    expect(t3.agents).toEqual(["a2"]);
    expect(t3.utilization?.mean).toBeCloseTo((50 * 70) / 51);
  });

  it("accounts each agent's GPU time as busy, another study's, or idle, and finds the gaps between trials", () => {
    const a1 = joined.agents.find((a) => a.agent === "a1");
    expect(a1).toMatchObject({ gpus: 2, observedGpuSeconds: 262, busyGpuSeconds: 200, otherGpuSeconds: 31, idleGpuSeconds: 31 });
    expect(a1?.gaps).toEqual({ count: 1, totalS: 10, meanS: 10, maxS: 10 });
    const a2 = joined.agents.find((a) => a.agent === "a2");
    expect(a2).toMatchObject({ observedGpuSeconds: 131, busyGpuSeconds: 51, idleGpuSeconds: 80 });
  });

  it("feeds diagnose: the input-bound trial and the idle agent are found", () => {
    const f = diagnose(joined);
    expect(f.map((x) => `${x.kind}:${x.trial ?? x.agent}`).sort()).toEqual(["idle-gpus:a2", "input-bound:t1"]);
  });

  it("takes the trial's own CPU from its agent's host samples, and the host's CPU while it waited from its reports", () => {
    // t1's reports: the first waited twice as long, with the host 90 % busy meanwhile; the others 30 %.
    const evs3 = evs.map((e) =>
      e.type === "report" && e.trial === "t1"
        ? { ...e, metrics: { ...e.metrics, data_wait_host_cpu: e.seq === 1 ? 0.9 : 0.3, data_wait_s: e.seq === 1 ? 28 : 14 } }
        : e,
    );
    const entry = (trial: string, cpuCores: number) => ({ study: "s", trial, attempt: 1, cpuCores, processes: 3 });
    const tel: Telemetry[] = telemetry().map((m) => {
      if (m.type !== "host") return m;
      const s = (m.ts - T0) / 1000;
      // 3 cores while it starts (before its first report at 20 s: left out, as its GPU samples are),
      // half a core after; another study's trial beside it.
      return { ...m, trials: s < 100 ? [entry("t1", s < 20 ? 3 : 0.5), { ...entry("t1", 7), study: "other" }] : [] };
    });
    // Another agent that claims to have seen t1: not one of t1's agents, so not counted.
    tel.push({
      ...(tel.find((m) => m.type === "host") as Telemetry),
      agent: "a2",
      ts: at(50),
      trials: [entry("t1", 9)],
    } as Telemetry);
    const j = joinTelemetry(state(evs3), tel, { events: evs3, now: at(500) });
    const t1 = byTrial(j.trials, "t1");
    expect(t1.trialCpu).toEqual({ meanCores: 0.5, maxCores: 0.5, samples: 16 });
    // (0.9 × 28 + 0.3 × 14 × 4) / (28 + 14 × 4)
    expect(t1.waitHostCpuPercent).toBeCloseTo(50);
    // Without the agent's measurement or the helper's, both are unknown, never zero.
    expect(byTrial(joined.trials, "t1")).toMatchObject({ trialCpu: null, waitHostCpuPercent: null });
  });

  it("keeps warm-up samples when it has no events to tell them apart", () => {
    const j = joinTelemetry(state(evs), telemetry(), { now: at(500) });
    expect(byTrial(j.trials, "t1").samples).toBe(100);
  });

  it("compares a multi-GPU trial's GPUs only over samples where they reported together", () => {
    const evs2: TrialEvent[] = [
      { v: 1, study: "s", trial: "m", ts: at(0), type: "created", params: {}, bracket: 0 },
      { v: 1, study: "s", trial: "m", ts: at(0), type: "started", attempt: 1, agent: "a1", pid: 1, gpus: [0, 1] },
      { v: 1, study: "s", trial: "m", ts: at(1), type: "report", attempt: 1, agent: "a1", seq: 0, metrics: { epoch: 1 } },
    ];
    const tel: Telemetry[] = [];
    for (let s = 2; s < 30; s++)
      tel.push({ v: 1, type: "gpu", agent: "a1", ts: at(s), fake: false, gpus: [gpu(0, 90, "s", "m"), gpu(1, 50, "s", "m")] });
    // gpu1 alone for a while (gpu0's entry missing): not part of the comparison
    for (let s = 30; s < 60; s++)
      tel.push({ v: 1, type: "gpu", agent: "a1", ts: at(s), fake: false, gpus: [gpu(1, 90, "s", "m")] });
    const j = joinTelemetry(state(evs2), tel, { events: evs2, now: at(60) });
    const m = byTrial(j.trials, "m");
    expect(m.gpuCount).toBe(2);
    expect(m.gpus.map((g) => g.meanUtilization)).toEqual([90, 50]);
    expect(diagnose(j).map((f) => f.kind)).toEqual(["multi-gpu-imbalance"]);
  });
});
