import { describe, expect, it } from "vitest";
import { fakeGpuInfos, fakeReading } from "./fake-gpus.js";

describe("fake GPUs", () => {
  it("follow the trial's reported busy share, idle at zero", () => {
    const [gpu] = fakeGpuInfos("box", 1);
    if (!gpu) throw new Error("no fake GPU");
    expect(gpu).toMatchObject({ uuid: "GPU-fake-box-0", name: "Rung simulated GPU", fake: true });
    expect(fakeReading(gpu, { running: false, busyShare: null }).utilizationGpu).toBe(0);
    expect(fakeReading(gpu, { running: false, busyShare: null }).memoryUsedMiB).toBe(0);
    const waiting = fakeReading(gpu, { running: true, busyShare: null }, () => 0.5).utilizationGpu;
    expect(waiting).toBe(5);
    for (let i = 0; i < 50; i++) {
      const u = fakeReading(gpu, { running: true, busyShare: 0.3 }).utilizationGpu ?? -1;
      expect(u).toBeGreaterThanOrEqual(27);
      expect(u).toBeLessThanOrEqual(33);
    }
    expect(fakeReading(gpu, { running: true, busyShare: 1 }, () => 1).utilizationGpu).toBe(100);
  });
});
