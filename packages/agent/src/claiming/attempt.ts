import { rmSync } from "node:fs";
import { join, resolve } from "node:path";
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type AgentEventType,
  agentIdTag,
  type CheckpointIndex,
  type CheckpointRef,
  type ClaimNotice,
  type Control,
  claimProof,
  type Logger,
  parseCheckpointObject,
  REPORT_BATCHES_HEADER,
  StopReason,
  type Subjects,
  studyScope,
  type TrialEvent,
  type TrialEventInit,
  trialEvent,
  type WorkOrder,
} from "@rung/protocol";
import { type CheckpointStore, formatBytes, packDirectory } from "../checkpoints.js";
import type { ControlWatch } from "../control-watch.js";
import { type EventPublisher, EventQueue } from "../events.js";
import type { CompiledAgentOptions } from "../options.js";
import { forgetGroup, recordGroup } from "../orphans.js";
import type { SlotHolder } from "../slots.js";
import { StateMachine, type Transitions } from "../state-machine.js";
import { type StopRequest, type TrialResult, TrialRun } from "../trial-runner.js";
import { warmPoolFor } from "../warm-pool.js";
import { attemptKey } from "./admission.js";
import type { ClaimLoopCounters } from "./counters.js";
import type { Pool } from "./pools.js";
import { sleep, withTimeout } from "./timers.js";
import { OrderEnding, safely } from "./work-message.js";

/**
 * AN ATTEMPT: one claimed order on this agent, from the moment its slots are taken until its order
 * has ended (attempt number = the order's attempt + deliveries - 1, so a redelivery after an agent
 * died runs attempt 2). Its events go out in order: claimed ─▶ started ─▶ (report)* ─▶ finished.
 *
 * Its life is ONE state, which says how the work message will end:
 *
 *   claimed ─▶ starting ─▶ running ─▶ stopping ─▶ requeuing ─▶ lost ─▶ ended
 *
 * Moves go forward only and may skip ahead (a stop decided before the trial started, a claim lost
 * while stopping, an order rejected while claimed), except from claimed straight to running: a trial
 * runs only after starting.
 *
 *   claimed    slots held, heartbeats going; the mesh-wide replay check (the nonces bucket) runs. A
 *              copy is rejected (`term`); an unreachable bucket hands the order back (nak, 5 s delay);
 *              either way straight to ended, nothing started;
 *   starting   admitted: the stop key in the control bucket is read, `claimed` goes out, the trial is
 *              spawned;
 *   running    the trial's process is running: reports are published, heartbeats keep the claim;
 *   stopping   a stop decision (from the control bucket: read when the order arrives, watched
 *              afterwards, read again after a reconnect) stops the trial — SIGTERM, grace, SIGKILL — or
 *              keeps it from starting: `finished stopped`, ack;
 *   requeuing  drain with requeue (or a forced shutdown): the trial is stopped (killed), `finished
 *              stopped agent-shutdown`, nak without delay so another agent takes the order at once;
 *   lost       a heartbeat found more than a lease since the last confirmed one (the agent was frozen,
 *              or cut off from NATS): the order has been handed to another agent. The trial is killed
 *              at once (SIGKILL, no grace: the other copy may be running already), `finished stopped
 *              claim-lost` is published, and the order is neither acked nor nak'd — it is not ours;
 *   ended      the order has ended; the claim loop releases the slots if the trial's exit did not
 *              (`onExited`: its processes gone, no snapshot pending, the claim not lost). Terminal.
 *
 * There is no state for "exited": once the trial's process is gone, the state keeps saying how the
 * order will end while `finished` goes out, and `ended` follows.
 *
 * A trial that completes or crashes while `starting` or `running` ends `finished completed|failed`,
 * ack: retrying a failure is the coordinator's decision (a new order with a higher attempt), not
 * JetStream's. An exception in our own code ends the order too: ack when `finished` went out, nak
 * otherwise. Whatever happens, the work message is ended at most once (`ack`, `nak` or `term`), and
 * every path out releases the slots: "we MUST release the job".
 *
 * Heartbeats: every third of the lease, an in-progress ack, then a round trip to the server that
 * confirms it; a missed heartbeat is counted and logged, not thrown. Transitions along edges not
 * drawn above throw (a bug), and the error path above still ends the order.
 */
