import { describe, expect, it } from "vitest";
import { parseReportLine } from "./report-socket.js";

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
