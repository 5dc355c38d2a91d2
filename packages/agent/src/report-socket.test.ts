import { mkdtempSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseReportLine, ReportSocket } from "./report-socket.js";

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

describe("the report socket", () => {
  it("reads a fast reporter's lines several at a time, every one of them, in order, to the last", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rung-report-"));
    const got: number[] = [];
    // Lines handed over in one synchronous run came from one read: count the runs.
    let deliveries = 0;
    let inRun = false;
    const rs = await ReportSocket.listen(join(dir, "r.sock"), {
      onReport: (m) => {
        got.push(m.epoch as number);
        if (inRun) return;
        inRun = true;
        deliveries += 1;
        queueMicrotask(() => {
          inRun = false;
        });
      },
      onMalformed: () => {},
    });
    const client = createConnection(rs.path);
    await new Promise<void>((r) => client.once("connect", () => r()));
    const n = 200;
    for (let i = 1; i < n; i++) {
      client.write(`{"epoch": ${i}, "val_acc": 0.5}\n`);
      await new Promise((r) => setTimeout(r, 1));
    }
    // The last one without a newline, just before the trial goes away.
    client.end(`{"epoch": ${n}, "val_acc": 0.5}`);
    await new Promise<void>((r) => client.once("close", () => r()));
    const deadline = Date.now() + 5000;
    while (got.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await rs.close();
    expect(got).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    // One read per line would be 200; resting 50 ms between reads makes it a handful per second.
    expect(deliveries).toBeLessThan(n / 4);
  });
});
