import {
  type CheckpointRef,
  claimProof,
  describeSource,
  type EventSource,
  isAgentSpecificRejection,
  isFractionalGpus,
  parseCheckpointObject,
  type RejectReason,
  type TrialEvent,
  TrialEventWriter,
} from "@rung/protocol";
import type { MetricMode } from "../scheduling/index.js";
import { type PackingLevel, packingShare } from "./packing.js";

/**
 * A study's state as a pure fold of its events. The coordinator keeps one live; `rung study status`,
 * `report` and `replay --study` build one from the stream. Nothing here talks to NATS or reads a
 * clock: every time comes from an event's `ts`.
 *
 * WHO MAY SAY WHAT (the fold is where every reader enforces it)
 *
 * Each event comes with its publisher, from its subject (`EventSource`; the server lets a user publish
 * under its own name only). An event is folded only when:
 *   - a coordinator event (created, queued, decision, ended) comes from the coordinator, and an agent
 *     event from an agent that names itself in the body;
 *   - a `claimed` carries the proof of the attempt's order (protocol's claims.ts, checked against the
 *     nonce in the attempt's `queued`): the first such claim names the attempt's claimant;
 *   - a `started`, `report` or `finished` comes from that claimant, for the trial's current attempt,
 *     before the attempt's `finished` (a report once per (attempt, seq));
 *   - a `rejected` that changes anything carries the proof of the order it refuses.
 * Anything else is not folded; what an agent published about an attempt it does not hold is kept in
 * {@link StudyState.forgeries} (the report names the agent), the rest is counted as ignored. Events of
 * coordinators that predate nonces (`queued` without one) are taken without proofs.
 */

export const TrialPhase = {
  pending: "pending",
  queued: "queued",
  running: "running",
  /** Promotion-based ASHA: stopped at a rung with its checkpoint, waiting for a promotion. */
  paused: "paused",
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
 * `preempted`: its agent was shutting down (SIGTERM) and handed the order back after a last checkpoint;
 * it uses no retry.
 * `oom`: it ran out of GPU memory; the next attempt runs alone on a GPU and it uses no retry.
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
  | "refused"
  | "preempted"
  | "oom";

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
  /** The order's nonce, from `queued` (what claim proofs are checked against); null before nonces. */
  nonce: string | null;
  /** The agent whose proven `claimed` holds this attempt; only its events count for it. */
  claimant: string | null;
  /** `seq`s of the reports folded for this attempt (each counts once). */
  reportSeqs: Set<number>;
  /** Its agent's `finished` was folded: nothing more counts for it. */
  finished: boolean;
  /** The checkpoint it was started from (its `started` says), or null for a fresh start. */
  resumedFrom: CheckpointRef | null;
  /** Two agents proved a claim of it: nothing of it counts, and the coordinator queues a fresh order. */
  contested: boolean;
  /** `packing: auto`: the level its order was sized at (its `queued` event); null without packing. */
  packing: PackingLevel | null;
  /** The share of one GPU it holds (0.5, 0.25), from its `queued` event and the spec; null: whole GPUs. */
  share: number | null;
}

/** A stored checkpoint of a trial, with when its `checkpoint` event was written. */
export interface StoredCheckpoint {
  readonly ref: CheckpointRef;
  readonly ts: number;
}

/** An event an agent published about an attempt it does not hold (or as someone else): not folded. */
export interface Forgery {
  /** The publisher, from the subject. */
  readonly agent: string;
  readonly type: TrialEvent["type"];
  readonly trial: string;
  readonly attempt: number | null;
  readonly why: string;
  readonly ts: number;
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
  /**
   * The metric against the time attribute, t ascending: its latest trajectory. A report at a t at or
   * before the last one (an attempt that started again without a checkpoint) rewrites the curve from
   * there, so a value at each t is the latest one reported.
   */
  curve: { t: number; value: number }[];
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
  /** Its checkpoints stored in the mesh, in the order their events were folded. */
  checkpoints: StoredCheckpoint[];
  /** Promotion-based ASHA: the rung it is paused at (a PAUSE decision), null while it runs or once promoted. */
  pausedAt: number | null;
  /** The rungs it was promoted to, in order. */
  promotions: number[];
  /** `<attempt>.<seq>` of the decisions folded (each once). */
  decisions: Set<string>;
  /** PBT: an EXPLOIT decided and not yet carried out (its attempt is stopping). */
  pendingExploit: {
    readonly donor: string;
    readonly params: Record<string, string | number | boolean>;
    readonly t: number;
  } | null;
  /** PBT: each time it went on from another trial's checkpoint, with which parameters. */
  lineage: {
    readonly t: number;
    /** The attempt that went on from the donor's checkpoint. */
    readonly attempt: number;
    readonly donor: string;
    readonly from: Record<string, string | number | boolean>;
    readonly params: Record<string, string | number | boolean>;
  }[];
}

