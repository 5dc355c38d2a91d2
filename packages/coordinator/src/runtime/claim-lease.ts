import type { JetStreamManager } from "@nats-io/jetstream";
import type { AgentAdvert, Logger, MeshNames } from "@rung/protocol";

/**
 * Keeps the mesh's claim lease — every pool's work consumer's ack wait — at the longest `--lease` of
 * the agents alive.
 *
 * Each agent heartbeats a claimed order at a third of its own lease, so the server must wait at least
 * that long before handing the order on. Agents only ever lengthen the consumers' ack wait
 * (`ensureWorkConsumer`): one cannot see the others, and shortening it under them would hand their orders
 * on between two heartbeats. That leaves the lease long after the agent that asked for it has gone; the
 * coordinator sees every agent's advert (with its lease), so it brings the lease down to what the live
 * agents need — and up again as soon as an agent with a longer one advertises (it lengthened the
 * consumers itself before claiming anything; this only keeps them so).
 *
 * Nothing is changed while any live advert lacks a lease (an agent of an older version: its lease is
 * unknown), nor with no agent alive.
 */

/** The lease the live agents need, or null when it cannot be known (no agent, or one that does not say). */
export function claimLeaseFor(adverts: Iterable<AgentAdvert>, staleAfterMs: number, now = Date.now()): number | null {
  let longest = 0;
  for (const a of adverts) {
    if (now - a.updatedAt >= staleAfterMs) continue; // gone (its trials with it), or about to be
    if (a.leaseMs === undefined) return null;
    longest = Math.max(longest, a.leaseMs);
  }
  return longest > 0 ? longest : null;
}

export interface ClaimLeaseKeeperOptions {
  jsm: JetStreamManager;
  names: MeshNames;
  log: Logger;
  adverts: () => Iterable<AgentAdvert>;
  staleAfterMs: number;
  /** Look at every consumer again this often even when the adverts did not change (one created anew). Default 30 s. */
  recheckMs?: number;
}

export class ClaimLeaseKeeper {
  readonly #o: ClaimLeaseKeeperOptions;
  /** The lease last found on every consumer (or set there), and when. */
  #kept: number | null = null;
  #checkedAt = 0;
  #running: Promise<void> | null = null;
  #again = false;
  #closed = false;

  constructor(options: ClaimLeaseKeeperOptions) {
    this.#o = options;
  }

  /** The adverts changed, or time passed: bring the consumers to the lease the live agents need. */
  poke(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#run().finally(() => {
      this.#running = null;
      if (this.#again && !this.#closed) {
        this.#again = false;
        this.poke();
      }
    });
  }

  /** Stops; waits for a change in flight. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#running;
  }

  async #run(): Promise<void> {
    const want = claimLeaseFor(this.#o.adverts(), this.#o.staleAfterMs);
    if (want === null) return;
    const now = Date.now();
    if (want === this.#kept && now - this.#checkedAt < (this.#o.recheckMs ?? 30_000)) return;
    const { jsm, names, log } = this.#o;
    const prefix = names.workConsumer("x").slice(0, -1);
    try {
      for await (const c of jsm.consumers.list(names.streams.work)) {
        if (!c.name.startsWith(prefix)) continue;
        const has = Math.round((c.config.ack_wait ?? 0) / 1_000_000);
        if (has === want) continue;
        await jsm.consumers.update(names.streams.work, c.name, { ack_wait: want * 1_000_000 });
        log.info(
          { consumer: c.name, leaseMs: want, wasMs: has },
          `claim lease of ${c.name} set to ${seconds(want)} (was ${seconds(has)}): the longest --lease of the agents running`,
        );
      }
      this.#kept = want;
      this.#checkedAt = now;
    } catch (err) {
      log.debug({ err: (err as Error).message }, "cannot check the work consumers' claim lease; trying again later");
    }
  }
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10}s`;
}
