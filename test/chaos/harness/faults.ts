import type { TimedEvent } from "./events.js";

/**
 * A fault the scenario injected, and how to tell from the event stream that the mesh recovered from
 * it: the time to recovery is from the fault (or from when its cause was cleared) to the first stored
 * event for which `recovered` holds.
 */
export interface Fault {
  kind: string;
  at: number;
  /** When the cause was cleared (process back, node restarted, agent thawed, disk freed). */
  clearedAt?: number;
  target?: string;
  trial?: string;
  attempt?: number;
  /** Recovery = the first stored event after `from` for which this holds. */
  recovered: (e: TimedEvent) => boolean;
  /** Measure recovery from the fault (default) or from when it was cleared. */
  from?: "fault" | "cleared";
  note?: string;
}

/** Any event of the affected trial from a later attempt, or its end. */
export function trialMovedOn(trial: string, attempt: number): (e: TimedEvent) => boolean {
  return ({ event: ev }) =>
    ev.trial === trial && (ev.type === "ended" || ((ev.type === "started" || ev.type === "report") && ev.attempt > attempt));
}

/** Any event at all: the mesh is moving again. */
export const anyProgress = (): boolean => true;

/** An event only a coordinator writes. */
export const coordinatorProgress = ({ event: ev }: TimedEvent): boolean =>
  ev.type === "created" || ev.type === "queued" || ev.type === "decision" || ev.type === "ended";

/** Milliseconds from each fault to its recovery event; null where none came. */
export function timesToRecovery(faults: Fault[], events: TimedEvent[]): (number | null)[] {
  return faults.map((f) => {
    const from = f.from === "cleared" ? (f.clearedAt ?? f.at) : f.at;
    const next = events.filter((e) => e.storedAt > from && f.recovered(e)).sort((x, y) => x.storedAt - y.storedAt)[0];
    return next ? next.storedAt - from : null;
  });
}
