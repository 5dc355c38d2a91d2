import { describe, expect, it } from "vitest";
import { compileSpec, createStudyPolicy, EarlyStopping } from "../index.js";

const feed = (es: EarlyStopping, trial: string, values: number[]) => values.map((v, i) => es.onResult(trial, i + 1, v).decision);

describe("EarlyStopping (patience)", () => {
  it("stops after `patience` reports without improvement (min mode)", () => {
    const es = new EarlyStopping({ mode: "min", patience: 3 });
    expect(feed(es, "a", [1.0, 0.9, 0.95, 0.93, 0.92])).toEqual(["CONTINUE", "CONTINUE", "CONTINUE", "CONTINUE", "STOP"]);
  });

  it("resets the count on an improvement", () => {
    const es = new EarlyStopping({ mode: "min", patience: 2 });
    expect(feed(es, "a", [1.0, 1.1, 0.5, 0.6, 0.7])).toEqual(["CONTINUE", "CONTINUE", "CONTINUE", "CONTINUE", "STOP"]);
  });

  it("counts an equal value as no improvement and needs more than min_delta", () => {
    const es = new EarlyStopping({ mode: "max", patience: 2, minDelta: 0.1 });
    // 0.55 beats 0.5 by less than 0.1: no improvement; 0.65 beats 0.5 by 0.15: improvement
    expect(feed(es, "a", [0.5, 0.55, 0.65, 0.65, 0.7])).toEqual(["CONTINUE", "CONTINUE", "CONTINUE", "CONTINUE", "STOP"]);
    const r = es.onResult("b", 1, 0.5);
    expect(r).toMatchObject({ by: "early-stopping", cutoff: 0.5, reason: "improved" });
  });

  it("treats NaN as no improvement", () => {
    const es = new EarlyStopping({ mode: "max", patience: 2 });
    expect(feed(es, "a", [Number.NaN, Number.NaN])).toEqual(["CONTINUE", "STOP"]);
  });

  it("keeps each trial's patience apart", () => {
    const es = new EarlyStopping({ mode: "min", patience: 1 });
    es.onResult("a", 1, 1);
    es.onResult("b", 1, 1);
    expect(es.onResult("b", 2, 0.5).decision).toBe("CONTINUE");
    expect(es.onResult("a", 2, 2)).toMatchObject({ decision: "STOP", reason: "no improvement for 1 report (patience 1)" });
  });

  it("refuses nonsense options", () => {
    expect(() => new EarlyStopping({ mode: "min", patience: 0 })).toThrow(/patience must be an integer >= 1/);
    expect(() => new EarlyStopping({ mode: "min", patience: 1, minDelta: -1 })).toThrow(/minDelta/);
  });
});

describe("createStudyPolicy", () => {
  const spec = (extra: Record<string, unknown>) =>
    compileSpec({
      name: "s",
      command: "python train.py",
      metric: { name: "val_acc", mode: "max" },
      search: { space: {} },
      scheduler: { type: "fifo", max_t: 10 },
      ...extra,
    });

  it("applies early stopping on top of the scheduler, on its own metric", () => {
    const s = createStudyPolicy(spec({ early_stopping: { monitor: "val_loss", mode: "min", patience: 2 } }));
    expect(s.onReport("a", { epoch: 1, val_acc: 0.5, val_loss: 1.0 }).decision).toBe("CONTINUE");
    expect(s.onReport("a", { epoch: 2, val_acc: 0.6, val_loss: 1.2 }).decision).toBe("CONTINUE");
    expect(s.onReport("a", { epoch: 3, val_acc: 0.7, val_loss: 1.1 })).toMatchObject({ decision: "STOP", by: "early-stopping" });
  });

  it("lets the scheduler's STOP stand and reads time and metric from the report", () => {
    const s = createStudyPolicy(spec({ early_stopping: { patience: 5 } }));
    expect(s.onReport("a", { epoch: 10, val_acc: 0.9 })).toMatchObject({ decision: "STOP", by: "fifo", reason: "max_t" });
  });

  it("continues and changes nothing on a report without the time attribute or metric", () => {
    const s = createStudyPolicy(
      compileSpec({
        name: "s",
        command: "python train.py",
        metric: { name: "val_acc", mode: "max" },
        search: { space: {} },
        scheduler: { type: "asha", max_t: 9, reduction_factor: 3 },
      }),
    );
    expect(s.onReport("a", { val_acc: 0.1 })).toMatchObject({ decision: "CONTINUE", reason: "report has no epoch" });
    expect(s.onReport("a", { epoch: 1 })).toMatchObject({ decision: "CONTINUE", reason: "report has no val_acc" });
    expect(s.onReport("a", { epoch: 1, val_acc: 0.9 })).toMatchObject({ decision: "CONTINUE", rung: 1, cutoff: null });
    expect(s.onReport("b", { epoch: 1, val_acc: 0.1 })).toMatchObject({ decision: "STOP", rung: 1, cutoff: 0.9 });
    s.onComplete("b", { epoch: 1, val_acc: 0.1 });
  });
});
