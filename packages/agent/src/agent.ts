import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { type NatsConnection, PermissionViolationError } from "@nats-io/transport-node";
import {
  AckedPublisher,
  type AgentAdvert,
  type AgentState,
  BadMessageCounter,
  connectNats,
  createLogger,
  ensureCheckpointStore,
  ensureNonceBucket,
  ensureResources,
  type GpuInfo,
  type HostInfo,
  inboxPrefixOf,
  type Logger,
  MeshNames,
  RUNG_VERSION,
  SCHEMA_VERSION,
} from "@rung/protocol";
import { Advertiser } from "./advert.js";
import { CheckpointStore } from "./checkpoints.js";
import { ClaimLoop, type ClaimLoopCounters, ReplayLedger, SharedNonces } from "./claiming/index.js";
import { ControlWatch } from "./control-watch.js";
import { AgentOptionsError } from "./errors.js";
import { gpuProcessReader, processGroupOf } from "./gpu-processes.js";
import { discoverGpus, hostFacts } from "./inventory.js";
import { MeshRepair } from "./mesh-repair.js";
import { type MetricsServer, startMetricsServer } from "./metrics.js";
import { NvidiaSmiSampler } from "./nvidia-smi.js";
import { type AgentOptions, type CompiledAgentOptions, compileAgentOptions, type DrainMode } from "./options.js";
import { reapOrphans } from "./orphans.js";
import { Slots, shareOf } from "./slots.js";
import { StateMachine, type Transitions } from "./state-machine.js";
import { TelemetryPublisher } from "./telemetry.js";
import { registerWarmPool, WarmPool } from "./warm-pool.js";

/**
 * The agent: one per GPU box. Its life is a small state machine, each change logged and advertised:
 *
 *   starting ─▶ running ─▶ draining ─▶ stopped
 *       └──────────┴───────────┴──────▶ failed   (lost NATS for good, or could not start)
 *
 *   starting  inventory, NATS, streams and buckets, pool consumers, telemetry, control watch, advert;
 *   running   the claim loop pulls orders for which it has free slots;
 *   draining  no new claims; running trials end (`finish`) or are stopped and requeued (`requeue`);
 *   stopped   advert deleted, connection closed, nothing left running.
 *
 * `close()` is graceful and idempotent (the same promise every time); `kill()` is the second signal:
 * it kills the trials at once and hands their orders back, best effort, for a process about to exit.
 * A change along an edge not drawn above throws (a bug); staying in the same state is no change.
 */
export const AGENT_TRANSITIONS: Transitions<AgentState> = {
  starting: ["running", "failed"],
  running: ["draining", "failed"],
  draining: ["stopped", "failed"],
  stopped: [],
  failed: [],
};

export interface AgentCounters extends ClaimLoopCounters {
  /** Messages (orders, stop decisions) that failed to decode and were dropped. */
  droppedMessages: number;
  telemetryPublished: number;
  nvidiaSmiRestarts: number;
}

/** Why the agent stopped: asked to (`closed`), out of work for `--idle-exit` (`idle`), or `failed`. */
export type AgentExitReason = "closed" | "idle" | "failed";

export interface Agent {
  readonly name: string;
  readonly state: AgentState;
  readonly options: CompiledAgentOptions;
  readonly host: HostInfo;
  readonly gpus: readonly GpuInfo[];
  readonly fake: boolean;
  /** Trials running now. */
  readonly running: number;
  readonly counters: AgentCounters;
  /** Set once stopped. */
  readonly exitReason: AgentExitReason | null;
  /** Resolves when the agent has stopped, for whatever reason; never rejects. */
  readonly done: Promise<void>;
  /** Stops claiming; with `requeue`, also stops running trials and hands their orders back. */
  drain(mode?: DrainMode): Promise<void>;
  /** Drains (with `--drain`'s mode unless `drain()` was called) and shuts down. Idempotent. */
  close(): Promise<void>;
  /** Kills the trials now and hands back their orders; for a forced exit. Synchronous. */
  kill(): void;
}

