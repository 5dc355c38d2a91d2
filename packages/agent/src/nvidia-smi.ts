import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { GpuInfo, GpuSample, Logger } from "@rung/protocol";
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
