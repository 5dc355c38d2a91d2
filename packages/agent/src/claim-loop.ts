import { isAbsolute, join, relative, resolve } from "node:path";
import type { Consumer, JetStreamClient, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type BadMessageCounter,
  type Control,
  decode,
  ensureWorkConsumer,
  type Logger,
  type MeshNames,
  NONCE_WINDOW_MS,
  OrderIdentitySchema,
  type RejectReason,
  SCHEMA_VERSION,
  StopReason,
  type TrialEvent,
  verifyOrder,
  type WorkOrder,
  WorkOrderSchema,
} from "@rung/protocol";
import type { ControlWatch } from "./control-watch.js";
import { EventQueue, publishEvent } from "./events.js";
import type { CompiledAgentOptions } from "./options.js";
import { forgetGroup, recordGroup } from "./orphans.js";
import type { ReplayLedger, SharedNonces } from "./replay-ledger.js";
import type { SlotHolder, SlotKind, Slots } from "./slots.js";
import { type StopRequest, type TrialResult, TrialRun } from "./trial-runner.js";

/**
 * THE CLAIM LOOP
 *
 * Work orders wait in the work stream, one pool per trial shape (`gpu1`, `gpu2`, …, `cpu1`, …), each
 * pool with ONE durable pull consumer that every agent shares. An agent with N GPUs serves gpu1…gpuN
 * (and cpu1…cpuM with M CPU slots). The loop, while the agent is claiming:
 *
 *   waiting ──(a slot is freed)──▶ pulling
 *   pulling: among the pools whose k slots are free together right now (no partial gangs), pick one
 *            that holds orders, the largest gang first (else the next in turn); ask for ONE message,
 *            waiting at most a second; none → pick again; no pool fits → waiting.
 *   received: decode, verify and take the k slots synchronously — nothing else can run between the
 *            pull and the taking, so an order is only ever held with its slots. An order that can
 *            never run here is terminated (`term`) with a `rejected` event, so it is not redelivered
 *            for ever; an order that arrives once claiming has stopped is handed back (`nak`, no delay).
 *
 * Verification (see protocol's order-signing.ts and replay-ledger.ts), in this order: the signature
 * against `--trust` (unsigned, untrusted-signer, bad-signature), expiry, replay (this agent's ledger,
 * then — once the slots are taken and before anything starts — the mesh's nonces bucket), the pool,
 * `--allow-command`, the workdir. A refusal on security grounds is logged at warn with `security` and
 * the claimed signer, and goes out as a `rejected` event that names both; the process never starts.
 * With `--insecure` only expiry and the local checks apply.
 *
 * Each claimed order then lives as an attempt (attempt number = the order's attempt + deliveries - 1,
 * so a redelivery after an agent died runs attempt 2):
 *
 *   claimed ─▶ started ─▶ (report)* ─▶ finished ─▶ ack | nak | nothing
 *
 *   - heartbeats: every third of the lease, an in-progress ack, confirmed by the server. If more than
 *     a lease passed since the last confirmed one (the agent was frozen, or cut off from NATS), the
 *     order has been handed to another agent: the local trial is killed at once (SIGKILL, no grace:
 *     the other copy may be running already), `finished stopped claim-lost`
 *     is published, and the order is neither acked nor nak'd — it is not ours any more;
 *   - a stop decision in the control bucket (read when the order arrives, watched afterwards, read again
 *     after a reconnect) stops the trial (SIGTERM, grace, SIGKILL): `finished stopped`, ack;
 *   - completion, or a crash of the trial: `finished completed|failed`, ack. Retrying a failure is the
 *     coordinator's decision (a new order with a higher attempt), not JetStream's;
 *   - drain with requeue: the trial is stopped, `finished stopped agent-shutdown`, nak without delay so
 *     another agent takes the order at once;
 *   - an exception in our own code: the order still ends — ack when `finished` went out, nak otherwise.
 *
 * Every path out of an attempt releases its slots and ends its order: "we MUST release the job".
 */