class AgentImpl implements Agent {
  readonly name: string;
  readonly options: CompiledAgentOptions;
  readonly counters: AgentCounters;
  host!: HostInfo;
  gpus: readonly GpuInfo[] = [];
  fake = false;
  exitReason: AgentExitReason | null = null;
  readonly done: Promise<void>;
  readonly #log: Logger;
  readonly #names: MeshNames;
  readonly #bad: BadMessageCounter;
  readonly #startedAt = Date.now();
  readonly #life = new StateMachine<AgentState>("agent", "starting", AGENT_TRANSITIONS);
  #resolveDone!: () => void;
  #nc: NatsConnection | undefined;
  #connected = false;
  #slots: Slots | undefined;
  #sampler: NvidiaSmiSampler | undefined;
  #telemetry: TelemetryPublisher | undefined;
  #metrics: MetricsServer | undefined;
  #control: ControlWatch | undefined;
  #advert: Advertiser | undefined;
  #loop: ClaimLoop | undefined;
  #socketDir: string | undefined;
  #warm: WarmPool | undefined;
  #draining: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #lastActivity = Date.now();
  #statusLoop: Promise<void> = Promise.resolve();

  constructor(options: CompiledAgentOptions) {
    this.options = options;
    this.name = options.name;
    this.#log = options.logger ?? createLogger({ base: { agent: options.name }, format: options.logFormat });
    this.#names = new MeshNames(options.prefix);
    this.#bad = new BadMessageCounter(this.#log);
    this.done = new Promise((r) => {
      this.#resolveDone = r;
    });
    const self = this;
    this.counters = {
      get ordersClaimed() {
        return self.#loop?.counters.ordersClaimed ?? 0;
      },
      get ordersRejected() {
        return self.#loop?.counters.ordersRejected ?? 0;
      },
      get ordersReturned() {
        return self.#loop?.counters.ordersReturned ?? 0;
      },
      get reports() {
        return self.#loop?.counters.reports ?? 0;
      },
      get malformedReportLines() {
        return self.#loop?.counters.malformedReportLines ?? 0;
      },
      get droppedReports() {
        return self.#loop?.counters.droppedReports ?? 0;
      },
      get checkpointsStored() {
        return self.#loop?.counters.checkpointsStored ?? 0;
      },
      get checkpointsFailed() {
        return self.#loop?.counters.checkpointsFailed ?? 0;
      },
      get missedHeartbeats() {
        return self.#loop?.counters.missedHeartbeats ?? 0;
      },
      get claimsLost() {
        return self.#loop?.counters.claimsLost ?? 0;
      },
      get droppedMessages() {
        return self.#bad.total;
      },
      get telemetryPublished() {
        return self.#telemetry?.published ?? 0;
      },
      get nvidiaSmiRestarts() {
        return self.#sampler?.restarts ?? 0;
      },
    };
  }

  get state(): AgentState {
    return this.#life.state;
  }

  get running(): number {
    return this.#loop?.running ?? 0;
  }

  #setState(state: AgentState, fields: Record<string, unknown> = {}): void {
    if (this.#life.state === state) return;
    this.#life.transition(state);
    this.#log.info({ state, ...fields }, `agent ${state}`);
    void this.#advert?.refresh();
  }

