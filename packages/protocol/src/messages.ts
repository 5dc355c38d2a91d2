import { z } from "zod";
import { isValidToken } from "./tokens.js";

/**
 * Every payload that crosses NATS. Each carries `v` (schema version) and, where a subject carries
 * several kinds, a `type` discriminator. Decoding is msgpack + `safeParse` (see codec.ts); a message
 * that fails is dropped and counted, never thrown.
 */
export const SCHEMA_VERSION = 1;

const v = z.literal(SCHEMA_VERSION);
const token = z.string().refine(isValidToken, { message: "must be a valid name (letters, digits, - and _)" });
/** Epoch milliseconds. */
const ts = z.number().int().nonnegative();
/** Any IEEE double including NaN and ±Infinity: metrics can be NaN, as in Ray Tune. */
const anyNumber = z.custom<number>((x) => typeof x === "number", { message: "must be a number" });
const paramValue = z.union([z.string(), z.number(), z.boolean()]);

/**
 * `oom`: the trial ran out of GPU memory (CUDA's out-of-memory error in its output): not a bad
 * configuration but a placement that was too tight — the coordinator retries it alone on a GPU,
 * without using a retry.
 */
export const TrialStatus = {
  completed: "completed",
  stopped: "stopped",
  failed: "failed",
  preempted: "preempted",
  oom: "oom",
} as const;
export type TrialStatus = (typeof TrialStatus)[keyof typeof TrialStatus];

/**
 * PAUSE: the promotion scheduler's — the trial stops at a rung, its checkpoint kept, to resume if
 * promoted. EXPLOIT: population-based training's — the trial stops and goes on from a better trial's
 * checkpoint with perturbed parameters.
 */
export const Decision = { CONTINUE: "CONTINUE", STOP: "STOP", PAUSE: "PAUSE", EXPLOIT: "EXPLOIT" } as const;
export type Decision = (typeof Decision)[keyof typeof Decision];

/** Why an attempt was stopped; one AbortController reason per trial carries one of these. */
export const StopReason = {
  schedulerStop: "scheduler-stop",
  /** The promotion scheduler paused the trial at a rung: it stops like a scheduler stop, its checkpoint kept. */
  schedulerPause: "scheduler-pause",
  userStop: "user-stop",
  agentShutdown: "agent-shutdown",
  claimLost: "claim-lost",
  /** The study's `report_timeout` or `trial_timeout` ran out (the coordinator's stop key says which). */
  timeout: "timeout",
} as const;
export type StopReason = (typeof StopReason)[keyof typeof StopReason];

/** Why an agent refused an order without starting it. */
export const RejectReason = {
  malformed: "malformed",
  unsigned: "unsigned",
  badSignature: "bad-signature",
  untrustedSigner: "untrusted-signer",
  expired: "expired",
  replayed: "replayed",
  commandNotAllowed: "command-not-allowed",
  cannotRun: "cannot-run",
  /**
   * The order waited on an agent for GPU memory (placement) through its last delivery and was ended
   * there. Neither the order's fault nor a refusal: the coordinator queues a fresh order.
   */
  noRoom: "no-room",
} as const;
export type RejectReason = (typeof RejectReason)[keyof typeof RejectReason];

/**
 * Refusals about the refusing agent, not about the order: its trust list (a stale key after a rotation,
 * a stranger's agent on the same server), its --insecure setting, its --workdir or the programs it has.
 * Another agent may well run the order, so it goes back to the queue and the trial is not failed
 * until no live agent can run it. Every other reason (malformed, bad signature, expired, replayed,
 * command not allowed) is about the order itself and is final.
 */
export const AGENT_SPECIFIC_REJECTIONS: ReadonlySet<RejectReason> = new Set<RejectReason>([
  "unsigned",
  "untrusted-signer",
  "cannot-run",
]);

export function isAgentSpecificRejection(reason: RejectReason): boolean {
  return AGENT_SPECIFIC_REJECTIONS.has(reason);
}

// ---------------------------------------------------------------------------------------------
// Agent advert (KV rung-agents, key <agent>)

