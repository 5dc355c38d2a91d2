import { setTimeout as sleep } from "node:timers/promises";
import { type KV, type KvEntry, KvWatchInclude } from "@nats-io/kv";
import type { QueuedIterator } from "@nats-io/transport-node";
import {
  type BadMessageCounter,
  type CheckpointIndex,
  CheckpointIndexSchema,
  type ClaimNotice,
  ClaimNoticeSchema,
  type Control,
  ControlSchema,
  decode,
  type Logger,
  type Subjects,
} from "@rung/protocol";

/**
 * Stop decisions reach the agent through the control bucket, not a plain subject, because a bucket
 * remembers: a stop written while the agent was disconnected is still there when it comes back. So
 * the agent (1) watches the bucket for new decisions, (2) reads the key of each order before starting
 * it, and (3) reads the keys of its running trials again after every reconnect (see the claim loop).
 *
 * A second watch follows the work keys (`work.>`, written by a coordinator): the wakes
 * (`work.wake.<pool>`, after it queued orders there), for which an idle claim loop waits instead of
 * parking a pull on one of its pools (claim-loop.ts), and the claim notices
 * (`work.claim.<study>.<trial>`, when an attempt is claimed while an older one still runs), which make
 * the agent still running the older copy kill it at once. Losing the watch loses nothing but speed: the
 * loop then looks for work every second, and an agent's own lease check still finds a lost claim.
 */

export interface ControlWatchOptions {
  kv: KV;
  subjects: Subjects;
  log: Logger;
  bad: BadMessageCounter;
  onStop(control: Control): void;
  /** A claim notice: the attempt that holds a trial's order now (older copies of the trial must go). */
  onClaim?(notice: ClaimNotice): void;
  /** Called when the watch failed or cannot be started again (the bucket may be gone); may reject. */
  onBroken?(): Promise<void>;
}

/** Wakes remembered for {@link ControlWatch.waitForWork}'s `since` (a pool per pool class is plenty). */
const RECENT_WAKES = 64;

/** One of the bucket's watches: its keys, what it does with an entry, and its iterator while it runs. */
interface Watch {
  what: string;
  key: string;
  onEntry(e: KvEntry): void;
  iter: QueuedIterator<KvEntry> | undefined;
  loop: Promise<void>;
  live: boolean;
}

export class ControlWatch {
  readonly #o: ControlWatchOptions;
  readonly #stops: Watch;
  readonly #workWatch: Watch;
  #closed = false;
  /** Ends a restart's wait at once when the watch is closed. */
  readonly #closing = new AbortController();
  /** Work wakes seen so far (`work.wake.<pool>` keys written), the last few of them, and who waits. */
  #wakes = 0;
  readonly #recentWakes: { n: number; pool: string }[] = [];
  readonly #wakeWaiters = new Set<{ wanted: (pool: string) => boolean; done: () => void }>();