/** Refusals that say someone may be attacking the mesh, logged as such. */
const SECURITY_REASONS: ReadonlySet<RejectReason> = new Set<RejectReason>([
  "unsigned",
  "bad-signature",
  "untrusted-signer",
  "replayed",
  "command-not-allowed",
]);

export interface Pool {
  name: string;
  kind: SlotKind;
  k: number;
}

export interface ClaimLoopCounters {
  ordersClaimed: number;
  ordersRejected: number;
  ordersReturned: number;
  reports: number;
  malformedReportLines: number;
  droppedReports: number;
  missedHeartbeats: number;
  claimsLost: number;
}

export interface ClaimLoopOptions {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  names: MeshNames;
  options: CompiledAgentOptions;
  slots: Slots;
  control: ControlWatch;
  bad: BadMessageCounter;
  log: Logger;
  /** Directory for the per-attempt report sockets (short: Unix socket paths are limited to ~100 bytes). */
  socketDir: string;
  /** Called when an attempt begins or ends (idle tracking, advert refresh). */
  onActivity(): void;
  /** False while the connection is down: heartbeats cannot succeed then, so none is sent. */
  isConnected(): boolean;
  /** True once the connection is closed for good: publishes stop retrying. */
  isClosed(): boolean;
  /** Replay protection for signed orders; null with `--insecure`. */
  replay: { ledger: ReplayLedger; nonces: SharedNonces } | null;
}

interface Attempt {
  readonly key: string;
  readonly order: WorkOrder;
  readonly attempt: number;
  readonly msg: JsMsg;
  readonly pool: Pool;
  readonly ids: number[];
  readonly holder: SlotHolder;
  readonly events: EventQueue;
  readonly log: Logger;
  run: TrialRun | undefined;
  stop: StopRequest | null;
  requeue: boolean;
  claimLost: boolean;
  lastBeatOkAt: number;
  beating: boolean;
  heartbeat: NodeJS.Timeout | undefined;
  seq: number;
  malformed: number;
  done: Promise<void>;
}

/** What a stop decision says, as the reason of the trial's AbortController. */
export function stopRequestFrom(c: Control): StopRequest {
  if (c.reason === "scheduler-stop")
    return { reason: StopReason.schedulerStop, detail: c.rung === null ? "scheduler-stop" : `scheduler-stop at t=${c.rung}` };
  return { reason: StopReason.userStop, detail: c.by ? `user-stop by ${c.by}` : "user-stop" };
}

/** The pools an agent with these slots serves: every gang size it could ever run. */
export function poolsFor(gpus: number, cpuSlots: number): Pool[] {
  const pools: Pool[] = [];
  for (let k = 1; k <= gpus; k++) pools.push({ name: `gpu${k}`, kind: "gpu", k });
  for (let k = 1; k <= cpuSlots; k++) pools.push({ name: `cpu${k}`, kind: "cpu", k });
  return pools;
}

export class ClaimLoop {
  readonly counters: ClaimLoopCounters = {
    ordersClaimed: 0,
    ordersRejected: 0,
    ordersReturned: 0,
    reports: 0,
    malformedReportLines: 0,
    droppedReports: 0,
    missedHeartbeats: 0,
    claimsLost: 0,
  };
  readonly #o: ClaimLoopOptions;
  readonly #pools: Pool[];
  readonly #consumers = new Map<string, Consumer>();
  readonly #attempts = new Map<string, Attempt>();
  /** Rejections and other one-off publishes still in flight, so close() can wait for them. */
  readonly #sideTasks = new Set<Promise<unknown>>();
  readonly #stopClaiming = new AbortController();
  #loop: Promise<void> = Promise.resolve();
  #socketSeq = 0;
  #pullErrors = 0;

  constructor(options: ClaimLoopOptions) {
    this.#o = options;
    this.#pools = poolsFor(options.slots.total("gpu"), options.slots.total("cpu"));
  }

  get pools(): readonly Pool[] {
    return this.#pools;
  }

  get running(): number {
    return this.#attempts.size;
  }

  get claiming(): boolean {
    return !this.#stopClaiming.signal.aborted;
  }

