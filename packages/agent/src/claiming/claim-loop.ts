import { join } from "node:path";
import type { Consumer, ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  agentIdTag,
  type BadMessageCounter,
  type ClaimNotice,
  type Control,
  claimProof,
  classNeeds,
  decode,
  durationText,
  ensureWorkConsumer,
  isAgentSpecificRejection,
  isConsumerNotFound,
  type Logger,
  type MeshNames,
  OrderIdentitySchema,
  type RejectReason,
  sharePercent,
  TrialEvents,
  type WorkOrder,
  WorkOrderSchema,
} from "@rung/protocol";
import type { CheckpointStore } from "../checkpoints.js";
import type { ControlWatch } from "../control-watch.js";
import { type EventPublisher, publishEvent } from "../events.js";
import type { CompiledAgentOptions } from "../options.js";
import type { SlotHolder, Slots } from "../slots.js";
import { whyCannotRun } from "../trial-runner.js";
import { admitOrder, attemptNumber, type Rejection, SECURITY_REASONS } from "./admission.js";
import { Attempt, type AttemptContext } from "./attempt.js";
import { type ClaimLoopCounters, newClaimLoopCounters } from "./counters.js";
import { chooseGpu, type GpuProcess, type GpuRoom, gpuRooms, type Placement } from "./placement.js";
import { idlePool, type Pool, pickPool, poolsFor, poolsThatFit } from "./pools.js";
import { jittered, type RefusalEntry, Refusals, refusalDelayMs, refusalPauseMs } from "./refusals.js";
import { type MessageId, messageIdOf, type ReplayLedger, type SharedNonces } from "./replay-ledger.js";
import { sleep, withTimeout } from "./timers.js";
import { safely } from "./work-message.js";

/** How long a pool whose order did not fit memory waits here for room, at most (see #withMemoryRoom). */
const MEMORY_GATE_MS = 30_000;

/**
 * Ends a pull given up on: its subscription is drained, not cut — the server stops delivering to it
 * once it has the unsubscribe, and an order it sent before that still reaches the pull's iterator
 * (and #late) instead of being dropped by the client and left unacknowledged until its lease ran out.
 */
function endPull(iter: ConsumerMessages): void {
  const sub = (iter as unknown as { sub?: Subscription }).sub;
  if (sub && !sub.isClosed()) sub.drain().catch(() => iter.stop());
  else iter.stop();
}

/** Resolves when the signal aborts (at once if it has). */
function aborted(signal: AbortSignal): Promise<void> {
  return signal.aborted ? Promise.resolve() : new Promise((r) => signal.addEventListener("abort", () => r(), { once: true }));
}

/** What a pull given up on returns (#pull). */
const GAVE_UP = "gave up" as const;

/** Pools whose orders placement.ts places: shares of a GPU, and a single whole GPU. */
function placed(pool: Pool): boolean {
  return pool.kind === "gpu" && pool.k === 1;
}

/**
 * THE CLAIM LOOP
 *
 * Work orders wait in the work stream, one pool per trial shape (`gpu1`, `gpu2`, …, `cpu1`, …), each
 * pool with ONE durable pull consumer that every agent shares. An agent with N GPUs serves gpu1…gpuN
 * (and cpu1…cpuM with M CPU slots). The loop, while the agent is claiming:
 *
 *   waiting ──(a slot is freed)──▶ pulling
 *   pulling: among the pools whose k slots are free together right now (no partial gangs), pick one
 *            that holds orders, the largest gang first (else the next in turn among the pools in
 *            use: orders of it run somewhere, or this agent's last order came from it); ask for ONE
 *            message, waiting at most a second; none → pick again; no pool fits → waiting.
 *   received: decode, admit and take the k slots synchronously — nothing else can run between the
 *            pull and the taking, so an order is only ever held with its slots. An order that no agent
 *            could run (malformed, bad signature, expired, replayed, command not allowed) is terminated
 *            (`term`) with a `rejected` event, so it is not redelivered for ever. An order that THIS
 *            agent cannot run but another may (not signed by a key it trusts, a workdir or program it
 *            lacks) is refused: handed back after a delay (`nak`), said once in an event, the log and
 *            the advert — see refusals.ts. An order that arrives once claiming has stopped is handed
 *            back (`nak`, no delay).
 *   broken:  a pull (or the look at the queues before it) failed: before pulling again, the work
 *            stream and every pool's consumer are created again where missing (mesh-repair.ts), each
 *            named in one line; what cannot be re-created is said in one sentence, then retried.
 *   claimed: the order is now an Attempt (attempt.ts, whose header is the state machine of a claimed
 *            order); the mesh-wide replay check runs, then the attempt runs on its own, and the loop
 *            pulls again as soon as slots are free.
 *
 * Admission (admission.ts, a pure function) decides whether an order can run here: signature against
 * `--trust` (unsigned, untrusted-signer, bad-signature), expiry, replay (this agent's ledger, then —
 * once the slots are taken and before anything starts — the mesh's nonces bucket; a message is known by
 * its stream sequence and stored time, see replay-ledger.ts), the pool, `--allow-command`, the workdir
 * and the program (which must exist here: `whyCannotRun`). A refusal on security grounds is logged at
 * warn with `security` and the claimed signer, and goes out as a `rejected` event that names both; the
 * process never starts. With `--insecure` only expiry and the local checks apply.
 *
 * A share of a GPU (`gpu1of<d>` pools) and a single whole GPU are placed by placement.ts: just before
 * a share pull the loop reads the GPU processes now (`nvidia-smi --query-compute-apps`; before a
 * `gpu1` pull only while its orders declare memory), and on receipt it picks the GPU whose share and
 * memory fit (best fit). An order whose memory fits no GPU
 * here now is handed back (`nak`, 1 s) without an event, and its pool is not pulled here again until
 * a GPU with the share free has that much memory free (at most 30 s), so waiting for room spends few
 * deliveries; on its last delivery it is ended with a `no-room` event instead, and the coordinator
 * queues a fresh order. One that declares more memory than any GPU here has is refused (`cannot-run`).
 *
 * Besides pulling, the loop only dispatches: stop decisions, drain with requeue and forced shutdown go
 * to every attempt it holds; an attempt gives its slots back here when its trial's processes are gone
 * (`onExited`), or else when it ends.
 */

