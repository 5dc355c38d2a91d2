import type { GpuSample, Telemetry, TrialEvent } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { studyMetaFromSpec, TailView } from "../index.js";

const TS = new Date(2026, 0, 2, 14, 2, 11).getTime();

function gpu(index: number, util: number | null, study: string | null = null, trial: string | null = null): GpuSample {
  return {
    index,
    uuid: `GPU-${index}`,
    utilizationGpu: util,
    utilizationMemory: null,
    memoryUsedMiB: util === null ? null : 12_390,
    memoryTotalMiB: 24_576,
    powerW: 231,
    temperatureC: 66,
    smClockMHz: null,
    study,
    trial,
  };
}

const sample = (agent: string, gpus: GpuSample[]): Telemetry => ({ v: 1, type: "gpu", agent, ts: TS, fake: false, gpus });
const report = (trial: string, metrics: Record<string, number>): TrialEvent => ({
  v: 1,
  type: "report",
  study: "digits",
  trial,
  ts: TS,
  attempt: 1,
  agent: "a12",
  seq: 0,
  metrics,
});

function lines(_view: TailView, fn: (out: string[]) => void): string[] {
  const out: string[] = [];
  fn(out);
  return out;
}

describe("TailView text lines", () => {
  it("shows each GPU with bar, utilization, memory, power, temperature, and the trial's progress", () => {
    const view = new TailView({ format: "text" });
    view.setStudyMeta("digits", { metric: "val_acc", timeAttr: "epoch" });
    const ev = lines(view, (o) =>
      view.event(report("t0007", { epoch: 3, train_loss: 0.3, val_acc: 0.97222, data_wait_s: 1, compute_s: 7 }), o),
    );
    expect(ev).toEqual(["14:02:11  · digits/t0007 epoch 3 val_acc 0.9722 wait 13%"]);
    const out = lines(view, (o) => view.telemetry(sample("a12", [gpu(0, 78, "digits", "t0007"), gpu(1, 0), gpu(2, null)]), o));
    expect(out).toEqual([
      "14:02:11  a12   gpu0 ██████▎   78%  mem 12.1/24.0G  231W 66°C  digits/t0007 epoch 3 val_acc 0.9722 wait 13%",
      "14:02:11  a12   gpu1            0%  mem 12.1/24.0G  231W 66°C  idle",
      "14:02:11  a12   gpu2             -  mem    -/24.0G  231W 66°C  idle",
    ]);
  });

  it("guesses the metric until the study's record is known", () => {
    const view = new TailView({ format: "text" });
    const out = lines(view, (o) => view.event(report("t1", { epoch: 2, train_loss: 0.5, val_acc: 0.9 }), o));
    expect(out[0]).toContain("epoch 2 train_loss 0.5");
  });

  it("colours only when asked, and never in JSON", () => {
    const plain = new TailView({ format: "text" });
    const color = new TailView({ format: "text", color: true });
    const json = new TailView({ format: "json", color: true });
    const m = sample("a1", [gpu(0, 20, "s", "t")]);
    expect(lines(plain, (o) => plain.telemetry(m, o))[0]).not.toContain("\x1b[");
    expect(lines(color, (o) => color.telemetry(m, o))[0]).toContain("\x1b[31m");
    expect(lines(json, (o) => json.telemetry(m, o))[0]).not.toContain("\x1b[");
  });

  it("filters by study, trial and agent before formatting", () => {
    const seen: string[] = [];
    const view = new TailView({ format: "text", filter: { study: "digits", trial: "t2" }, onNewStudy: (s) => seen.push(s) });
    const out = lines(view, (o) => {
      view.telemetry(sample("a1", [gpu(0, 50, "digits", "t1"), gpu(1, 60, "digits", "t2"), gpu(2, 0)]), o);
      view.telemetry(sample("a2", [gpu(0, 50, "other", "t2")]), o);
      view.event(report("t1", { epoch: 1 }), o);
      view.event(report("t2", { epoch: 1 }), o);
    });
    expect(out).toHaveLength(2);
    expect(out[0]).toContain("gpu1");
    expect(out[1]).toContain("digits/t2");
    expect(seen).toEqual(["digits"]);
    const byAgent = new TailView({ format: "text", filter: { agent: "a2" } });
    expect(lines(byAgent, (o) => byAgent.telemetry(sample("a1", [gpu(0, 1)]), o))).toEqual([]);
  });

  it("writes one line per trial event that matters", () => {
    const view = new TailView({ format: "text" });
    const base = { v: 1 as const, study: "digits", trial: "t4", ts: TS };
    const out = lines(view, (o) => {
      view.event({ ...base, type: "created", params: {}, bracket: 0 }, o);
      view.event({ ...base, type: "started", attempt: 1, agent: "a1", pid: 9, gpus: [0, 1] }, o);
      view.event(
        {
          ...base,
          type: "decision",
          attempt: 1,
          seq: 3,
          t: 3,
          value: 0.712,
          decision: "STOP",
          by: "asha",
          rung: 3,
          cutoff: 0.8011,
        },
        o,
      );
      view.event(
        {
          ...base,
          type: "decision",
          attempt: 1,
          seq: 1,
          t: 1,
          value: 0.6,
          decision: "CONTINUE",
          by: "asha",
          rung: 1,
          cutoff: 0.5,
        },
        o,
      );
      view.event(
        {
          ...base,
          type: "finished",
          attempt: 1,
          agent: "a1",
          status: "completed",
          exitCode: 0,
          signal: null,
          reason: "",
          logTail: [],
        },
        o,
      );
      view.event(
        {
          ...base,
          type: "finished",
          attempt: 2,
          agent: "a1",
          status: "failed",
          exitCode: 1,
          signal: null,
          reason: "exit 1\nTraceback",
          logTail: [],
        },
        o,
      );
      view.event({ ...base, type: "ended", status: "failed", reason: "failed after 3 attempt(s)", attempts: 3 }, o);
      view.event({ ...base, type: "ended", status: "completed", reason: "done", attempts: 1 }, o);
    });
    expect(out).toEqual([
      "14:02:11  ▶ digits/t4 started on a1 gpu 0,1 (attempt 1)",
      "14:02:11  ■ digits/t4 stopped at rung 3 by asha (metric 0.7120, cutoff 0.8011)",
      "14:02:11  ✓ digits/t4 finished (exit 0, attempt 1)",
      "14:02:11  ✗ digits/t4 failed (exit 1, attempt 2): exit 1",
      "14:02:11  ✗ digits/t4 failed after 3 attempt(s): failed after 3 attempt(s)",
    ]);
  });
});

