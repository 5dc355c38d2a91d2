import type { AgentAdvert } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { claimLeaseFor } from "./claim-lease.js";

const NOW = 1_000_000;
const advert = (agent: string, leaseMs: number | undefined, ageMs = 0): AgentAdvert =>
  ({ agent, leaseMs, updatedAt: NOW - ageMs, state: "running" }) as unknown as AgentAdvert;

describe("the claim lease the live agents need", () => {
  it("is the longest lease of the agents alive, whatever their state", () => {
    const draining = { ...advert("a3", 60_000), state: "draining" } as AgentAdvert;
    expect(claimLeaseFor([advert("a1", 3_000), advert("a2", 30_000)], 15_000, NOW)).toBe(30_000);
    // A draining agent still runs trials under its lease.
    expect(claimLeaseFor([advert("a1", 3_000), draining], 15_000, NOW)).toBe(60_000);
  });

  it("leaves out an advert gone stale, and says nothing with no agent or one that does not tell its lease", () => {
    expect(claimLeaseFor([advert("a1", 3_000), advert("gone", 30_000, 20_000)], 15_000, NOW)).toBe(3_000);
    expect(claimLeaseFor([], 15_000, NOW)).toBeNull();
    expect(claimLeaseFor([advert("old", 30_000, 20_000)], 15_000, NOW)).toBeNull();
    // An agent of an older version: its lease is unknown, so nothing may be shortened under it.
    expect(claimLeaseFor([advert("a1", 3_000), advert("older", undefined)], 15_000, NOW)).toBeNull();
  });
});
