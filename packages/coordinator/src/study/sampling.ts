import { rungMilestones, type SchedulerOptions } from "../scheduling/index.js";
import { type Observation, suggest } from "../search/index.js";
import type { ParamValue, PlannedTrial } from "./search-space.js";
import { generateTrials } from "./search-space.js";
import type { StudySpec } from "./spec.js";
import { StudyState, type TrialRecord } from "./state.js";
import type { StoredEvent } from "./stored-event.js";

/**
 * Where a new trial's parameters come from, at the moment the coordinator creates it.
 *
 * - `random` and `grid`: the planned parameters (search-space.ts), fixed by the seed.
 * - `tpe` / `bohb`: the first `startupTrials` trials are the planned random draws; every later one is
 *   drawn by the model (or is its planned draw while fewer than `startupTrials` trials have results) (search/tpe.ts) from what the study knows when the trial is created: every other
 *   created trial's parameters, its curve so far and whether it still runs (a running trial is a
 *   "constant liar": counted as a bad result, so W parallel suggestions spread out). `bohb` fits the
 *   model on the results at the scheduler's rungs (the largest rung with enough of them), so one-epoch
 *   results guide sampling long before any trial finishes.
 *
 * A pure function of (spec, trial, the folded state): the coordinator records in the `created` event the
 * last stream sequence it had folded (`basis`), so a reader can fold the same events and draw the same
 * parameters again (`redrawSampledTrials`, which `rung replay --study` runs).
 */
export function trialParams(
  spec: StudySpec,
  planned: PlannedTrial,
  index: number,
  state: StudyState,
): { params: Record<string, ParamValue>; sampledBy: "tpe" | "bohb" | null } {
  const algorithm = spec.search.algorithm;
  if ((algorithm !== "tpe" && algorithm !== "bohb") || index < (spec.search.startupTrials ?? 10))
    return { params: { ...planned.params }, sampledBy: null };
  const history: Observation[] = [];
  for (const t of state.trials.values()) {
    if (t.trial === planned.trial || t.createdAt === null) continue;
    history.push(observationOf(t));
  }
  const { params, usedModel } = suggest(
    spec.search.space,
    history,
    {
      algorithm,
      mode: spec.metric.mode,
      seed: spec.search.seed,
      startupTrials: spec.search.startupTrials ?? 10,
      ...(algorithm === "bohb" ? { budgets: budgetsOf(spec.scheduler) } : {}),
    },
    planned.trial,
  );
  // Too few results for the model yet: the plan's own random draw, as --dry-run shows it.
  return usedModel ? { params, sampledBy: algorithm } : { params: { ...planned.params }, sampledBy: null };
}

/**
 * A trial as the model sees it: its parameters, its curve, and whether it still runs. A trial paused at a
 * rung (promotion-based ASHA) is ranked by where it got, like a stopped one: most trials of such a study
 * wait paused, and as running ones they would only be the liar's bad points.
 */
export function observationOf(t: TrialRecord): Observation {
  const phase = StudyState.phaseOf(t);
  const state =
    phase === "completed" || phase === "stopped" || phase === "paused"
      ? "done"
      : phase === "failed" || phase === "cancelled"
        ? t.curve.length > 0
          ? "done"
          : "failed"
        : "running";
  return { params: t.params, results: t.curve, state };
}

/** BOHB's fidelities: the scheduler's rungs below max_t, then max_t. */
export function budgetsOf(s: Pick<SchedulerOptions, "type"> & Partial<Record<string, unknown>>): number[] {
  const maxT = typeof s.maxT === "number" ? s.maxT : null;
  const grace = typeof s.gracePeriod === "number" ? s.gracePeriod : null;
  const rf = typeof s.reductionFactor === "number" ? s.reductionFactor : null;
  const rungs = maxT !== null && grace !== null && rf !== null ? rungMilestones(grace, rf, maxT, 0).filter((m) => m < maxT) : [];
  return maxT === null ? rungs : [...rungs, maxT];
}

export interface RedrawnTrial {
  readonly trial: string;
  readonly sampledBy: "tpe" | "bohb";
  readonly live: Readonly<Record<string, ParamValue>>;
  readonly again: Readonly<Record<string, ParamValue>>;
  readonly same: boolean;
}

/**
 * Draws every model-sampled trial of a stored study again from its event stream, and says whether the
 * parameters come out the same. The coordinator folds agent events in stream order and its own events
 * as it publishes them, and records in each model-drawn `created` event the last stream sequence it had
 * folded (`basis`). So the state it drew from is: every event up to `basis`, plus its own events stored
 * after `basis` and before the `created` event; agent events stored in between are folded after it.
 */
export function redrawSampledTrials(spec: StudySpec, events: readonly StoredEvent[]): RedrawnTrial[] {
  const state = new StudyState({
    study: spec.name,
    metric: spec.metric.name,
    mode: spec.metric.mode,
    timeAttr: spec.scheduler.timeAttr,
    gpus: spec.resources.gpus,
  });
  const planned = generateTrials(spec);
  const index = new Map(planned.map((p, i) => [p.trial, i]));
  const out: RedrawnTrial[] = [];
  let deferred: StoredEvent[] = [];
  const bases = events
    .filter((e) => e.event.type === "created" && e.event.study === spec.name && e.event.sampledBy !== undefined)
    .map((e) => (e.event.type === "created" ? (e.event.basis ?? 0) : 0));
  let nextBasis = bases.shift() ?? Number.POSITIVE_INFINITY;
  for (const e of events) {
    const ev = e.event;
    if (ev.study !== spec.name) continue;
    if (ev.type === "created" && ev.sampledBy !== undefined) {
      const p = planned[index.get(ev.trial) ?? -1];
      // A second copy of a trial's `created` (a publish retried across a failover) changes nothing.
      if (p && (state.trials.get(ev.trial)?.createdAt ?? null) === null) {
        const again = trialParams(spec, p, index.get(ev.trial) ?? 0, state).params;
        out.push({
          trial: ev.trial,
          sampledBy: ev.sampledBy,
          live: ev.params,
          again,
          same: canonical(again) === canonical(ev.params),
        });
      }
      state.apply(ev, e.from);
      nextBasis = bases.shift() ?? Number.POSITIVE_INFINITY;
      const due = deferred.filter((d) => d.seq <= nextBasis);
      deferred = deferred.filter((d) => d.seq > nextBasis);
      for (const d of due) state.apply(d.event, d.from);
      continue;
    }
    if (e.from.role === "agent" && e.seq > nextBasis) deferred.push(e);
    else state.apply(ev, e.from);
  }
  return out;
}

function canonical(params: Readonly<Record<string, ParamValue>>): string {
  return JSON.stringify(
    Object.keys(params)
      .sort()
      .map((k) => [k, params[k]]),
  );
}
