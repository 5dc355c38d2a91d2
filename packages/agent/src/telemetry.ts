import { cpus, freemem, totalmem } from "node:os";
import type { NatsConnection } from "@nats-io/transport-node";
import { encode, type GpuInfo, type GpuSample, type Logger, SCHEMA_VERSION, type Subjects, type Telemetry } from "@rung/protocol";
import { type FakeLoad, fakeReading } from "./fake-gpus.js";
import type { GpuReading, NvidiaSmiSampler } from "./nvidia-smi.js";
import { TrialCpuMeter } from "./process-cpu.js";
import { type SlotHolder, type Slots, shareOf } from "./slots.js";

/**
 * One GPU message per interval (all GPUs of the agent in one msgpack message, each tagged with the
 * study and trial on it) and a host message every few intervals, on `rung.telemetry.<agent>`. The
 * host message carries the whole host's CPU and, measured over the same interval, each running
 * trial's own (`process-cpu.ts`): the diagnosis judges a trial by its own CPU, not its neighbours'.
 *
 * The numbers come from the long-lived nvidia-smi child's latest line per GPU (or the fake GPUs), so
 * a sample costs a timer, a map lookup and one publish: nothing is spawned or polled per sample.
 * Nothing is published while NATS is away — a sample is only worth something live, and the client
 * would otherwise buffer them in memory until it reconnects.
 */

export interface TelemetryOptions {
  nc: NatsConnection;
  subjects: Subjects;
  agent: string;
  gpus: readonly GpuInfo[];
  fake: boolean;
  sampler: NvidiaSmiSampler | undefined;
  slots: Slots;
  intervalMs: number;
  hostIntervalMs: number;
  isConnected(): boolean;
  log: Logger;
}

const NO_READING = {
  utilizationGpu: null,
  utilizationMemory: null,
  memoryUsedMiB: null,
  powerW: null,
  temperatureC: null,
  smClockMHz: null,
} as const;

export class TelemetryPublisher {
  readonly #o: TelemetryOptions;
  readonly #latest = new Map<number, GpuReading>();
  #gpuTimer: NodeJS.Timeout | undefined;
  #hostTimer: NodeJS.Timeout | undefined;
  #lastCpu = cpuTimes();
  readonly #trialCpu = new TrialCpuMeter();
  #published = 0;

  constructor(options: TelemetryOptions) {
    this.#o = options;
  }

  get published(): number {
    return this.#published;
  }

  start(): void {
    if (this.#o.gpus.length > 0) this.#gpuTimer = setInterval(() => this.#gpuTick(), this.#o.intervalMs);
    this.#hostTimer = setInterval(() => this.#hostTick(), this.#o.hostIntervalMs);
  }

  /** The latest reading of a GPU (what the advert shows), refreshed each tick. */
  latest(index: number): GpuReading | undefined {
    return this.#latest.get(index);
  }

  /** Builds the current readings; also runs on its own before the first tick, for the first advert. */
  sample(): GpuSample[] {
    const o = this.#o;
    const now = Date.now();
    return o.gpus.map((g) => {
      const holder = o.slots.holderOfGpu(g.index);
      const reading = o.fake
        ? fakeReading(g, fakeLoad(o.slots.holdersOfGpu(g.index)))
        : (o.sampler?.latest(g.index, now) ?? { index: g.index, uuid: g.uuid, memoryTotalMiB: g.memoryTotalMiB, ...NO_READING });
      this.#latest.set(g.index, reading);
      return { ...reading, study: holder?.study ?? null, trial: holder?.trial ?? null };
    });
  }

  #gpuTick(): void {
    const gpus = this.sample();
    if (!this.#o.isConnected()) return;
    const msg: Telemetry = { v: SCHEMA_VERSION, type: "gpu", agent: this.#o.agent, ts: Date.now(), fake: this.#o.fake, gpus };
    this.#publish(msg);
  }

  #hostTick(): void {
    const now = cpuTimes();
    const busy = now.busy - this.#lastCpu.busy;
    const total = now.total - this.#lastCpu.total;
    this.#lastCpu = now;
    // Read on every tick, connected or not, so that each sample covers exactly one interval; /proc is
    // read only while a trial holds a slot.
    const trials = this.#o.slots.busy ? this.#trialCpu.sample() : this.#trialCpu.idle();
    if (!this.#o.isConnected()) return;
    const memoryTotalBytes = totalmem();
    const msg: Telemetry = {
      v: SCHEMA_VERSION,
      type: "host",
      agent: this.#o.agent,
      ts: Date.now(),
      cpuLoadPercent: total > 0 ? Math.round((1000 * busy) / total) / 10 : 0,
      cpuCores: now.cores,
      memoryUsedBytes: Math.max(0, memoryTotalBytes - freemem()),
      memoryTotalBytes,
      trials,
    };
    this.#publish(msg);
  }

  #publish(msg: Telemetry): void {
    try {
      this.#o.nc.publish(this.#o.subjects.telemetry(this.#o.agent), encode(msg));
      this.#published += 1;
    } catch (err) {
      // A closed connection during shutdown; the next tick (if any) tries again.
      this.#o.log.debug({ err: (err as Error).message }, "telemetry publish failed");
    }
  }

  close(): void {
    if (this.#gpuTimer) clearInterval(this.#gpuTimer);
    if (this.#hostTimer) clearInterval(this.#hostTimer);
    this.#gpuTimer = undefined;
    this.#hostTimer = undefined;
  }
}

/**
 * A simulated GPU's load from the trials on it: each keeps its share of the GPU busy as much as it
 * reported (5 % before its first report), added up and capped at 100 %. One whole-GPU trial: its own
 * busy share, as before shares existed.
 */
function fakeLoad(holders: readonly SlotHolder[]): FakeLoad {
  if (holders.length === 0) return { running: false, busyShare: null };
  if (holders.every((h) => h.busyShare === null)) return { running: true, busyShare: null };
  const busy = holders.reduce((s, h) => s + (h.busyShare ?? 0.05) * (shareOf(h) / 100), 0);
  return { running: true, busyShare: Math.min(1, busy) };
}

/** CPU time over all cores since boot, from the kernel's counters (cheap: no process is spawned). */
function cpuTimes(): { busy: number; total: number; cores: number } {
  let busy = 0;
  let total = 0;
  const list = cpus();
  for (const c of list) {
    const t = c.times;
    const all = t.user + t.nice + t.sys + t.idle + t.irq;
    total += all;
    busy += all - t.idle;
  }
  return { busy, total, cores: list.length };
}
