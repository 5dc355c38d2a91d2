import { describe, expect, it } from "vitest";
import { agentRegistry, parseMetricsAddress } from "./metrics.js";
import { compileAgentOptions } from "./options.js";

describe("--metrics-port", () => {
  it("takes a port (loopback only) or HOST:PORT, and says in one sentence what else it wants", () => {
    expect(parseMetricsAddress("9400")).toEqual({ host: "127.0.0.1", port: 9400 });
    expect(parseMetricsAddress("0.0.0.0:9400")).toEqual({ host: "0.0.0.0", port: 9400 });
    expect(parseMetricsAddress("127.0.0.1:9400")).toEqual({ host: "127.0.0.1", port: 9400 });
    expect(parseMetricsAddress("[::1]:9400")).toEqual({ host: "::1", port: 9400 });
    expect(() => compileAgentOptions({ insecure: true, metricsPort: "nine" })).toThrow(
      '--metrics-port: expects a port (9400) or HOST:PORT (127.0.0.1:9400), got "nine"',
    );
    expect(() => parseMetricsAddress("70000")).toThrow(/--metrics-port/);
    expect(compileAgentOptions({ insecure: true }).metrics).toBeNull();
  });
});

describe("the agent's /metrics", () => {
  it("shows each GPU's reading, the study on it and its data wait, and the claim loop's counters", async () => {
    const registry = agentRegistry({
      agent: "box1",
      gpus: () => [
        {
          index: 0,
          uuid: "GPU-0",
          utilizationGpu: 87,
          utilizationMemory: 40,
          memoryUsedMiB: 1024,
          memoryTotalMiB: 24_576,
          powerW: 250,
          temperatureC: 60,
          smClockMHz: 1700,
          study: "digits",
          trial: "t0001",
        },
        {
          index: 1,
          uuid: "GPU-1",
          utilizationGpu: 0,
          utilizationMemory: 0,
          memoryUsedMiB: 0,
          memoryTotalMiB: 24_576,
          powerW: 30,
          temperatureC: 40,
          smClockMHz: 300,
          study: null,
          trial: null,
        },
      ],
      dataWait: (i) => (i === 0 ? 0.25 : null),
      running: () => 1,
      counters: () => ({ ordersClaimed: 3, ordersRejected: 1, reports: 27, claimsLost: 0 }),
    });
    await registry.getSingleMetric("rung_agent_gpus")?.get();
    const text = await registry.metrics();
    expect(text).toContain('rung_gpu_utilization_percent{gpu="0",agent="box1"} 87');
    expect(text).toContain('rung_gpu_utilization_percent{gpu="1",agent="box1"} 0');
    expect(text).toContain(`rung_gpu_memory_used_bytes{gpu="0",agent="box1"} ${1024 * 1024 * 1024}`);
    // The study, never the trial: a label per trial would make a series per trial.
    expect(text).toContain('rung_gpu_trial{gpu="0",study="digits",agent="box1"} 1');
    expect(text).not.toMatch(/trial="/);
    expect(text).toContain('rung_gpu_data_wait_ratio{gpu="0",agent="box1"} 0.25');
    expect(text).not.toContain('rung_gpu_data_wait_ratio{gpu="1"');
    expect(text).toContain('rung_trials_running{agent="box1"} 1');
    // Trials whose process runs: an attempt still finishing after its trial exited is not one.
    expect(text).toContain("# HELP rung_trials_running trials whose process is running on this agent");
    expect(text).toContain('rung_agent_orders_claimed_total{agent="box1"} 3');
    expect(text).toContain('rung_agent_reports_total{agent="box1"} 27');
  });
});
