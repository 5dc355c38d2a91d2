/**
 * Wakes idle agents when orders are queued in a pool. An agent with free GPUs and no work anywhere in
 * the mesh waits for the `work.wake.<pool>` key of the control bucket to change (agent
 * claiming/claim-loop.ts) rather than parking a pull on one of its pools in turn: before wakes, a study
 * started on agents that had sat idle a few seconds waited up to a pull's expiry (a second) for each
 * of its first orders, because each agent was pulling on some other pool (a whole GPU's, a gang's,
 * one of five share classes).
 *
 * A wake is written after the order is stored, so an agent it wakes finds the order. Wakes of one pool
 * are coalesced: the first goes out at once, and further orders within `minGapMs` get one more at the
 * end of that gap — a burst of orders costs one or two writes, not one per order. A failed write is
 * only logged: agents look for work every second anyway.
 */
export interface WorkWakerOptions {
  /** Writes the pool's wake key (the control bucket's put). */
  write(pool: string): Promise<unknown>;
  /** A failed write, said once per pool at debug level by the caller's logger. */
  onError?(pool: string, err: Error): void;
  minGapMs?: number;
  now?: () => number;
}

export class WorkWaker {
  readonly #o: WorkWakerOptions;
  readonly #gapMs: number;
  /** Per pool: when its last wake went out, and whether another is due at the end of the gap. */
  readonly #pools = new Map<string, { last: number; timer: NodeJS.Timeout | null }>();
  readonly #inFlight = new Set<Promise<unknown>>();
  #closed = false;

  constructor(options: WorkWakerOptions) {
    this.#o = options;
    this.#gapMs = options.minGapMs ?? 200;
  }

  /** An order of this pool was just stored. */
  note(pool: string): void {
    if (this.#closed) return;
    const now = (this.#o.now ?? Date.now)();
    const p = this.#pools.get(pool);
    if (!p || now - p.last >= this.#gapMs) {
      if (p?.timer) clearTimeout(p.timer);
      this.#pools.set(pool, { last: now, timer: null });
      this.#send(pool);
      return;
    }
    if (p.timer) return;
    p.timer = setTimeout(
      () => {
        p.timer = null;
        p.last = (this.#o.now ?? Date.now)();
        this.#send(pool);
      },
      this.#gapMs - (now - p.last),
    );
    p.timer.unref();
  }

  #send(pool: string): void {
    if (this.#closed) return;
    const w = this.#o.write(pool).catch((err: Error) => this.#o.onError?.(pool, err));
    this.#inFlight.add(w);
    void w.finally(() => this.#inFlight.delete(w));
  }

  /** No more wakes; waits for the writes in flight. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const p of this.#pools.values()) if (p.timer) clearTimeout(p.timer);
    await Promise.allSettled([...this.#inFlight]);
  }
}
