import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { type ObjectStore, Objm } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import { nanos } from "./durations.js";
import { ResourceSetupError } from "./errors.js";
import { isNotFound } from "./nats-errors.js";
import { Subjects } from "./subjects.js";
import { validToken } from "./tokens.js";

/**
 * Names of every stream, bucket and consumer for one prefix. The default prefix `rung` gives the
 * names in the design (`RUNG_WORK`, `rung-agents`, …); tests pass their own prefix so that many
 * independent meshes share one nats-server.
 */
export class MeshNames {
  readonly prefix: string;
  readonly subjects: Subjects;
  readonly streams: { work: string; events: string; telemetry: string; logs: string };
  readonly buckets: { agents: string; control: string; studies: string };
  /**
   * Nonces of the signed orders agents have accepted (replay protection, see the agent's
   * replay-ledger.ts). Agents create it; it is not in `buckets` because nothing else needs it.
   */
  readonly nonces: string;
  /** The Object Store bucket of trial checkpoints (stream `OBJ_<name>`). */
  readonly checkpoints: string;

  constructor(prefix = "rung") {
    this.prefix = validToken(prefix, "mesh prefix");
    this.subjects = new Subjects(prefix);
    const P = prefix.toUpperCase().replace(/-/g, "_");
    this.streams = { work: `${P}_WORK`, events: `${P}_EVENTS`, telemetry: `${P}_TELEMETRY`, logs: `${P}_LOGS` };
    this.buckets = { agents: `${prefix}-agents`, control: `${prefix}-control`, studies: `${prefix}-studies` };
    this.nonces = `${prefix}-nonces`;
    this.checkpoints = `${prefix}-checkpoints`;
  }

  /** The one durable pull consumer that every agent shares for a pool. */
  workConsumer(pool: string): string {
    return `${this.prefix}-work-${validToken(pool, "pool")}`;
  }
  /** Whether a consumer of the work stream is one of the pools' ({@link workConsumer}). */
  isWorkConsumer(name: string): boolean {
    return name.startsWith(`${this.prefix}-work-`);
  }
}

/** Retention and sizing of the mesh's resources; every field has a default. */
export interface ResourceOptions {
  /**
   * JetStream replicas for every stream and bucket (3 on a three-node cluster). Default 1 for what is
   * created; an existing stream's replicas change only when this is given.
   */
  replicas?: number;
  /**
   * Whether to update an existing stream whose configuration differs (the coordinator, `rung server`).
   * Agents pass false: they create what is missing and leave the rest as its owner configured it, so
   * their NATS user needs no right to change streams. Default true.
   */
  updateExisting?: boolean;
  /** How long GPU samples stay replayable for `rung tail --since`. Default 1 hour. */
  telemetryMaxAgeMs?: number;
  /** Byte cap of the telemetry stream. Default 1 GiB. */
  telemetryMaxBytes?: number;
  /** Byte cap of the logs stream; oldest chunks go first. Default 2 GiB. */
  logsMaxBytes?: number;
  /** How long terminal output is kept. Default 14 days. */
  logsMaxAgeMs?: number;
  /** Agent adverts expire this long after their last refresh. Default 15 s. */
  advertTtlMs?: number;
  /** Window in which a re-published order with the same id is dropped by the server. Default 10 min. */
  duplicateWindowMs?: number;
}

export interface CompiledResourceOptions {
  replicas: number;
  telemetryMaxAgeMs: number;
  telemetryMaxBytes: number;
  logsMaxBytes: number;
  logsMaxAgeMs: number;
  advertTtlMs: number;
  duplicateWindowMs: number;
}

export function compileResourceOptions(o: ResourceOptions = {}): CompiledResourceOptions {
  return {
    replicas: o.replicas ?? 1,
    telemetryMaxAgeMs: o.telemetryMaxAgeMs ?? 3_600_000,
    telemetryMaxBytes: o.telemetryMaxBytes ?? 1024 ** 3,
    logsMaxBytes: o.logsMaxBytes ?? 2 * 1024 ** 3,
    logsMaxAgeMs: o.logsMaxAgeMs ?? 14 * 86_400_000,
    advertTtlMs: o.advertTtlMs ?? 15_000,
    duplicateWindowMs: o.duplicateWindowMs ?? 600_000,
  };
}

/** Stream definitions, exactly as `ensureResources` creates them. */
export type StreamDefinition = Partial<StreamConfig> & { name: string };

