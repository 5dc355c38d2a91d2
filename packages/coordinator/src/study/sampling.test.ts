import { COORDINATOR, claimProof, type EventSource, type TrialEvent } from "@rung/protocol";
import { describe, expect, it } from "vitest";
import { redrawSampledTrials, trialParams } from "./sampling.js";
import { generateTrials } from "./search-space.js";
import { compileSpec } from "./spec.js";
import { StudyState } from "./state.js";
import type { StoredEvent } from "./stored-event.js";

/**
 * Where a trial's parameters come from, and drawing them again from the stream. The events are built by
 * hand so the stream's order can be chosen: an agent's reports stored between the coordinator's basis
 * and its `created` must not be seen by the redraw, as they were not by the coordinator.
 */

const spec = compileSpec({
  name: "s",
  command: "python train.py --x {x} --opt {opt}",
  metric: { name: "acc", mode: "max" },
  search: {
    algorithm: "tpe",
    samples: 12,
    startup_trials: 4,
    seed: 3,
    space: { x: { uniform: [0, 1] }, opt: { choice: ["a", "b"] } },
  },
  scheduler: { type: "promotion", max_t: 9, reduction_factor: 3 },
});
const planned = generateTrials(spec);
const NONCE = "0123456789abcdef01234567";
const as = (agent: string): EventSource => ({ role: "agent", agent });

/** A study's stream: `trials` each created, queued, claimed by a1 and reporting acc = f(x) at epochs 1..upTo. */
class Stream {
  readonly events: StoredEvent[] = [];
  readonly state = new StudyState({ study: "s", metric: "acc", mode: "max", timeAttr: "epoch" });
  seq = 0;
  push(event: TrialEvent, from: EventSource): StoredEvent {
    const e = { seq: ++this.seq, event, from };
    this.events.push(e);
    return e;
  }
  fold(e: StoredEvent): void {
    this.state.apply(e.event, e.from);
  }
  /** What the coordinator does: draws the params from its fold, publishes `created` (and folds it). */
  create(index: number, basis: number): StoredEvent {
    const p = planned[index] as (typeof planned)[number];
    const { params, sampledBy } = trialParams(spec, p, index, this.state);
    const e = this.push(
      {
        v: 1,
        study: "s",
        trial: p.trial,
        ts: this.seq,
        type: "created",
        params,
        bracket: null,
        ...(sampledBy ? { sampledBy, basis } : {}),
      },
      COORDINATOR,
    );
    this.fold(e);
    const q = this.push(
      { v: 1, study: "s", trial: p.trial, ts: this.seq, type: "queued", attempt: 1, nonce: NONCE },
      COORDINATOR,
    );
    this.fold(q);
    return e;
  }
  /** An agent's claim and reports; stored now, folded by the caller when the coordinator would see them. */
  run(trial: string, values: readonly number[], finish = true): StoredEvent[] {
    const out = [
      this.push(
        {
          v: 1,
          study: "s",
          trial,
          ts: this.seq,
          type: "claimed",
          attempt: 1,
          agent: "a1",
          gpus: [0],
          proof: claimProof({ nonce: NONCE, study: "s", trial, attempt: 1, agent: "a1" }),
        },
        as("a1"),
      ),
    ];
    for (const [i, acc] of values.entries())
      out.push(
        this.push(
          {
            v: 1,
            study: "s",
            trial,
            ts: this.seq,
            type: "report",
            attempt: 1,
            agent: "a1",
            seq: i,
            metrics: { epoch: i + 1, acc },
          },
          as("a1"),
        ),
      );
    if (finish)
      out.push(
        this.push(
          {
            v: 1,
            study: "s",
            trial,
            ts: this.seq,
            type: "finished",
            attempt: 1,
            agent: "a1",
            status: "completed",
            exitCode: 0,
            signal: null,
            reason: "exit 0",
            logTail: [],
          },
          as("a1"),
        ),
      );
    return out;
  }
}

const acc = (params: Readonly<Record<string, unknown>>) => (params.opt === "b" ? 0.5 : 0) + (params.x as number) * 0.4;

