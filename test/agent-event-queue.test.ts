import { readdirSync } from "node:fs";
import { DeliverPolicy, DiscardPolicy } from "@nats-io/jetstream";
import { type EventPublisher, EventQueue } from "@rung/agent/internal";
import {
  AckedPublisher,
  connectNats,
  decode,
  ensureResources,
  expandEvent,
  isConnectionClosed,
  isNoResponders,
  isTimeout,
  jetStreamApiCode,
  MAX_REPORT_BATCH,
  MeshNames,
  REPORT_BATCH_BYTES,
  reportSize,
  silentLogger,
  TrialEventSchema,
  TrialEvents,
} from "@rung/protocol";
import { failure, procStat, startNats, type TestMesh, waitFor } from "@rung/testkit";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * How an agent's trial events reach the study's stream: protocol's AckedPublisher (every acknowledgement
 * on one subscription) and the agent's EventQueue above it, against a real nats-server. What the stream
 * holds afterwards is read back from the stream itself.
 */

/** Every message stored for `study`: its id header and the event. */
async function storedEvents(mesh: TestMesh, names: MeshNames, study: string) {
  const consumer = await mesh.js.consumers.get(names.streams.events, {
    filter_subjects: names.subjects.studyEvents(study),
    deliver_policy: DeliverPolicy.All,
  });
  const out: { id: string; type: string; trial: string; seq: number | null; seqs: number[] }[] = [];
  let pending = (await consumer.info()).num_pending;
  while (pending > 0) {
    const batch = await consumer.fetch({ max_messages: Math.min(pending, 1000), expires: 2000 });
    for await (const m of batch) {
      const r = decode(TrialEventSchema, m.data);
      if (!r.ok) throw r.error;
      const e = r.value;
      out.push({
        id: m.headers?.get("Nats-Msg-Id") ?? "",
        type: e.type,
        trial: e.trial,
        seq: e.type === "report" ? e.seq : null,
        // A batch of reports: every report it holds.
        seqs: e.type === "report" ? [e.seq, ...(e.more ?? []).map((r) => r.seq)] : [],
      });
      pending = m.info.pending;
    }
  }
  return out;
}

const ev = { study: "s", attempt: 1, agent: "a" };
const report = (trial: string, seq: number) => TrialEvents.report({ ...ev, trial, seq, metrics: { epoch: seq } });
const finished = (trial: string) =>
  TrialEvents.finished({ ...ev, trial, status: "completed", exitCode: 0, signal: null, reason: "exit code 0", logTail: [] });

