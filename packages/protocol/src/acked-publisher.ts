import { JetStreamApiError } from "@nats-io/jetstream";
import { jserrors } from "@nats-io/jetstream/internal";
import {
  ClosedConnectionError,
  createInbox,
  headers,
  type Msg,
  type NatsConnection,
  NoRespondersError,
  PermissionViolationError,
  type Subscription,
  TimeoutError,
} from "@nats-io/transport-node";

/**
 * JetStream publishes whose acknowledgements all come back on one subscription.
 *
 * A JetStream publish is a core publish with a reply subject; the stream that stores it answers there
 * (`{"stream":…,"seq":…}`, `"duplicate":true` when its message id was seen inside the duplicate window,
 * or `{"error":…}`). The client's own `js.publish` makes each one a request: a reply subscription
 * entry, a timer, a captured error and two layers of promises per message — most of what an agent
 * spends per reported result (docs/benchmarks.md, "Hot paths"). Here every publish gets a reply
 * subject under one inbox this publisher subscribes to once (`<inbox>.<n>`), a map entry, and a place
 * in one sweep that fails what waited too long. Same messages on the wire, same ids, same
 * de-duplication; callers retry a failure under the same id, as with `js.publish`.
 *
 * What a failure looks like matches the client's, so `nats-errors.ts` reads both alike: the ack wait
 * ran out — TimeoutError; no stream takes the subject — JetStreamNotEnabled caused by a
 * NoRespondersError; the stream refused — JetStreamApiError with the server's code; the user may not
 * publish there — PermissionViolationError, at once (the server says so on the connection, not in a
 * reply); the connection is closed — ClosedConnectionError. A reply subscription the server refuses
 * fails what waits with its error and is made again, on a new inbox, by the next publish.
 */

export interface PublishAck {
  stream: string;
  seq: number;
  duplicate: boolean;
}

interface Waiting {
  subject: string;
  deadline: number;
  resolve(ack: PublishAck): void;
  reject(err: Error): void;
}

/** How often waiting publishes are checked for their deadline (each waits its timeout, up to this much more). */
const SWEEP_MS = 250;

export class AckedPublisher {
  readonly #nc: NatsConnection;
  readonly #inboxPrefix: string | undefined;
  #prefix = "";
  #sub: Subscription | null = null;
  readonly #waiting = new Map<string, Waiting>();
  readonly #decoder = new TextDecoder();
  #next = 0;
  #sweep: NodeJS.Timeout | null = null;
  #closed = false;

  /** `inboxPrefix`: the connection's (connectNats' `inboxPrefix`), which its user may subscribe to. */
  constructor(nc: NatsConnection, inboxPrefix?: string) {
    this.#nc = nc;
    this.#inboxPrefix = inboxPrefix;
    this.#subscribe();
    void this.#watchPermissions();
    void nc.closed().then(() => this.close());
  }

  #subscribe(): void {
    const inbox = createInbox(this.#inboxPrefix);
    const prefix = `${inbox}.`;
    const sub = this.#nc.subscribe(`${inbox}.*`, {
      callback: (err, m) => {
        if (err) {
          // Refused (permissions): the client dropped the subscription; what waits here would never hear.
          if (this.#sub === sub) this.#sub = null;
          this.#failAll(() => err);
        } else this.#onAck(m, prefix);
      },
    });
    this.#sub = sub;
    this.#prefix = prefix;
  }

  /** A publish the user may not make is refused on the connection, with no reply: fail what waits on that subject. */
  async #watchPermissions(): Promise<void> {
    for await (const s of this.#nc.status()) {
      if (this.#closed) return;
      const err = s.type === "error" ? s.error : null;
      if (!(err instanceof PermissionViolationError) || err.operation !== "publish") continue;
      for (const [token, w] of this.#waiting) {
        if (w.subject !== err.subject) continue;
        this.#waiting.delete(token);
        w.reject(err);
      }
      if (this.#waiting.size === 0) this.#stopSweep();
    }
  }

  /** Acknowledgements not yet in. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Publishes `data` on `subject` under message id `msgID`; resolves with the stream's acknowledgement. */
  publish(subject: string, data: Uint8Array, msgID: string, timeoutMs = 5000): Promise<PublishAck> {
    if (this.#closed) return Promise.reject(new ClosedConnectionError());
    if (!this.#sub) this.#subscribe();
    const token = (this.#next++).toString(36);
    const h = headers();
    h.set("Nats-Msg-Id", msgID);
    return new Promise<PublishAck>((resolve, reject) => {
      this.#waiting.set(token, { subject, deadline: performance.now() + timeoutMs, resolve, reject });
      try {
        this.#nc.publish(subject, data, { reply: this.#prefix + token, headers: h });
      } catch (err) {
        this.#waiting.delete(token);
        reject(err as Error);
        return;
      }
      this.#sweep ??= setInterval(() => this.#expire(), SWEEP_MS);
    });
  }

  /** Stops listening; what still waits fails as a closed connection. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sub?.unsubscribe();
    this.#sub = null;
    this.#failAll(() => new ClosedConnectionError());
  }

  #failAll(error: () => Error): void {
    this.#stopSweep();
    const waiting = [...this.#waiting.values()];
    this.#waiting.clear();
    for (const w of waiting) w.reject(error());
  }

  #onAck(m: Msg, prefix: string): void {
    const token = m.subject.slice(prefix.length);
    const w = this.#waiting.get(token);
    if (!w) return; // answered after it timed out: the retry under the same id has its own
    this.#waiting.delete(token);
    if (this.#waiting.size === 0) this.#stopSweep();
    if (m.data.length === 0) {
      // A status message and no body: 503, nobody listens on the subject.
      w.reject(
        m.headers?.code === 503
          ? new jserrors.JetStreamNotEnabled("jetstream is not enabled", { cause: new NoRespondersError(w.subject) })
          : new Error(`empty acknowledgement on ${w.subject}`),
      );
      return;
    }
    let v: {
      stream?: string;
      seq?: number;
      duplicate?: boolean;
      error?: { code: number; err_code: number; description: string };
    };
    try {
      v = JSON.parse(this.#decoder.decode(m.data));
    } catch {
      w.reject(new Error(`an acknowledgement on ${w.subject} that is not JSON`));
      return;
    }
    if (v.error) w.reject(new JetStreamApiError(v.error));
    else if (!v.stream) w.reject(new Error(`an acknowledgement on ${w.subject} that names no stream`));
    else w.resolve({ stream: v.stream, seq: v.seq ?? 0, duplicate: v.duplicate === true });
  }

  #expire(): void {
    const now = performance.now();
    for (const [token, w] of this.#waiting) {
      if (w.deadline > now) continue;
      this.#waiting.delete(token);
      w.reject(new TimeoutError());
    }
    if (this.#waiting.size === 0) this.#stopSweep();
  }

  #stopSweep(): void {
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = null;
  }
}