export const AttemptState = {
  claimed: "claimed",
  starting: "starting",
  running: "running",
  stopping: "stopping",
  requeuing: "requeuing",
  lost: "lost",
  ended: "ended",
} as const;
export type AttemptState = (typeof AttemptState)[keyof typeof AttemptState];

/** The edges of the diagram above. */
export const ATTEMPT_TRANSITIONS: Transitions<AttemptState> = {
  claimed: ["starting", "stopping", "requeuing", "lost", "ended"],
  starting: ["running", "stopping", "requeuing", "lost", "ended"],
  running: ["stopping", "requeuing", "lost", "ended"],
  stopping: ["requeuing", "lost", "ended"],
  requeuing: ["lost", "ended"],
  lost: ["ended"],
  ended: [],
};

/** States in which a stop decision still changes what happens (later ones are on their way out). */
const STOPPABLE: ReadonlySet<AttemptState> = new Set<AttemptState>(["claimed", "starting", "running"]);

/** Whether every process of group `pgid` is gone (reaped): true, false, or null when it cannot tell. */
function groupGone(pgid: number): boolean | null {
  try {
    process.kill(-pgid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH" ? true : null;
  }
}

/** What a stop decision says, as the reason of the trial's AbortController. */
export function stopRequestFrom(c: Control): StopRequest {
  if (c.reason === "scheduler-stop")
    return { reason: StopReason.schedulerStop, detail: c.rung === null ? "scheduler-stop" : `scheduler-stop at t=${c.rung}` };
  if (c.reason === "timeout") return { reason: StopReason.timeout, detail: `timeout: ${c.by}` };
  if (c.reason === "scheduler-pause")
    return { reason: StopReason.schedulerPause, detail: c.rung === null ? "scheduler-pause" : `scheduler-pause at t=${c.rung}` };
  return { reason: StopReason.userStop, detail: c.by ? `user-stop by ${c.by}` : "user-stop" };
}

/** What every attempt of one claim loop shares. */
export interface AttemptContext {
  /** For the heartbeat's round trip. */
  nc: Pick<NatsConnection, "flush">;
  js: JetStreamClient;
  /** Trial events, acknowledged on one subscription (protocol's AckedPublisher). */
  events: EventPublisher;
  subjects: Subjects;
  options: CompiledAgentOptions;
  control: Pick<ControlWatch, "read" | "readCheckpoints">;
  /** The mesh's checkpoint bucket; null when it could not be opened (trials then start from their local directory). */
  checkpoints: CheckpointStore | null;
  /** The claim loop's counters, which attempts add to. */
  counters: ClaimLoopCounters;
  /** The agent's logger; each attempt logs through a child with study, trial and attempt. */
  log: Logger;
  /** False while the connection is down: heartbeats cannot succeed then, so none is sent. */
  isConnected(): boolean;
  /** True once the connection is closed for good: publishes stop retrying. */
  isClosed(): boolean;
  /** The CUDA_VISIBLE_DEVICES entry of a GPU: its index, or a MIG instance's UUID. Default: the index. */
  visibleDevice?(index: number): string;
  /** A fresh path for the report socket of a trial about to start. */
  nextReportPath(): string;
  /**
   * The trial's processes are gone: its GPU slots may take the next order while the attempt still
   * publishes `finished` and ends its order (two round trips a GPU would otherwise sit idle for).
   * Called at most once, before or after `finished` goes out, never once the attempt has ended.
   */
  onExited?(attempt: Attempt): void;
}

export interface AttemptInit {
  order: WorkOrder;
  /** The attempt number: `attemptNumber()` in admission.ts. */
  number: number;
  msg: JsMsg;
  pool: Pool;
  /** The slots taken for it: GPU indices, or CPU slot numbers. */
  ids: number[];
  holder: SlotHolder;
}

export class Attempt {
  /** `<study>.<trial>.<attempt>`. */
  readonly key: string;
  readonly order: WorkOrder;
  readonly number: number;
  readonly pool: Pool;
  readonly ids: number[];
  readonly holder: SlotHolder;
  readonly log: Logger;
  readonly #ctx: AttemptContext;
  /** The work message: ended (ack, nak, term) only through this attempt, at most once. */
  readonly #msg: JsMsg;
  readonly #life: StateMachine<AttemptState>;
  readonly #events: EventQueue;
  readonly #heartbeat: NodeJS.Timeout;
  #trial: TrialRun | undefined;
  /** Why the trial is (to be) stopped: given to it as soon as it exists. */
  #stop: StopRequest | null = null;
  #ending: OrderEnding | null = null;
  #lastBeatOkAt = Date.now();
  /** A heartbeat's round trip is in flight. */
  #beating = false;
  #seq = 0;
  /** Snapshots being packed and stored, in order; `finished` waits for them. */
  #snapshots: Promise<void> = Promise.resolve();
  /** The newest report that asked for a snapshot and is not yet being packed (older ones are skipped). */
  #nextSnapshot: { seq: number; t: number } | null = null;
  /** The trial's process has exited: its result is in. */
  #exited = false;
  /** Snapshots waiting or being stored. */
  #storingSnapshots = 0;
  #malformed = 0;

  /** Claims the order: from here on heartbeats keep it ours until {@link end}. */
  constructor(ctx: AttemptContext, init: AttemptInit) {
    this.#ctx = ctx;
    this.order = init.order;
    this.number = init.number;
    this.#msg = init.msg;
    this.pool = init.pool;
    this.ids = init.ids;
    this.holder = init.holder;
    this.key = attemptKey(init.order.study, init.order.trial, init.number);
    this.#life = new StateMachine(`attempt ${this.key}`, AttemptState.claimed, ATTEMPT_TRANSITIONS);
    this.log = ctx.log.child({ study: init.order.study, trial: init.order.trial, attempt: init.number });
    this.#events = new EventQueue({
      publisher: ctx.events,
      subjects: ctx.subjects,
      log: ctx.log,
      giveUp: ctx.isClosed,
      studyId: init.order.studyId ?? null,
      tag: agentIdTag(init.order.nonce, ctx.options.name),
      batchReports: init.msg.headers?.get(REPORT_BATCHES_HEADER) === "1",
      onDroppedReport: () => {
        ctx.counters.droppedReports += 1;
      },
    });
    this.#heartbeat = setInterval(() => this.#beat(), ctx.options.heartbeatMs);
  }

  get state(): AttemptState {
    return this.#life.state;
  }

  /** Why the trial is being stopped, once something asked; null while nothing has. */
  get stopRequest(): StopRequest | null {
    return this.#stop;
  }

  /** How the work message ended; null until it has (and for good when the claim was lost before). */
  get ending(): OrderEnding | null {
    return this.#ending;
  }

  /**
   * The trial's process has started and has not exited. Not the state `running`, which stays while
   * `finished` goes out after the exit; what the agent counts as trials running (`rung_trials_running`).
   */
  get trialRunning(): boolean {
    return this.#trial?.pid !== undefined && !this.#exited;
  }

  get #gpus(): number[] {
    return this.pool.kind === "gpu" ? this.ids : [];
  }

  /**
   * The attempt once admitted: starts the trial, waits for it, publishes `finished` and ends the order.
   * Never rejects: an error in our own code still ends the order.
   */
  async run(): Promise<void> {
    const { study, trial } = this.order;
    let finishedSent = false;
    try {
      if (this.state === AttemptState.claimed) this.#life.transition(AttemptState.starting);
      // The stop key and the checkpoint index, read together (neither read throws): one round trip
      // before the trial starts instead of two.
      const index = this.#ctx.checkpoints ? this.#ctx.control.readCheckpoints(study, trial) : Promise.resolve(null);
      const decided = await this.#ctx.control.read(study, trial);
      if (decided && decided.study === study && decided.trial === trial) this.#noteStop(stopRequestFrom(decided));
      // The proof that this agent was handed the order: readers make it the attempt's claimant.
      const proof = claimProof({ nonce: this.order.nonce, study, trial, attempt: this.number, agent: this.#ctx.options.name });
      void this.#publish("claimed", { gpus: this.#gpus, proof });
      this.log.info({ gpus: this.ids, pool: this.pool.name }, "claimed a trial");
      const result = await this.#execute(index);
      // Beside `finished`, not before it: a group that takes its time to empty delays no event.
      this.#releaseSlotsEarly();
      // The last checkpoint (one saved on SIGTERM, before a preemption) is stored before the attempt ends.
      await withTimeout(this.#snapshots, Math.max(60_000, this.#ctx.options.stopGraceMs)).catch(() => {
        this.log.warn("a checkpoint was still being stored when the attempt ended; it is left out");
      });
      const preempted = this.state === AttemptState.requeuing && result.stop?.reason === StopReason.agentShutdown;
      await this.#publish("finished", {
        status: preempted ? "preempted" : result.status,
        exitCode: result.exitCode,
        signal: result.signal,
        reason: preempted ? `preempted: ${result.reason}` : result.reason,
        logTail: result.logTail,
      });
      finishedSent = true;
      this.log.info(
        preempted ? { status: "preempted", reason: result.reason } : { status: result.status, reason: result.reason },
        preempted ? "trial preempted: its order goes back to the queue" : "trial finished",
      );
      await this.#endOrder(finishedSent);
    } catch (err) {
      this.log.error({ err: (err as Error).message, stack: (err as Error).stack }, "agent error while running a trial");
      this.#trial?.killNow({ reason: StopReason.agentShutdown, detail: "agent error" });
      if (!finishedSent && this.state !== AttemptState.lost) {
        finishedSent = await this.#publish("finished", {
          status: "failed",
          exitCode: null,
          signal: null,
          reason: `agent error: ${(err as Error).message}`,
          logTail: [],
        });
      }
      await this.#endOrder(finishedSent).catch(() => {});
    }
  }

  /** A stop decision from the control bucket, for any trial: stops this attempt if it is that trial's. */
  onControl(c: Control): void {
    if (this.order.study !== c.study || this.order.trial !== c.trial) return;
    const req = stopRequestFrom(c);
    if (!this.#noteStop(req)) return;
    this.log.info({ why: req.detail }, "stop decision received");
    this.#trial?.stop(req);
  }

  /**
   * A claim notice (the coordinator saw a newer attempt of this trial claimed): JetStream handed the
   * order on, so this copy is not ours any more, whatever our own lease check says — our last
   * heartbeat may have reached the server just after the lease ran out there.
   */
  onClaimNotice(n: ClaimNotice): void {
    if (this.order.study !== n.study || this.order.trial !== n.trial || n.attempt <= this.number) return;
    // Its trial has exited: there is no copy to kill, and the order ended (or ends) the way it said.
    if (this.#exited) return;
    // A notice of another incarnation of the study (deleted and run again under its name) is not ours.
    if (n.studyId !== null && (this.order.studyId ?? null) !== null && n.studyId !== this.order.studyId) return;
    this.#loseClaim(`attempt ${n.attempt} of this trial was claimed by agent ${n.agent}`, {
      claimedAttempt: n.attempt,
      claimedBy: n.agent,
    });
  }

  /**
   * Drain with requeue: stop the trial and hand the order back. Not for a lost claim (not ours), nor
   * once the trial has exited: its result stands, and the order ends the way it says.
   */
  requeue(): void {
    if (this.state === AttemptState.lost || this.#exited) return;
    if (this.state !== AttemptState.requeuing) this.#life.transition(AttemptState.requeuing);
    const req: StopRequest = { reason: StopReason.agentShutdown, detail: "agent-shutdown" };
    this.#stop ??= req;
    this.#trial?.stop(req);
  }

  /**
   * Forced shutdown: kill the trial now and hand the order back at once, best effort (the process is
   * exiting). Not for a lost claim, nor once the trial has exited: as for {@link requeue}.
   */
  kill(): void {
    if (this.#exited) return;
    if (this.state !== AttemptState.lost && this.state !== AttemptState.requeuing) this.#life.transition(AttemptState.requeuing);
    this.#trial?.killNow({ reason: StopReason.agentShutdown, detail: "agent-shutdown (forced)" });
    if (this.state !== AttemptState.lost) this.nak();
  }

  /** Hands the order back (redelivered after `delayMs`, default at once), unless it has ended already. */
  nak(delayMs?: number): boolean {
    return this.#endMessage(OrderEnding.nak, () => this.#msg.nak(delayMs));
  }

  /** Ends the order as one that can never run here, unless it has ended already. */
  term(): boolean {
    // No reason text on the term: nats-server 2.9 does not recognise "+TERM <reason>" and would
    // redeliver the order after the lease. The reason goes out in the rejected event instead.
    return this.#endMessage(OrderEnding.term, () => this.#msg.term());
  }

  /** The attempt is over: heartbeats stop. The claim loop releases the slots (if the trial's exit did not). */
  end(): void {
    clearInterval(this.#heartbeat);
    this.#life.transition(AttemptState.ended);
  }

  /** Records a stop request unless one is recorded already; false when it was. */
  #noteStop(req: StopRequest): boolean {
    if (this.#stop) return false;
    this.#stop = req;
    if (STOPPABLE.has(this.state)) this.#life.transition(AttemptState.stopping);
    return true;
  }

  #endMessage(how: OrderEnding, send: () => void): boolean {
    if (this.#ending !== null) return false;
    this.#ending = how;
    safely(send);
    return true;
  }

  #publish(type: AgentEventType, fields: Record<string, unknown>): Promise<boolean> {
    const event = trialEvent(type, {
      study: this.order.study,
      trial: this.order.trial,
      attempt: this.number,
      agent: this.#ctx.options.name,
      ...fields,
    } as TrialEventInit<typeof type>);
    return this.#events.push(event as TrialEvent);
  }

  async #execute(index: Promise<CheckpointIndex | null>): Promise<TrialResult> {
    const ctx = this.#ctx;
    const o = ctx.options;
    const { study, trial } = this.order;
    const groups = join(o.stateDir, "groups");
    const checkpointDir = join(o.stateDir, "checkpoints", studyScope(study, this.order.studyId), trial);
    const restored = await this.#restore(checkpointDir, index);
    const run = new TrialRun({
      order: this.order,
      attempt: this.number,
      agent: o.name,
      gpus: this.#gpus,
      visibleDevices: this.#gpus.map((i) => ctx.visibleDevice?.(i) ?? String(i)),
      workdir: resolve(o.workdir, this.order.workdir),
      // Keyed by the study's incarnation: a study deleted and run again never finds the old one's files.
      checkpointDir,
      resumeFrom: restored.ref?.t ?? null,
      preamble: restored.lines,
      logFile: join(o.stateDir, "logs", studyScope(study, this.order.studyId), trial, `${this.number}.log`),
      reportPath: ctx.nextReportPath(),
      logsSubject: ctx.subjects.logs(study, trial, this.number, o.name),
      js: ctx.js,
      log: this.log,
      stopGraceMs: o.stopGraceMs,
      isClosed: ctx.isClosed,
      warm: warmPoolFor(o),
      onStarted: (pid) => {
        // Its process group's GPU memory is its own from now on (claiming/placement.ts).
        this.holder.pid = pid;
        this.log.info({ pid }, "trial started");
        recordGroup(groups, { pgid: pid, study, trial, attempt: this.number });
        void this.#publish("started", {
          pid,
          gpus: this.#gpus,
          resumedFrom: restored.ref,
          ...(restored.skipped.length > 0 ? { skippedCheckpoints: restored.skipped } : {}),
        });
      },
      onReport: (metrics, checkpoint) => {
        ctx.counters.reports += 1;
        const wait = metrics.data_wait_s;
        const compute = metrics.compute_s;
        if (wait !== undefined && compute !== undefined && Number.isFinite(wait + compute) && wait + compute > 0)
          this.holder.busyShare = Math.min(1, Math.max(0, compute / (wait + compute)));
        const seq = this.#seq++;
        void this.#publish("report", { seq, metrics });
        if (checkpoint) this.#snapshot(seq, metrics[this.order.timeAttr] ?? seq, checkpointDir);
      },
      onMalformedReport: (why, line) => {
        ctx.counters.malformedReportLines += 1;
        this.#malformed += 1;
        if (this.#malformed === 1)
          this.log.warn(
            { why, line },
            "the trial wrote a report line that is not a flat JSON object of numbers; skipped (further ones are counted)",
          );
      },
    });
    this.#trial = run;
    if (this.state === AttemptState.starting) this.#life.transition(AttemptState.running);
    if (this.#stop) run.stop(this.#stop);
    // The group is gone once the result is in (the runner kills what the trial left): forget it.
    // Marked exited in the same turn as the result: no drain or kill can come between the two.
    return run.result.finally(() => {
      this.#exited = true;
      if (run.pid !== undefined) forgetGroup(groups, run.pid);
    });
  }

  /**
   * The newest stored checkpoint of the trial whose bytes match their record, unpacked into `dir`
   * (checkpoints.ts). The coordinator's index names them; one that does not match is skipped, said so in
   * the trial's log and the agent's. Without an index (a first attempt, or a trial that never asked for
   * a snapshot) the local directory is left as it is.
   */
  async #restore(
    dir: string,
    indexRead: Promise<CheckpointIndex | null>,
  ): Promise<{ ref: CheckpointRef | null; lines: string[]; skipped: { t: number; object: string; why: string }[] }> {
    const store = this.#ctx.checkpoints;
    const { study, timeAttr } = this.order;
    const scope = studyScope(study, this.order.studyId);
    const index = await indexRead;
    // Only this incarnation's snapshots: an index left by a deleted study of the same name is not ours.
    const refs = (index?.refs ?? []).filter((r) => parseCheckpointObject(r.object)?.scope === scope);
    const lines: string[] = [];
    const skipped: { t: number; object: string; why: string }[] = [];
    if (!store || refs.length === 0) return { ref: null, lines, skipped };
    const tmp = join(this.#ctx.options.stateDir, "checkpoint-tmp", `${this.key}.restore`);
    for (const ref of refs) {
      const r = await store.restore(ref, tmp, dir);
      if (r.ok) {
        const line = `resuming from the checkpoint at ${timeAttr}=${ref.t} (attempt ${ref.attempt} on ${ref.agent}, ${formatBytes(ref.size)}, ${r.files} file(s))`;
        this.log.info({ t: ref.t, object: ref.object }, line);
        return { ref, lines: [...lines, line], skipped };
      }
      const line = `skipped the checkpoint at ${timeAttr}=${ref.t} (attempt ${ref.attempt} on ${ref.agent}): ${r.why}`;
      this.log.warn({ t: ref.t, object: ref.object }, line);
      lines.push(line);
      skipped.push({ t: ref.t, object: ref.object, why: r.why });
    }
    // Nothing usable: a fresh start, from an empty directory (a failed unpack may have left a part).
    rmSync(dir, { recursive: true, force: true });
    lines.push("no stored checkpoint could be used: starting from scratch");
    return { ref: null, lines, skipped };
  }

  /**
   * The GPU (and the trial's files) go to the next order before this attempt has published `finished`
   * and ended its order (`onExited`) — not with a claim lost (the order is back in the queue: its next
   * attempt may come here and unpack into the checkpoint directory a snapshot of this one still reads),
   * not while a snapshot waits or is stored, not once the attempt has ended (its end released them),
   * and not before every process of the trial's group is gone (the runner kills the group when its
   * leader exits; a member may take a moment to die and release its GPU memory, and a dead one stays in
   * the group until its parent reaps it). A group gone already frees the slots now; otherwise it is
   * watched for up to two seconds while `finished` goes out, else the slots go when the attempt ends.
   */
  #releaseSlotsEarly(): void {
    if (!this.#mayReleaseEarly()) return;
    const pgid = this.#trial?.pid;
    const gone = pgid === undefined ? true : groupGone(pgid);
    if (gone === true) this.#ctx.onExited?.(this);
    else if (gone === false && pgid !== undefined)
      void this.#groupGoneWithin(pgid, 2000)
        .then((ok) => {
          if (ok && this.#mayReleaseEarly()) this.#ctx.onExited?.(this);
        })
        .catch((err: Error) =>
          this.log.error({ err: err.message }, "cannot give the slots back early; they go when the attempt ends"),
        );
  }

  #mayReleaseEarly(): boolean {
    return this.state !== AttemptState.lost && this.state !== AttemptState.ended && this.#storingSnapshots === 0;
  }

  /** Whether process group `pgid` empties within `ms`; false as soon as the attempt has ended or it cannot tell. */
  async #groupGoneWithin(pgid: number, ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    for (;;) {
      await sleep(20);
      if (this.state === AttemptState.ended) return false;
      const gone = groupGone(pgid);
      if (gone !== false) return gone === true;
      if (Date.now() > until) return false;
    }
  }

  /**
   * A report asked for a snapshot: pack the checkpoint directory, store it, then say so in a
   * `checkpoint` event. One at a time; while one is stored, only the newest request waits.
   */
  #snapshot(seq: number, t: number, dir: string): void {
    if (!this.#ctx.checkpoints) return;
    const pending = this.#nextSnapshot !== null;
    this.#nextSnapshot = { seq, t };
    if (pending) return;
    this.#storingSnapshots += 1;
    this.#snapshots = this.#snapshots.then(async () => {
      try {
        const next = this.#nextSnapshot;
        this.#nextSnapshot = null;
        if (next) await this.#storeSnapshot(next.seq, next.t, dir);
      } finally {
        this.#storingSnapshots -= 1;
      }
    });
  }

  async #storeSnapshot(seq: number, t: number, dir: string): Promise<void> {
    const store = this.#ctx.checkpoints;
    if (!store) return;
    const o = this.#ctx.options;
    const { study, trial } = this.order;
    const file = join(o.stateDir, "checkpoint-tmp", `${this.key}.${seq}`);
    try {
      const snap = await packDirectory(dir, file, o.maxCheckpointBytes);
      const object = this.#ctx.subjects.checkpointObject(studyScope(study, this.order.studyId), trial, this.number, seq);
      await store.upload(object, snap);
      const ref: CheckpointRef = { object, t, attempt: this.number, agent: o.name, size: snap.size, digest: snap.digest };
      this.#ctx.counters.checkpointsStored += 1;
      this.log.info({ t, object, bytes: snap.size, files: snap.files }, "checkpoint stored in the mesh");
      await this.#publish("checkpoint", { seq, ref });
    } catch (err) {
      this.#ctx.counters.checkpointsFailed += 1;
      this.log.warn({ t, err: (err as Error).message }, `cannot store the checkpoint at t=${t}: ${(err as Error).message}`);
    } finally {
      rmSync(file, { force: true });
    }
  }

  /** Ends the order the one way that fits how the attempt ended. */
  async #endOrder(finishedSent: boolean): Promise<void> {
    if (this.state === AttemptState.lost) return; // the order is another agent's now; touching it would disturb theirs
    if (this.state === AttemptState.requeuing || !finishedSent) {
      this.nak();
      this.#ctx.counters.ordersReturned += 1;
      return;
    }
    if (this.#ending !== null) return;
    this.#ending = OrderEnding.ack;
    for (let i = 0; ; i++) {
      try {
        await this.#msg.ackAck({ timeout: 5000 });
        return;
      } catch (err) {
        if (i >= 2 || Date.now() - this.#lastBeatOkAt > this.#ctx.options.leaseMs) {
          this.log.warn({ err: (err as Error).message }, "cannot ack the finished order; it may be delivered again");
          return;
        }
        await sleep(500);
      }
    }
  }

  /**
   * The order is not ours any more: kill the trial now and end nothing (the order is another agent's;
   * `finished` says `claim-lost`). Not once the attempt has ended, nor twice.
   */
  #loseClaim(why: string, fields: Record<string, unknown>): void {
    if (this.state === AttemptState.lost || this.state === AttemptState.ended) return;
    this.#life.transition(AttemptState.lost);
    this.#ctx.counters.claimsLost += 1;
    this.log.warn(fields, `claim lost: ${why}; killing the trial`);
    // Another agent may be running this trial already: no grace period (a trainer may spend many
    // seconds saving a checkpoint on SIGTERM), or two copies would run at once for that long.
    const req: StopRequest = { reason: StopReason.claimLost, detail: "claim-lost" };
    this.#stop = req;
    this.#trial?.killNow(req);
  }

  /** One heartbeat: an in-progress ack the server confirms, or the discovery that the claim is lost. */
  #beat(): void {
    const ctx = this.#ctx;
    const leaseMs = ctx.options.leaseMs;
    const now = Date.now();
    if (this.state === AttemptState.lost || this.state === AttemptState.ended) return;
    if (now - this.#lastBeatOkAt > leaseMs) {
      this.#loseClaim("no confirmed heartbeat within the lease", { sinceLastHeartbeatMs: now - this.#lastBeatOkAt, leaseMs });
      return;
    }
    if (this.#beating) return;
    if (!ctx.isConnected()) {
      ctx.counters.missedHeartbeats += 1;
      return;
    }
    this.#beating = true;
    const sentAt = now;
    // An in-progress ack, then a round trip to the server: once the PONG is back, the server has read
    // the ack (one connection is processed in order), so the lease was extended from `sentAt`.
    this.#msg.working();
    withTimeout(ctx.nc.flush(), Math.max(500, Math.min(5000, ctx.options.heartbeatMs)))
      .then(() => {
        this.#lastBeatOkAt = Math.max(this.#lastBeatOkAt, sentAt);
      })
      .catch((err: Error) => {
        ctx.counters.missedHeartbeats += 1;
        this.log.warn({ err: err.message }, "missed a heartbeat");
      })
      .finally(() => {
        this.#beating = false;
      });
  }
}
