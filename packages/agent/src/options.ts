import { homedir, hostname } from "node:os";
import { join, resolve } from "node:path";
import {
  DurationError,
  isValidPublicKey,
  type Logger,
  type LoggerOptions,
  MAX_TOKEN_LENGTH,
  type NatsOptions,
  parseDuration,
  type ResourceOptions,
  validToken,
} from "@rung/protocol";
import { AgentOptionsError } from "./errors.js";
import { parseMetricsAddress } from "./metrics.js";
import type { WarmOptions } from "./warm-pool.js";

/** How the agent's own logger writes (`--log-format`): see {@link AgentOptions.logFormat}. */
export const LogFormat = { auto: "auto", json: "json", pretty: "pretty" } as const satisfies Record<
  string,
  NonNullable<LoggerOptions["format"]>
>;
export type LogFormat = (typeof LogFormat)[keyof typeof LogFormat];

/** What a shutdown does with running trials. */
export const DrainMode = {
  /** Stop claiming and let the running trials end on their own (default). */
  finish: "finish",
  /** Stop claiming, stop the running trials and hand their orders back at once. */
  requeue: "requeue",
} as const;
export type DrainMode = (typeof DrainMode)[keyof typeof DrainMode];

/** What `rung agent` takes. Friendly values in (`"30s"`); {@link compileAgentOptions} turns them into `…Ms`. */
export interface AgentOptions {
  /** How to reach NATS (URL, credentials, TLS). Default: `connectNats` defaults and `RUNG_…` variables. */
  nats?: NatsOptions;
  /** Mesh prefix of subjects, streams and buckets. Default `rung`. */
  prefix?: string;
  /** Agent name: advert key, telemetry subject token, log field. Default the hostname, made a valid name. */
  name?: string;
  /** Use only these GPU indices (`"0,2"` or `[0, 2]`). Default every GPU found. */
  gpus?: string | readonly number[];
  /** The nvidia-smi executable. Default `RUNG_NVIDIA_SMI`, else `nvidia-smi` on PATH. */
  nvidiaSmi?: string;
  /** Simulate this many GPUs instead of looking for real ones (`rung demo`, tests); `"2"` as typed. Default 0. */
  fakeGpus?: number | string;
  /** CPU-only trial slots (pools `cpu1…cpuN`); `"2"` as typed. Default 0: only GPU trials. */
  cpuSlots?: number | string;
  /** Labels for the advert, as a map or as `k=v` strings. Default none. */
  labels?: Readonly<Record<string, string>> | readonly string[];
  /** Price of one GPU-hour on this box, for cost reports; `"2.5"` as typed. Default unknown (null). */
  pricePerGpuHour?: number | string | null;
  /**
   * Root under which each order's `workdir` is resolved; nothing outside it runs. Must exist: the agent
   * refuses to start otherwise. An order whose workdir or program is missing under it is refused
   * (`cannot-run`) and handed back for another agent. Default the cwd.
   */
  workdir?: string;
  /** Where logs and checkpoints live. Default `~/.rung/agent/<name>`. */
  stateDir?: string;
  /**
   * Claim lease (the work consumer's ack wait): a claimed order that is not kept alive within it goes to
   * another agent. Heartbeats go out every third of it. Default `"30s"`.
   */
  lease?: string | number;
  /** Between SIGTERM and SIGKILL when a trial is stopped. Default `"10s"`. */
  stopGrace?: string | number;
  /** What the first shutdown signal does with running trials. Default `finish`. */
  drain?: DrainMode;
  /** The largest checkpoint snapshot stored in the mesh: bytes, or `"512MiB"`, `"4GiB"`. Default `"4GiB"`. */
  maxCheckpoint?: string | number;
  /** Exit after this long without work (rented boxes cost money). Default never (null). */
  idleExit?: string | number | null;
  /** Shell command to run when the agent exits for idleness (`sudo poweroff`). Default none. */
  onIdle?: string | null;
  /**
   * When given, an order runs only if its argv, joined by spaces, starts with one of these prefixes
   * (whole arguments: `python train.py` allows `python train.py --lr 1`, not `python train.pyc`);
   * other orders are rejected (`command-not-allowed`). Default: any command a trusted order names.
   */
  allowCommand?: readonly string[];
  /**
   * Public keys (nkeys, `signing.pub` from `rung auth init`) of the coordinators whose signed orders
   * this agent runs (`--trust`, repeatable). Orders that are unsigned, signed by another key, altered,
   * expired or replayed are rejected and never started. Required unless `insecure`.
   */
  trust?: readonly string[];
  /**
   * Run unsigned orders from anyone who can publish to the work queue (`--insecure`): for a private
   * laptop or a test, never on a shared network. Default false.
   */
  insecure?: boolean;
  /** How often the advert is refreshed; keep well under the bucket's TTL (15 s). Default `"3s"`. */
  advertInterval?: string | number;
  /** GPU samples per agent. Default `"1s"`. */
  telemetryInterval?: string | number;
  /** Host CPU and memory samples. Default `"5s"`. */
  hostInterval?: string | number;
  /**
   * How long one pull waits for an order, and how long an idle agent waits for a work wake before it
   * looks at its pools again. Default `"1s"`.
   */
  pullExpires?: string | number;
  /** Deliveries of one order before JetStream gives it up (poison orders). Default 10. */
  maxDeliver?: number;
  /** Stream and bucket sizing passed to `ensureResources`. Default protocol's defaults. */
  resources?: ResourceOptions;
  /** `--replicas` as typed (`"3"`): overrides `resources.replicas`. Default: `resources.replicas`. */
  replicas?: number | string;
  /** Where the agent logs. Default a pino logger on stderr with `{ agent }` in `logFormat`. */
  logger?: Logger;
  /**
   * How the default logger writes: `pretty` (one readable line per event), `json` (pino's JSON lines),
   * or `auto` — pretty when stderr is a terminal, JSON when it is piped or a file. Default `auto`.
   */
  logFormat?: LogFormat | string;
  /**
   * Serve this box's GPUs and counters in the Prometheus text format on `/metrics`: a port (on
   * loopback) or `HOST:PORT` (`0.0.0.0:9400` for every interface) (`--metrics-port`). Default none (null).
   */
  metricsPort?: number | string | null;
  /**
   * Warm starts (warm-pool.ts): Python trials whose command is `<python> script.py …` are handed to an
   * interpreter of `python` started ahead of time with `preload` imported (`--warm-python`,
   * `--warm-preload torch,sklearn`); `spares` interpreters wait per working directory (default one per
   * trial slot plus one, at most 8). Default off (null): every trial starts its own process.
   */
  warm?: { python: string; preload?: string | readonly string[]; spares?: number | string } | null;
}

