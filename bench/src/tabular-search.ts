import { readFileSync } from "node:fs";
import type { Observation, SpaceParam } from "@rung/coordinator";
import { parseLooseJson } from "./taskset.js";

/**
 * Model-based sampling on a table of learning curves. A TaskSet file is a fixed set of 1,000
 * configurations; Rung's model scores the configurations not drawn yet (search-efficiency.ts), and
 * Optuna's side maps each suggestion to the nearest one not drawn yet (in the unit cube of the space, log
 * scale where the space is log-uniform; `nearestUnused`). The search space is derived from the file the
 * same way for every file: a hyperparameter whose values are all positive and span two decades or more is
 * log-uniform over its range, any other is uniform over its range. Nothing here is tuned to one file.
 */
export interface TabularSpace {
  /** Hyperparameter names, sorted. */
  readonly keys: readonly string[];
  readonly space: Readonly<Record<string, SpaceParam>>;
  /** hp[config][key index], the raw values. */
  readonly hp: readonly Float64Array[];
  /** unit[config][key index]: the value in the unit cube of the space. */
  readonly unit: readonly Float64Array[];
  /** params[config]: the configuration as a trial's parameters. */
  readonly params: readonly Readonly<Record<string, number>>[];
}

export function loadHyperparameters(path: string): Record<string, number>[] {
  const raw = parseLooseJson(readFileSync(path, "utf8")) as { hp: Record<string, number> }[];
  return raw.map((c) => c.hp);
}

export function tabularSpace(configs: readonly Record<string, number>[]): TabularSpace {
  const keys = Object.keys(configs[0] ?? {}).sort();
  const space: Record<string, SpaceParam> = {};
  const toUnit: ((x: number) => number)[] = [];
  for (const k of keys) {
    const xs = configs.map((c) => c[k] as number);
    const lo = Math.min(...xs);
    const hi = Math.max(...xs);
    // The upper bound is exclusive in the space (uniform in [lower, upper)): nudge it past the largest value.
    const upper = hi + Math.abs(hi) * 1e-9 + Number.EPSILON;
    if (lo > 0 && hi / lo >= 100) {
      space[k] = { kind: "loguniform", lower: lo, upper };
      const a = Math.log(lo);
      const b = Math.log(upper);
      toUnit.push((x) => (Math.log(x) - a) / (b - a));
    } else {
      space[k] = { kind: "uniform", lower: lo, upper };
      toUnit.push((x) => (x - lo) / (upper - lo));
    }
  }
  const hp = configs.map((c) => Float64Array.from(keys, (k) => c[k] as number));
  const unit = hp.map((row) => Float64Array.from(row, (x, i) => (toUnit[i] as (x: number) => number)(x)));
  const params = hp.map((row) => Object.fromEntries(keys.map((k, i) => [k, row[i] as number])));
  return { keys, space, hp, unit, params };
}

/** The configuration not drawn yet that is nearest to `params` in the unit cube. */
export function nearestUnused(s: TabularSpace, params: Readonly<Record<string, unknown>>, used: Uint8Array): number | null {
  const target = Float64Array.from(s.keys, (k) => {
    const v = params[k];
    if (typeof v !== "number") return 0.5;
    const p = s.space[k] as { kind: string; lower: number; upper: number };
    return p.kind === "loguniform"
      ? (Math.log(v) - Math.log(p.lower)) / (Math.log(p.upper) - Math.log(p.lower))
      : (v - p.lower) / (p.upper - p.lower);
  });
  let best = -1;
  let bestD = Number.POSITIVE_INFINITY;
  for (let c = 0; c < s.unit.length; c++) {
    if (used[c]) continue;
    const u = s.unit[c] as Float64Array;
    let d = 0;
    for (let i = 0; i < u.length; i++) {
      const e = (u[i] as number) - (target[i] as number);
      d += e * e;
    }
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best < 0 ? null : best;
}

export type { Observation };