export function streamConfigs(names: MeshNames, options: ResourceOptions = {}): StreamDefinition[] {
  const o = compileResourceOptions(options);
  const s = names.subjects;
  return [
    {
      name: names.streams.work,
      subjects: [s.workAll()],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      num_replicas: o.replicas,
      duplicate_window: nanos(o.duplicateWindowMs),
      description: "Rung work orders: one message per trial attempt, removed when an agent acks it",
    },
    {
      name: names.streams.events,
      subjects: [s.eventsAll()],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      num_replicas: o.replicas,
      duplicate_window: nanos(o.duplicateWindowMs),
      description: "Rung trial lifecycle, reports and decisions: the source of truth of every study",
    },
    {
      name: names.streams.telemetry,
      subjects: [s.telemetryAll()],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      num_replicas: o.replicas,
      max_age: nanos(o.telemetryMaxAgeMs),
      max_bytes: o.telemetryMaxBytes,
      discard: DiscardPolicy.Old,
      description: "Rung GPU and host samples",
    },
    {
      name: names.streams.logs,
      subjects: [s.logsAll()],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      num_replicas: o.replicas,
      max_age: nanos(o.logsMaxAgeMs),
      max_bytes: o.logsMaxBytes,
      discard: DiscardPolicy.Old,
      description: "Rung trial terminal output",
    },
  ];
}

export interface MeshResources {
  names: MeshNames;
  jsm: JetStreamManager;
  agents: KV;
  control: KV;
  studies: KV;
}

const RETRIES = 5;

async function withRetry<T>(what: string, fn: () => Promise<T>): Promise<T> {
  let last: unknown;
  for (let i = 0; i < RETRIES; i++) {
    try {
      return await fn();
    } catch (err) {
      last = err;
      // Two processes creating the same resource at once: one wins, the other sees "already in
      // use" or a conflicting update; the next round finds it and goes on.
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 100 * (i + 1)));
    }
  }
  throw new ResourceSetupError(what, { cause: last });
}

