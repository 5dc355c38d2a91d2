import { isAgentSpecificRejection, type RejectReason, type TrialEvent } from "@rung/protocol";
import type { MetricMode } from "../scheduling/index.js";

/**
 * A study's state as a pure fold of its events. The coordinator keeps one live; `rung study status`,
 * `report` and `replay --study` build one from the stream. Nothing here talks to NATS or reads a
 * clock: every time comes from an event's `ts`.
 */

export const TrialPhase = {
  pending: "pending",
  queued: "queued",
  running: "running",
  completed: "completed",
  stopped: "stopped",
  failed: "failed",
  cancelled: "cancelled",
} as const;
export type TrialPhase = (typeof TrialPhase)[keyof typeof TrialPhase];

export const TERMINAL_PHASES: ReadonlySet<TrialPhase> = new Set(["completed", "stopped", "failed", "cancelled"]);

/**
 * `refused`: an agent could not run the order for a reason of its own (trust, workdir, program) and
 * handed it back to the queue, where another agent may take it (as the next attempt number).
 */
export type AttemptStatus =
  | "queued"
  | "claimed"
  | "running"
  | "completed"
  | "stopped"
  | "failed"
  | "lost"
  | "rejected"
  | "refused";

/** An agent that could not run the trial's order, and why (`rejected` with an agent-specific reason). */
export interface Refusal {
  readonly agent: string;
  readonly attempt: number | null;
  readonly reason: RejectReason;
  readonly detail: string;
  readonly ts: number;
}

export interface AttemptRecord {
  readonly attempt: number;
  status: AttemptStatus;
  agent: string | null;
  gpus: number[];
  queuedAt: number | null;
  claimedAt: number | null;
  startedAt: number | null;
  endedAt: number | null;
  exitCode: number | null;
  signal: string | null;
  reason: string | null;
  logTail: string[];
}

export interface StopInfo {
  readonly by: string;
  readonly t: number;
  readonly rung: number | null;
  readonly attempt: number;
}

export interface TrialRecord {
  readonly trial: string;
  params: Record<string, string | number | boolean>;
  bracket: number | null;
  phase: TrialPhase;
  createdAt: number | null;
  attempts: AttemptRecord[];
  reports: number;
  lastMetrics: Record<string, number>;
  lastT: number | null;
  lastValue: number | null;
  bestValue: number | null;
  bestT: number | null;
  /** Sum of reported data_wait_s / compute_s over the trial. */
  dataWaitS: number;
  computeS: number;
  /** Set by a STOP decision (scheduler, early stopping or max_t). */
  stop: StopInfo | null;
  endReason: string | null;
  endedAt: number | null;
  /** Agents that handed the order back as one they cannot run, in order. */
  refusals: Refusal[];
}

export interface PhaseCounts {
  pending: number;
  queued: number;
  running: number;
  completed: number;
  stopped: number;
  failed: number;
  cancelled: number;
}

/**
 * A rejection that is not about the study's own order: the coordinator signs each order it publishes
 * and never publishes one twice, so an order refused for a bad signature or as a replay was a copy
 * made by someone else. It leaves the attempt as it was (the real order is queued or running).
 */
export function isCopyRejection(reason: RejectReason): boolean {
  return reason === "bad-signature" || reason === "replayed";
}

function better(mode: MetricMode, a: number, b: number | null): boolean {
  if (Number.isNaN(a)) return false;
  if (b === null || Number.isNaN(b)) return true;
  return mode === "max" ? a > b : a < b;
}

export class StudyState {
  readonly study: string;
  readonly metric: string;
  readonly mode: MetricMode;
  readonly timeAttr: string;
  readonly trials = new Map<string, TrialRecord>();
  /** Events folded so far. */
  events = 0;
  firstTs: number | null = null;
  lastTs: number | null = null;

  constructor(options: { study: string; metric: string; mode: MetricMode; timeAttr: string }) {
    this.study = options.study;
    this.metric = options.metric;
    this.mode = options.mode;
    this.timeAttr = options.timeAttr;
  }

