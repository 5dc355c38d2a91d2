import type { JetStreamClient } from "@nats-io/jetstream";
import { decode, MeshNames, silentLogger, TrialEventSchema, TrialEvents } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { EventQueue } from "./events.js";

/**
 * A JetStream stand-in that records every publish: which synchronous batch started it (publishes
 * started together leave in one socket write), how many of one subject were in flight at once, and
 * fails the first try of the message ids it is told to.
 */
function recordingJs(failOnce: Set<string>) {
  const tries: { msgID: string; batch: number; ok: boolean }[] = [];
  const stored: { subject: string; msgID: string; seq: number | null; type: string; trial: string }[] = [];
  const inFlight = new Map<string, number>();
  let maxInFlight = 0;
  let batch = 0;
  let marked = false;
  const js = {
    async publish(subject: string, data: Uint8Array, opts: { msgID: string }) {
      if (!marked) {
        marked = true;
        queueMicrotask(() => {
          batch += 1;
          marked = false;
        });
      }
      const fail = failOnce.delete(opts.msgID);
      tries.push({ msgID: opts.msgID, batch, ok: !fail });
      const n = (inFlight.get(subject) ?? 0) + 1;
      inFlight.set(subject, n);
      maxInFlight = Math.max(maxInFlight, n);
      await new Promise((r) => setTimeout(r, 1));
      inFlight.set(subject, n - 1);
      if (fail) throw new Error("lost acknowledgement");
      const r = decode(TrialEventSchema, data);
      if (!r.ok) throw r.error;
      const e = r.value;
      stored.push({ subject, msgID: opts.msgID, seq: e.type === "report" ? e.seq : null, type: e.type, trial: e.trial });
      return { seq: stored.length, duplicate: false, stream: "EVENTS" };
    },
  } as unknown as JetStreamClient;
  return { js, tries, stored, maxInFlight: () => maxInFlight };
}

const subjects = new MeshNames("evq").subjects;
const ev = { study: "s", attempt: 1, agent: "a" };

function queue(js: JetStreamClient): EventQueue {
  return new EventQueue({ js, subjects, log: silentLogger(), tag: "tag" });
}

describe("event queue", () => {
  it("stores each attempt's events once and in order, one publish in flight, a failed one retried under its id", async () => {
    const failing = `s.t1.1.report.3.tag`;
    const rec = recordingJs(new Set([failing]));
    const q1 = queue(rec.js);
    const q2 = queue(rec.js);
    void q1.push(TrialEvents.claimed({ ...ev, trial: "t1", gpus: [0] }));
    for (let seq = 0; seq < 40; seq++) {
      void q1.push(TrialEvents.report({ ...ev, trial: "t1", seq, metrics: { epoch: seq } }));
      if (seq < 10) void q2.push(TrialEvents.report({ ...ev, trial: "t2", seq, metrics: { epoch: seq } }));
    }
    void q1.push(
      TrialEvents.finished({
        ...ev,
        trial: "t1",
        status: "completed",
        exitCode: 0,
        signal: null,
        reason: "exit code 0",
        logTail: [],
      }),
    );
    await Promise.all([q1.flushed(), q2.flushed()]);

    const t1 = rec.stored.filter((s) => s.trial === "t1");
    expect(t1.map((s) => (s.type === "report" ? s.seq : s.type))).toEqual([
      "claimed",
      ...Array.from({ length: 40 }, (_, i) => i),
      "finished",
    ]);
    const t2 = rec.stored.filter((s) => s.trial === "t2");
    expect(t2.map((s) => s.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i));
    expect(rec.maxInFlight()).toBe(1);
    // The lost one went again under the same id (the server would drop it had it been stored).
    expect(rec.tries.filter((t) => t.msgID === failing).map((t) => t.ok)).toEqual([false, true]);
    expect(new Set(rec.stored.map((s) => s.msgID)).size).toBe(rec.stored.length);
  });

  it("starts the reports of several attempts that are ready together in one batch", async () => {
    const rec = recordingJs(new Set());
    const queues = Array.from({ length: 8 }, () => queue(rec.js));
    queues.forEach((q, i) => {
      void q.push(TrialEvents.report({ ...ev, trial: `t${i}`, seq: 0, metrics: { epoch: 1 } }));
    });
    await Promise.all(queues.map((q) => q.flushed()));
    expect(rec.stored).toHaveLength(8);
    expect(new Set(rec.tries.map((t) => t.batch)).size).toBe(1);
  });
});
