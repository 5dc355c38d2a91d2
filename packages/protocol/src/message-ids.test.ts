import { describe, expect, it } from "vitest";
import {
  agentEventMsgId,
  createdMsgId,
  decisionMsgId,
  endedMsgId,
  InvalidTokenError,
  logChunkMsgId,
  queuedMsgId,
  rejectedMsgId,
  reportMsgId,
  studyScope,
  type TrialEvent,
  TrialEvents,
  TrialEventWriter,
  trialEventMsgId,
  workOrderMsgId,
} from "./index.js";

// The ids as the agent, the coordinator and the log stream built them by hand before message-ids.ts
// (agent events.ts `eventMsgId`, coordinator.ts `actionKey` and its publishes, log-stream.ts): the
// server de-duplicates across an upgrade only if these stay the same.
function legacyAgentEventId(e: TrialEvent): string {
  const attempt = "attempt" in e && e.attempt !== null ? e.attempt : 0;
  const base = `${e.study}.${e.trial}.${attempt}.${e.type}`;
  return e.type === "report" ? `${base}.${e.seq}` : base;
}
function legacyCoordinatorEventId(ev: TrialEvent): string | undefined {
  switch (ev.type) {
    case "created":
      return `${ev.study}.${ev.trial}.created`;
    case "queued":
      return `${ev.study}.${ev.trial}.queued.${ev.attempt}`;
    case "ended":
      return `${ev.study}.${ev.trial}.ended`;
    case "decision":
      return `${ev.study}.${ev.trial}.decision.${ev.attempt}.${ev.seq}`;
    default:
      return undefined;
  }
}

const at = { study: "digits-asha", trial: "t0007", ts: 1 };
const everyType: TrialEvent[] = [
  TrialEvents.created({ ...at, params: { lr: 0.1 }, bracket: 0 }),
  TrialEvents.queued({ ...at, attempt: 2 }),
  TrialEvents.claimed({ ...at, attempt: 2, agent: "box1", gpus: [0] }),
  TrialEvents.started({ ...at, attempt: 2, agent: "box1", pid: 42, gpus: [0] }),
  TrialEvents.report({ ...at, attempt: 2, agent: "box1", seq: 7, metrics: { loss: 1 } }),
  TrialEvents.finished({
    ...at,
    attempt: 2,
    agent: "box1",
    status: "completed",
    exitCode: 0,
    signal: null,
    reason: "exit 0",
    logTail: [],
  }),
  TrialEvents.rejected({ ...at, attempt: null, agent: "box1", reason: "malformed", detail: "x", sender: null }),
  TrialEvents.rejected({ ...at, attempt: 3, agent: "box1", reason: "expired", detail: "x", sender: null }),
  TrialEvents.decision({
    ...at,
    attempt: 2,
    seq: 7,
    t: 4,
    value: 0.5,
    decision: "STOP",
    by: "asha",
    rung: 4,
    cutoff: 0.4,
  }),
  TrialEvents.ended({ ...at, status: "stopped", reason: "asha", attempts: 2 }),
];

describe("message ids", () => {
  it("build every kind from the grammar", () => {
    expect(workOrderMsgId("s", "t1", 1)).toBe("s.t1.1");
    expect(logChunkMsgId("s", "tr", 1, 0)).toBe("s.tr.1.log.0");
    expect(agentEventMsgId("s", "t", 2, "claimed")).toBe("s.t.2.claimed");
    expect(agentEventMsgId("s", "t", null, "rejected")).toBe("s.t.0.rejected");
    // Each agent's refusal of one order is its own message: two agents refusing it are two events.
    expect(rejectedMsgId("s", "t", 2, "box1")).toBe("s.t.2.rejected.box1");
    expect(rejectedMsgId("s", "t", 2, "box2")).not.toBe(rejectedMsgId("s", "t", 2, "box1"));
    expect(reportMsgId("s", "t", 2, 7)).toBe("s.t.2.report.7");
    expect(createdMsgId("s", "t")).toBe("s.t.created");
    expect(queuedMsgId("s", "t", 3)).toBe("s.t.queued.3");
    expect(decisionMsgId("s", "t", 1, 12)).toBe("s.t.decision.1.12");
    expect(endedMsgId("s", "t")).toBe("s.t.ended");
  });

  it("are exactly the ids built by hand before, for every trial event type", () => {
    for (const e of everyType) {
      // A refusal now carries the refusing agent, so that a second agent's refusal is not dropped as a duplicate.
      const expected =
        TrialEventWriter[e.type] === "coordinator"
          ? legacyCoordinatorEventId(e)
          : `${legacyAgentEventId(e)}${e.type === "rejected" ? `.${e.agent}` : ""}`;
      expect(trialEventMsgId(e), e.type).toBe(expected);
    }
  });

  it("are exactly the work order and log chunk ids built by hand before", () => {
    const [study, trial, attempt, seq] = ["digits-asha", "t0007", 3, 41];
    expect(workOrderMsgId(study, trial, attempt)).toBe(`${study}.${trial}.${attempt}`);
    expect(logChunkMsgId(study, trial, attempt, seq)).toBe(`${study}.${trial}.${attempt}.log.${seq}`);
  });

  it("never give two trial events of one trial the same id", () => {
    const ids = everyType.map((e) => trialEventMsgId(e));
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("scope a study's ids by its incarnation id, so a study run again after a delete never collides", () => {
    expect(studyScope("s")).toBe("s");
    expect(studyScope("s", "a1b2")).toBe("s~a1b2");
    expect(workOrderMsgId(studyScope("s", "a1b2"), "t", 1)).toBe("s~a1b2.t.1");
    expect(workOrderMsgId(studyScope("s", "ffff"), "t", 1)).not.toBe(workOrderMsgId(studyScope("s", "a1b2"), "t", 1));
    const e = TrialEvents.created({ study: "s", trial: "t", params: {}, bracket: null });
    expect(trialEventMsgId(e, "a1b2")).toBe("s~a1b2.t.created");
    expect(trialEventMsgId(e)).toBe("s.t.created");
    expect(() => studyScope("s", "a.b")).toThrow(InvalidTokenError);
    expect(() => workOrderMsgId("s~a~b", "t", 1)).toThrow(InvalidTokenError);
  });

  it("refuse names a subject could not carry, and attempts and sequences that are not counts", () => {
    expect(() => workOrderMsgId("a.b", "t", 1)).toThrow(InvalidTokenError);
    expect(() => createdMsgId("s", "*")).toThrow(InvalidTokenError);
    expect(() => workOrderMsgId("s", "t", 0)).toThrow(/attempt must be a positive integer, got 0/);
    expect(() => queuedMsgId("s", "t", 1.5)).toThrow(RangeError);
    expect(() => reportMsgId("s", "t", 1, -1)).toThrow(/seq must be a non-negative integer/);
    expect(() => logChunkMsgId("s", "t", 1, Number.NaN)).toThrow(RangeError);
  });
});