  trial(id: string): TrialRecord {
    let t = this.trials.get(id);
    if (!t) {
      t = {
        trial: id,
        params: {},
        bracket: null,
        phase: "pending",
        createdAt: null,
        attempts: [],
        reports: 0,
        lastMetrics: {},
        lastT: null,
        lastValue: null,
        bestValue: null,
        bestT: null,
        dataWaitS: 0,
        computeS: 0,
        stop: null,
        endReason: null,
        endedAt: null,
        refusals: [],
      };
      this.trials.set(id, t);
    }
    return t;
  }

  attempt(t: TrialRecord, n: number): AttemptRecord {
    let a = t.attempts.find((x) => x.attempt === n);
    if (!a) {
      a = {
        attempt: n,
        status: "queued",
        agent: null,
        gpus: [],
        queuedAt: null,
        claimedAt: null,
        startedAt: null,
        endedAt: null,
        exitCode: null,
        signal: null,
        reason: null,
        logTail: [],
      };
      t.attempts.push(a);
      t.attempts.sort((x, y) => x.attempt - y.attempt);
    }
    return a;
  }

  /** Folds one event in. Events of another study are ignored. */
  apply(ev: TrialEvent): void {
    if (ev.study !== this.study) return;
    this.events += 1;
    this.firstTs ??= ev.ts;
    this.lastTs = this.lastTs === null ? ev.ts : Math.max(this.lastTs, ev.ts);
    const t = this.trial(ev.trial);
    const terminal = TERMINAL_PHASES.has(t.phase);
    switch (ev.type) {
      case "created":
        t.params = ev.params;
        t.bracket = ev.bracket;
        t.createdAt ??= ev.ts;
        break;
      case "queued": {
        const a = this.attempt(t, ev.attempt);
        a.queuedAt ??= ev.ts;
        if (!terminal) t.phase = "queued";
        break;
      }
      case "claimed": {
        const a = this.attempt(t, ev.attempt);
        // An older attempt still open when a newer one is claimed lost its agent: JetStream handed
        // the order on after the claim lease ran out.
        for (const o of t.attempts) {
          if (o.attempt < ev.attempt && (o.status === "claimed" || o.status === "running" || o.status === "queued")) {
            o.status = "lost";
            o.reason ??= "agent lost (claim lease expired)";
            o.endedAt ??= ev.ts;
          }
        }
        if (a.status === "queued") a.status = "claimed";
        a.agent = ev.agent;
        a.gpus = ev.gpus;
        a.claimedAt ??= ev.ts;
        if (!terminal) t.phase = "running";
        break;
      }
      case "started": {
        const a = this.attempt(t, ev.attempt);
        if (a.status === "queued" || a.status === "claimed") a.status = "running";
        a.agent = ev.agent;
        a.gpus = ev.gpus;
        a.startedAt ??= ev.ts;
        if (!terminal) t.phase = "running";
        break;
      }
      case "report": {
        t.reports += 1;
        t.lastMetrics = ev.metrics;
        const m = ev.metrics;
        const time = m[this.timeAttr];
        const value = m[this.metric];
        if (time !== undefined) t.lastT = time;
        if (value !== undefined) {
          t.lastValue = value;
          if (better(this.mode, value, t.bestValue)) {
            t.bestValue = value;
            t.bestT = time ?? null;
          }
        }
        const wait = m.data_wait_s;
        const compute = m.compute_s;
        if (wait !== undefined && Number.isFinite(wait)) t.dataWaitS += wait;
        if (compute !== undefined && Number.isFinite(compute)) t.computeS += compute;
        break;
      }
      case "finished": {
        const a = this.attempt(t, ev.attempt);
        a.status = ev.status;
        a.agent = ev.agent;
        a.endedAt = ev.ts;
        a.exitCode = ev.exitCode;
        a.signal = ev.signal;
        a.reason = ev.reason;
        a.logTail = ev.logTail;
        break;
      }
      case "rejected": {
        if (isAgentSpecificRejection(ev.reason)) {
          t.refusals.push({ agent: ev.agent, attempt: ev.attempt, reason: ev.reason, detail: ev.detail, ts: ev.ts });
          if (ev.attempt !== null) {
            const a = this.attempt(t, ev.attempt);
            if (a.status === "queued") a.status = "refused";
            a.agent ??= ev.agent;
            a.reason = `${ev.agent} cannot run it (${ev.reason}: ${ev.detail})`;
          }
        } else if (ev.attempt !== null && !isCopyRejection(ev.reason)) {
          const a = this.attempt(t, ev.attempt);
          a.status = "rejected";
          a.agent = ev.agent;
          a.endedAt = ev.ts;
          a.reason = `${ev.reason}: ${ev.detail}`;
        }
        break;
      }
      case "decision":
        if (ev.decision === "STOP" && t.stop === null) t.stop = { by: ev.by, t: ev.t, rung: ev.rung, attempt: ev.attempt };
        break;
      case "ended":
        t.phase = ev.status;
        t.endReason = ev.reason;
        t.endedAt = ev.ts;
        break;
    }
  }

