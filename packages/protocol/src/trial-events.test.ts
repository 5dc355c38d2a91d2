import { describe, expect, it } from "vitest";
import {
  decode,
  encode,
  expandEvent,
  MAX_REPORT_BATCH,
  reportBatch,
  SCHEMA_VERSION,
  type TrialEventOf,
  TrialEventSchema,
  TrialEvents,
  TrialEventWriter,
  trialEvent,
} from "./index.js";

describe("trial event constructors", () => {
  it("stamp the schema version and the type, and decode to what they made", () => {
    const ev = TrialEvents.queued({ study: "s", trial: "t", ts: 5, attempt: 2 });
    expect(ev).toEqual({ v: SCHEMA_VERSION, type: "queued", study: "s", trial: "t", ts: 5, attempt: 2 });
    expect(Object.keys(ev).slice(0, 2)).toEqual(["v", "type"]);
    const back = decode(TrialEventSchema, encode(ev), "trial event");
    expect(back).toEqual({ ok: true, value: ev });
  });

  it("stamp the time when none is given", () => {
    const before = Date.now();
    const ev = TrialEvents.ended({ study: "s", trial: "t", status: "completed", reason: "done", attempts: 1 });
    expect(ev.ts).toBeGreaterThanOrEqual(before);
    expect(ev.ts).toBeLessThanOrEqual(Date.now());
  });

  it("keep their own v and type over whatever the fields carry", () => {
    const stray = { v: 99, type: "ended", study: "s", trial: "t", ts: 1, attempt: 1 } as never;
    const ev = TrialEvents.queued(stray);
    expect(ev.v).toBe(SCHEMA_VERSION);
    expect(ev.type).toBe("queued");
  });

  it("exist for every event type, each passing the schema", () => {
    const at = { study: "s", trial: "t", ts: 1 };
    const made = [
      TrialEvents.created({ ...at, params: { lr: 0.1, opt: "adam", bn: true }, bracket: null }),
      TrialEvents.queued({ ...at, attempt: 1 }),
      TrialEvents.claimed({ ...at, attempt: 1, agent: "a", gpus: [0, 1] }),
      TrialEvents.started({ ...at, attempt: 1, agent: "a", pid: 7, gpus: [0, 1] }),
      TrialEvents.report({ ...at, attempt: 1, agent: "a", seq: 0, metrics: { loss: Number.NaN } }),
      TrialEvents.checkpoint({
        ...at,
        attempt: 1,
        agent: "a",
        seq: 0,
        ref: { object: "s/t/1/0", t: 1, attempt: 1, agent: "a", size: 10, digest: "0".repeat(64) },
      }),
      TrialEvents.finished({
        ...at,
        attempt: 1,
        agent: "a",
        status: "failed",
        exitCode: 1,
        signal: null,
        reason: "exit 1",
        logTail: ["boom"],
      }),
      TrialEvents.rejected({ ...at, attempt: null, agent: "a", reason: "bad-signature", detail: "d", sender: "UABC" }),
      TrialEvents.decision({
        ...at,
        attempt: 1,
        seq: 0,
        t: 1,
        value: null,
        decision: "STOP",
        by: "median",
        rung: null,
        cutoff: null,
      }),
      TrialEvents.ended({ ...at, status: "cancelled", reason: "user", attempts: 0 }),
    ];
    expect(made.map((e) => e.type).sort()).toEqual(Object.keys(TrialEventWriter).sort());
    expect(Object.keys(TrialEvents).sort()).toEqual(Object.keys(TrialEventWriter).sort());
    for (const e of made) expect(TrialEventSchema.safeParse(e).success, e.type).toBe(true);
  });

  it("take the type as a value too", () => {
    const type = "claimed" as const;
    expect(trialEvent(type, { study: "s", trial: "t", ts: 1, attempt: 1, agent: "a", gpus: [] })).toEqual(
      TrialEvents.claimed({ study: "s", trial: "t", ts: 1, attempt: 1, agent: "a", gpus: [] }),
    );
  });
});

describe("a batch of reports", () => {
  const at = { study: "s", trial: "t", attempt: 2, agent: "a" };
  it("is each of its reports, in order, with the batch's study, trial, attempt and agent", () => {
    const batch = TrialEvents.report({
      ...at,
      ts: 10,
      seq: 4,
      metrics: { epoch: 5 },
      more: [
        { seq: 5, ts: 11, metrics: { epoch: 6, loss: Number.NaN } },
        { seq: 6, ts: 12, metrics: { epoch: 7 } },
      ],
    });
    const back = decode(TrialEventSchema, encode(batch), "trial event");
    if (!back.ok) throw back.error;
    expect(expandEvent(back.value)).toEqual([
      TrialEvents.report({ ...at, ts: 10, seq: 4, metrics: { epoch: 5 } }),
      TrialEvents.report({ ...at, ts: 11, seq: 5, metrics: { epoch: 6, loss: Number.NaN } }),
      TrialEvents.report({ ...at, ts: 12, seq: 6, metrics: { epoch: 7 } }),
    ]);
    // What the agent builds from the reports, taken apart again; a single report is sent as itself.
    const reports = expandEvent(back.value);
    expect(expandEvent(reportBatch(reports as TrialEventOf<"report">[]))).toEqual(reports);
    expect(reportBatch([reports[0] as TrialEventOf<"report">])).toEqual(reports[0]);
    // Any other event, and a report alone, is itself.
    const one = TrialEvents.report({ ...at, ts: 1, seq: 0, metrics: { epoch: 1 } });
    expect(expandEvent(one)).toEqual([one]);
    const fin = TrialEvents.finished({
      ...at,
      status: "completed",
      exitCode: 0,
      signal: null,
      reason: "exit code 0",
      logTail: [],
    });
    expect(expandEvent(fin)).toEqual([fin]);
  });

  it("holds at most MAX_REPORT_BATCH reports: a longer one is refused whole", () => {
    const more = (n: number) => Array.from({ length: n }, (_, i) => ({ seq: i + 1, ts: 1, metrics: { epoch: i + 2 } }));
    const event = (n: number) => TrialEvents.report({ ...at, ts: 1, seq: 0, metrics: { epoch: 1 }, more: more(n) });
    expect(decode(TrialEventSchema, encode(event(MAX_REPORT_BATCH - 1))).ok).toBe(true);
    const r = decode(TrialEventSchema, encode(event(MAX_REPORT_BATCH)), "trial event");
    expect(r.ok).toBe(false);
  });
});
