import type { AgentAdvert } from "@rung/protocol";

/**
 * REFUSALS: orders this agent cannot run for a reason of its own (protocol's `isAgentSpecificRejection`
 * — unsigned or signed by a key it does not trust, a workdir or program it lacks). Another agent may
 * well run them, so a refused order goes back to the queue (`nak` with a delay) instead of failing the
 * trial; the coordinator fails it only once no live agent can run it, and then writes a stop key.
 *
 *   first refusal of an order  a `rejected` event (the refusing agent, the reason, the detail), a warn
 *                              line in the log, an entry in the advert's `refusals`; nak after
 *                              {@link refusalDelayMs}(0), so it goes to another agent first;
 *   the same order again       (by nonce) no second event: nak with a growing delay (to 30 s), and
 *                              this agent leaves the pool alone for longer still ({@link refusalPauseMs},
 *                              to 5 min), so an agent that can run it gets the next delivery rather than
 *                              this one, and the order's deliveries (JetStream gives an order up after
 *                              the consumer's max deliveries) are spent slowly while every agent that
 *                              could run it is busy;
 *   its trial has a stop key   the coordinator gave up on it (nobody could run it) or stopped it: the
 *                              order is terminated silently;
 *   its last delivery          (the consumer's max deliveries) a nak would leave it in the queue for
 *                              ever, undelivered: it is terminated with a `rejected` event that says so.
 *
 * This file is the pure half: what was refused and how long to wait. The claim loop does the I/O.
 */

/** An entry of the advert's `refusals`. */
export type RefusalEntry = NonNullable<AgentAdvert["refusals"]>[number];

/** The longest this agent leaves a pool alone after an order it refused came back to it. */
export const MAX_REFUSAL_PAUSE_MS = 300_000;

/**
 * How long this agent leaves the pool alone after handing back, again, an order it had refused `before`
 * times already: longer than the order is away ({@link refusalDelayMs}), so another agent pulls it first,
 * and growing — 5 s, 9 s, 17 s … 5 min — since each delivery it takes itself costs the order one of its
 * deliveries.
 */
export function refusalPauseMs(before: number): number {
  return Math.min(MAX_REFUSAL_PAUSE_MS, REFUSAL_DELAY_MS * 2 ** Math.max(0, before) + 1000);
}

/** Refusals kept in the advert. */
export const ADVERTISED_REFUSALS = 5;

/** The first hand-back waits this long: long enough for another agent to pull the order first. */
export const REFUSAL_DELAY_MS = 2000;

/** The longest hand-back delay, however often the same order comes back. */
export const MAX_REFUSAL_DELAY_MS = 30_000;

/**
 * The nak delay for an order this agent has refused `before` times already: 2 s, 4 s, 8 s … 30 s.
 * Each delivery counts against the consumer's max deliveries, so the delay grows.
 */
export function refusalDelayMs(before: number): number {
  return Math.min(MAX_REFUSAL_DELAY_MS, REFUSAL_DELAY_MS * 2 ** Math.max(0, before));
}

/** What this agent refused: how often, by nonce (bounded), and the last few for its advert. */
export class Refusals {
  readonly #times = new Map<string, number>();
  readonly #max: number;
  #recent: RefusalEntry[] = [];

  constructor(maxOrders = 10_000) {
    this.#max = maxOrders;
  }

  /** How many times this agent refused the order with this nonce before now. */
  before(nonce: string): number {
    return this.#times.get(nonce) ?? 0;
  }

  /** Counts one more refusal of the order; returns how many there were before it. */
  count(nonce: string): number {
    const before = this.before(nonce);
    this.#times.delete(nonce); // re-inserted last: the oldest go first when the map is full
    this.#times.set(nonce, before + 1);
    if (this.#times.size > this.#max) {
      const oldest = this.#times.keys().next().value;
      if (oldest !== undefined) this.#times.delete(oldest);
    }
    return before;
  }

  /** Remembers a first refusal for the advert (the newest last). */
  note(entry: RefusalEntry): void {
    this.#recent = [...this.#recent, entry].slice(-ADVERTISED_REFUSALS);
  }

  get recent(): readonly RefusalEntry[] {
    return this.#recent;
  }
}
