import { describe, expect, it } from "vitest";
import {
  type AloneEvidence,
  decidePacking,
  PACKING_DEFAULTS,
  PackingLedger,
  type PackingLevel,
  type PackingSpec,
  packedSlowdown,
  packingLadder,
  packingShare,
  packingSummary,
  packingText,
} from "./packing.js";
import { compileSpec, specHash, specToInput } from "./spec.js";

const SPEC: PackingSpec = { mode: "auto", ...PACKING_DEFAULTS };
/** A small trial: 1.2 GiB of an 80 GiB GPU, 18 % busy. */
const SMALL: AloneEvidence = { trials: 2, peakMemoryMiB: 1229, gpuMemoryMiB: 81_920, busy: 0.18 };
const level = (perGpu: number, step: PackingLevel["step"] = "raise"): PackingLevel => ({
  perGpu,
  gpuMemoryMiB: perGpu > 1 ? 1475 : null,
  step,
  why: "",
});
const epochs = (alone: number[], packed: number[]) => ({ alone, packed });
const input = (over: Partial<Parameters<typeof decidePacking>[0]>) => ({
  spec: SPEC,
  declaredMemoryMiB: null,
  current: null,
  ceiling: SPEC.maxPerGpu,
  alone: SMALL,
  epochs: epochs([], []),
  ...over,
});

describe("packing ladder and shares", () => {
  it("doubles up to max_per_gpu, which it always includes", () => {
    expect(packingLadder(8)).toEqual([1, 2, 4, 8]);
    expect(packingLadder(6)).toEqual([1, 2, 4, 6]);
    expect(packingLadder(1)).toEqual([1]);
  });
  it("asks for whole percent of a GPU, one GPU at one per GPU", () => {
    expect([1, 2, 3, 4, 8].map(packingShare)).toEqual([1, 0.5, 0.33, 0.25, 0.12]);
  });
});