export const GpuInfoSchema = z.object({
  index: z.number().int().nonnegative(),
  uuid: z.string(),
  name: z.string(),
  memoryTotalMiB: z.number().nonnegative(),
  driver: z.string(),
  fake: z.boolean().default(false),
  /**
   * A MIG instance rather than a whole GPU: its parent GPU's nvidia-smi index, its profile
   * (`1g.10gb`) and its share of the parent's compute slices. Its `uuid` is the `MIG-…` one that
   * CUDA_VISIBLE_DEVICES takes, its `index` is `100 × (parent + 1) + device` (placement.ts).
   */
  mig: z.object({ parent: z.number().int().nonnegative(), profile: z.string(), computeShare: z.number() }).optional(),
});
export type GpuInfo = z.infer<typeof GpuInfoSchema>;

export const HostInfoSchema = z.object({
  hostname: z.string(),
  cpuModel: z.string(),
  cpuCores: z.number().int().nonnegative(),
  memoryTotalBytes: z.number().nonnegative(),
  os: z.string(),
});
export type HostInfo = z.infer<typeof HostInfoSchema>;

export const AgentStateSchema = z.enum(["starting", "running", "draining", "stopped", "failed"]);
export type AgentState = z.infer<typeof AgentStateSchema>;

export const AgentAdvertSchema = z.object({
  v,
  type: z.literal("advert"),
  agent: token,
  state: AgentStateSchema,
  host: HostInfoSchema,
  gpus: z.array(
    GpuInfoSchema.extend({
      utilization: anyNumber.nullable().default(null),
      memoryUsedMiB: anyNumber.nullable().default(null),
      study: z.string().nullable().default(null),
      trial: z.string().nullable().default(null),
      /**
       * Share of the GPU held by trials, 0..1 (a whole-GPU trial holds 1), and each trial placed on
       * it with its share and declared memory. Optional: adverts of older agents lack them.
       */
      shareInUse: z.number().min(0).max(1).optional(),
      placed: z
        .array(z.object({ study: z.string(), trial: z.string(), share: z.number(), memoryMiB: z.number().nullable() }))
        .optional(),
    }),
  ),
  /** CPU-only slots (machines without a GPU, `--cpu-slots`). */
  cpuSlots: z.number().int().nonnegative(),
  freeGpus: z.number().int().nonnegative(),
  freeCpuSlots: z.number().int().nonnegative(),
  labels: z.record(z.string(), z.string()),
  pricePerGpuHour: z.number().nonnegative().nullable(),
  /**
   * The agent's claim lease (`--lease`): it heartbeats at a third of it, so the work consumers' ack wait
   * must be at least this while it runs (a coordinator keeps them at the longest of the live agents').
   * Optional: adverts of older agents lack it.
   */
  leaseMs: z.number().int().positive().optional(),
  version: z.string(),
  startedAt: ts,
  updatedAt: ts,
  /**
   * The last few orders this agent refused for a reason of its own (AGENT_SPECIFIC_REJECTIONS: its
   * trust list, its --workdir, a program it lacks), newest last, so `rung agents` and the coordinator
   * can say why. Optional, so adverts of agents that predate it still parse (read it as `?? []`).
   */
  refusals: z
    .array(
      z.object({
        study: token,
        trial: token,
        reason: z.enum(Object.values(RejectReason) as [RejectReason, ...RejectReason[]]),
        detail: z.string(),
        ts,
      }),
    )
    .optional(),
});
export type AgentAdvert = z.infer<typeof AgentAdvertSchema>;

// ---------------------------------------------------------------------------------------------
// Work order (stream RUNG_WORK, subject rung.work.<pool>)

