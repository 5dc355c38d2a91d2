import type { KV } from "@nats-io/kv";
import { type AgentAdvert, AgentAdvertSchema, type BadMessageCounter, decode } from "@rung/protocol";

/**
 * The coordinator's view of the agents: adverts from the agents bucket, kept current by a watch.
 * An advert older than the bucket's TTL is dropped even if the server has not expired it yet, so a
 * dead agent stops counting as free capacity.
 */
export class MeshAdverts {
  readonly adverts = new Map<string, AgentAdvert>();
  #stop: (() => void) | undefined;

  constructor(
    readonly kv: KV,
    readonly staleAfterMs: number,
    readonly onChange: () => void,
    readonly drops?: BadMessageCounter,
  ) {}

  async start(): Promise<void> {
    const iter = await this.kv.watch({ key: ">" });
    this.#stop = () => iter.stop();
    void (async () => {
      for await (const e of iter) {
        if (e.operation !== "PUT") {
          this.adverts.delete(e.key);
        } else {
          const r = decode(AgentAdvertSchema, e.value, "agent advert");
          if (r.ok) this.adverts.set(e.key, r.value);
          else this.drops?.record("agents", r.error);
        }
        this.onChange();
      }
    })().catch(() => {});
  }

  stop(): void {
    this.#stop?.();
  }

  live(now = Date.now()): AgentAdvert[] {
    return [...this.adverts.values()].filter((a) => now - a.updatedAt < this.staleAfterMs && a.state === "running");
  }

  /** Places for a trial needing `gpus` GPUs (or, with 0 GPUs, one CPU slot) across live agents. */
  freePlaces(gpus: number, now = Date.now()): number {
    let n = 0;
    for (const a of this.live(now)) n += gpus > 0 ? Math.floor(a.freeGpus / gpus) : a.freeCpuSlots;
    return n;
  }

  /** Live agents big enough for a trial needing `gpus` GPUs (or, with 0 GPUs, one CPU slot), busy or not. */
  agentsFitting(gpus: number, now = Date.now()): string[] {
    return this.live(now)
      .filter((a) => (gpus > 0 ? a.gpus.length >= gpus : a.cpuSlots > 0))
      .map((a) => a.agent);
  }

  /** GPUs of each live agent. */
  sizes(now = Date.now()): number[] {
    return this.live(now).map((a) => a.gpus.length);
  }

  totals(now = Date.now()): { agents: number; gpus: number; busyGpus: number } {
    let gpus = 0;
    let busy = 0;
    const live = this.live(now);
    for (const a of live) {
      gpus += a.gpus.length;
      busy += a.gpus.length - a.freeGpus;
    }
    return { agents: live.length, gpus, busyGpus: busy };
  }
}