describe("TailView JSON lines", () => {
  it("writes one object per line with the trial's progress", () => {
    const view = new TailView({ format: "json" });
    view.setStudyMeta("digits", { metric: "val_acc", timeAttr: "epoch" });
    const out = lines(view, (o) => {
      view.event(report("t0007", { epoch: 3, val_acc: 0.97, data_wait_s: 3, compute_s: 1 }), o);
      view.telemetry(sample("a12", [gpu(0, 25, "digits", "t0007")]), o);
    });
    const [ev, g] = out.map((l) => JSON.parse(l));
    expect(ev).toMatchObject({ kind: "trial", event: "report", study: "digits", trial: "t0007", dataWaitShare: 0.75 });
    expect(g).toEqual({
      kind: "gpu",
      ts: TS,
      agent: "a12",
      gpu: 0,
      util: 25,
      memUsedMiB: 12_390,
      memTotalMiB: 24_576,
      powerW: 231,
      tempC: 66,
      fake: false,
      study: "digits",
      trial: "t0007",
      t: 3,
      timeAttr: "epoch",
      metric: "val_acc",
      value: 0.97,
      dataWaitShare: 0.75,
    });
  });

  it("reads a study's metric from its stored spec", () => {
    expect(studyMetaFromSpec({ metric: { name: "auc", mode: "max" }, scheduler: { time_attr: "step" } })).toEqual({
      metric: "auc",
      timeAttr: "step",
    });
    expect(studyMetaFromSpec({})).toBeNull();
  });
});
