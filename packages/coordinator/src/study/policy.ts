import type { Scheduler, SchedulerDecision } from "../scheduling/index.js";
import { createScheduler, EarlyStopping, PromotionAsha } from "../scheduling/index.js";
import { Pbt } from "./pbt.js";
import type { ParamSpec } from "./search-space.js";
import type { StudySpec } from "./spec.js";
import { schedulerOptionsOf } from "./spec.js";

/** A trial's reported metrics, as in a `report` event (`{ epoch: 3, val_acc: 0.71, val_loss: 0.9 }`). */
export type Metrics = Readonly<Record<string, number>>;

/**
 * The study's scheduler as the runtime loop uses it: it takes whole reports, picks out the time
 * attribute and the metric, and layers early stopping on top of the spec's scheduler.
 *
 * - A report without the time attribute or the metric gets CONTINUE and changes nothing (Ray's first
 *   rule), except that early stopping still sees its monitored metric when present.
 * - The scheduler always sees the result first (so its records match a replay of the scheduler
 *   alone); early stopping can only turn a CONTINUE into a STOP.
 */
export interface StudyPolicy {
  readonly scheduler: Scheduler;
  /** The promotion scheduler, when the study uses one (`scheduler.type: promotion`); null otherwise. */
  readonly promoter: PromotionAsha | null;
  /** Population-based training, when the study uses it (`scheduler.type: pbt`); null otherwise. */
  readonly pbt: Pbt | null;
  readonly earlyStopping: EarlyStopping | null;
  onTrialAdd(trial: string, options?: { readonly bracket?: number | null | undefined }): { bracket: number | null };
  onReport(trial: string, metrics: Metrics): SchedulerDecision;
  onComplete(trial: string, metrics: Metrics): void;
}

/** `seed` defaults to the spec's search seed (bracket draws use their own stream of it). */
export function createStudyPolicy(spec: StudySpec, seed: number = spec.search.seed): StudyPolicy {
  const options = schedulerOptionsOf(spec);
  const scheduler =
    options.type === "pbt" && spec.scheduler.type === "pbt"
      ? new Pbt(options, Object.fromEntries(spec.scheduler.mutations.map((m) => [m, spec.search.space[m] as ParamSpec])), seed)
      : createScheduler(options, seed);
  const es = spec.earlyStopping;
  const earlyStopping = es === null ? null : new EarlyStopping({ mode: es.mode, patience: es.patience, minDelta: es.minDelta });
  const timeAttr = spec.scheduler.timeAttr;
  const metric = spec.metric.name;
  return {
    scheduler,
    promoter: scheduler instanceof PromotionAsha ? scheduler : null,
    pbt: scheduler instanceof Pbt ? scheduler : null,
    earlyStopping,
    onTrialAdd: (trial, options) => scheduler.onTrialAdd(trial, options),
    onReport(trial, metrics) {
      const t = metrics[timeAttr];
      const value = metrics[metric];
      const primary: SchedulerDecision =
        t === undefined || value === undefined
          ? {
              decision: "CONTINUE",
              rung: null,
              cutoff: null,
              by: scheduler.name,
              reason: `report has no ${t === undefined ? timeAttr : metric}`,
            }
          : scheduler.onResult(trial, t, value);
      // Divergence is a result: NaN, ±∞ or past the threshold stops the trial now (spec `diverged`).
      if (
        spec.diverged !== null &&
        value !== undefined &&
        primary.decision === "CONTINUE" &&
        isDiverged(value, spec.diverged.threshold, spec.metric.mode)
      )
        return { decision: "STOP", rung: t ?? null, cutoff: spec.diverged.threshold, by: "divergence", reason: "diverged" };
      const monitored = es === null ? undefined : metrics[es.monitor];
      if (earlyStopping === null || monitored === undefined) return primary;
      const patience = earlyStopping.onResult(trial, t ?? Number.NaN, monitored);
      return primary.decision === "CONTINUE" && patience.decision === "STOP" ? patience : primary;
    },
    onComplete(trial, metrics) {
      const t = metrics[timeAttr];
      const value = metrics[metric];
      if (t !== undefined && value !== undefined) scheduler.onComplete(trial, t, value);
      earlyStopping?.onComplete(trial);
    },
  };
}

/** A metric value that diverged: not finite, or worse than `threshold` for the metric's mode. */
export function isDiverged(value: number, threshold: number | null, mode: "max" | "min"): boolean {
  if (!Number.isFinite(value)) return true;
  if (threshold === null) return false;
  return mode === "max" ? value < threshold : value > threshold;
}