async function ensureStream(
  jsm: JetStreamManager,
  config: StreamDefinition,
  o: { update: boolean; replicasGiven: boolean },
): Promise<void> {
  const name = config.name;
  await withRetry(`stream ${name}`, async () => {
    let info: Awaited<ReturnType<JetStreamManager["streams"]["info"]>> | undefined;
    try {
      info = await jsm.streams.info(name);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (!info) {
      await jsm.streams.add(config);
      return;
    }
    if (!o.update) return;
    const cur = info.config;
    const changed =
      JSON.stringify(cur.subjects) !== JSON.stringify(config.subjects) ||
      (config.max_age !== undefined && cur.max_age !== config.max_age) ||
      (config.max_bytes !== undefined && cur.max_bytes !== config.max_bytes) ||
      (config.duplicate_window !== undefined && cur.duplicate_window !== config.duplicate_window) ||
      (o.replicasGiven && config.num_replicas !== undefined && cur.num_replicas !== config.num_replicas);
    if (changed) {
      // Retention and storage cannot change in place; everything we tune can.
      const { subjects, max_age, max_bytes, duplicate_window } = config;
      const num_replicas = o.replicasGiven ? config.num_replicas : cur.num_replicas;
      await jsm.streams.update(name, { ...cur, subjects, max_age, max_bytes, duplicate_window, num_replicas });
    }
  });
}

/**
 * Creates or updates every stream and bucket of the mesh. Idempotent, and safe when several
 * processes call it at once (each agent and each coordinator does at start).
 */
export async function ensureResources(
  nc: NatsConnection,
  names: MeshNames = new MeshNames(),
  options: ResourceOptions = {},
): Promise<MeshResources> {
  const o = compileResourceOptions(options);
  let jsm: JetStreamManager;
  try {
    jsm = await jetstreamManager(nc);
  } catch (cause) {
    throw new ResourceSetupError("the JetStream API", { cause });
  }
  const how = { update: options.updateExisting !== false, replicasGiven: options.replicas !== undefined };
  for (const config of streamConfigs(names, options)) await ensureStream(jsm, config, how);
  const kvm = new Kvm(nc);
  const agents = await withRetry(`bucket ${names.buckets.agents}`, () =>
    kvm.create(names.buckets.agents, { history: 1, ttl: o.advertTtlMs, replicas: o.replicas }),
  );
  const control = await withRetry(`bucket ${names.buckets.control}`, () =>
    kvm.create(names.buckets.control, { history: 1, replicas: o.replicas }),
  );
  const studies = await withRetry(`bucket ${names.buckets.studies}`, () =>
    kvm.create(names.buckets.studies, { history: 5, replicas: o.replicas }),
  );
  return { names, jsm, agents, control, studies };
}

/**
 * How long the nonces of accepted orders are kept in the nonces bucket. Agents refuse orders valid for
 * longer than this, so an order cannot outlive the record that makes a copy of it a replay.
 */
export const NONCE_WINDOW_MS = 7 * 86_400_000;

/** Creates (or finds) the bucket of accepted order nonces; agents call it (see `MeshNames.nonces`). */
export async function ensureNonceBucket(nc: NatsConnection, names: MeshNames, options: ResourceOptions = {}): Promise<KV> {
  const o = compileResourceOptions(options);
  return withRetry(`bucket ${names.nonces}`, () =>
    new Kvm(nc).create(names.nonces, { history: 1, ttl: NONCE_WINDOW_MS, replicas: o.replicas }),
  );
}

/**
 * Creates (or finds) the Object Store bucket of trial checkpoints: agents store snapshots in it, the
 * coordinator prunes it, `rung study checkpoint` reads it. File storage, replicated like the streams.
 */
export async function ensureCheckpointStore(
  nc: NatsConnection,
  names: MeshNames,
  options: ResourceOptions = {},
): Promise<ObjectStore> {
  const o = compileResourceOptions(options);
  return withRetry(`bucket ${names.checkpoints}`, () =>
    new Objm(nc).create(names.checkpoints, { storage: StorageType.File, replicas: o.replicas }),
  );
}

export interface WorkConsumerOptions {
  /** Claim lease: an order not acked or extended within this goes to another agent. Default 30 s. */
  ackWaitMs?: number;
  /** Deliveries before an order is given up (poison orders). Default 10. */
  maxDeliver?: number;
}

/** A pool's work consumer as it now is: its name and the claim lease the mesh keeps for it. */
export interface WorkConsumer {
  durable: string;
  /** The consumer's ack wait: at least the lease asked for (agents never shorten it, see ensureWorkConsumer). */
  ackWaitMs: number;
}

/**
 * Creates (or finds) the shared durable pull consumer of a pool. Safe to call concurrently.
 *
 * Its ack wait is the claim lease of every agent that pulls from it, and each agent heartbeats at a
 * third of its own `--lease`. So an agent only ever lengthens it here, never shortens it: an agent
 * started with a shorter lease than the others' would otherwise have the server hand their orders on
 * between two of their heartbeats, and two copies of a trial would run. (An agent with the shorter
 * lease only heartbeats more often than needed, and gives up a claim before the server would.) A
 * coordinator, which sees every agent's lease in its advert, brings it down again when the agent that
 * asked for it has gone (coordinator runtime/claim-lease.ts).
 */
export async function ensureWorkConsumer(
  jsm: JetStreamManager,
  names: MeshNames,
  pool: string,
  options: WorkConsumerOptions = {},
): Promise<WorkConsumer> {
  const durable = names.workConsumer(pool);
  const ackWait = nanos(options.ackWaitMs ?? 30_000);
  const maxDeliver = options.maxDeliver ?? 10;
  let kept = ackWait;
  await withRetry(`consumer ${durable}`, async () => {
    try {
      // Read, then write: two agents starting together may each write what they read. The one whose
      // lease is the longer reads again until the consumer keeps at least its lease.
      for (let i = 0; ; i++) {
        const info = await jsm.consumers.info(names.streams.work, durable);
        const current = info.config.ack_wait ?? 0;
        kept = Math.max(current, ackWait);
        // (max_deliver is written once: agents asking for different ones are not worth a fight.)
        if (current === kept && (info.config.max_deliver === maxDeliver || i > 0)) return;
        if (i >= 5) throw new Error(`consumer ${durable} keeps changing its ack wait`);
        await jsm.consumers.update(names.streams.work, durable, { ack_wait: kept, max_deliver: maxDeliver });
      }
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    kept = ackWait;
    await jsm.consumers.add(names.streams.work, {
      durable_name: durable,
      filter_subject: names.subjects.work(pool),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: ackWait,
      max_deliver: maxDeliver,
      max_ack_pending: -1,
    });
  });
  return { durable, ackWaitMs: Math.round(kept / 1_000_000) };
}
