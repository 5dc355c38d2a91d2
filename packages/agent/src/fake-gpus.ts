import type { GpuInfo } from "@rung/protocol";
import type { GpuReading } from "./nvidia-smi.js";

/**
 * Simulated GPUs (`--fake-gpus N`) for machines without one: `rung demo` and the tests. A fake GPU is
 * honest about what it cannot know. Its utilization follows the trial on it — the busy share the trial
 * itself reported, `compute_s / (compute_s + data_wait_s)`, with a little noise — about 5 % while a
 * trial runs but has not reported yet, and 0 when no trial runs. So an input-bound trial looks
 * input-bound here too, as it would on a real GPU.
 */

export const FAKE_GPU_NAME = "Rung simulated GPU";
const FAKE_MEMORY_MIB = 24_576;

export function fakeGpuInfos(agent: string, count: number): GpuInfo[] {
  return Array.from({ length: count }, (_, index) => ({
    index,
    uuid: `GPU-fake-${agent}-${index}`,
    name: FAKE_GPU_NAME,
    memoryTotalMiB: FAKE_MEMORY_MIB,
    driver: "simulated",
    fake: true,
  }));
}

/** What the fake knows about the trial on a GPU: whether one runs, and its last reported busy share. */
export interface FakeLoad {
  running: boolean;
  /** compute_s / (compute_s + data_wait_s) of the latest report, 0..1; null before the first one. */
  busyShare: number | null;
}

export function fakeReading(gpu: GpuInfo, load: FakeLoad, random: () => number = Math.random): GpuReading {
  let util = 0;
  if (load.running) {
    const base = load.busyShare === null ? 5 : 100 * load.busyShare;
    util = Math.round(Math.min(100, Math.max(0, base + (random() * 6 - 3))));
  }
  // Memory in use: a framework's footprint once a trial runs, growing with how busy it keeps the GPU.
  const memoryUsedMiB = load.running ? Math.round(gpu.memoryTotalMiB * (0.15 + 0.5 * (util / 100))) : 0;
  return {
    index: gpu.index,
    uuid: gpu.uuid,
    utilizationGpu: util,
    utilizationMemory: load.running ? Math.round(util * 0.6) : 0,
    memoryUsedMiB,
    memoryTotalMiB: gpu.memoryTotalMiB,
    powerW: load.running ? Math.round(60 + 2.4 * util) : 30,
    temperatureC: load.running ? Math.round(35 + 0.4 * util) : 30,
    smClockMHz: load.running ? 1755 : 210,
  };
}
