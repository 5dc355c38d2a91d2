import { randomBytes } from "node:crypto";
import {
  BadMessageCounter,
  type CheckpointRef,
  COORDINATOR,
  DecodeError,
  durationText,
  isAgentSpecificRejection,
  isFractionalGpus,
  type Logger,
  type MeshNames,
  orderPool,
  RejectReason,
  studyScope,
  type TrialEvent,
  TrialEvents,
  TrialEventWriter,
  type WorkOrder,
  workOrderMsgId,
} from "@rung/protocol";
import type { Promotion } from "../scheduling/index.js";
import {
  BUDGET_SPENT,
  budgetText,
  budgetUse,
  DEFAULT_CHECKPOINTS,
  generateTrials,
  isCopyRejection,
  MIN_ALONE_TRIALS,
  missingMetricReason,
  type OomDevice,
  oomDevice,
  oomOutcome,
  oomUsesRetry,
  orderResources,
  PackingLedger,
  type PackingLevel,
  PackingStep,
  type PlannedTrial,
  packedResources,
  packingShare,
  runsAlone,
  type StopDecision,
  type StoredEvent,
  StudyDecider,
  type StudySpec,
  StudyState,
  studyEndState,
  TERMINAL_PHASES,
  type TrialRecord,
  trialArgv,
  trialParams,
} from "../study/index.js";
import { ClaimLeaseKeeper } from "./claim-lease.js";
import { followStudyEvents } from "./event-reader.js";
import { StudyLease } from "./lease.js";
import { MeshAdverts } from "./mesh-adverts.js";
import { PackingEvidence } from "./packing-evidence.js";
import { type CompiledRunOptions, compileRunOptions, type RunStudyOptions } from "./run-options.js";
import { StudyStore } from "./study-store.js";

export interface StudyResult {
  study: string;
  /** `budget-spent`: the study's budget ran out (budget.ts); it ends with the best result it has. */
  status: "completed" | "stopped" | "budget-spent";
  state: StudyState;
  planned: number;
  best: TrialRecord | undefined;
  drops: Record<string, number>;
}

/**
 * One study's coordinator. Its state is the study's event stream: it reads everything stored,
 * re-feeds the scheduler in stream order (the scheduler is deterministic, so it reaches the same
 * state and the same decisions), publishes only the actions that are not in the stream yet, then
 * follows new events live. Killing it at any moment and running it again therefore resumes the
 * same study with the same decisions.
 *
 * Per event:
 *   report    → scheduler decision (published); STOP below max_t → stop key in the control bucket
 *   finished  → completed: trial ends · stopped: ends as stopped (unless the claim moved on) ·
 *               failed: a new attempt while retries last, else the trial fails with its log tail
 *   rejected  → the trial fails with the agent's reason (never retried: it cannot run) — except a
 *               `bad-signature` or `replayed` one: this coordinator never publishes such an order, so
 *               it was someone's copy, and the real order is still queued or running (a warning)
 * After each event, and whenever an agent's free capacity changes, new trials are dispatched while
 * fewer than `max_concurrent` are in flight and fewer orders wait than the mesh has free places.
 */
export class StudyCoordinator {
  readonly spec: StudySpec;
  readonly names: MeshNames;
  readonly log: Logger;
  readonly drops: BadMessageCounter;
  readonly state: StudyState;
  readonly planned: PlannedTrial[];
  readonly #o: CompiledRunOptions;
  readonly #store: StudyStore;
  readonly #decider: StudyDecider;
  #mesh!: MeshAdverts;
  /** The study's incarnation id (null for a study recorded before ids existed) and the scope of its message ids. */
  #studyId: string | null = null;
  #scope = "";
  #live = false;
  #serial: Promise<void> = Promise.resolve();
  #stopRequested = false;
  /**
   * The budget (budget.ts), only ever moving forward: `open`; `full` — one more attempt of the mean
   * cost so far would pass a limit: nothing new is dispatched, paused and never-started trials end,
   * running ones run on; `spent` — a limit is reached: running trials also end at their next report.
   */
  #budget: "open" | "full" | "spent" = "open";
  /** Trials given a `budget` stop key (no decision event records it, so `t.stop` stays null). */
  readonly #budgetStopped = new Set<string>();
  /** Trials with a claim notice written by this coordinator: removed when the trial ends (#supersede). */
  readonly #noticed = new Set<string>();
  /**
   * The device each trial last ran out of memory on, from its agent's advert: its retry alone asks
   * for at least that much memory (gpu-placement.ts). Unknown after a restart once the advert is
   * gone: the retry then asks for a whole GPU of any size.
   */
  readonly #oomDevices = new Map<string, OomDevice>();
  /**
   * `packing: auto` (study/packing.ts): the levels folded from the `queued` events (the ledger: what a
   * restart reads back) and the live evidence from telemetry it decides the next order's level from.
   */
  readonly #packing: PackingLedger | null;
  #packingEvidence: PackingEvidence | null = null;
  #packingRefresh: Promise<void> | null = null;
  #packingReadAt = 0;
  #packingWarned = false;
  /** Each agent's advertised price per GPU-hour, kept after its advert is gone (budget.ts). */
  readonly #prices = new Map<string, number | null>();
  #finish!: (r: StudyResult) => void;
  #fail!: (err: unknown) => void;
  readonly #finished: Promise<StudyResult>;

