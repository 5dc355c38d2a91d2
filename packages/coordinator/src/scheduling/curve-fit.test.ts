import { describe, expect, it } from "vitest";
import { createRng } from "../common/index.js";
import type { CurvePoint } from "./curve-fit.js";
import { cleanCurve, normalCdf, predictAt } from "./curve-fit.js";

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const curve = (f: (t: number) => number, ts: readonly number[]): CurvePoint[] => ts.map((t) => ({ t, y: f(t) }));

/** Box–Muller on the seeded RNG. */
function gauss(rng: { next(): number }): number {
  const u = Math.max(rng.next(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

describe("predictAt", () => {
  it("recovers an exact power law", () => {
    const f = (t: number) => 0.3 + 0.5 * t ** -0.7;
    const p = predictAt(curve(f, range(1, 12)), 50, "min");
    expect(p.usable).toBe(true);
    expect(Math.abs(p.mean - f(50))).toBeLessThan(0.005);
    // Not ~0: the slope term keeps a still-improving curve's sd open on purpose (0.35 of drop so far).
    expect(p.sd).toBeLessThan(0.06);
    // Once the curve has flattened, the same law is predicted tightly.
    const late = predictAt(curve(f, range(1, 40)), 50, "min");
    expect(Math.abs(late.mean - f(50))).toBeLessThan(0.001);
    expect(late.sd).toBeLessThan(0.01);
  });

  it("recovers an exact exponential", () => {
    const f = (t: number) => 0.2 + 0.6 * Math.exp(-0.25 * t);
    const p = predictAt(curve(f, range(1, 15)), 50, "min");
    expect(Math.abs(p.mean - f(50))).toBeLessThan(0.005);
    expect(p.sd).toBeLessThan(0.05);
  });

  it("mirrors in max mode", () => {
    const f = (t: number) => 0.9 - 0.5 * t ** -0.7;
    const p = predictAt(curve(f, range(1, 12)), 50, "max");
    expect(Math.abs(p.mean - f(50))).toBeLessThan(0.005);
  });

  it("predicts a flat curve near its level with a small sd", () => {
    const rng = createRng(7, "flat");
    const pts = range(1, 10).map((t) => ({ t, y: 0.69 + 0.002 * gauss(rng) }));
    const p = predictAt(pts, 50, "min");
    expect(Math.abs(p.mean - 0.69)).toBeLessThan(0.01);
    expect(p.sd).toBeLessThan(0.02);
  });

  it("is calibrated on noisy power laws: the truth is within mean ± 2 sd in most draws", () => {
    let inside = 0;
    const draws = 200;
    for (let s = 0; s < draws; s++) {
      const rng = createRng(s, "calibration");
      const c = 0.2 + 0.3 * rng.next();
      const a = 0.3 + 0.5 * rng.next();
      const alpha = 0.3 + 1.2 * rng.next();
      const noise = 0.005 + 0.015 * rng.next();
      const f = (t: number) => c + a * t ** -alpha;
      const pts = range(1, 15).map((t) => ({ t, y: f(t) + noise * gauss(rng) }));
      const p = predictAt(pts, 50, "min");
      if (Math.abs(p.mean - f(50)) <= 2 * p.sd) inside++;
    }
    expect(inside / draws).toBeGreaterThan(0.85);
  });

  it("gives a steep curve a wider sd than a flat one", () => {
    const steep = predictAt(
      curve((t) => 0.2 + 0.8 * t ** -0.3, range(1, 9)),
      50,
      "min",
    );
    const flat = predictAt(
      curve((t) => 0.69 + 0.001 * Math.sin(t), range(1, 9)),
      50,
      "min",
    );
    expect(steep.sd).toBeGreaterThan(3 * flat.sd);
  });

  it("handles gaps, duplicates (last wins) and any order", () => {
    const f = (t: number) => 0.3 + 0.5 * t ** -0.7;
    const pts: CurvePoint[] = [
      { t: 9, y: f(9) },
      { t: 2, y: 5 },
      { t: 1, y: f(1) },
      { t: 2, y: f(2) },
      { t: 20, y: f(20) },
      { t: 5, y: f(5) },
    ];
    const clean = cleanCurve(pts);
    expect([...clean.t]).toEqual([1, 2, 5, 9, 20]);
    expect(clean.y[1]).toBe(f(2));
    const p = predictAt(pts, 50, "min");
    expect(p.usable).toBe(true);
    expect(Math.abs(p.mean - f(50))).toBeLessThan(0.005);
  });

  it("says why it cannot predict, and never throws on bad input", () => {
    const allNaN = predictAt(
      range(1, 5).map((t) => ({ t, y: Number.NaN })),
      50,
      "min",
    );
    expect(allNaN).toMatchObject({ usable: false, nonFinite: 5 });
    expect(allNaN.why).toMatch(/too few points.*5 non-finite values dropped/);
    expect(predictAt([{ t: 1, y: 0.5 }], 50, "min")).toMatchObject({ usable: false, why: "too few points (1 usable, 3 needed)" });
    expect(predictAt([], 50, "min").usable).toBe(false);
    const badT = predictAt(
      [
        { t: 0, y: 1 },
        { t: -3, y: 1 },
        { t: Number.NaN, y: 1 },
        { t: 1, y: 0.9 },
        { t: 2, y: 0.8 },
      ],
      50,
      "min",
    );
    expect(badT.usable).toBe(false);
    expect(badT.why).toMatch(/3 points with t <= 0 or non-finite t dropped/);
    const mixed = predictAt(
      [...curve((t) => 1 / t, range(1, 6)), { t: 7, y: Number.POSITIVE_INFINITY }, { t: 8, y: Number.NaN }],
      50,
      "min",
    );
    expect(mixed.usable).toBe(true);
    expect(mixed.why).toBe("2 non-finite values dropped");
    expect(
      predictAt(
        curve((t) => 1 / t, range(1, 6)),
        0,
        "min",
      ).usable,
    ).toBe(false);
    expect(
      Number.isFinite(
        predictAt(
          curve(() => 3, range(1, 6)),
          50,
          "min",
        ).mean,
      ),
    ).toBe(true);
  });

  it("normalCdf", () => {
    expect(normalCdf(0)).toBeCloseTo(0.5, 6);
    expect(normalCdf(1.959964)).toBeCloseTo(0.975, 5);
    expect(normalCdf(-1.959964)).toBeCloseTo(0.025, 5);
    expect(normalCdf(Number.NEGATIVE_INFINITY)).toBe(0);
  });
});
