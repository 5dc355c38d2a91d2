import { compileSchedulerOptions, createScheduler, type SchedulerOptionsInput } from "../scheduling/index.js";
import type { StoredEvent } from "./stored-event.js";

/**
 * `rung replay --study NAME`: feeds a finished study's own reports, in the order they arrived,
 * through a scheduler with other settings, and tells what that scheduler would have spent and
 * picked. A replay can only stop trials earlier than the live run did: a trial the live run stopped
 * at t=3 has no results past 3, so such trials are counted as `truncated`.
 */
export interface StudyReplayResult {
  trials: number;
  stopped: number;
  truncated: number;
  /** Sum over trials of the last time value fed (GPU-epochs when time_attr is epoch). */
  timeSpent: number;
  /** The same for the live run. */
  liveTimeSpent: number;
  winner: { trial: string; value: number; t: number } | null;
  liveWinner: { trial: string; value: number; t: number } | null;
}

export function replayStudy(
  events: readonly StoredEvent[],
  options: SchedulerOptionsInput & { metric: string; timeAttr: string; seed?: number },
): StudyReplayResult {
  const opts = compileSchedulerOptions(options);
  const scheduler = createScheduler(opts, options.seed ?? 0);
  const sign = opts.mode === "max" ? 1 : -1;
  const stopped = new Set<string>();
  const lastFed = new Map<string, number>();
  const lastLive = new Map<string, number>();
  let winner: StudyReplayResult["winner"] = null;
  let liveWinner: StudyReplayResult["liveWinner"] = null;
  const better = (v: number, w: { value: number } | null) => !Number.isNaN(v) && (w === null || sign * v > sign * w.value);
  for (const { event } of events) {
    if (event.type !== "report") continue;
    const t = event.metrics[options.timeAttr];
    const v = event.metrics[options.metric];
    if (t === undefined || v === undefined) continue;
    lastLive.set(event.trial, Math.max(lastLive.get(event.trial) ?? 0, t));
    if (better(v, liveWinner)) liveWinner = { trial: event.trial, value: v, t };
    if (stopped.has(event.trial)) continue;
    lastFed.set(event.trial, Math.max(lastFed.get(event.trial) ?? 0, t));
    if (better(v, winner)) winner = { trial: event.trial, value: v, t };
    const d = scheduler.onResult(event.trial, t, v);
    if (d.decision === "STOP") {
      stopped.add(event.trial);
      scheduler.onComplete(event.trial, t, v);
    }
  }
  const maxT = "maxT" in opts ? opts.maxT : null;
  let truncated = 0;
  for (const [trial, t] of lastLive) if (!stopped.has(trial) && maxT !== null && t < maxT) truncated += 1;
  const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  return {
    trials: lastLive.size,
    stopped: [...stopped].filter((t) => maxT === null || (lastFed.get(t) ?? 0) < maxT).length,
    truncated,
    timeSpent: sum(lastFed),
    liveTimeSpent: sum(lastLive),
    winner,
    liveWinner,
  };
}
