import { describe, expect, it } from "vitest";
import { classNeeds, migIndex, orderPool, parseMemoryMiB, shareClass, sharePercent } from "./placement.js";

describe("GPU shares and pools", () => {
  it("puts a share in the pool of its class and whole GPUs in gpu<k>", () => {
    expect(orderPool({ gpus: 0.25, cpus: 0 })).toBe("gpu1of4");
    expect(orderPool({ gpus: 0.3, cpus: 0 })).toBe("gpu1of3");
    expect(orderPool({ gpus: 0.5, cpus: 0 })).toBe("gpu1of2");
    expect(orderPool({ gpus: 0.75, cpus: 0 })).toBe("gpu1of1");
    expect(orderPool({ gpus: 0.05, cpus: 0 })).toBe("gpu1of8");
    expect(orderPool({ gpus: 1, cpus: 0 })).toBe("gpu1");
    expect(orderPool({ gpus: 2, cpus: 0 })).toBe("gpu2");
    expect(orderPool({ gpus: 0, cpus: 2 })).toBe("cpu2");
    // Every order of a class fits the free share the class is pulled at.
    for (let pct = 1; pct < 100; pct++) expect(pct).toBeLessThanOrEqual(classNeeds(shareClass(pct)));
    expect(sharePercent(0.33)).toBe(33);
    expect(sharePercent(2)).toBe(100);
  });

  it("reads memory sizes with a unit, and numbers MIG instances after their GPU", () => {
    expect(parseMemoryMiB("10GiB")).toBe(10_240);
    expect(parseMemoryMiB("512 MiB")).toBe(512);
    expect(parseMemoryMiB("1.5gib")).toBe(1536);
    expect(parseMemoryMiB("16GB")).toBe(15_259);
    expect(parseMemoryMiB("10")).toBeNull();
    expect(parseMemoryMiB("ten GiB")).toBeNull();
    expect(migIndex(0, 1)).toBe(101);
    expect(migIndex(1, 0)).toBe(200);
  });
});
