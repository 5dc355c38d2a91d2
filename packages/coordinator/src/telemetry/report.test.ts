import { type AgentAdvert, type GpuSample, sourceOf, type Telemetry, type TrialEvent } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { buildStudyReport, compileSpec, leaderboardTable, renderReportMarkdown, renderReportText, StudyState } from "../index.js";

const T0 = 1_700_000_000_000;
const at = (s: number) => T0 + s * 1000;

const spec = compileSpec({
  name: "digits",
  command: "python3 train.py --lr {lr} --epochs {max_t}",
  metric: { name: "val_acc", mode: "max" },
  search: { algorithm: "grid", space: { lr: { grid: [0.1, 0.01, 0.001, 0.0001] } } },
  scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 9 },
  resources: { gpus: 1 },
});

/**
 * Four trials on two agents: t1 completes (epoch 9), t2 is stopped at rung 3, t3 at rung 1 and t4
 * fails. a1 (advertised at 2.50 per GPU-hour) runs t1 then t3, with an idle minute between them;
 * a2 has no advert left (price unknown) and runs t2 and t4, input-bound.
 */
function study() {
  const evs: TrialEvent[] = [];
  const b = { v: 1 as const, study: "digits" };
  const lrs = [0.1, 0.01, 0.001, 0.0001];
  const plan = [
    { trial: "t1", agent: "a1", start: 0, end: 900, epochs: 9, acc: 0.97, phase: "completed", wait: 0.1 },
    { trial: "t2", agent: "a2", start: 0, end: 300, epochs: 3, acc: 0.9, phase: "stopped", wait: 0.7 },
    { trial: "t3", agent: "a1", start: 960, end: 1060, epochs: 1, acc: 0.5, phase: "stopped", wait: 0.1 },
    { trial: "t4", agent: "a2", start: 300, end: 420, epochs: 1, acc: Number.NaN, phase: "failed", wait: 0.7 },
  ] as const;
  plan.forEach((p, i) => {
    evs.push({ ...b, trial: p.trial, ts: at(0), type: "created", params: { lr: lrs[i] as number }, bracket: 0 });
    evs.push({ ...b, trial: p.trial, ts: at(p.start), type: "queued", attempt: 1 });
    evs.push({ ...b, trial: p.trial, ts: at(p.start), type: "claimed", attempt: 1, agent: p.agent, gpus: [0] });
    evs.push({ ...b, trial: p.trial, ts: at(p.start), type: "started", attempt: 1, agent: p.agent, pid: 1, gpus: [0] });
    for (let e = 1; e <= p.epochs; e++)
      evs.push({
        ...b,
        trial: p.trial,
        ts: at(p.start + e * 100 - 1),
        type: "report",
        attempt: 1,
        agent: p.agent,
        seq: e,
        metrics: { epoch: e, val_acc: p.acc - (p.epochs - e) * 0.01, data_wait_s: p.wait * 100, compute_s: (1 - p.wait) * 100 },
      });
    if (p.phase === "stopped")
      evs.push({
        ...b,
        trial: p.trial,
        ts: at(p.end - 1),
        type: "decision",
        attempt: 1,
        seq: p.epochs,
        t: p.epochs,
        value: p.acc,
        decision: "STOP",
        by: "asha",
        rung: p.epochs,
        cutoff: 0.95,
      });
    evs.push({
      ...b,
      trial: p.trial,
      ts: at(p.end),
      type: "finished",
      attempt: 1,
      agent: p.agent,
      status: p.phase === "failed" ? "failed" : p.phase === "stopped" ? "stopped" : "completed",
      exitCode: p.phase === "failed" ? 1 : 0,
      signal: null,
      reason: p.phase,
      logTail: [],
    });
    evs.push({ ...b, trial: p.trial, ts: at(p.end), type: "ended", status: p.phase, reason: p.phase, attempts: 1 });
  });
  evs.sort((x, y) => x.ts - y.ts);
  const state = new StudyState({ study: "digits", metric: "val_acc", mode: "max", timeAttr: "epoch" });
  for (const e of evs) state.apply(e, sourceOf(e));

  const gpu = (util: number, trial: string | null): GpuSample => ({
    index: 0,
    uuid: "GPU-0",
    utilizationGpu: util,
    utilizationMemory: null,
    memoryUsedMiB: trial ? 12_000 : 0,
    memoryTotalMiB: 24_576,
    powerW: 200,
    temperatureC: 60,
    smClockMHz: null,
    study: trial ? "digits" : null,
    trial,
  });
  const tel: Telemetry[] = [];
  for (let s = 0; s <= 1060; s += 2) {
    const p1 = plan.find((p) => p.agent === "a1" && s >= p.start && s < p.end);
    const p2 = plan.find((p) => p.agent === "a2" && s >= p.start && s < p.end);
    tel.push({ v: 1, type: "gpu", agent: "a1", ts: at(s), fake: false, gpus: [gpu(p1 ? 90 : 0, p1?.trial ?? null)] });
    tel.push({ v: 1, type: "gpu", agent: "a2", ts: at(s), fake: false, gpus: [gpu(p2 ? 30 : 0, p2?.trial ?? null)] });
  }
  const advert: AgentAdvert = {
    v: 1,
    type: "advert",
    agent: "a1",
    state: "running",
    host: { hostname: "a1", cpuModel: "x", cpuCores: 16, memoryTotalBytes: 1, os: "linux" },
    gpus: [],
    cpuSlots: 0,
    freeGpus: 1,
    freeCpuSlots: 0,
    labels: {},
    pricePerGpuHour: 2.5,
    version: "0.1.0",
    startedAt: T0,
    updatedAt: T0,
  };
  return { loaded: { record: { state: "completed" }, spec, state, planned: 4 }, evs, tel, adverts: [advert] };
}

