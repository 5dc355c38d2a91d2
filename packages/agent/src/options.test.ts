import { describe, expect, it } from "vitest";
import { AgentOptionsError } from "./errors.js";
import { compileAgentOptions, defaultAgentName } from "./options.js";

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

  it("takes counts and prices as typed, and names the bad value", () => {
    const o = compileAgentOptions({
      name: "x",
      insecure: true,
      fakeGpus: "2",
      cpuSlots: " 3 ",
      pricePerGpuHour: "2.5",
      replicas: "3",
    });
    expect([o.fakeGpus, o.cpuSlots, o.pricePerGpuHour, o.resources.replicas]).toEqual([2, 3, 2.5, 3]);
    expect(o.logFormat).toBe("auto");
    expect(() => compileAgentOptions({ insecure: true, fakeGpus: "two" })).toThrow(
      '--fake-gpus: must be a whole number from 0 to 64, got "two"',
    );
    expect(() => compileAgentOptions({ insecure: true, cpuSlots: "1.5" })).toThrow(/--cpu-slots: .* got "1\.5"$/);
    expect(() => compileAgentOptions({ insecure: true, fakeGpus: Number.NaN })).toThrow(/got NaN$/);
    expect(() => compileAgentOptions({ insecure: true, pricePerGpuHour: "cheap" })).toThrow(
      '--price-per-gpu-hour: must be a non-negative number, got "cheap"',
    );
    expect(() => compileAgentOptions({ insecure: true, replicas: "0" })).toThrow(
      '--replicas: must be a whole number from 1 to 5, got "0"',
    );
    expect(() => compileAgentOptions({ insecure: true, logFormat: "yaml" })).toThrow(
      '--log-format: must be auto, json or pretty, got "yaml"',
    );
  });

  it("makes a valid agent name of any hostname", () => {
    expect(defaultAgentName("gpu-box.example.com")).toBe("gpu-box-example-com");
    expect(defaultAgentName("...")).toBe("agent");
  });
});
