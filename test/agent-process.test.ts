import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { listAdverts } from "@rung/agent";
import { type AgentAdvert, decode, type Telemetry, TelemetrySchema } from "@rung/protocol";
import { exitOf, FakeNvidiaSmi, fakeGpu, pidAlive, RUNG_BIN, rungAgent, type TestProcess, waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { it, type Mesh, makeOrder, NODE, writeTrials } from "./agent-helpers.js";

/**
 * The agent as users run it: `rung agent` processes (the built CLI), killed with -9, frozen with
 * SIGSTOP, stopped with SIGTERM.
 */

const run = promisify(execFile);

/** A `rung agent` of the mesh, logging at info; killed (SIGKILL) with the mesh if the test leaves it running. */
function agentProcess(m: Mesh, name: string, ...extra: string[]): TestProcess {
  const p = rungAgent(m.url, m.names.prefix, {
    name,
    stateDir: join(m.dir, "state", name),
    workdir: m.dir,
    fakeGpus: null,
    stopGrace: "1s",
    flags: extra,
    env: { RUNG_LOG_LEVEL: process.env.RUNG_LOG_LEVEL ?? "info" },
    stopSignal: "SIGKILL",
  });
  m.procs.push(p);
  return p;
}

async function advertOf(m: Mesh, name: string): Promise<AgentAdvert | undefined> {
  return (await listAdverts(m.nc, m.names)).find((a) => a.agent === name);
}

// Real agent processes with several waits each: on a loaded 2-core machine a test can take over a minute.
describe("rung agent processes", { timeout: 150_000 }, () => {
  it("kill -9 mid-trial: a second agent runs attempt 2, the trial ends once, the dead advert expires", async ({ newMesh }) => {
    const m = await newMesh({ advertTtlMs: 5000 });
    const t = writeTrials(m.dir);
    const a = agentProcess(m, "doomed", "--fake-gpus", "1");
    await waitFor("the first agent's advert", () => advertOf(m, "doomed"), 15_000);
    await m.publish(makeOrder({ study: "k", trial: "survivor", argv: [NODE, t.sleep, "60000", "300"] }));
    const started = await m.events.wait("started", "survivor");
    expect(started).toMatchObject({ attempt: 1, agent: "doomed" });
    a.child.kill("SIGKILL");
    await exitOf(a.child);
    // Its trial loses its terminal and goes with it.
    await waitFor("the orphaned trial to end", () => !pidAlive(started.pid), 5000);

    const b = agentProcess(m, "heir", "--fake-gpus", "1");
    const done = await m.events.wait("finished", "survivor", 20_000);
    expect(done).toMatchObject({ attempt: 2, agent: "heir", status: "completed" });
    expect(m.events.of("claimed", "survivor").map((e) => [e.attempt, e.agent])).toEqual([
      [1, "doomed"],
      [2, "heir"],
    ]);
    // The dead agent's advert is gone by TTL; the live one's is there.
    await waitFor("the dead agent's advert to expire", async () => (await advertOf(m, "doomed")) === undefined, 10_000);
    expect(await advertOf(m, "heir")).toBeDefined();
    await new Promise((r) => setTimeout(r, 500));
    expect(m.events.of("finished", "survivor")).toHaveLength(1);

    // SIGTERM: a clean exit that deletes the advert at once.
    b.child.kill("SIGTERM");
    expect(await exitOf(b.child)).toEqual({ code: 0, signal: null });
    expect(await advertOf(m, "heir")).toBeUndefined();
  });

  it("a frozen agent loses its claim: the trial moves on, the frozen one reports claim-lost when it wakes", async ({
    newMesh,
  }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    const a = agentProcess(m, "sleepy", "--fake-gpus", "1");
    await waitFor("the first agent's advert", () => advertOf(m, "sleepy"), 15_000);
    await m.publish(makeOrder({ study: "z", trial: "frozen", argv: [NODE, t.sleep, "60000", "300"] }));
    const started = await m.events.wait("started", "frozen");
    a.child.kill("SIGSTOP");
    agentProcess(m, "awake", "--fake-gpus", "1");
    const second = await m.events.wait("finished", "frozen", 20_000, (e) => e.attempt === 2);
    expect(second).toMatchObject({ agent: "awake", status: "completed" });
    a.child.kill("SIGCONT");
    const lost = await m.events.wait("finished", "frozen", 10_000, (e) => e.attempt === 1);
    expect(lost).toMatchObject({ agent: "sleepy", status: "stopped", reason: "claim-lost" });
    await waitFor("the frozen agent's trial to be killed", () => !pidAlive(started.pid), 5000);
    a.child.kill("SIGTERM");
    expect((await exitOf(a.child)).code).toBe(0);
    expect(a.stderr()).toMatch(/claim lost/);
  });

  it("with the fake nvidia-smi ([N/A] fields): inventory, telemetry with nulls, rung agents", async ({ newMesh }) => {
    const m = await newMesh();
    const smi = new FakeNvidiaSmi(join(m.dir, "smi"), [
      fakeGpu(0, { utilizationGpu: 87, memoryUsedMiB: 40000 }),
      fakeGpu(1, { powerW: "[N/A]", smClockMHz: "[Not Supported]", utilizationMemory: "[N/A]" }),
      fakeGpu(2),
    ]);
    const samples: Telemetry[] = [];
    const sub = m.nc.subscribe(m.names.subjects.telemetry("smi"));
    void (async () => {
      for await (const msg of sub) {
        const r = decode(TelemetrySchema, msg.data);
        if (r.ok) samples.push(r.value);
      }
    })();
    const a = agentProcess(m, "smi", "--nvidia-smi", smi.path, "--gpus", "0,1", "--label", "zone=test");
    const advert = await waitFor("the advert", () => advertOf(m, "smi"), 15_000);
    expect(advert.gpus.map((g) => [g.index, g.name, g.memoryTotalMiB, g.fake])).toEqual([
      [0, "NVIDIA H100 80GB HBM3", 81559, false],
      [1, "NVIDIA H100 80GB HBM3", 81559, false],
    ]);
    expect(advert.labels).toEqual({ zone: "test" });
    const gpu = await waitFor(
      "a GPU sample with readings",
      () => samples.find((s) => s.type === "gpu" && s.gpus[0]?.utilizationGpu === 87),
      10_000,
    );
    if (gpu.type !== "gpu") throw new Error("expected a gpu sample");
    expect(gpu.fake).toBe(false);
    expect(gpu.gpus.map((g) => g.index)).toEqual([0, 1]);
    expect(gpu.gpus[0]).toMatchObject({ memoryUsedMiB: 40000, powerW: 69.82, smClockMHz: 345, study: null, trial: null });
    expect(gpu.gpus[1]).toMatchObject({ powerW: null, smClockMHz: null, utilizationMemory: null, temperatureC: 31 });

    const table = await run(NODE, [RUNG_BIN, "agents", "--nats", m.url, "--prefix", m.names.prefix]);
    expect(table.stdout).toMatch(/^AGENT\s+GPU\s+MODEL/);
    expect(table.stdout).toMatch(/smi\s+1\s+NVIDIA H100 80GB HBM3/);
    const json = await run(NODE, [RUNG_BIN, "agents", "--json", "--nats", m.url, "--prefix", m.names.prefix]);
    expect((JSON.parse(json.stdout) as AgentAdvert[]).map((x) => x.agent)).toEqual(["smi"]);

    sub.unsubscribe();
    a.child.kill("SIGTERM");
    expect((await exitOf(a.child)).code).toBe(0);
  });

  it("restarts a dying nvidia-smi child with backoff and keeps sampling", async ({ newMesh }) => {
    const m = await newMesh();
    const smi = new FakeNvidiaSmi(join(m.dir, "smi"), 1);
    smi.set({ dieAfterTicks: 2 });
    const samples: Telemetry[] = [];
    const sub = m.nc.subscribe(m.names.subjects.telemetry("flaky"));
    void (async () => {
      for await (const msg of sub) {
        const r = decode(TelemetrySchema, msg.data);
        if (r.ok) samples.push(r.value);
      }
    })();
    const agent = await m.agent({
      name: "flaky",
      fakeGpus: 0,
      nvidiaSmi: smi.path,
      telemetryInterval: "200ms",
      hostInterval: "300ms",
    });
    await waitFor("nvidia-smi to be restarted", () => agent.counters.nvidiaSmiRestarts >= 2, 10_000);
    expect(agent.state).toBe("running");
    const host = await waitFor("a host sample", () => samples.find((s) => s.type === "host"), 5000);
    expect(host).toMatchObject({ agent: "flaky", cpuCores: expect.any(Number) });
    if (host.type === "host") {
      expect(host.memoryUsedBytes).toBeGreaterThan(0);
      expect(host.cpuLoadPercent).toBeGreaterThanOrEqual(0);
    }
    sub.unsubscribe();
  });
});