describe("decidePacking", () => {
  it("observes at one per GPU until two trials have run alone", () => {
    const d = decidePacking(input({ alone: { ...SMALL, trials: 1 } }));
    expect(d).toMatchObject({ perGpu: 1, step: "observe", gpuMemoryMiB: null });
    expect(d.why).toBe("observing: 1 of 2 trials measured alone");
    expect(decidePacking(input({ alone: null })).step).toBe("observe");
  });

  it("raises from one to two with memory = peak × (1 + margin), saying what it saw", () => {
    const d = decidePacking(input({}));
    expect(d).toEqual({
      perGpu: 2,
      gpuMemoryMiB: Math.ceil(1229 * 1.2),
      step: "raise",
      why: "peak 1.2 GiB of 80 GiB, busy 18 %",
    });
  });

  it("keeps the spec's gpu_memory as a floor", () => {
    expect(decidePacking(input({ declaredMemoryMiB: 4096 })).gpuMemoryMiB).toBe(4096);
  });

  it("raises one step at a time, once the packed epochs are measured and not too slow", () => {
    const waiting = decidePacking(input({ current: level(2), epochs: epochs([1, 1, 1, 1], [1.1]) }));
    expect(waiting).toMatchObject({ perGpu: 2, step: "hold" });
    expect(waiting.why).toMatch(/measuring epochs at 2 per GPU/);
    const next = decidePacking(input({ current: level(2), epochs: epochs([1, 1, 1, 1], [1.05, 1.1, 1, 1.05]) }));
    expect(next).toMatchObject({ perGpu: 4, step: "raise" });
    expect(next.why).toBe("peak 1.2 GiB of 80 GiB, busy 18 %; packed epochs 5 % slower");
  });

  it("judges one-epoch attempts by their time to a first report when they have no epochs to compare", () => {
    const starts = (alone: number[], packed: number[]) => ({ alone: [], packed: [], starts: { alone, packed } });
    const waiting = decidePacking(input({ current: level(2), epochs: starts([9, 9, 10, 9], [9.5, 9]) }));
    expect(waiting).toMatchObject({ perGpu: 2, step: "hold" });
    // The two trials observed alone before the first raise are enough on that side.
    expect(decidePacking(input({ current: level(2), epochs: starts([9, 10], [9, 9, 10, 10]) }))).toMatchObject({
      perGpu: 4,
      step: "raise",
    });
    expect(decidePacking(input({ current: level(2), epochs: starts([9], [9, 9, 10, 10]) }))).toMatchObject({
      perGpu: 2,
      step: "hold",
    });
    const next = decidePacking(input({ current: level(2), epochs: starts([9, 9, 10, 9], [9.5, 9, 9.9, 9.2]) }));
    expect(next).toMatchObject({ perGpu: 4, step: "raise" });
    expect(next.why).toBe("peak 1.2 GiB of 80 GiB, busy 18 %; packed trials' first reports 4 % slower");
    const slow = decidePacking(input({ current: level(4), epochs: starts([9, 9, 9, 9], [14, 13, 12, 15]) }));
    expect(slow).toMatchObject({ perGpu: 2, step: "back-off" });
    expect(slow.why).toBe("packed trials' first reports 50 % slower than alone, over the 25 % allowed");
    // Epochs, where there are enough, come first.
    const both = { alone: [1, 1, 1, 1], packed: [1, 1, 1, 1], starts: { alone: [9, 9, 9, 9], packed: [20, 20, 20, 20] } };
    expect(decidePacking(input({ current: level(2), epochs: both }))).toMatchObject({ perGpu: 4, step: "raise" });
  });

  it("declares no memory for trials that used none alone (an order's memory is positive or absent)", () => {
    // A trial that computes on the CPU, or a GPU that reports no per-process memory: peak 0 MiB.
    const d = decidePacking(input({ alone: { ...SMALL, peakMemoryMiB: 0 } }));
    expect(d).toMatchObject({ perGpu: 2, step: "raise", gpuMemoryMiB: null });
    const on = decidePacking(
      input({
        alone: { ...SMALL, peakMemoryMiB: 0, busy: 0.05 },
        current: { ...level(2), gpuMemoryMiB: null },
        epochs: epochs([1, 1, 1, 1], [1, 1, 1, 1]),
      }),
    );
    expect(on).toMatchObject({ perGpu: 4, gpuMemoryMiB: null });
  });

  it("stops where the busy share would pass the target", () => {
    // 4 × 18 % = 72 % fits 80 %; 8 × 18 % = 144 % does not.
    const d = decidePacking(input({ current: level(4), epochs: epochs([1, 1, 1, 1], [1, 1, 1, 1]) }));
    expect(d).toMatchObject({ perGpu: 4, step: "hold" });
    expect(d.why).toBe("busy 18 % alone: 8 per GPU would be 144 %, over the 80 % target");
  });

  it("stays at one per GPU for a trial that keeps the GPU busy", () => {
    const d = decidePacking(input({ alone: { ...SMALL, busy: 0.9 } }));
    expect(d).toMatchObject({ perGpu: 1, step: "hold", gpuMemoryMiB: null });
    expect(d.why).toBe("busy 90 % alone: 2 per GPU would be 180 %, over the 80 % target");
  });

  it("stops where memory with its margin would not fit", () => {
    // 30 GiB × 1.2 = 36 GiB: two fit in 80 GiB, four do not.
    const d = decidePacking(
      input({
        alone: { ...SMALL, peakMemoryMiB: 30_720, busy: 0.05 },
        current: level(2),
        epochs: epochs([1, 1, 1, 1], [1, 1, 1, 1]),
      }),
    );
    expect(d).toMatchObject({ perGpu: 2, step: "hold" });
    expect(d.why).toBe("peak 30 GiB alone: 4 × 36 GiB would not fit in 80 GiB");
  });

  it("holds at max_per_gpu", () => {
    const d = decidePacking(
      input({ spec: { ...SPEC, maxPerGpu: 2 }, current: level(2), epochs: epochs([1, 1, 1, 1], [1, 1, 1, 1]) }),
    );
    expect(d).toMatchObject({ perGpu: 2, step: "hold" });
    expect(d.why).toMatch(/at max_per_gpu 2$/);
  });

  it("backs off one step when packed epochs are slower than the slowdown allows", () => {
    const d = decidePacking(input({ current: level(4), epochs: epochs([1, 1, 1, 1], [1.41, 1.4, 1.42, 1.41]) }));
    expect(d).toMatchObject({ perGpu: 2, step: "back-off" });
    expect(d.why).toBe("packed epochs 41 % slower than alone, over the 25 % allowed");
  });

  it("backs off when new evidence alone no longer fits the level", () => {
    const d = decidePacking(input({ alone: { ...SMALL, busy: 0.5 }, current: level(4) }));
    expect(d).toMatchObject({ perGpu: 1, step: "back-off" });
    expect(d.why).toBe("busy 50 % alone: 4 per GPU would be 200 %, over the 80 % target");
  });

  it("never rises above a level it backed off to", () => {
    const d = decidePacking(input({ current: level(2, "back-off"), ceiling: 2, epochs: epochs([1, 1, 1, 1], [1, 1, 1, 1]) }));
    expect(d).toMatchObject({ perGpu: 2, step: "hold" });
    expect(d.why).toMatch(/backed off from 4 earlier$/);
  });

  it("judges slowdown on medians, once both sides have enough epochs", () => {
    expect(packedSlowdown(epochs([1, 1, 1], [2, 2, 2, 2]))).toBeNull();
    expect(packedSlowdown(epochs([1, 1, 1, 9], [1.5, 1.5, 1.5, 1.5]))).toBeCloseTo(0.5);
  });
});

