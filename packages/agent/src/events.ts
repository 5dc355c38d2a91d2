import {
  encode,
  type Logger,
  MAX_REPORT_BATCH,
  REPORT_BATCH_BYTES,
  reportBatch,
  reportSize,
  retry,
  type Subjects,
  type TrialEvent,
  trialEventMsgId,
} from "@rung/protocol";

/**
 * Trial events leave the agent through JetStream publishes with deterministic message ids
 * (protocol's `trialEventMsgId`), so a publish retried after a lost
 * acknowledgement is dropped by the server's duplicate window instead of being counted twice.
 *
 * They go through an `EventPublisher` (protocol's AckedPublisher: one reply subscription for every
 * acknowledgement, not a request each).
 *
 * One queue per attempt keeps its events in order (claimed, started, reports, finished) with one
 * publish in flight. Reports may be dropped when too many wait (a trial reporting thousands of lines a
 * second while NATS is away); lifecycle events are retried until their deadline.
 *
 * The queues of all attempts publish in turns (`PublishTurns`): an event whose turn has come waits for
 * the end of the event loop's current round — a report for up to REPORT_LINGER_MS after the previous
 * write — and everything due by then (reports of several trials) is handed to the client at once, so
 * they leave in one socket write and their acknowledgements come back together. One write and one
 * read per reported result, and a request's bookkeeping each, were most of an agent's CPU per result.
 * When the order's coordinator reads batches (`batchReports`), the reports of an attempt that wait
 * together — behind its publish in flight, or lingering — leave as one message (the first report, the
 * others in its `more`), sealed when its publish starts: a retry sends the same reports under the same
 * id (the first report's), so the server's de-duplication still holds; otherwise one message per
 * report. Each attempt
 * keeps one publish in flight, so its events are stored in the order they happened whatever fails:
 * with several in flight, a write lost with a dropped connection could be retried after a later one of
 * the same attempt that got through. A report lingers only when nothing of its attempt waits behind
 * it, so a backlog drains one publish after another at full speed.
 */

const MAX_QUEUED_REPORTS = 1000;

/**
 * How long a report may wait for others to share its write: until this long after the previous write
 * and never longer after it was queued, so a report after a quiet spell goes at once. Measured
 * (benchmarks.md, "Hot paths": one agent, 8 trials at 50 results/s against 5/s, Δ CPU / Δ results): 10 ms
 * and the client's request per publish 148–209 µs per result; 40 ms and AckedPublisher 54–122 µs. Since
 * the report sockets' reads rest (report-socket.ts), a fast reporter's lines come several at a time and
 * the reads of all trials at once, which does the batching: 10 ms costs no more CPU than 40 then, and
 * a trial reporting 5 times a second reaches the coordinator p50 1 / p99 6 ms after it wrote (18 / 33 ms
 * with 40).
 */
const REPORT_LINGER_MS = 10;

/** Publishes collected over one round of the event loop (or a report's linger), started together. */
class PublishTurns {
  #due: (() => void)[] = [];
  #lastFlush = Number.NEGATIVE_INFINITY;
  #immediate: NodeJS.Immediate | null = null;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Number.POSITIVE_INFINITY;

