import { StudyState, type TrialRecord } from "./state.js";

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

/**
 * How a study turned out, for the exit code of `rung study run` and the first line of status and
 * report: a best result; trials that ran but none reported the metric; every trial failed; or
 * nothing ran at all.
 */
export type StudyOutcome =
  | { readonly kind: "best"; readonly trial: string; readonly value: number }
  | { readonly kind: "no-metric"; readonly trials: number }
  | { readonly kind: "all-failed"; readonly failed: number }
  | { readonly kind: "nothing-ran" };

export function studyOutcome(state: StudyState): StudyOutcome {
  const created = [...state.trials.values()].filter((t) => t.createdAt !== null);
  if (created.length === 0) return { kind: "nothing-ran" };
  const best = state.best();
  // Trials reported, none of them the metric: the spec's metric name or the script is wrong.
  if (!best && created.some((t) => t.reports > 0)) return { kind: "no-metric", trials: created.length };
  const failed = created.filter((t) => t.phase === "failed").length;
  // A failed trial's partial results may lead the board, but a study of failures did not succeed.
  if (failed === created.length) return { kind: "all-failed", failed };
  if (best) return { kind: "best", trial: best.trial, value: best.bestValue as number };
  return { kind: "nothing-ran" };
}

/**
 * How a run ended, as the study's record says it (and `rung study status` shows it): a run that
 * completed with every trial failed is `failed`.
 */
export function studyEndState<S extends string>(status: S, state: StudyState): S | "failed" {
  return status === "completed" && studyOutcome(state).kind === "all-failed" ? "failed" : status;
}

/** "reported accuracy, loss — not val_acc" (or "reported nothing — not val_acc"). */
export function missingMetricReason(t: TrialRecord, metric: string): string {
  const keys = Object.keys(t.lastMetrics).sort();
  return keys.length > 0
    ? `${t.trial} reported ${keys.join(", ")} — not ${metric}; report it with rung_trial.report(${metric}=...)`
    : `${t.trial} reported nothing — not ${metric}; report it with rung_trial.report(${metric}=...)`;
}

/** A failed trial: the first line of its reason and the end of its log tail. */
export interface TrialFailure {
  readonly trial: string;
  readonly reason: string;
  readonly tail: readonly string[];
}

/**
 * The first line of a failed trial's end reason and the end of its log tail, for status and report; null
 * for a trial that has not failed (by {@link StudyState.phaseOf}: also while no coordinator has ended it).
 */
export function failureSummary(t: TrialRecord, tailLines = 3): TrialFailure | null {
  if (StudyState.phaseOf(t) !== "failed") return null;
  const [first = "failed", ...rest] = (t.endReason ?? "failed").split("\n");
  const lastTail = [...t.attempts].reverse().find((a) => a.logTail.length > 0)?.logTail ?? rest;
  return { trial: t.trial, reason: first, tail: lastTail.slice(-tailLines) };
}

/** Every failed trial of the study, in trial order. */
export function studyFailures(state: StudyState): TrialFailure[] {
  return [...state.trials.values()].flatMap((t) => {
    const f = failureSummary(t);
    return f ? [f] : [];
  });
}
