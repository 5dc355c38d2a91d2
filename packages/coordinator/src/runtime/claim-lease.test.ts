import type { JetStreamManager } from "@nats-io/jetstream";
import { type AgentAdvert, MeshNames, silentLogger } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { ClaimLeaseKeeper, claimLeaseFor, type HeardAdvert } from "./claim-lease.js";

const NOW = 1_000_000;
const STALE = 15_000;
const heard = (agent: string, leaseMs: number | undefined, silentMs = 0, state = "running"): HeardAdvert => ({
  advert: { agent, leaseMs, state } as unknown as AgentAdvert,
  heardAt: NOW - silentMs,
});

describe("the claim lease the live agents need", () => {
  it("is the longest lease of the agents heard from, whatever their state", () => {
    expect(claimLeaseFor([heard("a1", 3_000), heard("a2", 30_000)], STALE, NOW)).toBe(30_000);
    expect(claimLeaseFor([heard("a1", 3_000), heard("a3", 60_000, 0, "draining")], STALE, NOW)).toBe(60_000);
  });

  it("keeps a silent agent's lease until its claims have run out on the server too, and knows none with an older agent alive", () => {
    // Silent 20 s: past the adverts' staleness, not yet past staleness + its 30 s lease.
    expect(claimLeaseFor([heard("a1", 3_000), heard("cut-off", 30_000, 20_000)], STALE, NOW)).toBe(30_000);
    expect(claimLeaseFor([heard("a1", 3_000), heard("gone", 30_000, 46_000)], STALE, NOW)).toBe(3_000);
    expect(claimLeaseFor([], STALE, NOW)).toBeNull();
    expect(claimLeaseFor([heard("a1", 3_000), heard("older", undefined)], STALE, NOW)).toBeNull();
    // An older agent gone quiet no longer holds anything back.
    expect(claimLeaseFor([heard("a1", 3_000), heard("older", undefined, 20_000)], STALE, NOW)).toBe(3_000);
  });
});

describe("the claim lease keeper", () => {
  /** Work consumers on a stand-in JetStream manager: their ack waits in ms, and every update. */
  function rig(initial: Record<string, number>) {
    const names = new MeshNames("k");
    const acks = new Map(Object.entries(initial).map(([pool, ms]) => [names.workConsumer(pool), ms]));
    const updates: string[] = [];
    const jsm = {
      consumers: {
        async *list() {
          for (const [name, ms] of acks) yield { name, config: { ack_wait: ms * 1_000_000 } };
        },
        async update(_stream: string, name: string, cfg: { ack_wait: number }) {
          acks.set(name, cfg.ack_wait / 1_000_000);
          updates.push(`${name}=${cfg.ack_wait / 1_000_000}`);
        },
      },
    } as unknown as JetStreamManager;
    let adverts: HeardAdvert[] = [];
    const keeper = new ClaimLeaseKeeper({ jsm, names, log: silentLogger(), adverts: () => adverts, staleAfterMs: STALE });
    const settle = async () => {
      keeper.poke();
      for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
    };
    const set = (list: [string, number | undefined][]) => {
      adverts = list.map(([agent, leaseMs]) => ({ advert: { agent, leaseMs } as unknown as AgentAdvert, heardAt: Date.now() }));
    };
    return { names, acks, updates, keeper, settle, set };
  }

  it("lengthens at once, and shortens only after the shorter lease was all the live agents needed for a whole lease", async () => {
    const r = rig({ gpu1: 3_000, gpu2: 3_000 });
    r.set([
      ["a1", 3_000],
      ["long", 4_000],
    ]);
    await r.settle();
    expect(r.updates).toEqual(["k-work-gpu1=4000", "k-work-gpu2=4000"]);
    // The long-lease agent leaves: nothing shortens at once ...
    r.set([["a1", 3_000]]);
    await r.settle();
    expect([...r.acks.values()]).toEqual([4_000, 4_000]);
    // ... only once 3 s have been all that was needed for the whole 4 s lease.
    await new Promise((res) => setTimeout(res, 4_100));
    await r.settle();
    expect([...r.acks.values()]).toEqual([3_000, 3_000]);
    await r.keeper.close();
  });

  it("changes nothing while an agent of an older version is alive", async () => {
    const r = rig({ gpu1: 30_000 });
    r.set([
      ["a1", 3_000],
      ["older", undefined],
    ]);
    await r.settle();
    expect(r.updates).toEqual([]);
    await r.keeper.close();
  });
});
