import { describe, expect, it } from "vitest";
import {
  type AgentIdleStats,
  compileDiagnosisOptions,
  DIAGNOSIS_DEFAULTS,
  diagnose,
  type Finding,
  type TrialStats,
} from "../index.js";

/** A healthy trial: busy GPU, little data wait, half the memory. Override what a case needs. */
function trial(over: Partial<TrialStats> & { util?: number; wait?: number; mem?: number; cpu?: number | null } = {}): TrialStats {
  const { util = 92, wait = 0.04, mem = 0.6, cpu = 40, ...rest } = over;
  const compute = 100;
  return {
    study: "s",
    trial: "t0001",
    phase: "completed",
    params: { lr: 0.01, batch_size: 64 },
    agents: ["a1"],
    gpuCount: 1,
    samples: 120,
    sampledGpuSeconds: 120,
    utilization: { mean: util, p10: Math.max(0, util - 5), p90: Math.min(100, util + 5) },
    memoryHighWaterMiB: mem * 24_576,
    memoryTotalMiB: 24_576,
    memoryHighWaterShare: mem,
    gpus: [{ agent: "a1", gpu: 0, samples: 120, meanUtilization: util }],
    dataWaitS: (wait / (1 - wait)) * compute,
    computeS: compute,
    dataWaitShare: wait,
    throughput: null,
    numWorkers: 4,
    batchSize: 64,
    host: { cores: 16, gpus: 2, cpuMeanPercent: cpu, samples: cpu === null ? 0 : 24 },
    ...rest,
  };
}

function agent(over: Partial<AgentIdleStats> = {}): AgentIdleStats {
  return {
    agent: "a1",
    gpus: 4,
    observedGpuSeconds: 4 * 3600,
    busyGpuSeconds: 4 * 3600,
    otherGpuSeconds: 0,
    idleGpuSeconds: 0,
    idleShare: 0,
    gaps: { count: 0, totalS: 0, meanS: 0, maxS: 0 },
    pricePerGpuHour: 2,
    ...over,
  };
}

const kinds = (fs: Finding[]) => fs.map((f) => f.kind);

