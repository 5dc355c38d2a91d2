import { describe, expect, it } from "vitest";
import { createRng } from "../common/index.js";
import type { ParamSpec } from "../study/index.js";
import type { ModelSamplerOptions, Observation, SampledValue, SpaceParam } from "./index.js";
import { bohbBudget, scoreCandidates, suggest, suggestParams } from "./index.js";

// The study passes its compiled ParamSpec objects straight in: they must be assignable.
const fromStudy: Readonly<Record<string, SpaceParam>> = {} as Readonly<Record<string, ParamSpec>>;
void fromStudy;

type Space = Readonly<Record<string, SpaceParam>>;

const every: Space = {
  c: { kind: "constant", value: "adam" },
  ch: { kind: "choice", values: ["a", 2, true] },
  g: { kind: "grid", values: [16, 32, 64] },
  u: { kind: "uniform", lower: -1, upper: 1 },
  lu: { kind: "loguniform", lower: 1e-5, upper: 1e-1 },
  ri: { kind: "randint", lower: 2, upper: 5 },
  qu: { kind: "quniform", lower: 0, upper: 1, q: 0.1 },
  qlu: { kind: "qloguniform", lower: 5, upper: 1000, q: 5 },
  rn: { kind: "randn", mean: 3, sd: 0.5 },
};

const tpe = (seed: number, more: Partial<ModelSamplerOptions> = {}): ModelSamplerOptions => ({
  algorithm: "tpe",
  mode: "min",
  seed,
  ...more,
});

const done = (params: Record<string, SampledValue>, value: number, t = 1): Observation => ({
  params,
  results: [{ t, value }],
  state: "done",
});

function isMultiple(x: number, q: number): boolean {
  const r = x / q;
  return Math.abs(r - Math.round(r)) < 1e-9 * Math.max(1, Math.abs(r));
}

/** Every value in its kind's domain. */
function expectInSpace(space: Space, params: Record<string, SampledValue>): void {
  expect(Object.keys(params)).toEqual(Object.keys(space).sort());
  for (const [k, p] of Object.entries(space)) {
    const v = params[k];
    switch (p.kind) {
      case "constant":
        expect(v).toBe(p.value);
        break;
      case "choice":
      case "grid":
        expect(p.values).toContain(v);
        break;
      case "uniform":
      case "loguniform":
        expect(typeof v).toBe("number");
        expect(v as number).toBeGreaterThanOrEqual(p.lower);
        expect(v as number).toBeLessThan(p.upper);
        break;
      case "randint":
        expect(Number.isInteger(v)).toBe(true);
        expect(v as number).toBeGreaterThanOrEqual(p.lower);
        expect(v as number).toBeLessThan(p.upper);
        break;
      case "quniform":
      case "qloguniform":
        expect(v as number).toBeGreaterThanOrEqual(p.lower);
        expect(v as number).toBeLessThanOrEqual(p.upper);
        expect(isMultiple(v as number, p.q)).toBe(true);
        break;
      case "randn":
        expect(Number.isFinite(v)).toBe(true);
        break;
    }
  }
}

/** A random history over `every` with a value that prefers small u. */
function historyOver(space: Space, n: number, seed: number, f: (p: Record<string, SampledValue>) => number): Observation[] {
  const out: Observation[] = [];
  for (let i = 0; i < n; i++) {
    const p = suggestParams(space, [], tpe(seed), `h${i}`);
    out.push(done(p, f(p)));
  }
  return out;
}

