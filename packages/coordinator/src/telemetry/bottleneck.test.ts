import { describe, expect, it } from "vitest";
import {
  type AgentIdleStats,
  compileDiagnosisOptions,
  DIAGNOSIS_DEFAULTS,
  diagnose,
  type Finding,
  type TrialStats,
} from "../index.js";

/**
 * A healthy trial: busy GPU, little data wait, half the memory. Override what a case needs: `cpu` is
 * the host's mean CPU percent, `own` the trial's own CPU in cores (its agent's measurement; null: an
 * agent that does not measure it), `waitCpu` the host's CPU percent while its loader waited (from its
 * reports; null: a helper that does not measure it).
 */
function trial(
  over: Partial<TrialStats> & {
    util?: number;
    wait?: number;
    mem?: number;
    cpu?: number | null;
    own?: number | null;
    waitCpu?: number | null;
  } = {},
): TrialStats {
  const { util = 92, wait = 0.04, mem = 0.6, cpu = 40, own = null, waitCpu = null, ...rest } = over;
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
    trialCpu: own === null ? null : { meanCores: own, maxCores: own * 1.1, samples: 24 },
    waitHostCpuPercent: waitCpu,
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

  // The box of the report: 2 cores, one GPU, a starved trial with as many workers as cores.
  const smallBox = { cores: 2, gpus: 1, cpuMeanPercent: 45, samples: 24 };
  const starved = { util: 30, wait: 0.67, numWorkers: 2, host: smallBox };
  const inputBoundOf = (t: TrialStats) => diagnose({ trials: [t], agents: [] }).find((x) => x.kind === "input-bound") as Finding;

  it("a loader that waits on storage with the CPU idle: raise num_workers past the core count", () => {
    // The report's case: the host 27–57 % busy while the loader waited; the trial itself a tenth of a core.
    for (const waitCpu of [27, 57]) {
      const f = diagnose({ trials: [trial({ ...starved, waitCpu, own: 0.2 })], agents: [] });
      expect(kinds(f)).toEqual(["input-bound"]);
      const x = f[0] as Finding;
      expect(x.evidence).toMatchObject({ loaderWaitsOn: "io", numWorkers: 2, waitHostCpuPercent: waitCpu, trialCpuCores: 0.2 });
      // 2 workers at 67 % wait need 3× the throughput, half as much again to spare: 10, held to 4× the 2 cores.
      expect(x.evidence.suggestedWorkers).toBe(8);
      expect(x.advice[0]).toMatch(
        /^raise DataLoader num_workers from 2 to about 8, past the core count \(the host has 2 CPU cores\)/,
      );
      expect(x.advice[0]).toContain(`the host's CPU was ${waitCpu}% busy while the loader waited`);
      expect(x.advice.join("\n")).not.toMatch(/will not help|not past the cores/);
      expect(x.advice.join("\n")).toMatch(/cache the dataset on local disk/);
      expect(x.summary).toContain("waits on storage or the network");
    }
    // Measured by the trial's own CPU alone (a helper without data_wait_host_cpu): the same.
    expect(inputBoundOf(trial({ ...starved, own: 0.2 })).evidence.loaderWaitsOn).toBe("io");
    // On a bigger box the target stays between 2× and 4× the cores the trial can have (16 cores, 2 GPUs: 8).
    const big = inputBoundOf(trial({ util: 30, wait: 0.5, numWorkers: 8, waitCpu: 20, own: 1 }));
    expect(big.evidence).toMatchObject({ loaderWaitsOn: "io", trialCores: 8, suggestedWorkers: 24 });
  });

  it("a loader that keeps the CPU busy: more workers than cores will not help", () => {
    const x = inputBoundOf(trial({ ...starved, waitCpu: 98, own: 1.7 }));
    expect(x.evidence).toMatchObject({ loaderWaitsOn: "cpu", suggestedWorkers: 1, trialCpuPercent: 85 });
    expect(x.advice[0]).toMatch(
      /^num_workers is already 2 and the host has 2 CPU cores: .*CPU-bound and more workers than cores will not help/,
    );
    expect(x.advice.join("\n")).not.toMatch(/past the core count/);
    expect(x.advice.join("\n")).toMatch(/decoding and augmentation off the training loop/);
    // Fewer workers than cores on a CPU-bound loader: up to the cores, not past them (16 cores for 2 GPUs: 8 for this trial).
    const few = inputBoundOf(trial({ util: 30, wait: 0.6, numWorkers: 2, waitCpu: 95, own: 6.5 }));
    expect(few.evidence).toMatchObject({ loaderWaitsOn: "cpu", suggestedWorkers: 7 });
    expect(few.advice[0]).toMatch(/^raise DataLoader num_workers from 2 to about 7, not past the cores/);
    // By its own CPU alone (no data_wait_host_cpu): 85 % of its cores is CPU-bound.
    expect(inputBoundOf(trial({ ...starved, own: 1.7 })).evidence.loaderWaitsOn).toBe("cpu");
  });

  it("a loader that waits while other processes hold the CPU: its own workers wait, so more of them help", () => {
    const x = inputBoundOf(trial({ ...starved, waitCpu: 96, own: 0.3, host: { ...smallBox, cpuMeanPercent: 95 } }));
    expect(x.evidence.loaderWaitsOn).toBe("contended");
    expect(x.advice[0]).toMatch(/past the core count/);
    expect(x.advice[1]).toMatch(/other processes keep the CPU busy/);
    // Without data_wait_host_cpu, a busy host and a trial that uses little of it say the same.
    expect(inputBoundOf(trial({ ...starved, own: 0.3, host: { ...smallBox, cpuMeanPercent: 95 } })).evidence.loaderWaitsOn).toBe(
      "contended",
    );
  });

  it("names both possibilities when nothing says what the loader waits on", () => {
    const x = inputBoundOf(trial({ util: 30, wait: 0.6, numWorkers: 15 }));
    expect(x.evidence.loaderWaitsOn).toBe("unknown");
    expect(x.advice[0]).toMatch(
      /already 15.*raise it past the core count, to about \d+; if they keep the CPU busy, more will not help/,
    );
    expect(x.advice[0]).toMatch(/not measured/);
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

  it("host-cpu-saturated: the trial's own processes fill its cores while the GPU idles", () => {
    // 16 cores for 2 GPUs: a one-GPU trial can have 8; it uses 7.6 of them and the host is full.
    const f = diagnose({ trials: [trial({ util: 35, wait: 0.45, cpu: 97, own: 7.6, numWorkers: 16 })], agents: [] });
    expect(kinds(f).sort()).toEqual(["host-cpu-saturated", "input-bound"]);
    const host = f.find((x) => x.kind === "host-cpu-saturated") as Finding;
    expect(host.evidence).toMatchObject({ trialCpuCores: 7.6, trialCores: 8, trialCpuPercent: 95 });
    expect(host.advice[0]).toMatch(/num_workers=16 is at or above the 8 cores this trial can have: lower it to about 7/);
    const input = f.find((x) => x.kind === "input-bound") as Finding;
    expect(input.evidence.loaderWaitsOn).toBe("cpu");
    expect(input.advice.join("\n")).toMatch(/not more workers/);
    expect(input.advice.join("\n")).not.toMatch(/past the core count/);
    expect(kinds(diagnose({ trials: [trial({ util: 35, wait: 0.05, mem: 0.7, cpu: 60, own: 4 })], agents: [] }))).toEqual([]);
    // One GPU on the host: all its cores are the trial's, and using them all is enough.
    const alone = trial({ util: 35, wait: 0.45, cpu: 92, own: 1.9, numWorkers: 2, host: { ...smallBox, cpuMeanPercent: 92 } });
    expect(kinds(diagnose({ trials: [alone], agents: [] })).sort()).toEqual(["host-cpu-saturated", "input-bound"]);
  });

  it("host-cpu-saturated rests on the trial's own CPU, not on other processes' load", () => {
    // Other processes keep the host at 97 %; the trial itself uses half a core of its 8.
    const busyNeighbours = trial({ util: 35, wait: 0.45, cpu: 97, own: 0.5, waitCpu: 97, numWorkers: 4 });
    const f = diagnose({ trials: [busyNeighbours], agents: [] });
    expect(kinds(f)).toEqual(["input-bound"]);
    expect(f[0]?.evidence.loaderWaitsOn).toBe("contended");
    // Its own share filled, but the host is not: a one-GPU trial on a two-GPU box could use more cores.
    expect(kinds(diagnose({ trials: [trial({ util: 35, wait: 0.05, mem: 0.7, cpu: 55, own: 7.6 })], agents: [] }))).toEqual([]);
    // An agent that does not measure the trial's CPU: no finding, whatever the host's load.
    expect(kinds(diagnose({ trials: [trial({ util: 35, wait: 0.05, mem: 0.7, cpu: 99 })], agents: [] }))).toEqual([]);
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
