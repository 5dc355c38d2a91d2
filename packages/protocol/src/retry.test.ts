import { describe, expect, it } from "vitest";
import { type RetryInfo, retry } from "./index.js";

/** A function that fails `n` times with numbered errors, then returns "ok". */
function failing(n: number) {
  const calls: number[] = [];
  const fn = async (attempt: number) => {
    calls.push(attempt);
    if (calls.length <= n) throw new Error(`fail ${calls.length}`);
    return "ok";
  };
  return { fn, calls };
}

describe("retry", () => {
  it("returns the first success, numbering the tries from 1", async () => {
    const f = failing(2);
    await expect(retry(f.fn, { initialDelayMs: 1 })).resolves.toBe("ok");
    expect(f.calls).toEqual([1, 2, 3]);
  });

  it("gives up after `attempts` tries with the last error as thrown, not waiting after the last", async () => {
    const f = failing(10);
    const waits: number[] = [];
    await expect(retry(f.fn, { attempts: 3, initialDelayMs: 1, onRetry: (i) => waits.push(i.failures) })).rejects.toThrow(
      "fail 3",
    );
    expect(f.calls).toEqual([1, 2, 3]);
    expect(waits).toEqual([1, 2]);
  });

  it("tries 5 times by default", async () => {
    const f = failing(10);
    await expect(retry(f.fn, { initialDelayMs: 0 })).rejects.toThrow("fail 5");
    expect(f.calls).toHaveLength(5);
  });

  it("backs off from the initial delay by the factor up to the maximum, and tells onRetry", async () => {
    const f = failing(6);
    const seen: RetryInfo[] = [];
    await retry(f.fn, { attempts: 10, initialDelayMs: 2, factor: 3, maxDelayMs: 30, onRetry: (i) => seen.push(i) });
    expect(seen.map((i) => i.delayMs)).toEqual([2, 6, 18, 30, 30, 30]);
    expect(seen.map((i) => i.failures)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(seen.map((i) => (i.error as Error).message)).toEqual(["fail 1", "fail 2", "fail 3", "fail 4", "fail 5", "fail 6"]);
    for (let k = 1; k < seen.length; k++) expect(seen[k]?.elapsedMs).toBeGreaterThanOrEqual(seen[k - 1]?.elapsedMs ?? 0);
  });

  it("draws each wait from (1 − jitter) × delay to delay", async () => {
    const f = failing(20);
    const delays: number[] = [];
    await retry(f.fn, { attempts: 21, initialDelayMs: 10, factor: 1, jitter: 0.5, onRetry: (i) => delays.push(i.delayMs) });
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(5);
      expect(d).toBeLessThanOrEqual(10);
    }
  });

  it("with a deadline and no attempts, tries until the next wait would end past it", async () => {
    const f = failing(1000);
    const seen: RetryInfo[] = [];
    await expect(retry(f.fn, { deadlineMs: 60, initialDelayMs: 10, factor: 1, onRetry: (i) => seen.push(i) })).rejects.toThrow(
      /fail \d+/,
    );
    expect(seen.length).toBeGreaterThan(0);
    for (const i of seen) expect(i.elapsedMs + i.delayMs).toBeLessThanOrEqual(60);
    expect(f.calls.length).toBe(seen.length + 1);
  });

  it("stops at once on an error the predicate does not retry", async () => {
    class Fatal extends Error {}
    let calls = 0;
    const fn = async () => {
      calls += 1;
      throw calls === 2 ? new Fatal("no point") : new Error("again");
    };
    await expect(retry(fn, { initialDelayMs: 1, retryable: (e) => !(e instanceof Fatal) })).rejects.toThrow(Fatal);
    expect(calls).toBe(2);
  });

  it("stops waiting when the signal aborts and rejects with the last error", async () => {
    const ac = new AbortController();
    const f = failing(10);
    const started = Date.now();
    const p = retry(f.fn, { initialDelayMs: 60_000, signal: ac.signal, onRetry: () => setTimeout(() => ac.abort(), 5) });
    await expect(p).rejects.toThrow("fail 1");
    expect(f.calls).toEqual([1]);
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it("does not start when the signal is already aborted", async () => {
    const ac = new AbortController();
    ac.abort(new Error("shutting down"));
    const f = failing(0);
    await expect(retry(f.fn, { signal: ac.signal })).rejects.toThrow("shutting down");
    expect(f.calls).toEqual([]);
  });

  it("refuses options that make no sense", async () => {
    const ok = async () => 1;
    await expect(retry(ok, { attempts: 0 })).rejects.toThrow(RangeError);
    await expect(retry(ok, { attempts: 1.5 })).rejects.toThrow(RangeError);
    await expect(retry(ok, { factor: 0.5 })).rejects.toThrow(RangeError);
    await expect(retry(ok, { jitter: 2 })).rejects.toThrow(RangeError);
    await expect(retry(ok, { initialDelayMs: 10, maxDelayMs: 5 })).rejects.toThrow(RangeError);
    await expect(retry(ok, { deadlineMs: -1 })).rejects.toThrow(RangeError);
  });
});