export interface CompiledAgentOptions {
  readonly nats: NatsOptions;
  readonly prefix: string;
  readonly name: string;
  readonly gpus: readonly number[] | null;
  readonly nvidiaSmi: string;
  readonly fakeGpus: number;
  readonly cpuSlots: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly pricePerGpuHour: number | null;
  readonly workdir: string;
  readonly stateDir: string;
  readonly leaseMs: number;
  readonly heartbeatMs: number;
  readonly stopGraceMs: number;
  readonly drain: DrainMode;
  readonly maxCheckpointBytes: number;
  readonly idleExitMs: number | null;
  readonly onIdle: string | null;
  readonly allowCommand: readonly string[];
  /** Trusted signer keys; empty only when `insecure`. */
  readonly trust: readonly string[];
  readonly insecure: boolean;
  readonly advertIntervalMs: number;
  readonly telemetryIntervalMs: number;
  readonly hostIntervalMs: number;
  /** How long one pull waits for an order (and an idle loop for a wake) before the claim loop looks again. */
  readonly pullExpiresMs: number;
  readonly maxDeliver: number;
  readonly resources: ResourceOptions;
  readonly logger: Logger | undefined;
  readonly logFormat: LogFormat;
  readonly metrics: { readonly host: string; readonly port: number } | null;
  /** Warm starts; null when off. */
  readonly warm: WarmOptions | null;
}

