import type { SchedulerOptions } from "../scheduling/index.js";
import type { StudyReplayResult, StudySpec } from "../study/index.js";
import { fmt } from "./format.js";

/** Scheduler settings as a spec writes them: `asha (grace_period 1, reduction_factor 3, max_t 9, brackets 1)`. */
export function schedulerSettingsText(o: SchedulerOptions): string {
  const parts: string[] = [];
  if (o.type === "asha" || o.type === "hyperband") {
    parts.push(
      `grace_period ${fmt(o.gracePeriod)}`,
      `reduction_factor ${fmt(o.reductionFactor)}`,
      `max_t ${fmt(o.maxT)}`,
      `brackets ${o.brackets}`,
    );
    if (!o.stopLastTrials) parts.push("stop_last_trials false");
  } else if (o.type === "curve") {
    parts.push(
      `grace_period ${fmt(o.gracePeriod)}`,
      `reduction_factor ${fmt(o.reductionFactor)}`,
      `max_t ${fmt(o.maxT)}`,
      `probability ${fmt(o.probability)}`,
      `top_k ${o.topK}`,
    );
  } else {
    if (o.type === "median") parts.push(`grace_period ${fmt(o.gracePeriod)}`, `min_samples_required ${o.minSamplesRequired}`);
    if (o.maxT !== null) parts.push(`max_t ${fmt(o.maxT)}`);
  }
  return `${o.type}${parts.length > 0 ? ` (${parts.join(", ")})` : ""}`;
}

/** `rung replay --study NAME`: what the settings replayed would have spent and picked, against the live run. */
export function studyReplayText(study: string, spec: StudySpec, r: StudyReplayResult): string {
  const unit = spec.scheduler.timeAttr;
  const metric = spec.metric.name;
  return (
    `study ${study} replayed with ${schedulerSettingsText(r.scheduler)}, mode ${r.scheduler.mode}, seed ${r.seed}\n` +
    `${r.trials} trials: these settings spend ${fmt(r.timeSpent)} ${unit}s (the live run spent ${fmt(r.liveTimeSpent)}), stopping ${r.stopped}` +
    (r.truncated ? ` (${r.truncated} trials had no results past where the live run stopped them)` : "") +
    `\nwinner: ${r.winner ? `${r.winner.trial} ${metric}=${fmt(r.winner.value)} at ${unit} ${fmt(r.winner.t)}` : "none"}` +
    ` · live winner: ${r.liveWinner ? `${r.liveWinner.trial} ${fmt(r.liveWinner.value)}` : "none"}\n`
  );
}
