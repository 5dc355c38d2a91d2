import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { BadMessageCounter, DecodeError, decode, encode, TelemetrySchema, TrialEventSchema, WorkOrderSchema } from "./index.js";

const report = {
  v: 1,
  type: "report",
  study: "digits",
  trial: "t0001",
  ts: 1_700_000_000_000,
  attempt: 1,
  agent: "box-1",
  seq: 3,
  metrics: { epoch: 3, val_acc: 0.91, val_loss: Number.NaN, grad: Number.POSITIVE_INFINITY },
};

describe("codec", () => {
  it("round-trips a message, NaN and infinities included", () => {
    const r = decode(TrialEventSchema, encode(report));
    expect(r.ok).toBe(true);
    if (!r.ok || r.value.type !== "report") throw new Error("expected a report");
    expect(r.value.metrics.val_acc).toBe(0.91);
    expect(r.value.metrics.val_loss).toBeNaN();
    expect(r.value.metrics.grad).toBe(Number.POSITIVE_INFINITY);
  });

  it("gives a typed msgpack error for truncated bytes", () => {
    const bytes = encode(report);
    for (const cut of [1, 5, bytes.length >> 1, bytes.length - 1]) {
      const r = decode(TrialEventSchema, bytes.subarray(0, cut), "event");
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toBeInstanceOf(DecodeError);
    }
  });

  it("never throws on random bytes (1000 payloads)", () => {
    let failures = 0;
    for (let i = 0; i < 1000; i++) {
      const bytes = randomBytes(1 + (i % 300));
      const r = decode(TrialEventSchema, bytes);
      if (!r.ok) {
        failures++;
        expect(["msgpack", "schema"]).toContain(r.error.kind);
      }
    }
    expect(failures).toBe(1000);
  });

  it("names the field for wrong field types", () => {
    const r = decode(TrialEventSchema, encode({ ...report, attempt: "one" }), "event");
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.kind).toBe("schema");
      expect(r.error.message).toMatch(/attempt/);
    }
  });

  it("refuses an unknown type and a missing version", () => {
    const unknown = decode(TrialEventSchema, encode({ ...report, type: "exploded" }));
    expect(unknown.ok).toBe(false);
    const { v: _v, ...noVersion } = report;
    const missing = decode(TrialEventSchema, encode(noVersion));
    expect(missing.ok).toBe(false);
    if (!missing.ok) expect(missing.error.message).toMatch(/\bv\b/);
    const future = decode(TrialEventSchema, encode({ ...report, v: 2 }));
    expect(future.ok).toBe(false);
  });

  it("refuses a 10 MB payload before unpacking it", () => {
    const big = encode({ ...report, metrics: { blob: 1 }, pad: "x".repeat(10 * 1024 * 1024) });
    const r = decode(TrialEventSchema, big);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.kind).toBe("too-large");
  });

  it("refuses tokens that would break subjects inside messages", () => {
    const r = decode(TrialEventSchema, encode({ ...report, trial: "a.b" }));
    expect(r.ok).toBe(false);
  });

  it("validates the other message kinds", () => {
    const sample = {
      v: 1,
      type: "gpu",
      agent: "box-1",
      ts: 1,
      fake: true,
      gpus: [
        {
          index: 0,
          uuid: "GPU-1",
          utilizationGpu: 50,
          utilizationMemory: null,
          memoryUsedMiB: 100,
          memoryTotalMiB: 1000,
          powerW: null,
          temperatureC: 40,
          smClockMHz: 1200,
          study: null,
          trial: null,
        },
      ],
    };
    expect(decode(TelemetrySchema, encode(sample)).ok).toBe(true);
    expect(decode(WorkOrderSchema, encode({ v: 1, type: "order" })).ok).toBe(false);
  });

  it("counts drops per kind and warns once per kind", () => {
    const warnings: string[] = [];
    const counter = new BadMessageCounter({ warn: (_o, msg) => warnings.push(msg) });
    for (let i = 0; i < 5; i++) {
      const r = decode(TrialEventSchema, randomBytes(3));
      if (!r.ok) counter.record("events", r.error);
    }
    const r = decode(TrialEventSchema, encode({ v: 1 }));
    if (!r.ok) counter.record("events", r.error);
    expect(counter.total).toBe(6);
    expect(warnings.length).toBe(Object.keys(counter.snapshot()).length);
  });
});