export interface PhaseCounts {
  pending: number;
  queued: number;
  running: number;
  paused: number;
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
  /** Agents' events about attempts they do not hold, in order (bounded: the first 1000). */
  readonly forgeries: Forgery[] = [];
  /** Forgeries per publishing agent (all of them, also past the first 1000). */
  readonly forgeriesBy = new Map<string, number>();
  /** Events not folded for a reason that is nobody's fault (a late or repeated event of an honest agent). */
  ignored = 0;
  /** Attempts two agents claimed with the order's proof (one of them is not honest; which, no reader can tell). */
  readonly contests: {
    readonly trial: string;
    readonly attempt: number;
    readonly agents: readonly [string, string];
    readonly ts: number;
  }[] = [];
  firstTs: number | null = null;
  lastTs: number | null = null;

  /** The spec's `resources.gpus` when it is a share of one GPU (0.5, 0.25): what its attempts hold. */
  readonly gpuShare: number | null;

  constructor(options: { study: string; metric: string; mode: MetricMode; timeAttr: string; gpus?: number }) {
    this.study = options.study;
    this.metric = options.metric;
    this.mode = options.mode;
    this.timeAttr = options.timeAttr;
    this.gpuShare = options.gpus !== undefined && isFractionalGpus(options.gpus) ? options.gpus : null;
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
        curve: [],
        bestValue: null,
        bestT: null,
        dataWaitS: 0,
        computeS: 0,
        stop: null,
        endReason: null,
        endedAt: null,
        refusals: [],
        checkpoints: [],
        pausedAt: null,
        promotions: [],
        decisions: new Set(),
        pendingExploit: null,
        lineage: [],
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
        nonce: null,
        claimant: null,
        reportSeqs: new Set(),
        finished: false,
        resumedFrom: null,
        contested: false,
        packing: null,
        // A redelivered order's attempt has no `queued` of its own: it holds what the order asked for,
        // i.e. what the attempt before it held (a whole GPU after running out of memory).
        share: inheritedShare(t, n),
      };
      t.attempts.push(a);
      t.attempts.sort((x, y) => x.attempt - y.attempt);
    }
    return a;
  }

  /**
   * The nonce of the order an attempt runs: its own `queued`, or for a redelivery (attempt numbers an
   * order's later deliveries take, with no `queued` of their own) the latest order queued before it.
   * Undefined when no order was queued yet; null when it was, by a coordinator that predates nonces.
   */
  #orderNonce(t: TrialRecord, attempt: number): string | null | undefined {
    let found: AttemptRecord | undefined;
    for (const a of t.attempts) if (a.attempt <= attempt && a.queuedAt !== null) found = a;
    return found === undefined ? undefined : found.nonce;
  }

  /** Why `from` may not have published `ev` (a forgery, or "ignore: …" for an honest late event); null when it may. */
  #refusal(ev: TrialEvent, from: EventSource): string | null {
    const writer = TrialEventWriter[ev.type];
    if (from.role === "coordinator")
      return writer === "coordinator" ? null : `ignore: a ${ev.type} event on the coordinator's subject`;
    if (writer === "coordinator") return `published the coordinator's ${ev.type} event`;
    if (!("agent" in ev) || ev.agent !== from.agent)
      return `published a ${ev.type} event in the name of agent ${"agent" in ev ? ev.agent : "?"}`;
    const t = this.trials.get(ev.trial);
    if (!t || t.createdAt === null) return `published a ${ev.type} event for a trial the study never created`;
    if (ev.type === "rejected") {
      // A copy of an order refused (bad signature, replay) changes nothing: it is only logged.
      if (isCopyRejection(ev.reason)) return null;
      if (ev.attempt === null) return "refused an order that names no attempt";
      // An attempt another agent holds is not this one's to refuse (or to fail).
      const held = t.attempts.find((x) => x.attempt === ev.attempt)?.claimant ?? null;
      if (held !== null && held !== from.agent) return `refused attempt ${ev.attempt}, which agent ${held} holds`;
      return this.#proofRefusal(t, ev.attempt, from.agent, ev.proof, "refusal");
    }
    const a = t.attempts.find((x) => x.attempt === ev.attempt);
    if (ev.type === "checkpoint") {
      // The snapshot it names must be this attempt's own (<scope>/<trial>/<attempt>/<seq>), or retention
      // and delete would act on another trial's or study's object.
      const r = ev.ref;
      const o = parseCheckpointObject(r.object);
      const mine = o?.study === this.study && o.trial === ev.trial && o.attempt === ev.attempt && o.seq === ev.seq;
      if (!mine || r.attempt !== ev.attempt || r.agent !== from.agent)
        return `published a checkpoint of attempt ${ev.attempt} that names another object (${r.object})`;
    }
    if (ev.type === "claimed") {
      const why = this.#proofRefusal(t, ev.attempt, from.agent, ev.proof, "claim");
      if (why !== null) return why;
      // Two agents with the order's proof for one attempt: one of them was handed the order, read its
      // nonce and handed it back, then claimed a later delivery's number ahead of the agent that gets
      // it. Which one is honest cannot be told: the attempt is void (`contested`).
      if (a?.claimant != null && a.claimant !== from.agent) return `contest: ${a.claimant}`;
      return null;
    }
    if (a?.contested) return `ignore: attempt ${ev.attempt} is contested`;
    if (!a || a.claimant === null) return `published a ${ev.type} event for attempt ${ev.attempt}, which no agent claimed`;
    if (a.claimant !== from.agent)
      return `published a ${ev.type} event for attempt ${ev.attempt}, which agent ${a.claimant} holds`;
    if (a.finished) return `ignore: ${ev.type} of attempt ${ev.attempt} after its end`;
    if (ev.type === "report") {
      const latest = Math.max(...t.attempts.filter((x) => x.claimant !== null).map((x) => x.attempt));
      if (ev.attempt < latest) return `ignore: a report of attempt ${ev.attempt} after attempt ${latest} was claimed`;
      if (a.reportSeqs.has(ev.seq)) return `ignore: report ${ev.seq} of attempt ${ev.attempt} again`;
    }
    return null;
  }

  #proofRefusal(t: TrialRecord, attempt: number, agent: string, proof: string | undefined, what: string): string | null {
    const nonce = this.#orderNonce(t, attempt);
    if (nonce === undefined) return `sent a ${what} for attempt ${attempt}, whose order was never queued`;
    if (nonce === null) return null; // a coordinator that predates nonces: nothing to check against
    if (proof === claimProof({ nonce, study: this.study, trial: t.trial, attempt, agent })) return null;
    return `sent a ${what} for attempt ${attempt} without the proof that it was handed the order`;
  }

  /**
   * Folds one event in, published by `from` (its subject's publisher). Events of another study are
   * ignored. False when the event was not folded (see the class comment): the coordinator then does
   * not act on it either.
   */
  apply(ev: TrialEvent, from: EventSource): boolean {
    if (ev.study !== this.study) return false;
    const refused = this.#refusal(ev, from);
    if (refused !== null) {
      if (refused.startsWith("contest: ") && from.role === "agent" && "attempt" in ev && typeof ev.attempt === "number") {
        const a = this.attempt(this.trial(ev.trial), ev.attempt);
        if (!a.contested) {
          a.contested = true;
          this.contests.push({ trial: ev.trial, attempt: ev.attempt, agents: [refused.slice(9), from.agent], ts: ev.ts });
        }
        return false;
      }
      if (refused.startsWith("ignore: ") || from.role === "coordinator") {
        this.ignored += 1;
      } else {
        const agent = from.agent;
        this.forgeriesBy.set(agent, (this.forgeriesBy.get(agent) ?? 0) + 1);
        if (this.forgeries.length < 1000)
          this.forgeries.push({
            agent,
            type: ev.type,
            trial: ev.trial,
            attempt: "attempt" in ev ? ev.attempt : null,
            why: `${describeSource(from)} ${refused}`,
            ts: ev.ts,
          });
      }
      return false;
    }
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
        a.nonce ??= ev.nonce ?? null;
        a.packing ??= ev.packing ?? null;
        // The GPU it holds: its packing level's share, else the spec's; a retry after running out of
        // memory runs alone on a whole GPU (budget.ts counts the same way).
        const perGpu = a.packing?.perGpu ?? 1;
        a.share = t.attempts.some((p) => p.attempt < a.attempt && p.status === "oom")
          ? null
          : perGpu > 1
            ? packingShare(perGpu)
            : this.gpuShare;
        if (ev.promotedTo !== undefined && t.pausedAt !== null) {
          t.pausedAt = null;
          t.promotions.push(ev.promotedTo);
        }
        if (ev.exploitOf !== undefined && ev.params !== undefined && t.pendingExploit !== null) {
          t.lineage.push({ t: t.pendingExploit.t, attempt: ev.attempt, donor: ev.exploitOf, from: t.params, params: ev.params });
          t.params = ev.params;
          t.pausedAt = null;
          t.pendingExploit = null;
        }
        if (!terminal) t.phase = "queued";
        break;
      }
      case "claimed": {
        const a = this.attempt(t, ev.attempt);
        // An older attempt still open when a newer one is claimed lost its agent: JetStream handed
        // the order on after the claim lease ran out. One never claimed was handed back by an agent
        // before it started (no room for its memory there, say): its next delivery is the newer one.
        for (const o of t.attempts) {
          if (o.attempt < ev.attempt && (o.status === "claimed" || o.status === "running" || o.status === "queued")) {
            o.reason ??=
              o.status === "queued"
                ? `never started: its order was handed back and ran again as attempt ${ev.attempt}`
                : "agent lost (claim lease expired)";
            o.status = "lost";
            o.endedAt ??= ev.ts;
          }
        }
        if (a.status === "queued") a.status = "claimed";
        a.claimant = ev.agent;
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
        a.resumedFrom = ev.resumedFrom ?? null;
        if (!terminal) t.phase = "running";
        break;
      }
      case "checkpoint":
        t.checkpoints.push({ ref: ev.ref, ts: ev.ts });
        break;
      case "report": {
        this.attempt(t, ev.attempt).reportSeqs.add(ev.seq);
        t.reports += 1;
        t.lastMetrics = ev.metrics;
        const m = ev.metrics;
        const time = m[this.timeAttr];
        const value = m[this.metric];
        if (time !== undefined) t.lastT = time;
        if (time !== undefined && value !== undefined && Number.isFinite(time)) {
          let keep = t.curve.length;
          while (keep > 0 && (t.curve[keep - 1] as { t: number }).t >= time) keep--;
          t.curve.length = keep;
          t.curve.push({ t: time, value });
        }
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
        a.finished = true;
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
        // The coordinator folds its own decisions when it makes them and again from the stream: once.
        if (t.decisions.has(`${ev.attempt}.${ev.seq}`)) break;
        t.decisions.add(`${ev.attempt}.${ev.seq}`);
        if (ev.decision === "STOP" && t.stop === null) t.stop = { by: ev.by, t: ev.t, rung: ev.rung, attempt: ev.attempt };
        if (ev.decision === "PAUSE" && t.stop === null) t.pausedAt = ev.rung ?? ev.t;
        if (ev.decision === "EXPLOIT" && t.stop === null && ev.donor !== undefined && ev.params !== undefined) {
          t.pausedAt = ev.t;
          t.pendingExploit = { donor: ev.donor, params: ev.params, t: ev.t };
        }
        break;
      case "ended":
        t.phase = ev.status;
        t.endReason = ev.reason;
        t.endedAt = ev.ts;
        break;
    }
    return true;
  }

  /**
   * Counts per phase. `settled` counts a trial whose latest attempt has finished by that attempt's own
   * end (see {@link phaseOf}) — what a reader shows while no coordinator is attached to end it.
   */
  counts(settled = false): PhaseCounts {
    const c: PhaseCounts = { pending: 0, queued: 0, running: 0, paused: 0, completed: 0, stopped: 0, failed: 0, cancelled: 0 };
    for (const t of this.trials.values()) {
      const shown = StudyState.phaseOf(t);
      c[settled || shown === "paused" ? shown : t.phase] += 1;
    }
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
    if (t.pausedAt !== null && (latest === undefined || latest.finished)) return "paused";
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
      if (latest && (latest.status === "queued" || latest.status === "refused" || latest.status === "preempted")) n += 1;
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

  /**
   * The checkpoints an attempt may resume from, newest first (by the time attribute, then by when they
   * were stored): at most `keep` of them.
   */
  static latestCheckpoints(t: TrialRecord, keep: number): CheckpointRef[] {
    // After an exploit (PBT) the trial's own older snapshots hold other weights: only what it stored since.
    const since = t.lineage.at(-1)?.attempt ?? 0;
    return [...t.checkpoints]
      .filter((c) => c.ref.attempt >= since)
      .map((c, i) => ({ c, i }))
      .sort((a, b) => b.c.ref.t - a.c.ref.t || b.i - a.i)
      .slice(0, Math.max(0, keep))
      .map(({ c }) => c.ref);
  }

  /**
   * GPU-seconds that resuming saved: for each attempt started from a checkpoint, the GPU time the
   * attempts before it spent to reach that checkpoint (from the checkpointing attempt's start to its
   * `checkpoint` event, plus what that attempt had saved itself).
   */
  static resumeSavings(t: TrialRecord): { resumed: number; gpuSeconds: number } {
    const saved = new Map<number, number>();
    let resumed = 0;
    let total = 0;
    for (const a of t.attempts) {
      const from = a.resumedFrom;
      if (!from) continue;
      const source = t.attempts.find((x) => x.attempt === from.attempt);
      const stored = t.checkpoints.find((c) => c.ref.object === from.object);
      if (!source || !stored || source.startedAt === null) continue;
      const s =
        (Math.max(0, stored.ts - source.startedAt) / 1000) * (source.share ?? Math.max(1, source.gpus.length)) +
        (saved.get(source.attempt) ?? 0);
      saved.set(a.attempt, s);
      resumed += 1;
      total += s;
    }
    return { resumed, gpuSeconds: total };
  }

  /** GPU-seconds an attempt held its GPUs (claimed → ended, or → `now` while it runs). */
  /**
   * How a stopped trial reads in a table: `stopped@9` (its scheduler), `diverged@3`, `budget@4` (the
   * study's budget ran out at epoch 4); null for a trial that was not stopped.
   */
  static stoppedLabel(t: TrialRecord, num: (x: number | null) => string = (x) => String(x)): string | null {
    if (t.phase !== "stopped") return null;
    if (t.stop) return `${t.stop.by === "divergence" ? "diverged" : "stopped"}@${num(t.stop.rung ?? t.stop.t)}`;
    if ((t.endReason ?? "").startsWith(BUDGET_SPENT)) return t.lastT === null ? "budget" : `budget@${num(t.lastT)}`;
    return null;
  }

  static attemptGpuSeconds(a: AttemptRecord, now: number): number {
    const start = a.startedAt ?? a.claimedAt;
    if (start === null) return 0;
    const end = a.endedAt ?? now;
    return (Math.max(0, end - start) / 1000) * (a.share ?? Math.max(1, a.gpus.length));
  }
}

/** The share the attempt before attempt `n` of `t` held, unless it ran out of memory (its retry runs alone). */
function inheritedShare(t: TrialRecord, n: number): number | null {
  const before = t.attempts.filter((x) => x.attempt < n).at(-1);
  return before && before.status !== "oom" ? before.share : null;
}

/** How the reason of every trial the study's budget ended begins (the coordinator's, runtime/coordinator.ts). */
export const BUDGET_SPENT = "the study's budget is spent";