describe("PackingLedger", () => {
  it("folds queued levels and reports in stream order: the current level, the ceiling, packed epochs since the level began", () => {
    const l = new PackingLedger(SPEC);
    l.onQueued("t0001", 1, level(1, "observe"));
    l.onQueued("t0001", 1, level(4)); // a copy of the same attempt's event changes nothing
    expect(l.current?.perGpu).toBe(1);
    for (let e = 1; e <= 5; e++) l.onReport("t0001", 1, e * 1000, e);
    l.onQueued("t0002", 1, level(2));
    l.onReport("t0002", 1, 0, 1);
    l.onReport("t0002", 1, 3000, 2);
    l.onReport("t0002", 1, 3000, 2); // the same epoch again: no interval
    l.onReport("t0002", 1, 7000, 4); // two epochs in 4 s: 2 s each
    expect(l.epochs()).toMatchObject({ alone: [1, 1, 1, 1], packed: [3, 2] });
    l.onQueued("t0003", 1, level(1, "back-off"));
    expect(l.ceiling).toBe(1);
    expect(l.epochs().packed).toEqual([]);
    expect(l.changes.map((c) => [c.trial, c.level.perGpu, c.level.step])).toEqual([
      ["t0001", 1, "observe"],
      ["t0002", 2, "raise"],
      ["t0003", 1, "back-off"],
    ]);
  });

  it("measures one-report attempts from their start to their first report, alone and packed since the level began", () => {
    // Promotion-based ASHA: most attempts run one epoch and pause, so they have no epoch intervals.
    const l = new PackingLedger(SPEC);
    const attempt = (trial: string, lv: PackingLevel, started: number, first: number) => {
      l.onQueued(trial, 1, lv);
      l.onStarted(trial, 1, started);
      l.onStarted(trial, 1, started + 500); // a copy of the event changes nothing
      l.onReport(trial, 1, first, 1);
      l.onReport(trial, 1, first + 100_000, 1); // the same epoch again: still its first report's time
    };
    attempt("t0001", level(1, "observe"), 0, 9000);
    attempt("t0002", level(1, "observe"), 1000, 11_000);
    attempt("t0003", level(2), 20_000, 29_500);
    expect(l.epochs()).toEqual({ alone: [], packed: [], starts: { alone: [9, 10], packed: [9.5] } });
    // An attempt that never started (its order was lost) or reported nothing adds nothing.
    l.onQueued("t0004", 1, level(2));
    l.onReport("t0004", 1, 40_000, 1);
    expect(l.epochs().starts?.packed).toEqual([9.5]);
    attempt("t0005", level(4), 50_000, 61_000);
    expect(l.epochs().starts).toEqual({ alone: [9, 10], packed: [11] });
    // A later attempt (a promoted trial resuming from its checkpoint) is not a start-up to compare.
    l.onQueued("t0001", 2, level(4));
    l.onStarted("t0001", 2, 70_000);
    l.onReport("t0001", 2, 90_000, 2);
    expect(l.epochs().starts).toEqual({ alone: [9, 10], packed: [11] });
  });

  it("counts an attempt run alone after running out of memory as alone", () => {
    const l = new PackingLedger(SPEC);
    l.onQueued("t0001", 2, level(4), true);
    l.onReport("t0001", 2, 0, 1);
    l.onReport("t0001", 2, 1000, 2);
    expect(l.epochs().alone).toEqual([1]);
  });
});