  /**
   * Counts per phase. `settled` counts a trial whose latest attempt has finished by that attempt's own
   * end (see {@link phaseOf}) — what a reader shows while no coordinator is attached to end it.
   */
  counts(settled = false): PhaseCounts {
    const c: PhaseCounts = { pending: 0, queued: 0, running: 0, completed: 0, stopped: 0, failed: 0, cancelled: 0 };
    for (const t of this.trials.values()) c[settled ? StudyState.phaseOf(t) : t.phase] += 1;
    return c;
  }

  /**
   * The phase to show: the coordinator's (its `ended`), or, for a trial it has not ended yet, the end of
   * the trial's latest attempt as its agent reported it (`finished`). They differ only while no
   * coordinator is attached (detached with Ctrl-C, or between an attempt's end and the coordinator's
   * answer); a failed attempt shows as failed although an attached coordinator might retry it.
   */
  static phaseOf(t: TrialRecord): TrialPhase {
    if (TERMINAL_PHASES.has(t.phase)) return t.phase;
    const latest = t.attempts.at(-1);
    if (latest?.status === "completed") return t.stop !== null ? "stopped" : "completed";
    if (latest?.status === "stopped" && !(latest.reason ?? "").startsWith("claim-lost")) return "stopped";
    if (latest?.status === "failed") return "failed";
    return t.phase;
  }

  /** Trials created and not yet in a terminal phase. */
  inFlight(): TrialRecord[] {
    return [...this.trials.values()].filter((t) => t.createdAt !== null && !TERMINAL_PHASES.has(t.phase));
  }

  /** Orders published that no agent has claimed yet (a refused order is back in the queue). */
  waitingOrders(): number {
    let n = 0;
    for (const t of this.trials.values()) {
      if (TERMINAL_PHASES.has(t.phase)) continue;
      const latest = t.attempts.at(-1);
      if (latest && (latest.status === "queued" || latest.status === "refused")) n += 1;
      else for (const a of t.attempts) if (a.status === "queued") n += 1;
    }
    return n;
  }

  /** Trials sorted best first by their best reported metric (NaN and unreported last). */
  leaderboard(): TrialRecord[] {
    const sign = this.mode === "max" ? -1 : 1;
    return [...this.trials.values()].sort((a, b) => {
      const av = a.bestValue;
      const bv = b.bestValue;
      const aBad = av === null || Number.isNaN(av);
      const bBad = bv === null || Number.isNaN(bv);
      if (aBad || bBad) return aBad === bBad ? a.trial.localeCompare(b.trial) : aBad ? 1 : -1;
      return sign * ((av as number) - (bv as number)) || a.trial.localeCompare(b.trial);
    });
  }

  best(): TrialRecord | undefined {
    const top = this.leaderboard()[0];
    return top && top.bestValue !== null && !Number.isNaN(top.bestValue) ? top : undefined;
  }

  /** GPU-seconds an attempt held its GPUs (claimed → ended, or → `now` while it runs). */
  static attemptGpuSeconds(a: AttemptRecord, now: number): number {
    const start = a.startedAt ?? a.claimedAt;
    if (start === null) return 0;
    const end = a.endedAt ?? now;
    return (Math.max(0, end - start) / 1000) * Math.max(1, a.gpus.length);
  }
}