describe("trial parameters: planned draws, the model's, and the same again from the stream", () => {
  it("the startup trials and those drawn before enough results are the plan's; later ones are the model's and redraw identically, agent events stored after the basis left out", () => {
    const s = new Stream();
    // Four startup trials, each reporting three epochs; the coordinator folds everything.
    for (let i = 0; i < 4; i++) {
      const c = s.create(i, s.seq);
      expect(c.event.type === "created" && c.event.sampledBy).toBeFalsy();
      expect(c.event.type === "created" && c.event.params).toEqual(planned[i]?.params);
      for (const e of s.run(planned[i]?.trial as string, [0.1, 0.2, acc(planned[i]?.params ?? {})])) s.fold(e);
    }
    // Model draws, each while an earlier trial's reports are stored but not folded yet.
    let unfolded: StoredEvent[] = [];
    const drawn: string[] = [];
    for (let i = 4; i < 10; i++) {
      const basis = s.seq - unfolded.length;
      const c = s.create(i, basis);
      if (c.event.type === "created" && c.event.sampledBy === "tpe") drawn.push(c.event.trial);
      for (const e of unfolded) s.fold(e);
      unfolded = s.run(c.event.trial, [0.1, 0.3, acc(c.event.type === "created" ? c.event.params : {})]);
    }
    expect(drawn.length).toBe(6);
    const again = redrawSampledTrials(spec, s.events);
    expect(again.map((r) => r.trial)).toEqual(drawn);
    expect(again.every((r) => r.same)).toBe(true);

    // Folding everything up to each `created` instead (the wrong rule) would not give the same draws.
    const naive = new StudyState({ study: "s", metric: "acc", mode: "max", timeAttr: "epoch" });
    let differs = 0;
    for (const e of s.events) {
      if (e.event.type === "created" && e.event.sampledBy) {
        const i = planned.findIndex((p) => p.trial === e.event.trial);
        const p = trialParams(spec, planned[i] as (typeof planned)[number], i, naive).params;
        if (JSON.stringify(p) !== JSON.stringify(e.event.params)) differs++;
      }
      naive.apply(e.event, e.from);
    }
    expect(differs).toBeGreaterThan(0);

    // A copy of a `created` (a retried publish) is no second draw.
    const copy = s.events.find((e) => e.event.type === "created" && e.event.sampledBy) as StoredEvent;
    s.events.push({ ...copy, seq: s.seq + 1 });
    expect(redrawSampledTrials(spec, s.events)).toHaveLength(6);
  });

  it("a trial paused at a rung counts as a result for the model, not as a running one", () => {
    const s = new Stream();
    for (let i = 0; i < 4; i++) {
      s.create(i, s.seq);
      for (const e of s.run(planned[i]?.trial as string, [acc(planned[i]?.params ?? {})], false)) s.fold(e);
      // The coordinator pauses it at rung 1 and the agent ends the attempt by that stop.
      const trial = planned[i]?.trial as string;
      s.fold(
        s.push(
          {
            v: 1,
            study: "s",
            trial,
            ts: s.seq,
            type: "decision",
            attempt: 1,
            seq: 0,
            t: 1,
            value: 0.5,
            decision: "PAUSE",
            by: "promotion",
            rung: 1,
            cutoff: null,
          },
          COORDINATOR,
        ),
      );
      s.fold(
        s.push(
          {
            v: 1,
            study: "s",
            trial,
            ts: s.seq,
            type: "finished",
            attempt: 1,
            agent: "a1",
            status: "stopped",
            exitCode: null,
            signal: "SIGTERM",
            reason: "scheduler-pause: rung 1",
            logTail: [],
          },
          as("a1"),
        ),
      );
      expect(StudyState.phaseOf(s.state.trial(trial))).toBe("paused");
    }
    // Four paused trials with results: enough for the model (startup_trials 4).
    expect(trialParams(spec, planned[4] as (typeof planned)[number], 4, s.state).sampledBy).toBe("tpe");
  });
});
