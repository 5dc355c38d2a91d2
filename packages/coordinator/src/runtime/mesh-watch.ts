import { Kvm } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  type BadMessageCounter,
  decode,
  expandEvent,
  type GpuSample,
  type MeshNames,
  type Telemetry,
  TelemetrySchema,
  type TrialEvent,
  TrialEventSchema,
} from "@rung/protocol";
import { type MeshPageData, meshPageData } from "../views/index.js";
import { MeshAdverts } from "./mesh-adverts.js";
import { readTelemetry } from "./telemetry-reader.js";

/**
 * The mesh for a live page and for `/metrics` (`rung ui`): the agents' adverts (`MeshAdverts`, kept by
 * a watch), each agent's latest GPU sample and an hour of utilization in buckets (from the telemetry
 * subjects, the last hour read back from the stream at start), and every trial event as it is
 * published (the viewer's subscription to `<prefix>.events.>`): the latest data-wait share of each
 * trial comes from its reports, and listeners (the metrics) see each event once.
 *
 * Nothing grows with the mesh's history: a trial's data-wait share goes when it ends, an agent's
 * latest sample and timeline when its advert has gone and the timeline's hour holds nothing of it.
 */

export interface MeshWatchOptions {
  /** Width of one timeline bucket. Default 30 s. */
  readonly bucketMs?: number;
  /** How far back the timeline goes. Default 1 h. */
  readonly windowMs?: number;
  readonly drops?: BadMessageCounter;
  readonly onError?: (err: unknown) => void;
}

interface Bucket {
  sum: number;
  n: number;
}

export class MeshWatch {
  #adverts: MeshAdverts | null = null;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;
  /** Each agent's latest GPU message. */
  readonly latest = new Map<string, { ts: number; fake: boolean; gpus: readonly GpuSample[] }>();
  readonly #dataWait = new Map<string, number>();
  /** `agent/index` → bucket start → utilization sum and count. */
  readonly #timeline = new Map<string, Map<number, Bucket>>();
  readonly #listeners = new Set<(e: TrialEvent) => void>();
  readonly #subs: Subscription[] = [];
  readonly bucketMs: number;
  readonly windowMs: number;

  private constructor(
    readonly nc: NatsConnection,
    readonly names: MeshNames,
    readonly options: MeshWatchOptions,
  ) {
    this.bucketMs = options.bucketMs ?? 30_000;
    this.windowMs = options.windowMs ?? 3_600_000;
  }

