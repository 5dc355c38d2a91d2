import { describe, expect, it } from "vitest";
import type { AshaOptions, SchedulerOptionsInput } from "../index.js";
import {
  Asha,
  bracketProbabilities,
  compileSchedulerOptions,
  rungCount,
  rungMilestones,
  SchedulerOptionsError,
} from "../index.js";

/** ASHA with Ray's defaults unless overridden; `seed` feeds the bracket draws. */
function asha(input: Omit<SchedulerOptionsInput, "scheduler"> & { scheduler?: "asha" | "hyperband" }, seed = 0): Asha {
  return new Asha(compileSchedulerOptions({ scheduler: "asha", ...input }) as AshaOptions, seed);
}

const inf = Number.POSITIVE_INFINITY;

/** Recorded values of one rung of bracket 0, as { trial: value }. */
function rung(s: Asha, milestone: number, bracket = 0): Record<string, number> {
  const r = s.snapshot().brackets[bracket]?.rungs.find((x) => x.milestone === milestone);
  if (!r) throw new Error(`no rung ${milestone} in bracket ${bracket}`);
  return { ...r.values };
}

describe("rung ladder (§2)", () => {
  // grace, rf, max_t, then the milestones of brackets 0, 1, 2 where the table lists them.
  const table: [number, number, number, number[][]][] = [
    [
      1,
      2,
      9,
      [
        [1, 2, 4, 8],
        [2, 4, 8],
        [4, 8],
      ],
    ],
    [
      1,
      2,
      27,
      [
        [1, 2, 4, 8, 16],
        [2, 4, 8, 16],
        [4, 8, 16],
      ],
    ],
    [1, 2, 81, [[1, 2, 4, 8, 16, 32, 64]]],
    [1, 3, 9, [[1, 3, 9], [3, 9], [9]]],
    [
      1,
      3,
      27,
      [
        [1, 3, 9, 27],
        [3, 9, 27],
        [9, 27],
      ],
    ],
    [
      1,
      3,
      81,
      [
        [1, 3, 9, 27, 81],
        [3, 9, 27, 81],
        [9, 27, 81],
      ],
    ],
    [1, 4, 27, [[1, 4, 16]]],
    [1, 4, 81, [[1, 4, 16, 64]]],
    [3, 2, 27, [[3, 6, 12, 24]]],
    [3, 2, 81, [[3, 6, 12, 24, 48]]],
    [3, 3, 9, [[3, 9]]],
    [3, 3, 27, [[3, 9, 27]]],
    [3, 3, 81, [[3, 9, 27, 81]]],
    [3, 4, 27, [[3, 12]]],
    [
      3,
      4,
      81,
      [
        [3, 12, 48],
        [12, 48],
      ],
    ],
  ];
  it.each(table)("grace %d, rf %d, max_t %d", (grace, rf, maxT, brackets) => {
    for (const [s, expected] of brackets.entries()) expect(rungMilestones(grace, rf, maxT, s)).toEqual(expected);
    const scheduler = asha({ gracePeriod: grace, reductionFactor: rf, maxT, brackets: brackets.length });
    expect(scheduler.ladders()).toEqual(brackets);
  });

  it("floating-point hazard cases: what JavaScript's Math.log gives", () => {
    // 1,3,243: ln ratio is exactly 5 in JS -> 6 rungs (as AVX-512 numpy and exact; libm gives 5)
    expect(Math.log(243) / Math.log(3)).toBe(5);
    expect(rungMilestones(1, 3, 243, 0)).toEqual([1, 3, 9, 27, 81, 243]);
    // 1,10,1000: 2.9999999999999996 in JS -> 3 rungs, the max_t rung lost (as libm; AVX-512 and exact give 4)
    expect(Math.log(1000) / Math.log(10)).toBe(2.9999999999999996);
    expect(rungMilestones(1, 10, 1000, 0)).toEqual([1, 10, 100]);
    // 1,6,216: 3.0000000000000004 in JS -> 4 rungs (as libm and exact; AVX-512 gives 3)
    expect(Math.log(216) / Math.log(6)).toBe(3.0000000000000004);
    expect(rungMilestones(1, 6, 216, 0)).toEqual([1, 6, 36, 216]);
  });

  it("the lost top rung never matters to results with stop_last_trials (max_t answers first)", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 10, maxT: 1000 });
    expect(s.onResult("a", 1000, 5)).toMatchObject({ decision: "STOP", reason: "max_t", rung: null });
  });

  it("truncates toward zero and leaves brackets with <= 0 rungs empty", () => {
    expect(rungCount(1, 4, 10, 0)).toBe(2); // 1.66 + 1
    expect(rungCount(1, 4, 10, 2)).toBe(0); // trunc(-0.34 + 1)... = trunc(0.66) = 0
    expect(rungCount(1, 4, 10, 4)).toBe(-1);
    expect(rungMilestones(1, 4, 10, 4)).toEqual([]);
  });

  it("supports fractional grace periods (Ray's own tests use 2.5)", () => {
    expect(rungMilestones(2.5, 3, 100, 0)).toEqual([2.5, 7.5, 22.5, 67.5]);
  });

  it("checks Ray's construction rules", () => {
    const bad = (input: SchedulerOptionsInput, text: string) => {
      expect(() => compileSchedulerOptions({ scheduler: "asha", ...input })).toThrow(SchedulerOptionsError);
      expect(() => compileSchedulerOptions({ scheduler: "asha", ...input })).toThrow(text);
    };
    bad({ maxT: 0 }, "maxT: must be > 0, got 0");
    bad({ gracePeriod: 0 }, "gracePeriod: must be > 0, got 0");
    bad({ gracePeriod: 30, maxT: 27 }, "gracePeriod: must be <= maxT (27), got 30");
    bad({ reductionFactor: 1 }, "reductionFactor: must be > 1, got 1");
    bad({ brackets: 0 }, "brackets: must be an integer >= 1, got 0");
    bad({ brackets: 1.5 }, "brackets: must be an integer >= 1, got 1.5");
    bad({ minSamplesRequired: 3 }, "minSamplesRequired: does not apply to the asha scheduler");
  });
});

