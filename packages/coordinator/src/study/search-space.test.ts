import { describe, expect, it } from "vitest";
import type { ParamSpec, SearchSpec } from "../index.js";
import { countTrials, createRng, generateTrials, parseParam, sampleParam, trialId } from "../index.js";

function search(space: Record<string, ParamSpec>, extra: Partial<SearchSpec> = {}): { search: SearchSpec } {
  return { search: { algorithm: "random", samples: 1, seed: 0, space, ...extra } };
}

function draws(p: ParamSpec, n = 4000, seed = 1): (string | number | boolean)[] {
  const rng = createRng(seed, "test");
  return Array.from({ length: n }, () => sampleParam(p, rng));
}

describe("createRng", () => {
  it("is deterministic per seed and stream, and uniform in [0, 1)", () => {
    const seq = (seed: number, stream = "") => {
      const r = createRng(seed, stream);
      return Array.from({ length: 5 }, () => r.next());
    };
    expect(seq(7)).toEqual(seq(7));
    expect(seq(7)).not.toEqual(seq(8));
    expect(seq(7, "a")).not.toEqual(seq(7, "b"));
    expect(seq(2 ** 40)).not.toEqual(seq(0)); // high bits matter
    const r = createRng(3);
    let sum = 0;
    for (let i = 0; i < 20_000; i++) {
      const x = r.next();
      expect(x >= 0 && x < 1).toBe(true);
      sum += x;
    }
    expect(sum / 20_000).toBeCloseTo(0.5, 1);
  });
});

describe("generateTrials", () => {
  const space: Record<string, ParamSpec> = {
    lr: { kind: "loguniform", lower: 1e-4, upper: 1e-1 },
    batch_size: { kind: "choice", values: [32, 64, 128] },
    optimizer: { kind: "grid", values: ["sgd", "adam"] },
    layers: { kind: "grid", values: [1, 2, 3] },
    tag: { kind: "constant", value: "x" },
  };

  it("gives the same trials for the same seed and different ones for another seed", () => {
    const a = generateTrials(search(space, { samples: 5, seed: 7 }));
    const b = generateTrials(search(space, { samples: 5, seed: 7 }));
    const c = generateTrials(search(space, { samples: 5, seed: 8 }));
    expect(a).toEqual(b);
    expect(a.map((t) => t.params.lr)).not.toEqual(c.map((t) => t.params.lr));
  });

  it("crosses grid axes with every random sample: samples x grid points, each sample repeated per point", () => {
    const trials = generateTrials(search(space, { samples: 3 }));
    expect(trials).toHaveLength(3 * 2 * 3);
    expect(countTrials(search(space, { samples: 3 }).search)).toBe(18);
    for (let s = 0; s < 3; s++) {
      const group = trials.slice(s * 6, s * 6 + 6);
      // one random draw per sample, shared by all six grid points
      expect(new Set(group.map((t) => t.params.lr)).size).toBe(1);
      expect(new Set(group.map((t) => t.params.batch_size)).size).toBe(1);
      // every grid point exactly once, first sorted key (layers) slowest
      expect(group.map((t) => `${t.params.layers}/${t.params.optimizer}`)).toEqual([
        "1/sgd",
        "1/adam",
        "2/sgd",
        "2/adam",
        "3/sgd",
        "3/adam",
      ]);
      for (const t of group) expect(t.params.tag).toBe("x");
    }
    expect(new Set(trials.map((t) => t.params.lr)).size).toBe(3);
  });

  it("numbers trials t0001 … in order, sorted parameter keys", () => {
    const trials = generateTrials(search(space, { samples: 2 }));
    expect(trials.map((t) => t.trial).slice(0, 3)).toEqual(["t0001", "t0002", "t0003"]);
    expect(trials[11]?.trial).toBe("t0012");
    expect(Object.keys(trials[0]?.params ?? {})).toEqual(["batch_size", "layers", "lr", "optimizer", "tag"]);
    expect(trialId(0, 5)).toBe("t0001");
    expect(trialId(9999, 12000)).toBe("t10000");
    expect(trialId(0, 12000)).toBe("t00001");
  });

  it("grid algorithm enumerates choice lists too, samples times over", () => {
    const grid = search(
      { a: { kind: "choice", values: [1, 2] }, b: { kind: "grid", values: ["x", "y", "z"] } },
      { algorithm: "grid", samples: 2 },
    );
    const trials = generateTrials(grid);
    expect(trials).toHaveLength(12);
    expect(trials.slice(0, 6).map((t) => `${t.params.a}${t.params.b}`)).toEqual(["1x", "1y", "1z", "2x", "2y", "2z"]);
    expect(trials.slice(6).map((t) => t.params)).toEqual(trials.slice(0, 6).map((t) => t.params));
  });

  it("does not depend on the order of keys, and adding a parameter leaves the others' draws alone", () => {
    const ab = generateTrials(
      search({ a: { kind: "uniform", lower: 0, upper: 1 }, b: { kind: "randint", lower: 0, upper: 1000 } }, { samples: 4 }),
    );
    const ba = generateTrials(
      search({ b: { kind: "randint", lower: 0, upper: 1000 }, a: { kind: "uniform", lower: 0, upper: 1 } }, { samples: 4 }),
    );
    expect(ba).toEqual(ab);
    const abc = generateTrials(
      search(
        {
          a: { kind: "uniform", lower: 0, upper: 1 },
          aa: { kind: "uniform", lower: 0, upper: 1 },
          b: { kind: "randint", lower: 0, upper: 1000 },
        },
        { samples: 4 },
      ),
    );
    expect(abc.map((t) => [t.params.a, t.params.b])).toEqual(ab.map((t) => [t.params.a, t.params.b]));
  });

  it("keeps earlier trials when samples grows", () => {
    const few = generateTrials(search({ x: { kind: "uniform", lower: 0, upper: 1 } }, { samples: 3 }));
    const more = generateTrials(search({ x: { kind: "uniform", lower: 0, upper: 1 } }, { samples: 10 }));
    expect(more.slice(0, 3)).toEqual(few);
  });
});