  static async open(nc: NatsConnection, names: MeshNames, options: MeshWatchOptions = {}): Promise<MeshWatch> {
    const w = new MeshWatch(nc, names, options);
    w.#subscribe();
    // The agents bucket may not exist yet (no agent has started): look again every 2 s until it does.
    const openAdverts = async (): Promise<void> => {
      if (w.#closed) return;
      try {
        const kv = await new Kvm(nc).open(names.buckets.agents);
        // The bucket's TTL is 15 s: an advert not refreshed for that long is an agent gone.
        const adverts = new MeshAdverts(kv, 15_000, () => {}, options.drops);
        await adverts.start();
        if (w.#closed) adverts.stop();
        else w.#adverts = adverts;
      } catch {
        w.#retry = setTimeout(() => void openAdverts(), 2000);
      }
    };
    await openAdverts();
    // The last hour from the stream, in the background: live samples already count meanwhile.
    void readTelemetry(nc, names, { fromTs: Date.now() - w.windowMs, drops: options.drops })
      .then((msgs) => {
        for (const m of msgs) w.#onTelemetry(m, true);
      })
      .catch(() => {});
    return w;
  }

  #subscribe(): void {
    this.#subs.push(
      this.nc.subscribe(this.names.subjects.telemetryAll(), {
        callback: (err, m) => {
          if (err) return;
          const r = decode(TelemetrySchema, m.data, "telemetry");
          if (r.ok) this.#onTelemetry(r.value, false);
          else this.options.drops?.record("telemetry", r.error);
        },
      }),
      this.nc.subscribe(this.names.subjects.eventsAll(), {
        callback: (err, m) => {
          if (err) return;
          const r = decode(TrialEventSchema, m.data, "trial event");
          if (!r.ok) {
            this.options.drops?.record("events", r.error);
            return;
          }
          // A batch of reports is the reports it holds, in order.
          for (const e of expandEvent(r.value)) {
            if (e.type === "ended") this.#dataWait.delete(`${e.study}/${e.trial}`);
            else if (e.type === "report") {
              const wait = e.metrics.data_wait_s;
              const compute = e.metrics.compute_s;
              if (wait !== undefined && compute !== undefined && wait + compute > 0)
                this.#dataWait.set(`${e.study}/${e.trial}`, wait / (wait + compute));
            }
            for (const l of this.#listeners) l(e);
          }
        },
      }),
    );
  }

  #onTelemetry(m: Telemetry, backfill: boolean): void {
    if (m.type !== "gpu") return;
    const prev = this.latest.get(m.agent);
    if (!backfill || !prev || prev.ts < m.ts) this.latest.set(m.agent, { ts: m.ts, fake: m.fake, gpus: m.gpus });
    const bucket = Math.floor(m.ts / this.bucketMs) * this.bucketMs;
    for (const g of m.gpus) {
      if (g.utilizationGpu === null) continue;
      const key = `${m.agent}/${g.index}`;
      let series = this.#timeline.get(key);
      if (!series) {
        series = new Map();
        this.#timeline.set(key, series);
      }
      const b = series.get(bucket) ?? { sum: 0, n: 0 };
      b.sum += g.utilizationGpu;
      b.n += 1;
      series.set(bucket, b);
    }
  }

  /** Calls `listener` with every trial event published from now on; returns the unsubscribe. */
  onEvent(listener: (e: TrialEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The latest data-wait share a trial reported, 0..1; null before it reported one. */
  dataWait(study: string, trial: string): number | null {
    return this.#dataWait.get(`${study}/${trial}`) ?? null;
  }

  data(now = Date.now()): MeshPageData {
    const start = Math.floor((now - this.windowMs) / this.bucketMs) * this.bucketMs;
    const n = Math.floor((now - start) / this.bucketMs) + 1;
    const series: Record<string, (number | null)[]> = {};
    for (const [key, buckets] of [...this.#timeline.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      for (const old of buckets.keys()) if (old < start) buckets.delete(old);
      if (buckets.size === 0) continue;
      series[key] = Array.from({ length: n }, (_, i) => {
        const b = buckets.get(start + i * this.bucketMs);
        return b ? Math.round((10 * b.sum) / b.n) / 10 : null;
      });
    }
    const a = this.#adverts;
    const live = a ? [...a.adverts.values()].filter((x) => now - x.updatedAt < a.staleAfterMs) : [];
    this.#prune(live, start, now);
    return meshPageData(live, this.latest, (s, t) => this.dataWait(s, t), { bucketMs: this.bucketMs, start, series }, now);
  }

  /** Forgets agents gone (no live advert) once the window holds nothing of them, and the data wait of trials no GPU runs. */
  #prune(live: readonly { agent: string }[], start: number, now: number): void {
    const alive = new Set(live.map((x) => x.agent));
    for (const [agent, m] of this.latest) if (!alive.has(agent) && m.ts < start) this.latest.delete(agent);
    for (const [key, buckets] of this.#timeline) if (buckets.size === 0) this.#timeline.delete(key);
    if (this.#dataWait.size === 0) return;
    const onGpu = new Set<string>();
    for (const [agent, m] of this.latest)
      if (alive.has(agent) && now - m.ts < this.windowMs)
        for (const g of m.gpus) if (g.study && g.trial) onGpu.add(`${g.study}/${g.trial}`);
    for (const key of this.#dataWait.keys()) if (!onGpu.has(key)) this.#dataWait.delete(key);
  }

  close(): void {
    this.#closed = true;
    if (this.#retry) clearTimeout(this.#retry);
    this.#adverts?.stop();
    for (const s of this.#subs) s.unsubscribe();
    this.#listeners.clear();
  }
}