export interface ClaimLoopOptions {
  nc: NatsConnection;
  js: JetStreamClient;
  /** Trial events, acknowledged on one subscription (protocol's AckedPublisher). */
  events: EventPublisher;
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
  /** The mesh's checkpoint bucket; null when it could not be opened. */
  checkpoints: CheckpointStore | null;
  /** Creates again the streams and buckets that are missing (mesh-repair.ts); rejects when it cannot. */
  repairMesh(why: string): Promise<void>;
  /** Called after a first refusal of an order (the advert lists it). */
  onRefusal(): void;
  /**
   * What placement reads: the GPUs (index, UUID, memory), their processes now, and a process's
   * group. Absent: GPUs are placed by share only.
   */
  placement?: {
    gpus: readonly { index: number; uuid: string; memoryTotalMiB: number }[];
    processes(): Promise<readonly GpuProcess[] | null>;
    groupOf(pid: number): number | null;
  };
  /** The CUDA_VISIBLE_DEVICES entry of a GPU (its index, or a MIG instance's UUID). */
  visibleDevice?(index: number): string;
}

export class ClaimLoop {
  readonly counters: ClaimLoopCounters = newClaimLoopCounters();
  readonly #o: ClaimLoopOptions;
  readonly #pools: Pool[];
  readonly #consumers = new Map<string, Consumer>();
  readonly #attempts = new Map<string, { attempt: Attempt; done: Promise<void> }>();
  readonly #attemptContext: AttemptContext;
  /** Rejections and other one-off publishes still in flight, so close() can wait for them. */
  readonly #sideTasks = new Set<Promise<unknown>>();
  readonly #stopClaiming = new AbortController();
  readonly #refusals = new Refusals();
  /** Pools this agent leaves alone until then (ms): it keeps getting an order it refused. */
  readonly #pausedUntil = new Map<string, number>();
  #loop: Promise<void> = Promise.resolve();
  #socketSeq = 0;
  #pullErrors = 0;
  /** Attempts whose slots are free again (each released once). */
  readonly #released = new WeakSet<Attempt>();
  /** A pull failed: check (and create again) the work stream and the consumers before the next. */
  #broken = false;
  /** The mesh keeps a longer claim lease than ours: said once. */
  #saidMeshLease = false;
  /** The pool this agent's last order came from: where to wait when no pool holds work (#choose). */
  #lastPool: string | null = null;