  constructor(options: ControlWatchOptions) {
    this.#o = options;
    // Updates only: decisions for trials that ended long ago are no business of a starting agent, and
    // trials it is about to start are checked key by key.
    // Stop keys only (`<study>.<trial>`): the checkpoint indexes (`ckpt.<study>.<trial>`) are read when needed.
    this.#stops = {
      what: "control",
      key: "*.*",
      onEntry: (e) => this.#onEntry(e),
      iter: undefined,
      loop: Promise.resolve(),
      live: false,
    };
    this.#workWatch = {
      what: "work keys",
      key: options.subjects.workKeysAll(),
      onEntry: (e) => this.#onWorkKey(e),
      iter: undefined,
      loop: Promise.resolve(),
      live: false,
    };
  }

  async start(): Promise<void> {
    await this.#start(this.#stops);
    // Without wakes the claim loop looks for work every second, as it did before them: no reason to
    // stop the agent, and the watch is started again like the other.
    await this.#start(this.#workWatch).catch((err) => {
      this.#o.log.warn(
        { err: (err as Error).message },
        "cannot watch the work keys (wakes, claim notices); looking for work every second instead",
      );
      this.#workWatch.loop = this.#restart(this.#workWatch);
    });
  }

  async #start(w: Watch): Promise<void> {
    const iter = await this.#o.kv.watch({ key: w.key, include: KvWatchInclude.UpdatesOnly, ignoreDeletes: true });
    if (this.#closed) {
      // Closed while the watch was being made: it would run until the connection closes.
      iter.stop();
      return;
    }
    w.iter = iter;
    w.live = true;
    w.loop = (async () => {
      try {
        for await (const e of iter) w.onEntry(e);
      } catch (err) {
        if (!this.#closed) this.#o.log.warn({ err: (err as Error).message }, `${w.what} watch failed`);
      }
      w.live = false;
      if (!this.#closed) await this.#restart(w);
    })();
  }

  /** A watch ended without being asked to: start another, so stops (and wakes) keep arriving — until it works. */
  async #restart(w: Watch): Promise<void> {
    for (let i = 1; !this.#closed; i++) {
      await sleep(Math.min(10_000, 1000 * i), this.#closing.signal).catch(() => {});
      if (this.#closed) return;
      try {
        if (i > 1) await this.#o.onBroken?.();
        await this.#start(w);
        if (i > 1) this.#o.log.info(`${w.what} watch restarted`);
        return;
      } catch (err) {
        if (i === 1) this.#o.log.warn({ err: (err as Error).message }, `cannot restart the ${w.what} watch; retrying`);
      }
    }
  }

  /** Work wakes seen so far: pass it to {@link waitForWork} to miss none that come meanwhile. */
  get wakes(): number {
    return this.#wakes;
  }

  /** True while work wakes arrive (the watch runs): an idle claim loop may wait for them. */
  get watchingWork(): boolean {
    return this.#workWatch.live;
  }

  /**
   * Resolves at the first wake of a pool `wanted` accepts, after at most `ms` (none: `Infinity`), or on
   * `signal`; at once when such a wake came since `since` (a count from {@link wakes}) — or when more
   * came than it remembers.
   */
  waitForWork(since: number, ms: number, signal: AbortSignal, wanted: (pool: string) => boolean = () => true): Promise<void> {
    if (signal.aborted || this.#closed || this.#wokenSince(since, wanted)) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = {
        wanted,
        done: () => {
          clearTimeout(timer);
          signal.removeEventListener("abort", waiter.done);
          this.#wakeWaiters.delete(waiter);
          resolve();
        },
      };
      const timer = Number.isFinite(ms) ? setTimeout(waiter.done, ms) : undefined;
      signal.addEventListener("abort", waiter.done, { once: true });
      this.#wakeWaiters.add(waiter);
    });
  }

  #wokenSince(since: number, wanted: (pool: string) => boolean): boolean {
    if (this.#wakes === since) return false;
    const oldest = this.#recentWakes[0]?.n ?? this.#wakes + 1;
    if (oldest > since + 1) return true; // more wakes than remembered: look again to be safe
    return this.#recentWakes.some((w) => w.n > since && wanted(w.pool));
  }

  #onWake(pool: string): void {
    this.#wakes += 1;
    this.#recentWakes.push({ n: this.#wakes, pool });
    if (this.#recentWakes.length > RECENT_WAKES) this.#recentWakes.shift();
    for (const w of [...this.#wakeWaiters]) if (w.wanted(pool)) w.done();
  }

  #onWorkKey(e: KvEntry): void {
    const k = this.#o.subjects.parseWorkKey(e.key);
    if (k?.kind === "wake") this.#onWake(k.pool);
    if (k?.kind === "claim") {
      const n = this.#decodeClaim(e, k);
      if (n) this.#o.onClaim?.(n);
    }
  }

  #decodeClaim(e: KvEntry, k: { study: string; trial: string }): ClaimNotice | null {
    if (e.operation !== "PUT") return null;
    const r = decode(ClaimNoticeSchema, e.value, "claim notice");
    if (!r.ok) {
      this.#o.bad.record("control", r.error);
      return null;
    }
    // The key says which trial; a value naming another is no notice of this one.
    return r.value.study === k.study && r.value.trial === k.trial ? r.value : null;
  }

  /** The trial's claim notice, or null. Never throws: a failed read counts as none. */
  async readClaim(study: string, trial: string): Promise<ClaimNotice | null> {
    try {
      const e = await this.#o.kv.get(this.#o.subjects.claimNoticeKey(study, trial));
      return e ? this.#decodeClaim(e, { study, trial }) : null;
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message, study, trial }, "cannot read the trial's claim notice");
      return null;
    }
  }

  #decode(e: KvEntry): Control | null {
    if (e.operation !== "PUT") return null;
    const r = decode(ControlSchema, e.value, "control");
    if (!r.ok) {
      this.#o.bad.record("control", r.error);
      return null;
    }
    return r.value;
  }

  #onEntry(e: KvEntry): void {
    const c = this.#decode(e);
    if (c) this.#o.onStop(c);
  }

  /** The current decision for a trial, or null. Never throws: a failed read counts as no decision. */
  async read(study: string, trial: string): Promise<Control | null> {
    try {
      const e = await this.#o.kv.get(this.#o.subjects.controlKey(study, trial));
      return e ? this.#decode(e) : null;
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message, study, trial }, "cannot read the control bucket");
      return null;
    }
  }

  /** The trial's checkpoint index (written by the coordinator), or null. Never throws. */
  async readCheckpoints(study: string, trial: string): Promise<CheckpointIndex | null> {
    try {
      const e = await this.#o.kv.get(this.#o.subjects.checkpointIndexKey(study, trial));
      if (!e || e.operation !== "PUT") return null;
      const r = decode(CheckpointIndexSchema, e.value, "checkpoint index");
      if (!r.ok) {
        this.#o.bad.record("control", r.error);
        return null;
      }
      return r.value.study === study && r.value.trial === trial ? r.value : null;
    } catch (err) {
      this.#o.log.warn(
        { err: (err as Error).message, study, trial },
        "cannot read the trial's checkpoint index; starting without one",
      );
      return null;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#closing.abort();
    for (const w of [this.#stops, this.#workWatch]) w.iter?.stop();
    for (const w of [...this.#wakeWaiters]) w.done();
    await Promise.all([this.#stops.loop, this.#workWatch.loop]);
  }
}
