import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { type GpuInfo, type GpuSample, type Logger, migIndex } from "@rung/protocol";
import type { GpuProcess } from "./claiming/placement.js";
import { NvidiaSmiError } from "./errors.js";

/**
 * Everything Rung asks nvidia-smi, and the parsing of its answers. The inventory is one query at
 * start; telemetry is ONE long-lived `-lms` child whose lines are parsed as they come (a process per
 * sample would cost more than the rest of the agent together), restarted with backoff if it dies.
 *
 * `--format=csv,noheader,nounits` prints one line per GPU and tick, fields separated by ", ". Any
 * reading may be `[N/A]` (passively cooled cards have no fan, MIG slices no power reading) or
 * `[Not Supported]`; those, and anything else that is not a number, become null rather than failing
 * the line.
 */

export const INVENTORY_FIELDS = ["index", "uuid", "name", "memory.total", "driver_version"] as const;
export const TELEMETRY_FIELDS = [
  "index",
  "uuid",
  "utilization.gpu",
  "utilization.memory",
  "memory.used",
  "memory.total",
  "power.draw",
  "temperature.gpu",
  "clocks.sm",
] as const;

/** One GPU's readings from one tick; the study/trial tags are added by telemetry. */
export type GpuReading = Omit<GpuSample, "study" | "trial">;

/** A numeric reading, or null for `[N/A]`, `[Not Supported]`, `[Unknown Error]` and other non-numbers. */
export function parseReading(field: string): number | null {
  const s = field.trim();
  if (s === "" || s.startsWith("[") || /^n\/?a$/i.test(s)) return null;
  const n = Number(s);
  return Number.isFinite(n) ? n : null;
}

function splitCsv(line: string): string[] {
  return line.split(",").map((f) => f.trim());
}

/** Parses the inventory query's output; lines that make no sense are skipped. */
export function parseInventory(stdout: string): GpuInfo[] {
  const out: GpuInfo[] = [];
  for (const line of stdout.split("\n")) {
    if (!line.trim()) continue;
    const f = splitCsv(line);
    if (f.length < INVENTORY_FIELDS.length) continue;
    const index = Number(f[0]);
    if (!Number.isInteger(index) || index < 0) continue;
    // A GPU name may itself contain a comma; the fields around it are fixed.
    const name = f.slice(2, f.length - 2).join(", ");
    out.push({
      index,
      uuid: f[1] as string,
      name,
      memoryTotalMiB: parseReading(f[f.length - 2] as string) ?? 0,
      driver: f[f.length - 1] as string,
      fake: false,
    });
  }
  return out;
}

/** Parses one line of the telemetry query; undefined when it is not one. */
export function parseTelemetryLine(line: string): GpuReading | undefined {
  const f = splitCsv(line);
  if (f.length !== TELEMETRY_FIELDS.length) return undefined;
  const index = Number(f[0]);
  if (!/^\d+$/.test(f[0] as string) || !Number.isInteger(index)) return undefined;
  const r = (i: number) => parseReading(f[i] as string);
  return {
    index,
    uuid: f[1] as string,
    utilizationGpu: r(2),
    utilizationMemory: r(3),
    memoryUsedMiB: r(4),
    memoryTotalMiB: r(5),
    powerW: r(6),
    temperatureC: r(7),
    smClockMHz: r(8),
  };
}

export const COMPUTE_APPS_FIELDS = ["pid", "used_memory", "gpu_uuid"] as const;

/** Parses `--query-compute-apps=pid,used_memory,gpu_uuid --format=csv,noheader,nounits`; other lines are skipped. */
export function parseComputeApps(stdout: string): GpuProcess[] {
  const out: GpuProcess[] = [];
  for (const line of stdout.split("\n")) {
    const f = splitCsv(line);
    if (f.length !== COMPUTE_APPS_FIELDS.length || !/^\d+$/.test(f[0] as string)) continue;
    // A process whose memory the driver cannot attribute (some MIG setups) prints [N/A]: it counts as 0.
    out.push({ pid: Number(f[0]), usedMiB: parseReading(f[1] as string) ?? 0, gpuUuid: f[2] as string });
  }
  return out;
}

/** The GPU processes now; null when nvidia-smi cannot say (placement then trusts declarations only). */
export function queryComputeApps(path: string, timeoutMs = 5000): Promise<GpuProcess[] | null> {
  return new Promise((resolve) => {
    execFile(
      path,
      [`--query-compute-apps=${COMPUTE_APPS_FIELDS.join(",")}`, "--format=csv,noheader,nounits"],
      { timeout: timeoutMs, maxBuffer: 1024 * 1024 },
      (err, stdout) => resolve(err ? null : parseComputeApps(String(stdout))),
    );
  });
}

/** One MIG instance as `nvidia-smi -L` lists it under its GPU. */
export interface MigListing {
  parent: number;
  device: number;
  profile: string;
  uuid: string;
}

/**
 * Parses `nvidia-smi -L`: `GPU 0: NAME (UUID: GPU-…)` lines, each followed by its MIG devices when
 * MIG is on, `  MIG 1g.10gb     Device  0: (UUID: MIG-…)`.
 */
