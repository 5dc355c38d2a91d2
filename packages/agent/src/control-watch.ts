import { type KV, type KvEntry, KvWatchInclude } from "@nats-io/kv";
import type { QueuedIterator } from "@nats-io/transport-node";
import {
  type BadMessageCounter,
  type CheckpointIndex,
  CheckpointIndexSchema,
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
 */

export interface ControlWatchOptions {
  kv: KV;
  subjects: Subjects;
  log: Logger;
  bad: BadMessageCounter;
  onStop(control: Control): void;
  /** Called when the watch failed or cannot be started again (the bucket may be gone); may reject. */
  onBroken?(): Promise<void>;
}

export class ControlWatch {
  readonly #o: ControlWatchOptions;
  #iter: QueuedIterator<KvEntry> | undefined;
  #closed = false;
  #loop: Promise<void> = Promise.resolve();

  constructor(options: ControlWatchOptions) {
    this.#o = options;
  }

  async start(): Promise<void> {
    // Updates only: decisions for trials that ended long ago are no business of a starting agent, and
    // trials it is about to start are checked key by key.
    // Stop keys only (`<study>.<trial>`): the checkpoint indexes (`ckpt.<study>.<trial>`) are read when needed.
    this.#iter = await this.#o.kv.watch({ key: "*.*", include: KvWatchInclude.UpdatesOnly, ignoreDeletes: true });
    const iter = this.#iter;
    this.#loop = (async () => {
      try {
        for await (const e of iter) this.#onEntry(e);
      } catch (err) {
        if (!this.#closed) this.#o.log.warn({ err: (err as Error).message }, "control watch failed");
      }
      if (!this.#closed) await this.#restart();
    })();
  }

  /** The watch ended without being asked to: start another, so stops keep arriving — until it works. */
  async #restart(): Promise<void> {
    for (let i = 1; !this.#closed; i++) {
      await new Promise((r) => setTimeout(r, Math.min(10_000, 1000 * i)));
      if (this.#closed) return;
      try {
        if (i > 1) await this.#o.onBroken?.();
        await this.start();
        if (i > 1) this.#o.log.info("control watch restarted");
        return;
      } catch (err) {
        if (i === 1) this.#o.log.warn({ err: (err as Error).message }, "cannot restart the control watch; retrying");
      }
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
    this.#iter?.stop();
    await this.#loop;
  }
}
