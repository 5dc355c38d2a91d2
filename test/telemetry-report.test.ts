import { compileSpec, readTelemetry, specHash, specToInput } from "@rung/coordinator";
import { type AgentAdvert, encode, type StudyRecord, type TrialEvent } from "@rung/protocol";
import { uniquePrefix } from "@rung/testkit";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { cli, gpuMessage, gpuSample, trialEvent } from "./telemetry-helpers.js";

/** `rung study report` against a real nats-server: a study, its events, telemetry and an advert, written by hand. */

describe("rung study report", () => {
  it("joins the study's events with its telemetry window and the adverts, as JSON and Markdown", async ({ mesh, procs }) => {
    const { names, js, resources: res } = mesh;
    const spec = compileSpec({
      name: "digits",
      command: "python3 train.py --lr {lr} --epochs {max_t}",
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { lr: { grid: [0.1, 0.01] } } },
      scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 3 },
      resources: { gpus: 1 },
    });
    const t0 = Date.now() - 600_000;
    const record: StudyRecord = {
      v: 1,
      type: "study",
      name: "digits",
      spec: specToInput(spec),
      specHash: specHash(spec),
      createdAt: t0,
      state: "completed",
      updatedAt: t0,
    };
    await res.studies.put(names.subjects.studyKey("digits"), encode(record));
    const advert: AgentAdvert = {
      v: 1,
      type: "advert",
      agent: "box1",
      state: "running",
      host: { hostname: "box1", cpuModel: "x", cpuCores: 8, memoryTotalBytes: 1, os: "linux" },
      gpus: [],
      cpuSlots: 0,
      freeGpus: 2,
      freeCpuSlots: 0,
      labels: {},
      pricePerGpuHour: 3,
      version: "0.1.0",
      startedAt: t0,
      updatedAt: Date.now(),
    };
    await res.agents.put(names.subjects.agentKey("box1"), encode(advert));

    // t1 (gpu0) is starved: GPU 20 %, 80 % data wait, 0 workers. t2 (gpu1) is healthy and stopped at rung 1.
    const evs: TrialEvent[] = [];
    const at = (s: number) => t0 + s * 1000;
    for (const [trial, gpu, lr] of [
      ["t1", 0, 0.1],
      ["t2", 1, 0.01],
    ] as const) {
      evs.push(trialEvent("created", "digits", trial, at(0), { params: { lr }, bracket: 0 }));
      evs.push(trialEvent("queued", "digits", trial, at(0), { attempt: 1 }));
      evs.push(trialEvent("claimed", "digits", trial, at(1), { attempt: 1, agent: "box1", gpus: [gpu] }));
      evs.push(trialEvent("started", "digits", trial, at(1), { attempt: 1, agent: "box1", pid: 1, gpus: [gpu] }));
    }
    for (let e = 1; e <= 3; e++)
      evs.push(
        trialEvent("report", "digits", "t1", at(e * 60), {
          attempt: 1,
          agent: "box1",
          seq: e,
          metrics: { epoch: e, val_acc: 0.9 + e / 100, data_wait_s: 48, compute_s: 12, num_workers: 0 },
        }),
      );
    evs.push(
      trialEvent("report", "digits", "t2", at(60), {
        attempt: 1,
        agent: "box1",
        seq: 1,
        metrics: { epoch: 1, val_acc: 0.5, data_wait_s: 2, compute_s: 58 },
      }),
    );
    evs.push(
      trialEvent("decision", "digits", "t2", at(60), {
        attempt: 1,
        seq: 1,
        t: 1,
        value: 0.5,
        decision: "STOP",
        by: "asha",
        rung: 1,
        cutoff: 0.9,
      }),
    );
    for (const [trial, s, status] of [
      ["t2", 61, "stopped"],
      ["t1", 181, "completed"],
    ] as const) {
      evs.push(
        trialEvent("finished", "digits", trial, at(s), {
          attempt: 1,
          agent: "box1",
          status,
          exitCode: 0,
          signal: null,
          reason: status,
          logTail: [],
        }),
      );
      evs.push(trialEvent("ended", "digits", trial, at(s), { status, reason: status, attempts: 1 }));
    }
    evs.sort((a, b) => a.ts - b.ts);
    for (const e of evs) await js.publish(names.subjects.eventSubject(e), encode(e));
    // Telemetry: one message a second from before the study to after it; another agent's samples too.
    for (let s = -30; s <= 220; s++) {
      const g0 = s >= 1 && s < 181 ? gpuSample(0, 20, "digits", "t1") : gpuSample(0, 0, null, null);
      const g1 = s >= 1 && s < 61 ? gpuSample(1, 95, "digits", "t2") : gpuSample(1, 0, null, null);
      await js.publish(names.subjects.telemetry("box1"), encode({ ...gpuMessage("box1", at(s), [g0, g1]), fake: false }));
      await js.publish(names.subjects.telemetry("other"), encode(gpuMessage("other", at(s), [gpuSample(0, 99, "x", "y")])));
      if (s % 5 === 0)
        await js.publish(
          names.subjects.telemetry("box1"),
          encode({
            v: 1,
            type: "host",
            agent: "box1",
            ts: at(s),
            cpuLoadPercent: 40,
            cpuCores: 8,
            memoryUsedBytes: 1,
            memoryTotalBytes: 2,
          }),
        );
    }

    const json = cli(["study", "report", "digits", "--json", ...mesh.flags]);
    const md = cli(["study", "report", "digits", "--md", ...mesh.flags]);
    const text = cli(["study", "report", "digits", ...mesh.flags]);
    procs.push(json, md, text);
    expect(await json.exited, json.stderr()).toBe(0);
    const r = JSON.parse(json.stdout().toString());
    expect(r.best).toMatchObject({ trial: "t1", value: 0.93, params: { lr: 0.1 } });
    expect(r.funnel).toEqual([
      { milestone: 1, trials: 2 },
      { milestone: 3, trials: 1 },
    ]);
    expect(r.gpuTime).toMatchObject({ completedGpuS: 180, stoppedGpuS: 60 });
    // box1's two GPUs over the study's 182 samples (0..181 s): 180 + 60 busy, the rest idle.
    const box1 = r.agents.find((a: { agent: string }) => a.agent === "box1");
    expect(box1).toMatchObject({ observedGpuSeconds: 364, busyGpuSeconds: 240, idleGpuSeconds: 124, pricePerGpuHour: 3 });
    expect(r.cost.total).toBeCloseTo((364 / 3600) * 3, 6);
    expect(
      r.findings.map((f: { kind: string; trial: string | null; agent: string | null }) => `${f.kind}:${f.trial ?? f.agent}`),
    ).toEqual(["input-bound:t1", "idle-gpus:box1"]);
    expect(r.findings[0].evidence).toMatchObject({
      meanUtilization: 20,
      dataWaitShare: 0.8,
      numWorkers: 0,
      hostCores: 8,
      hostGpus: 2,
    });

    expect(await md.exited, md.stderr()).toBe(0);
    const mdText = md.stdout().toString();
    expect(mdText).toContain("## Rung study report: `digits`");
    expect(mdText).toMatch(/1\. \*\*critical · input-bound\*\* — t1 is input-bound: GPU 20% busy/);
    expect(mdText).toContain("raise DataLoader num_workers from 0 to about 3 (the host has 8 CPU cores for 2 GPUs;");
    expect(mdText).toContain("| 1 | t1 | 0.9300 | 3 | completed | lr=0.100 |");
    expect(mdText).toMatch(/\*\*Cost:\*\* 0\.30 for 0\.10 GPU-hours at the agents' advertised prices\./);
    expect(await text.exited).toBe(0);
    expect(text.stdout().toString()).toContain("[critical] input-bound: t1 is input-bound");
  });

  it("reads a telemetry window for few agents (a consumer each) and for many (one consumer, skipped by subject)", async ({
    mesh,
  }) => {
    const { names, nc, js } = mesh;
    const t0 = Date.now() - 60_000;
    for (let s = 0; s < 10; s++)
      for (let a = 0; a < 20; a++)
        await js.publish(
          names.subjects.telemetry(`n${a}`),
          encode(gpuMessage(`n${a}`, t0 + s * 1000, [gpuSample(0, s, null, null)])),
        );
    const window = { fromTs: t0 - 500, toTs: t0 + 4500 };
    const few = await readTelemetry(nc, names, { ...window, agents: ["n3", "n7"] });
    expect(few.map((m) => `${m.agent}@${(m.ts - t0) / 1000}`).sort()).toEqual(
      ["n3", "n7"].flatMap((a) => [0, 1, 2, 3, 4].map((s) => `${a}@${s}`)).sort(),
    );
    const many = Array.from({ length: 17 }, (_, a) => `n${a}`);
    const all = await readTelemetry(nc, names, { ...window, agents: many });
    expect(all).toHaveLength(17 * 5);
    expect(new Set(all.map((m) => m.agent))).toEqual(new Set(many));
  });

  it("says which study is missing", async ({ nats, procs }) => {
    const p = cli(["study", "report", "nope", "--nats", nats.url, "--prefix", uniquePrefix()]);
    procs.push(p);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toContain("no study named nope in this mesh");
  });
});