describe("suggestParams: determinism and domains", () => {
  it("is a pure function of its inputs; the key changes the draw", () => {
    const history = historyOver(every, 30, 1, (p) => p.u as number);
    const a = suggestParams(every, history, tpe(7), "t0031");
    expect(suggestParams(every, history, tpe(7), "t0031")).toEqual(a);
    expect(suggestParams(every, [...history], tpe(7), "t0031")).toEqual(a);
    expect(suggestParams(every, history, tpe(7), "t0032")).not.toEqual(a);
    expect(suggestParams(every, history, tpe(8), "t0031")).not.toEqual(a);
  });

  it("startup draws are random, cover every kind's domain, and use the sorted keys", () => {
    const seen = new Map<string, Set<SampledValue>>();
    for (let i = 0; i < 300; i++) {
      const p = suggestParams(every, [], tpe(3), `t${i}`);
      expectInSpace(every, p);
      for (const [k, v] of Object.entries(p)) seen.set(k, (seen.get(k) ?? new Set()).add(v));
    }
    expect(seen.get("ch")?.size).toBe(3);
    expect(seen.get("g")?.size).toBe(3); // grid is drawn like choice
    expect(seen.get("ri")).toEqual(new Set([2, 3, 4]));
    expect(seen.get("qu")?.size).toBe(11);
    const u = [...(seen.get("u") as Set<number>)] as number[];
    expect(Math.min(...u)).toBeLessThan(-0.9);
    expect(Math.max(...u)).toBeGreaterThan(0.9);
    const lu = [...(seen.get("lu") as Set<number>)] as number[];
    expect(lu.filter((x) => x < 1e-4).length).toBeGreaterThan(40); // a quarter of the log range
    const rn = [...(seen.get("rn") as Set<number>)] as number[];
    const mean = rn.reduce((s, x) => s + x, 0) / rn.length;
    expect(Math.abs(mean - 3)).toBeLessThan(0.15);
  });

  it("fewer than startupTrials usable trials is still random: running and failed ones do not count", () => {
    const history: Observation[] = [
      ...historyOver(every, 9, 2, (p) => p.u as number),
      { params: suggestParams(every, [], tpe(2), "r"), results: [], state: "running" },
      { params: suggestParams(every, [], tpe(2), "f"), results: [], state: "failed" },
    ];
    expect(suggestParams(every, history, tpe(5), "x")).toEqual(suggestParams(every, [], tpe(5), "x"));
    expect(suggestParams(every, history, tpe(5, { startupTrials: 5 }), "x")).not.toEqual(suggestParams(every, [], tpe(5), "x"));
  });

  it("model draws respect bounds, quantization, integers and choices for every kind", () => {
    const history = historyOver(every, 40, 4, (p) => (p.u as number) + (p.ri as number) + (p.ch === 2 ? 0 : 1));
    for (let i = 0; i < 200; i++) {
      const p = suggestParams(every, history, tpe(i), `m${i}`);
      expectInSpace(every, p);
      history.push(done(p, (p.u as number) + (p.ri as number) + (p.ch === 2 ? 0 : 1)));
    }
  });

  it("returns just the constants for a space without distributions", () => {
    expect(suggestParams({ b: { kind: "constant", value: 1 }, a: { kind: "constant", value: true } }, [], tpe(1), "k")).toEqual({
      a: true,
      b: 1,
    });
  });

  it("refuses options that cannot work", () => {
    expect(() => suggestParams(every, [], tpe(1, { goodShare: 0 }), "k")).toThrow(RangeError);
    expect(() => suggestParams(every, [], tpe(1, { candidates: 0 }), "k")).toThrow(RangeError);
    expect(() => suggestParams(every, [], { algorithm: "bohb", mode: "min", seed: 1 }, "k")).toThrow(/budgets/);
  });
});

// ---- optimisation on known problems -------------------------------------------------------------

const quadSpace: Space = {
  lr: { kind: "loguniform", lower: 1e-5, upper: 1 },
  y: { kind: "uniform", lower: -5, upper: 5 },
};
/** Minimum 0 at lr = 1e-2, y = 1. */
const quad = (p: Record<string, SampledValue>) => (Math.log10(p.lr as number) + 2) ** 2 + ((p.y as number) - 1) ** 2;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return ((s[(s.length - 1) >> 1] as number) + (s[s.length >> 1] as number)) / 2;
};

function bestOfLoop(seed: number, n: number, startupTrials: number): number {
  const history: Observation[] = [];
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    const p = suggestParams(quadSpace, history, tpe(seed, { startupTrials }), `t${i}`);
    const v = quad(p);
    best = Math.min(best, v);
    history.push(done(p, v));
  }
  return best;
}