export function parseMigListing(stdout: string): MigListing[] {
  const out: MigListing[] = [];
  let parent: number | null = null;
  for (const line of stdout.split("\n")) {
    const gpu = /^GPU (\d+): /.exec(line);
    if (gpu) {
      parent = Number(gpu[1]);
      continue;
    }
    const mig = /^\s+MIG\s+(\S+)\s+Device\s+(\d+):\s+\(UUID:\s+(MIG-[^)\s]+)\)/.exec(line);
    if (mig && parent !== null) out.push({ parent, device: Number(mig[2]), profile: mig[1] as string, uuid: mig[3] as string });
  }
  return out;
}

/**
 * What a MIG profile's name promises, as a share of the device: `1g.10gb` is 9.75 GiB usable, not 10
 * (the driver keeps the rest), and `nvidia-smi` has no per-instance memory query that works without
 * privileges everywhere, so an instance is taken to have 97.5 % of its profile's figure.
 */
export const MIG_MEMORY_SHARE = 0.975;

/**
 * The compute slices and memory of a MIG profile: a GPU instance (`3g.40gb`) or a compute instance
 * inside one (`1c.3g.40gb`: 1 of the instance's 3 slices; the 40 GB are the GPU instance's, shared by
 * its compute instances). Null for a name it does not know.
 */
export function migProfile(profile: string): { slices: number; memoryMiB: number } | null {
  const p = /(?:^|\.)(\d+)g\.(\d+)gb/i.exec(profile);
  if (!p) return null;
  const c = /^(\d+)c\./i.exec(profile);
  return {
    slices: Number(c?.[1] ?? p[1]),
    memoryMiB: Math.floor(Number(p[2]) * 1024 * MIG_MEMORY_SHARE),
  };
}

/**
 * A GPU split into MIG instances is offered as its instances: each with its `MIG-…` UUID (what
 * CUDA_VISIBLE_DEVICES takes), its memory and compute share from its profile (`3g.40gb`: 3 of the
 * GPU's 7 compute slices — 4 on an A30 — and 97.5 % of 40 GB, see MIG_MEMORY_SHARE), and the index
 * `migIndex(parent, device)`. A GPU in MIG mode without instances (`migEnabled`, from
 * `queryMigModes`) has nothing a CUDA process can use: it is not offered at all.
 */
export function expandMig(
  gpus: readonly GpuInfo[],
  listing: readonly MigListing[],
  migEnabled: ReadonlySet<number> = new Set(),
): GpuInfo[] {
  const out: GpuInfo[] = [];
  for (const g of gpus) {
    const instances = listing.filter((m) => m.parent === g.index).sort((a, b) => a.device - b.device);
    if (instances.length === 0) {
      if (!migEnabled.has(g.index)) out.push(g);
      continue;
    }
    const slices = /\bA30\b/.test(g.name) ? 4 : 7;
    for (const m of instances) {
      const p = migProfile(m.profile);
      out.push({
        index: migIndex(g.index, m.device),
        uuid: m.uuid,
        name: `${g.name} MIG ${m.profile}`,
        memoryTotalMiB: p?.memoryMiB ?? 0,
        driver: g.driver,
        fake: g.fake,
        mig: { parent: g.index, profile: m.profile, computeShare: p ? Math.min(1, p.slices / slices) : 0 },
      });
    }
  }
  return out;
}

/**
 * The GPUs whose MIG mode is on now (`--query-gpu=index,mig.mode.current`): one in MIG mode with no
 * instances listed must not be offered as a whole GPU. Empty when the query fails (a driver or GPU
 * without MIG prints `[N/A]`, an old one rejects the field).
 */
export function queryMigModes(path: string, timeoutMs = 15_000): Promise<Set<number>> {
  return new Promise((resolve) => {
    execFile(
      path,
      ["--query-gpu=index,mig.mode.current", "--format=csv,noheader,nounits"],
      { timeout: timeoutMs, maxBuffer: 1024 * 1024 },
      (err, stdout) => {
        const on = new Set<number>();
        if (!err)
          for (const line of String(stdout).split("\n")) {
            const [index, mode] = splitCsv(line);
            if (index !== undefined && /^\d+$/.test(index) && mode?.trim() === "Enabled") on.add(Number(index));
          }
        resolve(on);
      },
    );
  });
}

/** `nvidia-smi -L`'s MIG devices; none when it fails (a driver without MIG). */
export function queryMigListing(path: string, timeoutMs = 15_000): Promise<MigListing[]> {
  return new Promise((resolve) => {
    execFile(path, ["-L"], { timeout: timeoutMs, maxBuffer: 1024 * 1024 }, (err, stdout) =>
      resolve(err ? [] : parseMigListing(String(stdout))),
    );
  });
}

export type InventoryResult = { ok: true; gpus: GpuInfo[] } | { ok: false; missing: boolean; error: Error };