  /**
   * Runs `start` at the end of this round of the event loop, with everything else due then; with
   * `lingerUntil` (a report: REPORT_LINGER_MS after it was queued), no sooner than REPORT_LINGER_MS after
   * the previous write, and no later than `lingerUntil` — so a report that waited behind another of its
   * attempt does not linger a second time.
   */
  run(start: () => void, lingerUntil: number | null, lingerMs = REPORT_LINGER_MS): void {
    this.#due.push(start);
    if (this.#immediate) return;
    const at = lingerUntil === null ? 0 : Math.min(this.#lastFlush + lingerMs, lingerUntil);
    const now = performance.now();
    if (at <= now) {
      this.#immediate = setImmediate(() => this.#flush());
      return;
    }
    if (at >= this.#timerAt) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#flush(), at - now);
  }

  /** What lingers goes at the end of this round: a lifecycle event waits behind it (a trial's last report, then `finished`). */
  hurry(): void {
    if (!this.#timer || this.#immediate) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = Number.POSITIVE_INFINITY;
    this.#immediate = setImmediate(() => this.#flush());
  }

  #flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#immediate) clearImmediate(this.#immediate);
    this.#timer = null;
    this.#timerAt = Number.POSITIVE_INFINITY;
    this.#immediate = null;
    const due = this.#due;
    this.#due = [];
    this.#lastFlush = performance.now();
    // Synchronously, one after another: each publish is in the client's buffer before it writes.
    for (const f of due) f();
  }
}

/** Publishes a message under its id; resolves once the stream has it (or had it: a duplicate). */
export interface EventPublisher {
  publish(subject: string, data: Uint8Array, msgID: string, timeoutMs?: number): Promise<unknown>;
}

/** One set of turns per publisher: its connection is what the publishes share. */
const turnsByPublisher = new WeakMap<EventPublisher, PublishTurns>();

function turnsOf(publisher: EventPublisher): PublishTurns {
  let t = turnsByPublisher.get(publisher);
  if (!t) {
    t = new PublishTurns();
    turnsByPublisher.set(publisher, t);
  }
  return t;
}

export interface EventQueueOptions {
  publisher: EventPublisher;
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
  /** How long a report may wait to share a write. Default REPORT_LINGER_MS. */
  lingerMs?: number;
  /**
   * The order's message says its coordinator reads several reports to a message (protocol's
   * REPORT_BATCHES_HEADER): the reports
   * queued behind one publish, or lingering, leave as one message (up to MAX_REPORT_BATCH).
   */
  batchReports?: boolean;
}

type ReportEvent = Extract<TrialEvent, { type: "report" }>;

/** What one publish of the queue carries: a lifecycle event, or reports (one, or a batch). */
interface Item {
  readonly events: TrialEvent[];
  /** Reports may still join it: it has not been handed to the publisher. */
  open: boolean;
  /** Its reports' `reportSize`, counted against REPORT_BATCH_BYTES. */
  bytes: number;
}

export class EventQueue {
  readonly #o: EventQueueOptions;
  #tail: Promise<void> = Promise.resolve();
  #queuedReports = 0;
  /** Items queued or being published: a report lingers only when its item is the last. */
  #items = 0;
  /** The last item, while it holds reports that have not left yet: a new report joins it. */
  #open: { item: Item; done: Promise<boolean> } | null = null;
  #warned = false;

  readonly #turns: PublishTurns;
  readonly #maxBatch: number;

  constructor(options: EventQueueOptions) {
    this.#o = options;
    this.#turns = turnsOf(options.publisher);
    this.#maxBatch = options.batchReports ? MAX_REPORT_BATCH : 1;
  }

  /** Queues an event; the promise settles once it is published (true) or given up (false). */
  push(event: TrialEvent): Promise<boolean> {
    const isReport = event.type === "report";
    const size = isReport ? reportSize(event) : 0;
    if (isReport) {
      if (this.#queuedReports >= MAX_QUEUED_REPORTS) {
        this.#o.onDroppedReport?.();
        return Promise.resolve(false);
      }
      this.#queuedReports += 1;
      // Behind a publish in flight, or lingering: it leaves with the reports queued before it.
      const open = this.#open;
      if (open?.item.open && open.item.events.length < this.#maxBatch && open.item.bytes + size <= REPORT_BATCH_BYTES) {
        open.item.events.push(event);
        open.item.bytes += size;
        return open.done;
      }
    }
    const item: Item = { events: [event], open: isReport, bytes: size };
    // Lifecycle events are retried much longer: a lost `claimed` or `finished` leaves the trial with no
    // owner or no end (until the connection is closed for good: `giveUp`).
    const retryForMs = isReport ? 10_000 : (this.#o.retryForMs ?? 600_000);
    const publish = () => {
      item.open = false;
      return publishEvent(
        this.#o.publisher,
        this.#o.subjects,
        isReport ? reportBatch(item.events as ReportEvent[]) : event,
        retryForMs,
        (err) => {
          if (this.#warned) return;
          this.#warned = true;
          this.#o.log.warn({ err: err.message, trial: event.trial, type: event.type }, "cannot publish a trial event; retrying");
        },
        this.#o.giveUp,
        this.#o.studyId,
        this.#o.tag,
      );
    };
    const lingerMs = this.#o.lingerMs ?? REPORT_LINGER_MS;
    const lingerUntil = isReport ? performance.now() + lingerMs : null;
    // `finished` waits behind its attempt's last report: that one lingers no longer (the coordinator
    // frees the trial's place, and queues the next order, only once `finished` is stored).
    if (!isReport) this.#turns.hurry();
    this.#items += 1;
    const done = this.#tail.then(async () => {
      try {
        // A report lingers only when nothing of its attempt waits behind it: a backlog (a burst of
        // lines, NATS away for a while) drains at full speed, one publish after another.
        const linger = isReport && this.#items === 1;
        return await new Promise<boolean>((resolve) =>
          this.#turns.run(() => resolve(publish()), linger ? lingerUntil : null, lingerMs),
        );
      } finally {
        this.#items -= 1;
        if (isReport) this.#queuedReports -= item.events.length;
      }
    });
    this.#open = isReport ? { item, done } : null;
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
  publisher: EventPublisher,
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
    await retry(() => publisher.publish(subject, bytes, msgID, 5000), {
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
