import { describe, expect, it } from "vitest";
import { ashaCutoff, ashaPercentile, nanPercentile } from "../index.js";

const fOf = (rf: number) => ashaPercentile(rf) / 100;

describe("ASHA percentile fraction", () => {
  it("is computed in float64 as Ray does: rf=3 lands a hair above 2/3", () => {
    expect(fOf(2)).toBe(0.5);
    expect(fOf(3)).toBe(0.6666666666666667);
    expect(fOf(3)).toBeGreaterThan(2 / 3);
    expect(fOf(4)).toBe(0.75);
  });
});

describe("nanPercentile (numpy linear method)", () => {
  it("interpolates between order statistics of unsorted input", () => {
    expect(nanPercentile([4, 1, 3, 2], 50)).toBe(2.5);
    expect(nanPercentile([4, 1, 3, 2], 75)).toBe(3.25); // h = 2.25: v2 + (v3 - v2) * 0.25
    expect(nanPercentile([1, 2, 3, 4, 5], 75)).toBe(4); // h = 3 exactly
    expect(nanPercentile([10, 20], 50)).toBe(15);
  });

  it("uses the g >= 0.5 branch b - d*(1-g) and the g < 0.5 branch a + d*g", () => {
    // n = 3, q = 75: h = 1.5, g = 0.5 -> v2 - (v2 - v1) * 0.5
    expect(nanPercentile([0, 1, 3], 75)).toBe(2);
    // n = 4, q = 50: h = 1.5; n = 5, q = 60: h = 2.4 -> v2 + d * 0.4
    expect(nanPercentile([0, 10, 20, 30, 40], 60)).toBeCloseTo(24, 12);
  });

  it("returns the only value for n = 1 and NaN when nothing is left after dropping NaN", () => {
    expect(nanPercentile([7], 66)).toBe(7);
    expect(nanPercentile([], 50)).toBeNaN();
    expect(nanPercentile([Number.NaN, Number.NaN], 50)).toBeNaN();
  });

  it("drops NaN before interpolating", () => {
    expect(nanPercentile([Number.NaN, 450], 50)).toBe(450);
    expect(nanPercentile([1, Number.NaN, 3], 50)).toBe(2);
  });

  it("turns neighbours touching infinity into NaN as numpy does", () => {
    const inf = Number.POSITIVE_INFINITY;
    expect(nanPercentile([inf], 50)).toBeNaN(); // inf - inf
    expect(nanPercentile([-inf], 50)).toBeNaN();
    expect(nanPercentile([5, inf], 50)).toBeNaN(); // inf - inf * 0.5
    expect(nanPercentile([5, 6, inf], 50)).toBeNaN(); // 6 + inf * 0 = NaN
    expect(nanPercentile([-inf, 5], 50)).toBe(-inf); // 5 - inf * 0.5
  });

  it("reproduces the rf=3 tie artifact exactly for n = 10, 16, 19, 22, 28, 31", () => {
    const v = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    // h = 9 * 0.6666666666666667 = 6.000000000000001, so the cutoff is 6 + 2^-50, not 6.
    expect(9 * fOf(3)).toBe(6.000000000000001);
    expect(ashaCutoff(v, 3)).toBe(6.000000000000001);
    expect(ashaCutoff(v, 3)).toBeGreaterThan(6);

    const artifacts: number[] = [];
    for (let n = 2; n <= 31; n++) {
      const exact = ((n - 1) * 2) / 3;
      if (Number.isInteger(exact) && (n - 1) * fOf(3) > exact) artifacts.push(n);
    }
    expect(artifacts).toEqual([10, 16, 19, 22, 28, 31]);
  });

  it("has no such indices for rf = 2 and rf = 4, and has them for rf = 6 (n = 7, 13, 19)", () => {
    const hits = (rf: number, exactOf: (n: number) => number) => {
      const out: number[] = [];
      for (let n = 2; n <= 20; n++) {
        const exact = exactOf(n);
        if (Number.isInteger(exact) && (n - 1) * fOf(rf) !== exact) out.push(n);
      }
      return out;
    };
    expect(hits(2, (n) => (n - 1) / 2)).toEqual([]);
    expect(hits(4, (n) => ((n - 1) * 3) / 4)).toEqual([]);
    expect(hits(6, (n) => ((n - 1) * 5) / 6)).toEqual([7, 13, 19]);
  });

  it("ashaCutoff: no records -> null, only NaN -> NaN", () => {
    expect(ashaCutoff([], 4)).toBeNull();
    expect(ashaCutoff([Number.NaN], 4)).toBeNaN();
    expect(ashaCutoff([3, 5], 2)).toBe(4);
  });
});