/** Runs the inventory query once. `missing` says nvidia-smi is not there at all (a CPU box). */
export function queryGpuInventory(path: string, timeoutMs = 15_000): Promise<InventoryResult> {
  return new Promise((resolve) => {
    execFile(
      path,
      [`--query-gpu=${INVENTORY_FIELDS.join(",")}`, "--format=csv,noheader,nounits"],
      { timeout: timeoutMs, maxBuffer: 1024 * 1024 },
      (err, stdout) => {
        if (err) {
          const code = (err as NodeJS.ErrnoException).code;
          const missing = code === "ENOENT" || code === "EACCES";
          const detail = missing
            ? `not found (${code})`
            : String(stdout || err.message)
                .trim()
                .split("\n")[0] || err.message;
          resolve({ ok: false, missing, error: new NvidiaSmiError(path, detail, { cause: err }) });
          return;
        }
        resolve({ ok: true, gpus: parseInventory(String(stdout)) });
      },
    );
  });
}

export interface NvidiaSmiSamplerOptions {
  path: string;
  intervalMs: number;
  log: Logger;
  /** Backoff between restarts of a dead child: from `minBackoffMs` doubling to `maxBackoffMs`. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * The long-lived `nvidia-smi … -lms N` child. Keeps the latest reading per GPU index; a reading older
 * than three intervals is reported as stale (telemetry then publishes nulls, not old numbers).
 */
export class NvidiaSmiSampler {
  readonly #o: Required<NvidiaSmiSamplerOptions>;
  readonly #latest = new Map<number, { at: number; reading: GpuReading }>();
  #child: ChildProcess | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  #backoffMs: number;
  #closed = false;
  #exited: Promise<void> = Promise.resolve();
  #restarts = 0;
  #malformed = 0;

  constructor(options: NvidiaSmiSamplerOptions) {
    this.#o = { minBackoffMs: 1000, maxBackoffMs: 30_000, ...options };
    this.#backoffMs = this.#o.minBackoffMs;
  }

  get restarts(): number {
    return this.#restarts;
  }
  get malformedLines(): number {
    return this.#malformed;
  }

  start(): void {
    if (this.#closed || this.#child) return;
    const args = [
      `--query-gpu=${TELEMETRY_FIELDS.join(",")}`,
      "--format=csv,noheader,nounits",
      "-lms",
      String(this.#o.intervalMs),
    ];
    const startedAt = Date.now();
    let child: ChildProcess;
    try {
      child = spawn(this.#o.path, args, { stdio: ["ignore", "pipe", "pipe"] });
    } catch (err) {
      this.#scheduleRestart(startedAt, `could not start: ${(err as Error).message}`);
      return;
    }
    this.#child = child;
    let stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (d: string) => {
      stderr = (stderr + d).slice(-2000);
    });
    if (child.stdout) {
      const rl = createInterface({ input: child.stdout, crlfDelay: Number.POSITIVE_INFINITY });
      rl.on("line", (line) => this.#onLine(line));
    }
    let ended = false;
    this.#exited = new Promise<void>((resolve) => {
      const end = (why: string) => {
        if (ended) return;
        ended = true;
        this.#child = undefined;
        resolve();
        if (!this.#closed) this.#scheduleRestart(startedAt, `${why}${stderr ? `: ${stderr.trim().split("\n").at(-1)}` : ""}`);
      };
      child.once("error", (err) => end(`could not run: ${err.message}`));
      child.once("close", (code, signal) => end(signal ? `killed by ${signal}` : `exited with code ${code}`));
    });
  }

  #onLine(line: string): void {
    if (!line.trim()) return;
    const reading = parseTelemetryLine(line);
    if (!reading) {
      this.#malformed += 1;
      if (this.#malformed === 1)
        this.#o.log.warn({ line: line.slice(0, 200) }, "nvidia-smi printed a line Rung cannot parse (further ones are counted)");
      return;
    }
    this.#latest.set(reading.index, { at: Date.now(), reading });
  }

  #scheduleRestart(startedAt: number, why: string): void {
    // A child that ran a good while before dying is a hiccup, not a loop: start again from the shortest wait.
    if (Date.now() - startedAt > 30_000) this.#backoffMs = this.#o.minBackoffMs;
    const wait = this.#backoffMs;
    this.#backoffMs = Math.min(this.#o.maxBackoffMs, this.#backoffMs * 2);
    this.#restarts += 1;
    this.#o.log.warn({ path: this.#o.path, retryInMs: wait }, `nvidia-smi telemetry child ${why}; restarting`);
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      this.start();
    }, wait);
  }

  /** The latest reading of a GPU, or undefined when there is none fresher than three intervals. */
  latest(index: number, now = Date.now()): GpuReading | undefined {
    const l = this.#latest.get(index);
    if (!l || now - l.at > 3 * this.#o.intervalMs + 500) return undefined;
    return l.reading;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    const child = this.#child;
    if (child) {
      child.kill("SIGTERM");
      const killTimer = setTimeout(() => child.kill("SIGKILL"), 2000);
      await this.#exited;
      clearTimeout(killTimer);
    }
  }
}
