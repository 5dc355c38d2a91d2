import { describe, expect, it } from "vitest";
import { SchedulerOptionsError } from "../errors.js";
import type { CurveStoppingOptions } from "./curve-stopping.js";
import { CurveStopping } from "./curve-stopping.js";
import type { SchedulerDecision } from "./scheduler.js";

const MS = [1, 3, 9, 27];
const make = (o: Partial<CurveStoppingOptions> = {}) =>
  new CurveStopping({ mode: "min", maxT: 50, gracePeriod: 1, milestones: MS, probability: 0.05, seed: 1, ...o });

const good = (t: number) => 0.3 + 0.4 * t ** -0.5; // ends near 0.357
const flat = (t: number) => 0.69 + 0.001 * Math.cos(t);
const steep = (t: number) => 1.5 - 0.35 * Math.log(t); // still falling fast; passes 0.357 by t=27

/** Runs a trial from t=1 to maxT (or until STOP), completing it as the coordinator does. */
function run(s: CurveStopping, trial: string, f: (t: number) => number, until = 50): SchedulerDecision[] {
  const out: SchedulerDecision[] = [];
  s.onTrialAdd(trial);
  for (let t = 1; t <= until; t++) {
    const d = s.onResult(trial, t, f(t));
    out.push(d);
    if (d.decision === "STOP") {
      s.onComplete(trial, t, f(t));
      break;
    }
  }
  return out;
}

/**
 * Ten trials that ran to the end: five good ones and five that stayed near chance level (the rank view
 * of the peers needs both kinds, as a real population has).
 */
function withPeers(s: CurveStopping, mode: "min" | "max" = "min"): void {
  const feed = (trial: string, f: (t: number) => number) => {
    for (let t = 1; t <= 50; t++) s.onResult(trial, t, mode === "min" ? f(t) : 1 - f(t));
    s.onComplete(trial, 50, mode === "min" ? f(50) : 1 - f(50));
  };
  for (let k = 0; k < 5; k++) {
    feed(`good${k}`, (t) => good(t) + 0.01 * k);
    feed(`chance${k}`, (t) => 0.68 + 0.004 * k + 0.001 * Math.sin(t + k));
  }
}