describe("acknowledged publishes on one subscription", () => {
  it("resolves with the stream's acknowledgement, flags a duplicate id, and fails the client's way", async ({ mesh }) => {
    const p = new AckedPublisher(mesh.nc);
    const subject = mesh.names.subjects.eventSubject(report("t1", 0));
    const data = new TextEncoder().encode("x");
    const first = await p.publish(subject, data, "id-1");
    expect(first.stream).toBe(mesh.names.streams.events);
    expect(first.seq).toBeGreaterThan(0);
    expect(first.duplicate).toBe(false);
    // The same id again: the server's duplicate window drops it, and says so.
    const again = await p.publish(subject, data, "id-1");
    expect(again).toEqual({ stream: first.stream, seq: first.seq, duplicate: true });
    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => p.publish(subject, data, `id-m${i}`)));
    // Each publish got its own acknowledgement: the message stored at the seq it was told is its own.
    for (const [i, ack] of many.entries()) {
      const stored = await mesh.resources.jsm.streams.getMessage(ack.stream, { seq: ack.seq });
      expect(stored?.header.get("Nats-Msg-Id")).toBe(`id-m${i}`);
    }
    expect(p.waiting).toBe(0);

    // No stream takes the subject.
    expect(isNoResponders(await failure(p.publish(`${mesh.prefix}.nowhere`, data, "id-2")))).toBe(true);

    // A stream that refuses: full, and new messages discarded (the server's err_code 10077).
    await mesh.resources.jsm.streams.add({
      name: `${mesh.prefix}_full`,
      subjects: [`${mesh.prefix}.full`],
      max_msgs: 1,
      discard: DiscardPolicy.New,
    });
    await p.publish(`${mesh.prefix}.full`, data, "id-3");
    const refused = await failure(p.publish(`${mesh.prefix}.full`, data, "id-4"));
    expect(jetStreamApiCode(refused)).toBe(10077);
    p.close();
    expect(isConnectionClosed(await failure(p.publish(subject, data, "id-5")))).toBe(true);
  });

  it("times out when the server does not answer, and fails what waits when the connection closes", async () => {
    const nats = await startNats();
    const nc = await connectNats({ url: nats.url });
    try {
      const names = new MeshNames("ackwait");
      await ensureResources(nc, names);
      const p = new AckedPublisher(nc);
      const subject = names.subjects.eventSubject(report("t1", 0));
      const data = new TextEncoder().encode("x");
      await p.publish(subject, data, "w-0");
      // A frozen server (the process stopped, as a box under memory pressure) answers nothing. The
      // signal takes effect a moment after kill() returns: wait until every thread of it has stopped.
      const pid = nats.pid as number;
      process.kill(pid, "SIGSTOP");
      try {
        await waitFor("the server stopped", () =>
          readdirSync(`/proc/${pid}/task`).every((t) => procStat(Number(t))?.state === "T"),
        );
        const t0 = performance.now();
        expect(isTimeout(await failure(p.publish(subject, data, "w-1", 300)))).toBe(true);
        expect(performance.now() - t0).toBeGreaterThanOrEqual(300);
        const waiting = p.publish(subject, data, "w-2", 60_000);
        expect(p.waiting).toBe(1);
        const closed = nc.close();
        expect(isConnectionClosed(await failure(waiting))).toBe(true);
        await closed;
      } finally {
        process.kill(nats.pid as number, "SIGCONT");
      }
    } finally {
      if (!nc.isClosed()) await nc.close();
      await nats.destroy();
    }
  });
});

