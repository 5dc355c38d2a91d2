import { Advertiser } from "@rung/agent/internal";
import { type AgentAdvert, AgentAdvertSchema, decode, silentLogger } from "@rung/protocol";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * The agent's advert in the agents bucket of a real nats-server: what the coordinator reads to know
 * how many orders the mesh can take now.
 */

function advert(freeGpus: number): AgentAdvert {
  const now = Date.now();
  return AgentAdvertSchema.parse({
    v: 1,
    type: "advert",
    agent: "box1",
    state: "running",
    host: { hostname: "box1", cpuModel: "x", cpuCores: 8, memoryTotalBytes: 1, os: "linux" },
    gpus: [0, 1].map((index) => ({ index, uuid: `GPU-box1-${index}`, name: "H100", memoryTotalMiB: 81_920, driver: "550" })),
    cpuSlots: 0,
    freeGpus,
    freeCpuSlots: 0,
    labels: {},
    pricePerGpuHour: null,
    version: "0",
    startedAt: now,
    updatedAt: now,
  });
}

describe("the agent's advert", () => {
  it("shows the state after the last change, also one made while a put was on its way", async ({ mesh }) => {
    const kv = mesh.resources.agents;
    // The real bucket, with each put held until the test lets it go: the second change lands while
    // the first put is in flight, as when two trials start on one box at once.
    const held: (() => void)[] = [];
    const slow = new Proxy(kv, {
      get(target, key, receiver) {
        if (key !== "put") return Reflect.get(target, key, receiver);
        return async (k: string, data: Uint8Array) => {
          await new Promise<void>((r) => held.push(r));
          return target.put(k, data);
        };
      },
    });
    let free = 2;
    const a = new Advertiser({
      kv: slow,
      agent: "box1",
      intervalMs: 3_600_000, // no timer to mend a stale advert within the test
      build: () => advert(free),
      isConnected: () => true,
      log: silentLogger(),
    });
    const stored = async () => {
      const e = await kv.get("box1");
      const r = decode(AgentAdvertSchema, e?.value ?? new Uint8Array());
      if (!r.ok) throw r.error;
      return r.value.freeGpus;
    };
    free = 1; // a trial took GPU 0
    const first = a.refresh();
    free = 0; // and another GPU 1, while that advert is on its way
    const second = a.refresh();
    // Each held put goes on after a moment, until both refreshes have settled.
    let settled = false;
    const releasing = (async () => {
      while (!settled) {
        held.shift()?.();
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await Promise.all([first, second]);
    settled = true;
    await releasing;
    expect(await stored()).toBe(0);
    await a.close();
  });
});
