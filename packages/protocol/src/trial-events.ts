import { MAX_REPORT_BATCH, SCHEMA_VERSION, type TrialEvent, type TrialEventOf, type TrialEventType } from "./messages.js";

/**
 * Constructors of trial events (stream RUNG_EVENTS). Each stamps the schema version `v` and the `type`
 * discriminator, and `ts` unless the caller gives one, so no caller writes `v:` by hand:
 *
 *   TrialEvents.queued({ study, trial, attempt })
 *   trialEvent(type, { study, trial, attempt, agent, ... })   // when the type is a variable
 *
 * The fields are the zod-inferred output of `TrialEventSchema` (messages.ts), defaults included: what
 * a constructor returns is exactly what `decode` yields for it. Nothing is validated here — the reader
 * validates — so a hot path (reports) pays for one object.
 */

/** Who writes each kind of trial event (docs/architecture.md); a new event type must say. */
export const TrialEventWriter = {
  created: "coordinator",
  queued: "coordinator",
  claimed: "agent",
  started: "agent",
  report: "agent",
  checkpoint: "agent",
  finished: "agent",
  rejected: "agent",
  decision: "coordinator",
  ended: "coordinator",
} as const satisfies Record<TrialEventType, "agent" | "coordinator">;
export type TrialEventWriter = (typeof TrialEventWriter)[TrialEventType];

type WrittenBy<W extends TrialEventWriter> = {
  [T in TrialEventType]: (typeof TrialEventWriter)[T] extends W ? T : never;
}[TrialEventType];
/** `created`, `queued`, `decision`, `ended`. */
export type CoordinatorEventType = WrittenBy<"coordinator">;
/** `claimed`, `started`, `report`, `finished`, `rejected`. */
export type AgentEventType = WrittenBy<"agent">;

/**
 * Who published an event, as its subject says (subjects.ts: `….c` or `….a.<agent>`). The server lets
 * each user publish under its own name only, so this — not the body's `agent` field — is what readers
 * trust.
 */
export type EventSource = { readonly role: "coordinator" } | { readonly role: "agent"; readonly agent: string };
export const COORDINATOR: EventSource = Object.freeze({ role: "coordinator" });

/** The publisher an event claims to come from: the coordinator, or the agent its body names. */
export function sourceOf(ev: TrialEvent): EventSource {
  return "agent" in ev && TrialEventWriter[ev.type] === "agent" ? { role: "agent", agent: ev.agent } : COORDINATOR;
}

/** `the coordinator` or `agent b7`. */
export function describeSource(from: EventSource): string {
  return from.role === "coordinator" ? "the coordinator" : `agent ${from.agent}`;
}

/** The fields a caller gives for an event of type `T`: all but `v` and `type`; `ts` defaults to now. */
export type TrialEventInit<T extends TrialEventType> = Omit<TrialEventOf<T>, "v" | "type" | "ts"> & { ts?: number };

/** Makes an event of `type`. `v` and `type` are always the stamped ones, even if `init` carries others. */
export function trialEvent<T extends TrialEventType>(type: T, init: TrialEventInit<T>): TrialEventOf<T> {
  // Written first so that they lead the encoded map as in every other message, and again after the
  // spread so that they win over anything `init` carries.
  const event: Record<string, unknown> = { v: SCHEMA_VERSION, type, ...init };
  event.v = SCHEMA_VERSION;
  event.type = type;
  event.ts = init.ts ?? Date.now();
  return event as TrialEventOf<T>;
}

const make =
  <T extends TrialEventType>(type: T) =>
  (init: TrialEventInit<T>): TrialEventOf<T> =>
    trialEvent(type, init);

/** One constructor per trial event type, named after it. */
export const TrialEvents = {
  /** Coordinator: the trial exists, with its parameters and bracket. */
  created: make("created"),
  /** Coordinator: an order for this attempt was published. */
  queued: make("queued"),
  /** Agent: it holds the order and the GPUs. */
  claimed: make("claimed"),
  /** Agent: the process runs. */
  started: make("started"),
  /** Agent: one line the trial reported. */
  report: make("report"),
  /** Agent: a snapshot of the checkpoint directory is stored. */
  checkpoint: make("checkpoint"),
  /** Agent: the attempt ended (exactly one per attempt). */
  finished: make("finished"),
  /** Agent: the order was refused and never started. */
  rejected: make("rejected"),
  /** Coordinator: a scheduler decision on a report. */
  decision: make("decision"),
  /** Coordinator: the trial's final state. */
  ended: make("ended"),
} as const satisfies { [T in TrialEventType]: (init: TrialEventInit<T>) => TrialEventOf<T> };

/**
 * Reports of one attempt, in order, as one event (the message a batch is sent as): the first, with the
 * others as its `more`. `expandEvent` gives them back. At most MAX_REPORT_BATCH; one report is itself.
 */
export function reportBatch(reports: readonly TrialEventOf<"report">[]): TrialEventOf<"report"> {
  const [first, ...rest] = reports;
  if (!first) throw new RangeError("a batch of reports needs at least one");
  if (reports.length > MAX_REPORT_BATCH) throw new RangeError(`a batch holds at most ${MAX_REPORT_BATCH} reports`);
  if (rest.length === 0) return first;
  return { ...first, more: rest.map((r) => ({ seq: r.seq, ts: r.ts, metrics: r.metrics })) };
}

/**
 * About how many bytes a report adds to its message: what `reportBatch` callers count against
 * REPORT_BATCH_BYTES. An estimate from its metrics (names and numbers), not an encoding.
 */
export function reportSize(report: TrialEventOf<"report">): number {
  let n = 24;
  for (const k in report.metrics) n += k.length + 10;
  return n;
}

/**
 * The events one stored message stands for, in order: a report sent with the attempt's next reports
 * (`more`: the order's message had REPORT_BATCHES_HEADER) is each of them, as if each had come alone; any other event is
 * itself. Every reader of the events stream folds what this returns, so a batch is never seen as one
 * report. The parts share the message's stream sequence; a reader that acts between events (the
 * coordinator dispatches, and records the last sequence it folded) acts only after the last part.
 */
export function expandEvent(ev: TrialEvent): TrialEvent[] {
  if (ev.type !== "report" || ev.more === undefined) return [ev];
  const { more, ...first } = ev;
  const out: TrialEvent[] = [first];
  for (const r of more) out.push({ ...first, seq: r.seq, ts: r.ts, metrics: r.metrics });
  return out;
}