describe("suggestParams: TPE finds better points than random", () => {
  it("on a 2-D quadratic over loguniform × uniform, 60 TPE suggestions beat 60 random draws (median of 10 seeds)", () => {
    const seeds = Array.from({ length: 10 }, (_, i) => 100 + i);
    const model = seeds.map((s) => bestOfLoop(s, 60, 10));
    const random = seeds.map((s) => bestOfLoop(s, 60, 1_000));
    expect(median(model)).toBeLessThan(0.2 * median(random));
    expect(median(model)).toBeLessThan(0.02);
  });

  it("says whether the model drew: not before startupTrials results, then yes", () => {
    const space: Space = { x: { kind: "uniform", lower: 0, upper: 1 } };
    const h = Array.from({ length: 9 }, (_, i) => done({ x: i / 10 }, Math.abs(i / 10 - 0.3)));
    expect(suggest(space, h, tpe(1), "a").usedModel).toBe(false);
    expect(suggest(space, [...h, done({ x: 0.95 }, 0.65)], tpe(1), "a").usedModel).toBe(true);
  });

  it("scores a finite set of candidates: the one near the good results scores highest; too little history scores nothing", () => {
    const space: Space = { x: { kind: "uniform", lower: 0, upper: 1 }, opt: { kind: "choice", values: ["a", "b"] } };
    const rng = createRng(5, "pool");
    const h: Observation[] = [];
    for (let i = 0; i < 40; i++) {
      const x = rng.next();
      const opt = rng.next() < 0.5 ? "a" : "b";
      h.push(done({ x, opt }, Math.abs(x - 0.8) + (opt === "b" ? 0 : 0.5)));
    }
    const pool = [
      { x: 0.1, opt: "a" },
      { x: 0.8, opt: "a" },
      { x: 0.79, opt: "b" },
      { x: 0.3, opt: "b" },
      { x: 0.5, opt: "c" }, // not a value of the space: never chosen
    ];
    const scores = scoreCandidates(space, h, tpe(1), pool) as number[];
    expect(scores).toHaveLength(5);
    const best = scores.indexOf(Math.max(...scores));
    expect(best).toBe(2);
    expect(scores[4]).toBe(Number.NEGATIVE_INFINITY);
    expect(scoreCandidates(space, h.slice(0, 3), tpe(1), pool)).toBeNull();
  });

  it("picks the better category in most suggestions after startup", () => {
    const space: Space = {
      opt: { kind: "choice", values: ["sgd", "adam", "rmsprop"] },
      x: { kind: "uniform", lower: 0, upper: 1 },
    };
    const f = (p: Record<string, SampledValue>) => (p.opt === "adam" ? 0 : 1) + 0.1 * (p.x as number);
    let adam = 0;
    const history: Observation[] = [];
    for (let i = 0; i < 60; i++) {
      const p = suggestParams(space, history, tpe(11), `t${i}`);
      if (i >= 10 && p.opt === "adam") adam++;
      history.push(done(p, f(p)));
    }
    expect(adam / 50).toBeGreaterThan(0.7);
  });

  it("ranks by the furthest t first: trials that ran longer are good even with worse values (max mode)", () => {
    const space: Space = { x: { kind: "uniform", lower: 0, upper: 1 } };
    const rng = createRng(5, "hist");
    const history: Observation[] = [];
    for (let i = 0; i < 40; i++) {
      const x = rng.next();
      // Trials near 0.8 survived to t = 9 with modest values; everything else was stopped at t = 1 with high ones.
      history.push(Math.abs(x - 0.8) < 0.1 ? done({ x }, 0.5, 9) : done({ x }, 10 + x, 1));
    }
    const xs = Array.from({ length: 30 }, (_, i) => suggestParams(space, history, tpe(i, { mode: "max" }), `k${i}`).x as number);
    expect(median(xs.map((x) => Math.abs(x - 0.8)))).toBeLessThan(0.12);
  });
});

describe("suggestParams: constant liar", () => {
  it("running trials at the good point push a parallel batch away from it", () => {
    const space: Space = { a: { kind: "uniform", lower: 0, upper: 1 }, b: { kind: "uniform", lower: 0, upper: 1 } };
    /** Mean distance to the good point (0.3, 0.3) of a batch of 40 suggestions made against one history. */
    const spread = (historySeed: number, constantLiar: boolean) => {
      const rng = createRng(historySeed, "hist");
      const history: Observation[] = [];
      for (let i = 0; i < 40; i++) {
        const a = rng.next();
        const b = rng.next();
        history.push(done({ a, b }, Math.hypot(a - 0.3, b - 0.3)));
      }
      // Eight trials already running in a tight cluster at the good point.
      for (let i = 0; i < 8; i++) {
        history.push({ params: { a: 0.29 + 0.02 * rng.next(), b: 0.29 + 0.02 * rng.next() }, results: [], state: "running" });
      }
      let sum = 0;
      for (let i = 0; i < 40; i++) {
        const p = suggestParams(space, history, tpe(21, { constantLiar }), `t${i}`);
        sum += Math.hypot((p.a as number) - 0.3, (p.b as number) - 0.3);
      }
      return sum / 40;
    };
    const seeds = [1, 2, 3, 4, 5];
    const liar = seeds.map((s) => spread(s, true));
    const plain = seeds.map((s) => spread(s, false));
    for (let i = 0; i < seeds.length; i++) expect(liar[i] as number).toBeGreaterThan(plain[i] as number);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(liar)).toBeGreaterThan(1.5 * mean(plain));
  });
});