  /** Creates (or finds) each pool's shared consumer; the agent's lease is the consumer's ack wait. */
  async prepare(): Promise<void> {
    const { jsm, names, options, js } = this.#o;
    for (const p of this.#pools) {
      const durable = await ensureWorkConsumer(jsm, names, p.name, {
        ackWaitMs: options.leaseMs,
        maxDeliver: options.maxDeliver,
      });
      this.#consumers.set(p.name, await js.consumers.get(names.streams.work, durable));
    }
  }

  start(): void {
    this.#loop = this.#run();
  }

  /** Stops pulling; resolves once the pull in progress (at most a second) has returned. */
  async stopClaiming(): Promise<void> {
    this.#stopClaiming.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const signal = this.#stopClaiming.signal;
    let turn = 0;
    while (!signal.aborted) {
      const fits = this.#pools.filter((p) => this.#o.slots.free(p.kind) >= p.k);
      if (fits.length === 0) {
        await this.#o.slots.freed(signal);
        continue;
      }
      let pool = fits[turn++ % fits.length] as Pool;
      let msg: JsMsg | null = null;
      try {
        pool = await this.#choose(fits, pool);
        msg = await this.#pull(pool);
        if (this.#pullErrors > 0) this.#o.log.info({ pool: pool.name }, "pulling work again");
        this.#pullErrors = 0;
      } catch (err) {
        this.#pullErrors += 1;
        if (this.#pullErrors === 1)
          this.#o.log.warn({ err: (err as Error).message, pool: pool.name }, "cannot pull work; retrying");
        await sleep(Math.min(5000, 500 * this.#pullErrors), signal);
        continue;
      }
      if (!msg) continue;
      try {
        this.#receive(msg, pool);
      } catch (err) {
        // Our own bug or a connection closing under us: the order must not be held regardless.
        this.#o.log.error({ err: (err as Error).message, pool: pool.name }, "could not take a pulled order; handing it back");
        safely(() => msg.nak());
      }
    }
  }

  /**
   * With several pools to serve, waiting a second on each empty one in turn would leave an order in
   * the last pool waiting for seconds. So ask each consumer how many orders it holds (one cheap request
   * each, in parallel) and pull where there is work, the largest gang first: small orders fill gaps,
   * a gang needs its GPUs free together and would starve behind them. No work anywhere: `fallback`.
   */
  async #choose(fits: Pool[], fallback: Pool): Promise<Pool> {
    if (fits.length === 1) return fallback;
    const pending = await Promise.all(
      fits.map(async (p) => {
        const c = this.#consumers.get(p.name);
        return c ? (await c.info(false)).num_pending : 0;
      }),
    );
    let best: Pool | undefined;
    fits.forEach((p, i) => {
      if ((pending[i] ?? 0) > 0 && (!best || p.k > best.k)) best = p;
    });
    return best ?? fallback;
  }

  async #pull(pool: Pool): Promise<JsMsg | null> {
    let consumer = this.#consumers.get(pool.name);
    if (!consumer || this.#pullErrors > 2) {
      // The consumer may have been deleted (or never made it): create it again.
      const { jsm, names, options, js } = this.#o;
      const durable = await ensureWorkConsumer(jsm, names, pool.name, {
        ackWaitMs: options.leaseMs,
        maxDeliver: options.maxDeliver,
      });
      consumer = await js.consumers.get(names.streams.work, durable);
      this.#consumers.set(pool.name, consumer);
    }
    return consumer.next({ expires: this.#o.options.pullExpiresMs });
  }

  /** Synchronous from pull to slots taken: see the comment at the top. */
  #receive(msg: JsMsg, pool: Pool): void {
    const { log } = this.#o;
    const r = decode(WorkOrderSchema, msg.data, "order");
    if (!r.ok) {
      this.#o.bad.record("orders", r.error);
      const id = decode(OrderIdentitySchema, msg.data, "order");
      this.#reject(msg, id.ok ? id.value : null, "malformed", r.error.message);
      return;
    }
    const order = r.value;
    if (this.#stopClaiming.signal.aborted) {
      // Pulled just as claiming stopped: hand it back at once rather than sit on it.
      msg.nak();
      this.counters.ordersReturned += 1;
      return;
    }
    const seq = msg.info.streamSequence;
    const problem = this.#verify(order, pool, seq);
    if (problem) {
      this.#reject(msg, order, problem.reason, problem.detail, order.signer ?? null);
      return;
    }
    const attempt = order.attempt + msg.info.deliveryCount - 1;
    if (this.#attempts.has(`${order.study}.${order.trial}.${attempt}`)) {
      this.#reject(
        msg,
        { ...order, attempt },
        "replayed",
        `attempt ${attempt} of this trial is already running on this agent`,
        order.signer ?? null,
      );
      return;
    }
    // On disk before anything starts, so a restarted agent still knows this nonce. Before the slots
    // too: if the write fails, nothing is held (a redelivery of this same message is no replay).
    this.#o.replay?.ledger.record(order.nonce, seq, order.expiresAt);
    const holder: SlotHolder = { study: order.study, trial: order.trial, attempt, busyShare: null };
    const ids = this.#o.slots.take(pool.kind, pool.k, holder);
    if (!ids) {
      msg.nak();
      this.counters.ordersReturned += 1;
      return;
    }
    this.counters.ordersClaimed += 1;
    const a: Attempt = {
      key: `${order.study}.${order.trial}.${attempt}`,
      order,
      attempt,
      msg,
      pool,
      ids,
      holder,
      log: log.child({ study: order.study, trial: order.trial, attempt }),
      events: new EventQueue({
        js: this.#o.js,
        subjects: this.#o.names.subjects,
        log,
        giveUp: this.#o.isClosed,
        onDroppedReport: () => {
          this.counters.droppedReports += 1;
        },
      }),
      run: undefined,
      stop: null,
      requeue: false,
      claimLost: false,
      lastBeatOkAt: Date.now(),
      beating: false,
      heartbeat: undefined,
      seq: 0,
      malformed: 0,
      done: Promise.resolve(),
    };
    this.#attempts.set(a.key, a);
    a.heartbeat = setInterval(() => this.#beat(a), this.#o.options.heartbeatMs);
    this.#o.onActivity();
    a.done = this.#admit(a, seq).then((admitted) => (admitted ? this.#runAttempt(a) : undefined));
  }

  /**
   * The mesh-wide replay check, the one asynchronous step before an attempt begins: the slots are
   * held meanwhile, nothing has started. A copy of an order another agent accepted is rejected; when
   * the bucket cannot be reached the order is handed back rather than run unchecked.
   */
  async #admit(a: Attempt, seq: number): Promise<boolean> {
    const replay = this.#o.replay;
    if (!replay) return true;
    let why: string | null = null;
    let failure: Error | undefined;
    for (let i = 0; i < 3; i++) {
      try {
        why = await replay.nonces.claim(a.order, seq);
        failure = undefined;
        break;
      } catch (err) {
        failure = err as Error;
        if (this.#o.isClosed()) break;
        await sleep(500 * (i + 1));
      }
    }
    if (!failure && why === null) return true;
    if (failure) {
      a.log.error(
        { err: failure.message, bucket: this.#o.names.nonces },
        "cannot record the order's nonce in the mesh; handing the order back instead of running it unchecked",
      );
      safely(() => a.msg.nak(5000));
      this.counters.ordersReturned += 1;
    } else {
      this.#reject(a.msg, a.order, "replayed", why as string, a.order.signer ?? null, a.attempt);
    }
    if (a.heartbeat) clearInterval(a.heartbeat);
    this.#attempts.delete(a.key);
    this.#o.slots.release(a.pool.kind, a.ids);
    this.#o.onActivity();
    return false;
  }

  /** Can this order run here at all? See "Verification" at the top. */
  #verify(order: WorkOrder, pool: Pool, seq: number): { reason: RejectReason; detail: string } | null {
    const o = this.#o.options;
    const now = Date.now();
    if (o.insecure) {
      if (order.expiresAt <= now)
        return { reason: "expired", detail: `the order expired at ${new Date(order.expiresAt).toISOString()}` };
    } else {
      const ledger = this.#o.replay?.ledger;
      const check = verifyOrder(order, { trusted: o.trust, now, replayed: (ord) => ledger?.check(ord.nonce, seq) ?? null });
      if (!check.ok) return check;
      if (order.expiresAt - now > NONCE_WINDOW_MS)
        return {
          reason: "expired",
          detail: `the order is valid until ${new Date(order.expiresAt).toISOString()}, beyond the ${NONCE_WINDOW_MS / 86_400_000}-day replay window; give orders a shorter life`,
        };
    }
    if (order.pool !== pool.name)
      return { reason: "malformed", detail: `an order for pool ${order.pool} arrived on pool ${pool.name}` };
    const gpus = order.resources.gpus;
    if (pool.kind === "gpu" ? gpus !== pool.k : gpus !== 0)
      return { reason: "malformed", detail: `an order for ${gpus} GPU(s) arrived on pool ${pool.name}` };
    if (o.allowCommand.length > 0) {
      const command = order.argv.join(" ");
      // A prefix matches whole arguments: "python train.py" allows "python train.py --lr 1", not "python train.pyc".
      if (!o.allowCommand.some((p) => command === p.trim() || command.startsWith(`${p.trim()} `)))
        return {
          reason: "command-not-allowed",
          detail: `${JSON.stringify(order.argv[0])} is not allowed by --allow-command on this agent`,
        };
    }
    const workdir = resolve(o.workdir, order.workdir);
    const rel = relative(o.workdir, workdir);
    if (rel.startsWith("..") || isAbsolute(rel))
      return {
        reason: "cannot-run",
        detail: `workdir ${JSON.stringify(order.workdir)} lies outside the agent's --workdir ${o.workdir}`,
      };
    return null;
  }

  #reject(
    msg: JsMsg,
    id: { study: string; trial: string; attempt?: number | null } | null,
    reason: RejectReason,
    detail: string,
    sender: string | null = null,
    attempt: number | null = id?.attempt ?? null,
  ): void {
    this.counters.ordersRejected += 1;
    // No reason text on the term: nats-server 2.9 does not recognise "+TERM <reason>" and would
    // redeliver the order after the lease. The reason goes out in the rejected event instead.
    safely(() => msg.term());
    const security = SECURITY_REASONS.has(reason);
    this.#o.log.warn(
      { study: id?.study, trial: id?.trial, reason, detail, ...(security ? { security: true, sender } : {}) },
      security ? "refused a work order on security grounds; it was not started" : "rejected a work order",
    );
    if (!id) return;
    const event: TrialEvent = {
      v: SCHEMA_VERSION,
      type: "rejected",
      study: id.study,
      trial: id.trial,
      ts: Date.now(),
      attempt,
      agent: this.#o.options.name,
      reason,
      detail,
      sender,
    };
    this.#track(publishEvent(this.#o.js, this.#o.names.subjects, event, 30_000, undefined, this.#o.isClosed));
  }

  #track(p: Promise<unknown>): void {
    this.#sideTasks.add(p);
    void p.finally(() => this.#sideTasks.delete(p));
  }

  #event(a: Attempt, type: TrialEvent["type"], fields: Record<string, unknown>): Promise<boolean> {
    const event = {
      v: SCHEMA_VERSION,
      type,
      study: a.order.study,
      trial: a.order.trial,
      ts: Date.now(),
      attempt: a.attempt,
      agent: this.#o.options.name,
      ...fields,
    } as TrialEvent;
    return a.events.push(event);
  }