describe("max_t short-circuit (§4)", () => {
  it("stops at t >= max_t whatever the value, NaN included, even on a first report, recording nothing", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 8 });
    expect(s.onResult("a", 8, Number.NaN)).toEqual({ decision: "STOP", rung: null, cutoff: null, by: "asha", reason: "max_t" });
    expect(s.onResult("b", 8, 1e9)).toMatchObject({ decision: "STOP", reason: "max_t" });
    expect(s.onResult("c", 100, 0)).toMatchObject({ decision: "STOP", reason: "max_t" });
    for (const m of [1, 2, 4, 8]) expect(rung(s, m)).toEqual({});
    // the max_t rung (8) was never evaluated, and nobody is on rung 4 either:
    expect(s.onResult("d", 4, 0)).toMatchObject({ decision: "CONTINUE", rung: 4, cutoff: null });
  });

  it("every trial stops at max_t across ten brackets (Ray: testAsyncHBAllCompletes)", () => {
    const s = asha({ maxT: 10, brackets: 10 });
    expect(s.ladders().map((l) => l.length)).toEqual([2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    for (let i = 0; i < 10; i++) s.onTrialAdd(`t${i}`);
    for (let i = 0; i < 10; i++) expect(s.onResult(`t${i}`, 10, -2).decision).toBe("STOP");
  });
});