describe("BOHB", () => {
  const space: Space = { x: { kind: "uniform", lower: 0, upper: 1 } };
  const bohb = (seed: number): ModelSamplerOptions => ({ algorithm: "bohb", mode: "min", seed, budgets: [1, 3, 9] });

  /** 20 trials stopped at t = 1, good near 0.8 there; `high` more that reached t = 3, good near 0.2 there. */
  function history(high: number): Observation[] {
    const rng = createRng(13, "bohb");
    const out: Observation[] = [];
    for (let i = 0; i < 20; i++) {
      const x = rng.next();
      out.push(done({ x }, Math.abs(x - 0.8), 1));
    }
    for (let i = 0; i < high; i++) {
      const x = rng.next();
      out.push({
        params: { x },
        results: [
          { t: 1, value: Math.abs(x - 0.8) },
          { t: 2, value: Math.abs(x - 0.5) },
          { t: 3, value: Math.abs(x - 0.2) },
        ],
        state: i % 2 === 0 ? "done" : "running",
      });
    }
    return out;
  }
  const meanDistance = (h: Observation[], to: number) => {
    let sum = 0;
    for (let i = 0; i < 30; i++) sum += Math.abs((suggestParams(space, h, bohb(i), `t${i}`).x as number) - to);
    return sum / 30;
  };

  it("fits the model at the lowest budget when only it has data, and suggestions concentrate where t=1 is good", () => {
    const h = history(0);
    expect(bohbBudget(h, bohb(1), space)).toBe(1);
    expect(meanDistance(h, 0.8)).toBeLessThan(0.12);
  });

  it("moves to a higher budget once enough trials reached it", () => {
    expect(bohbBudget(history(9), bohb(1), space)).toBe(1);
    const h = history(10);
    expect(bohbBudget(h, bohb(1), space)).toBe(3);
    expect(meanDistance(h, 0.2)).toBeLessThan(0.12);
  });

  it("uses the value at the largest t <= budget, and needs max(startupTrials, dims + 2) points", () => {
    const h: Observation[] = Array.from({ length: 4 }, (_, i) => ({
      params: { x: i / 4 },
      results: [
        { t: 1, value: i },
        { t: 5, value: i },
      ],
      state: "done" as const,
    }));
    expect(bohbBudget(h, { ...bohb(1), startupTrials: 3 }, space)).toBe(3); // reached 3 (t=5), value from t=1
    expect(bohbBudget(h, { ...bohb(1), startupTrials: 5 }, space)).toBeNull();
    expect(bohbBudget(h, { ...bohb(1), budgets: [1, 9], startupTrials: 3 }, space)).toBe(1);
  });

  it("falls back to a random draw when no budget has enough points", () => {
    const h = history(0).slice(0, 5);
    expect(bohbBudget(h, bohb(1), space)).toBeNull();
    expect(suggestParams(space, h, bohb(4), "k")).toEqual(suggestParams(space, [], bohb(4), "k"));
  });
});

