import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { KV } from "@nats-io/kv";
import { decode, encode, isWrongLastSequence, type Lease, LeaseSchema, retry, type Subjects } from "@rung/protocol";
import { StudyLeaseHeldError, StudyLeaseLostError } from "../errors.js";

/**
 * One coordinator per study. The lease is a key in the studies bucket, written with compare-and-set
 * on its revision: a second coordinator finds a live lease and is refused; a lease whose holder died
 * expires after `ttlMs` and the next coordinator takes it over.
 */
export class StudyLease {
  readonly holder = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  #revision = 0;
  #timer: NodeJS.Timeout | undefined;
  #lost: ((err: Error) => void) | undefined;

  constructor(
    readonly kv: KV,
    readonly subjects: Subjects,
    readonly study: string,
    readonly ttlMs: number,
  ) {}

  #value(): Uint8Array {
    const lease: Lease = {
      v: 1,
      type: "lease",
      study: this.study,
      holder: this.holder,
      host: hostname(),
      pid: process.pid,
      expiresAt: Date.now() + this.ttlMs,
    };
    return encode(lease);
  }

  async acquire(): Promise<void> {
    const key = this.subjects.leaseKey(this.study);
    try {
      await retry(
        async () => {
          // Inside the retry: a bucket being created or failed over can time out a read once.
          const e = await this.kv.get(key);
          if (!e || e.operation !== "PUT") {
            this.#revision = e ? await this.kv.update(key, this.#value(), e.revision) : await this.kv.create(key, this.#value());
            return;
          }
          const cur = decode(LeaseSchema, e.value, "lease");
          if (cur.ok && cur.value.expiresAt > Date.now() && cur.value.holder !== this.holder) {
            throw new StudyLeaseHeldError(this.study, cur.value.holder, cur.value.expiresAt);
          }
          this.#revision = await this.kv.update(key, this.#value(), e.revision);
        },
        // Lost a race with another coordinator, or a read timed out: look again.
        { attempts: 5, initialDelayMs: 200, retryable: (err) => !(err instanceof StudyLeaseHeldError) },
      );
    } catch (err) {
      // Five lost races mean another coordinator is busy taking the lease; anything else is NATS' answer.
      if (err instanceof StudyLeaseHeldError || !isWrongLastSequence(err)) throw err;
      throw new StudyLeaseHeldError(this.study, "another coordinator", Date.now() + this.ttlMs);
    }
  }

  /** Refreshes at a third of the TTL; calls `onLost` if another coordinator took the lease. */
  keepAlive(onLost: (err: Error) => void): void {
    this.#lost = onLost;
    this.#timer = setInterval(() => void this.#refresh(), Math.max(200, Math.floor(this.ttlMs / 3)));
    this.#timer.unref();
  }

  async #refresh(): Promise<void> {
    try {
      this.#revision = await this.kv.update(this.subjects.leaseKey(this.study), this.#value(), this.#revision);
    } catch (cause) {
      // A revision mismatch means someone else wrote the key; a NATS outage is retried next tick
      // unless the lease has run out meanwhile.
      if (isWrongLastSequence(cause)) {
        clearInterval(this.#timer);
        this.#lost?.(new StudyLeaseLostError(this.study, { cause }));
      }
    }
  }

  async release(): Promise<void> {
    clearInterval(this.#timer);
    try {
      await this.kv.delete(this.subjects.leaseKey(this.study), { previousSeq: this.#revision });
    } catch {
      // already taken over or NATS gone: the TTL frees it
    }
  }
}