  constructor(options: RunStudyOptions) {
    this.#o = compileRunOptions(options);
    this.spec = this.#o.spec;
    this.names = this.#o.names;
    this.log = this.#o.log;
    this.#store = new StudyStore(this.#o);
    this.drops = new BadMessageCounter(this.log);
    this.state = new StudyState({
      study: this.spec.name,
      metric: this.spec.metric.name,
      mode: this.spec.metric.mode,
      timeAttr: this.spec.scheduler.timeAttr,
      gpus: this.spec.resources.gpus,
    });
    this.planned = generateTrials(this.spec);
    this.#decider = new StudyDecider(this.spec);
    this.#packing = this.spec.packing === null ? null : new PackingLedger(this.spec.packing);
    this.#finished = new Promise((resolve, reject) => {
      this.#finish = resolve;
      this.#fail = reject;
    });
  }

  async run(): Promise<StudyResult> {
    const o = this.#o;
    const res = await this.#store.open();
    const lease = new StudyLease(res.studies, this.names.subjects, this.spec.name, o.leaseMs);
    await lease.acquire();
    lease.keepAlive((err) => this.#fail(err));
    const detach = new AbortController();
    const onAbort = () => detach.abort();
    o.signal?.addEventListener("abort", onAbort, { once: true });
    const leases = new ClaimLeaseKeeper({
      jsm: res.jsm,
      names: this.names,
      log: this.log,
      adverts: () => this.#mesh.heard(),
      staleAfterMs: o.advertStaleMs,
    });
    this.#mesh = new MeshAdverts(
      res.agents,
      o.advertStaleMs,
      () => {
        leases.poke();
        this.#kick();
      },
      this.drops,
    );
    const tick = setInterval(() => {
      this.#refreshPacking();
      leases.poke();
      this.#kick();
    }, 1000);
    try {
      const recorded = await this.#store.recordStudy(this.spec);
      this.#scope = studyScope(this.spec.name, recorded.studyId);
      this.#studyId = recorded.studyId;
      if (this.#packing) this.#packingEvidence = new PackingEvidence(o.nc, this.names, this.spec.name, this.drops);
      if (recorded.extendedFrom !== null)
        this.log.info(
          { from: recorded.extendedFrom, to: this.spec.search.samples },
          `extending the study from ${recorded.extendedFrom} to ${this.spec.search.samples} samples: trials already run stay as they are`,
        );
      else if (recorded.previous !== null && recorded.previous !== "running")
        this.log.info({ was: recorded.previous }, `continuing a ${recorded.previous} study: trials that never ran are queued`);
      await this.#mesh.start();
      this.#store.watchStop(detach.signal, () => this.#onStopRequested());
      const following = followStudyEvents(o.nc, this.names, this.spec.name, {
        signal: detach.signal,
        drops: this.drops,
        onCatchUp: (events) => this.#serially(() => this.#catchUp(events)),
        onEvents: (evs) => this.#serially(() => this.#handleMessage(evs)),
      });
      following.catch((err) => this.#fail(err));
      const detached = new Promise<never>((_, reject) => {
        detach.signal.addEventListener("abort", () => reject(new DetachedError(this.spec.name)), { once: true });
      });
      const result = await Promise.race([this.#finished, detached]);
      await this.#pruneCheckpoints().catch((err) =>
        this.log.warn({ err: (err as Error).message }, "cannot prune the study's checkpoints"),
      );
      await this.#store.setStudyState(studyEndState(result.status, this.state));
      return result;
    } finally {
      clearInterval(tick);
      o.signal?.removeEventListener("abort", onAbort);
      detach.abort();
      this.#mesh.stop();
      await leases.close();
      await this.#serial.catch(() => {});
      await this.#packingRefresh;
      await this.#store.close();
      await lease.release();
      // Counted per kind all along (warned once each); the totals go in the log once, at the end,
      // where an operator (and the chaos suite) can compare them with what was injected.
      if (this.drops.total > 0) this.log.warn({ drops: this.drops.snapshot() }, "malformed messages dropped during this run");
    }
  }

  #serially(fn: () => Promise<void>): Promise<void> {
    const next = this.#serial.then(fn);
    this.#serial = next.catch((err) => this.#fail(err));
    return next;
  }

  #kick(): void {
    if (!this.#live) return;
    void this.#serially(async () => {
      await this.#dispatch();
      this.#progress();
    });
  }

  /** `rung study stop` marked the study record stopped: stop dispatching, let the rest wind down. */
  #onStopRequested(): void {
    if (this.#stopRequested) return;
    this.#stopRequested = true;
    this.log.info("study stop requested: no new trials; running ones are being stopped");
    this.#kick();
  }

  async #catchUp(events: StoredEvent[]): Promise<void> {
    // Strays (the rule of StudyDecider.belongs: a planned trial, created before anything else about it)
    // are dropped by #handle; a forged `ended` must not make the real one look published already.
    const created = new Set<string>();
    for (const { event, from } of events) {
      if (event.study !== this.spec.name || !this.#plannedTrial(event.trial)) continue;
      if (event.type === "created" ? created.has(event.trial) : !created.has(event.trial)) continue;
      created.add(event.trial);
      // Only what this coordinator published: an agent's copy of a coordinator event is no record of it.
      if (from.role === "coordinator" && TrialEventWriter[event.type] === "coordinator")
        this.#store.markPublished(this.#store.eventId(event));
    }
    if (events.length > 0) this.log.info({ events: events.length }, "resuming study from its event stream");
    for (const ev of events) await this.#handle(ev);
    // Orders published but never claimed may have been lost with a crash between the queued event
    // and the order: publish them again under the same message id (the server drops duplicates).
    // (A crash between a trial's created and queued events is mended by #dispatch, which runs next.)
    for (const t of this.state.trials.values()) {
      if (TERMINAL_PHASES.has(t.phase)) continue;
      for (const a of t.attempts) if (a.status === "queued") await this.#publishOrder(t.trial, a.attempt, true);
    }
    this.#live = true;
    await this.#dispatch();
    this.#progress();
  }

  async #handle({ event: ev, from, seq }: StoredEvent): Promise<void> {
    this.#basis = Math.max(this.#basis, seq);
    const stray = this.#stray(ev);
    if (stray === "copy") return;
    if (stray) {
      this.drops.record("events", new DecodeError("stray", "trial event", `trial event: ${stray}`));
      return;
    }
    const forged = this.state.forgeries.length;
    const contests = this.state.contests.length;
    const superseded = ev.type === "claimed" ? this.#stillOpenBefore(ev.trial, ev.attempt) : undefined;
    if (!this.state.apply(ev, from)) {
      const c = this.state.contests[contests];
      if (c) await this.#onContested(c);
      const f = this.state.forgeries[forged];
      // Warned once per agent and kind of event; the report lists them all.
      if (f && from.role === "agent" && (this.state.forgeriesBy.get(from.agent) ?? 0) <= 1)
        this.log.warn(
          { trial: f.trial, agent: f.agent, type: f.type, attempt: f.attempt, security: true },
          `${f.why}: ignored. Its credentials may be in other hands; \`rung study report\` lists every such event`,
        );
      return;
    }
    const t = this.state.trial(ev.trial);
    if (ev.type === "claimed" && superseded && this.#live) await this.#supersede(superseded, ev.attempt, ev.agent);
    if (ev.type === "ended" && this.#noticed.delete(ev.trial)) await this.#store.deleteClaimNotice(ev.trial);
    if (this.#packing && ev.type === "queued" && ev.packing)
      this.#packing.onQueued(ev.trial, ev.attempt, ev.packing, runsAlone(t));
    if (this.#packing && ev.type === "started") this.#packing.onStarted(ev.trial, ev.attempt, ev.ts);
    if (this.#packing && ev.type === "report")
      this.#packing.onReport(ev.trial, ev.attempt, ev.ts, ev.metrics[this.spec.scheduler.timeAttr]);
    const stop = this.#decider.onEvent(ev);
    if (stop) await this.#onStop(stop);
    // The budget is spent: a running trial ends at its next report.
    if (
      ev.type === "report" &&
      this.#budget === "spent" &&
      this.#live &&
      t.stop === null &&
      !this.#budgetStopped.has(t.trial) &&
      !TERMINAL_PHASES.has(t.phase)
    ) {
      this.#budgetStopped.add(t.trial);
      await this.#store.writeStop(t.trial, "user-stop", "budget", null);
    }
    if (ev.type === "finished") await this.#onFinished(t, ev);
    if (ev.type === "checkpoint") await this.#onCheckpoint(t);
    if (ev.type === "rejected" && isCopyRejection(ev.reason)) {
      this.log.warn(
        { trial: ev.trial, agent: ev.agent, reason: ev.reason, sender: ev.sender, security: true },
        `agent ${ev.agent} refused a copy of an order of this study (${ev.reason}): someone may be publishing work; the trial goes on`,
      );
    } else if (ev.type === "rejected" && isAgentSpecificRejection(ev.reason)) {
      if (!TERMINAL_PHASES.has(t.phase)) {
        this.log.warn(
          { trial: ev.trial, agent: ev.agent, reason: ev.reason },
          `agent ${ev.agent} cannot run ${ev.trial} (${ev.reason}: ${ev.detail}); the order goes back to the queue for another agent`,
        );
        if (this.#live) await this.#failIfNoAgentCanRun(t);
        // Its last delivery: the agent ended the order instead of handing it back. A fresh order takes
        // its place (a new attempt number, no retry used: retries count attempts that ran).
        if (
          ev.handedBack === false &&
          !TERMINAL_PHASES.has(t.phase) &&
          !t.attempts.some((a) => a.status === "claimed" || a.status === "running")
        ) {
          this.log.info({ trial: ev.trial }, `${ev.trial}: its order ran out of deliveries while refused; queueing a fresh one`);
          await this.#queue(t.trial, nextAttempt(t));
        }
      }
    } else if (ev.type === "rejected" && ev.reason === RejectReason.noRoom) {
      // It waited on an agent for GPU memory until its deliveries ran out (the agent ended it): a fresh
      // order takes its place; no retry used, no refusal counted.
      if (!TERMINAL_PHASES.has(t.phase) && !t.attempts.some((a) => a.status === "claimed" || a.status === "running")) {
        this.log.info(
          { trial: ev.trial, agent: ev.agent },
          `${ev.trial}: its order waited for GPU memory through its last delivery; queueing a fresh one`,
        );
        await this.#queue(t.trial, nextAttempt(t));
      }
    } else if (ev.type === "rejected" && !TERMINAL_PHASES.has(t.phase)) {
      await this.#end(t, "failed", `rejected by agent ${ev.agent}: ${ev.reason}: ${ev.detail}`);
    }
    if (ev.type === "started" || ev.type === "report" || ev.type === "claimed") this.#heard.set(ev.trial, Date.now());
    if (ev.type === "started") this.#startedAt.set(ev.trial, Date.now());
  }

  /** An older attempt of the trial that a claim of `attempt` finds still claimed or running, if any. */
  #stillOpenBefore(trial: string, attempt: number): { trial: string; attempt: number; agent: string | null } | undefined {
    const open = this.state.trials
      .get(trial)
      ?.attempts.find((a) => a.attempt < attempt && (a.status === "claimed" || a.status === "running"));
    return open && { trial, attempt: open.attempt, agent: open.agent };
  }

  /**
   * A newer attempt claimed the order while an older one still ran: JetStream handed it on because the
   * older claim's lease ran out. Its agent may not know yet (frozen, or its last heartbeat reached the
   * server just too late): the claim notice tells it to kill its copy now.
   */
  async #supersede(old: { trial: string; attempt: number; agent: string | null }, attempt: number, agent: string): Promise<void> {
    if (!(await this.#store.writeClaimNotice(old.trial, attempt, agent))) return;
    this.#noticed.add(old.trial);
    this.log.warn(
      { trial: old.trial, attempt, agent, older: old.attempt, olderAgent: old.agent },
      `${old.trial}: attempt ${attempt} claimed by ${agent} while attempt ${old.attempt} was still running${old.agent ? ` on ${old.agent}` : ""}; told it to stop its copy`,
    );
  }

  /**
   * The events of one stored message (several for a batch of reports), then a dispatch: never between
   * two of them, so a trial drawn by the model (`basis`: the last sequence folded) is drawn from whole
   * messages, as `rung replay --study` folds them.
   */
  async #handleMessage(evs: StoredEvent[]): Promise<void> {
    for (const ev of evs) await this.#handle(ev);
    if (this.#live) {
      await this.#dispatch();
      this.#progress();
    }
  }

  /**
   * Why an event is not this study's own, or null; "copy" for a second `created` of a trial. A stray
   * (a forged or misrouted message: a trial the study never created, a refusal of an order that names
   * no attempt, which this coordinator never issued) would otherwise create phantom trials, feed the
   * scheduler, or fail a real trial.
   */
  #stray(ev: TrialEvent): string | null {
    if (!this.#decider.belongs(ev)) {
      // The same trial created again is a copy of the event (seen across a cluster failover, the publish
      // retried through the election): the first one counts, and the copy is no stray.
      if (ev.type === "created" && ev.study === this.spec.name && this.#plannedTrial(ev.trial)) return "copy";
      return `${ev.type} of ${ev.study}/${ev.trial}: not a trial this study created`;
    }
    if (ev.type === "rejected" && ev.attempt === null)
      return `rejected of ${ev.study}/${ev.trial}: an order that names no attempt is not this coordinator's`;
    return null;
  }

  /** Only STOPs are recorded: a CONTINUE changes nothing outside the scheduler, which a restart
   * rebuilds by feeding it the same events in the same order. */
  async #onStop(d: StopDecision): Promise<void> {
    const decision = TrialEvents.decision({
      study: this.spec.name,
      trial: d.trial,
      attempt: d.attempt,
      seq: d.seq,
      t: d.t,
      value: d.value,
      decision: d.decision === "PAUSE" || d.decision === "EXPLOIT" ? d.decision : "STOP",
      by: d.by,
      rung: d.rung,
      cutoff: d.cutoff,
      ...(d.exploit ? { donor: d.exploit.donor, params: { ...d.exploit.params } } : {}),
    });
    const key = this.#store.eventId(decision);
    this.state.apply(decision, COORDINATOR);
    if (this.#store.isPublished(key)) return; // decided before a restart; its stop key was written then
    const pause = d.decision === "PAUSE" || d.decision === "EXPLOIT";
    if (!d.atMaxT) await this.#store.writeStop(d.trial, pause ? "scheduler-pause" : "scheduler-stop", d.by, d.rung ?? d.t);
    this.log.info(
      { trial: d.trial, t: d.t, value: d.value, by: d.by, rung: d.rung, reason: d.reason, ...(d.exploit ?? {}) },
      d.exploit
        ? `${d.trial} exploits ${d.exploit.donor}: it goes on from ${d.exploit.donor}'s checkpoint with perturbed parameters`
        : pause
          ? `pausing trial at rung ${d.rung}: it resumes from its checkpoint if promoted`
          : d.atMaxT
            ? "trial reached max_t"
            : "stopping trial",
    );
    await this.#store.publishEvent(decision);
  }

  async #onFinished(t: TrialRecord, ev: Extract<TrialEvent, { type: "finished" }>): Promise<void> {
    if (TERMINAL_PHASES.has(t.phase)) return;
    const latest = t.attempts.at(-1)?.attempt ?? ev.attempt;
    if (ev.attempt < latest) return; // an older attempt ending late (its claim moved on)
    if (ev.status === "completed" && t.bestValue === null && t.stop === null) {
      // It ran to the end and never reported the metric: nothing to rank it by. Say what it did report.
      await this.#end(t, "failed", missingMetricReason(t, this.spec.metric.name));
      return;
    }
    if (ev.status === "completed") {
      const stoppedEarly = t.stop !== null && !(this.spec.scheduler.maxT !== null && t.stop.t >= this.spec.scheduler.maxT);
      await this.#end(
        t,
        stoppedEarly ? "stopped" : "completed",
        stoppedEarly
          ? stopReason(t, this.spec.scheduler.timeAttr)
          : `completed at ${this.spec.scheduler.timeAttr}=${t.lastT ?? "?"}`,
      );
      return;
    }
    if (t.pausedAt !== null && ev.status === "stopped" && ev.reason.startsWith("scheduler-pause")) {
      // A study being stopped promotes and exploits nothing more: the paused trial ends here.
      if (this.#stopRequested)
        await this.#end(
          t,
          "cancelled",
          `study stopped while ${t.trial} was paused at ${this.spec.scheduler.timeAttr} ${t.pausedAt}`,
        );
      else if (t.pendingExploit !== null) await this.#exploit(t);
      else
        this.log.info(
          { trial: t.trial, rung: t.pausedAt },
          `${t.trial} is paused at rung ${t.pausedAt}; its GPU goes to the next job`,
        );
      return;
    }
    if (ev.status === "preempted") {
      // Its agent handed the order back after a last checkpoint: the next attempt resumes from it. No retry used.
      this.log.info(
        { trial: t.trial, attempt: ev.attempt, agent: ev.agent },
        `${t.trial} attempt ${ev.attempt} was preempted on ${ev.agent}; it goes on elsewhere`,
      );
      return;
    }
    const oom =
      ev.status === "oom" && t.stop === null
        ? oomOutcome(this.#attemptResources(t, ev.attempt), t, ev, this.#noteOomDevice(t, ev.attempt, ev.agent))
        : null;
    if (oom !== null && oom.kind !== "failure") {
      // Out of GPU memory on a share is a placement too tight, not a bad configuration, until it
      // happens alone (gpu-placement.ts); on whole GPUs it is an ordinary failure, below.
      if (this.#stopRequested) await this.#end(t, "cancelled", `study stopped; last attempt ran out of GPU memory`);
      else if (oom.kind === "alone") {
        this.log.warn({ trial: t.trial, attempt: ev.attempt, agent: ev.agent }, oom.why);
        await this.#queue(t.trial, nextAttempt(t));
      } else await this.#end(t, "failed", oom.reason);
      return;
    }
    if (ev.status === "stopped") {
      if (ev.reason.startsWith("claim-lost")) return; // the order went to another agent, which runs it on
      if (ev.reason.startsWith("timeout")) {
        await this.#end(t, "failed", this.#timedOut.get(t.trial) ?? timeoutReason(this.spec, ev.reason));
        return;
      }
      if (t.stop !== null) await this.#end(t, "stopped", stopReason(t, this.spec.scheduler.timeAttr));
      else if (ev.reason === "user-stop by budget")
        await this.#end(t, "stopped", `${BUDGET_SPENT} (at ${this.spec.scheduler.timeAttr} ${t.lastT ?? "?"})`);
      else await this.#end(t, this.#stopRequested ? "cancelled" : "stopped", ev.reason);
      return;
    }
    // failed
    if (t.stop !== null) {
      await this.#end(t, "stopped", stopReason(t, this.spec.scheduler.timeAttr)); // it died after the scheduler had stopped it
      return;
    }
    const cannotStart = ev.exitCode === null && ev.signal === null;
    // Retries are counted by attempts that ran: an order an agent refused (and handed back) and a
    // redelivery's skipped number use none of them.
    // A preempted attempt (its box was reclaimed) uses none either.
    const used = t.attempts.filter(
      (a) =>
        (a.claimedAt !== null || a.startedAt !== null) &&
        a.status !== "preempted" &&
        (a.status !== "oom" || oomUsesRetry(packedResources(this.spec.resources, a.packing))) &&
        !a.contested &&
        !(a.reason ?? "").startsWith("scheduler-pause"),
    ).length;
    const next = nextAttempt(t);
    if (this.#stopRequested) {
      await this.#end(t, "cancelled", `study stopped; last attempt failed: ${ev.reason}`);
    } else if (cannotStart) {
      await this.#end(t, "failed", ev.reason.startsWith("cannot start") ? ev.reason : `cannot start: ${ev.reason}`);
    } else if (used < 1 + this.spec.retries) {
      this.log.warn(
        { trial: t.trial, attempt: ev.attempt, exitCode: ev.exitCode, signal: ev.signal },
        `${t.trial} attempt ${ev.attempt} failed (${ev.reason}); retrying (${used} of ${1 + this.spec.retries} attempts used)`,
      );
      await this.#queue(t.trial, next);
    } else {
      const tail = ev.logTail.length ? `\n${ev.logTail.join("\n")}` : "";
      await this.#end(t, "failed", `failed after ${used} attempt(s): ${ev.reason}${tail}`);
    }
  }

  /** Snapshots this coordinator has deleted (retention), so a catch-up does not delete them again. */
  readonly #deletedCheckpoints = new Set<string>();
  /** What each trial's checkpoint index names now: none of it is deleted. */
  readonly #indexed = new Map<string, CheckpointRef[]>();

  async #writeIndex(trial: string, refs: CheckpointRef[]): Promise<void> {
    this.#indexed.set(trial, refs);
    await this.#store.writeCheckpointIndex(trial, refs);
  }

  /**
   * A claimant stored a checkpoint: the trial's index now names the newest `keep` snapshots (what the
   * next attempt, on any agent, resumes from), and older ones leave the bucket.
   */
  async #onCheckpoint(t: TrialRecord): Promise<void> {
    const keep = this.spec.checkpoints?.keep ?? DEFAULT_CHECKPOINTS.keep;
    const refs = StudyState.latestCheckpoints(t, keep);
    // A trial that exploits this one resumes from what its own index names: those stay too.
    if (t.pendingExploit === null) await this.#writeIndex(t.trial, refs);
    const kept = new Set([...refs, ...[...this.#indexed.values()].flat()].map((r) => r.object));
    const old = t.checkpoints.map((c) => c.ref.object).filter((o) => !kept.has(o) && !this.#deletedCheckpoints.has(o));
    for (const o of old) this.#deletedCheckpoints.add(o);
    if (old.length > 0) await this.#store.deleteCheckpoints(old);
  }

  /**
   * The study is over: the last checkpoint of each of the `keep_best` best trials stays (for `rung study
   * checkpoint`), every other snapshot leaves the bucket.
   */
  async #pruneCheckpoints(): Promise<void> {
    const keepBest = this.spec.checkpoints?.keepBest ?? DEFAULT_CHECKPOINTS.keepBest;
    const best = new Set(
      this.state
        .leaderboard()
        .filter((t) => t.bestValue !== null && !Number.isNaN(t.bestValue))
        .slice(0, keepBest)
        .map((t) => t.trial),
    );
    let deleted = 0;
    for (const t of this.state.trials.values()) {
      if (t.checkpoints.length === 0) continue;
      const last = best.has(t.trial) ? StudyState.latestCheckpoints(t, 1) : [];
      const kept = new Set(last.map((r) => r.object));
      const drop = t.checkpoints.map((c) => c.ref.object).filter((o) => !kept.has(o) && !this.#deletedCheckpoints.has(o));
      for (const o of drop) this.#deletedCheckpoints.add(o);
      deleted += await this.#store.deleteCheckpoints(drop);
      if (last.length > 0) await this.#writeIndex(t.trial, last);
      else await this.#store.deleteCheckpointIndex(t.trial);
    }
    if (deleted > 0 || best.size > 0)
      this.log.info(
        { deleted, kept: [...best] },
        `checkpoints: the last one of ${[...best].join(", ") || "no trial"} kept, ${deleted} other(s) deleted`,
      );
  }

  async #end(t: TrialRecord, status: "completed" | "stopped" | "failed" | "cancelled", reason: string): Promise<void> {
    const ev = TrialEvents.ended({ study: this.spec.name, trial: t.trial, status, reason, attempts: t.attempts.length });
    this.state.apply(ev, COORDINATOR);
    await this.#store.publishEvent(ev);
  }

  #plannedIndex = new Map<string, PlannedTrial>();
  /** The last event-stream sequence folded: what a model-drawn trial's parameters were drawn from. */
  #basis = 0;

  #plannedTrial(id: string): PlannedTrial | undefined {
    if (this.#plannedIndex.size === 0) for (const p of this.planned) this.#plannedIndex.set(p.trial, p);
    return this.#plannedIndex.get(id);
  }

  async #queue(
    trial: string,
    attempt: number,
    next: { promotedTo?: number; exploitOf?: string; params?: Record<string, string | number | boolean> } = {},
  ): Promise<void> {
    // `packing: auto`: the level this order is sized at goes in its event (packing.ts).
    const packing = this.#packing?.decide(this.#packingEvidence?.alone ?? null, this.spec.resources.gpuMemoryMiB) ?? null;
    // The order's nonce goes in the event too: what claims of this order are proven by (claims.ts).
    const ev = TrialEvents.queued({
      study: this.spec.name,
      trial,
      attempt,
      nonce: randomBytes(12).toString("hex"),
      ...next,
      ...(packing === null ? {} : { packing: { ...packing } }),
    });
    // Re-deciding a retry during catch-up: it was queued before the restart, and the catch-up
    // re-publishes the order afterwards only if no agent claimed it.
    if (this.#store.isPublished(this.#store.eventId(ev))) return;
    this.state.apply(ev, COORDINATOR);
    // The decider hears its own promotion now (and again, changing nothing, from the stream), so the
    // next call for a promotion does not pick the same trial.
    // (Only a promotion: an exploit changes the population's ranking, which the decider must see at the
    // event's place in the stream, as a replay does.)
    if (next.promotedTo !== undefined) this.#decider.onEvent(ev);
    if (packing !== null) this.#notePacking(trial, attempt, packing);
    await this.#store.publishEvent(ev);
    await this.#publishOrder(trial, attempt, false);
  }

  async #publishOrder(trial: string, attempt: number, republish: boolean): Promise<void> {
    const planned = this.#plannedTrial(trial);
    if (!planned) throw new Error(`trial ${trial} is in the event stream but not in the spec's search space`);
    // A share of a GPU (gpu_memory with it), or — after it ran out of memory sharing one — a whole GPU.
    // Under `packing: auto`, the share and memory of the level its `queued` event carries.
    const resources = orderResources(
      this.#attemptResources(this.state.trials.get(trial), attempt),
      runsAlone(this.state.trials.get(trial)),
      this.#oomDevices.get(trial) ?? null,
    );
    const pool = orderPool(resources);
    const now = Date.now();
    let order: WorkOrder = {
      v: 1,
      type: "order",
      study: this.spec.name,
      trial,
      attempt,
      pool,
      resources,
      // The trial's parameters now: its first ones, or those of its last exploit (PBT).
      argv: trialArgv(this.spec, { ...planned, params: { ...(this.state.trials.get(trial)?.params ?? planned.params) } }),
      workdir: this.spec.workdir,
      env: { ...this.spec.env },
      secretEnv: [...this.spec.secretEnv],
      params: { ...(this.state.trials.get(trial)?.params ?? planned.params) },
      timeAttr: this.spec.scheduler.timeAttr,
      issuedAt: now,
      expiresAt: now + this.#o.orderTtlMs,
      // The nonce its `queued` carries, also when the order is published again after a restart: a claim
      // is proven against that one.
      nonce: this.state.trials.get(trial)?.attempts.find((a) => a.attempt === attempt)?.nonce ?? randomBytes(12).toString("hex"),
      ...(this.#studyId === null ? {} : { studyId: this.#studyId }),
    };
    if (this.#o.signOrder) order = this.#o.signOrder(order);
    const ack = await this.#store.publishOrder(order, workOrderMsgId(this.#scope, trial, attempt));
    if (republish && !ack.duplicate) this.log.info({ trial, attempt }, "re-published an order lost in a coordinator restart");
  }

  /** Keeps the queue shallow: see the class comment. */
  async #dispatch(): Promise<void> {
    // A trial created but never queued: a coordinator died between the two events (dispatch publishes
    // both in one step, so nothing else leaves this). Nothing else would ever queue it.
    for (const t of this.state.inFlight()) {
      if (t.attempts.length > 0) continue;
      if (this.#stopRequested) await this.#end(t, "cancelled", "study stopped before the trial was queued");
      else await this.#queue(t.trial, 1);
    }
    if (this.#stopRequested) {
      await this.#stopEverything();
      this.#maybeFinish();
      return;
    }
    await this.#enforceTimeouts();
    for (const t of this.state.inFlight()) if (t.refusals.length > 0) await this.#failIfNoAgentCanRun(t);
    this.#warnIfNoAgentFits();
    this.#warnIfUnpriced();
    const max = this.spec.maxConcurrent ?? Number.POSITIVE_INFINITY;
    for (;;) {
      if (await this.#budgetFull()) break;
      // A paused trial holds no GPU: it does not count against max_concurrent.
      if (this.state.inFlight().filter((t) => !this.#waiting(t)).length >= max) break;
      if (this.state.waitingOrders() >= this.#mesh.freePlaces(this.#nextShare())) break;
      // Promotion-based ASHA's get_job: a promotion first, else a new trial.
      const promotion = this.#decider.nextPromotion((trial) => this.#waiting(this.state.trial(trial)));
      if (promotion) {
        await this.#promote(promotion);
        continue;
      }
      const next = this.planned.find((p) => (this.state.trials.get(p.trial)?.createdAt ?? null) === null);
      if (!next) {
        await this.#endUnpromoted();
        break;
      }
      const { bracket } = this.#decider.addTrial(next.trial);
      const { params, sampledBy } = trialParams(this.spec, next, this.planned.indexOf(next), this.state);
      const ev = TrialEvents.created({
        study: this.spec.name,
        trial: next.trial,
        params,
        bracket,
        ...(sampledBy !== null ? { sampledBy, basis: this.#basis } : {}),
      });
      this.state.apply(ev, COORDINATOR);
      await this.#store.publishEvent(ev);
      this.log.debug({ trial: next.trial, params, bracket, sampledBy }, "dispatching trial");
      await this.#queue(next.trial, 1);
    }
    this.#maybeFinish();
  }

  /**
   * Two agents proved a claim of one attempt: the attempt counts for nothing. Its trial gets a fresh
   * order (a new nonce, the next attempt number; no retry used) unless a later attempt already runs.
   */
  async #onContested(c: StudyState["contests"][number]): Promise<void> {
    const t = this.state.trial(c.trial);
    this.log.warn(
      { trial: c.trial, attempt: c.attempt, agents: c.agents, security: true },
      `agents ${c.agents[0]} and ${c.agents[1]} both claimed ${c.trial} attempt ${c.attempt} with its order's proof: one of them took the order and handed it back to claim a later delivery ahead of the other. The attempt is void; a fresh order follows`,
    );
    if (TERMINAL_PHASES.has(t.phase) || !this.#live) return;
    const latest = nextAttempt(t) - 1;
    if (c.attempt < latest) return;
    await this.#queue(t.trial, latest + 1);
  }

  /** A trial paused at a rung whose paused attempt has ended: it holds nothing and may be resumed. */
  #waiting(t: TrialRecord): boolean {
    // Its last attempt ended by the pause itself (its order acked): one that was preempted or lost its
    // claim handed its order back, and that order runs again — resuming it here would run two copies.
    const last = t.attempts.at(-1);
    const paused = last?.status === "stopped" && (last.reason ?? "").startsWith("scheduler-pause");
    return t.pausedAt !== null && t.pendingExploit === null && paused && StudyState.phaseOf(t) === "paused";
  }

  /**
   * PBT's exploit, once the trial's attempt has stopped: its checkpoint index now names the donor's
   * newest snapshots, and its next attempt runs with the new parameters (no retry used).
   */
  async #exploit(t: TrialRecord): Promise<void> {
    const x = t.pendingExploit;
    if (x === null) return;
    const attempt = nextAttempt(t);
    // Carried out before a restart (the catch-up finds its `queued` in the stream): its index and stop
    // key are long written over — a later decision's stop key must not be cleared again.
    if (this.#store.isPublished(this.#store.eventId(TrialEvents.queued({ study: this.spec.name, trial: t.trial, attempt }))))
      return;
    const keep = this.spec.checkpoints?.keep ?? DEFAULT_CHECKPOINTS.keep;
    // Not a snapshot taken at max_t: nothing would be left to train from it.
    const donor = this.state.trial(x.donor);
    const all = StudyState.latestCheckpoints(donor, Number.POSITIVE_INFINITY);
    const maxT = this.spec.scheduler.maxT;
    const before = all.filter((r) => maxT === null || r.t < maxT);
    const donated = (before.length > 0 ? before : all).slice(0, keep);
    // A donor that went on from a third trial's checkpoint and has stored nothing since runs on the
    // weights its own index names: those are what it donates.
    const refs = donated.length > 0 ? donated : (this.#indexed.get(x.donor) ?? []);
    await this.#writeIndex(t.trial, refs);
    await this.#store.clearStop(t.trial);
    this.log.info(
      { trial: t.trial, donor: x.donor, from: refs[0]?.t ?? null, params: x.params },
      `${t.trial} goes on from ${x.donor}'s checkpoint at ${this.spec.scheduler.timeAttr}=${refs[0]?.t ?? "?"} with ${JSON.stringify(x.params)}`,
    );
    await this.#queue(t.trial, attempt, { exploitOf: x.donor, params: x.params });
  }

  /** Resumes a paused trial from its checkpoint, on to the next rung (a new attempt; no retry used). */
  async #promote(p: Promotion): Promise<void> {
    const t = this.state.trial(p.trial);
    this.log.info(
      { trial: p.trial, from: t.pausedAt, to: p.milestone },
      `promoting ${p.trial} from rung ${t.pausedAt} to ${p.milestone}`,
    );
    // Its pause is over: the next attempt must not read the old stop key and stop at once.
    await this.#store.clearStop(p.trial);
    await this.#queue(p.trial, nextAttempt(t), { promotedTo: p.milestone });
  }

  /**
   * Every trial is created and none runs: a trial still paused now can never be promoted (no result
   * will come to lift it into the top of its rung). It ends stopped at its rung, as ASHA's would.
   */
  async #endUnpromoted(): Promise<void> {
    const live = this.state.inFlight();
    if (live.length === 0 || live.some((t) => !this.#waiting(t))) return;
    for (const t of live) await this.#end(t, "stopped", `stopped at rung ${t.pausedAt} (not promoted)`);
  }

  /** When this coordinator last heard from each running trial (its own clock: agents' clocks may differ). */
  readonly #heard = new Map<string, number>();
  /** When this coordinator heard each trial's latest attempt start. */
  readonly #startedAt = new Map<string, number>();
  /** Trials stopped for a timeout, with the sentence their end will carry. */
  readonly #timedOut = new Map<string, string>();

  /**
   * `report_timeout`: a running attempt silent (no start, no report) for longer fails the trial;
   * `trial_timeout`: an attempt running longer than this fails it. Either way the agent is told to stop
   * it (a `timeout` stop key) and the trial ends `failed` with a sentence that names the limit when its
   * `finished` arrives. Measured on this coordinator's clock from when it heard the attempt; a restarted
   * coordinator starts counting again.
   */
  async #enforceTimeouts(): Promise<void> {
    const { reportTimeoutMs, trialTimeoutMs } = this.spec;
    if (reportTimeoutMs === null && trialTimeoutMs === null) return;
    const now = Date.now();
    for (const t of this.state.inFlight()) {
      if (t.phase !== "running" || this.#timedOut.has(t.trial)) continue;
      const a = t.attempts.at(-1);
      if (!a || a.status !== "running") continue;
      // A running attempt's `started` was handled (live or at catch-up), which set both.
      const heard = this.#heard.get(t.trial) ?? now;
      const started = this.#startedAt.get(t.trial) ?? now;
      let why: [string, string] | null = null;
      if (reportTimeoutMs !== null && now - heard > reportTimeoutMs)
        why = [
          "report_timeout",
          `no report for ${durationText(reportTimeoutMs)} (report_timeout): the trial hung or stopped reporting`,
        ];
      else if (trialTimeoutMs !== null && now - started > trialTimeoutMs)
        why = ["trial_timeout", `attempt ${a.attempt} ran longer than ${durationText(trialTimeoutMs)} (trial_timeout)`];
      if (!why) continue;
      this.#timedOut.set(t.trial, why[1]);
      this.log.warn({ trial: t.trial, attempt: a.attempt, limit: why[0] }, `${t.trial}: ${why[1]}; stopping it`);
      await this.#store.writeStop(t.trial, "timeout", why[0], null);
    }
  }

  /**
   * An order refused by agents for reasons of their own goes back to the queue; it fails only when no
   * agent can run it: every live agent big enough for it refused it, or `MAX_REFUSING_AGENTS` did.
   * Then a stop key tells the next agent that pulls the order to drop it.
   */
  async #failIfNoAgentCanRun(t: TrialRecord): Promise<void> {
    if (TERMINAL_PHASES.has(t.phase) || t.refusals.length === 0) return;
    if (t.attempts.some((a) => a.status === "claimed" || a.status === "running")) return;
    const refusers = new Map(t.refusals.map((r) => [r.agent, r] as const));
    const capable = this.#mesh.agentsFitting(this.#nextShare());
    const everyLive = capable.length > 0 && capable.every((a) => refusers.has(a));
    if (!everyLive && refusers.size < MAX_REFUSING_AGENTS) return;
    const reasons = [...refusers.values()].map((r) => `${r.agent} (${r.reason}: ${r.detail})`).join("; ");
    await this.#store.writeStop(t.trial, "user-stop", "rung: no agent can run it", null);
    await this.#end(
      t,
      "failed",
      `no agent can run it — refused by ${everyLive ? "every live agent" : `${refusers.size} agents`}: ${reasons}`,
    );
  }

  /** The share of a GPU the next order asks for: the spec's, or under `packing: auto` its current level's. */
  #nextShare(): number {
    if (!this.#packing) return this.spec.resources.gpus;
    return packingShare(this.#packing.current?.perGpu ?? 1);
  }

  /** What an attempt's order asked for: the spec's resources, or its `packing` level's share and memory. */
  #attemptResources(t: TrialRecord | undefined, attempt: number): StudySpec["resources"] {
    return packedResources(this.spec.resources, t?.attempts.find((a) => a.attempt === attempt)?.packing ?? null);
  }

  /** Logs a packing decision that changed something (a level, or the first verdict after observing). */
  #notePacking(trial: string, attempt: number, level: PackingLevel): void {
    const changes = this.#packing?.changes ?? [];
    const before = changes.length;
    this.#packing?.onQueued(trial, attempt, level, runsAlone(this.state.trials.get(trial)));
    if (changes.length === before) return;
    const n = level.perGpu;
    const what =
      level.step === PackingStep.raise
        ? `packing: ${n} trials per GPU from ${trial} on`
        : level.step === PackingStep.backOff
          ? `packing: backed off to ${n} per GPU at ${trial}`
          : `packing: ${n} trial${n === 1 ? "" : "s"} per GPU`;
    this.log.info({ trial, perGpu: n, gpuMemoryMiB: level.gpuMemoryMiB, step: level.step }, `${what} (${level.why})`);
  }

  /**
   * Reads the telemetry that `packing: auto` decides from, in the background (never in the event
   * path): while the study has not packed yet, or trials run alone whose samples it has not seen.
   */
  #refreshPacking(): void {
    const ev = this.#packingEvidence;
    if (!ev || !this.#live || this.#packingRefresh !== null) return;
    const cur = this.#packing?.current?.perGpu ?? 1;
    if (cur > 1 && ev.alone !== null) return;
    // Every second while observing; every 10 s once it has its evidence (more trials alone refine it).
    const now = Date.now();
    if (ev.alone !== null && ev.alone.trials >= MIN_ALONE_TRIALS && now - this.#packingReadAt < 10_000) return;
    this.#packingReadAt = now;
    this.#packingRefresh = ev
      .refresh(this.state, (t) => t.attempts.every((a) => a.startedAt === null || (a.packing?.perGpu ?? 1) === 1))
      .catch((err) => {
        // Said once: the level holds meanwhile, and the next read may succeed.
        this.log[this.#packingWarned ? "debug" : "warn"](
          { err: (err as Error).message },
          "cannot read telemetry for packing; trying again",
        );
        this.#packingWarned = true;
      })
      .finally(() => {
        this.#packingRefresh = null;
      });
  }

  #warnedNoFit = false;
  #warnIfNoAgentFits(): void {
    const gpus = this.#nextShare();
    if (gpus === 0) {
      // A trial without GPUs runs in one of an agent's CPU slots, which agents offer only when told to.
      const live = this.#mesh.live();
      if (live.length === 0 || live.some((a) => a.cpuSlots > 0)) {
        this.#warnedNoFit = false;
        return;
      }
      if (this.#warnedNoFit) return;
      this.#warnedNoFit = true;
      this.log.warn(
        { agents: live.map((a) => a.agent) },
        `no live agent offers a CPU slot, and resources.gpus: 0 runs each trial in one: trials wait until an agent started with --cpu-slots N joins (or set resources.gpus: 1)`,
      );
      return;
    }
    const sizes = this.#mesh.sizes();
    if (!sizes.some((n) => n > 0)) return;
    const largest = Math.max(...sizes);
    // A share needs an agent that places shares (its advert says `shareInUse`); older agents do not.
    const fits = isFractionalGpus(gpus) ? this.#mesh.agentsFitting(gpus).length > 0 : largest >= gpus;
    if (fits) {
      this.#warnedNoFit = false;
      return;
    }
    if (this.#warnedNoFit) return;
    this.#warnedNoFit = true;
    if (isFractionalGpus(gpus))
      this.log.warn(
        { gpus },
        `no live agent can run a share of a GPU (resources.gpus: ${gpus}): they are too old to place shares, so trials wait — upgrade them, or set resources.gpus: 1`,
      );
    else
      this.log.warn(
        { gpus, largest },
        `no agent has ${gpus} GPUs; the largest has ${largest}${this.#mesh.live().some((a) => a.gpus.some((g) => g.mig !== undefined)) ? " (MIG instances do not join a gang)" : ""}: trials wait until a big enough agent joins (or lower resources.gpus)`,
      );
  }

  #warnedUnpriced = false;
  /** A `budget.cost` counts priced GPU time only: said once when no live agent advertises a price. */
  #warnIfUnpriced(): void {
    const cost = this.spec.budget?.cost ?? null;
    const live = this.#mesh.live();
    if (cost === null || live.length === 0) return;
    if (live.some((a) => a.pricePerGpuHour !== null)) {
      this.#warnedUnpriced = false;
      return;
    }
    if (this.#warnedUnpriced) return;
    this.#warnedUnpriced = true;
    this.log.warn(
      { agents: live.map((a) => a.agent), cost },
      `budget.cost is ${cost}, but no live agent advertises a price: their GPU time counts nothing against it — start the agents with --price-per-gpu-hour P, or set budget.gpu_hours instead`,
    );
  }

  #stoppedAll = false;
  async #stopEverything(): Promise<void> {
    if (this.#stoppedAll) return;
    this.#stoppedAll = true;
    for (const t of this.state.inFlight()) {
      // A paused trial runs nowhere: nothing would answer its stop key. It ends here.
      if (this.#waiting(t))
        await this.#end(
          t,
          "cancelled",
          `study stopped while ${t.trial} was paused at ${this.spec.scheduler.timeAttr} ${t.pausedAt}`,
        );
      else await this.#store.writeStop(t.trial, "user-stop", "user", null);
    }
  }

  #maybeFinish(): void {
    const created = [...this.state.trials.values()].filter((t) => t.createdAt !== null);
    const allCreated = this.#stopRequested || this.#budget !== "open" || created.length >= this.planned.length;
    if (!allCreated || created.some((t) => !TERMINAL_PHASES.has(t.phase))) return;
    this.#finish({
      study: this.spec.name,
      status: this.#stopRequested
        ? "stopped"
        : this.#budget !== "open" &&
            (created.length < this.planned.length || created.some((t) => (t.endReason ?? "").startsWith(BUDGET_SPENT)))
          ? "budget-spent"
          : "completed",
      state: this.state,
      planned: this.planned.length,
      best: this.state.best(),
      drops: this.drops.snapshot(),
    });
  }

  #progress(): void {
    if (!this.#o.onProgress) return;
    const totals = this.#mesh.totals();
    this.#o.onProgress({
      study: this.spec.name,
      state: this.state,
      planned: this.planned.length,
      agents: totals.agents,
      gpus: totals.gpus,
      busyGpus: totals.busyGpus,
      waitingForAgents: totals.agents === 0,
      done: false,
      ...(this.spec.budget === null ? {} : { budget: this.#budgetLine() }),
    });
  }

  #noteOomDevice(t: TrialRecord, attempt: number, agent: string): OomDevice | null {
    const held = t.attempts.find((a) => a.attempt === attempt)?.gpus ?? [];
    const device = oomDevice(agent, held, this.#mesh.adverts.get(agent)?.gpus);
    if (device) this.#oomDevices.set(t.trial, device);
    return device;
  }

  #priceOf(agent: string): number | null {
    const advert = this.#mesh.adverts.get(agent);
    if (advert) this.#prices.set(agent, advert.pricePerGpuHour);
    return this.#prices.get(agent) ?? null;
  }

  #budgetLine(): string {
    const use = budgetUse(this.spec, this.state, Date.now(), (a) => this.#priceOf(a));
    return use === null ? "" : budgetText(use);
  }

  /**
   * Whether the budget forbids another trial (budget.ts), moving `#budget` on: once `full`, nothing new
   * is dispatched and paused or never-started trials end; once `spent`, running ones end at their next
   * report. The study then ends `budget-spent`.
   */
  async #budgetFull(): Promise<boolean> {
    if (this.#budget === "spent") return true;
    const use = budgetUse(this.spec, this.state, Date.now(), (a) => this.#priceOf(a));
    if (use === null || !use.full) return false;
    if (this.#budget === "open") {
      this.#budget = "full";
      if (!use.spent)
        this.log.warn(
          { gpuHours: use.gpuHours, cost: use.cost },
          `${budgetText(use)}: one more trial would pass it, so no new trials; running ones run on while it lasts`,
        );
      for (const t of this.state.inFlight()) {
        if (this.#waiting(t))
          await this.#end(t, "stopped", `${BUDGET_SPENT} (paused at ${this.spec.scheduler.timeAttr} ${t.pausedAt})`);
        else if (t.attempts.every((a) => a.startedAt === null) && t.attempts.some((a) => a.status === "queued")) {
          // Queued and never started: it has cost nothing, and will not start now.
          this.#budgetStopped.add(t.trial);
          await this.#store.writeStop(t.trial, "user-stop", "budget", null);
          await this.#end(t, "cancelled", `${BUDGET_SPENT} before it started`);
        }
      }
    }
    if (use.spent) {
      this.#budget = "spent";
      this.log.warn({ gpuHours: use.gpuHours, cost: use.cost }, `${budgetText(use)}: running trials end at their next report`);
    }
    return true;
  }
}

export class DetachedError extends Error {
  override name = "DetachedError";
  constructor(readonly study: string) {
    super(`detached from study ${study}: trials in flight keep running; run the same "rung study run" again to resume`);
  }
}

/** Distinct agents whose refusals fail a trial even while other live agents have not seen it. */
const MAX_REFUSING_AGENTS = 3;

/** The end reason of a timed-out trial after a coordinator restart (the stop key says which limit). */
function timeoutReason(spec: StudySpec, reason: string): string {
  if (reason.includes("trial_timeout") && spec.trialTimeoutMs !== null)
    return `ran longer than ${durationText(spec.trialTimeoutMs)} (trial_timeout)`;
  if (spec.reportTimeoutMs !== null) return `no report for ${durationText(spec.reportTimeoutMs)} (report_timeout)`;
  return reason;
}

function stopReason(t: TrialRecord, timeAttr: string): string {
  const s = t.stop;
  if (!s) return "stopped";
  if (s.by === "divergence") return `diverged at ${timeAttr} ${s.rung ?? s.t}`;
  return `stopped by ${s.by} at ${s.rung !== null ? `rung ${s.rung}` : `t=${s.t}`}`;
}

/** The number a new order of the trial takes: one past every attempt it had (redeliveries included). */
function nextAttempt(t: TrialRecord): number {
  return Math.max(0, ...t.attempts.map((a) => a.attempt)) + 1;
}

/** Runs one study to its end (or until `signal` detaches). */
export async function runStudy(options: RunStudyOptions): Promise<StudyResult> {
  return new StudyCoordinator(options).run();
}