export const WorkOrderSchema = z.object({
  v,
  type: z.literal("order"),
  study: token,
  trial: token,
  /** Attempt number of this order's first delivery; a redelivery runs attempt + deliveries - 1. */
  attempt: z.number().int().positive(),
  pool: token,
  /**
   * `gpus`: a whole number of GPUs, or a share of one GPU (0.01–0.99, placement.ts); `gpuMemoryMiB`:
   * the memory the trial declared it needs on that GPU, checked against what is free there now.
   */
  resources: z.object({
    gpus: z.number().nonnegative(),
    cpus: z.number().int().nonnegative().default(0),
    gpuMemoryMiB: z.number().positive().optional(),
  }),
  /** The exact argv to exec, parameters already substituted; never passed through a shell. */
  argv: z.array(z.string()).min(1),
  workdir: z.string(),
  env: z.record(z.string(), z.string()),
  /** Names in `env` whose values are never logged or shown. */
  secretEnv: z.array(z.string()).default([]),
  params: z.record(z.string(), paramValue),
  /** Scheduler's time attribute and the metric names, so the agent can tag reports. */
  timeAttr: z.string(),
  issuedAt: ts,
  expiresAt: ts,
  /** Random per order, for replay detection. */
  nonce: z.string().min(8),
  /**
   * The study's incarnation id (`rung study run` of a new study draws one): the agent keys the attempt's
   * message ids and its local checkpoint directory by it, so nothing of a deleted study of the same
   * name is taken for this one's. Absent for studies recorded before ids existed.
   */
  studyId: token.optional(),
  /** Public key of the signer and the ed25519 signature over the canonical order (security issue). */
  signer: z.string().optional(),
  sig: z.string().optional(),
});
export type WorkOrder = z.infer<typeof WorkOrderSchema>;

/**
 * The identifying fields of an order, read on their own from an order that fails WorkOrderSchema, so
 * the agent that refuses it can still say so on the trial's event subject.
 */
export const OrderIdentitySchema = z.object({
  study: token,
  trial: token,
  attempt: z.number().int().positive().nullable().catch(null),
});
export type OrderIdentity = z.infer<typeof OrderIdentitySchema>;

// ---------------------------------------------------------------------------------------------
// Checkpoints (Object Store <prefix>-checkpoints; index in KV <prefix>-control, key ckpt.<study>.<trial>)

/**
 * One stored snapshot of a trial's `RUNG_CHECKPOINT_DIR`: the object that holds it, the time attribute's
 * value it was taken at, who took it, and its size and SHA-256 (hex) over the stored bytes — what a
 * restoring agent checks before it unpacks anything.
 */
export const CheckpointRefSchema = z.object({
  object: z.string().min(1).max(512),
  t: anyNumber,
  attempt: z.number().int().positive(),
  agent: token,
  size: z.number().int().nonnegative(),
  digest: z.string().regex(/^[0-9a-f]{64}$/),
});
export type CheckpointRef = z.infer<typeof CheckpointRefSchema>;

/**
 * The checkpoints an attempt may resume from, newest first: written by the coordinator only, from the
 * `checkpoint` events of each attempt's claimant (agents cannot write the control bucket).
 */
export const CheckpointIndexSchema = z.object({
  v,
  type: z.literal("checkpoints"),
  study: token,
  trial: token,
  refs: z.array(CheckpointRefSchema),
  ts,
});
export type CheckpointIndex = z.infer<typeof CheckpointIndexSchema>;

/**
 * Which attempt holds a trial's order now (control bucket, `work.claim.<study>.<trial>`): written by the
 * coordinator when an attempt is claimed while an older one of the same trial still runs. JetStream
 * handed the order on because the older claim's lease ran out, whether or not its agent noticed; that
 * agent kills its copy when it reads this, and reports `claim-lost`.
 */
export const ClaimNoticeSchema = z.object({
  v,
  type: z.literal("claim"),
  study: token,
  /** The study's incarnation (orders carry it): a notice of a deleted study's trial is no business of its rerun. */
  studyId: z.string().nullable(),
  trial: token,
  /** The attempt that holds the order now; older attempts of the trial are over. */
  attempt: z.number().int().positive(),
  /** The agent that claimed it. */
  agent: token,
  ts,
});
export type ClaimNotice = z.infer<typeof ClaimNoticeSchema>;

// ---------------------------------------------------------------------------------------------
// Trial events (stream RUNG_EVENTS, subject rung.events.<study>.<trial>.c or ….a.<agent>)

/** The most reports one message carries (a report and its `more`). */
export const MAX_REPORT_BATCH = 64;

/**
 * The most bytes of reports (by `reportSize`) a batch is filled with: one report may be a 64 KiB line,
 * and 64 of those would pass the server's 1 MiB message limit, which the client refuses outright. A
 * report that would pass it starts the next message.
 */
export const REPORT_BATCH_BYTES = 256 * 1024;