describe("the bracket rule (§5)", () => {
  it("evaluates the highest unrecorded milestone <= t, then back-fills skipped ones: t=5 -> 4, then 2, then 1", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    expect(s.onResult("a", 5, 0.5)).toMatchObject({ decision: "CONTINUE", rung: 4 });
    expect(s.onResult("a", 6, 0.6)).toMatchObject({ decision: "CONTINUE", rung: 2 });
    expect(s.onResult("a", 7, 0.7)).toMatchObject({ decision: "CONTINUE", rung: 1 });
    expect(s.onResult("a", 8, 0.8)).toMatchObject({ decision: "CONTINUE", rung: 8 });
    expect(s.onResult("a", 9, 0.9)).toMatchObject({ decision: "CONTINUE", rung: null, reason: "no rung to evaluate" });
    // each back-fill recorded the then-current, later score
    expect([rung(s, 1), rung(s, 2), rung(s, 4), rung(s, 8)]).toEqual([{ a: 0.7 }, { a: 0.6 }, { a: 0.5 }, { a: 0.8 }]);
  });

  it("a back-fill can STOP: a trial at t=10 is stopped on the rung-2 comparison", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 16 });
    s.onResult("b", 1, 0.9);
    s.onResult("b", 2, 0.95);
    expect(s.onResult("a", 8, 0.5)).toMatchObject({ decision: "CONTINUE", rung: 8, cutoff: null });
    expect(s.onResult("a", 9, 0.5)).toMatchObject({ decision: "CONTINUE", rung: 4, cutoff: null });
    expect(s.onResult("a", 10, 0.6)).toEqual({
      decision: "STOP",
      rung: 2,
      cutoff: 0.95,
      by: "asha",
      reason: "worse than cutoff",
    });
    expect(rung(s, 2)).toEqual({ b: 0.95, a: 0.6 });
  });

  it("back-filled scores make the lower rung harder for later arrivals", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 16 });
    s.onResult("early", 2, 5); // a genuine rung-2 score
    s.onResult("late", 8, 9); // rung 8
    s.onResult("late", 9, 9); // back-fill rung 4
    s.onResult("late", 10, 9); // back-fill rung 2 with a later, better score
    expect(rung(s, 2)).toEqual({ early: 5, late: 9 });
    // median of {5, 9} is 7: a 6 is stopped, where the genuine scores alone (cutoff 5) would pass it
    expect(s.onResult("new", 2, 6)).toMatchObject({ decision: "STOP", rung: 2, cutoff: 7 });
  });

  it("has no minimum sample size: the first at a rung continues, the second is stopped if strictly worse", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 4, maxT: 64 });
    expect(s.onResult("a", 1, 5)).toMatchObject({ decision: "CONTINUE", rung: 1, cutoff: null, reason: "first at rung" });
    expect(s.onResult("b", 1, 4)).toMatchObject({ decision: "STOP", rung: 1, cutoff: 5 });
  });

  it("compares strictly: a score equal to the cutoff continues", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    s.onResult("a", 1, 5);
    expect(s.onResult("b", 1, 5)).toMatchObject({ decision: "CONTINUE", cutoff: 5, reason: "not worse than cutoff" });
  });

  it("keeps stopped trials' scores: they shape later cutoffs", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    s.onResult("a", 1, 5);
    expect(s.onResult("b", 1, 3).decision).toBe("STOP");
    // median of {5, 3} = 4 (without the stopped b it would be 5 and stop c)
    expect(s.onResult("c", 1, 4)).toMatchObject({ decision: "CONTINUE", cutoff: 4 });
    expect(s.onResult("d", 1, 3.9)).toMatchObject({ decision: "STOP", cutoff: 4 });
    expect(rung(s, 1)).toEqual({ a: 5, b: 3, c: 4, d: 3.9 });
  });

  it("freezes the first record: a later result at the same rung is not re-evaluated", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    s.onResult("a", 1, 1);
    expect(s.onResult("a", 1, 9)).toMatchObject({ decision: "CONTINUE", rung: null });
    expect(rung(s, 1)).toEqual({ a: 1 });
  });

  it("does not remember decisions: a stopped trial that reports again is judged like any other", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    s.onResult("a", 1, 9);
    expect(s.onResult("b", 1, 1).decision).toBe("STOP");
    expect(s.onResult("b", 2, 1)).toMatchObject({ decision: "CONTINUE", rung: 2, reason: "first at rung" });
  });

  it("continues below the grace period and between milestones with nothing new", () => {
    const s = asha({ gracePeriod: 3, reductionFactor: 3, maxT: 81 });
    expect(s.onResult("a", 2, 0)).toMatchObject({ decision: "CONTINUE", rung: null });
    expect(s.onResult("a", 0, 0)).toMatchObject({ decision: "CONTINUE", rung: null });
    expect(s.onResult("a", 4, 0)).toMatchObject({ rung: 3 });
    expect(s.onResult("a", 5, 0)).toMatchObject({ decision: "CONTINUE", rung: null });
  });

  it("reproduces the rf=3 tie artifact: with 10 scores 0..9 a score of exactly 6 is STOPPED", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 3, maxT: 27 });
    for (let i = 9; i >= 0; i--) s.onResult(`r${i}`, 1, i);
    // exact arithmetic would put the cutoff at v[6] = 6 and let 6 continue
    expect(s.onResult("x", 1, 6)).toMatchObject({ decision: "STOP", rung: 1, cutoff: 6.000000000000001 });
  });

  it("treats a rung touching +inf as having a NaN cutoff, which stops nobody", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    s.onResult("a", 1, inf);
    const b = s.onResult("b", 1, -1e9); // single +inf recorded -> NaN
    expect(b.decision).toBe("CONTINUE");
    expect(b.cutoff).toBeNaN();
    expect(b.reason).toBe("not comparable (NaN)");
    const c = s.onResult("c", 1, -1e9); // {inf, -1e9} median: inf - inf*0.5 = NaN
    expect(c.decision).toBe("CONTINUE");
    expect(c.cutoff).toBeNaN();
  });

  it("with {-inf, 5} the median cutoff is -inf and nothing finite is below it", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    s.onResult("a", 1, -inf);
    s.onResult("b", 1, 5);
    expect(s.onResult("c", 1, -1e300)).toMatchObject({ decision: "CONTINUE", cutoff: -inf });
  });

  it("records NaN scores (they count as recorded) but leaves them out of the cutoff", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    expect(s.onResult("n", 1, Number.NaN)).toMatchObject({ decision: "CONTINUE", rung: 1, cutoff: null });
    const first = s.onResult("a", 1, -100); // only NaN recorded: NaN cutoff
    expect(first.decision).toBe("CONTINUE");
    expect(first.cutoff).toBeNaN();
    expect(s.onResult("n", 1, 5)).toMatchObject({ rung: null }); // already recorded
    expect(s.onResult("b", 1, -101)).toMatchObject({ decision: "STOP", cutoff: -100 }); // {NaN, -100} -> -100
    expect(Object.keys(rung(s, 1))).toEqual(["n", "a", "b"]);
  });

  it("never stops a NaN score at a rung (any comparison with NaN is false)", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    s.onResult("a", 1, 10);
    expect(s.onResult("b", 1, Number.NaN)).toMatchObject({ decision: "CONTINUE", cutoff: 10 });
  });

  it("negates values in min mode: lower loss is better and cutoffs are reported as losses", () => {
    const s = asha({ mode: "min", gracePeriod: 1, reductionFactor: 2, maxT: 64 });
    s.onResult("a", 1, 0.5);
    expect(s.onResult("b", 1, 0.75)).toMatchObject({ decision: "STOP", cutoff: 0.5 });
    expect(s.onResult("c", 1, 0.25)).toMatchObject({ decision: "CONTINUE", cutoff: 0.625 });
    expect(rung(s, 1)).toEqual({ a: 0.5, b: 0.75, c: 0.25 });
  });
});

