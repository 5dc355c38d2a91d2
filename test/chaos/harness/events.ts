import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { readStudyEvents } from "@rung/coordinator";
import type { BadMessageCounter, MeshNames, TrialEvent } from "@rung/protocol";

/** The study's event stream, with the time the server stored each event, and what it says is running. */

export interface TimedEvent {
  seq: number;
  /** When the server stored it (ms); agents' own `ts` may be older when they had to retry. */
  storedAt: number;
  event: TrialEvent;
}

async function storedTimes(nc: NatsConnection, names: MeshNames, study: string): Promise<Map<number, number>> {
  const js = jetstream(nc);
  const consumer = await js.consumers.get(names.streams.events, {
    filter_subjects: names.subjects.studyEvents(study),
    deliver_policy: DeliverPolicy.All,
  });
  const out = new Map<number, number>();
  let pending = (await consumer.info()).num_pending;
  while (pending > 0) {
    const batch = await consumer.fetch({ max_messages: Math.min(pending, 1000), expires: 2000 });
    let got = 0;
    for await (const m of batch) {
      got += 1;
      out.set(m.seq, Math.round(Number(m.info.timestampNanos) / 1e6));
      pending = m.info.pending;
      if (pending === 0) break;
    }
    if (got === 0) break;
  }
  return out;
}

/** Every event of the study so far, as the coordinator reads them, with their stored times. */
export async function readTimedEvents(
  nc: NatsConnection,
  names: MeshNames,
  study: string,
  drops?: BadMessageCounter,
): Promise<TimedEvent[]> {
  const [stored, times] = await Promise.all([readStudyEvents(nc, names, study, drops), storedTimes(nc, names, study)]);
  return stored.map((s) => ({ seq: s.seq, storedAt: times.get(s.seq) ?? s.event.ts, event: s.event }));
}

export interface RunningAttempt {
  trial: string;
  attempt: number;
  agent: string;
  pid: number;
  reports: number;
}

/** Attempts that started, reported at least `minReports` times and have not finished, newest first (victims to pick). */
export function runningAttempts(evs: TimedEvent[], minReports = 1): RunningAttempt[] {
  const started = new Map<string, RunningAttempt>();
  const done = new Set<string>();
  const endedTrials = new Set<string>();
  for (const { event: ev } of evs) {
    if (ev.type === "started")
      started.set(`${ev.trial}#${ev.attempt}`, {
        trial: ev.trial,
        attempt: ev.attempt,
        agent: ev.agent,
        pid: ev.pid,
        reports: 0,
      });
    if (ev.type === "report") {
      const r = started.get(`${ev.trial}#${ev.attempt}`);
      if (r) r.reports += 1;
    }
    if (ev.type === "finished") done.add(`${ev.trial}#${ev.attempt}`);
    if (ev.type === "decision") done.add(`${ev.trial}#${ev.attempt}`);
    if (ev.type === "ended") endedTrials.add(ev.trial);
  }
  return [...started.entries()]
    .filter(([k, r]) => !done.has(k) && !endedTrials.has(r.trial) && r.reports >= minReports)
    .map(([, r]) => r)
    .reverse();
}

/**
 * Whether attempt `attempt` of `trial` still had work to run when its agent was killed: the scheduler
 * had not stopped it (a STOP decision on one of its reports) and it had not reported its last epoch
 * (`maxT`). A kill that lands after either leaves nothing to run again: the trial ends as decided. Judged
 * from what the attempt published, never from clocks, so a decision racing the kill counts the same.
 */
export function hadWorkLeft(evs: TimedEvent[], trial: string, attempt: number, maxT: number): boolean {
  return !evs.some(
    ({ event: e }) =>
      e.trial === trial &&
      e.attempt === attempt &&
      ((e.type === "decision" && e.decision === "STOP") || (e.type === "report" && (e.metrics.epoch ?? 0) >= maxT)),
  );
}

/**
 * A victim whose latest report is not at a rung (its decision may still be on its way; the chaos spec's
 * ASHA, grace 1 and reduction 3 over 9 epochs, has rungs at epochs 1, 3 and 9) and that is more than one
 * report from its last: a kill then almost always lands while the attempt has work left.
 */
export function clearOfRungs(r: RunningAttempt, rungs: readonly number[] = [1, 3], maxT = 9): boolean {
  return !rungs.includes(r.reports) && r.reports < maxT - 1;
}
