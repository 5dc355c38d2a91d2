import { COORDINATOR, claimProof, type EventSource, type TrialEvent } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { StudyState } from "./state.js";

/** The fold's rule of who may say what, one event at a time (the stream-level test is test/security-agent-scope.test.ts). */

const base = { v: 1 as const, study: "s", trial: "t1" };
const NONCE = "0123456789abcdef01234567";
const as = (agent: string): EventSource => ({ role: "agent", agent });
const proof = (attempt: number, agent: string, nonce = NONCE) => claimProof({ nonce, study: "s", trial: "t1", attempt, agent });

function fresh(nonce: string | null = NONCE): StudyState {
  const s = new StudyState({ study: "s", metric: "acc", mode: "max", timeAttr: "epoch" });
  s.apply({ ...base, ts: 1, type: "created", params: {}, bracket: 0 }, COORDINATOR);
  s.apply({ ...base, ts: 2, type: "queued", attempt: 1, ...(nonce === null ? {} : { nonce }) }, COORDINATOR);
  return s;
}

/** `p`: the proof to carry (default the right one; null: none). */
const claimed = (agent: string, attempt = 1, p: string | null = proof(attempt, agent)): TrialEvent => ({
  ...base,
  ts: 3,
  type: "claimed",
  attempt,
  agent,
  gpus: [0],
  ...(p === null ? {} : { proof: p }),
});
const report = (agent: string, seq: number, acc: number, attempt = 1): TrialEvent => ({
  ...base,
  ts: 4 + seq,
  type: "report",
  attempt,
  agent,
  seq,
  metrics: { epoch: seq + 1, acc },
});
const finished = (agent: string, attempt = 1): TrialEvent => ({
  ...base,
  ts: 50,
  type: "finished",
  attempt,
  agent,
  status: "completed",
  exitCode: 0,
  signal: null,
  reason: "exit 0",
  logTail: [],
});