describe("stop_last_trials = false", () => {
  it("has no max_t short-circuit: the max_t rung is real and a trial is stopped at t=9 with max_t=8", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 8, stopLastTrials: false });
    expect(s.onResult("a", 8, 0.9)).toMatchObject({ decision: "CONTINUE", rung: 8 });
    expect(s.onResult("b", 9, 0.5)).toMatchObject({ decision: "STOP", rung: 8, cutoff: 0.9 });
    // contrast: the default mode stops b by max_t without looking at any rung
    const d = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 8 });
    expect(d.onResult("b", 9, 0.5)).toMatchObject({ decision: "STOP", rung: null, reason: "max_t" });
  });

  it("never back-fills lower rungs", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64, stopLastTrials: false });
    expect(s.onResult("a", 5, 0.5)).toMatchObject({ rung: 4 });
    expect(s.onResult("a", 6, 0.6)).toMatchObject({ decision: "CONTINUE", rung: null, reason: "already recorded at rung 4" });
    expect(s.onResult("a", 7, 0.7)).toMatchObject({ rung: null });
    expect(rung(s, 2)).toEqual({});
    expect(rung(s, 1)).toEqual({});
  });

  it("once recorded at the highest reachable rung, every later result continues, even a very poor one", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 8, stopLastTrials: false });
    s.onResult("b", 8, 100);
    expect(s.onResult("a", 8, 50).decision).toBe("STOP");
    expect(s.onResult("a", 20, -1e9)).toMatchObject({ decision: "CONTINUE", rung: null });
  });

  it("matches Ray's testAsyncHBNonStopTrials", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 3, stopLastTrials: false });
    expect(s.ladders()).toEqual([[1, 2]]);
    expect(s.onResult("t0", 2, 10).decision).toBe("CONTINUE");
    expect(s.onResult("t1", 2, 8).decision).toBe("STOP");
    expect(s.onResult("t2", 2, 6).decision).toBe("STOP");
    expect(s.onResult("t3", 2, 4).decision).toBe("STOP");
    expect(s.onResult("t0", 4, 10).decision).toBe("CONTINUE");
    expect(s.onResult("t0", 8, 10).decision).toBe("CONTINUE");
    expect(s.onResult("t0", 14, 1).decision).toBe("CONTINUE");
  });
});