describe("packingText", () => {
  const change = (trial: string, perGpu: number, step: PackingLevel["step"], why: string) => ({
    trial,
    level: { ...level(perGpu, step), why },
  });

  it("says what it chose and why", () => {
    expect(
      packingText([
        change("t0001", 1, "observe", "observing: 0 of 2 trials measured alone"),
        change("t0009", 4, "raise", "peak 1.2 GiB of 80 GiB, busy 18 %"),
        change("t0031", 2, "back-off", "packed epochs 41 % slower than alone, over the 25 % allowed"),
      ]),
    ).toBe(
      "4 trials per GPU from t0009 on (peak 1.2 GiB of 80 GiB, busy 18 %); backed off to 2 at t0031 (packed epochs 41 % slower than alone, over the 25 % allowed)",
    );
  });

  it("says why it stayed at one per GPU", () => {
    expect(
      packingText([
        change("t0001", 1, "observe", "observing: 0 of 2 trials measured alone"),
        change("t0003", 1, "hold", "busy 90 % alone: 2 per GPU would be 180 %, over the 80 % target"),
      ]),
    ).toBe("1 trial per GPU (busy 90 % alone: 2 per GPU would be 180 %, over the 80 % target)");
    expect(packingText([])).toBe("no trial queued yet");
  });

  it("reads a study's levels back from its attempts, in the order they were queued", () => {
    const trials = [
      {
        trial: "t0002",
        attempts: [{ attempt: 1, queuedAt: 20, packing: { ...level(2), why: "peak 1.2 GiB of 80 GiB, busy 18 %" } }],
      },
      { trial: "t0001", attempts: [{ attempt: 1, queuedAt: 10, packing: { ...level(1, "observe"), why: "observing" } }] },
    ];
    expect(packingSummary(SPEC, trials)).toBe("packing: 2 trials per GPU from t0002 on (peak 1.2 GiB of 80 GiB, busy 18 %)");
    expect(packingSummary(null, trials)).toBeNull();
  });
});

describe("packing in the spec", () => {
  const base = {
    name: "p",
    command: "python train.py",
    metric: { name: "acc", mode: "max" },
    search: { space: { lr: 0.1 } },
  };
  it("takes auto or a mapping, with defaults", () => {
    expect(compileSpec({ ...base, packing: "auto" }).packing).toEqual({ mode: "auto", ...PACKING_DEFAULTS });
    expect(compileSpec({ ...base, packing: { mode: "auto", target_busy: 0.6, max_per_gpu: 4 } }).packing).toEqual({
      ...SPEC,
      targetBusy: 0.6,
      maxPerGpu: 4,
    });
    expect(compileSpec(base).packing).toBeNull();
  });
  it("survives the study record's round trip, and leaves the hash of a spec without it as it was", () => {
    const spec = compileSpec({ ...base, packing: { mode: "auto", slowdown: 0.5 } });
    expect(compileSpec(specToInput(spec))).toEqual(spec);
    const plain = compileSpec(base);
    expect(specHash(plain)).toBe(specHash({ ...plain, packing: null }));
    expect(specHash(spec)).not.toBe(specHash(plain));
  });
  it("refuses bounds it cannot keep and a share of its own", () => {
    expect(() => compileSpec({ ...base, packing: { mode: "auto", target_busy: 1.5, max_per_gpu: 20 } })).toThrow(
      /packing\.target_busy[\s\S]*packing\.max_per_gpu/,
    );
    expect(() => compileSpec({ ...base, packing: "auto", resources: { gpus: 0.5 } })).toThrow(
      /resources\.gpus.*packing: auto picks each trial's share/,
    );
  });
});

describe("packingText after several raises", () => {
  it("says only what is new at each later raise", () => {
    const raise = (trial: string, perGpu: number, why: string) => ({ trial, level: { ...level(perGpu), why } });
    expect(
      packingText([
        raise("t0003", 2, "peak 1.2 GiB of 80 GiB, busy 10 %"),
        raise("t0007", 4, "peak 1.2 GiB of 80 GiB, busy 10 %; packed epochs 2 % slower"),
      ]),
    ).toBe("2 trials per GPU from t0003 on (peak 1.2 GiB of 80 GiB, busy 10 %); raised to 4 at t0007 (packed epochs 2 % slower)");
  });
});