/** The hostname as a valid agent name: anything outside `[A-Za-z0-9_-]` becomes `-`. */
export function defaultAgentName(host = hostname()): string {
  const name = host
    .replace(/[^A-Za-z0-9_-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, MAX_TOKEN_LENGTH);
  return name || "agent";
}

function duration(flag: string, value: string | number, minMs = 0): number {
  let ms: number;
  try {
    ms = parseDuration(value, flag);
  } catch (err) {
    if (err instanceof DurationError) throw new AgentOptionsError(flag, err.message.replace(`${flag}: `, ""), { cause: err });
    throw err;
  }
  if (ms < minMs) throw new AgentOptionsError(flag, `must be at least ${minMs} ms, got ${JSON.stringify(value)}`);
  return ms;
}

/** The value as the user typed it, for error messages: `"two"`, `NaN`, `-1`. */
function typed(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

function count(flag: string, value: number | string | undefined, max = 1024, min = 0): number {
  if (value === undefined) return 0;
  const n = typeof value === "string" ? (/^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN) : value;
  if (!Number.isInteger(n) || n < min || n > max)
    throw new AgentOptionsError(flag, `must be a whole number from ${min} to ${max}, got ${typed(value)}`);
  return n;
}

function parseGpuList(value: string | readonly number[]): number[] {
  const items = typeof value === "string" ? value.split(",").map((s) => s.trim()) : value.map(String);
  const out: number[] = [];
  for (const item of items) {
    if (!/^\d+$/.test(item))
      throw new AgentOptionsError("--gpus", `expects GPU indices like 0,2; ${JSON.stringify(item)} is not one`);
    const n = Number(item);
    if (!out.includes(n)) out.push(n);
  }
  if (out.length === 0) throw new AgentOptionsError("--gpus", "lists no GPU; leave it out to use every GPU");
  return out.sort((a, b) => a - b);
}

function parseLabels(labels: AgentOptions["labels"]): Record<string, string> {
  if (!labels) return {};
  if (!Array.isArray(labels)) return { ...(labels as Record<string, string>) };
  const out: Record<string, string> = {};
  for (const kv of labels as readonly string[]) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new AgentOptionsError("--label", `expects key=value, got ${JSON.stringify(kv)}`);
    out[kv.slice(0, eq).trim()] = kv.slice(eq + 1).trim();
  }
  return out;
}

const BYTE_UNITS: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
};

/** `"512MiB"`, `"4GiB"`, `"2GB"` or a number of bytes. */
export function byteSize(flag: string, v: string | number): number {
  if (typeof v === "number" && Number.isInteger(v) && v > 0) return v;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(String(v));
  const unit = m ? BYTE_UNITS[(m[2] ?? "").toLowerCase()] : undefined;
  if (!m || unit === undefined || Number(m[1]) <= 0)
    throw new AgentOptionsError(flag, `expects a size such as 512MiB or 4GiB, got ${JSON.stringify(v)}`);
  return Math.floor(Number(m[1]) * unit);
}