  async start(): Promise<void> {
    const o = this.options;
    checkWorkdir(o.workdir);
    this.#log.info({ version: RUNG_VERSION, state: "starting" }, "agent starting");
    const [host, found] = await Promise.all([
      hostFacts(this.#log),
      discoverGpus({
        agent: o.name,
        nvidiaSmi: o.nvidiaSmi,
        fakeGpus: o.fakeGpus,
        cpuSlots: o.cpuSlots,
        only: o.gpus,
        log: this.#log,
      }),
    ]);
    this.host = host;
    this.gpus = found.gpus;
    this.fake = found.fake;
    const slots = new Slots(
      found.gpus.map((g) => ({ index: g.index, memoryTotalMiB: g.memoryTotalMiB, mig: g.mig !== undefined })),
      o.cpuSlots,
    );
    this.#slots = slots;
    this.#log.info(
      { gpus: found.gpus.map((g) => `${g.index}:${g.name}`), fake: found.fake, cpuSlots: o.cpuSlots },
      `found ${found.gpus.length} GPU(s)${found.fake ? " (simulated)" : ""}`,
    );
    mkdirSync(o.stateDir, { recursive: true });
    // A previous agent on this state directory that was killed outright may have left trial helpers.
    reapOrphans(join(o.stateDir, "groups"), this.#log);
    // Unix socket paths are limited to about 100 bytes, so the report sockets live in a short temp dir.
    this.#socketDir = mkdtempSync(join(tmpdir(), "rung-agent-"));
    if (o.warm) {
      const warm = new WarmPool({
        ...o.warm,
        socketPath: join(this.#socketDir, "warm.sock"),
        slots: found.gpus.length + o.cpuSlots,
        log: this.#log,
      });
      await warm.start();
      this.#warm = warm;
      registerWarmPool(o, warm);
    }

    // Every reported result is an acknowledged publish: no stack captured for each (connect.ts).
    const nc = await connectNats({ ...o.nats, reconnectForever: true, noAsyncTraces: true });
    this.#nc = nc;
    this.#connected = true;
    // Agents create what is missing and change nothing that exists: its owner (the coordinator or
    // `rung server`) configures it, and an agent's NATS user may not update streams.
    const resources = await ensureResources(nc, this.#names, { ...o.resources, updateExisting: false });
    const js = jetstream(nc);
    const repair = new MeshRepair({
      nc,
      jsm: resources.jsm,
      names: this.#names,
      resources: o.resources,
      nonces: !o.insecure,
      log: this.#log,
    });
    const repairMesh = (why: string) => repair.repair(why);
    let replay: { ledger: ReplayLedger; nonces: SharedNonces } | null = null;
    if (o.insecure) {
      this.#log.warn("--insecure: running unsigned orders from anyone who can publish work to this mesh");
    } else {
      replay = {
        ledger: new ReplayLedger({ file: join(o.stateDir, "accepted-orders.jsonl") }),
        nonces: new SharedNonces(await ensureNonceBucket(nc, this.#names, o.resources), o.name, this.#log),
      };
      this.#log.info({ trust: o.trust }, `running only orders signed by ${o.trust.length} trusted key(s)`);
    }

    if (!found.fake && found.gpus.length > 0) {
      this.#sampler = new NvidiaSmiSampler({ path: o.nvidiaSmi, intervalMs: o.telemetryIntervalMs, log: this.#log });
      this.#sampler.start();
    }
    this.#telemetry = new TelemetryPublisher({
      nc,
      subjects: this.#names.subjects,
      agent: o.name,
      gpus: found.gpus,
      fake: found.fake,
      sampler: this.#sampler,
      slots,
      intervalMs: o.telemetryIntervalMs,
      hostIntervalMs: o.hostIntervalMs,
      isConnected: () => this.#connected,
      log: this.#log,
    });
    this.#telemetry.start();
    if (o.metrics) {
      const busy = (i: number) => slots.holderOfGpu(i)?.busyShare ?? null;
      this.#metrics = await startMetricsServer(
        o.metrics,
        {
          agent: o.name,
          gpus: () => this.#telemetry?.sample() ?? [],
          dataWait: (i) => {
            const b = busy(i);
            return b === null ? null : 1 - b;
          },
          running: () => this.running,
          counters: () => this.counters,
        },
        this.#log,
      );
    }

    this.#control = new ControlWatch({
      kv: resources.control,
      subjects: this.#names.subjects,
      log: this.#log,
      bad: this.#bad,
      onStop: (c) => this.#loop?.onControl(c),
      onClaim: (n) => this.#loop?.onClaimNotice(n),
      onBroken: () => repairMesh("the control watch failed"),
    });
    // Without the checkpoint bucket trials still run, from their local checkpoint directory only.
    const checkpoints = await ensureCheckpointStore(nc, this.#names, o.resources).then(
      (os) => new CheckpointStore(os),
      (err) => {
        this.#log.warn(
          { err: (err as Error).message },
          "cannot open the mesh's checkpoint bucket: trials resume from this box's own checkpoints only",
        );
        return null;
      },
    );
    const loop = new ClaimLoop({
      nc,
      js,
      events: new AckedPublisher(nc, inboxPrefixOf(nc)),
      jsm: resources.jsm,
      names: this.#names,
      options: o,
      slots,
      control: this.#control,
      bad: this.#bad,
      log: this.#log,
      socketDir: this.#socketDir,
      onActivity: () => {
        this.#lastActivity = Date.now();
        void this.#advert?.refresh();
      },
      isConnected: () => this.#connected,
      isClosed: () => nc.isClosed(),
      replay,
      checkpoints,
      repairMesh,
      onRefusal: () => void this.#advert?.refresh(),
      placement: {
        gpus: found.gpus,
        processes: gpuProcessReader(found.fake ? null : o.nvidiaSmi),
        groupOf: processGroupOf,
      },
      // A MIG instance is named by its UUID (CUDA takes no index for it); a GPU by its index.
      visibleDevice: (index) => {
        const g = found.gpus.find((x) => x.index === index);
        return g?.mig ? g.uuid : String(index);
      },
    });
    this.#loop = loop;
    await this.#control.start();
    await loop.prepare();