describe("on_trial_complete (§7)", () => {
  it("after a STOP at rung m, records the same score at the next lower unrecorded rung", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 16 });
    s.onResult("a", 4, 9);
    expect(s.onResult("b", 4, 1)).toMatchObject({ decision: "STOP", rung: 4 });
    s.onComplete("b", 4, 1);
    expect(rung(s, 2)).toEqual({ b: 1 });
    expect(rung(s, 4)).toEqual({ a: 9, b: 1 });
  });

  it("after a max_t STOP, records at the max_t rung", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 8 });
    expect(s.onResult("a", 8, 0.7).reason).toBe("max_t");
    expect(rung(s, 8)).toEqual({});
    s.onComplete("a", 8, 0.7);
    expect(rung(s, 8)).toEqual({ a: 0.7 });
  });

  it("can record at a milestone no result evaluated: a trial ending at t=10 is recorded at rung 8", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 10 });
    expect(s.ladders()).toEqual([[1, 2, 4, 8]]);
    for (const t of [1, 2, 4]) s.onResult("a", t, t);
    s.onComplete("a", 10, 0.8);
    expect(rung(s, 8)).toEqual({ a: 0.8 });
  });

  it("forgets the trial's bracket and decides nothing", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 3, maxT: 81, brackets: 3 });
    s.onTrialAdd("a", { bracket: 2 });
    expect(s.bracketOf("a")).toBe(2);
    expect(s.onComplete("a", 9, 1)).toBeUndefined();
    expect(s.bracketOf("a")).toBeNull();
    expect(rung(s, 9, 2)).toEqual({ a: 1 });
  });

  it("keeps the stop_last_trials=false break: no back-fill through completion either", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 2, maxT: 64, stopLastTrials: false });
    s.onResult("a", 5, 1);
    s.onComplete("a", 6, 1);
    expect(rung(s, 2)).toEqual({});
  });

  it("matches Ray's testAsyncHBOnComplete: a completion records where the result never went", () => {
    const s = asha({ maxT: 10, brackets: 1 });
    for (let i = 0; i < 10; i++) expect(s.onResult("t1", i, i * 100).decision).toBe("CONTINUE");
    for (let i = 0; i < 5; i++) expect(s.onResult("t2", i, 450).decision).toBe("CONTINUE");
    s.onComplete("t3", 10, 1000);
    expect(rung(s, 4)).toEqual({ t1: 400, t2: 450, t3: 1000 });
    expect(s.onResult("t2", 101, 0).decision).toBe("STOP");
  });
});