/** Applies defaults and bounds once; everything after this works with plain numbers. */
export function compileAgentOptions(o: AgentOptions = {}): CompiledAgentOptions {
  const name = o.name ?? defaultAgentName();
  try {
    validToken(name, "agent name");
  } catch (err) {
    throw new AgentOptionsError("--name", (err as Error).message, { cause: err });
  }
  const prefix = o.prefix ?? "rung";
  try {
    validToken(prefix, "mesh prefix");
  } catch (err) {
    throw new AgentOptionsError("--prefix", (err as Error).message, { cause: err });
  }
  const leaseMs = duration("--lease", o.lease ?? "30s", 1000);
  const drain = o.drain ?? DrainMode.finish;
  if (!Object.values(DrainMode).includes(drain))
    throw new AgentOptionsError("--drain", `must be "finish" or "requeue", got ${JSON.stringify(drain)}`);
  const priceTyped = o.pricePerGpuHour ?? null;
  const price = typeof priceTyped === "string" ? (priceTyped.trim() === "" ? Number.NaN : Number(priceTyped)) : priceTyped;
  if (price !== null && !(Number.isFinite(price) && price >= 0))
    throw new AgentOptionsError("--price-per-gpu-hour", `must be a non-negative number, got ${typed(priceTyped)}`);
  const workdir = resolve(o.workdir ?? process.cwd());
  const stateDir = o.stateDir ? resolve(o.stateDir) : join(homedir(), ".rung", "agent", name);
  const idleExit = o.idleExit ?? null;
  const maxDeliver = o.maxDeliver ?? 10;
  if (!Number.isInteger(maxDeliver) || maxDeliver < 1)
    throw new AgentOptionsError("maxDeliver", `must be a positive whole number, got ${maxDeliver}`);
  for (const p of o.allowCommand ?? [])
    if (!p.trim()) throw new AgentOptionsError("--allow-command", "an allowed command prefix may not be empty");
  const onIdle = o.onIdle?.trim() ? o.onIdle : null;
  const replicasTyped = o.replicas ?? o.resources?.replicas;
  const replicas = replicasTyped === undefined ? undefined : count("--replicas", replicasTyped, 5, 1);
  const logFormat = o.logFormat ?? LogFormat.auto;
  if (!(Object.values(LogFormat) as string[]).includes(logFormat))
    throw new AgentOptionsError("--log-format", `must be auto, json or pretty, got ${typed(logFormat)}`);
  return {
    nats: { ...o.nats, name: o.nats?.name ?? `rung-agent ${name}` },
    prefix,
    name,
    gpus: o.gpus === undefined ? null : parseGpuList(o.gpus),
    nvidiaSmi: o.nvidiaSmi ?? process.env.RUNG_NVIDIA_SMI ?? "nvidia-smi",
    fakeGpus: count("--fake-gpus", o.fakeGpus, 64),
    cpuSlots: count("--cpu-slots", o.cpuSlots, 64),
    labels: parseLabels(o.labels),
    pricePerGpuHour: price,
    workdir,
    stateDir,
    leaseMs,
    // A third of the lease: two heartbeats may be lost before the claim is.
    heartbeatMs: Math.max(250, Math.floor(leaseMs / 3)),
    stopGraceMs: duration("--stop-grace", o.stopGrace ?? "10s"),
    maxCheckpointBytes: byteSize("--max-checkpoint", o.maxCheckpoint ?? "4GiB"),
    drain,
    idleExitMs: idleExit === null ? null : duration("--idle-exit", idleExit, 1000),
    onIdle,
    allowCommand: [...(o.allowCommand ?? [])],
    advertIntervalMs: duration("advertInterval", o.advertInterval ?? "3s", 100),
    telemetryIntervalMs: duration("telemetryInterval", o.telemetryInterval ?? "1s", 100),
    hostIntervalMs: duration("hostInterval", o.hostInterval ?? "5s", 100),
    pullExpiresMs: duration("pullExpires", o.pullExpires ?? "1s", 1000),
    maxDeliver,
    resources: { ...o.resources, ...(replicas === undefined ? {} : { replicas }) },
    logger: o.logger,
    logFormat: logFormat as LogFormat,
    metrics: o.metricsPort === undefined || o.metricsPort === null ? null : parseMetricsAddress(o.metricsPort),
    warm: compileWarm(o.warm),
    // Last, so that a mistake in any other flag is reported first.
    ...compileTrust(o),
  };
}

/** `--warm-python`, `--warm-preload`: module names checked here, the interpreter when the agent starts. */
function compileWarm(w: AgentOptions["warm"]): WarmOptions | null {
  if (!w || !w.python?.trim()) {
    if (w?.preload && (typeof w.preload === "string" ? w.preload.trim() : w.preload.length > 0))
      throw new AgentOptionsError("--warm-preload", "needs --warm-python, the interpreter that imports them");
    return null;
  }
  const list = typeof w.preload === "string" ? w.preload.split(",") : [...(w.preload ?? [])];
  const preload = list.map((m) => m.trim()).filter((m) => m !== "");
  for (const m of preload)
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(m))
      throw new AgentOptionsError(
        "--warm-preload",
        `expects Python module names like torch,sklearn; ${JSON.stringify(m)} is not one`,
      );
  return {
    python: w.python.trim(),
    preload,
    spares: w.spares === undefined ? null : count("--warm-spares", w.spares, 64, 1),
  };
}

/** `--trust` and `--insecure`: an agent runs signed orders only, unless told in so many words not to. */
function compileTrust(o: AgentOptions): { trust: readonly string[]; insecure: boolean } {
  const trust = [...new Set((o.trust ?? []).map((k) => k.trim()).filter((k) => k !== ""))];
  for (const k of trust)
    if (!isValidPublicKey(k))
      throw new AgentOptionsError(
        "--trust",
        `${JSON.stringify(k)} is not an nkey public key (signing.pub from "rung auth init")`,
      );
  const insecure = o.insecure ?? false;
  if (trust.length === 0 && !insecure)
    throw new AgentOptionsError(
      "--trust",
      "no coordinator key to trust: without one this agent would run any command that anyone able to publish work sends it. " +
        'Pass --trust PUBKEY (signing.pub from "rung auth init"), or --insecure on a private machine',
    );
  if (trust.length > 0 && insecure)
    throw new AgentOptionsError("--insecure", "cannot be combined with --trust; leave one of them out");
  return { trust, insecure };
}