    this.#advert = new Advertiser({
      kv: resources.agents,
      agent: o.name,
      intervalMs: o.advertIntervalMs,
      build: () => this.#buildAdvert(),
      isConnected: () => this.#connected,
      log: this.#log,
      onFailure: () => void repairMesh("the advert could not be written").catch(() => {}),
    });
    this.#statusLoop = this.#watchConnection(nc);
    await this.#advert.start();
    loop.start();
    // Unless NATS was lost for good meanwhile: then the agent has failed and is shutting down already.
    if (this.#life.state === "starting") this.#setState("running", { pools: loop.pools.map((p) => p.name) });
    if (o.idleExitMs !== null) this.#idleTimer = setInterval(() => this.#checkIdle(), Math.min(1000, o.idleExitMs));
  }

  #buildAdvert(): AgentAdvert {
    const slots = this.#slots as Slots;
    const samples = new Map((this.#telemetry?.sample() ?? []).map((s) => [s.index, s]));
    const now = Date.now();
    return {
      v: SCHEMA_VERSION,
      type: "advert",
      agent: this.name,
      state: this.#life.state,
      host: this.host,
      gpus: this.gpus.map((g) => {
        const s = samples.get(g.index);
        return {
          ...g,
          utilization: s?.utilizationGpu ?? null,
          memoryUsedMiB: s?.memoryUsedMiB ?? null,
          study: s?.study ?? null,
          trial: s?.trial ?? null,
          shareInUse: slots.shareInUse(g.index) / 100,
          placed: slots.holdersOfGpu(g.index).map((h) => ({
            study: h.study,
            trial: h.trial,
            share: shareOf(h) / 100,
            memoryMiB: h.memoryMiB ?? null,
          })),
        };
      }),
      cpuSlots: slots.total("cpu"),
      freeGpus: this.#life.state === "running" ? slots.free("gpu") : 0,
      freeCpuSlots: this.#life.state === "running" ? slots.free("cpu") : 0,
      labels: { ...this.options.labels },
      pricePerGpuHour: this.options.pricePerGpuHour,
      leaseMs: this.options.leaseMs,
      version: RUNG_VERSION,
      startedAt: this.#startedAt,
      updatedAt: now,
      refusals: [...(this.#loop?.refusals ?? [])],
    };
  }

  async #watchConnection(nc: NatsConnection): Promise<void> {
    const closed = nc.closed().then((err) => {
      if (this.#closing) return;
      // Closed without us asking: the server refused us for good (auth) or reconnecting gave up.
      this.#log.error({ err: err instanceof Error ? err.message : undefined }, "lost NATS for good; stopping trials");
      this.#fail();
    });
    for await (const s of nc.status()) {
      if (s.type === "disconnect") {
        this.#connected = false;
        this.#log.warn({ server: "server" in s ? s.server : undefined }, "disconnected from NATS; reconnecting");
      } else if (s.type === "reconnect") {
        this.#connected = true;
        this.#log.info("reconnected to NATS");
        void this.#advert?.refresh();
        void this.#loop?.recheckControls();
      } else if (s.type === "error" && isRefusedAck(s.error)) {
        // Agents may answer only work messages delivered to them (permissions.ts), and a server reloads
        // its configuration forgetting which those were.
        if (!this.#ackRefusedWarned) {
          this.#ackRefusedWarned = true;
          this.#log.warn(
            { subject: (s.error as PermissionViolationError).subject },
            "the server refused this agent's answer to a work order it holds (its configuration was reloaded): the trial runs on until its claim lease runs out, then runs again as the next attempt",
          );
        }
      }
    }
    await closed;
  }

  #ackRefusedWarned = false;

  #fail(): void {
    this.#loop?.killAll();
    this.exitReason = "failed";
    this.#setState("failed");
    void this.#shutdown();
  }

  #checkIdle(): void {
    const idleMs = this.options.idleExitMs;
    // Every attempt in hand counts, also one still publishing `finished` or storing a snapshot.
    const busy = (this.#loop?.attempts ?? 0) > 0;
    if (idleMs === null || this.#life.state !== "running" || busy) {
      this.#lastActivity = Math.max(this.#lastActivity, busy ? Date.now() : 0);
      return;
    }
    if (Date.now() - this.#lastActivity < idleMs) return;
    this.#log.info({ idleMs }, "no work for the idle-exit period; exiting");
    this.exitReason = "idle";
    this.#afterShutdown = () => this.#runOnIdle();
    void this.close();
  }

  async #runOnIdle(): Promise<void> {
    const cmd = this.options.onIdle;
    if (!cmd) return;
    this.#log.info({ cmd }, "running the --on-idle command");
    // The operator's own command line, so a shell is what they expect here (unlike trial commands).
    await new Promise<void>((resolve) => {
      const child = spawn("/bin/sh", ["-c", cmd], { stdio: ["ignore", "inherit", "inherit"] });
      child.once("error", (err) => {
        this.#log.error({ err: err.message }, "--on-idle command could not run");
        resolve();
      });
      child.once("exit", (code) => {
        if (code !== 0) this.#log.warn({ code }, "--on-idle command failed");
        resolve();
      });
    });
  }

  drain(mode: DrainMode = this.options.drain): Promise<void> {
    if (mode === "requeue") this.#loop?.requeueAll();
    this.#draining ??= (async () => {
      if (this.#life.state === "running") this.#setState("draining", { mode });
      await this.#loop?.stopClaiming();
      await this.#loop?.settled();
    })();
    return this.#draining;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        await this.drain();
      } catch (err) {
        this.#log.error({ err: (err as Error).message }, "error while draining");
      }
      await this.#shutdown();
    })();
    return this.#closing;
  }

  kill(): void {
    this.#loop?.killAll();
    this.#warm?.killAll();
  }

  #shuttingDown: Promise<void> | undefined;
  /** Runs after everything is shut down and before `done` resolves (the --on-idle command). */
  #afterShutdown: (() => Promise<void>) | undefined;
  #shutdown(): Promise<void> {
    this.#shuttingDown ??= (async () => {
      if (this.#idleTimer) clearInterval(this.#idleTimer);
      await this.#loop?.stopClaiming().catch(() => {});
      await this.#loop?.settled().catch(() => {});
      this.#telemetry?.close();
      await this.#metrics?.close();
      await this.#control?.close().catch(() => {});
      await this.#advert?.close();
      await this.#sampler?.close();
      const nc = this.#nc;
      if (nc && !nc.isClosed()) {
        await nc.drain().catch(() => nc.close());
      }
      await this.#statusLoop.catch(() => {});
      await this.#warm?.close();
      if (this.#socketDir) rmSync(this.#socketDir, { recursive: true, force: true });
      this.exitReason ??= "closed";
      if (this.#life.state !== "failed")
        this.#setState("stopped", { counters: { ...this.counters }, dropped: this.#bad.snapshot() });
      await this.#afterShutdown?.().catch(() => {});
      this.#resolveDone();
    })();
    return this.#shuttingDown;
  }

  /** Undo a start that failed half-way, so nothing is left running. */
  async abortStart(): Promise<void> {
    this.#closing ??= Promise.resolve();
    // Not logged: startAgent rejects with the reason, which says more than "agent failed".
    if (this.#life.state !== "failed") this.#life.transition("failed");
    this.exitReason = "failed";
    await this.#shutdown().catch(() => {});
  }
}

/** `--workdir` must exist: every order's workdir is resolved under it, and none could run otherwise. */
function checkWorkdir(dir: string): void {
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    // said below
  }
  if (!isDir)
    throw new AgentOptionsError(
      "--workdir",
      `${dir} does not exist or is not a directory — create it (with the studies' code in it) or pass the directory their workdirs are relative to`,
    );
}

/**
 * Starts an agent: finds the GPUs, connects, creates what is missing in JetStream, advertises and
 * begins claiming. Resolves once it is running; rejects (with nothing left running) when it cannot
 * start — a --workdir that does not exist, no GPU and no CPU slots, NATS unreachable, JetStream off.
 */
export async function startAgent(options: AgentOptions = {}): Promise<Agent> {
  const agent = new AgentImpl(compileAgentOptions(options));
  try {
    await agent.start();
  } catch (err) {
    await agent.abortStart();
    throw err;
  }
  return agent;
}

/** A permission error on a `$JS.ACK` subject: the server no longer lets this agent answer a delivery. */
function isRefusedAck(err: unknown): boolean {
  return err instanceof PermissionViolationError && err.operation === "publish" && err.subject.startsWith("$JS.ACK.");
}
