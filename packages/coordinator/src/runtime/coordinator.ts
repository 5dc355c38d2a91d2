import { randomBytes } from "node:crypto";
import {
  BadMessageCounter,
  createdMsgId,
  DecodeError,
  decisionMsgId,
  endedMsgId,
  type Logger,
  type MeshNames,
  poolName,
  queuedMsgId,
  type TrialEvent,
  TrialEvents,
  TrialEventWriter,
  trialEventMsgId,
  type WorkOrder,
  workOrderMsgId,
} from "@rung/protocol";
import {
  generateTrials,
  isCopyRejection,
  type PlannedTrial,
  type StopDecision,
  type StoredEvent,
  StudyDecider,
  type StudySpec,
  StudyState,
  TERMINAL_PHASES,
  type TrialRecord,
  trialArgv,
} from "../study/index.js";
import { followStudyEvents } from "./event-reader.js";
import { StudyLease } from "./lease.js";
import { MeshAdverts } from "./mesh-adverts.js";
import { type CompiledRunOptions, compileRunOptions, type RunStudyOptions } from "./run-options.js";
import { StudyStore } from "./study-store.js";

export interface StudyResult {
  study: string;
  status: "completed" | "stopped";
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
  #live = false;
  #serial: Promise<void> = Promise.resolve();
  #stopRequested = false;
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
    });
    this.planned = generateTrials(this.spec);
    this.#decider = new StudyDecider(this.spec);
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
    this.#mesh = new MeshAdverts(res.agents, o.advertStaleMs, () => this.#kick(), this.drops);
    const tick = setInterval(() => this.#kick(), 1000);
    try {
      if ((await this.#store.recordStudy(this.spec)).stopped) this.#stopRequested = true;
      await this.#mesh.start();
      this.#store.watchStop(detach.signal, () => this.#onStopRequested());
      const following = followStudyEvents(o.nc, this.names, this.spec.name, {
        signal: detach.signal,
        drops: this.drops,
        onCatchUp: (events) => this.#serially(() => this.#catchUp(events)),
        onEvent: (ev) => this.#serially(() => this.#handle(ev)),
      });
      following.catch((err) => this.#fail(err));
      const detached = new Promise<never>((_, reject) => {
        detach.signal.addEventListener("abort", () => reject(new DetachedError(this.spec.name)), { once: true });
      });
      const result = await Promise.race([this.#finished, detached]);
      await this.#store.setStudyState(result.status);
      return result;
    } finally {
      clearInterval(tick);
      o.signal?.removeEventListener("abort", onAbort);
      detach.abort();
      this.#mesh.stop();
      await this.#serial.catch(() => {});
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
    for (const { event } of events) {
      if (event.study !== this.spec.name || !this.#plannedTrial(event.trial)) continue;
      if (event.type === "created" ? created.has(event.trial) : !created.has(event.trial)) continue;
      created.add(event.trial);
      const key = actionKey(event);
      if (key) this.#store.markPublished(key);
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

  async #handle({ event: ev }: StoredEvent): Promise<void> {
    const stray = this.#stray(ev);
    if (stray === "copy") return;
    if (stray) {
      this.drops.record("events", new DecodeError("stray", "trial event", `trial event: ${stray}`));
      return;
    }
    this.state.apply(ev);
    const t = this.state.trial(ev.trial);
    const stop = this.#decider.onEvent(ev);
    if (stop) await this.#onStop(stop);
    if (ev.type === "finished") await this.#onFinished(t, ev);
    if (ev.type === "rejected" && isCopyRejection(ev.reason)) {
      this.log.warn(
        { trial: ev.trial, agent: ev.agent, reason: ev.reason, sender: ev.sender, security: true },
        `agent ${ev.agent} refused a copy of an order of this study (${ev.reason}): someone may be publishing work; the trial goes on`,
      );
    } else if (ev.type === "rejected" && !TERMINAL_PHASES.has(t.phase)) {
      await this.#end(t, "failed", `rejected by agent ${ev.agent}: ${ev.reason}: ${ev.detail}`);
    }
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
    const key = decisionMsgId(this.spec.name, d.trial, d.attempt, d.seq);
    const decision = TrialEvents.decision({
      study: this.spec.name,
      trial: d.trial,
      attempt: d.attempt,
      seq: d.seq,
      t: d.t,
      value: d.value,
      decision: "STOP",
      by: d.by,
      rung: d.rung,
      cutoff: d.cutoff,
    });
    this.state.apply(decision);
    if (this.#store.isPublished(key)) return; // decided before a restart; its stop key was written then
    if (!d.atMaxT) await this.#store.writeStop(d.trial, "scheduler-stop", d.by, d.rung ?? d.t);
    this.log.info(
      { trial: d.trial, t: d.t, value: d.value, by: d.by, rung: d.rung, reason: d.reason },
      d.atMaxT ? "trial reached max_t" : "stopping trial",
    );
    await this.#store.publishEvent(decision, key);
  }

  async #onFinished(t: TrialRecord, ev: Extract<TrialEvent, { type: "finished" }>): Promise<void> {
    if (TERMINAL_PHASES.has(t.phase)) return;
    const latest = t.attempts.at(-1)?.attempt ?? ev.attempt;
    if (ev.attempt < latest) return; // an older attempt ending late (its claim moved on)
    if (ev.status === "completed") {
      const stoppedEarly = t.stop !== null && !(this.spec.scheduler.maxT !== null && t.stop.t >= this.spec.scheduler.maxT);
      await this.#end(
        t,
        stoppedEarly ? "stopped" : "completed",
        stoppedEarly ? stopReason(t) : `completed at ${this.spec.scheduler.timeAttr}=${t.lastT ?? "?"}`,
      );
      return;
    }
    if (ev.status === "stopped") {
      if (ev.reason.startsWith("claim-lost")) return; // the order went to another agent, which runs it on
      if (t.stop !== null) await this.#end(t, "stopped", stopReason(t));
      else await this.#end(t, this.#stopRequested ? "cancelled" : "stopped", ev.reason);
      return;
    }
    // failed
    if (t.stop !== null) {
      await this.#end(t, "stopped", stopReason(t)); // it died after the scheduler had stopped it
      return;
    }
    const cannotStart = ev.exitCode === null && ev.signal === null;
    const used = Math.max(...t.attempts.map((a) => a.attempt));
    if (this.#stopRequested) {
      await this.#end(t, "cancelled", `study stopped; last attempt failed: ${ev.reason}`);
    } else if (cannotStart) {
      await this.#end(t, "failed", `cannot start: ${ev.reason}`);
    } else if (used < 1 + this.spec.retries) {
      this.log.warn(
        { trial: t.trial, attempt: ev.attempt, exitCode: ev.exitCode, signal: ev.signal },
        "trial attempt failed; retrying",
      );
      await this.#queue(t.trial, used + 1);
    } else {
      const tail = ev.logTail.length ? `\n${ev.logTail.join("\n")}` : "";
      await this.#end(t, "failed", `failed after ${used} attempt(s): ${ev.reason}${tail}`);
    }
  }

  async #end(t: TrialRecord, status: "completed" | "stopped" | "failed" | "cancelled", reason: string): Promise<void> {
    const ev = TrialEvents.ended({ study: this.spec.name, trial: t.trial, status, reason, attempts: t.attempts.length });
    this.state.apply(ev);
    await this.#store.publishEvent(ev, endedMsgId(this.spec.name, t.trial));
  }

  #plannedIndex = new Map<string, PlannedTrial>();

  #plannedTrial(id: string): PlannedTrial | undefined {
    if (this.#plannedIndex.size === 0) for (const p of this.planned) this.#plannedIndex.set(p.trial, p);
    return this.#plannedIndex.get(id);
  }

  async #queue(trial: string, attempt: number): Promise<void> {
    const key = queuedMsgId(this.spec.name, trial, attempt);
    // Re-deciding a retry during catch-up: it was queued before the restart, and the catch-up
    // re-publishes the order afterwards only if no agent claimed it.
    if (this.#store.isPublished(key)) return;
    const ev = TrialEvents.queued({ study: this.spec.name, trial, attempt });
    this.state.apply(ev);
    await this.#store.publishEvent(ev, key);
    await this.#publishOrder(trial, attempt, false);
  }

  async #publishOrder(trial: string, attempt: number, republish: boolean): Promise<void> {
    const planned = this.#plannedTrial(trial);
    if (!planned) throw new Error(`trial ${trial} is in the event stream but not in the spec's search space`);
    const gpus = this.spec.resources.gpus;
    const pool = gpus > 0 ? poolName("gpu", gpus) : poolName("cpu", Math.max(1, this.spec.resources.cpus));
    const now = Date.now();
    let order: WorkOrder = {
      v: 1,
      type: "order",
      study: this.spec.name,
      trial,
      attempt,
      pool,
      resources: { gpus, cpus: this.spec.resources.cpus },
      argv: trialArgv(this.spec, planned),
      workdir: this.spec.workdir,
      env: { ...this.spec.env },
      secretEnv: [...this.spec.secretEnv],
      params: { ...planned.params },
      timeAttr: this.spec.scheduler.timeAttr,
      issuedAt: now,
      expiresAt: now + this.#o.orderTtlMs,
      nonce: randomBytes(12).toString("hex"),
    };
    if (this.#o.signOrder) order = this.#o.signOrder(order);
    const ack = await this.#store.publishOrder(order, workOrderMsgId(this.spec.name, trial, attempt));
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
    const max = this.spec.maxConcurrent ?? Number.POSITIVE_INFINITY;
    for (;;) {
      if (this.state.inFlight().length >= max) break;
      if (this.state.waitingOrders() >= this.#mesh.freePlaces(this.spec.resources.gpus)) break;
      const next = this.planned.find((p) => (this.state.trials.get(p.trial)?.createdAt ?? null) === null);
      if (!next) break;
      const { bracket } = this.#decider.addTrial(next.trial);
      const ev = TrialEvents.created({ study: this.spec.name, trial: next.trial, params: { ...next.params }, bracket });
      this.state.apply(ev);
      await this.#store.publishEvent(ev, createdMsgId(this.spec.name, next.trial));
      this.log.debug({ trial: next.trial, params: next.params, bracket }, "dispatching trial");
      await this.#queue(next.trial, 1);
    }
    this.#maybeFinish();
  }

  #stoppedAll = false;
  async #stopEverything(): Promise<void> {
    if (this.#stoppedAll) return;
    this.#stoppedAll = true;
    for (const t of this.state.inFlight()) await this.#store.writeStop(t.trial, "user-stop", "user", null);
  }

  #maybeFinish(): void {
    const created = [...this.state.trials.values()].filter((t) => t.createdAt !== null);
    const allCreated = this.#stopRequested || created.length >= this.planned.length;
    if (!allCreated || created.some((t) => !TERMINAL_PHASES.has(t.phase))) return;
    this.#finish({
      study: this.spec.name,
      status: this.#stopRequested ? "stopped" : "completed",
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
    });
  }
}

export class DetachedError extends Error {
  override name = "DetachedError";
  constructor(readonly study: string) {
    super(`detached from study ${study}: trials in flight keep running; run the same "rung study run" again to resume`);
  }
}

function stopReason(t: TrialRecord): string {
  const s = t.stop;
  if (!s) return "stopped";
  return `stopped by ${s.by} at ${s.rung !== null ? `rung ${s.rung}` : `t=${s.t}`}`;
}

/** The de-duplication key of an event the coordinator itself publishes; undefined for the agents'. */
function actionKey(ev: TrialEvent): string | undefined {
  return TrialEventWriter[ev.type] === "coordinator" ? trialEventMsgId(ev) : undefined;
}

/** Runs one study to its end (or until `signal` detaches). */
export async function runStudy(options: RunStudyOptions): Promise<StudyResult> {
  return new StudyCoordinator(options).run();
}