describe("CurveStopping", () => {
  it("stops a hopeless flat curve at the first milestone after the grace period", () => {
    const s = make({ gracePeriod: 2 });
    withPeers(s);
    const ds = run(s, "flat", flat);
    const stop = ds.at(-1) as SchedulerDecision;
    expect(stop).toMatchObject({ decision: "STOP", rung: 3, by: "curve" });
    expect(stop.cutoff).toBeCloseTo(good(50), 6);
    expect(stop.reason).toMatch(/^P\(beat 0\.3566 at 50\) = 0\.\d+ %/);
    expect(ds.slice(0, -1).every((d) => d.decision === "CONTINUE")).toBe(true);
  });

  it("keeps a steep curve that extrapolates past the best (once it has points to show its slope)", () => {
    // From t=3 on: at t=1 one point has no slope, and this curve is then the worst of all.
    const s = make({ gracePeriod: 3 });
    withPeers(s);
    const ds = run(s, "steep", steep, 27);
    expect(ds.map((d) => d.decision)).not.toContain("STOP");
    expect((ds[26] as SchedulerDecision).rung).toBe(27);
    // A flat curve at that level is stopped at the same first decision point.
    expect(run(s, "flat-high", () => 1.12, 27).at(-1)).toMatchObject({ decision: "STOP", rung: 3 });
  });

  it("mirrors in max mode", () => {
    const s = make({ mode: "max", gracePeriod: 2 });
    withPeers(s, "max");
    const ds = run(s, "flat", (t) => 1 - flat(t));
    expect(ds.at(-1)).toMatchObject({ decision: "STOP", rung: 3 });
    expect((ds.at(-1) as SchedulerDecision).cutoff).toBeCloseTo(1 - good(50), 6);
    const kept = run(s, "steep", (t) => 1 - steep(t), 27);
    expect(kept.map((d) => d.decision)).not.toContain("STOP");
  });

  it("is a pure function of the calls: two instances fed the same sequence decide the same", () => {
    const feed = (s: CurveStopping) => {
      const out: SchedulerDecision[] = [];
      const fs = [
        good,
        flat,
        steep,
        (t: number) => 0.5 + 0.2 * Math.sin(t),
        (t: number) => (t === 4 ? Number.NaN : good(t) + 0.02),
      ];
      for (let round = 0; round < 3; round++) {
        fs.forEach((f, i) => {
          const trial = `r${round}t${i}`;
          for (let t = 1; t <= 50; t++) {
            const d = s.onResult(trial, t, f(t) + 0.001 * round);
            out.push(d);
            if (d.decision === "STOP") {
              s.onComplete(trial, t, f(t));
              break;
            }
          }
        });
      }
      return out;
    };
    const a = feed(make({ milestones: undefined, seed: 5 } as Partial<CurveStoppingOptions>));
    const b = feed(make({ milestones: undefined, seed: 5 } as Partial<CurveStoppingOptions>));
    expect(b).toEqual(a);
    expect(a.some((d) => d.decision === "STOP" && d.reason.startsWith("P("))).toBe(true);
  });

  it("uses the median rule until minCompleted trials reached maxT, and says so", () => {
    const s = make({ milestones: undefined } as Partial<CurveStoppingOptions>);
    for (const [trial, level] of [
      ["a", 0.5],
      ["b", 0.6],
      ["c", 0.7],
    ] as const) {
      expect(s.onResult(trial, 1, level).reason).toMatch(/^0 of 3 completed trials needed; median rule: \d others reached 1/);
    }
    expect(s.onResult("d", 1, 0.55)).toMatchObject({
      decision: "CONTINUE",
      cutoff: 0.6,
      reason: "0 of 3 completed trials needed; median rule: not worse than the median 0.6000 at 1",
    });
    expect(s.onResult("e", 1, 0.65)).toMatchObject({ decision: "STOP", reason: expect.stringMatching(/worse than the median/) });
  });

  it("stops a diverged value, and at max_t", () => {
    const s = make();
    expect(s.onResult("x", 1, Number.NaN)).toMatchObject({ decision: "STOP", reason: "diverged value" });
    expect(s.onResult("y", 2, Number.POSITIVE_INFINITY)).toMatchObject({ decision: "STOP", reason: "diverged value" });
    expect(s.onResult("z", 50, 0.9)).toEqual({ decision: "STOP", rung: null, cutoff: null, by: "curve", reason: "max_t" });
    expect(s.onResult("z", 60, Number.NaN)).toMatchObject({ decision: "STOP", reason: "max_t" });
  });

  it("decides only at milestones, after the grace period", () => {
    const s = make({ gracePeriod: 3 });
    expect(s.onResult("a", 1, 0.5)).toMatchObject({ decision: "CONTINUE", reason: "grace period" });
    expect(s.onResult("a", 3, 0.5).rung).toBe(3);
    expect(s.onResult("a", 4, 0.5)).toMatchObject({ rung: null, reason: "not a milestone" });
    // a result that jumps past a milestone is judged for it
    expect(s.onResult("a", 12, 0.5).rung).toBe(9);
    expect(s.onResult("a", 13, 0.5).reason).toBe("not a milestone");
  });

  it("refuses bad options and brackets", () => {
    expect(() => make({ probability: 1.5 })).toThrow(SchedulerOptionsError);
    expect(() => make({ maxT: 0, topK: 0 })).toThrow(/maxT: .*topK: /);
    expect(() => make().onTrialAdd("a", { bracket: 1 })).toThrow(RangeError);
    expect(make().onTrialAdd("a")).toEqual({ bracket: null });
  });
});
