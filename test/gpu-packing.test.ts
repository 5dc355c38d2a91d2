import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TrialEvent, TrialEventOf } from "@rung/protocol";
import { FakeNvidiaSmi, fakeGpu, fakeMigInstance, rung, type TestProcess, uniquePrefix, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { agentOn, concurrency, GPU_TRIAL, specFile, studyEvents } from "./gpu-helpers.js";

/**
 * Several trials per GPU, MIG instances and out-of-memory retries, end to end: `rung study run` and
 * `rung agent` processes on a real nats-server; only the GPU is faked, by the fake nvidia-smi whose
 * processes are the trials themselves (test/fixtures/gpu-trial.mjs registers its memory and compute).
 */

const it = meshTest.extend("leakGraceMs", 5000);

const TRIAL = GPU_TRIAL;

function ended(events: TrialEvent[]): TrialEventOf<"ended">[] {
  return events.filter((e): e is TrialEventOf<"ended"> => e.type === "ended");
}

describe("several trials per GPU", () => {
  it("packs shares onto a GPU as far as its share and its free memory now allow, and shows them in rung agents", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [
      fakeGpu(0, { memoryTotalMiB: 40_960 }),
      fakeGpu(1, { memoryTotalMiB: 40_960 }),
    ]);
    // A process that is not Rung's holds 20 000 MiB of GPU 0: two 8 GiB trials fit beside it, not four.
    smi.addProcess(process.pid, [{ uuid: fakeGpu(0).uuid, memoryMiB: 20_000, compute: 0 }]);
    procs.push(agentOn(nats.url, prefix, smi));
    const file = specFile({
      name: "pack",
      // Four trials of 0.4 compute on one GPU want 160 %: each gets 25 %, and says so in `allotted`.
      command: `${TRIAL} --memory 8000 --compute 0.4 --epochs {max_t} --epoch-ms 400 --quality {q}`,
      env: smi.stateEnv,
      search: { algorithm: "grid", space: { q: { grid: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 6 },
      resources: { gpus: 0.25, gpu_memory: "8GiB" },
    });
    const run = rung(["study", "run", file, ...flags]);
    procs.push(run);
    // While it runs, `rung agents` shows the shares in use and the trials sharing a GPU.
    let table = "";
    await waitFor(
      "rung agents to show a GPU shared by trials",
      async () => {
        const agents = rung(["agents", ...flags]);
        procs.push(agents);
        await agents.exited;
        table = agents.stdout().toString();
        return /SHARE/.test(table) && /pack\/\S+ \(0\.25\), pack\/\S+ \(0\.25\)/.test(table);
      },
      30_000,
      300,
    );
    expect(table).toMatch(/box\s+[01]\s.*\s(50|75|100)%\s+pack\//);
    expect(await run.exited, run.out()).toBe(0);

    const events = await studyEvents(nats.url, prefix, "pack");
    expect(ended(events).map((e) => e.status)).toEqual(Array(8).fill("completed"));
    const peak = concurrency(events).perGpu;
    // GPU 0: its free memory (20 960 MiB) holds two declared 8 GiB trials; GPU 1: its share holds four.
    expect(peak.get(0)).toBeLessThanOrEqual(2);
    expect(peak.get(1)).toBeLessThanOrEqual(4);
    expect(Math.max(...peak.values())).toBeGreaterThanOrEqual(3);
    // The fake GPU is honest about oversubscription: trials that shared a GPU got less than they asked.
    const allotted = events.flatMap((e) => (e.type === "report" ? [e.metrics.allotted as number] : []));
    expect(allotted.every((a) => a <= 0.4)).toBe(true);
    expect(Math.min(...allotted)).toBeLessThan(0.4);

    // The report charges each trial the quarter of a GPU it held, not a whole one: its GPU time is what
    // the trials ran times 0.25, and no more than the two GPUs had in the study's wall time.
    const report = rung(["study", "report", "pack", "--json", ...flags]);
    procs.push(report);
    expect(await report.exited, report.out()).toBe(0);
    const gpuTime = (JSON.parse(report.stdout().toString()) as { gpuTime: { completedGpuS: number } }).gpuTime;
    const started = new Map(events.flatMap((e) => (e.type === "started" ? [[e.trial, e.ts] as const] : [])));
    const ran = ended(events).reduce((sum, e) => sum + (e.ts - (started.get(e.trial) ?? e.ts)) / 1000, 0);
    const wall = (Math.max(...ended(events).map((e) => e.ts)) - Math.min(...started.values())) / 1000;
    expect(gpuTime.completedGpuS).toBeGreaterThan(0);
    expect(gpuTime.completedGpuS).toBeLessThanOrEqual(ran * 0.25 * 1.02);
    expect(gpuTime.completedGpuS).toBeGreaterThanOrEqual(ran * 0.25 * 0.9);
    expect(gpuTime.completedGpuS).toBeLessThanOrEqual(wall * 2);
  }, 120_000);

  it("offers a GPU in MIG mode as its instances and runs trials on them by UUID", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    const mig = [fakeMigInstance(0, 0, "3g.40gb"), fakeMigInstance(0, 1, "1g.10gb")];
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [fakeGpu(0, { mig })]);
    procs.push(agentOn(nats.url, prefix, smi));
    await waitFor(
      "the agent's advert",
      async () => {
        const agents = rung(["agents", "--json", ...flags]);
        procs.push(agents);
        await agents.exited;
        const adverts = JSON.parse(agents.stdout().toString() || "[]") as {
          gpus: { index: number; uuid: string; memoryTotalMiB: number; mig?: { computeShare: number } }[];
        }[];
        const gpus = adverts[0]?.gpus ?? [];
        if (gpus.length === 0) return false;
        expect(gpus.map((g) => [g.index, g.uuid, g.memoryTotalMiB, g.mig?.computeShare])).toEqual([
          // 97.5 % of the profile's figure (a real 1g.10gb has about 9.75 GiB).
          [100, mig[0]?.uuid, 39_936, 3 / 7],
          [101, mig[1]?.uuid, 9_984, 1 / 7],
        ]);
        return true;
      },
      20_000,
      300,
    );
    const file = specFile({
      name: "mig",
      command: `${TRIAL} --memory 4000 --compute 0.5 --epochs {max_t} --epoch-ms 300 --quality {q}`,
      env: smi.stateEnv,
      search: { algorithm: "grid", space: { q: { grid: [0.1, 0.2, 0.3, 0.4] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 3 },
      resources: { gpus: 1 },
    });
    const run = rung(["study", "run", file, ...flags]);
    procs.push(run);
    expect(await run.exited, run.out()).toBe(0);
    const events = await studyEvents(nats.url, prefix, "mig");
    expect(ended(events).map((e) => e.status)).toEqual(Array(4).fill("completed"));
    const used = new Set(events.flatMap((e) => (e.type === "started" ? e.gpus : [])));
    expect([...used].every((g) => g === 100 || g === 101)).toBe(true);
    // Each instance runs one whole-GPU trial at a time: the study used both side by side.
    const peak = concurrency(events).perGpu;
    expect(peak.get(100)).toBe(1);
    expect(peak.get(101)).toBe(1);
    // The trial found its instance by the UUID in CUDA_VISIBLE_DEVICES (it prints where it runs).
    const logs = rung(["logs", "mig/t0001", ...flags]);
    procs.push(logs);
    await logs.exited;
    expect(logs.stdout().toString()).toMatch(/on MIG-/);
  }, 90_000);
});

describe("memory that never fits", () => {
  it("refuses an order that declares more memory than any GPU here has, and the trial fails saying why", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [fakeGpu(0, { memoryTotalMiB: 40_960 })]);
    procs.push(agentOn(nats.url, prefix, smi));
    const file = specFile({
      name: "toobig",
      command: `${TRIAL} --memory 1000 --epochs {max_t} --quality {q}`,
      env: smi.stateEnv,
      search: { algorithm: "grid", space: { q: { grid: [0.5] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 2 },
      resources: { gpus: 0.5, gpu_memory: "100GiB" },
    });
    const run = rung(["study", "run", file, ...flags]);
    procs.push(run);
    await run.exited;
    const [end] = ended(await studyEvents(nats.url, prefix, "toobig"));
    expect(end?.status).toBe("failed");
    expect(end?.reason).toBe(
      "no agent can run it — refused by every live agent: box (cannot-run: it declares gpu_memory 102400 MiB and the largest GPU here has 40960 MiB)",
    );
  }, 60_000);
});

describe("out of GPU memory", () => {
  it("retries a trial that ran out of memory sharing a GPU alone on a whole one, without using a retry", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [fakeGpu(0, { memoryTotalMiB: 24_576 })]);
    procs.push(agentOn(nats.url, prefix, smi));
    // Each declares 4 GiB and starts with 4 000 MiB, then its batch grows by 18 000 MiB at epoch 2:
    // beside the other trial the GPU's 24 GiB is overcommitted; alone it fits.
    const file = specFile({
      name: "grow",
      command: `${TRIAL} --memory 4000 --grow-at 2 --grow 18000 --compute 0.3 --epochs {max_t} --epoch-ms 500 --quality {q}`,
      env: smi.stateEnv,
      search: { algorithm: "grid", space: { q: { grid: [0.3, 0.6] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 3 },
      resources: { gpus: 0.5, gpu_memory: "4GiB" },
      retries: 0,
    });
    const run = rung(["study", "run", file, ...flags]);
    procs.push(run);
    expect(await run.exited, run.out()).toBe(0);
    const events = await studyEvents(nats.url, prefix, "grow");
    expect(ended(events).map((e) => e.status)).toEqual(["completed", "completed"]);
    const oom = events.filter((e): e is TrialEventOf<"finished"> => e.type === "finished" && e.status === "oom");
    expect(oom.length).toBeGreaterThanOrEqual(1);
    expect(oom[0]?.reason).toMatch(/^out of GPU memory \(exit code 1\): torch\.cuda\.OutOfMemoryError: CUDA out of memory/);
    // The retry ran alone: no other attempt held the GPU while it ran.
    for (const o of oom) {
      const next = events.find((e) => e.type === "started" && e.trial === o.trial && e.attempt > o.attempt);
      const nextEnd = events.find((e) => e.type === "finished" && e.trial === o.trial && e.attempt > o.attempt);
      expect(next).toBeDefined();
      const overlapping = events.filter(
        (e) =>
          e.type === "started" &&
          e.trial !== o.trial &&
          e.ts < (nextEnd?.ts ?? 0) &&
          (events.find((f) => f.type === "finished" && f.trial === e.trial && f.attempt === e.attempt)?.ts ?? 0) >
            (next?.ts ?? 0),
      );
      expect(overlapping).toEqual([]);
    }
  }, 90_000);

  /** One trial that allocates 30,000 MiB on a 24,576 MiB GPU: it runs out of memory on every attempt. */
  async function tooBig(url: string, prefix: string, procs: TestProcess[], name: string, extra: Record<string, unknown>) {
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [fakeGpu(0, { memoryTotalMiB: 24_576 })]);
    procs.push(agentOn(url, prefix, smi));
    const file = specFile({
      name,
      command: `${TRIAL} --memory 30000 --epochs {max_t} --quality {q}`,
      env: smi.stateEnv,
      search: { algorithm: "grid", space: { q: { grid: [0.5] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 2 },
      ...extra,
    });
    const run = rung(["study", "run", file, "--nats", url, "--prefix", prefix]);
    procs.push(run);
    await run.exited;
    return studyEvents(url, prefix, name);
  }

  it("fails a trial that runs out of memory even alone on a device as big, naming it in one sentence", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    const events = await tooBig(nats.url, prefix, procs, "huge", { resources: { gpus: 0.5 }, retries: 2 });
    const [end] = ended(events);
    expect(end?.status).toBe("failed");
    expect(end?.reason).toMatch(
      /^ran out of GPU memory even alone on GPU 0 of box \(NVIDIA H100 80GB HBM3, 24576 MiB\) \(attempt 2 on box: out of GPU memory .*\); lower its batch size or model size, or run it on GPUs with more memory$/,
    );
    // Two attempts: sharing, then alone (no retry used); running out of memory alone is not retried.
    expect(events.filter((e) => e.type === "started")).toHaveLength(2);
    const status = rung(["study", "status", "huge", "--nats", nats.url, "--prefix", prefix]);
    procs.push(status);
    await status.exited;
    expect(status.out()).toMatch(/ran out of GPU memory even alone on GPU 0 of box/);
  }, 60_000);

  it("counts a whole GPU's out-of-memory exit as a failure that uses a retry, as before shares", async ({ nats, procs }) => {
    const events = await tooBig(nats.url, uniquePrefix(), procs, "whole", { resources: { gpus: 1 }, retries: 1 });
    const [end] = ended(events);
    expect(end?.status).toBe("failed");
    expect(end?.reason).toMatch(
      /^failed after 2 attempt\(s\): out of GPU memory \(exit code 1\): torch\.cuda\.OutOfMemoryError: CUDA out of memory/,
    );
    expect(events.filter((e) => e.type === "started")).toHaveLength(2);
  }, 60_000);
});