describe("Ray's AsyncHyperBandSuite vectors", () => {
  /** t1 reports i*100 at i = 0..9, t2 450 at i = 0..4; every one continues. */
  function basicSetup(s: Asha) {
    for (let i = 0; i < 10; i++) expect(s.onResult("t1", i, i * 100).decision).toBe("CONTINUE");
    for (let i = 0; i < 5; i++) expect(s.onResult("t2", i, 450).decision).toBe("CONTINUE");
  }

  it("testAsyncHBGracePeriod (grace 2.5, rf 3)", () => {
    const s = asha({ gracePeriod: 2.5, reductionFactor: 3, brackets: 1 });
    basicSetup(s);
    s.onComplete("t1", 10, 1000);
    s.onComplete("t2", 10, 1000);
    expect(s.onResult("t3", 1, 10).decision).toBe("CONTINUE");
    expect(s.onResult("t3", 2, 10).decision).toBe("CONTINUE");
    expect(s.onResult("t3", 3, 10)).toMatchObject({ decision: "STOP", rung: 2.5 });
  });

  it("testAsyncHBUsesPercentile (rf 2)", () => {
    const s = asha({ gracePeriod: 1, maxT: 10, reductionFactor: 2, brackets: 1 });
    basicSetup(s);
    s.onComplete("t1", 10, 1000);
    s.onComplete("t2", 10, 1000);
    expect(s.onResult("t3", 1, 260)).toMatchObject({ decision: "STOP", cutoff: 275 });
    expect(s.onResult("t3", 2, 260)).toMatchObject({ decision: "STOP", cutoff: 325 });
  });

  it("testAsyncHBNanPercentile", () => {
    const s = asha({ gracePeriod: 1, maxT: 10, reductionFactor: 2, brackets: 1 });
    for (let i = 0; i < 10; i++) expect(s.onResult("t1", i, 450).decision).toBe("CONTINUE");
    for (let i = 0; i < 10; i++) expect(s.onResult("t2", i, Number.NaN).decision).toBe("CONTINUE");
    s.onComplete("t1", 10, 450);
    s.onComplete("t2", 10, Number.NaN);
    expect(s.onResult("t3", 1, 260)).toMatchObject({ decision: "STOP", cutoff: 450 });
    expect(s.onResult("t3", 2, 260)).toMatchObject({ decision: "STOP", cutoff: 450 });
  });

  it("save/restore scenario: worse results stop at rung 1", () => {
    const s = asha({ gracePeriod: 1, maxT: 10, reductionFactor: 2, brackets: 1 });
    for (let i = 0; i < 5; i++) expect(s.onResult(`t${i}`, 1, 10).decision).not.toBe("STOP");
    expect(s.onResult("t5", 1, 5).decision).toBe("STOP");
    expect(s.onResult("t6", 1, 4).decision).toBe("STOP");
    expect(s.onResult("new", 1, 2).decision).toBe("STOP");
  });

  it.each(["max", "min"] as const)("alternate metrics, mode %s", (mode) => {
    const sign = mode === "max" ? 1 : -1;
    const s = asha({ mode, gracePeriod: 1, brackets: 1 });
    for (let i = 0; i < 10; i++) expect(s.onResult("t1", i, sign * i * 100).decision).toBe("CONTINUE");
    for (let i = 0; i < 5; i++) expect(s.onResult("t2", i, sign * 450).decision).toBe("CONTINUE");
    s.onComplete("t1", 10, sign * 1000);
    expect(s.onResult("t2", 5, sign * 450).decision).toBe("CONTINUE");
    expect(s.onResult("t2", 6, 0).decision).toBe("CONTINUE");
  });
});

