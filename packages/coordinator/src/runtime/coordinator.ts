import { randomBytes } from "node:crypto";
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  BadMessageCounter,
  type Control,
  createLogger,
  DecodeError,
  decode,
  encode,
  ensureResources,
  type Logger,
  MeshNames,
  type MeshResources,
  poolName,
  type ResourceOptions,
  type StudyRecord,
  StudyRecordSchema,
  type TrialEvent,
  type WorkOrder,
} from "@rung/protocol";
import { StudySpecChangedError } from "./errors.js";
import { followStudyEvents, type StoredEvent } from "./event-log.js";
import { StudyLease } from "./lease.js";
import { MeshView } from "./mesh-view.js";
import type { PlannedTrial } from "./search-space.js";
import { generateTrials } from "./search-space.js";
import { type StudySpec, specForRecord, specHash, trialArgv } from "./spec.js";
import { type StopDecision, StudyDecider } from "./study-decider.js";
import { isCopyRejection, StudyState, TERMINAL_PHASES, type TrialRecord } from "./study-state.js";

/** Options of `runStudy`; durations are milliseconds (the CLI parses "30s"). */
export interface RunStudyOptions {
  nc: NatsConnection;
  spec: StudySpec;
  /** Mesh prefix. Default "rung". */
  prefix?: string;
  log?: Logger;
  /** Called after every change worth showing (throttle it in the caller). */
  onProgress?: (p: StudyProgress) => void;
  /** Aborting detaches the coordinator: trials in flight keep running and a new run resumes. */
  signal?: AbortSignal;
  /** Coordinator lease TTL. Default 15 s. */
  leaseMs?: number;
  /** How long an order stays valid in the queue. Default 24 h. */
  orderTtlMs?: number;
  /** Adverts older than this are not counted as free capacity. Default 15 s. */
  advertStaleMs?: number;
  /**
   * Signs each order before it is published (`rung study run --signing-key`: protocol's `signOrder`
   * with the key's seed). Agents started with `--trust` run only orders signed by a key they trust.
   * Default: orders go out unsigned, which only `--insecure` agents run.
   */
  signOrder?: (order: WorkOrder) => WorkOrder;
  /** Stream and bucket options for `ensureResources` (`--replicas` on a cluster). Default protocol's. */
  resources?: ResourceOptions;
}

