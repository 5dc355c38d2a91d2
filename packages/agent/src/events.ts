import type { JetStreamClient } from "@nats-io/jetstream";
import { encode, type Logger, retry, type Subjects, type TrialEvent, trialEventMsgId } from "@rung/protocol";

/**
 * Trial events leave the agent through JetStream publishes with deterministic message ids
 * (protocol's `trialEventMsgId`), so a publish retried after a lost
 * acknowledgement is dropped by the server's duplicate window instead of being counted twice.
 *
 * One queue per attempt keeps its events in order (claimed, started, reports, finished) with one
 * publish in flight. Reports may be dropped when too many wait (a trial reporting thousands of lines a
 * second while NATS is away); lifecycle events are retried until their deadline.
 */

const MAX_QUEUED_REPORTS = 1000;

export interface EventQueueOptions {
  js: JetStreamClient;
  subjects: Subjects;
  log: Logger;
  /** How long a lifecycle event is retried before it is given up. Default 60 s. */
  retryForMs?: number;
  /** Called for each report dropped because the queue was full. */
  onDroppedReport?: () => void;
  /** When this says so (the connection is closed for good), retrying stops. */
  giveUp?: () => boolean;
  /** The study's incarnation id from the order (scopes the message ids); none for older studies. */
  studyId?: string | null;
  /** This agent's id tag for the order (protocol's `agentIdTag`), which ends every message id. */
  tag?: string | null;
}

export class EventQueue {
  readonly #o: EventQueueOptions;
  #tail: Promise<void> = Promise.resolve();
  #queuedReports = 0;
  #warned = false;

  constructor(options: EventQueueOptions) {
    this.#o = options;
  }

  /** Queues an event; the promise settles once it is published (true) or given up (false). */
  push(event: TrialEvent): Promise<boolean> {
    const isReport = event.type === "report";
    if (isReport) {
      if (this.#queuedReports >= MAX_QUEUED_REPORTS) {
        this.#o.onDroppedReport?.();
        return Promise.resolve(false);
      }
      this.#queuedReports += 1;
    }
    // Lifecycle events are retried much longer: a lost `claimed` or `finished` leaves the trial with no
    // owner or no end (until the connection is closed for good: `giveUp`).
    const retryForMs = isReport ? 10_000 : (this.#o.retryForMs ?? 600_000);
    const done = this.#tail.then(async () => {
      try {
        return await publishEvent(
          this.#o.js,
          this.#o.subjects,
          event,
          retryForMs,
          (err) => {
            if (this.#warned) return;
            this.#warned = true;
            this.#o.log.warn(
              { err: err.message, trial: event.trial, type: event.type },
              "cannot publish a trial event; retrying",
            );
          },
          this.#o.giveUp,
          this.#o.studyId,
          this.#o.tag,
        );
      } finally {
        if (isReport) this.#queuedReports -= 1;
      }
    });
    this.#tail = done.then(() => undefined);
    return done;
  }

  /** Resolves when everything queued so far is published or given up. */
  flushed(): Promise<void> {
    return this.#tail;
  }
}

/** Publishes one event, retrying with backoff for up to `retryForMs`. Never throws. */
export async function publishEvent(
  js: JetStreamClient,
  subjects: Subjects,
  event: TrialEvent,
  retryForMs: number,
  onError?: (err: Error) => void,
  giveUp?: () => boolean,
  studyId?: string | null,
  tag?: string | null,
): Promise<boolean> {
  const subject = subjects.eventSubject(event);
  const bytes = encode(event);
  const msgID = trialEventMsgId(event, studyId, tag);
  try {
    await retry(() => js.publish(subject, bytes, { msgID, timeout: 5000 }), {
      deadlineMs: retryForMs,
      retryable: () => !giveUp?.(),
      onRetry: ({ error }) => onError?.(error as Error),
    });
    return true;
  } catch (err) {
    onError?.(err as Error);
    return false;
  }
}
