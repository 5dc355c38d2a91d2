import { describe, expect, it } from "vitest";
import type { FifoOptions, MedianOptions } from "../index.js";
import { compileSchedulerOptions, FifoScheduler, MedianStoppingRule } from "../index.js";

function median(input: { mode?: "max" | "min"; gracePeriod?: number; minSamplesRequired?: number; maxT?: number }) {
  return new MedianStoppingRule(compileSchedulerOptions({ scheduler: "median", ...input }) as MedianOptions);
}

/** Ray's basicSetup: t1 reports i*100 at t = i (0..9), t2 reports 450 at t = 0..4; all continue. */
function basicSetup(rule: MedianStoppingRule) {
  for (let i = 0; i < 10; i++) expect(rule.onResult("t1", i, i * 100).decision).toBe("CONTINUE");
  for (let i = 0; i < 5; i++) expect(rule.onResult("t2", i, 450).decision).toBe("CONTINUE");
}

describe("median stopping rule", () => {
  it("stops when the best result is worse than the median of others' running means (Ray: ConstantPerf)", () => {
    const rule = median({ gracePeriod: 0, minSamplesRequired: 1 });
    basicSetup(rule);
    rule.onComplete("t1", 10, 1000);
    // t1's running mean up to 5 is mean(0..500) = 250; t2's best is 450
    expect(rule.onResult("t2", 5, 450)).toMatchObject({ decision: "CONTINUE", cutoff: 250 });
    expect(rule.onResult("t2", 6, 0)).toMatchObject({ decision: "CONTINUE", cutoff: 300 });
    // up to 10: (0 + 100 + … + 900 + 1000) / 11 = 500 > 450
    expect(rule.onResult("t2", 10, 450)).toEqual({
      decision: "STOP",
      rung: null,
      cutoff: 500,
      by: "median",
      reason: "best worse than median",
    });
  });

  it("counts only trials that reached the same time (Ray: OnCompleteOnly)", () => {
    const rule = median({ gracePeriod: 0, minSamplesRequired: 1 });
    basicSetup(rule);
    expect(rule.onResult("t2", 100, 0).decision).toBe("CONTINUE"); // t1 last at 9 < 100
    rule.onComplete("t1", 101, 1000);
    expect(rule.onResult("t2", 101, 0).decision).toBe("STOP");
  });

  it("never stops before the grace period, and averages only from it on (Ray: GracePeriod)", () => {
    const rule = median({ gracePeriod: 2.5, minSamplesRequired: 1 });
    basicSetup(rule);
    rule.onComplete("t1", 10, 1000);
    rule.onComplete("t2", 10, 1000);
    expect(rule.onResult("t3", 1, 10)).toMatchObject({ decision: "CONTINUE", reason: "grace period" });
    expect(rule.onResult("t3", 2, 10).decision).toBe("CONTINUE");
    // t1 mean over t in [2.5, 3] is 300, t2's 450: median 375
    expect(rule.onResult("t3", 3, 10)).toMatchObject({ decision: "STOP", cutoff: 375 });
  });

  it("waits for min_samples_required other trials (Ray: MinSamples)", () => {
    const rule = median({ gracePeriod: 0, minSamplesRequired: 2 });
    basicSetup(rule);
    rule.onComplete("t1", 10, 1000);
    expect(rule.onResult("t3", 5, 10)).toMatchObject({ decision: "CONTINUE", reason: "1 other trial reached t; 2 required" });
    rule.onComplete("t2", 5, 1000);
    expect(rule.onResult("t3", 5, 10).decision).toBe("STOP");
  });

  it("uses the median, not the mean (Ray: UsesMedian)", () => {
    const rule = median({ gracePeriod: 0, minSamplesRequired: 1 });
    basicSetup(rule);
    rule.onComplete("t1", 10, 1000);
    rule.onComplete("t2", 10, 1000);
    expect(rule.onResult("t3", 1, 260)).toMatchObject({ decision: "CONTINUE", cutoff: 250 }); // median of 50, 450
    expect(rule.onResult("t3", 2, 260)).toMatchObject({ decision: "STOP", cutoff: 275 }); // median of 100, 450
  });

  it("defaults to three other trials and compares strictly", () => {
    const rule = median({ gracePeriod: 1 });
    for (const [trial, v] of [
      ["a", 1],
      ["b", 2],
      ["c", 3],
    ] as const)
      rule.onResult(trial, 1, v);
    expect(rule.onResult("d", 1, 0).decision).toBe("STOP"); // others a, b, c: median 2
    expect(rule.onResult("e", 1, 2)).toMatchObject({ decision: "CONTINUE", cutoff: 1.5 }); // a, b, c, d: median 1.5
  });

  it("in min mode stops trials whose best (lowest) loss is above the median", () => {
    const rule = median({ mode: "min", gracePeriod: 0, minSamplesRequired: 1 });
    for (let i = 0; i < 10; i++) rule.onResult("t1", i, -i * 100);
    for (let i = 0; i < 5; i++) rule.onResult("t2", i, -450);
    rule.onComplete("t1", 10, -1000);
    expect(rule.onResult("t2", 5, -450).decision).toBe("CONTINUE");
    expect(rule.onResult("t2", 6, 0).decision).toBe("CONTINUE");
    expect(rule.onResult("t2", 10, -450).decision).toBe("STOP");
  });

  it("keeps a stopped trial stopped and counting for others", () => {
    const rule = median({ gracePeriod: 0, minSamplesRequired: 1 });
    rule.onResult("a", 1, 10);
    expect(rule.onResult("b", 1, 1).decision).toBe("STOP");
    expect(rule.onResult("b", 2, 100)).toMatchObject({ decision: "STOP", reason: "already stopped" });
    // b's result at 1 still counts: others a (10) and b (1) -> median 5.5
    expect(rule.onResult("c", 1, 5)).toMatchObject({ decision: "STOP", cutoff: 5.5 });
  });

  it("never stops on NaN (a departure from Ray, which would stop everyone compared with a NaN)", () => {
    const rule = median({ gracePeriod: 0, minSamplesRequired: 1 });
    rule.onResult("nan", 1, Number.NaN);
    expect(rule.onResult("a", 1, -5)).toMatchObject({ decision: "CONTINUE", reason: "not comparable (NaN)" });
    // its own best is NaN while the others' median (a: -5) is a number
    expect(rule.onResult("nan", 1, Number.NaN)).toMatchObject({
      decision: "CONTINUE",
      cutoff: -5,
      reason: "not comparable (NaN)",
    });
  });

  it("stops at max_t when one is set", () => {
    const rule = median({ maxT: 5 });
    expect(rule.onResult("a", 5, 1)).toMatchObject({ decision: "STOP", reason: "max_t" });
    expect(() => rule.onTrialAdd("a", { bracket: 0 })).toThrow(/no brackets/);
  });
});

describe("fifo", () => {
  it("never stops before max_t and stops at t >= max_t", () => {
    const f = new FifoScheduler(compileSchedulerOptions({ scheduler: "fifo", maxT: 3 }) as FifoOptions);
    expect(f.onResult("a", 1, -1e9).decision).toBe("CONTINUE");
    expect(f.onResult("a", 2.9, Number.NaN).decision).toBe("CONTINUE");
    expect(f.onResult("a", 3, 0)).toEqual({ decision: "STOP", rung: null, cutoff: null, by: "fifo", reason: "max_t" });
    expect(f.onResult("a", 7, 0).decision).toBe("STOP");
    const open = new FifoScheduler(compileSchedulerOptions({ scheduler: "fifo" }) as FifoOptions);
    expect(open.onResult("a", 1e9, 0).decision).toBe("CONTINUE");
  });
});