describe("buildStudyReport", () => {
  const s = study();
  const r = buildStudyReport(s.loaded, s.tel, s.adverts, { events: s.evs, now: at(5000) });

  it("has the leaderboard with params, and the best configuration", () => {
    expect(r.leaderboard.map((x) => [x.rank, x.trial, x.state])).toEqual([
      [1, "t1", "completed"],
      [2, "t2", "stopped@3"],
      [3, "t3", "stopped@1"],
      [4, "t4", "failed"],
    ]);
    expect(r.best).toMatchObject({ trial: "t1", value: 0.97, t: 9, params: { lr: 0.1 } });
    expect(r.leaderboard[3]?.value).toBeNull();
  });

  it("counts trials reaching each rung", () => {
    expect(r.funnel).toEqual([
      { milestone: 1, trials: 4 },
      { milestone: 3, trials: 2 },
      { milestone: 9, trials: 1 },
    ]);
  });

  it("says where the GPU time went and what it cost, with the unknown price named", () => {
    expect(r.gpuTime).toMatchObject({ completedGpuS: 900, stoppedGpuS: 400, failedGpuS: 120, runningGpuS: 0 });
    // a1: 0..1060 s observed every 2 s, 960..1060 busy with t3 and 0..900 with t1 → 60 s idle between them
    // a2: idle from 420 s to the study's end at 1060 s
    const a1 = r.agents.find((a) => a.agent === "a1");
    const a2 = r.agents.find((a) => a.agent === "a2");
    expect(a1?.idleGpuSeconds).toBe(62);
    expect(a1?.gaps).toMatchObject({ count: 1, maxS: 60 });
    expect(a2?.idleGpuSeconds).toBe(642);
    expect(r.cost.unpricedAgents).toEqual(["a2"]);
    expect(r.cost.total).toBeCloseTo(((1000 + 62) / 3600) * 2.5, 6);
    expect(r.cost.agents.find((a) => a.agent === "a2")?.cost).toBeNull();
    expect(r.telemetry.coverage).toBe(1);
  });

  it("lists the findings worst first, and is plain JSON", () => {
    expect(r.findings.map((f) => `${f.kind}:${f.trial ?? f.agent}`)).toEqual([
      "idle-gpus:a2",
      "input-bound:t2",
      // t4 failed: one of four trials, a critical share, sorted with the criticals by the GPU time it used
      "trials-failed:t4",
      "input-bound:t4",
    ]);
    const back = JSON.parse(JSON.stringify(r));
    expect(back.findings[1].evidence.dataWaitShare).toBe(0.7);
    expect(JSON.stringify(r)).not.toMatch(/NaN|Infinity/);
  });

  it("renders Markdown for a pull request", () => {
    const md = renderReportMarkdown(r);
    expect(md).toContain("## Rung study report: `digits`");
    expect(md).toContain("**Best:** `t1` val_acc = 0.9700 at epoch 9 with `lr=0.100`");
    expect(md).toMatch(/1\. \*\*critical · idle-gpus\*\* — agent a2: 60% of its GPU time had no trial/);
    expect(md).toMatch(/2\. \*\*critical · input-bound\*\* — t2 is input-bound: GPU 30% busy/);
    expect(md).toContain("_also 1 more trial(s): t4 (GPU 30%, data wait 70%)_");
    expect(md).toContain("| 2 | t2 | 0.9000 | 3 | stopped@3 | lr=0.0100 |");
    expect(md).toContain("| 3 | 2 |");
    expect(md).toContain("| stopped early | 0.11 | 19% |");
    expect(md).toMatch(
      /\*\*Cost:\*\* 0\.74 for 0\.59 GPU-hours at the agents' advertised prices for the priced agents; price unknown for a2/,
    );
  });

  it("renders plain text for a terminal", () => {
    const text = renderReportText(r);
    expect(text).toContain("study digits: completed · 4 of 4 planned trials: 1 completed, 2 stopped early, 1 failed");
    expect(text).toContain("[critical] input-bound: t2 is input-bound");
    expect(text).toMatch(/rung funnel: epoch>=1: 4 · epoch>=3: 2 · epoch>=9: 1/);
  });

  it("shows a short study's GPU time in significant digits, not as 0.00", () => {
    const text = renderReportText({ ...r, gpuTime: { ...r.gpuTime, stoppedGpuS: 11 } });
    expect(text).toMatch(/stopped early\s+0\.0031 GPU-h/);
    const unpriced = renderReportText({ ...r, cost: { ...r.cost, total: null, gpuHours: 0.00055 } });
    expect(unpriced).toContain("cost: 0.00055 GPU-hours, price unknown (no agent advertised one)");
  });

  it("says when the leaderboard shows only the top trials, and where to see them all", () => {
    const table = leaderboardTable(s.loaded.state, 2);
    expect(table.split("\n")).toHaveLength(4);
    expect(table).toMatch(/\(the top 2 of 4 trials: "rung study status digits" lists them all\)$/);
    expect(leaderboardTable(s.loaded.state, 10)).not.toMatch(/the top/);
  });

  it("says price unknown when no agent advertised one, and works without telemetry", () => {
    const r2 = buildStudyReport(s.loaded, [], [], { events: s.evs, now: at(5000) });
    expect(r2.cost.total).toBeNull();
    expect(r2.gpuTime.idleGpuS).toBeNull();
    expect(renderReportMarkdown(r2)).toContain("price unknown (no agent advertised one)");
    expect(renderReportMarkdown(r2)).toContain("no GPU telemetry");
    // Data-wait alone still finds the starved trials (stricter threshold without GPU samples).
    expect(r2.findings.map((f) => f.kind).filter((k) => k !== "trials-failed")).toEqual(["input-bound", "input-bound"]);
    expect(r2.failures.map((f) => f.trial)).toEqual(["t4"]);
  });
});