  constructor(options: ClaimLoopOptions) {
    this.#o = options;
    this.#pools = poolsFor(options.slots.maxGang, options.slots.total("cpu"), { shares: options.slots.total("gpu") > 0 });
    this.#attemptContext = {
      nc: options.nc,
      js: options.js,
      events: options.events,
      subjects: options.names.subjects,
      options: options.options,
      control: options.control,
      checkpoints: options.checkpoints,
      counters: this.counters,
      log: options.log,
      isConnected: options.isConnected,
      isClosed: options.isClosed,
      ...(options.visibleDevice ? { visibleDevice: options.visibleDevice } : {}),
      nextReportPath: () => {
        this.#socketSeq += 1;
        return join(options.socketDir, `${this.#socketSeq}.sock`);
      },
      // No advert refresh here (one follows when the attempt ends): refreshing at every trial's exit
      // slowed dispatch tenfold in bench 1 while refreshes were dropped during a put in flight, and
      // still slows it now that they are not (p50 8–11 → 13–22 ms at 8 slots: more KV writes in each
      // wave of ends; docs/benchmarks.md, "Dispatch, a fourth look").
      onExited: (a) => this.#releaseSlots(a),
    };
  }

  get pools(): readonly Pool[] {
    return this.#pools;
  }

  /**
   * Trials whose process is running now: not the attempts still being admitted, nor those publishing
   * `finished` or storing a snapshot after their trial exited (their slots may be free already).
   */
  get running(): number {
    let n = 0;
    for (const { attempt } of this.#attempts.values()) if (attempt.trialRunning) n += 1;
    return n;
  }

  /** Attempts in hand: admitted, running, or finishing after their trial exited. */
  get attempts(): number {
    return this.#attempts.size;
  }

  get claiming(): boolean {
    return !this.#stopClaiming.signal.aborted;
  }

  /** The last few orders refused here for a reason of this agent's own, for the advert. */
  get refusals(): readonly RefusalEntry[] {
    return this.#refusals.recent;
  }

  /**
   * Creates (or finds) each pool's shared consumer; the agent's lease is the consumer's ack wait, unless
   * another agent asked for a longer one (the mesh keeps the longest: ensureWorkConsumer).
   */
  async prepare(): Promise<void> {
    for (const p of this.#pools) await this.#ensureConsumer(p, false);
  }

  /** Says once that the mesh keeps a longer claim lease than this agent's `--lease`. */
  #noteMeshLease(pool: string, meshLeaseMs: number): void {
    const own = this.#o.options.leaseMs;
    if (meshLeaseMs <= own || this.#saidMeshLease) return;
    this.#saidMeshLease = true;
    this.#o.log.warn(
      { pool, leaseMs: own, meshLeaseMs },
      `this agent's --lease ${durationText(own)} is shorter than the ${durationText(meshLeaseMs)} claim lease the mesh keeps for pool ${pool}: ` +
        "an agent started with the longer one may still be running, and its claims must hold between its heartbeats, so the mesh keeps it " +
        `until a running study's coordinator sees no agent needs it; meanwhile an order this agent loses reaches another agent after ${durationText(meshLeaseMs)}. ` +
        "Give every agent the same --lease",
    );
  }

  async #ensureConsumer(p: Pool, check: boolean): Promise<void> {
    const { jsm, names, options, js } = this.#o;
    const durable = names.workConsumer(p.name);
    if (check) {
      try {
        await jsm.consumers.info(names.streams.work, durable);
      } catch (err) {
        if (!isConsumerNotFound(err)) throw err;
        this.#o.log.warn(
          { pool: p.name, consumer: durable },
          `the work consumer ${durable} of pool ${p.name} is missing; creating it again`,
        );
      }
    }
    const kept = await ensureWorkConsumer(jsm, names, p.name, { ackWaitMs: options.leaseMs, maxDeliver: options.maxDeliver });
    this.#noteMeshLease(p.name, kept.ackWaitMs);
    this.#consumers.set(p.name, await js.consumers.get(names.streams.work, durable));
  }

  /**
   * After a failed pull: the work stream (and any other stream or bucket) and every pool's consumer,
   * created again where missing. Throws when they cannot be (mesh-repair.ts has said why).
   */
  async #repair(): Promise<void> {
    await this.#o.repairMesh("pulling work failed");
    for (const p of this.#pools) await this.#ensureConsumer(p, true);
    this.#broken = false;
  }

  start(): void {
    this.#loop = this.#run();
  }

  /** Stops pulling (the pull in progress is given up: what it brings later goes back to the queue). */
  async stopClaiming(): Promise<void> {
    this.#stopClaiming.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const signal = this.#stopClaiming.signal;
    let turn = 0;
    while (!signal.aborted) {
      const fits = this.#fitting(this.#pools);
      if (fits.length === 0) {
        await this.#o.slots.freed(signal);
        continue;
      }
      const now = Date.now();
      const unpaused = fits.filter((p) => (this.#pausedUntil.get(p.name) ?? 0) <= now);
      const open = await this.#withMemoryRoom(unpaused);
      if (open.length === 0 && unpaused.length > 0) {
        // Every pool with work that fits by share waits for memory: look again in a second.
        await sleep(1000, signal);
        continue;
      }
      if (open.length === 0) {
        const until = Math.min(...fits.map((p) => this.#pausedUntil.get(p.name) ?? now));
        await sleep(Math.max(50, Math.min(1000, until - now)), signal);
        continue;
      }
      const round = turn++;
      let pool = open[round % open.length] as Pool;
      let msg: JsMsg | null = null;
      try {
        if (this.#broken) await this.#repair();
        const control = this.#o.control;
        const wakes = control.wakes;
        const chosen = await this.#choose(open, round);
        pool = chosen.pool;
        const names = new Set(open.map((p) => p.name));
        if (chosen.idle && control.watchingWork) {
          // No work in any pool this agent could take now, and none running in the mesh: wait for a
          // coordinator's wake of one of them (or a second) rather than a pull parked on one in turn.
          await control.waitForWork(wakes, this.#o.options.pullExpiresMs, signal, (p) => names.has(p));
          continue;
        }
        // Placed by the memory the GPUs' processes hold now: read just before a share pull. A whole GPU
        // needs it only for an order that declares memory (an out-of-memory retry, say), which is rare:
        // read before a `gpu1` pull only while the last order from it declared some, so plain whole-GPU
        // dispatch waits on no nvidia-smi (#receive hands back one that finds the reading stale).
        if (pool.shareClass !== undefined) await this.#readProcesses(250);
        else if (placed(pool) && this.#wholeWithMemory) await this.#readProcesses(2000);
        // An order that reached a pull given up on (#late) may have taken the slots meanwhile.
        if (!this.#fits(pool)) continue;
        // A pull waits up to its expiry. It is given up when claiming stops, and — when it waits on a
        // pool only because orders of it run in the mesh (nothing pending there) — when a coordinator
        // wakes another pool this agent could take now: a new study's first orders need not wait out
        // a pull parked for the last one's.
        // (`until` ends with the pull or with claiming; its listener on the loop's signal is removed.)
        const until = new AbortController();
        const stop = () => until.abort();
        if (signal.aborted) until.abort();
        else signal.addEventListener("abort", stop, { once: true });
        const pulledFrom = pool.name;
        const giveUp = chosen.parked
          ? control.waitForWork(wakes, Number.POSITIVE_INFINITY, until.signal, (p) => p !== pulledFrom && names.has(p))
          : aborted(until.signal);
        try {
          msg = await this.#pull(pool, giveUp);
        } finally {
          signal.removeEventListener("abort", stop);
          until.abort();
        }
        if (this.#pullErrors > 0) this.#o.log.info({ pool: pool.name }, "pulling work again");
        this.#pullErrors = 0;
      } catch (err) {
        this.#pullErrors += 1;
        // Whatever failed — a consumer or the stream deleted, the server away — the next round checks
        // the stream and the consumers first and creates again what is missing.
        this.#broken = true;
        if (this.#pullErrors === 1)
          this.#o.log.warn(
            { err: (err as Error).message, pool: pool.name },
            "cannot pull work; checking the work stream and its consumers, then retrying",
          );
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
   * the last pool waiting for seconds. So ask each consumer how many orders it holds and how many run
   * (one cheap request each, in parallel) and let `pickPool` choose. No work anywhere: wait on a pool
   * in use (`idlePool`), where a study's next order will go; none in use either: `idle`, and the loop
   * waits for a work wake instead (control-watch.ts).
   */
  async #choose(fits: Pool[], turn: number): Promise<{ pool: Pool; idle: boolean; parked: boolean }> {
    if (fits.length === 1) return { pool: fits[0] as Pool, idle: false, parked: false };
    const infos = await Promise.all(
      fits.map(async (p) => {
        const c = this.#consumers.get(p.name);
        return c ? await c.info(false) : null;
      }),
    );
    const pending = infos.map((i) => i?.num_pending ?? 0);
    const inUse = infos.map((i, k) => (i?.num_ack_pending ?? 0) > 0 || fits[k]?.name === this.#lastPool);
    const pool = pickPool(fits, pending, idlePool(fits, inUse, turn));
    // Idle: nothing waits and nothing runs in any of these pools mesh-wide (this agent's own last pool
    // aside: with wakes, the next study's first orders need not come there). Parked: nothing waits in
    // the pool picked, a pool in use.
    const running = infos.some((i) => (i?.num_ack_pending ?? 0) > 0);
    const waiting = pending.some((n) => n > 0);
    return { pool, idle: !waiting && !running, parked: !waiting };
  }

  /** One order from the pool, or null: none came within the pull's expiry, or `giveUp` came first. */
  async #pull(pool: Pool, giveUp: Promise<void>): Promise<JsMsg | null> {
    if (!this.#consumers.has(pool.name)) await this.#ensureConsumer(pool, true);
    const consumer = this.#consumers.get(pool.name) as Consumer;
    const expires = this.#o.options.pullExpiresMs;
    // One order at most, waiting up to the expiry. A pull given up on ends its subscription: the server
    // skips a waiting request nobody listens to, so later orders go to other pulls, not to this one.
    const iter = await consumer.fetch({ max_messages: 1, expires });
    const first = (async () => {
      for await (const m of iter) return m;
      return null;
    })();
    let got: JsMsg | null | typeof GAVE_UP;
    try {
      // A pull that never settles (its expiry lost with a reply under load) would stop this agent taking
      // work for good while it sits idle: give up on it after its expiry plus a margin, as a failed pull.
      got = await Promise.race([withTimeout(first, expires + 5000), giveUp.then(() => GAVE_UP)]);
    } catch (err) {
      endPull(iter);
      this.#late(first, pool);
      throw err;
    }
    if (got !== GAVE_UP) return got;
    endPull(iter);
    this.#late(first, pool);
    return null;
  }

  /**
   * An order that reached a pull just as it was given up on: taken after all when its pool still fits
   * here and claiming goes on, else handed back — on its last delivery ended with a `no-room` event
   * instead (a nak would leave it in the stream for ever), and the coordinator queues a fresh order.
   */
  #late(first: Promise<JsMsg | null>, pool: Pool): void {
    void first.then(
      (m) => {
        if (!m) return;
        if (this.claiming && this.#fits(pool)) {
          try {
            this.#receive(m, pool);
          } catch {
            safely(() => m.nak());
          }
          return;
        }
        const r = decode(WorkOrderSchema, m.data, "order");
        const order = r.ok ? r.value : null;
        const attempt = order ? attemptNumber(order, m.info.deliveryCount) : null;
        this.#handBack(m, pool, order, attempt, "it reached a pull this agent had just given up on");
      },
      () => {},
    );
  }

  /** The pools whose orders fit the slots free now (poolsThatFit). */
  #fitting(pools: readonly Pool[]): Pool[] {
    return poolsThatFit(
      pools,
      (kind, k) => this.#o.slots.free(kind, k),
      () => this.#o.slots.maxFreeShare(),
    );
  }

  #fits(pool: Pool): boolean {
    return this.#fitting([pool]).length > 0;
  }

  /**
   * An order this agent took but cannot start now: back to the queue in a second — or, on its last
   * delivery (a nak would leave it in the stream for ever), ended with a `no-room` event, and the
   * coordinator queues a fresh order.
   */
  #handBack(msg: JsMsg, pool: Pool, order: WorkOrder | null, attempt: number | null, why: string): void {
    const deliveries = msg.info.deliveryCount;
    if (deliveries < this.#o.options.maxDeliver) {
      safely(() => msg.nak(1000));
      this.counters.ordersReturned += 1;
      return;
    }
    const detail = `${why}, on its last delivery (${deliveries} of at most ${this.#o.options.maxDeliver}), and pool ${pool.name} no longer fits here`;
    this.#reject(() => safely(() => msg.term()), order, "no-room", detail, order?.signer ?? null, attempt, false);
  }

  /** Synchronous from pull to slots taken: see the comment at the top. */
  #receive(msg: JsMsg, pool: Pool): void {
    const r = decode(WorkOrderSchema, msg.data, "order");
    if (!r.ok) {
      this.#o.bad.record("orders", r.error);
      const id = decode(OrderIdentitySchema, msg.data, "order");
      this.#reject(() => safely(() => msg.term()), id.ok ? id.value : null, "malformed", r.error.message);
      return;
    }
    const order = r.value;
    if (this.#stopClaiming.signal.aborted) {
      // Pulled just as claiming stopped: hand it back at once rather than sit on it.
      msg.nak();
      this.counters.ordersReturned += 1;
      return;
    }
    const id = messageIdOf(msg);
    const verdict = admitOrder({
      order,
      pool,
      deliveryCount: msg.info.deliveryCount,
      policy: this.#o.options,
      now: Date.now(),
      replayed: this.#o.replay?.ledger.check(order.nonce, id) ?? null,
      isRunning: (key) => this.#attempts.has(key),
      // The trial's PATH is the order's own when it sets one, else this agent's (trialEnv).
      probe: (workdir, program, path) => whyCannotRun(workdir, program, path ?? process.env.PATH),
    });
    if (!verdict.admit) {
      if (isAgentSpecificRejection(verdict.reason)) this.#refuse(msg, pool, order, verdict);
      else
        this.#reject(
          () => safely(() => msg.term()),
          order,
          verdict.reason,
          verdict.detail,
          order.signer ?? null,
          verdict.attempt,
        );
      return;
    }
    const attempt = verdict.attempt;
    // On disk before anything starts, so a restarted agent still knows this nonce. Before the slots
    // too: if the write fails, nothing is held (a redelivery of this same message is no replay).
    this.#o.replay?.ledger.record(order.nonce, id, order.expiresAt);
    const holder: SlotHolder = {
      study: order.study,
      trial: order.trial,
      attempt,
      busyShare: null,
      share: sharePercent(order.resources.gpus),
      memoryMiB: order.resources.gpuMemoryMiB ?? null,
      pid: null,
    };
    let prefer: number | undefined;
    if (pool.shareClass === undefined && placed(pool)) {
      this.#wholeWithMemory = holder.memoryMiB !== null;
      if (this.#wholeWithMemory && this.#o.placement && Date.now() - this.#processesAt > 2000) {
        // Its memory is checked against what the GPUs' processes use now, and the last reading is old:
        // back to the queue at once; the gate reads them again before this pool is pulled next.
        this.#memoryGate.set(pool.name, { mib: holder.memoryMiB ?? 0, until: Date.now() + MEMORY_GATE_MS });
        if (msg.info.deliveryCount < this.#o.options.maxDeliver) {
          safely(() => msg.nak());
          this.counters.ordersReturned += 1;
          return;
        }
      }
    }
    if (placed(pool)) {
      const where = this.#place(holder);
      if (!where.ok) {
        const want = holder.memoryMiB ?? 0;
        const largest = Math.max(0, ...(this.#o.placement?.gpus ?? []).map((g) => g.memoryTotalMiB));
        if (largest > 0 && want > largest) {
          // It can never fit here: refused as this agent's own (an agent with bigger GPUs may take it).
          const detail = `it declares gpu_memory ${want} MiB and the largest GPU here has ${largest} MiB`;
          this.#refuse(msg, pool, order, { reason: "cannot-run", detail, attempt });
          return;
        }
        // Not now: back to the queue, and this pool is not pulled here until a GPU with the share free
        // also has that much memory free (#withMemoryRoom), so waiting spends few deliveries — but each
        // hand-back spends one. On its last one a nak would leave the order in the stream for ever,
        // never delivered: end it and say so (`no-room`), and the coordinator queues a fresh order.
        this.#memoryGate.set(pool.name, { mib: want, until: Date.now() + MEMORY_GATE_MS });
        const deliveries = msg.info.deliveryCount;
        if (deliveries >= this.#o.options.maxDeliver) {
          const detail = `${where.why}; it waited for GPU memory through its last delivery (${deliveries} of at most ${this.#o.options.maxDeliver}), so it is not handed back`;
          this.#reject(() => safely(() => msg.term()), order, "no-room", detail, order.signer ?? null, attempt, false);
          return;
        }
        safely(() => msg.nak(1000));
        this.counters.ordersReturned += 1;
        this.#o.log.info({ study: order.study, trial: order.trial, pool: pool.name }, `handed an order back: ${where.why}`);
        return;
      }
      this.#memoryGate.delete(pool.name);
      prefer = where.index;
    }
    const ids =
      pool.shareClass !== undefined && prefer !== undefined
        ? this.#o.slots.takeShare(prefer, holder)
        : this.#o.slots.take(pool.kind, pool.k, holder, prefer);
    if (!ids) {
      // poolsThatFit said the slots were free: should not happen, but a nak at once would bring the
      // order straight back here in a tight loop.
      this.#handBack(msg, pool, order, attempt, "its slots were taken just before it came");
      return;
    }
    this.counters.ordersClaimed += 1;
    this.#lastPool = pool.name;
    const a = new Attempt(this.#attemptContext, { order, number: attempt, msg, pool, ids, holder });
    const entry = { attempt: a, done: Promise.resolve() };
    this.#attempts.set(a.key, entry);
    this.#o.onActivity();
    entry.done = this.#admitInMesh(a, id).then((admitted) => (admitted ? this.#runAttempt(a) : undefined));
  }

  /** The GPU processes read last (placement.ts), and when; null before or when they cannot be read. */
  #processes: readonly GpuProcess[] | null = null;
  #processesAt = 0;
  /** When slots were last released (a process reading older than that is stale). */
  #releasedAt = 0;
  /** The last order from `gpu1` declared GPU memory: read the processes before pulling there again. */
  #wholeWithMemory = false;
  /** Pools whose last order did not fit any GPU's free memory: what it needed, and until when to wait. */
  readonly #memoryGate = new Map<string, { mib: number; until: number }>();

  async #readProcesses(maxAgeMs: number): Promise<void> {
    // A reading from before a trial's slots were released still lists its processes, with no holder.
    if (!this.#o.placement || (Date.now() - this.#processesAt < maxAgeMs && this.#processesAt > this.#releasedAt)) return;
    this.#processes = await this.#o.placement.processes();
    this.#processesAt = Date.now();
  }

  /**
   * The pools that may be pulled from now as far as memory goes: a pool whose last order was handed
   * back for memory waits until a GPU with its share free has that memory free (or for at most
   * MEMORY_GATE_MS, in case the order went to another agent).
   */
  async #withMemoryRoom(pools: Pool[]): Promise<Pool[]> {
    const now = Date.now();
    const gated = pools.filter((p) => (this.#memoryGate.get(p.name)?.until ?? 0) > now);
    if (gated.length === 0) return pools;
    await this.#readProcesses(1000);
    const rooms = this.#rooms();
    return pools.filter((p) => {
      const gate = this.#memoryGate.get(p.name);
      if (!gate || gate.until <= now) return true;
      const share = p.shareClass !== undefined ? classNeeds(p.shareClass) : 100;
      return rooms.some((r) => r.freeShare >= share && (r.freeMemoryMiB === null || r.freeMemoryMiB >= gate.mib));
    });
  }

  #rooms(): GpuRoom[] {
    const p = this.#o.placement;
    const slots = this.#o.slots;
    const gpus = p?.gpus ?? slots.gpuIndices.map((index) => ({ index, uuid: "", memoryTotalMiB: 0 }));
    return gpuRooms({ slots, gpus, processes: this.#processes, groupOf: (pid) => p?.groupOf(pid) ?? null });
  }

  #place(holder: SlotHolder): Placement {
    return chooseGpu(this.#rooms(), holder.share ?? 100, holder.memoryMiB ?? null);
  }

  /**
   * An order this agent cannot run for a reason of its own (see refusals.ts): back to the queue after
   * a delay for another agent, said once; dropped silently once its trial has a stop key; terminated
   * with an event on its last delivery. No slots are held meanwhile.
   */
  #refuse(msg: JsMsg, pool: Pool, order: WorkOrder, r: Rejection & { attempt: number }): void {
    const before = this.#refusals.count(order.nonce);
    const deliveries = msg.info.deliveryCount;
    const last = deliveries >= this.#o.options.maxDeliver;
    const security = SECURITY_REASONS.has(r.reason);
    const fields = { study: order.study, trial: order.trial, attempt: r.attempt, reason: r.reason, detail: r.detail };
    // Away for its delay; an order refused here before keeps this agent off the pool for that and as long
    // again (refusals.ts), from now, before the loop pulls again.
    const delayMs = jittered(refusalDelayMs(before));
    if (!last && before > 0) this.#pausedUntil.set(pool.name, Date.now() + delayMs + refusalPauseMs(before));
    this.#track(
      (async () => {
        // The coordinator writes a stop key once no agent can run the order (or the trial was stopped).
        const stop = await this.#o.control.read(order.study, order.trial);
        if (stop && stop.study === order.study && stop.trial === order.trial) {
          safely(() => msg.term());
          this.#o.log.info({ ...fields, by: stop.by }, "dropped an order it cannot run: its trial has a stop key");
          return;
        }
        if (last) {
          // A nak now would leave the order in the queue for ever, never delivered: end it and say so.
          const detail = `${r.detail}; this was its last delivery (${deliveries} of at most ${this.#o.options.maxDeliver}), so it is not handed back`;
          this.#reject(() => safely(() => msg.term()), order, r.reason, detail, order.signer ?? null, r.attempt, false);
          return;
        }
        safely(() => msg.nak(delayMs));
        this.counters.ordersReturned += 1;
        if (before > 0) {
          this.#o.log.debug({ ...fields, times: before + 1, delayMs }, "refused an order again; handed it back");
          return;
        }
        this.counters.ordersRejected += 1;
        this.#o.log.warn(
          { ...fields, delayMs, ...(security ? { security: true, sender: order.signer ?? null } : {}) },
          `cannot run this order here (${r.reason}: ${r.detail}); handed it back for another agent`,
        );
        this.#refusals.note({ study: order.study, trial: order.trial, reason: r.reason, detail: r.detail, ts: Date.now() });
        this.#o.onRefusal();
        this.#publishRejected(order, r.reason, r.detail, order.signer ?? null, r.attempt, true);
      })(),
    );
  }

  /**
   * The mesh-wide replay check, the one asynchronous step before an attempt begins: the slots are
   * held meanwhile, nothing has started. A copy of an order another agent accepted is rejected; when
   * the bucket cannot be reached the order is handed back rather than run unchecked.
   */
  async #admitInMesh(a: Attempt, id: MessageId): Promise<boolean> {
    const replay = this.#o.replay;
    if (!replay) return true;
    const mesh = await replay.nonces.claimRetrying(a.order, id, this.#o.isClosed);
    if (mesh.kind === "first") return true;
    if (mesh.kind === "unreachable") {
      a.log.error(
        { err: mesh.error.message, bucket: this.#o.names.nonces },
        "cannot record the order's nonce in the mesh; handing the order back instead of running it unchecked",
      );
      a.nak(5000);
      this.counters.ordersReturned += 1;
      // The bucket may be gone: create it again (or say why not) before the order comes back.
      this.#track(this.#o.repairMesh("the nonces bucket did not answer").catch(() => {}));
    } else {
      this.#reject(() => a.term(), a.order, "replayed", mesh.why, a.order.signer ?? null, a.number);
    }
    this.#forget(a);
    return false;
  }

  async #runAttempt(a: Attempt): Promise<void> {
    try {
      await a.run();
    } finally {
      this.#forget(a);
    }
  }

  /** Every path out of an attempt comes here once: it is over, its slots are free. */
  #forget(a: Attempt): void {
    a.end();
    this.#attempts.delete(a.key);
    this.#releaseSlots(a);
    this.#o.onActivity();
  }

  /** Once per attempt: when its trial's processes are gone (`onExited`), or when it is forgotten. */
  #releaseSlots(a: Attempt): void {
    if (this.#released.has(a)) return;
    this.#released.add(a);
    this.#o.slots.release(a.pool.kind, a.ids, a.holder);
    this.#releasedAt = Date.now();
  }

  /** Ends a message that can never run here (`term`, through `end`) and says so in a `rejected` event. */
  #reject(
    end: () => void,
    id: { study: string; trial: string; attempt?: number | null; studyId?: string; nonce?: string } | null,
    reason: RejectReason,
    detail: string,
    sender: string | null = null,
    attempt: number | null = id?.attempt ?? null,
    handedBack?: boolean,
  ): void {
    this.counters.ordersRejected += 1;
    end();
    const security = SECURITY_REASONS.has(reason);
    this.#o.log.warn(
      { study: id?.study, trial: id?.trial, reason, detail, ...(security ? { security: true, sender } : {}) },
      security ? "refused a work order on security grounds; it was not started" : "rejected a work order",
    );
    if (id) this.#publishRejected(id, reason, detail, sender, attempt, handedBack);
  }

  #publishRejected(
    id: { study: string; trial: string; studyId?: string; nonce?: string },
    reason: RejectReason,
    detail: string,
    sender: string | null,
    attempt: number | null,
    handedBack?: boolean,
  ): void {
    const agent = this.#o.options.name;
    // An order that could be read: prove it was handed to this agent, and tag the id with its nonce.
    const nonce = id.nonce;
    const proof =
      nonce !== undefined && attempt !== null
        ? claimProof({ nonce, study: id.study, trial: id.trial, attempt, agent })
        : undefined;
    const event = TrialEvents.rejected({
      study: id.study,
      trial: id.trial,
      attempt,
      agent: this.#o.options.name,
      reason,
      detail,
      sender,
      ...(handedBack === undefined ? {} : { handedBack }),
      ...(proof === undefined ? {} : { proof }),
    });
    const studyId = id.studyId ?? null;
    const tag = nonce === undefined ? null : agentIdTag(nonce, agent);
    this.#track(publishEvent(this.#o.events, this.#o.names.subjects, event, 30_000, undefined, this.#o.isClosed, studyId, tag));
  }

  #track(p: Promise<unknown>): void {
    this.#sideTasks.add(p);
    void p.finally(() => this.#sideTasks.delete(p));
  }

  /** A stop decision from the control bucket: stops every local attempt of that trial. */
  onControl(c: Control): void {
    for (const { attempt } of this.#attempts.values()) attempt.onControl(c);
  }

  /** A newer attempt of a trial holds its order now: an older copy running here is not ours any more. */
  onClaimNotice(n: ClaimNotice): void {
    for (const { attempt } of this.#attempts.values()) attempt.onClaimNotice(n);
  }

  /** After a reconnect: decisions made (and claims taken) while we were away are in the bucket; read them. */
  async recheckControls(): Promise<void> {
    for (const { attempt } of [...this.#attempts.values()]) {
      const c = await this.#o.control.read(attempt.order.study, attempt.order.trial);
      if (c) this.onControl(c);
      const n = await this.#o.control.readClaim(attempt.order.study, attempt.order.trial);
      if (n) attempt.onClaimNotice(n);
    }
  }

  /** Drain with requeue: stop every running trial and hand its order back. */
  requeueAll(): void {
    for (const { attempt } of this.#attempts.values()) attempt.requeue();
  }

  /** Forced shutdown: kill every trial now and hand back the orders, best effort (the process is exiting). */
  killAll(): void {
    for (const { attempt } of this.#attempts.values()) attempt.kill();
  }

  /** Resolves when no attempt runs any more and every side publish has settled. */
  async settled(): Promise<void> {
    while (this.#attempts.size > 0 || this.#sideTasks.size > 0) {
      await Promise.allSettled([...[...this.#attempts.values()].map((e) => e.done), ...this.#sideTasks]);
    }
  }
}
