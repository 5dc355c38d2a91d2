import type { KV } from "@nats-io/kv";
import { type AgentAdvert, AgentAdvertSchema } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { MeshAdverts } from "./mesh-adverts.js";

/** An advert with these GPUs (`mig`: a MIG instance of GPU 0; `used`: its share in use, 0..1). */
function advert(agent: string, gpus: { index: number; mig?: boolean; used: number }[]): AgentAdvert {
  const now = Date.now();
  return AgentAdvertSchema.parse({
    v: 1,
    type: "advert",
    agent,
    state: "running",
    host: { hostname: agent, cpuModel: "x", cpuCores: 8, memoryTotalBytes: 1, os: "linux" },
    gpus: gpus.map((g) => ({
      index: g.index,
      uuid: `GPU-${agent}-${g.index}`,
      name: "H100",
      memoryTotalMiB: g.mig ? 9_984 : 81_920,
      driver: "550",
      shareInUse: g.used,
      ...(g.mig ? { mig: { parent: 0, profile: "1g.10gb", computeShare: 1 / 7 } } : {}),
    })),
    cpuSlots: 0,
    freeGpus: gpus.filter((g) => g.used === 0).length,
    freeCpuSlots: 0,
    labels: {},
    pricePerGpuHour: null,
    version: "0",
    startedAt: now,
    updatedAt: now,
  });
}

describe("MeshAdverts", () => {
  it("counts gangs on whole GPUs only: MIG instances never join one", () => {
    const mesh = new MeshAdverts({} as KV, 60_000, () => {});
    // Two whole GPUs (one busy) and two free MIG instances; an agent of MIG instances only.
    mesh.adverts.set(
      "a",
      advert("a", [
        { index: 0, used: 1 },
        { index: 1, used: 0 },
        { index: 200, mig: true, used: 0 },
        { index: 201, mig: true, used: 0 },
      ]),
    );
    mesh.adverts.set(
      "b",
      advert("b", [
        { index: 100, mig: true, used: 0 },
        { index: 101, mig: true, used: 0 },
      ]),
    );
    expect(mesh.freePlaces(1)).toBe(5);
    expect(mesh.freePlaces(2)).toBe(0);
    expect(mesh.agentsFitting(2)).toEqual(["a"]);
    expect(mesh.agentsFitting(1)).toEqual(["a", "b"]);
    expect(mesh.sizes()).toEqual([2, 1]);
    mesh.adverts.set(
      "a",
      advert("a", [
        { index: 0, used: 0 },
        { index: 1, used: 0 },
        { index: 200, mig: true, used: 0 },
      ]),
    );
    expect(mesh.freePlaces(2)).toBe(1);
  });
});