export interface StudyProgress {
  study: string;
  state: StudyState;
  planned: number;
  agents: number;
  gpus: number;
  busyGpus: number;
  waitingForAgents: boolean;
  done: boolean;
}

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
  readonly #o: RunStudyOptions;
  readonly #decider: StudyDecider;
  #js!: JetStreamClient;
  #res!: MeshResources;
  #mesh!: MeshView;
  /** Actions already in the stream (found at catch-up): never published again. */
  readonly #done = new Set<string>();
  #live = false;
  #serial: Promise<void> = Promise.resolve();
  #stopRequested = false;
  #finish!: (r: StudyResult) => void;
  #fail!: (err: unknown) => void;
  readonly #finished: Promise<StudyResult>;

  constructor(options: RunStudyOptions) {
    this.#o = options;
    this.spec = options.spec;
    this.names = new MeshNames(options.prefix ?? "rung");
    this.log = (options.log ?? createLogger()).child({ study: this.spec.name });
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
    this.#res = await ensureResources(o.nc, this.names, o.resources);
    this.#js = jetstream(o.nc);
    const lease = new StudyLease(this.#res.studies, this.names.subjects, this.spec.name, o.leaseMs ?? 15_000);
    await lease.acquire();
    lease.keepAlive((err) => this.#fail(err));
    const detach = new AbortController();
    const onAbort = () => detach.abort();
    o.signal?.addEventListener("abort", onAbort, { once: true });
    this.#mesh = new MeshView(this.#res.agents, o.advertStaleMs ?? 15_000, () => this.#kick(), this.drops);
    const tick = setInterval(() => this.#kick(), 1000);
    try {
      await this.#recordStudy();
      await this.#mesh.start();
      this.#watchStudyRecord(detach.signal);
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
      await this.#setStudyState(result.status);
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

  async #recordStudy(): Promise<void> {
    const key = this.names.subjects.studyKey(this.spec.name);
    const hash = specHash(this.spec);
    const e = await this.#res.studies.get(key);
    if (e && e.operation === "PUT") {
      const r = decode(StudyRecordSchema, e.value, "study record");
      if (r.ok && r.value.specHash !== hash) throw new StudySpecChangedError(this.spec.name, r.value.specHash, hash);
      if (r.ok && r.value.state === "stopped") this.#stopRequested = true;
      return;
    }
    const now = Date.now();
    const rec: StudyRecord = {
      v: 1,
      type: "study",
      name: this.spec.name,
      spec: specForRecord(this.spec),
      specHash: hash,
      createdAt: now,
      state: "running",
      updatedAt: now,
    };
    await this.#res.studies.put(key, encode(rec));
  }

  async #setStudyState(state: StudyRecord["state"]): Promise<void> {
    const key = this.names.subjects.studyKey(this.spec.name);
    const e = await this.#retrying("read the study record", () => this.#res.studies.get(key));
    if (!e || e.operation !== "PUT") return;
    const r = decode(StudyRecordSchema, e.value, "study record");
    if (!r.ok || r.value.state === state) return;
    const data = encode({ ...r.value, state, updatedAt: Date.now() });
    await this.#retrying("record the study's end", () => this.#res.studies.put(key, data));
  }

  /** `rung study stop` marks the study record stopped: stop dispatching, let the rest wind down. */
  #watchStudyRecord(signal: AbortSignal): void {
    void (async () => {
      const iter = await this.#res.studies.watch({ key: this.names.subjects.studyKey(this.spec.name) });
      signal.addEventListener("abort", () => iter.stop(), { once: true });
      for await (const e of iter) {
        if (e.operation !== "PUT") continue;
        const r = decode(StudyRecordSchema, e.value, "study record");
        if (r.ok && r.value.state === "stopped" && !this.#stopRequested) {
          this.#stopRequested = true;
          this.log.info("study stop requested: no new trials; running ones are being stopped");
          this.#kick();
        }
      }
    })().catch(() => {});
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
      if (key) this.#done.add(key);
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

  async #publishEvent(ev: TrialEvent, msgID: string): Promise<void> {
    if (this.#done.has(msgID)) return;
    this.#done.add(msgID);
    const data = encode(ev);
    await this.#retrying(`publish the ${ev.type} event of ${ev.trial}`, () =>
      this.#js.publish(this.names.subjects.events(ev.study, ev.trial), data, { msgID }),
    );
  }

  /**
   * Runs one of the coordinator's writes again through a NATS hiccup — a server restarting, a cluster
   * electing a new leader ("jetstream is not enabled", timeouts) — instead of dying of it. Safe: every
   * event and order carries a message id the server de-duplicates, and a stop key says the same each
   * time. Gives up (and the run fails) after a minute without success, or once the connection is closed.
   */
  async #retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + 60_000;
    for (let wait = 250, failures = 0; ; wait = Math.min(5000, wait * 2)) {
      try {
        const v = await fn();
        if (failures > 0) this.log.info({ failures }, `could ${what} again`);
        return v;
      } catch (err) {
        failures += 1;
        if (Date.now() + wait > deadline || this.#o.nc.isClosed()) throw err;
        if (failures === 1) this.log.warn({ err: (err as Error).message }, `cannot ${what}; retrying`);
        await new Promise((r) => setTimeout(r, wait));
      }
    }
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
    const key = `${this.spec.name}.${d.trial}.decision.${d.attempt}.${d.seq}`;
    const decision: TrialEvent = {
      v: 1,
      type: "decision",
      study: this.spec.name,
      trial: d.trial,
      ts: Date.now(),
      attempt: d.attempt,
      seq: d.seq,
      t: d.t,
      value: d.value,
      decision: "STOP",
      by: d.by,
      rung: d.rung,
      cutoff: d.cutoff,
    };
    this.state.apply(decision);
    if (this.#done.has(key)) return; // decided before a restart; its stop key was written then
    if (!d.atMaxT) await this.#writeStop(d.trial, "scheduler-stop", d.by, d.rung ?? d.t);
    this.log.info(
      { trial: d.trial, t: d.t, value: d.value, by: d.by, rung: d.rung, reason: d.reason },
      d.atMaxT ? "trial reached max_t" : "stopping trial",
    );
    await this.#publishEvent(decision, key);
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
    const ev: TrialEvent = {
      v: 1,
      type: "ended",
      study: this.spec.name,
      trial: t.trial,
      ts: Date.now(),
      status,
      reason,
      attempts: t.attempts.length,
    };
    this.state.apply(ev);
    await this.#publishEvent(ev, `${this.spec.name}.${t.trial}.ended`);
  }

  async #writeStop(trial: string, reason: Control["reason"], by: string, rung: number | null): Promise<void> {
    const control: Control = { v: 1, type: "stop", study: this.spec.name, trial, reason, by, rung, ts: Date.now() };
    const data = encode(control);
    await this.#retrying(`write the stop of ${trial}`, () =>
      this.#res.control.put(this.names.subjects.controlKey(this.spec.name, trial), data),
    );
  }

  #plannedIndex = new Map<string, PlannedTrial>();

  #plannedTrial(id: string): PlannedTrial | undefined {
    if (this.#plannedIndex.size === 0) for (const p of this.planned) this.#plannedIndex.set(p.trial, p);
    return this.#plannedIndex.get(id);
  }

  async #queue(trial: string, attempt: number): Promise<void> {
    const key = `${this.spec.name}.${trial}.queued.${attempt}`;
    // Re-deciding a retry during catch-up: it was queued before the restart, and the catch-up
    // re-publishes the order afterwards only if no agent claimed it.
    if (this.#done.has(key)) return;
    const ev: TrialEvent = { v: 1, type: "queued", study: this.spec.name, trial, ts: Date.now(), attempt };
    this.state.apply(ev);
    await this.#publishEvent(ev, key);
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
      expiresAt: now + (this.#o.orderTtlMs ?? 86_400_000),
      nonce: randomBytes(12).toString("hex"),
    };
    if (this.#o.signOrder) order = this.#o.signOrder(order);
    const data = encode(order);
    const ack = await this.#retrying(`publish the order of ${trial} attempt ${attempt}`, () =>
      this.#js.publish(this.names.subjects.work(pool), data, { msgID: `${this.spec.name}.${trial}.${attempt}` }),
    );
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
      const ev: TrialEvent = {
        v: 1,
        type: "created",
        study: this.spec.name,
        trial: next.trial,
        ts: Date.now(),
        params: { ...next.params },
        bracket,
      };
      this.state.apply(ev);
      await this.#publishEvent(ev, `${this.spec.name}.${next.trial}.created`);
      this.log.debug({ trial: next.trial, params: next.params, bracket }, "dispatching trial");
      await this.#queue(next.trial, 1);
    }
    this.#maybeFinish();
  }

  #stoppedAll = false;
  async #stopEverything(): Promise<void> {
    if (this.#stoppedAll) return;
    this.#stoppedAll = true;
    for (const t of this.state.inFlight()) await this.#writeStop(t.trial, "user-stop", "user", null);
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

/** Runs one study to its end (or until `signal` detaches). */
export async function runStudy(options: RunStudyOptions): Promise<StudyResult> {
  return new StudyCoordinator(options).run();
}
