import type { AgentAdvert } from "@rung/protocol";

/**
 * REFUSALS: orders this agent cannot run for a reason of its own (protocol's `isAgentSpecificRejection`
 * — unsigned or signed by a key it does not trust, a workdir or program it lacks). Another agent may
 * well run them, so a refused order goes back to the queue (`nak` with a delay) instead of failing the
 * trial; the coordinator fails it only once no live agent can run it, and then writes a stop key.
 *
 *   first refusal of an order  a `rejected` event (the refusing agent, the reason, the detail), a warn
 *                              line in the log, an entry in the advert's `refusals`; nak after
 *                              {@link refusalDelayMs}(0), so another agent may get it first (the pool is
 *                              not left alone: orders of other studies there may well run here);
 *   the same order again       (by nonce) no second event: nak with a growing delay (to 30 s), and this
 *                              agent leaves the pool alone for that delay and {@link refusalPauseMs}
 *                              more — long enough for a second agent that refuses it too to hand it back
 *                              once more — so its next deliveries go to agents that have not refused it,
 *                              and its deliveries (JetStream gives an order up after the consumer's max
 *                              deliveries) are spent slowly while every agent that could run it is busy;
 *   its trial has a stop key   the coordinator gave up on it (nobody could run it) or stopped it: the
 *                              order is terminated silently;
 *   its last delivery          (the consumer's max deliveries) a nak would leave it in the queue for
 *                              ever, undelivered: it is terminated with a `rejected` event that says so.
 *
 * Every delay is drawn ±25 % ({@link jittered}). This file is the pure half: what was refused
 * and how long to wait. The claim loop does the I/O.
 */

/** An entry of the advert's `refusals`. */
export type RefusalEntry = NonNullable<AgentAdvert["refusals"]>[number];

/** The longest this agent leaves a pool alone after an order it refused came back to it. */
export const MAX_REFUSAL_PAUSE_MS = 300_000;

/**
 * How long this agent leaves the pool alone after handing back an order it had refused `before` times
 * already, beyond the order's own delay ({@link refusalDelayMs}): as long again, and a second more. With
 * only the delay and a second, two agents that both refuse an order passed it between them (each back on
 * the pool when the other handed it back) while an idle agent that could run it lost every draw for it.
 * Growing — 3 s, 5 s, 9 s … 5 min — since each delivery a refusing agent takes costs the order one of its
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

/**
 * A delay drawn between 0.75 and 1.25 times `ms`. Hand-back delays and pauses are whole seconds counted
 * from the moments orders come back, so without it a refusing agent's pulls fall into step with the
 * order's returns: its pull, issued as its pause ended, is the oldest waiting one each time the order
 * comes back, and the server gives the order to it — again and again, while an idle agent that could run
 * it never gets it. Drawn, the returns fall anywhere in the other agents' pull cycles.
 */
export function jittered(ms: number, random: () => number = Math.random): number {
  return Math.round(ms * (0.75 + 0.5 * random()));
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
