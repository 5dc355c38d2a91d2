import type { KV } from "@nats-io/kv";
import {
  type AgentAdvert,
  AgentAdvertSchema,
  type BadMessageCounter,
  decode,
  FULL_SHARE,
  isFractionalGpus,
  sharePercent,
} from "@rung/protocol";
import type { HeardAdvert } from "./claim-lease.js";

/**
 * The coordinator's view of the agents: adverts from the agents bucket, kept current by a watch.
 * An advert older than the bucket's TTL is dropped even if the server has not expired it yet, so a
 * dead agent stops counting as free capacity.
 */
export class MeshAdverts {
  readonly adverts = new Map<string, AgentAdvert>();
  /** When each advert last arrived here (this process's clock, not the agent's). */
  readonly #heardAt = new Map<string, number>();
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
          this.#heardAt.delete(e.key);
        } else {
          const r = decode(AgentAdvertSchema, e.value, "agent advert");
          if (r.ok) {
            this.adverts.set(e.key, r.value);
            this.#heardAt.set(e.key, Date.now());
          } else this.drops?.record("agents", r.error);
        }
        this.onChange();
      }
    })().catch(() => {});
  }

  stop(): void {
    this.#stop?.();
  }

  /** Every advert held, with when it last arrived here (the claim lease keeper's input). */
  heard(): HeardAdvert[] {
    return [...this.adverts].map(([key, advert]) => ({ advert, heardAt: this.#heardAt.get(key) ?? 0 }));
  }

  live(now = Date.now()): AgentAdvert[] {
    return [...this.adverts.values()].filter((a) => now - a.updatedAt < this.staleAfterMs && a.state === "running");
  }

  /**
   * Places for a trial needing `gpus` GPUs (or, with 0 GPUs, one CPU slot) across live agents. A share
   * of a GPU counts how many more such shares each GPU's free share holds (memory is the agent's to
   * check); agents too old to advertise shares offer none.
   */
  freePlaces(gpus: number, now = Date.now()): number {
    let n = 0;
    if (isFractionalGpus(gpus)) {
      const share = sharePercent(gpus);
      for (const a of this.live(now))
        for (const g of a.gpus)
          if (g.shareInUse !== undefined) n += Math.floor((FULL_SHARE - Math.round(g.shareInUse * FULL_SHARE)) / share);
      return n;
    }
    for (const a of this.live(now)) n += gpus > 1 ? Math.floor(wholeGpus(a).free / gpus) : gpus > 0 ? a.freeGpus : a.freeCpuSlots;
    return n;
  }

  /** Live agents big enough for a trial needing `gpus` GPUs (or, with 0 GPUs, one CPU slot), busy or not. */
  agentsFitting(gpus: number, now = Date.now()): string[] {
    return this.live(now)
      .filter((a) =>
        isFractionalGpus(gpus)
          ? a.gpus.some((g) => g.shareInUse !== undefined)
          : gpus > 1
            ? wholeGpus(a).total >= gpus
            : gpus > 0
              ? a.gpus.length > 0
              : a.cpuSlots > 0,
      )
      .map((a) => a.agent);
  }

  /**
   * The most GPUs a trial can have on each live agent: its whole GPUs (a MIG instance never joins a
   * gang), or 1 when it has only MIG instances.
   */
  sizes(now = Date.now()): number[] {
    return this.live(now).map((a) => (a.gpus.length > 0 ? Math.max(1, wholeGpus(a).total) : 0));
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

/**
 * An advert's whole GPUs (not MIG instances: a gang of several GPUs takes whole ones only), and how
 * many of them have nothing on them. An agent without MIG instances: its GPUs and `freeGpus`.
 */
function wholeGpus(a: AgentAdvert): { total: number; free: number } {
  if (!a.gpus.some((g) => g.mig !== undefined)) return { total: a.gpus.length, free: a.freeGpus };
  const whole = a.gpus.filter((g) => g.mig === undefined);
  const idle = whole.filter((g) => (g.shareInUse === undefined ? g.trial === null : g.shareInUse === 0));
  return { total: whole.length, free: idle.length };
}