describe("diagnose", () => {
  it("finds nothing on a healthy trial and a busy agent", () => {
    expect(diagnose({ trials: [trial()], agents: [agent()] })).toEqual([]);
  });

  it("input-bound: idle GPU while waiting for batches, with workers, cores and the speed-up in the finding", () => {
    const f = diagnose({ trials: [trial({ util: 31, wait: 0.69, numWorkers: 0 })], agents: [] });
    expect(kinds(f)).toEqual(["input-bound"]);
    const [x] = f as [Finding];
    expect(x.severity).toBe("critical");
    expect(x.evidence).toMatchObject({ meanUtilization: 31, dataWaitShare: 0.69, numWorkers: 0, hostCores: 16, hostGpus: 2 });
    expect(x.summary).toContain("69%");
    expect(x.summary).toContain("3.2×");
    expect(x.advice.join("\n")).toMatch(
      /num_workers from 0 to about 7 \(the host has 16 CPU cores for 2 GPUs; workers that mostly wait on storage/,
    );
    for (const knob of ["pin_memory=True", "persistent_workers=True", "prefetch_factor", "decoding"])
      expect(x.advice.join("\n")).toContain(knob);
  });

  it("input-bound needs both low utilization and a high data-wait share", () => {
    expect(kinds(diagnose({ trials: [trial({ util: 55, wait: 0.4 })], agents: [] }))).toEqual([]);
    expect(kinds(diagnose({ trials: [trial({ util: 45, wait: 0.3 })], agents: [] }))).not.toContain("input-bound");
  });

  it("input-bound without GPU samples falls back to a stricter data-wait share", () => {
    const noGpu = { utilization: null, samples: 0, memoryHighWaterShare: null, gpus: [] };
    expect(kinds(diagnose({ trials: [trial({ ...noGpu, wait: 0.6 })], agents: [] }))).toEqual(["input-bound"]);
    expect(kinds(diagnose({ trials: [trial({ ...noGpu, wait: 0.4 })], agents: [] }))).toEqual([]);
  });

  it("says when more workers will not help", () => {
    const [x] = diagnose({ trials: [trial({ util: 30, wait: 0.6, numWorkers: 15 })], agents: [] }) as [Finding];
    expect(x.advice[0]).toMatch(/already 15.*will not help/);
  });

  it("gpu-under-filled: low utilization, no data wait, little memory", () => {
    const f = diagnose({ trials: [trial({ util: 24, wait: 0.03, mem: 0.2 })], agents: [] });
    expect(kinds(f)).toEqual(["gpu-under-filled"]);
    expect(f[0]?.advice[0]).toMatch(/batch_size from 64 to 128–256/);
    // With plenty of memory in use it is not under-filled (a big model that is slow for other reasons).
    expect(kinds(diagnose({ trials: [trial({ util: 24, wait: 0.03, mem: 0.7 })], agents: [] }))).toEqual([]);
  });

  it("multi-gpu-imbalance: GPUs of one trial more than 20 points apart", () => {
    const gpus = [92, 90, 88, 55].map((u, gpu) => ({ agent: "a1", gpu, samples: 100, meanUtilization: u }));
    const f = diagnose({ trials: [trial({ util: 81, gpuCount: 4, gpus })], agents: [] });
    expect(kinds(f)).toEqual(["multi-gpu-imbalance"]);
    expect(f[0]?.evidence).toMatchObject({ spread: 37, busiestGpu: 0, idlestGpu: 3 });
    const even = [92, 90, 88, 75].map((u, gpu) => ({ agent: "a1", gpu, samples: 100, meanUtilization: u }));
    expect(diagnose({ trials: [trial({ util: 86, gpuCount: 4, gpus: even })], agents: [] })).toEqual([]);
  });

  it("host-cpu-saturated: host CPU near 100% while the GPU idles", () => {
    const f = diagnose({ trials: [trial({ util: 35, wait: 0.45, cpu: 97, numWorkers: 16 })], agents: [] });
    expect(kinds(f).sort()).toEqual(["host-cpu-saturated", "input-bound"]);
    const host = f.find((x) => x.kind === "host-cpu-saturated") as Finding;
    expect(host.advice[0]).toMatch(/num_workers=16 is at or above the host's 16 cores/);
    const input = f.find((x) => x.kind === "input-bound") as Finding;
    expect(input.advice.join("\n")).toMatch(/not more workers/);
    expect(kinds(diagnose({ trials: [trial({ util: 35, wait: 0.05, mem: 0.7, cpu: 60 })], agents: [] }))).toEqual([]);
  });

  it("near-oom: memory high-water above 95%", () => {
    const f = diagnose({ trials: [trial({ mem: 0.97 })], agents: [] });
    expect(kinds(f)).toEqual(["near-oom"]);
    expect(f[0]?.severity).toBe("warning");
    expect(diagnose({ trials: [trial({ mem: 0.995 })], agents: [] })[0]?.severity).toBe("critical");
    expect(diagnose({ trials: [trial({ mem: 0.94 })], agents: [] })).toEqual([]);
  });

  it("idle-gpus: share of GPU-seconds with no trial, gaps and their cost", () => {
    const a = agent({
      idleGpuSeconds: 0.4 * 4 * 3600,
      busyGpuSeconds: 0.6 * 4 * 3600,
      idleShare: 0.4,
      gaps: { count: 6, totalS: 900, meanS: 150, maxS: 400 },
    });
    const f = diagnose({ trials: [], agents: [a] });
    expect(kinds(f)).toEqual(["idle-gpus"]);
    expect(f[0]?.evidence).toMatchObject({ idleShare: 0.4, gaps: 6, idleCost: 3.2 });
    expect(f[0]?.summary).toContain("longest 400 s");
    // A short study's warm-up is not a finding.
    expect(diagnose({ trials: [], agents: [agent({ observedGpuSeconds: 100, idleGpuSeconds: 50, idleShare: 0.5 })] })).toEqual(
      [],
    );
  });

  it("ignores trials with too few samples for the utilization rules", () => {
    expect(diagnose({ trials: [trial({ util: 10, wait: 0.02, mem: 0.1, samples: 3 })], agents: [] })).toEqual([]);
  });

  it("sorts worst first: critical before warning, then by wasted GPU time", () => {
    const f = diagnose({
      trials: [
        trial({ trial: "small", util: 45, wait: 0.4, sampledGpuSeconds: 60 }),
        trial({ trial: "big", util: 45, wait: 0.4, sampledGpuSeconds: 6000 }),
        trial({ trial: "oom", mem: 0.999 }),
      ],
      agents: [],
    });
    expect(f.map((x) => x.trial)).toEqual(["oom", "big", "small"]);
  });

  it("thresholds are settings: changing one changes the verdict", () => {
    const t = trial({ util: 55, wait: 0.4 });
    expect(diagnose({ trials: [t], agents: [] })).toEqual([]);
    expect(kinds(diagnose({ trials: [t], agents: [] }, { inputBoundMaxUtilization: 60 }))).toEqual(["input-bound"]);
  });
});

describe("compileDiagnosisOptions", () => {
  it("applies defaults and checks bounds", () => {
    expect(compileDiagnosisOptions()).toEqual(DIAGNOSIS_DEFAULTS);
    expect(compileDiagnosisOptions({ nearOomMemory: 0.9 }).nearOomMemory).toBe(0.9);
    expect(() => compileDiagnosisOptions({ inputBoundMinDataWait: 30 })).toThrow(
      /inputBoundMinDataWait must be a number from 0 to 1/,
    );
    expect(() => compileDiagnosisOptions({ inputBoundMaxUtilization: 150 })).toThrow(/from 0 to 100/);
    expect(() => compileDiagnosisOptions({ bogus: 1 } as never)).toThrow(/unknown diagnosis setting bogus/);
  });
});
