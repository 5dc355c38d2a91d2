import type { NatsConnection } from "@nats-io/transport-node";
import { createLogger, type Logger, MeshNames, type ResourceOptions, type WorkOrder } from "@rung/protocol";
import { RunOptionsError } from "../errors.js";
import type { StudyProgress, StudySpec } from "../study/index.js";

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
  /** Coordinator lease TTL. Default 15 s; at least 1 s. */
  leaseMs?: number;
  /** How long an order stays valid in the queue. Default 24 h; at least 1 s. */
  orderTtlMs?: number;
  /** Adverts older than this are not counted as free capacity. Default 15 s; at least 1 s. */
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

/** `RunStudyOptions` with every default applied and every bound checked, once, before anything starts. */
export interface CompiledRunOptions {
  readonly nc: NatsConnection;
  readonly spec: StudySpec;
  readonly names: MeshNames;
  /** The study's logger (child of the given one, with `study`). */
  readonly log: Logger;
  readonly onProgress: ((p: StudyProgress) => void) | null;
  readonly signal: AbortSignal | null;
  readonly leaseMs: number;
  readonly orderTtlMs: number;
  readonly advertStaleMs: number;
  readonly signOrder: ((order: WorkOrder) => WorkOrder) | null;
  readonly resources: ResourceOptions | undefined;
}

export const RUN_DEFAULTS = { prefix: "rung", leaseMs: 15_000, orderTtlMs: 86_400_000, advertStaleMs: 15_000 } as const;

function duration(option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 1000) throw new RunOptionsError(option, `must be at least 1000 ms, got ${value}`);
  return value;
}

/** Applies defaults and bounds; throws `RunOptionsError` for a value out of bounds (a bad `--prefix` throws protocol's token error). */
export function compileRunOptions(o: RunStudyOptions): CompiledRunOptions {
  return {
    nc: o.nc,
    spec: o.spec,
    names: new MeshNames(o.prefix ?? RUN_DEFAULTS.prefix),
    log: (o.log ?? createLogger()).child({ study: o.spec.name }),
    onProgress: o.onProgress ?? null,
    signal: o.signal ?? null,
    leaseMs: duration("leaseMs", o.leaseMs, RUN_DEFAULTS.leaseMs),
    orderTtlMs: duration("orderTtlMs", o.orderTtlMs, RUN_DEFAULTS.orderTtlMs),
    advertStaleMs: duration("advertStaleMs", o.advertStaleMs, RUN_DEFAULTS.advertStaleMs),
    signOrder: o.signOrder ?? null,
    resources: o.resources,
  };
}
