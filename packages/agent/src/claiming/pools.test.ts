import { describe, expect, it } from "vitest";
import type { SlotKind } from "../slots.js";
import { type Pool, pickPool, poolsFor, poolsThatFit } from "./pools.js";

describe("pools", () => {
  it("serves every gang size it could run, and no other", () => {
    expect(poolsFor(4, 0).map((p) => p.name)).toEqual(["gpu1", "gpu2", "gpu3", "gpu4"]);
    expect(poolsFor(0, 2).map((p) => p.name)).toEqual(["cpu1", "cpu2"]);
    expect(poolsFor(1, 1)).toEqual([
      { name: "gpu1", kind: "gpu", k: 1 },
      { name: "cpu1", kind: "cpu", k: 1 },
    ]);
  });

  it("fits only pools whose whole gang is free right now", () => {
    const pools = poolsFor(4, 1);
    const free = (counts: Record<SlotKind, number>) => (kind: SlotKind) => counts[kind];
    expect(poolsThatFit(pools, free({ gpu: 2, cpu: 0 })).map((p) => p.name)).toEqual(["gpu1", "gpu2"]);
    expect(poolsThatFit(pools, free({ gpu: 0, cpu: 1 })).map((p) => p.name)).toEqual(["cpu1"]);
    expect(poolsThatFit(pools, free({ gpu: 0, cpu: 0 }))).toEqual([]);
  });

  it("pulls from the largest gang that has work, else from the pool next in turn", () => {
    const fits = poolsFor(3, 0);
    const [g1, g2, g3] = fits as [Pool, Pool, Pool];
    expect(pickPool(fits, [5, 1, 0], g1)).toBe(g2);
    expect(pickPool(fits, [5, 0, 0], g3)).toBe(g1);
    expect(pickPool(fits, [0, 0, 2], g1)).toBe(g3);
    expect(pickPool(fits, [0, 0, 0], g2)).toBe(g2);
    expect(pickPool(fits, [], g3)).toBe(g3);
  });
});