describe("the agent's event queue", () => {
  it("stores each attempt's events once and in order, one publish in flight, a lost acknowledgement retried under its id", async ({
    mesh,
  }) => {
    const real = new AckedPublisher(mesh.nc);
    const inFlight = new Map<string, number>();
    let maxInFlight = 0;
    const lose = new Set(["s.t1.1.report.3.tag"]);
    const tries: { id: string; lost: boolean }[] = [];
    // The real publisher, whose acknowledgement of the ids in `lose` is lost once (after the server stored it).
    const publisher: EventPublisher = {
      async publish(subject, data, msgID, timeoutMs) {
        const n = (inFlight.get(subject) ?? 0) + 1;
        inFlight.set(subject, n);
        maxInFlight = Math.max(maxInFlight, n);
        try {
          const ack = await real.publish(subject, data, msgID, timeoutMs);
          const lost = lose.delete(msgID);
          tries.push({ id: msgID, lost });
          if (lost) throw new Error("acknowledgement lost");
          return ack;
        } finally {
          inFlight.set(subject, (inFlight.get(subject) ?? 1) - 1);
        }
      },
    };
    const queue = () => new EventQueue({ publisher, subjects: mesh.names.subjects, log: silentLogger(), tag: "tag" });
    const q1 = queue();
    const q2 = queue();
    void q1.push(TrialEvents.claimed({ ...ev, trial: "t1", gpus: [0] }));
    for (let seq = 0; seq < 40; seq++) {
      void q1.push(report("t1", seq));
      if (seq < 10) void q2.push(report("t2", seq));
    }
    void q1.push(finished("t1"));
    await Promise.all([q1.flushed(), q2.flushed()]);

    const stored = await storedEvents(mesh, mesh.names, "s");
    expect(stored.filter((s) => s.trial === "t1").map((s) => (s.type === "report" ? s.seq : s.type))).toEqual([
      "claimed",
      ...Array.from({ length: 40 }, (_, i) => i),
      "finished",
    ]);
    expect(stored.filter((s) => s.trial === "t2").map((s) => s.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i));
    expect(maxInFlight).toBe(1);
    // The lost one went again under the same id, and the server kept it once.
    expect(tries.filter((t) => t.id === "s.t1.1.report.3.tag").map((t) => t.lost)).toEqual([true, false]);
    expect(new Set(stored.map((s) => s.id)).size).toBe(stored.length);
    expect(stored).toHaveLength(52);
  });

  it("sends the reports queued together as one message when the order allows it: in order, each once, a batch retried whole under its first report's id", async ({
    mesh,
  }) => {
    const real = new AckedPublisher(mesh.nc);
    const lose = new Set(["s.t3.1.report.0.tag"]);
    const tries: { id: string; seqs: number[] }[] = [];
    const publisher: EventPublisher = {
      async publish(subject, data, msgID, timeoutMs) {
        const ack = await real.publish(subject, data, msgID, timeoutMs);
        const r = decode(TrialEventSchema, data);
        if (!r.ok) throw r.error;
        tries.push({ id: msgID, seqs: expandEvent(r.value).map((e) => (e.type === "report" ? e.seq : -1)) });
        if (lose.delete(msgID)) throw new Error("acknowledgement lost");
        return ack;
      },
    };
    const q = new EventQueue({ publisher, subjects: mesh.names.subjects, log: silentLogger(), tag: "tag", batchReports: true });
    void q.push(TrialEvents.claimed({ ...ev, trial: "t3", gpus: [0] }));
    // Queued behind `claimed` in flight, and behind each other: at most MAX_REPORT_BATCH to a message.
    for (let seq = 0; seq < 150; seq++) void q.push(report("t3", seq));
    void q.push(finished("t3"));
    await q.flushed();
    const stored = (await storedEvents(mesh, mesh.names, "s")).filter((s) => s.trial === "t3");
    expect(stored.flatMap((s) => (s.type === "report" ? s.seqs : [s.type]))).toEqual([
      "claimed",
      ...Array.from({ length: 150 }, (_, i) => i),
      "finished",
    ]);
    const batches = stored.filter((s) => s.type === "report");
    expect(batches.map((b) => b.seqs.length)).toEqual([MAX_REPORT_BATCH, MAX_REPORT_BATCH, 150 - 2 * MAX_REPORT_BATCH]);
    // Each message under its first report's id, the lost one sent again with the same reports and kept once.
    for (const b of batches) expect(b.id).toBe(`s.t3.1.report.${b.seqs[0]}.tag`);
    const retried = tries.filter((t) => t.id === "s.t3.1.report.0.tag");
    expect(retried).toHaveLength(2);
    expect(retried[1]?.seqs).toEqual(retried[0]?.seqs);
    expect(new Set(stored.map((s) => s.id)).size).toBe(stored.length);

    // Reports that arrive while one lingers leave with it, and the lifecycle event after them alone.
    const q2 = new EventQueue({
      publisher: real,
      subjects: mesh.names.subjects,
      log: silentLogger(),
      tag: "tag",
      batchReports: true,
      lingerMs: 300,
    });
    await q2.push(report("t4", 0)); // the first write: nothing to linger after
    const lingering = [1, 2, 3].map((seq) => q2.push(report("t4", seq)));
    await Promise.all(lingering);
    await q2.push(finished("t4"));
    const t4 = (await storedEvents(mesh, mesh.names, "s")).filter((s) => s.trial === "t4");
    expect(t4.map((s) => (s.type === "report" ? s.seqs : s.type))).toEqual([[0], [1, 2, 3], "finished"]);
  });

  it("fills a batch up to a byte budget: reports of many long metrics, 64 of which would pass the server's message limit, all arrive", async ({
    mesh,
  }) => {
    const publisher = new AckedPublisher(mesh.nc);
    const q = new EventQueue({ publisher, subjects: mesh.names.subjects, log: silentLogger(), tag: "tag", batchReports: true });
    // 256 metrics with 80-character names: about 23 KB a report, 1.5 MB for 64.
    const big = (seq: number) =>
      TrialEvents.report({
        ...ev,
        trial: "t5",
        seq,
        metrics: Object.fromEntries(Array.from({ length: 256 }, (_, i) => [`layer${i}.${"g".repeat(70)}_norm`, seq + i / 1000])),
      });
    void q.push(TrialEvents.claimed({ ...ev, trial: "t5", gpus: [0] }));
    const sent = Array.from({ length: MAX_REPORT_BATCH }, (_, seq) => q.push(big(seq)));
    expect(await Promise.all(sent)).toEqual(sent.map(() => true));
    const stored = (await storedEvents(mesh, mesh.names, "s")).filter((s) => s.trial === "t5" && s.type === "report");
    expect(stored.flatMap((s) => s.seqs)).toEqual(Array.from({ length: MAX_REPORT_BATCH }, (_, i) => i));
    expect(stored.length).toBeGreaterThan(1);
    for (const b of stored)
      expect(b.seqs.reduce((n, seq) => n + reportSize(big(seq)), 0)).toBeLessThanOrEqual(REPORT_BATCH_BYTES);
  }, 30_000);

  it("lets a trial's finished event go at once, whether its last report lingers already or is still queued", async ({ mesh }) => {
    // A linger of a minute: had `finished` to wait it out behind the last report, this test would time out.
    const publisher = new AckedPublisher(mesh.nc);
    const q = new EventQueue({ publisher, subjects: mesh.names.subjects, log: silentLogger(), tag: "tag", lingerMs: 60_000 });
    await q.push(report("t1", 0)); // the first write: nothing to linger after
    void q.push(report("t1", 1)); // lingers (a write just happened)
    await new Promise((r) => setTimeout(r, 20));
    await q.push(finished("t1"));
    // Behind a report still waiting for its attempt's previous acknowledgement.
    const q2 = new EventQueue({ publisher, subjects: mesh.names.subjects, log: silentLogger(), tag: "tag", lingerMs: 60_000 });
    void q2.push(report("t2", 0));
    void q2.push(report("t2", 1));
    await q2.push(finished("t2"));
    const stored = await storedEvents(mesh, mesh.names, "s");
    expect(stored.map((s) => `${s.trial} ${s.type === "report" ? s.seq : s.type}`)).toEqual([
      "t1 0",
      "t1 1",
      "t1 finished",
      "t2 0",
      "t2 1",
      "t2 finished",
    ]);
  }, 30_000);

  it("hands the reports of several attempts that are ready together to the client at once", async ({ mesh }) => {
    const real = new AckedPublisher(mesh.nc);
    let batch = 0;
    let marked = false;
    const batches: number[] = [];
    const publisher: EventPublisher = {
      publish(subject, data, msgID, timeoutMs) {
        if (!marked) {
          marked = true;
          queueMicrotask(() => {
            batch += 1;
            marked = false;
          });
        }
        batches.push(batch);
        return real.publish(subject, data, msgID, timeoutMs);
      },
    };
    const queues = Array.from(
      { length: 8 },
      () => new EventQueue({ publisher, subjects: mesh.names.subjects, log: silentLogger(), tag: "tag" }),
    );
    queues.forEach((q, i) => {
      void q.push(report(`t${i}`, 0));
    });
    await Promise.all(queues.map((q) => q.flushed()));
    expect(batches).toHaveLength(8);
    expect(new Set(batches).size).toBe(1);
    expect(await storedEvents(mesh, mesh.names, "s")).toHaveLength(8);
  });
});
