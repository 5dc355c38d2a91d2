/**
 * A pulled work message ends in exactly one of these ways. Before an attempt exists (a rejection, an
 * order handed straight back) the claim loop ends it; afterwards the attempt does, once.
 */
export const OrderEnding = {
  /** Done with: completed, failed, or stopped by a decision. Not delivered again. */
  ack: "ack",
  /** Handed back (drain with requeue, an error before `finished` went out): delivered again. */
  nak: "nak",
  /** Can never run here (rejected): not delivered again. */
  term: "term",
} as const;
export type OrderEnding = (typeof OrderEnding)[keyof typeof OrderEnding];

/** Acks and naks are publishes; on a connection closing under us they throw, and there is nothing left to do. */
export function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // the connection is gone; the order comes back by itself after the lease
  }
}