describe("StudyState: who may say what", () => {
  it("makes the agent with the order's proof the claimant, and folds only its reports", () => {
    const s = fresh();
    expect(s.apply(claimed("a"), as("a"))).toBe(true);
    expect(s.apply(report("a", 0, 0.5), as("a"))).toBe(true);
    // Another box's report for the same attempt, better value, same and new seq: not folded.
    expect(s.apply(report("b", 0, 0.99), as("b"))).toBe(false);
    expect(s.apply(report("b", 7, 0.999), as("b"))).toBe(false);
    // Or the same box in a's name (the subject says b).
    expect(s.apply(report("a", 8, 0.999), as("b"))).toBe(false);
    expect(s.trial("t1").bestValue).toBe(0.5);
    expect(s.forgeriesBy.get("b")).toBe(3);
    expect(s.forgeries.map((f) => f.why)).toEqual([
      "agent b published a report event for attempt 1, which agent a holds",
      "agent b published a report event for attempt 1, which agent a holds",
      "agent b published a report event in the name of agent a",
    ]);
  });

  it("refuses a claim without the order's proof, or one for an attempt another agent holds", () => {
    const s = fresh();
    expect(s.apply(claimed("b", 1, "f".repeat(64)), as("b"))).toBe(false);
    expect(s.apply(claimed("b", 1, null), as("b"))).toBe(false);
    // A proof made for another agent does not hold for this one.
    expect(s.apply(claimed("b", 1, proof(1, "a")), as("b"))).toBe(false);
    expect(s.apply(claimed("a"), as("a"))).toBe(true);
    // The next attempt (a redelivery has no queued of its own) needs the same order's proof.
    expect(s.apply(claimed("b", 2, proof(2, "b", "another-nonce-0000")), as("b"))).toBe(false);
    expect(s.trial("t1").attempts.find((x) => x.attempt === 2)?.claimant ?? null).toBeNull();
    expect(s.trial("t1").attempts[0]?.claimant).toBe("a");
    expect(s.forgeriesBy.get("b")).toBe(4);
  });

  it("keeps coordinator events the coordinator's and agent events the agents'", () => {
    const s = fresh();
    s.apply(claimed("a"), as("a"));
    const ended: TrialEvent = { ...base, ts: 9, type: "ended", status: "stopped", reason: "forged", attempts: 1 };
    expect(s.apply(ended, as("b"))).toBe(false);
    expect(s.trial("t1").phase).toBe("running");
    expect(s.apply(finished("b"), as("b"))).toBe(false);
    expect(s.trial("t1").attempts[0]?.status).toBe("claimed");
    // An agent event on the coordinator's subject is nobody's forgery: ignored, not named.
    expect(s.apply(report("a", 0, 0.9), COORDINATOR)).toBe(false);
    expect(s.ignored).toBe(1);
    expect([...s.forgeriesBy.keys()]).toEqual(["b"]);
  });

  it("fences reports: once per (attempt, seq), only for the current attempt, only until its end", () => {
    const s = fresh();
    s.apply(claimed("a"), as("a"));
    expect(s.apply(report("a", 0, 0.5), as("a"))).toBe(true);
    expect(s.apply(report("a", 0, 0.5), as("a"))).toBe(false);
    expect(s.trial("t1").reports).toBe(1);
    // Attempt 2 (the order redelivered to c) is claimed: a's late reports of attempt 1 no longer count.
    expect(s.apply(claimed("c", 2), as("c"))).toBe(true);
    expect(s.apply(report("a", 1, 0.9), as("a"))).toBe(false);
    expect(s.apply(report("c", 0, 0.6, 2), as("c"))).toBe(true);
    expect(s.apply(finished("c", 2), as("c"))).toBe(true);
    expect(s.apply(report("c", 1, 0.95, 2), as("c"))).toBe(false);
    expect(s.trial("t1").bestValue).toBe(0.6);
    // None of that was anyone's forgery.
    expect(s.forgeries).toEqual([]);
    expect(s.ignored).toBe(3);
  });

  it("counts a refusal only with the order's proof", () => {
    const s = fresh();
    const refusal = (agent: string, p?: string): TrialEvent => ({
      ...base,
      ts: 5,
      type: "rejected",
      attempt: 1,
      agent,
      reason: "cannot-run",
      detail: "no python",
      sender: null,
      ...(p === undefined ? {} : { proof: p }),
    });
    expect(s.apply(refusal("b"), as("b"))).toBe(false);
    expect(s.trial("t1").refusals).toEqual([]);
    expect(s.apply(refusal("b", proof(1, "b")), as("b"))).toBe(true);
    expect(s.trial("t1").refusals.map((r) => r.agent)).toEqual(["b"]);
  });

  it("takes the claims of a study queued before nonces existed as they come, still one claimant per attempt", () => {
    const s = fresh(null);
    expect(s.apply(claimed("a", 1, null), as("a"))).toBe(true);
    expect(s.apply(report("b", 0, 0.99), as("b"))).toBe(false);
    expect(s.apply(claimed("b", 1, null), as("b"))).toBe(false);
    expect(s.trial("t1").attempts[0]?.claimant).toBe("a");
  });

  it("voids an attempt two agents claim with the order's proof: a handed-back order cannot be used to pre-claim a later delivery", () => {
    const s = fresh();
    // m was handed the order (delivery 1), read its nonce and handed it back; it claims delivery 2's
    // number before h, to whom JetStream hands it, can.
    expect(s.apply(claimed("m", 2), as("m"))).toBe(true);
    expect(s.apply(claimed("h", 2), as("h"))).toBe(false);
    expect(s.contests).toEqual([{ trial: "t1", attempt: 2, agents: ["m", "h"], ts: 3 }]);
    // Nothing of attempt 2 counts any more, from either; nobody is named a forger for it.
    expect(s.apply(report("m", 0, 0.99, 2), as("m"))).toBe(false);
    expect(s.apply(report("h", 0, 0.5, 2), as("h"))).toBe(false);
    expect(s.trial("t1").bestValue).toBeNull();
    expect(s.forgeries).toEqual([]);
  });

  it("counts a rejection only from an agent that could have been handed the attempt", () => {
    const s = fresh();
    s.apply(claimed("a"), as("a"));
    const expired: TrialEvent = {
      ...base,
      ts: 6,
      type: "rejected",
      attempt: 1,
      agent: "b",
      reason: "expired",
      detail: "x",
      sender: null,
      proof: proof(1, "b"),
    };
    expect(s.apply(expired, as("b"))).toBe(false);
    expect(s.trial("t1").attempts[0]?.status).toBe("claimed");
    expect(s.forgeries[0]?.why).toBe("agent b refused attempt 1, which agent a holds");
  });

  it("takes a checkpoint only as the attempt's own object", () => {
    const s = fresh();
    s.apply(claimed("a"), as("a"));
    const ckpt = (object: string): TrialEvent => ({
      ...base,
      ts: 7,
      type: "checkpoint",
      attempt: 1,
      agent: "a",
      seq: 0,
      ref: { object, t: 1, attempt: 1, agent: "a", size: 10, digest: "0".repeat(64) },
    });
    expect(s.apply(ckpt("other~x/t9/1/0"), as("a"))).toBe(false);
    expect(s.apply(ckpt("s~abc/t2/1/0"), as("a"))).toBe(false);
    expect(s.apply(ckpt("s~abc/t1/1/0"), as("a"))).toBe(true);
    expect(s.trial("t1").checkpoints.map((c) => c.ref.object)).toEqual(["s~abc/t1/1/0"]);
  });
});

