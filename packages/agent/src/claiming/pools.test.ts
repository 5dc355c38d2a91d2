import { describe, expect, it } from "vitest";
import { type SlotKind, Slots } from "../slots.js";
import { idlePool, type Pool, pickPool, poolsFor, poolsThatFit } from "./pools.js";

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

  it("offers a gang only the whole GPUs free, never MIG instances", () => {
    // Two whole GPUs and two MIG instances: one whole GPU busy leaves no gang of two, though three
    // units are free (a gang pulled then could not be taken, and would come straight back).
    const slots = new Slots(
      [
        { index: 0, memoryTotalMiB: 81_920, mig: false },
        { index: 1, memoryTotalMiB: 81_920, mig: false },
        { index: 300, memoryTotalMiB: 9_984, mig: true },
        { index: 301, memoryTotalMiB: 9_984, mig: true },
      ],
      0,
    );
    const pools = poolsFor(slots.maxGang, 0);
    const fitting = () => poolsThatFit(pools, (kind, k) => slots.free(kind, k)).map((p) => p.name);
    expect(fitting()).toEqual(["gpu1", "gpu2"]);
    const holder = { study: "s", trial: "t1", attempt: 1, busyShare: null };
    expect(slots.take("gpu", 1, holder, 0)).toEqual([0]);
    expect(slots.free("gpu")).toBe(3);
    expect(slots.free("gpu", 2)).toBe(1);
    expect(fitting()).toEqual(["gpu1"]);
    expect(slots.take("gpu", 2, { ...holder, trial: "t2" })).toBeNull();
    slots.release("gpu", [0], holder);
    expect(slots.take("gpu", 2, { ...holder, trial: "t2" })).toEqual([0, 1]);
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

  it("waits on a pool in use when no pool holds work, else on each pool in turn", () => {
    const fits = poolsFor(1, 0, { shares: true });
    const [g1, half] = [fits[0] as Pool, fits.find((p) => p.name === "gpu1of2") as Pool];
    const inUse = fits.map((p) => p === g1);
    for (let turn = 0; turn < fits.length; turn++) expect(idlePool(fits, inUse, turn)).toBe(g1);
    const both = fits.map((p) => p === g1 || p === half);
    expect([0, 1, 2, 3].map((turn) => idlePool(fits, both, turn).name)).toEqual(["gpu1", "gpu1of2", "gpu1", "gpu1of2"]);
    expect(fits.map((_, turn) => idlePool(fits, [], turn))).toEqual(fits);
  });
});