/**
 * A header of the work order's message, set by a coordinator that reads several reports to a message
 * (the report event's `more`): the agent may then batch them. Orders of older coordinators lack it, and
 * their agents send one report per message. A header, not a field of the order: an older agent's parse
 * would drop an unknown field and then find the order's signature wrong; the header only says how the
 * attempt's reports may be framed.
 */
export const REPORT_BATCHES_HEADER = "Rung-Report-Batches";

const eventBase = { v, study: token, trial: token, ts };

export const TrialEventSchema = z.discriminatedUnion("type", [
  /** Coordinator: the trial exists, with its parameters and bracket. */
  z.object({
    ...eventBase,
    type: z.literal("created"),
    params: z.record(z.string(), paramValue),
    bracket: z.number().int().nonnegative().nullable().default(null),
    /**
     * Parameters drawn by a model (search.algorithm tpe or bohb) rather than planned: which one, and the
     * last event-stream sequence the coordinator had folded when it drew them (what a reader folds to
     * draw them again).
     */
    sampledBy: z.enum(["tpe", "bohb"]).optional(),
    basis: z.number().int().nonnegative().optional(),
  }),
  /** Coordinator: an order for this attempt was published. */
  z.object({
    ...eventBase,
    type: z.literal("queued"),
    attempt: z.number().int().positive(),
    /**
     * The order's nonce: what readers check a claim's proof against (claims.ts). Agents cannot read
     * events, so it stays between the coordinator and the agent handed the order. Absent in events
     * of older coordinators, whose claims are then taken as they come.
     */
    nonce: z.string().min(8).optional(),
    /** A promotion (promotion-based ASHA): the paused trial resumes from its checkpoint to this rung. */
    promotedTo: anyNumber.optional(),
    /** An exploit (PBT): the trial goes on from this trial's checkpoint, with `params`. */
    exploitOf: token.optional(),
    /** The parameters this attempt runs with, when they are no longer the trial's first ones (PBT). */
    params: z.record(z.string(), paramValue).optional(),
    /**
     * `packing: auto` (coordinator study/packing.ts): the trials per GPU this order was sized for (its
     * share is ⌊100 / perGpu⌋ %), the memory it declares, and the decision that chose them — recorded
     * here because the telemetry it was decided from is not in the event stream. Absent without packing.
     */
    packing: z
      .object({
        perGpu: z.number().int().min(1).max(64),
        gpuMemoryMiB: z.number().int().positive().nullable(),
        step: z.enum(["observe", "hold", "raise", "back-off"]),
        why: z.string().max(500),
      })
      .optional(),
  }),
  /** Agent: it holds the order and the GPUs. */
  z.object({
    ...eventBase,
    type: z.literal("claimed"),
    attempt: z.number().int().positive(),
    agent: token,
    gpus: z.array(z.number().int().nonnegative()),
    /** `claimProof` of the order's nonce for this attempt and agent (claims.ts); absent from older agents. */
    proof: z.string().optional(),
  }),
  /** Agent: the process runs. */
  z.object({
    ...eventBase,
    type: z.literal("started"),
    attempt: z.number().int().positive(),
    agent: token,
    pid: z.number().int(),
    gpus: z.array(z.number().int().nonnegative()),
    /** The checkpoint the attempt was started from (`RUNG_RESUME_FROM`); null or absent for a fresh start. */
    resumedFrom: CheckpointRefSchema.nullable().optional(),
    /** Newer checkpoints it could not use (partial, corrupt, gone), and why: none of them was unpacked. */
    skippedCheckpoints: z.array(z.object({ t: anyNumber, object: z.string(), why: z.string() })).optional(),
  }),
  /** Agent: one line the trial reported, stamped. */
  z.object({
    ...eventBase,
    type: z.literal("report"),
    attempt: z.number().int().positive(),
    agent: token,
    seq: z.number().int().nonnegative(),
    metrics: z.record(z.string(), anyNumber),
    /**
     * The attempt's next reports, when the agent sent several in one message (the order's
     * message has REPORT_BATCHES_HEADER): each is a report of its own, with this one's study, trial, attempt and agent.
     * Readers take them apart with `expandEvent` (trial-events.ts); the message's id is this report's.
     */
    more: z
      .array(z.object({ seq: z.number().int().nonnegative(), ts, metrics: z.record(z.string(), anyNumber) }))
      .max(MAX_REPORT_BATCH - 1)
      .optional(),
  }),
  /** Agent: a snapshot of the attempt's checkpoint directory is stored (after report `seq` asked for it). */
  z.object({
    ...eventBase,
    type: z.literal("checkpoint"),
    attempt: z.number().int().positive(),
    agent: token,
    seq: z.number().int().nonnegative(),
    ref: CheckpointRefSchema,
  }),
  /**
   * Agent: the attempt ended. Exactly one per attempt. `preempted`: its agent was told to shut down
   * (SIGTERM: a spot reclaim, a shutdown) and handed the order back after a last checkpoint.
   */
  z.object({
    ...eventBase,
    type: z.literal("finished"),
    attempt: z.number().int().positive(),
    agent: token,
    status: z.enum(["completed", "stopped", "failed", "preempted", "oom"]),
    exitCode: z.number().int().nullable(),
    signal: z.string().nullable(),
    reason: z.string(),
    logTail: z.array(z.string()).default([]),
  }),
  /** Agent: the order was refused and never started. */
  z.object({
    ...eventBase,
    type: z.literal("rejected"),
    attempt: z.number().int().positive().nullable(),
    agent: token,
    reason: z.enum(Object.values(RejectReason) as [RejectReason, ...RejectReason[]]),
    detail: z.string(),
    sender: z.string().nullable().default(null),
    /**
     * For a refusal of the agent's own (AGENT_SPECIFIC_REJECTIONS) and for `no-room`: whether the order
     * went back to the queue for another agent (true), or was ended because that was its last delivery
     * (false: the coordinator queues a fresh order). Absent from older agents.
     */
    handedBack: z.boolean().optional(),
    /** `claimProof` for this attempt and agent, when the order could be read (claims.ts). */
    proof: z.string().optional(),
  }),
  /** Coordinator: a scheduler decision on a report. */
  z.object({
    ...eventBase,
    type: z.literal("decision"),
    attempt: z.number().int().positive(),
    /** `seq` of the report this decides on. */
    seq: z.number().int().nonnegative(),
    t: anyNumber,
    value: anyNumber.nullable(),
    decision: z.enum(["CONTINUE", "STOP", "PAUSE", "EXPLOIT"]),
    by: z.string(),
    rung: anyNumber.nullable().default(null),
    cutoff: anyNumber.nullable().default(null),
    /** EXPLOIT: the trial whose checkpoint it goes on from, and its new parameters. */
    donor: token.optional(),
    params: z.record(z.string(), paramValue).optional(),
  }),
  /** Coordinator: the trial's final state (after retries, stops and completion). */
  z.object({
    ...eventBase,
    type: z.literal("ended"),
    status: z.enum(["completed", "stopped", "failed", "cancelled"]),
    reason: z.string(),
    attempts: z.number().int().nonnegative(),
  }),
]);
export type TrialEvent = z.infer<typeof TrialEventSchema>;
export type TrialEventType = TrialEvent["type"];
export type TrialEventOf<T extends TrialEventType> = Extract<TrialEvent, { type: T }>;

