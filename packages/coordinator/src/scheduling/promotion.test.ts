import { describe, expect, it } from "vitest";
import { compileSchedulerOptions } from "./options.js";
import { PromotionAsha } from "./promotion.js";

const make = (mode: "max" | "min" = "max") =>
  new PromotionAsha(
    compileSchedulerOptions({
      scheduler: "promotion",
      mode,
      gracePeriod: 1,
      reductionFactor: 3,
      maxT: 9,
    }) as ConstructorParameters<typeof PromotionAsha>[0],
  );

describe("promotion-based ASHA (Li et al., Algorithm 2)", () => {
  it("has ASHA's rung ladder, then max_t", () => {
    expect(make().milestones).toEqual([1, 3, 9]);
  });

  it("pauses each trial at its next rung and promotes the top 1/rf of a rung, best first, once each", () => {
    const s = make();
    const values: Record<string, number> = { a: 0.5, b: 0.9, c: 0.3, d: 0.95, e: 0.2, f: 0.7 };
    for (const [trial, v] of Object.entries(values)) {
      s.onTrialAdd(trial);
      expect(s.onResult(trial, 0.5, v).decision).toBe("CONTINUE");
      expect(s.onResult(trial, 1, v)).toMatchObject({ decision: "PAUSE", rung: 1 });
      // Late results of a paused trial change nothing.
      expect(s.onResult(trial, 2, v).decision).toBe("CONTINUE");
      // Three results at rung 0 allow one promotion, six allow two.
      const n = Object.keys(values).indexOf(trial) + 1;
      if (n === 2) expect(s.nextPromotion()).toBeNull();
    }
    // Six at rung 0: the top two (d 0.95, b 0.9), best first.
    expect(s.nextPromotion()).toEqual({ trial: "d", rung: 1, milestone: 3 });
    s.onPromote("d", 1);
    expect(s.nextPromotion()).toEqual({ trial: "b", rung: 1, milestone: 3 });
    // b's paused attempt has not ended yet: nothing else may go instead (f is not in the top 2).
    expect(s.nextPromotion((t) => t !== "b")).toBeNull();
    s.onPromote("b", 1);
    expect(s.nextPromotion()).toBeNull();
    // d reaches rung 3 and waits; one result there allows no promotion (1/3 < 1) until two more.
    expect(s.onResult("d", 3, 0.96)).toMatchObject({ decision: "PAUSE", rung: 3 });
    expect(s.nextPromotion()).toBeNull();
    expect(s.onResult("b", 3, 0.91)).toMatchObject({ decision: "PAUSE", rung: 3 });
    for (const [trial, v] of [
      ["g", 0.99],
      ["h", 0.98],
      ["i", 0.1],
    ] as const) {
      s.onTrialAdd(trial);
      s.onResult(trial, 1, v);
    }
    // Nine at rung 0 → three promotable: g and h now rank above b and d, and go first (top-down scan
    // finds nothing at rung 3: two results there, quota 0).
    expect(s.nextPromotion()).toEqual({ trial: "g", rung: 1, milestone: 3 });
    s.onPromote("g", 1);
    expect(s.onResult("g", 3, 0.97)).toMatchObject({ decision: "PAUSE", rung: 3 });
    // Three at rung 3: the best of them (g 0.97) goes on to max_t, where it ends.
    expect(s.nextPromotion()).toEqual({ trial: "g", rung: 2, milestone: 9 });
    s.onPromote("g", 2);
    expect(s.onResult("g", 9, 0.99)).toMatchObject({ decision: "STOP", reason: "max_t" });
  });

  it("ranks by the mode, never promotes NaN, and is a pure function of its calls", () => {
    const run = () => {
      const s = make("min");
      const out: string[] = [];
      for (const [trial, v] of [
        ["a", 2],
        ["b", Number.NaN],
        ["c", 1],
      ] as const) {
        s.onTrialAdd(trial);
        s.onResult(trial, 1, v);
      }
      const p = s.nextPromotion();
      if (p) out.push(`${p.trial}->${p.milestone}`);
      return out;
    };
    expect(run()).toEqual(["c->3"]);
    expect(run()).toEqual(run());
    const s = make();
    s.onTrialAdd("x");
    s.onResult("x", 1, Number.NaN);
    s.onTrialAdd("y");
    s.onResult("y", 1, Number.NaN);
    s.onTrialAdd("z");
    s.onResult("z", 1, Number.NaN);
    expect(s.nextPromotion()).toBeNull();
  });
});
