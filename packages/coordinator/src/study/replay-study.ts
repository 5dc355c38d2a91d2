import {
  compileSchedulerOptions,
  createScheduler,
  type SchedulerOptions,
  type SchedulerOptionsInput,
} from "../scheduling/index.js";
import { admitted } from "./decider.js";
import type { StudySpec } from "./spec.js";
import type { StoredEvent } from "./stored-event.js";

/**
 * `rung replay --study NAME`: feeds a finished study's own reports, in the order they arrived,
 * through a scheduler with other settings, and tells what that scheduler would have spent and
 * picked. A replay can only stop trials earlier than the live run did: a trial the live run stopped
 * at t=3 has no results past 3, so such trials are counted as `truncated`.
 */
export interface StudyReplayResult {
  /** The settings replayed, defaults applied. */
  scheduler: SchedulerOptions;
  seed: number;
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

/** What `replayStudy` takes: scheduler settings, plus where the study's reports keep the metric and time. */
export type StudyReplayOptions = SchedulerOptionsInput & {
  readonly metric: string;
  readonly timeAttr: string;
  /** Seed of the bracket draws. Default 0. */
  readonly seed?: number | undefined;
  /**
   * Put each trial in the bracket its `created` event names (the live run's), as the live coordinator
   * does after a restart, rather than draw one. Only meaningful for the study's own bracket layout.
   * Default false.
   */
  readonly keepBrackets?: boolean | undefined;
};

/**
 * The settings `rung replay --study NAME [settings]` replays with: the study's own scheduler, metric,
 * time attribute and seed, with the settings given on top. Naming another scheduler type starts from
 * that type's defaults and the study's max_t (the study's grace period means nothing to FIFO).
 */
export function studyReplayOptions(
  spec: StudySpec,
  given: SchedulerOptionsInput & { readonly seed?: number | undefined } = {},
): StudyReplayOptions {
  const s = spec.scheduler;
  const type = given.scheduler ?? s.type;
  // The study's horizon means the same to every scheduler; its other settings only to its own type.
  let own: SchedulerOptionsInput = "maxT" in s && s.maxT !== null && type !== "fifo" && type !== "median" ? { maxT: s.maxT } : {};
  if (type === s.type) {
    if (s.type === "asha" || s.type === "hyperband") {
      const { gracePeriod, reductionFactor, maxT, brackets, stopLastTrials } = s;
      own = { gracePeriod, reductionFactor, maxT, brackets, stopLastTrials };
    } else if (s.type === "median") {
      own = { gracePeriod: s.gracePeriod, minSamplesRequired: s.minSamplesRequired, maxT: s.maxT };
    } else if (s.type === "curve") {
      const { gracePeriod, reductionFactor, maxT, probability, topK } = s;
      own = { gracePeriod, reductionFactor, maxT, probability, topK };
    } else {
      own = { maxT: s.maxT };
    }
  }
  const set = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
  return {
    ...own,
    ...set,
    scheduler: type,
    mode: given.mode ?? spec.metric.mode,
    metric: spec.metric.name,
    timeAttr: s.timeAttr,
    seed: given.seed ?? spec.search.seed,
    // The live brackets mean something only to the same scheduler with as many brackets.
    keepBrackets:
      type === s.type && (s.type === "asha" || s.type === "hyperband") && (given.brackets ?? s.brackets) === s.brackets,
  };
}

/**
 * With `keepBrackets`, trials keep the bracket the live run gave them (their `created` event), so
 * replaying a study with its own settings gives back its own decisions; otherwise each trial draws
 * one from `seed`, in the order the trials were created.
 */
export function replayStudy(events: readonly StoredEvent[], options: StudyReplayOptions): StudyReplayResult {
  const { metric, timeAttr, seed = 0, keepBrackets = false, ...schedulerInput } = options;
  const opts = compileSchedulerOptions(schedulerInput);
  const scheduler = createScheduler(opts, seed);
  const sign = opts.mode === "max" ? 1 : -1;
  const stopped = new Set<string>();
  const lastFed = new Map<string, number>();
  const lastLive = new Map<string, number>();
  let winner: StudyReplayResult["winner"] = null;
  let liveWinner: StudyReplayResult["liveWinner"] = null;
  const better = (v: number, w: { value: number } | null) => !Number.isNaN(v) && (w === null || sign * v > sign * w.value);
  // Only what each event's publisher may say, as in the live coordinator (a forged report ranks nothing).
  for (const event of admitted(events[0]?.event.study ?? "", events)) {
    if (event.type === "created") {
      try {
        scheduler.onTrialAdd(event.trial, keepBrackets && event.bracket !== null ? { bracket: event.bracket } : undefined);
      } catch {
        scheduler.onTrialAdd(event.trial); // a bracket this layout does not have: draw one
      }
      continue;
    }
    if (event.type !== "report") continue;
    const t = event.metrics[timeAttr];
    const v = event.metrics[metric];
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
    scheduler: opts,
    seed,
    trials: lastLive.size,
    stopped: [...stopped].filter((t) => maxT === null || (lastFed.get(t) ?? 0) < maxT).length,
    truncated,
    timeSpent: sum(lastFed),
    liveTimeSpent: sum(lastLive),
    winner,
    liveWinner,
  };
}
