import { rmSync } from "node:fs";
import {
  AgentOptionsError,
  cleanLine,
  compileAgentOptions,
  defaultAgentName,
  eventMsgId,
  fakeGpuInfos,
  fakeReading,
  parseInventory,
  parseReading,
  parseReportLine,
  parseTelemetryLine,
  poolsFor,
  queryGpuInventory,
  resolveExecutable,
  stopRequestFrom,
} from "@rung/agent";
import { checkLeaks, FakeNvidiaSmi, fakeGpu } from "@rung/testkit";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { tempDir } from "./agent-helpers.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
afterEach(async () => {
  await checkLeaks();
});
function tmp(): string {
  const d = tempDir();
  dirs.push(d);
  return d;
}

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
    const smi = new FakeNvidiaSmi(tmp(), [fakeGpu(0), fakeGpu(1, { powerW: "[N/A]", smClockMHz: "[Not Supported]" })]);
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

describe("report lines", () => {
  it("accepts flat objects of numbers, with NaN and infinities as strings", () => {
    const r = parseReportLine('{"epoch": 3, "val_loss": "NaN", "g": "Infinity", "h": "-Infinity", "compute_s": 9.7}');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.metrics.epoch).toBe(3);
    expect(r.metrics.val_loss).toBeNaN();
    expect(r.metrics.g).toBe(Number.POSITIVE_INFINITY);
    expect(r.metrics.h).toBe(Number.NEGATIVE_INFINITY);
  });

  it.each([
    ["not json", "not JSON"],
    ["[1, 2]", "not a JSON object"],
    ["null", "not a JSON object"],
    ["{}", "no metrics"],
    ['{"a": "nan"}', '"a" is not a number'],
    ['{"a": {"b": 1}}', '"a" is not a number'],
    ['{"a": true}', '"a" is not a number'],
  ])("refuses %s (%s)", (line, why) => {
    expect(parseReportLine(line)).toEqual({ ok: false, why });
  });
});

describe("options", () => {
  it("compiles friendly values once, with defaults", () => {
    const o = compileAgentOptions({
      name: "box-1",
      lease: "3s",
      gpus: "2,0",
      labels: ["zone=eu", "spot=yes"],
      insecure: true,
    });
    expect(o.leaseMs).toBe(3000);
    expect(o.heartbeatMs).toBe(1000);
    expect(o.stopGraceMs).toBe(10_000);
    expect(o.gpus).toEqual([0, 2]);
    expect(o.labels).toEqual({ zone: "eu", spot: "yes" });
    expect(o.drain).toBe("finish");
    expect(o.idleExitMs).toBeNull();
    expect(o.stateDir).toMatch(/\.rung\/agent\/box-1$/);
    expect(compileAgentOptions({ name: "x", lease: "30s", insecure: true }).heartbeatMs).toBe(10_000);
  });

  it("names the flag that is wrong", () => {
    expect(() => compileAgentOptions({ lease: "soon" })).toThrow(AgentOptionsError);
    expect(() => compileAgentOptions({ lease: "soon" })).toThrow(/^--lease: /);
    expect(() => compileAgentOptions({ gpus: "0,x" })).toThrow(/--gpus/);
    expect(() => compileAgentOptions({ fakeGpus: Number.NaN })).toThrow(/--fake-gpus/);
    expect(() => compileAgentOptions({ drain: "later" as never })).toThrow(/--drain/);
    expect(() => compileAgentOptions({ name: "a.b" })).toThrow(/--name/);
    expect(() => compileAgentOptions({ labels: ["novalue"] })).toThrow(/--label/);
  });

  it("makes a valid agent name of any hostname", () => {
    expect(defaultAgentName("gpu-box.example.com")).toBe("gpu-box-example-com");
    expect(defaultAgentName("...")).toBe("agent");
  });
});

describe("pieces of the claim loop", () => {
  it("serves every gang size it could run, and no other", () => {
    expect(poolsFor(4, 0).map((p) => p.name)).toEqual(["gpu1", "gpu2", "gpu3", "gpu4"]);
    expect(poolsFor(0, 2).map((p) => p.name)).toEqual(["cpu1", "cpu2"]);
  });

  it("turns stop decisions into the finished event's reason", () => {
    const base = { v: 1 as const, type: "stop" as const, study: "s", trial: "t", by: "asha", ts: 1 };
    expect(stopRequestFrom({ ...base, reason: "scheduler-stop", rung: 3 })).toEqual({
      reason: "scheduler-stop",
      detail: "scheduler-stop at t=3",
    });
    expect(stopRequestFrom({ ...base, reason: "user-stop", rung: null, by: "alice" }).detail).toBe("user-stop by alice");
  });

  it("gives events deterministic message ids", () => {
    const e = { v: 1 as const, study: "s", trial: "t", ts: 1, attempt: 2, agent: "a" };
    expect(eventMsgId({ ...e, type: "claimed", gpus: [0] })).toBe("s.t.2.claimed");
    expect(eventMsgId({ ...e, type: "report", seq: 7, metrics: {} })).toBe("s.t.2.report.7");
  });

  it("finds programs the way execvp does", () => {
    expect(resolveExecutable("sh", "/", "/nonexistent:/bin")).toBe("/bin/sh");
    expect(resolveExecutable("no-such-program-xyz", "/", "/bin:/usr/bin")).toBeUndefined();
    expect(resolveExecutable("./nope", tmp(), undefined)).toBeUndefined();
  });

  it("cleans terminal lines for the log tail", () => {
    expect(cleanLine("\x1b[31mred\x1b[0m\r")).toBe("red");
    expect(cleanLine("10%\r50%\r100%")).toBe("100%");
  });
});

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