describe("brackets (§3)", () => {
  it("assigns by a softmax over rung counts: 5, 4, 3 give about 0.665, 0.245, 0.090", () => {
    const p = bracketProbabilities([5, 4, 3]);
    expect(p[0]).toBeCloseTo(0.665, 3);
    expect(p[1]).toBeCloseTo(0.245, 3);
    expect(p[2]).toBeCloseTo(0.09, 3);

    const s = asha({ gracePeriod: 1, reductionFactor: 3, maxT: 81, brackets: 3 }, 42);
    expect(s.ladders().map((l) => l.length)).toEqual([5, 4, 3]);
    expect(s.bracketProbabilities()).toEqual(p);
    const n = 30_000;
    const counts = new Map<number | null, number>();
    for (let i = 0; i < n; i++) {
      const b = s.onTrialAdd(`t${i}`).bracket;
      counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    const share = (b: number) => (counts.get(b) ?? 0) / n;
    expect([...counts.keys()].sort()).toEqual([0, 1, 2]);
    expect(Math.abs(share(0) - 0.6652)).toBeLessThan(0.01);
    expect(Math.abs(share(1) - 0.2447)).toBeLessThan(0.01);
    expect(Math.abs(share(2) - 0.09)).toBeLessThan(0.006);
  });

  it("draws from the seed: the same seed gives the same brackets, another seed others", () => {
    const draw = (seed: number) => {
      const s = asha({ gracePeriod: 1, reductionFactor: 3, maxT: 81, brackets: 3 }, seed);
      return Array.from({ length: 60 }, (_, i) => s.onTrialAdd(`t${i}`).bracket);
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  it("accepts an injected bracket, which consumes no draw", () => {
    const opts = { gracePeriod: 1, reductionFactor: 3, maxT: 81, brackets: 3 } as const;
    const plain = asha(opts, 5);
    const mixed = asha(opts, 5);
    const a = Array.from({ length: 20 }, (_, i) => plain.onTrialAdd(`t${i}`).bracket);
    const b: (number | null)[] = [];
    for (let i = 0; i < 20; i++) {
      expect(mixed.onTrialAdd(`fixed${i}`, { bracket: 2 })).toEqual({ bracket: 2 });
      b.push(mixed.onTrialAdd(`t${i}`).bracket);
    }
    expect(b).toEqual(a);
  });

  it("compares a trial only within its bracket, whose first milestone is grace * rf^s", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 3, maxT: 81, brackets: 3 });
    s.onTrialAdd("p", { bracket: 0 });
    s.onTrialAdd("q", { bracket: 1 });
    s.onTrialAdd("r", { bracket: 2 });
    expect(s.onResult("p", 3, 0.9)).toMatchObject({ rung: 3, cutoff: null });
    expect(s.onResult("q", 3, 0.1)).toMatchObject({ decision: "CONTINUE", rung: 3, cutoff: null });
    expect(s.onResult("r", 3, 0.1)).toMatchObject({ decision: "CONTINUE", rung: null, reason: "no rung to evaluate" });
    expect(s.onResult("r", 9, 0.1)).toMatchObject({ rung: 9, cutoff: null });
  });

  it("refuses an out-of-range or conflicting injected bracket", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 3, maxT: 81, brackets: 3 });
    expect(() => s.onTrialAdd("a", { bracket: 3 })).toThrow(/bracket 3 is out of range.*3 brackets \(0\.\.2\)/);
    expect(() => s.onTrialAdd("a", { bracket: 1.5 })).toThrow(RangeError);
    s.onTrialAdd("a", { bracket: 1 });
    expect(s.onTrialAdd("a")).toEqual({ bracket: 1 });
    expect(() => s.onTrialAdd("a", { bracket: 0 })).toThrow(/already in bracket 1/);
  });

  it("an empty bracket still gets its share (e^-max) and never stops a trial before max_t", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 3, maxT: 9, brackets: 4 });
    expect(s.ladders()).toEqual([[1, 3, 9], [3, 9], [9], []]);
    expect(s.bracketProbabilities()[3]).toBeCloseTo(Math.exp(-3) / (1 + Math.exp(-1) + Math.exp(-2) + Math.exp(-3)), 12);
    s.onTrialAdd("e", { bracket: 3 });
    expect(s.onResult("e", 5, -1e9)).toMatchObject({ decision: "CONTINUE", reason: "no rung to evaluate" });
    expect(s.onResult("e", 9, -1e9)).toMatchObject({ decision: "STOP", reason: "max_t" });
  });

  it("hyperband is ASHA with several brackets, defaulting to bracket 0's rung count", () => {
    const h = asha({ scheduler: "hyperband", gracePeriod: 1, reductionFactor: 3, maxT: 27 });
    expect(h.name).toBe("hyperband");
    expect(h.options.brackets).toBe(4);
    expect(h.ladders()).toEqual([[1, 3, 9, 27], [3, 9, 27], [9, 27], [27]]);
    expect(h.onResult("a", 27, 0)).toMatchObject({ decision: "STOP", by: "hyperband" });
    expect(compileSchedulerOptions({ scheduler: "hyperband", brackets: 2 })).toMatchObject({ brackets: 2 });
    expect(compileSchedulerOptions({ scheduler: "asha" })).toMatchObject({ brackets: 1, reductionFactor: 4, maxT: 100 });
  });

  it("adds a trial on its first result when it was never added", () => {
    const s = asha({ gracePeriod: 1, reductionFactor: 3, maxT: 81, brackets: 3 }, 1);
    s.onResult("x", 1, 1);
    expect(s.bracketOf("x")).not.toBeNull();
  });
});
