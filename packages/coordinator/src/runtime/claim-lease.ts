import type { JetStreamManager } from "@nats-io/jetstream";
import { type AgentAdvert, durationText, type Logger, type MeshNames } from "@rung/protocol";

/**
 * Keeps the mesh's claim lease — every pool's work consumer's ack wait — at the longest `--lease` of
 * the agents alive, so it comes down again once the agent that asked for a longer one has gone.
 *
 * Each agent heartbeats a claimed order at a third of its own lease, so the server must wait at least
 * that long before handing the order on. Agents only ever lengthen the consumers' ack wait
 * (`ensureWorkConsumer`): one cannot see the others, and shortening it under them would hand their
 * orders on between two heartbeats. The coordinator sees every agent's advert, with its lease. It
 * lengthens a consumer at once when an agent needs more, and shortens one only when that is safe beyond
 * doubt:
 *  - an advert counts from when this coordinator last received it (not the agent's clock) until it has
 *    been silent for the bucket's staleness plus its own lease: an agent cut off for a while keeps its
 *    claims on the server until its lease has run out there anyway;
 *  - the shorter lease must have been all the live agents needed for a whole current lease (30 s, say):
 *    a coordinator that has just started, and has not yet heard every advert, changes nothing downwards;
 *  - the wanted lease is worked out again just before each change;
 *  - nothing at all while any live advert lacks a lease (an agent of an older version), or with no agent.
 * A consumer shortened under an agent anyway (a race with one just starting) costs that agent's copy
 * at worst: the claim notice then stops it, and the order runs on elsewhere.
 */

/** One advert as the coordinator holds it: the advert and when it last arrived here. */
export interface HeardAdvert {
  advert: AgentAdvert;
  heardAt: number;
}

/** The lease the live agents need, or null when it cannot be known (no agent, or one that does not say). */
export function claimLeaseFor(adverts: Iterable<HeardAdvert>, staleAfterMs: number, now = Date.now()): number | null {
  let longest = 0;
  for (const { advert: a, heardAt } of adverts) {
    const silentMs = now - heardAt;
    if (a.leaseMs === undefined) {
      if (silentMs < staleAfterMs) return null; // an older agent, alive: its lease is unknown
      continue;
    }
    if (silentMs >= staleAfterMs + a.leaseMs) continue; // gone, and its claims with it
    longest = Math.max(longest, a.leaseMs);
  }
  return longest > 0 ? longest : null;
}

export interface ClaimLeaseKeeperOptions {
  jsm: JetStreamManager;
  names: MeshNames;
  log: Logger;
  adverts: () => Iterable<HeardAdvert>;
  staleAfterMs: number;
  /** Look at every consumer again this often when nothing changed (one created anew). Default 30 s. */
  recheckMs?: number;
}

export class ClaimLeaseKeeper {
  readonly #o: ClaimLeaseKeeperOptions;
  /** The lease the live agents need, and since when it has been that. */
  #want: number | null = null;
  #wantSince = 0;
  /** No need to look at the consumers before this, unless the lease wanted changes. */
  #nextCheckAt = 0;
  #running: Promise<void> | null = null;
  #again = false;
  #closed = false;
  #warned = false;

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

  #wanted(now: number): number | null {
    return claimLeaseFor(this.#o.adverts(), this.#o.staleAfterMs, now);
  }

  async #run(): Promise<void> {
    const now = Date.now();
    const want = this.#wanted(now);
    if (want !== this.#want) {
      this.#want = want;
      this.#wantSince = now;
      this.#nextCheckAt = now;
    }
    if (want === null || now < this.#nextCheckAt) return;
    const { jsm, names, log } = this.#o;
    let next = now + (this.#o.recheckMs ?? 30_000);
    try {
      for await (const c of jsm.consumers.list(names.streams.work)) {
        if (this.#closed) return;
        if (!names.isWorkConsumer(c.name)) continue;
        const has = Math.round((c.config.ack_wait ?? 0) / 1_000_000);
        if (has === want) continue;
        if (want < has && now - this.#wantSince < has) {
          // Not yet: the longer lease must have been unneeded for a whole lease first.
          next = Math.min(next, this.#wantSince + has);
          continue;
        }
        if (this.#wanted(Date.now()) !== want) {
          this.#again = true; // the adverts changed meanwhile: start over
          return;
        }
        await jsm.consumers.update(names.streams.work, c.name, { ack_wait: want * 1_000_000 });
        log.info(
          { consumer: c.name, leaseMs: want, wasMs: has },
          `claim lease of ${c.name} set to ${durationText(want)} (was ${durationText(has)}): the longest --lease of the agents running`,
        );
      }
      this.#nextCheckAt = next;
    } catch (err) {
      this.#nextCheckAt = Date.now() + 5000;
      const message = `cannot check the work consumers' claim lease (${(err as Error).message}); trying again in 5 s`;
      if (this.#warned) log.debug(message);
      else log.warn(message);
      this.#warned = true;
    }
  }
}