describe("sampling bounds", () => {
  it("loguniform stays in [lower, upper) and is uniform in log space", () => {
    const xs = draws({ kind: "loguniform", lower: 1e-4, upper: 1e-1 }) as number[];
    for (const x of xs) expect(x >= 1e-4 && x < 1e-1).toBe(true);
    // a quarter of the log range lies below 10^-3.25
    const below = xs.filter((x) => x < 10 ** -3.25).length / xs.length;
    expect(below).toBeGreaterThan(0.22);
    expect(below).toBeLessThan(0.28);
  });

  it("uniform stays in [lower, upper)", () => {
    const xs = draws({ kind: "uniform", lower: -0.5, upper: 0.5 }) as number[];
    for (const x of xs) expect(x >= -0.5 && x < 0.5).toBe(true);
    expect(Math.min(...xs)).toBeLessThan(-0.49);
    expect(Math.max(...xs)).toBeGreaterThan(0.49);
  });

  it("randint gives integers in [lower, upper), upper exclusive, both ends reached", () => {
    const xs = draws({ kind: "randint", lower: 32, upper: 36 }) as number[];
    for (const x of xs) expect(Number.isInteger(x) && x >= 32 && x < 36).toBe(true);
    expect(new Set(xs)).toEqual(new Set([32, 33, 34, 35]));
  });

  it("choice picks only listed values, all of them", () => {
    const xs = draws({ kind: "choice", values: [32, 64, 128] });
    expect(new Set(xs)).toEqual(new Set([32, 64, 128]));
  });

  it("quniform and qloguniform give clean multiples of q within [lower, upper]", () => {
    const q = draws({ kind: "quniform", lower: 0, upper: 1, q: 0.1 }) as number[];
    for (const x of q) {
      expect(x >= 0 && x <= 1).toBe(true);
      expect(Number((Math.round(x * 10) / 10).toFixed(1))).toBe(x); // 0.3, not 0.30000000000000004
    }
    expect(new Set(q).size).toBe(11);
    const ql = draws({ kind: "qloguniform", lower: 0.001, upper: 0.1, q: 0.001 }) as number[];
    for (const x of ql) {
      expect(x >= 0.001 && x <= 0.1).toBe(true);
      expect(Math.abs(x * 1000 - Math.round(x * 1000))).toBeLessThan(1e-9);
    }
  });

  it("randn has the requested mean and spread", () => {
    const xs = draws({ kind: "randn", mean: 3, sd: 2 }, 20_000) as number[];
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length);
    expect(mean).toBeCloseTo(3, 1);
    expect(Math.abs(sd - 2)).toBeLessThan(0.05);
  });
});

describe("parseParam", () => {
  it("reads constants and each distribution", () => {
    expect(parseParam(0.1)).toEqual({ param: { kind: "constant", value: 0.1 } });
    expect(parseParam("adam")).toEqual({ param: { kind: "constant", value: "adam" } });
    expect(parseParam({ randint: [32, 257] })).toEqual({ param: { kind: "randint", lower: 32, upper: 257 } });
    expect(parseParam({ quniform: [0, 1, 0.1] })).toEqual({ param: { kind: "quniform", lower: 0, upper: 1, q: 0.1 } });
    expect(parseParam({ randn: [0, 1] })).toEqual({ param: { kind: "randn", mean: 0, sd: 1 } });
    expect(parseParam({ grid: ["sgd", "adam"] })).toEqual({ param: { kind: "grid", values: ["sgd", "adam"] } });
  });

  it.each([
    [{ logunifrom: [1, 2] }, "", 'unknown distribution "logunifrom"'],
    [{ loguniform: [0, 1] }, "loguniform", "lower must be > 0 for a log scale, got 0"],
    [{ uniform: [1, 1] }, "uniform", "lower must be < upper"],
    [{ uniform: [1] }, "uniform", "must be [lower, upper] (numbers)"],
    [{ randint: [1.5, 3] }, "randint", "must be integers"],
    [{ quniform: [0, 1, 0.3] }, "quniform", "must be multiples of q (0.3)"],
    [{ randn: [0, 0] }, "randn", "sd must be > 0"],
    [{ choice: [] }, "choice", "non-empty list"],
    [{ grid: [1, [2]] }, "grid[1]", "must be a string, number or true/false"],
    [[1, 2], "", "a list is not a value"],
    [null, "", "must be a value or a distribution"],
    [{ uniform: [0, 1], choice: [1] }, "", "exactly one distribution"],
  ])("refuses %j at %j: %s", (raw, subpath, text) => {
    const r = parseParam(raw);
    expect(r.problems?.[0]?.subpath).toBe(subpath);
    expect(r.problems?.[0]?.message).toContain(text);
  });
});
