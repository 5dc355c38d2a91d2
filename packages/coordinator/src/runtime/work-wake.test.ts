import { describe, expect, it } from "vitest";
import { WorkWaker } from "./work-wake.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("work wakes", () => {
  it("wake at once, and a burst of orders in one pool costs one more wake at the end of the gap", async () => {
    const written: string[] = [];
    const w = new WorkWaker({ write: async (pool) => written.push(pool), minGapMs: 80 });
    w.note("gpu1");
    expect(written).toEqual(["gpu1"]);
    for (let i = 0; i < 7; i++) w.note("gpu1");
    w.note("gpu1of2");
    expect(written).toEqual(["gpu1", "gpu1of2"]);
    await sleep(150);
    expect(written).toEqual(["gpu1", "gpu1of2", "gpu1"]);
    // After a quiet gap the next order wakes at once again.
    await sleep(100);
    w.note("gpu1");
    expect(written).toEqual(["gpu1", "gpu1of2", "gpu1", "gpu1"]);
    await w.close();
  });

  it("a failed write is reported and loses nothing else; after close nothing is written", async () => {
    const errors: string[] = [];
    let calls = 0;
    const w = new WorkWaker({
      write: async () => {
        calls += 1;
        throw new Error("bucket gone");
      },
      onError: (pool, err) => errors.push(`${pool}: ${err.message}`),
      minGapMs: 20,
    });
    w.note("gpu2");
    w.note("gpu2");
    await w.close();
    expect(errors).toEqual(["gpu2: bucket gone"]);
    await sleep(40);
    w.note("gpu2");
    expect(calls).toBe(1);
  });
});
