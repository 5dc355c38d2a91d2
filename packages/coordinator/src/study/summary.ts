import { StudyState } from "./state.js";

/** Numbers about a study that views and the report show: the rung funnel and the GPU time early stopping saved. */

/** Trials reaching each time value (the rung funnel), from the reports seen. */
export function rungFunnel(state: StudyState, milestones: readonly number[]): { milestone: number; trials: number }[] {
  return milestones.map((m) => ({
    milestone: m,
    trials: [...state.trials.values()].filter((t) => t.lastT !== null && t.lastT >= m).length,
  }));
}

export interface EarlyStoppingSavings {
  /** GPU-seconds the study used. */
  usedGpuSeconds: number;
  /** Estimated GPU-seconds had every trial run to max_t. */
  fullGpuSeconds: number;
  savedGpuSeconds: number;
  /** saved / full, 0..1. */
  savedShare: number;
}

/**
 * GPU time saved by stopping early: each stopped trial's own pace (GPU-seconds per unit of the time
 * attribute so far) projected to max_t. An estimate — a trial's first epochs include its start-up.
 */
export function earlyStoppingSavings(state: StudyState, maxT: number | null, now = Date.now()): EarlyStoppingSavings {
  let used = 0;
  let full = 0;
  for (const t of state.trials.values()) {
    if (t.createdAt === null) continue;
    const u = t.attempts.reduce((s, a) => s + StudyState.attemptGpuSeconds(a, now), 0);
    used += u;
    full += u;
    if (maxT !== null && t.lastT !== null && t.lastT > 0 && t.lastT < maxT && t.phase === "stopped") {
      full += (u / t.lastT) * (maxT - t.lastT);
    }
  }
  return {
    usedGpuSeconds: used,
    fullGpuSeconds: full,
    savedGpuSeconds: full - used,
    savedShare: full > 0 ? (full - used) / full : 0,
  };
}