// ---------------------------------------------------------------------------------------------
// Telemetry (stream RUNG_TELEMETRY, subject rung.telemetry.<agent>)

export const GpuSampleSchema = z.object({
  index: z.number().int().nonnegative(),
  uuid: z.string(),
  utilizationGpu: anyNumber.nullable(),
  utilizationMemory: anyNumber.nullable(),
  memoryUsedMiB: anyNumber.nullable(),
  memoryTotalMiB: anyNumber.nullable(),
  powerW: anyNumber.nullable(),
  temperatureC: anyNumber.nullable(),
  smClockMHz: anyNumber.nullable(),
  study: z.string().nullable(),
  trial: z.string().nullable(),
});
export type GpuSample = z.infer<typeof GpuSampleSchema>;

/** One trial's own CPU use over a host sample's interval (see the host message's `trials`). */
export const TrialCpuSampleSchema = z.object({
  study: token,
  trial: token,
  attempt: z.number().int().positive(),
  /** CPU time of the trial's processes over the interval / the interval: cores busy on average. */
  cpuCores: z.number().nonnegative(),
  /** Processes of the trial alive at the end of the interval. */
  processes: z.number().int().nonnegative(),
});
export type TrialCpuSample = z.infer<typeof TrialCpuSampleSchema>;

export const TelemetrySchema = z.discriminatedUnion("type", [
  z.object({ v, type: z.literal("gpu"), agent: token, ts, fake: z.boolean(), gpus: z.array(GpuSampleSchema) }),
  z.object({
    v,
    type: z.literal("host"),
    agent: token,
    ts,
    cpuLoadPercent: anyNumber,
    cpuCores: z.number().int().nonnegative(),
    memoryUsedBytes: z.number().nonnegative(),
    memoryTotalBytes: z.number().nonnegative(),
    /**
     * Each running trial's own CPU over the same interval: the CPU time of its processes (its
     * session: the trial, its DataLoader workers, their children), in cores (1.5 = one and a half
     * cores busy on average). Absent from agents that predate it.
     */
    trials: z.array(TrialCpuSampleSchema).optional(),
  }),
]);
export type Telemetry = z.infer<typeof TelemetrySchema>;

