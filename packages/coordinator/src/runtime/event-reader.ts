import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type BadMessageCounter,
  DecodeError,
  decode,
  expandEvent,
  type MeshNames,
  type TrialEvent,
  TrialEventSchema,
} from "@rung/protocol";
import type { StoredEvent } from "../study/index.js";

/**
 * A study's events, read in stream order with an ordered consumer (no server-side state to clean
 * up). The coordinator reads everything stored first (its catch-up), then keeps following; the
 * one-shot commands (`status`, `report`, `replay --study`) read up to the end and stop.
 */

export interface FollowOptions {
  /** Called once with every event stored when following began (possibly none). */
  onCatchUp(events: StoredEvent[]): Promise<void> | void;
  /**
   * Called for each message's events after that, in order: one event, or the reports of a batch (protocol's
   * `expandEvent`), which share the message's sequence. A reader that acts on what it has folded (the
   * coordinator dispatches) acts after the whole message, never between its parts.
   */
  onEvents(events: StoredEvent[]): Promise<void> | void;
  signal?: AbortSignal;
  drops?: BadMessageCounter;
}

/** An ordered consumer of the events stream from its start, on one filter (a study's or a trial's events). */
async function eventsConsumer(nc: NatsConnection, names: MeshNames, filter: string) {
  return jetstream(nc).consumers.get(names.streams.events, { filter_subjects: filter, deliver_policy: DeliverPolicy.All });
}

/**
 * The events a message holds (several for a batch of reports), each with its publisher; none when it
 * does not decode or came on another trial's subject (counted in `drops`).
 */
export function storedEvents(
  m: { data: Uint8Array; seq: number; subject: string },
  names: MeshNames,
  drops: BadMessageCounter | undefined,
): StoredEvent[] {
  const r = decode(TrialEventSchema, m.data, "trial event");
  if (!r.ok) {
    drops?.record("events", r.error);
    return [];
  }
  // Checked once: every report of a batch has the first's study and trial.
  const s = storedEvent(m, r.value, names, drops);
  return s ? expandEvent(r.value).map((event) => ({ ...s, event })) : [];
}

/**
 * An event with its publisher, from its subject. Everyone publishes on its own trial's subject; a body
 * that names another study or trial was misrouted or forged, and would otherwise be folded into a trial
 * it does not belong to. Whether the publisher may say what the body says is the fold's to check.
 */
function storedEvent(
  m: { seq: number; subject: string },
  event: TrialEvent,
  names: MeshNames,
  drops: BadMessageCounter | undefined,
): StoredEvent | undefined {
  const { study, trial } = event;
  const at = names.subjects.parseEvents(m.subject);
  if (!at || at.study !== study || at.trial !== trial) {
    drops?.record("events", new DecodeError("stray", "trial event", `trial event: ${study}/${trial} arrived on ${m.subject}`));
    return undefined;
  }
  return { seq: m.seq, event, from: at.from };
}

/** Follows a study's events until `signal` aborts. */
export async function followStudyEvents(nc: NatsConnection, names: MeshNames, study: string, o: FollowOptions): Promise<void> {
  const consumer = await eventsConsumer(nc, names, names.subjects.studyEvents(study));
  const pendingAtStart = (await consumer.info()).num_pending;
  // Short pulls: the client notices a consumer that died with its server (a cluster node lost) after
  // two missed idle heartbeats, half of `expires` each, and retries at that pace too. The default
  // (30 s) left the coordinator deaf for a minute after a node failure.
  const messages = await consumer.consume({ expires: 5000 });
  const stop = () => void messages.stop();
  o.signal?.addEventListener("abort", stop, { once: true });
  try {
    const backlog: StoredEvent[] = [];
    let caughtUp = pendingAtStart === 0;
    if (caughtUp) await o.onCatchUp([]);
    for await (const m of messages) {
      const evs = storedEvents(m, names, o.drops);
      if (!caughtUp) {
        backlog.push(...evs);
        if (m.info.pending === 0) {
          caughtUp = true;
          await o.onCatchUp(backlog.splice(0));
        }
        continue;
      }
      if (evs.length > 0) await o.onEvents(evs);
    }
  } finally {
    o.signal?.removeEventListener("abort", stop);
  }
}

/** Every event of a study stored now, in order. */
export function readStudyEvents(
  nc: NatsConnection,
  names: MeshNames,
  study: string,
  drops?: BadMessageCounter,
): Promise<StoredEvent[]> {
  return readEvents(nc, names, names.subjects.studyEvents(study), drops);
}

/** Every stored event on `filter` (a study's, or one trial's `Subjects.trialEvents`), in order, with its publisher. */
export async function readEvents(
  nc: NatsConnection,
  names: MeshNames,
  filter: string,
  drops?: BadMessageCounter,
): Promise<StoredEvent[]> {
  const consumer = await eventsConsumer(nc, names, filter);
  let pending = (await consumer.info()).num_pending;
  const out: StoredEvent[] = [];
  while (pending > 0) {
    const batch = await consumer.fetch({ max_messages: Math.min(pending, 1000), expires: 2000 });
    let got = 0;
    for await (const m of batch) {
      got += 1;
      out.push(...storedEvents(m, names, drops));
      pending = m.info.pending;
      if (pending === 0) break;
    }
    if (got === 0) break;
  }
  return out;
}
