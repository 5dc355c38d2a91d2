import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  ensureNonceBucket,
  ensureResources,
  isPermissionError,
  isStreamNotFound,
  type Logger,
  type MeshNames,
  type ResourceOptions,
} from "@rung/protocol";

/**
 * The JetStream objects an agent relies on — the four streams, the agents, control and studies buckets
 * and the nonces bucket — can disappear under it: an operator deletes one, a server loses its store.
 * Whoever notices a failure that may mean that (a pull, an advert put, a nonce claim, the control
 * watch) asks for a repair: each missing object is named in one log line and created again, as at start
 * (`ensureResources` with `updateExisting: false`: an agent creates what is missing and changes nothing
 * that exists). When they cannot be created, one sentence says why and what to do.
 *
 * One repair runs at a time; callers that ask meanwhile share it, and after one has run another
 * starts at most every `minIntervalMs`, so a failure repeated in a loop does not hammer the server.
 * The pool consumers are the claim loop's (`ensureWorkConsumer`), repaired after this.
 */

export interface MeshRepairOptions {
  nc: NatsConnection;
  jsm: JetStreamManager;
  names: MeshNames;
  resources: ResourceOptions;
  /** Whether this agent uses the nonces bucket (not with `--insecure`). */
  nonces: boolean;
  log: Logger;
  /** Default 5 s. */
  minIntervalMs?: number;
}

export class MeshRepair {
  readonly #o: MeshRepairOptions;
  #running: Promise<void> | undefined;
  #lastAt = 0;
  #failing = false;

  constructor(options: MeshRepairOptions) {
    this.#o = options;
  }

  /** Every stream and bucket name the agent relies on, as JetStream streams. */
  #streams(): { stream: string; what: string }[] {
    const { names } = this.#o;
    const out = [
      { stream: names.streams.work, what: `the work stream ${names.streams.work}` },
      { stream: names.streams.events, what: `the events stream ${names.streams.events}` },
      { stream: names.streams.telemetry, what: `the telemetry stream ${names.streams.telemetry}` },
      { stream: names.streams.logs, what: `the logs stream ${names.streams.logs}` },
      ...Object.values(names.buckets).map((b) => ({ stream: `KV_${b}`, what: `the bucket ${b}` })),
    ];
    if (this.#o.nonces) out.push({ stream: `KV_${names.nonces}`, what: `the bucket ${names.nonces}` });
    return out;
  }

  /**
   * Creates again whatever is missing. Resolves once done; rejects (after logging one sentence) when
   * what is missing cannot be created, so the caller retries later.
   */
  repair(why: string): Promise<void> {
    if (this.#running) return this.#running;
    const wait = Math.max(0, this.#lastAt + (this.#o.minIntervalMs ?? 5000) - Date.now());
    this.#running = (async () => {
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      try {
        await this.#repair(why);
      } finally {
        this.#lastAt = Date.now();
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  async #repair(why: string): Promise<void> {
    const { jsm, log } = this.#o;
    const missing: string[] = [];
    try {
      for (const { stream, what } of this.#streams()) {
        try {
          await jsm.streams.info(stream);
        } catch (err) {
          if (!isStreamNotFound(err)) throw err;
          missing.push(what);
        }
      }
      if (missing.length > 0) {
        log.warn(
          { missing, why },
          `${sentenceList(missing)} ${missing.length === 1 ? "is" : "are"} missing; creating ${missing.length === 1 ? "it" : "them"} again`,
        );
        await ensureResources(this.#o.nc, this.#o.names, { ...this.#o.resources, updateExisting: false });
        if (this.#o.nonces) await ensureNonceBucket(this.#o.nc, this.#o.names, this.#o.resources);
      }
      if (this.#failing) log.info("the mesh's streams and buckets are there again");
      this.#failing = false;
    } catch (err) {
      if (!this.#failing) {
        const what = missing.length > 0 ? `create ${sentenceList(missing)} again` : "check the mesh's streams and buckets";
        const hint = isPermissionError(err)
          ? "this agent's NATS user may not; run the coordinator (rung study run) or rung server, which create them"
          : "is JetStream enabled and reachable? retrying";
        log.error({ err: (err as Error).message, why }, `cannot ${what} (${(err as Error).message}) — ${hint}`);
      }
      this.#failing = true;
      throw err;
    }
  }
}

/** `a`, `a and b`, `a, b and c`. */
function sentenceList(items: string[]): string {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}