// ---------------------------------------------------------------------------------------------
// Control (KV rung-control, key <study>.<trial>)

export const ControlSchema = z.object({
  v,
  type: z.literal("stop"),
  study: token,
  trial: token,
  reason: z.enum(["scheduler-stop", "scheduler-pause", "user-stop", "timeout"]),
  /** Who stopped it: the scheduler's name, "user", or the limit that ran out ("report_timeout", "trial_timeout"). */
  by: z.string(),
  /** The rung (time attribute value) where the scheduler stopped the trial, when it did. */
  rung: anyNumber.nullable().default(null),
  ts,
});
export type Control = z.infer<typeof ControlSchema>;

// ---------------------------------------------------------------------------------------------
// Logs (stream RUNG_LOGS, subject rung.logs.<study>.<trial>.<attempt>.<agent>)

export const LogChunkSchema = z.object({
  v,
  type: z.literal("log"),
  study: token,
  trial: token,
  attempt: z.number().int().positive(),
  agent: token,
  seq: z.number().int().nonnegative(),
  ts,
  /** Raw terminal bytes, escape sequences intact. */
  data: z.instanceof(Uint8Array),
  /** True on the last chunk of the attempt. */
  eof: z.boolean().default(false),
});
export type LogChunk = z.infer<typeof LogChunkSchema>;

// ---------------------------------------------------------------------------------------------
// Studies (KV rung-studies, key <study> and <study>.lease)

export const StudyRecordSchema = z.object({
  v,
  type: z.literal("study"),
  name: token,
  /** The validated spec as JSON; the coordinator owns its schema. */
  spec: z.record(z.string(), z.unknown()),
  specHash: z.string(),
  /** The incarnation id, drawn when the study is first run; absent in records written before ids existed. */
  id: token.optional(),
  /**
   * The coordinator's tag for its events' message ids (claims.ts), drawn with `id`; agents cannot read
   * study records. Absent in records written before it existed.
   */
  secret: token.optional(),
  createdAt: ts,
  /** `budget-spent`: the study's budget ran out; it ended with the best result it had. */
  state: z.enum(["running", "completed", "stopped", "failed", "budget-spent"]),
  updatedAt: ts,
});
export type StudyRecord = z.infer<typeof StudyRecordSchema>;

export const LeaseSchema = z.object({
  v,
  type: z.literal("lease"),
  study: token,
  holder: z.string(),
  host: z.string(),
  pid: z.number().int(),
  expiresAt: ts,
});
export type Lease = z.infer<typeof LeaseSchema>;

// ---------------------------------------------------------------------------------------------
// Accepted order nonces (KV <prefix>-nonces, key: a hash of the order's nonce), for replay protection

export const NonceRecordSchema = z.object({
  v,
  type: z.literal("nonce"),
  /** Sequence of the work-stream message that carried the nonce first: its redeliveries share it. */
  seq: z.number().int().nonnegative(),
  /**
   * When the server stored that message (nanoseconds since the epoch, as a decimal string): with `seq`,
   * what identifies the message, since a work stream deleted and created again numbers from 1 again but
   * cannot give a copy the original's time. Absent in records of older agents (seq alone then).
   */
  stored: z.string().optional(),
  agent: token,
  study: token,
  trial: token,
  ts,
});
export type NonceRecord = z.infer<typeof NonceRecordSchema>;
