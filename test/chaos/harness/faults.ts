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

/** What a kill cost: the killed attempt's GPU time, and how much of it the next attempt did not redo. */
export interface KillCost {
  trial: string;
  attempt: number;
  agent: string;
  /** GPU-seconds the killed attempt had run (from its start to the kill). */
  ranGpuS: number;
  /** The time attribute of the checkpoint the next attempt resumed from; null for a start from scratch. */
  resumedFrom: number | null;
  /** GPU-seconds of the killed attempt the next one did not have to run again. */
  keptGpuS: number;
  /** What the kill lost: ran − kept. */
  lostGpuS: number;
}

/**
 * GPU time lost to each `kill -9 agent` fault, from the stream: the killed attempt ran from its `started`
 * to the kill; its next attempt resumed from a checkpoint the killed one stored (its `checkpoint` event,
 * stored that long after the killed attempt started) or from scratch. One GPU per attempt.
 */
export function killCosts(faults: Fault[], events: TimedEvent[]): KillCost[] {
  const out: KillCost[] = [];
  for (const f of faults) {
    if (f.kind !== "kill -9 agent" || f.trial === undefined || f.attempt === undefined) continue;
    const started = events.find((e) => e.event.type === "started" && e.event.trial === f.trial && e.event.attempt === f.attempt);
    if (!started) continue;
    const ranGpuS = Math.max(0, f.at - started.storedAt) / 1000;
    const next = events.find(
      (e) => e.event.type === "started" && e.event.trial === f.trial && e.event.attempt > (f.attempt as number),
    );
    const from = next?.event.type === "started" ? (next.event.resumedFrom ?? null) : null;
    let keptGpuS = 0;
    if (from && from.attempt === f.attempt) {
      const stored = events.find((e) => e.event.type === "checkpoint" && e.event.ref.object === from.object);
      if (stored) keptGpuS = Math.min(ranGpuS, Math.max(0, stored.storedAt - started.storedAt) / 1000);
    }
    out.push({
      trial: f.trial,
      attempt: f.attempt,
      agent: f.target ?? "?",
      ranGpuS,
      resumedFrom: from?.t ?? null,
      keptGpuS,
      lostGpuS: ranGpuS - keptGpuS,
    });
  }
  return out;
}

/** `t0004 attempt 1 on a2: ran 2.1 GPU-s, resumed at epoch 5, lost 0.3 GPU-s`. */
export function killCostText(c: KillCost, timeAttr = "epoch"): string {
  const resumed = c.resumedFrom === null ? "restarted from scratch" : `resumed at ${timeAttr} ${c.resumedFrom}`;
  return `${c.trial} attempt ${c.attempt} on ${c.agent}: ran ${c.ranGpuS.toFixed(1)} GPU-s, ${resumed}, lost ${c.lostGpuS.toFixed(1)} GPU-s`;
}