describe("StudyState: the GPU time of an attempt", () => {
  const s = () => new StudyState({ study: "s", metric: "val_acc", mode: "max", timeAttr: "epoch", gpus: 0.25 });
  const on = (state: StudyState) => (e: Record<string, unknown>, agent?: string) =>
    state.apply({ v: 1, study: "s", trial: "t1", ...e } as TrialEvent, agent ? { role: "agent", agent } : COORDINATOR);
  const run = (apply: ReturnType<typeof on>, attempt: number, from: number, to: number, status = "completed") => {
    apply({ type: "claimed", ts: from, attempt, agent: "a", gpus: [0] }, "a");
    apply({ type: "started", ts: from, attempt, agent: "a", pid: 1, gpus: [0] }, "a");
    apply({ type: "finished", ts: to, attempt, agent: "a", status, exitCode: 1, signal: null, reason: "", logTail: [] }, "a");
  };
  const seconds = (state: StudyState) =>
    (state.trials.get("t1")?.attempts ?? []).map((a) => StudyState.attemptGpuSeconds(a, 1_000_000));

  it("is its share of the GPU: also on a redelivery, which has no `queued` of its own; a whole GPU after running out of memory", () => {
    const state = s();
    const apply = on(state);
    apply({ type: "created", ts: 0, params: {}, bracket: null });
    apply({ type: "queued", ts: 0, attempt: 1 });
    run(apply, 1, 0, 4000, "failed");
    // The same order delivered again (attempt 2 of its message): claimed and started, never queued.
    run(apply, 2, 5000, 9000, "oom");
    apply({ type: "queued", ts: 9000, attempt: 3 });
    run(apply, 3, 10_000, 14_000);
    expect(seconds(state)).toEqual([1, 1, 4]);
  });

  it("is a whole GPU per GPU held when the study asks for whole GPUs", () => {
    const state = new StudyState({ study: "s", metric: "val_acc", mode: "max", timeAttr: "epoch", gpus: 1 });
    const apply = on(state);
    apply({ type: "created", ts: 0, params: {}, bracket: null });
    apply({ type: "queued", ts: 0, attempt: 1 });
    run(apply, 1, 0, 4000);
    expect(seconds(state)).toEqual([4]);
  });
});

describe("StudyState: an attempt handed back before it started", () => {
  it("says so, instead of blaming an agent's lost lease", () => {
    const state = new StudyState({ study: "s", metric: "val_acc", mode: "max", timeAttr: "epoch" });
    const apply = (e: Record<string, unknown>, agent?: string) =>
      state.apply({ v: 1, study: "s", trial: "t1", ...e } as TrialEvent, agent ? { role: "agent", agent } : COORDINATOR);
    apply({ type: "created", ts: 0, params: {}, bracket: null });
    apply({ type: "queued", ts: 0, attempt: 1 });
    // An agent handed the order back unclaimed (no room); its next delivery runs as attempt 2.
    apply({ type: "claimed", ts: 10, attempt: 2, agent: "b", gpus: [0] }, "b");
    const [first] = state.trials.get("t1")?.attempts ?? [];
    expect(first?.status).toBe("lost");
    expect(first?.reason).toBe("never started: its order was handed back and ran again as attempt 2");
  });
});