describe("suggestParams: hostile history", () => {
  const space: Space = {
    lr: { kind: "loguniform", lower: 1e-4, upper: 1 },
    opt: { kind: "choice", values: ["sgd", "adam"] },
    n: { kind: "randint", lower: 1, upper: 4 },
  };
  const good = historyOver(space, 20, 31, (p) => Math.log10(p.lr as number) + (p.opt === "adam" ? 0 : 1));

  it("ignores an observation with a missing or wrongly typed param", () => {
    const junk: Observation[] = [
      done({ lr: 0.01, opt: "adam" }, -100),
      done({ lr: "0.01", opt: "adam", n: 2 } as unknown as Record<string, SampledValue>, -100),
      done({ lr: -1, opt: "adam", n: 2 }, -100),
      done({ lr: 0.01, opt: "nadam", n: 2 }, -100),
      done({ lr: 0.01, opt: "adam", n: 2.5 }, -100),
      done({ lr: Number.NaN, opt: "adam", n: 2 }, -100),
      { params: null, results: [{ t: 1, value: -100 }], state: "done" } as unknown as Observation,
      null as unknown as Observation,
    ];
    for (const key of ["a", "b", "c"]) {
      expect(suggestParams(space, [...good, ...junk], tpe(3), key)).toEqual(suggestParams(space, good, tpe(3), key));
    }
    expect(bohbBudget([...good, ...junk], { algorithm: "bohb", mode: "min", seed: 1, budgets: [1] }, space)).toBe(1);
  });

  it("survives empty results, all-NaN and infinite values, duplicate t and odd states", () => {
    const weird: Observation[] = good.map((o, i) => {
      switch (i % 6) {
        case 0:
          return { ...o, results: [] };
        case 1:
          return { ...o, results: [{ t: 1, value: Number.NaN }] };
        case 2:
          return { ...o, results: [{ t: 1, value: Number.NEGATIVE_INFINITY }] };
        case 3:
          return { ...o, results: [...o.results, { t: 1, value: 3 }, { t: Number.NaN, value: 1 }] };
        case 4:
          return { ...o, state: "lost" } as unknown as Observation;
        default:
          return { ...o, results: "many" } as unknown as Observation;
      }
    });
    for (const algorithm of ["tpe", "bohb"] as const) {
      for (let i = 0; i < 20; i++) {
        const opts: ModelSamplerOptions = { algorithm, mode: "max", seed: i, startupTrials: 2, budgets: [1, 2] };
        expectInSpace(space, suggestParams(space, weird, opts, `w${i}`));
      }
    }
  });

  it("with only diverged trials, keeps drawing valid points away from them", () => {
    const nan = good.map((o) => ({ ...o, results: [{ t: 1, value: Number.NaN }] }));
    for (let i = 0; i < 20; i++) expectInSpace(space, suggestParams(space, nan, tpe(i), `n${i}`));
  });

  it("a trial whose last value diverged ranks worst even with an earlier good value", () => {
    const s1: Space = { x: { kind: "uniform", lower: 0, upper: 1 } };
    const rng = createRng(17, "div");
    const h: Observation[] = [];
    for (let i = 0; i < 40; i++) {
      const x = rng.next();
      // Near 0.2: a great value at t = 1, then NaN at t = 2. Near 0.7: the best of the finite ones.
      if (Math.abs(x - 0.2) < 0.1)
        h.push({
          params: { x },
          results: [
            { t: 1, value: -50 },
            { t: 2, value: Number.NaN },
          ],
          state: "done",
        });
      else h.push(done({ x }, Math.abs(x - 0.7), 2));
    }
    const xs = Array.from({ length: 30 }, (_, i) => suggestParams(s1, h, tpe(i), `k${i}`).x as number);
    expect(median(xs.map((x) => Math.abs(x - 0.7)))).toBeLessThan(0.12);
  });
});

describe("suggestParams: cost", () => {
  it("1,000 suggestions against 1,000 observations in 8 dimensions", { timeout: 120_000 }, () => {
    const space: Space = {
      a: { kind: "uniform", lower: 0, upper: 1 },
      b: { kind: "loguniform", lower: 1e-5, upper: 1 },
      c: { kind: "randint", lower: 0, upper: 100 },
      d: { kind: "quniform", lower: 0, upper: 10, q: 0.5 },
      e: { kind: "qloguniform", lower: 1, upper: 1024, q: 1 },
      f: { kind: "randn", mean: 0, sd: 1 },
      g: { kind: "choice", values: ["x", "y", "z", "w"] },
      h: { kind: "uniform", lower: -3, upper: 3 },
    };
    const history = historyOver(space, 1000, 41, (p) => (p.a as number) + Math.abs(p.f as number));
    const started = performance.now();
    for (let i = 0; i < 1000; i++) expectInSpace(space, suggestParams(space, history, tpe(i), `t${i}`));
    const ms = performance.now() - started;
    console.info(`1000 suggestions with 1000 observations x 8 dims: ${ms.toFixed(0)} ms (${(ms / 1000).toFixed(2)} ms each)`);
  });
});
