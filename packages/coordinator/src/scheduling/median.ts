import { SchedulerOptionsError } from "../errors.js";
import type { MedianOptions } from "./options.js";
import { checkSchedulerOptions } from "./options.js";
import type { Scheduler, SchedulerDecision } from "./scheduler.js";

/**
 * The median stopping rule (Vizier), as Ray Tune's MedianStoppingRule with `hard_stop=True`:
 *
 *   on a result (trial, t, value):
 *     a trial this rule already stopped            -> STOP again, result not recorded
 *     record (t, value) for the trial
 *     t >= max_t (when max_t is set)               -> STOP ("max_t"; Ray's rule has no max_t)
 *     t < grace_period                             -> CONTINUE
 *     others = every OTHER trial whose latest recorded result has time >= t
 *     fewer than min_samples_required others       -> CONTINUE
 *     median = median over `others` of their running mean: the mean of their values with
 *              grace_period <= time <= t
 *     best   = the trial's best value so far (max in max mode, min in min mode), all its results
 *     best strictly worse than median              -> STOP, and the trial is remembered as stopped
 *     otherwise                                    -> CONTINUE
 *   on completion: the last result is recorded (a finished trial keeps counting for everyone later).
 *
 * Stopped trials keep their results and keep counting in the median for others, as in Ray.
 *
 * Departure from Ray, on NaN only: Ray feeds NaN into np.mean/np.median and then decides with
 * `max(median, best) != best`, which STOPS whenever either side is NaN — one diverged trial would stop
 * every trial compared with it. Here NaN values are left out of running means and of `best`, a trial
 * with no usable running mean is left out of the median (it still counts toward
 * min_samples_required, as in Ray), and a NaN median or best never stops anyone ("not comparable"),
 * in line with ASHA. Means are summed left to right (numpy's pairwise summation can differ in the last
 * bit for more than 8 values).
 */
export class MedianStoppingRule implements Scheduler {
  readonly name = "median";
  readonly options: MedianOptions;
  private readonly results = new Map<string, { t: number; value: number }[]>();
  private readonly stopped = new Set<string>();

  constructor(options: MedianOptions) {
    const { problems } = checkSchedulerOptions({
      scheduler: "median",
      mode: options.mode,
      gracePeriod: options.gracePeriod,
      minSamplesRequired: options.minSamplesRequired,
      maxT: options.maxT,
    });
    if (problems.length > 0) throw new SchedulerOptionsError(problems);
    this.options = options;
  }

  onTrialAdd(trial: string, options?: { readonly bracket?: number | null | undefined }): { bracket: number | null } {
    if (options?.bracket !== undefined && options.bracket !== null) {
      throw new RangeError(`bracket ${options.bracket} given, but the median scheduler has no brackets`);
    }
    if (!this.results.has(trial)) this.results.set(trial, []);
    return { bracket: null };
  }

  onResult(trial: string, t: number, value: number): SchedulerDecision {
    const decided = (decision: "CONTINUE" | "STOP", reason: string, cutoff: number | null = null): SchedulerDecision => ({
      decision,
      rung: null,
      cutoff,
      by: this.name,
      reason,
    });
    if (this.stopped.has(trial)) return decided("STOP", "already stopped");
    this.record(trial, t, value);
    const { gracePeriod, maxT, minSamplesRequired, mode } = this.options;
    if (maxT !== null && t >= maxT) return decided("STOP", "max_t");
    if (t < gracePeriod) return decided("CONTINUE", "grace period");

    const means: number[] = [];
    let others = 0;
    for (const [other, results] of this.results) {
      const last = results[results.length - 1];
      if (other === trial || last === undefined || !(last.t >= t)) continue;
      others++;
      const mean = runningMean(results, gracePeriod, t);
      if (!Number.isNaN(mean)) means.push(mean);
    }
    if (others < minSamplesRequired) {
      return decided("CONTINUE", `${others} other trial${others === 1 ? "" : "s"} reached t; ${minSamplesRequired} required`);
    }
    const median = medianOf(means);
    const best = bestOf(this.results.get(trial) ?? [], mode);
    if (Number.isNaN(median) || Number.isNaN(best)) return decided("CONTINUE", "not comparable (NaN)", median);
    const worse = mode === "max" ? best < median : best > median;
    if (!worse) return decided("CONTINUE", "best not worse than median", median);
    this.stopped.add(trial);
    return decided("STOP", "best worse than median", median);
  }

  onComplete(trial: string, t: number, value: number): void {
    this.record(trial, t, value);
  }

  private record(trial: string, t: number, value: number): void {
    const list = this.results.get(trial);
    if (list) list.push({ t, value });
    else this.results.set(trial, [{ t, value }]);
  }
}

function runningMean(results: readonly { t: number; value: number }[], gracePeriod: number, t: number): number {
  let sum = 0;
  let n = 0;
  for (const r of results) {
    if (gracePeriod <= r.t && r.t <= t && !Number.isNaN(r.value)) {
      sum += r.value;
      n++;
    }
  }
  return n === 0 ? Number.NaN : sum / n;
}

/** np.median: middle value, or the mean of the two middle values. NaN for an empty list. */
function medianOf(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const v = [...values].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

function bestOf(results: readonly { value: number }[], mode: "max" | "min"): number {
  let best = Number.NaN;
  for (const { value } of results) {
    if (Number.isNaN(value)) continue;
    if (Number.isNaN(best) || (mode === "max" ? value > best : value < best)) best = value;
  }
  return best;
}
