import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkLeaks, FakeNvidiaSmi, fakeGpu } from "@rung/testkit";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { parseInventory, parseReading, parseTelemetryLine, queryGpuInventory } from "./nvidia-smi.js";

const dir = mkdtempSync(join(tmpdir(), "rung-nvidia-smi-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => {
  await checkLeaks();
});

describe("nvidia-smi parsing", () => {
  it("turns [N/A], [Not Supported] and other non-numbers into null, not a failed line", () => {
    expect(parseReading("87")).toBe(87);
    expect(parseReading(" 312.50 ")).toBe(312.5);
    expect(parseReading("[N/A]")).toBeNull();
    expect(parseReading("[Not Supported]")).toBeNull();
    expect(parseReading("N/A")).toBeNull();
    expect(parseReading("[Unknown Error]")).toBeNull();
    const r = parseTelemetryLine("1, GPU-abc, 0, [N/A], 0, 81559, [N/A], 31, [Not Supported]");
    expect(r).toEqual({
      index: 1,
      uuid: "GPU-abc",
      utilizationGpu: 0,
      utilizationMemory: null,
      memoryUsedMiB: 0,
      memoryTotalMiB: 81559,
      powerW: null,
      temperatureC: 31,
      smClockMHz: null,
    });
    expect(parseTelemetryLine("garbage")).toBeUndefined();
    expect(parseTelemetryLine("x, GPU, 1, 1, 1, 1, 1, 1, 1")).toBeUndefined();
  });

  it("reads the inventory the fake nvidia-smi prints, [N/A] fields included", async () => {
    const smi = new FakeNvidiaSmi(mkdtempSync(join(dir, "smi-")), [
      fakeGpu(0),
      fakeGpu(1, { powerW: "[N/A]", smClockMHz: "[Not Supported]" }),
    ]);
    const r = await queryGpuInventory(smi.path);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.gpus.map((g) => [g.index, g.name, g.memoryTotalMiB, g.driver])).toEqual([
      [0, "NVIDIA H100 80GB HBM3", 81559, "535.129.03"],
      [1, "NVIDIA H100 80GB HBM3", 81559, "535.129.03"],
    ]);
    expect(parseInventory("0, GPU-1, Tesla T4, with comma, 15360, 535.1\n")[0]?.name).toBe("Tesla T4, with comma");
    const missing = await queryGpuInventory("/nonexistent/nvidia-smi");
    expect(missing.ok === false && missing.missing).toBe(true);
  });
});
