import { describe, expect, it } from "vitest";
import { compileSchedulerOptions, type PbtOptions } from "../scheduling/index.js";
import { Pbt } from "./pbt.js";
import type { ParamSpec } from "./search-space.js";

const options = (o: Partial<PbtOptions> = {}) =>
  ({
    ...(compileSchedulerOptions({
      scheduler: "pbt",
      mode: "max",
      perturbationInterval: 2,
      quantileFraction: 0.25,
      maxT: 10,
    }) as PbtOptions),
    resampleProbability: 0,
    ...o,
  }) as PbtOptions;

const QUALITY: ParamSpec = { kind: "grid", values: [0.2, 0.4, 0.6, 0.8] };
const LR: ParamSpec = { kind: "loguniform", lower: 1e-4, upper: 1e-1 };

function population(pbt: Pbt, checkpoints = true) {
  const values = { a: 0.2, b: 0.4, c: 0.6, d: 0.8 } as const;
  for (const [trial, q] of Object.entries(values)) {
    pbt.onTrialAdd(trial);
    pbt.setParams(trial, { quality: q, lr: 0.01 });
    if (checkpoints) pbt.onCheckpoint(trial);
  }
  return values;
}

describe("population-based training (Ray's asynchronous PBT)", () => {
  it("looks at a trial every perturbation interval; the bottom quantile exploits the top one and perturbs its parameters", () => {
    const pbt = new Pbt(options(), { quality: QUALITY, lr: LR }, 1);
    const values = population(pbt);
    expect(pbt.onResult("a", 1, values.a)).toMatchObject({ decision: "CONTINUE", reason: "between looks" });
    // First looks: a, alone, has no population yet; then each joins the ranking.
    expect(pbt.onResult("a", 2, values.a)).toMatchObject({ decision: "CONTINUE", reason: "no population yet" });
    for (const t of ["b", "c", "d"] as const) expect(pbt.onResult(t, 2, values[t]).decision).toBe("CONTINUE");
    // a's next look: it is the bottom 1 of 4 (⌈4 · 0.25⌉): it exploits the top one, d.
    const d = pbt.onResult("a", 4, 0.21);
    expect(d).toMatchObject({ decision: "EXPLOIT", exploit: { donor: "d" } });
    // d's parameters, each one perturbed: quality one place left or right in its grid, lr × 0.8 or 1.2.
    expect([0.6, 0.8]).toContain(d.exploit?.params.quality);
    const lr = d.exploit?.params.lr as number;
    expect([0.008, 0.012].map((x) => Number(x.toFixed(6)))).toContain(Number(lr.toFixed(6)));
    // The exploit carried out: a takes d's parameters, last look and score; it is no longer the bottom.
    pbt.onExploit("a", "d", d.exploit?.params ?? {});
    expect(pbt.onResult("a", 3, 0.79).decision).toBe("CONTINUE");
    expect(pbt.onResult("b", 4, 0.41)).toMatchObject({ decision: "EXPLOIT" });
    expect(pbt.onResult("c", 10, 0.7)).toMatchObject({ decision: "STOP", reason: "max_t" });
  });

  it("exploits only trials that stored a checkpoint, resamples with its probability, and replays to the same draws", () => {
    const none = new Pbt(options(), { quality: QUALITY }, 1);
    population(none, false);
    for (const t of ["a", "b", "c", "d"]) none.onResult(t, 2, 0.1);
    expect(none.onResult("a", 4, 0.0)).toMatchObject({
      decision: "CONTINUE",
      reason: "no trial of the top quantile has a checkpoint",
    });

    const run = (seed: number) => {
      const pbt = new Pbt(options({ resampleProbability: 1 }), { quality: QUALITY, lr: LR }, seed);
      population(pbt);
      for (const t of ["b", "c", "d"]) pbt.onResult(t, 2, t === "d" ? 0.9 : 0.5);
      pbt.onResult("a", 2, 0.2);
      return pbt.onResult("a", 4, 0.1).exploit?.params;
    };
    const drawn = run(7);
    expect(drawn?.lr).toBeGreaterThanOrEqual(1e-4);
    expect(drawn?.lr).toBeLessThanOrEqual(1e-1);
    expect([0.2, 0.4, 0.6, 0.8]).toContain(drawn?.quality);
    expect(run(7)).toEqual(drawn);
  });
});