  async #runAttempt(a: Attempt): Promise<void> {
    let finishedSent = false;
    try {
      const decided = await this.#o.control.read(a.order.study, a.order.trial);
      if (decided && decided.study === a.order.study && decided.trial === a.order.trial) a.stop ??= stopRequestFrom(decided);
      void this.#event(a, "claimed", { gpus: a.pool.kind === "gpu" ? a.ids : [] });
      a.log.info({ gpus: a.ids, pool: a.pool.name }, "claimed a trial");
      const result = await this.#execute(a);
      await this.#event(a, "finished", {
        status: result.status,
        exitCode: result.exitCode,
        signal: result.signal,
        reason: result.reason,
        logTail: result.logTail,
      });
      finishedSent = true;
      a.log.info({ status: result.status, reason: result.reason }, "trial finished");
      await this.#endOrder(a, finishedSent);
    } catch (err) {
      a.log.error({ err: (err as Error).message, stack: (err as Error).stack }, "agent error while running a trial");
      a.run?.killNow({ reason: StopReason.agentShutdown, detail: "agent error" });
      if (!finishedSent && !a.claimLost) {
        finishedSent = await this.#event(a, "finished", {
          status: "failed",
          exitCode: null,
          signal: null,
          reason: `agent error: ${(err as Error).message}`,
          logTail: [],
        });
      }
      await this.#endOrder(a, finishedSent).catch(() => {});
    } finally {
      if (a.heartbeat) clearInterval(a.heartbeat);
      this.#attempts.delete(a.key);
      this.#o.slots.release(a.pool.kind, a.ids);
      this.#o.onActivity();
    }
  }

  async #execute(a: Attempt): Promise<TrialResult> {
    const o = this.#o.options;
    const { study, trial } = a.order;
    const subjects = this.#o.names.subjects;
    const groups = join(o.stateDir, "groups");
    this.#socketSeq += 1;
    const run = new TrialRun({
      order: a.order,
      attempt: a.attempt,
      agent: o.name,
      gpus: a.pool.kind === "gpu" ? a.ids : [],
      workdir: resolve(o.workdir, a.order.workdir),
      checkpointDir: join(o.stateDir, "checkpoints", study, trial),
      logFile: join(o.stateDir, "logs", study, trial, `${a.attempt}.log`),
      reportPath: join(this.#o.socketDir, `${this.#socketSeq}.sock`),
      logsSubject: subjects.logs(study, trial, a.attempt),
      js: this.#o.js,
      log: a.log,
      stopGraceMs: o.stopGraceMs,
      isClosed: this.#o.isClosed,
      onStarted: (pid) => {
        a.log.info({ pid }, "trial started");
        recordGroup(groups, { pgid: pid, study, trial, attempt: a.attempt });
        void this.#event(a, "started", { pid, gpus: a.pool.kind === "gpu" ? a.ids : [] });
      },
      onReport: (metrics) => {
        this.counters.reports += 1;
        const wait = metrics.data_wait_s;
        const compute = metrics.compute_s;
        if (wait !== undefined && compute !== undefined && Number.isFinite(wait + compute) && wait + compute > 0)
          a.holder.busyShare = Math.min(1, Math.max(0, compute / (wait + compute)));
        void this.#event(a, "report", { seq: a.seq++, metrics });
      },
      onMalformedReport: (why, line) => {
        this.counters.malformedReportLines += 1;
        a.malformed += 1;
        if (a.malformed === 1)
          a.log.warn(
            { why, line },
            "the trial wrote a report line that is not a flat JSON object of numbers; skipped (further ones are counted)",
          );
      },
    });
    a.run = run;
    if (a.stop) run.stop(a.stop);
    // The group is gone once the result is in (the runner kills what the trial left): forget it.
    return run.result.finally(() => {
      if (run.pid !== undefined) forgetGroup(groups, run.pid);
    });
  }

  /** Ends the order the one way that fits how the attempt ended. */
  async #endOrder(a: Attempt, finishedSent: boolean): Promise<void> {
    if (a.claimLost) return; // the order is another agent's now; touching it would disturb theirs
    if (a.requeue || !finishedSent) {
      safely(() => a.msg.nak());
      this.counters.ordersReturned += 1;
      return;
    }
    for (let i = 0; ; i++) {
      try {
        await a.msg.ackAck({ timeout: 5000 });
        return;
      } catch (err) {
        if (i >= 2 || Date.now() - a.lastBeatOkAt > this.#o.options.leaseMs) {
          a.log.warn({ err: (err as Error).message }, "cannot ack the finished order; it may be delivered again");
          return;
        }
        await sleep(500);
      }
    }
  }

  /** One heartbeat: an in-progress ack the server confirms, or the discovery that the claim is lost. */
  #beat(a: Attempt): void {
    const leaseMs = this.#o.options.leaseMs;
    const now = Date.now();
    if (a.claimLost) return;
    if (now - a.lastBeatOkAt > leaseMs) {
      a.claimLost = true;
      this.counters.claimsLost += 1;
      a.log.warn(
        { sinceLastHeartbeatMs: now - a.lastBeatOkAt, leaseMs },
        "claim lost: no confirmed heartbeat within the lease; killing the trial",
      );
      // Another agent may be running this trial already: no grace period (a trainer may spend many
      // seconds saving a checkpoint on SIGTERM), or two copies would run at once for that long.
      const req: StopRequest = { reason: StopReason.claimLost, detail: "claim-lost" };
      a.stop = req;
      a.run?.killNow(req);
      return;
    }
    if (a.beating) return;
    if (!this.#o.isConnected()) {
      this.counters.missedHeartbeats += 1;
      return;
    }
    a.beating = true;
    const sentAt = now;
    // An in-progress ack, then a round trip to the server: once the PONG is back, the server has read
    // the ack (one connection is processed in order), so the lease was extended from `sentAt`.
    a.msg.working();
    withTimeout(this.#o.nc.flush(), Math.max(500, Math.min(5000, this.#o.options.heartbeatMs)))
      .then(() => {
        a.lastBeatOkAt = Math.max(a.lastBeatOkAt, sentAt);
      })
      .catch((err: Error) => {
        this.counters.missedHeartbeats += 1;
        a.log.warn({ err: err.message }, "missed a heartbeat");
      })
      .finally(() => {
        a.beating = false;
      });
  }

  /** A stop decision from the control bucket: stops every local attempt of that trial. */
  onControl(c: Control): void {
    for (const a of this.#attempts.values()) {
      if (a.order.study !== c.study || a.order.trial !== c.trial || a.stop) continue;
      a.stop = stopRequestFrom(c);
      a.log.info({ why: a.stop.detail }, "stop decision received");
      a.run?.stop(a.stop);
    }
  }

  /** After a reconnect: decisions made while we were away are in the bucket; read them. */
  async recheckControls(): Promise<void> {
    for (const a of [...this.#attempts.values()]) {
      const c = await this.#o.control.read(a.order.study, a.order.trial);
      if (c) this.onControl(c);
    }
  }

  /** Drain with requeue: stop every running trial and hand its order back. */
  requeueAll(): void {
    for (const a of this.#attempts.values()) {
      if (a.claimLost) continue;
      a.requeue = true;
      const req: StopRequest = { reason: StopReason.agentShutdown, detail: "agent-shutdown" };
      a.stop ??= req;
      a.run?.stop(req);
    }
  }

  /** Forced shutdown: kill every trial now and hand back the orders, best effort (the process is exiting). */
  killAll(): void {
    for (const a of this.#attempts.values()) {
      a.requeue = true;
      a.run?.killNow({ reason: StopReason.agentShutdown, detail: "agent-shutdown (forced)" });
      if (!a.claimLost) safely(() => a.msg.nak());
    }
  }

  /** Resolves when no attempt runs any more and every side publish has settled. */
  async settled(): Promise<void> {
    while (this.#attempts.size > 0 || this.#sideTasks.size > 0) {
      await Promise.allSettled([...[...this.#attempts.values()].map((a) => a.done), ...this.#sideTasks]);
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer from NATS within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err) => {
        clearTimeout(t);
        reject(err);
      },
    );
  });
}

/** Acks and naks are publishes; on a connection closing under us they throw, and there is nothing left to do. */
function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // the connection is gone; the order comes back by itself after the lease
  }
}
