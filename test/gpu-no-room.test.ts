import { join } from "node:path";
import { FakeNvidiaSmi, fakeGpu, waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { it, makeOrder, NODE, writeTrials } from "./agent-helpers.js";

/** An order that waits for GPU memory must not vanish once its deliveries run out. */
describe("waiting for GPU memory", () => {
  it("ends an order on its last delivery with a no-room event instead of leaving it in the stream for ever", async ({
    newMesh,
  }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    const smi = new FakeNvidiaSmi(join(m.dir, "smi"), [fakeGpu(0, { memoryTotalMiB: 10_000 })]);
    // A process that is not Rung's holds 9 000 MiB: a 4 000 MiB share does not fit now.
    smi.addProcess(process.pid, [{ uuid: fakeGpu(0).uuid, memoryMiB: 9_000, compute: 0 }]);
    const agent = await m.agent({ fakeGpus: 0, nvidiaSmi: smi.path, maxDeliver: 1 });
    await m.publish(
      makeOrder({
        study: "s",
        trial: "wait",
        pool: "gpu1of2",
        resources: { gpus: 0.5, cpus: 0, gpuMemoryMiB: 4_000 },
        argv: [NODE, t.sleep, "1"],
      }),
    );
    const rejected = await m.events.wait("rejected", "wait");
    expect(rejected).toMatchObject({ reason: "no-room", handedBack: false, attempt: 1, agent: "a1" });
    expect(rejected.detail).toMatch(
      /no GPU here with 50% free has 4000 MiB of memory free .*; it waited for GPU memory through its last delivery \(1 of at most 1\), so it is not handed back$/,
    );
    const { jetstreamManager } = await import("@nats-io/jetstream");
    const jsm = await jetstreamManager(m.nc);
    await waitFor(
      "the order to leave the work stream",
      async () => (await jsm.streams.info(m.names.streams.work)).state.messages === 0,
    );
    expect(m.events.of("claimed", "wait")).toEqual([]);
    expect(agent.counters.ordersRejected).toBe(1);
  });
});
