import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TrialEvent, TrialEventOf } from "@rung/protocol";
import { FakeNvidiaSmi, fakeGpu, rung, type TestProcess, uniquePrefix, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { agentOn, concurrency, GPU_TRIAL, mostOnOneGpu, specFile, studyEvents } from "./gpu-helpers.js";

/**
 * `packing: auto` end to end: `rung study run` and a `rung agent` with two fake GPUs on a real
 * nats-server. The trials are test/fixtures/gpu-trial.mjs, which declare their memory and compute to
 * the fake GPU: the agent's telemetry shows what they use, and co-located trials slow down when their
 * compute adds up to more than the GPU has. The coordinator reads that telemetry, as the diagnosis
 * does, and sizes each new order's share of a GPU from it.
 */

const it = meshTest.extend("leakGraceMs", 5000);

const TRIAL = GPU_TRIAL;

function queued(events: TrialEvent[]): TrialEventOf<"queued">[] {
  return events.filter((e): e is TrialEventOf<"queued"> => e.type === "queued");
}

async function output(p: TestProcess, push: (p: TestProcess) => void): Promise<string> {
  push(p);
  await p.exited;
  return p.stdout().toString();
}

describe("packing: auto", () => {
  it("packs small trials several to a GPU once it has seen two alone, and the report says so", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [fakeGpu(0), fakeGpu(1)]);
    procs.push(agentOn(nats.url, prefix, smi));
    // 1.2 GiB of 80 GiB and 10 % of the compute each: a GPU holds eight before it is 80 % busy.
    const file = specFile({
      name: "small",
      command: `${TRIAL} --memory 1200 --compute 0.1 --epochs {max_t} --epoch-ms 500 --quality {q}`,
      env: smi.stateEnv,
      search: { algorithm: "grid", space: { q: { grid: Array.from({ length: 16 }, (_, i) => (i + 1) / 20) } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 8 },
      packing: "auto",
    });
    const run = rung(["study", "run", file, ...flags]);
    procs.push(run);
    expect(await run.exited, run.out()).toBe(0);
    expect(run.stdout().toString()).toMatch(/^packing: \d trials per GPU from t\d{4} on/m);

    const events = await studyEvents(nats.url, prefix, "small");
    const ends = events.filter((e): e is TrialEventOf<"ended"> => e.type === "ended");
    expect(ends.map((e) => e.status)).toEqual(Array(16).fill("completed"));
    // Every order carries its level; the first ones ran alone, later ones shared a GPU.
    const levels = queued(events).map((q) => q.packing?.perGpu);
    expect(levels.every((n) => typeof n === "number")).toBe(true);
    expect(levels[0]).toBe(1);
    expect(Math.max(...(levels as number[]))).toBeGreaterThanOrEqual(2);
    const raised = queued(events).find((q) => q.packing?.step === "raise");
    expect(raised?.packing?.gpuMemoryMiB).toBeGreaterThanOrEqual(1200);
    // More trials ran at once than there are GPUs: without packing, at most one per GPU.
    const c = concurrency(events);
    expect(c.all).toBeGreaterThan(2);
    expect(Math.max(...c.perGpu.values())).toBeGreaterThanOrEqual(2);

    const report = await output(rung(["study", "report", "small", ...flags]), (p) => void procs.push(p));
    expect(report).toMatch(/packing: \d trials per GPU from t\d{4} on \(peak 1\.\d GiB of 80 GiB, busy \d+ %\)/);
    const status = await output(rung(["study", "status", "small", ...flags]), (p) => void procs.push(p));
    expect(status).toMatch(/^packing: \d trials per GPU from t\d{4} on/m);
  }, 120_000);

  it("goes on at the level it reached when its coordinator is killed and run again", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix, "--lease", "3s"];
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [fakeGpu(0), fakeGpu(1)]);
    procs.push(agentOn(nats.url, prefix, smi));
    const file = specFile({
      name: "again",
      command: `${TRIAL} --memory 1200 --compute 0.1 --epochs {max_t} --epoch-ms 500 --quality {q}`,
      env: smi.stateEnv,
      search: { algorithm: "grid", space: { q: { grid: Array.from({ length: 14 }, (_, i) => (i + 1) / 20) } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 8 },
      packing: "auto",
    });
    const first = rung(["study", "run", file, ...flags]);
    procs.push(first);
    await waitFor(
      "an order packed two or more to a GPU",
      async () => queued(await studyEvents(nats.url, prefix, "again")).some((q) => (q.packing?.perGpu ?? 1) >= 2),
      60_000,
      200,
    );
    first.child.kill("SIGKILL");
    await first.exited;
    const before = queued(await studyEvents(nats.url, prefix, "again")).length;
    // The dead coordinator's lease (3 s) must run out before another may take the study.
    await new Promise((r) => setTimeout(r, 3500));
    const second = rung(["study", "run", file, ...flags]);
    procs.push(second);
    expect(await second.exited, second.out()).toBe(0);
    const events = await studyEvents(nats.url, prefix, "again");
    expect(events.filter((e) => e.type === "ended")).toHaveLength(14);
    const all = queued(events);
    expect(new Set(all.map((q) => `${q.trial}.${q.attempt}`)).size).toBe(all.length);
    // Read back from the `queued` events: the restarted coordinator does not start observing again.
    const after = all.slice(before);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((q) => (q.packing?.perGpu ?? 1) >= 2)).toBe(true);
  }, 120_000);

  it("packs one-epoch attempts (promotion) of trials that use no GPU memory past two per GPU, and ends", async ({
    nats,
    procs,
  }) => {
    // Found on a real GPU: promotion-based ASHA runs most attempts for one epoch, which left packing
    // with no epoch times to judge a level by (it stayed at two per GPU); and a trial whose GPU showed
    // no memory of its own got orders asking for 0 MiB, which every reader refused, and the study waited.
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [fakeGpu(0), fakeGpu(1)]);
    procs.push(agentOn(nats.url, prefix, smi));
    const file = specFile({
      name: "short",
      command: `${TRIAL} --memory 0 --compute 0.05 --startup-ms 2500 --epochs {max_t} --epoch-ms 300 --quality {q}`,
      env: smi.stateEnv,
      search: { algorithm: "grid", space: { q: { grid: Array.from({ length: 16 }, (_, i) => (i + 1) / 20) } } },
      // Every attempt reports once: the first at epoch 1 pauses, a promoted one resumes to epoch 2.
      scheduler: { type: "promotion", time_attr: "epoch", grace_period: 1, reduction_factor: 2, max_t: 2 },
      // What is tested is that each level is judged at all; the slowdown rule has its own tests, and a
      // machine busy with other work may slow packed start-ups (the rule would rightly back off).
      packing: { mode: "auto", slowdown: 10 },
    });
    const run = rung(["study", "run", file, ...flags]);
    procs.push(run);
    const code = await Promise.race([run.exited, new Promise<string>((r) => setTimeout(() => r("still running"), 90_000))]);
    expect(code, run.out()).toBe(0);
    const events = await studyEvents(nats.url, prefix, "short");
    expect(events.filter((e) => e.type === "rejected")).toEqual([]);
    const levels = queued(events).map((q) => q.packing?.perGpu ?? 0);
    expect(Math.max(...levels)).toBeGreaterThanOrEqual(4);
    const raised = queued(events).filter((q) => q.packing?.step === "raise");
    expect(raised.length).toBeGreaterThan(0);
    expect(raised.every((q) => q.packing?.gpuMemoryMiB === null)).toBe(true);
    expect(raised.some((q) => /first reports/.test(q.packing?.why ?? ""))).toBe(true);
    expect(mostOnOneGpu(events)).toBeGreaterThanOrEqual(3);
  }, 120_000);

  it("keeps trials that fill a GPU's compute at one per GPU, and says why", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [fakeGpu(0), fakeGpu(1)]);
    procs.push(agentOn(nats.url, prefix, smi));
    const file = specFile({
      name: "heavy",
      command: `${TRIAL} --memory 2000 --compute 0.9 --epochs {max_t} --epoch-ms 500 --quality {q}`,
      env: smi.stateEnv,
      search: { algorithm: "grid", space: { q: { grid: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 8 },
      packing: { mode: "auto", target_busy: 0.8 },
    });
    const run = rung(["study", "run", file, ...flags]);
    procs.push(run);
    expect(await run.exited, run.out()).toBe(0);

    const events = await studyEvents(nats.url, prefix, "heavy");
    expect(queued(events).every((q) => q.packing?.perGpu === 1)).toBe(true);
    expect(queued(events).some((q) => q.packing?.step === "hold")).toBe(true);
    expect(mostOnOneGpu(events)).toBe(1);
    const report = await output(rung(["study", "report", "heavy", ...flags]), (p) => void procs.push(p));
    expect(report).toMatch(/packing: 1 trial per GPU \(busy \d+ % alone: 2 per GPU would be \d+ %, over the 80 % target\)/);
  }, 120_000);
});
