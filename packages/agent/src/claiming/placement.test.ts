import { describe, expect, it } from "vitest";
import { type SlotHolder, Slots } from "../slots.js";
import { chooseGpu, gpuRooms } from "./placement.js";
import { poolsFor, poolsThatFit } from "./pools.js";

const holder = (trial: string, share: number, memoryMiB: number | null = null, pid: number | null = null): SlotHolder => ({
  study: "s",
  trial,
  attempt: 1,
  busyShare: null,
  share,
  memoryMiB,
  pid,
});
const GPUS = [
  { index: 0, uuid: "GPU-0", memoryTotalMiB: 40_000 },
  { index: 1, uuid: "GPU-1", memoryTotalMiB: 40_000 },
];
const units = GPUS.map((g) => ({ index: g.index, memoryTotalMiB: g.memoryTotalMiB, mig: false }));

describe("fractional placement", () => {
  it("keeps shares on a GPU at or under 100 % and packs onto the GPU already in use (best fit)", () => {
    const slots = new Slots(units, 0);
    const rooms = () => gpuRooms({ slots, gpus: GPUS, processes: [], groupOf: () => null });
    const take = (h: SlotHolder) => {
      const where = chooseGpu(rooms(), h.share ?? 100, h.memoryMiB ?? null);
      if (!where.ok) return where.why;
      return slots.takeShare(where.index, h)?.[0] ?? "did not fit";
    };
    expect(take(holder("a", 50))).toBe(0);
    expect(take(holder("b", 25))).toBe(0); // GPU 0 has 50 % left: the tighter fit
    expect(take(holder("c", 50))).toBe(1); // 25 % left on GPU 0
    expect(take(holder("d", 25))).toBe(0);
    expect(slots.shareInUse(0)).toBe(100);
    expect(take(holder("e", 75))).toMatch(/no GPU here has 75% free/);
    expect(slots.free("gpu")).toBe(0);
    expect(slots.maxFreeShare()).toBe(50);
    // A whole GPU needs one with nothing on it.
    expect(slots.take("gpu", 1, holder("w", 100))).toBeNull();
  });

  it("counts memory the GPU's processes use now, plus what placed trials declared but have not allocated", () => {
    const slots = new Slots(units, 0);
    const placedA = holder("a", 25, 10_000, 4242);
    slots.takeShare(0, placedA);
    const placedB = holder("b", 25, 10_000, null); // placed, not started yet
    slots.takeShare(0, placedB);
    // a's process holds 6 000 of its 10 000; a stranger's process 12 000 on GPU 0; GPU 1 has 35 000 in use.
    const processes = [
      { pid: 4243, usedMiB: 6000, gpuUuid: "GPU-0" },
      { pid: 999, usedMiB: 12_000, gpuUuid: "GPU-0" },
      { pid: 777, usedMiB: 35_000, gpuUuid: "GPU-1" },
    ];
    const rooms = gpuRooms({ slots, gpus: GPUS, processes, groupOf: (pid) => (pid === 4243 ? 4242 : pid) });
    // 40 000 − 18 000 used − (10 000 − 6 000 for a) − 10 000 for b = 8 000
    expect(rooms).toEqual([
      { index: 0, freeShare: 50, freeMemoryMiB: 8000 },
      { index: 1, freeShare: 100, freeMemoryMiB: 5000 },
    ]);
    expect(chooseGpu(rooms, 25, 8000)).toEqual({ ok: true, index: 0 });
    expect(chooseGpu(rooms, 25, 9000)).toEqual({
      ok: false,
      why: "no GPU here with 25% free has 9000 MiB of memory free (at most 8000 MiB)",
    });
    expect(chooseGpu(rooms, 25, null)).toEqual({ ok: true, index: 0 });
    slots.release("gpu", [0], placedA);
    expect(slots.shareInUse(0)).toBe(25);
    expect(slots.holdersOfGpu(0)).toEqual([placedB]);
  });

  it("never puts a MIG instance into a gang of several GPUs", () => {
    const slots = new Slots(
      [
        { index: 0, memoryTotalMiB: 80_000, mig: false },
        { index: 200, memoryTotalMiB: 10_000, mig: true },
        { index: 201, memoryTotalMiB: 10_000, mig: true },
      ],
      0,
    );
    expect(slots.maxGang).toBe(1);
    expect(slots.take("gpu", 2, holder("g", 100))).toBeNull();
    expect(slots.take("gpu", 1, holder("m", 100), 201)).toEqual([201]);
  });
});

describe("share-class pools", () => {
  it("pulls a share class only while one GPU has that much free: a GPU half used still takes 0.25 and 0.5 orders", () => {
    const pools = poolsFor(2, 0, { shares: true });
    expect(pools.map((p) => p.name)).toEqual(["gpu1", "gpu2", "gpu1of1", "gpu1of2", "gpu1of3", "gpu1of4", "gpu1of8"]);
    const fitting = (free: number, share: number) =>
      poolsThatFit(
        pools,
        () => free,
        () => share,
      ).map((p) => p.name);
    expect(fitting(0, 50)).toEqual(["gpu1of2", "gpu1of3", "gpu1of4", "gpu1of8"]);
    expect(fitting(0, 30)).toEqual(["gpu1of4", "gpu1of8"]);
    expect(fitting(1, 100)).toEqual(["gpu1", "gpu1of1", "gpu1of2", "gpu1of3", "gpu1of4", "gpu1of8"]);
    expect(fitting(0, 0)).toEqual([]);
  });
});
