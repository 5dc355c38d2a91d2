import { describe, expect, it } from "vitest";
import {
  ADVERTISED_REFUSALS,
  jittered,
  MAX_REFUSAL_DELAY_MS,
  MAX_REFUSAL_PAUSE_MS,
  REFUSAL_DELAY_MS,
  Refusals,
  refusalDelayMs,
  refusalPauseMs,
} from "./refusals.js";

describe("refusals", () => {
  it("hands an order back after a few seconds, then waits longer each time it comes back, up to a cap", () => {
    expect(refusalDelayMs(0)).toBe(REFUSAL_DELAY_MS);
    expect(refusalDelayMs(1)).toBe(2 * REFUSAL_DELAY_MS);
    expect(refusalDelayMs(2)).toBe(4 * REFUSAL_DELAY_MS);
    expect(refusalDelayMs(50)).toBe(MAX_REFUSAL_DELAY_MS);
    // The refusing agent stays away from the pool for longer than the order is away, longer each time.
    for (let n = 1; n < 12; n++) {
      expect(refusalPauseMs(n)).toBeGreaterThan(Math.min(refusalDelayMs(n), MAX_REFUSAL_PAUSE_MS - 1));
      expect(refusalPauseMs(n)).toBeGreaterThanOrEqual(refusalPauseMs(n - 1));
    }
    expect(refusalPauseMs(50)).toBe(MAX_REFUSAL_PAUSE_MS);
  });

  it("counts refusals by nonce (bounded) and keeps the last few for the advert", () => {
    const r = new Refusals(2);
    expect(r.count("a")).toBe(0);
    expect(r.count("a")).toBe(1);
    expect(r.before("a")).toBe(2);
    r.count("b");
    r.count("c"); // the map holds two: "a", refused longest ago, goes
    expect(r.before("a")).toBe(0);
    expect(r.before("c")).toBe(1);
    for (let i = 0; i < ADVERTISED_REFUSALS + 2; i++)
      r.note({ study: "s", trial: `t${i}`, reason: "cannot-run", detail: "no workdir", ts: i });
    expect(r.recent.map((e) => e.trial)).toEqual(["t2", "t3", "t4", "t5", "t6"]);
  });
});

describe("jittered", () => {
  it("draws a delay between 0.75 and 1.25 times the one given, so returns do not fall into step with pulls", () => {
    expect(jittered(2000, () => 0)).toBe(1500);
    expect(jittered(2000, () => 0.5)).toBe(2000);
    expect(jittered(2000, () => 0.999999)).toBe(2500);
    const draws = new Set(Array.from({ length: 50 }, () => jittered(4000)));
    expect(draws.size).toBeGreaterThan(10);
    for (const d of draws) expect(d >= 3000 && d <= 5000).toBe(true);
  });
});
