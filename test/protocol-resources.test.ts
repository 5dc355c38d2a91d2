import { connectNats, decode, encode, ensureResources, ensureWorkConsumer, MeshNames, TrialEventSchema } from "@rung/protocol";
import { uniquePrefix } from "@rung/testkit";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

describe("ensureResources against a real nats-server", () => {
  it("creates every stream and bucket, and a second call changes nothing", async ({ nats }) => {
    const names = new MeshNames(uniquePrefix());
    const nc = await connectNats({ url: nats.url });
    try {
      const r = await ensureResources(nc, names);
      const streams = await r.jsm.streams.names().next();
      for (const s of Object.values(names.streams)) expect(streams).toContain(s);
      for (const b of Object.values(names.buckets)) expect(streams).toContain(`KV_${b}`);
      const work = await r.jsm.streams.info(names.streams.work);
      expect(work.config.retention).toBe("workqueue");
      const before = (await r.jsm.streams.info(names.streams.events)).created;
      await ensureResources(nc, names);
      expect((await r.jsm.streams.info(names.streams.events)).created).toBe(before);
    } finally {
      await nc.close();
    }
  });

  it("succeeds when two processes call it at once", async ({ nats }) => {
    const names = new MeshNames(uniquePrefix());
    const a = await connectNats({ url: nats.url });
    const b = await connectNats({ url: nats.url });
    try {
      const results = await Promise.allSettled([ensureResources(a, names), ensureResources(b, names)]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled"]);
      const r = await ensureResources(a, names);
      const [c1, c2] = await Promise.all([ensureWorkConsumer(r.jsm, names, "gpu1"), ensureWorkConsumer(r.jsm, names, "gpu1")]);
      expect(c1.durable).toBe(names.workConsumer("gpu1"));
      expect(c1).toEqual(c2);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("updates a stream whose limits changed", async ({ nats }) => {
    const names = new MeshNames(uniquePrefix());
    const nc = await connectNats({ url: nats.url });
    try {
      const r = await ensureResources(nc, names, { telemetryMaxAgeMs: 60_000 });
      await ensureResources(nc, names, { telemetryMaxAgeMs: 120_000 });
      const info = await r.jsm.streams.info(names.streams.telemetry);
      expect(info.config.max_age).toBe(120_000 * 1_000_000);
    } finally {
      await nc.close();
    }
  });

  it("carries a typed event through JetStream and drops duplicates by message id", async ({ mesh }) => {
    const { names, js, resources: r } = mesh;
    const ev = { v: 1, type: "queued", study: "s", trial: "t1", ts: Date.now(), attempt: 1 };
    const subject = names.subjects.coordinatorEvents("s", "t1");
    const first = await js.publish(subject, encode(ev), { msgID: "s.t1.1" });
    const again = await js.publish(subject, encode(ev), { msgID: "s.t1.1" });
    expect(again.duplicate).toBe(true);
    const stored = await r.jsm.streams.getMessage(names.streams.events, { seq: first.seq });
    const back = decode(TrialEventSchema, stored.data);
    expect(back.ok && back.value.type).toBe("queued");
    expect((await r.jsm.streams.info(names.streams.events)).state.messages).toBe(1);
  });
});
