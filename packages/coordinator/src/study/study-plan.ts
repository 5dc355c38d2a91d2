import { Asha, rungMilestones } from "../scheduling/index.js";
import { createStudyPolicy } from "./policy.js";
import type { ParamValue } from "./search-space.js";
import { generateTrials } from "./search-space.js";
import type { StudySpec } from "./spec.js";
import { trialArgv } from "./spec.js";

/**
 * `rung study run SPEC --dry-run`: what a study would do, worked out from the spec alone — no NATS,
 * no agents, nothing started.
 *
 * - The trials, in the order the coordinator creates them, each with the bracket it would get. The
 *   coordinator draws a new trial's bracket from the scheduler's seeded RNG just before its `created`
 *   event, in this same order, so the brackets here are the ones a first run draws. (A coordinator
 *   restarted mid-study takes the stored trials' brackets from their events and draws only for the
 *   trials still to come, so those can differ.)
 * - The rung ladder of each bracket: its milestones and how many of the bracket's trials get there.
 *   ASHA is asynchronous: a trial goes past a rung when its value is not below the (1 - 1/rf)
 *   percentile of the values recorded at that rung before it, so the first trial at a rung always
 *   goes on and, when results arrive best-last, every trial can. The counts are therefore the
 *   successive-halving budget, ceil(n / rf^k) at the k-th milestone — what a run keeps on average
 *   when results arrive in no particular order — not a bound.
 */

export interface PlannedTrialRow {
  readonly trial: string;
  readonly params: Readonly<Record<string, ParamValue>>;
  /** The bracket a first run draws for it; null for schedulers without brackets (median, fifo). */
  readonly bracket: number | null;
}

export interface PlannedRung {
  /** In units of the time attribute. */
  readonly milestone: number;
  /** Trials expected to reach it: ceil(n / rf^k) of the bracket's n, the first rung all n. */
  readonly expected: number;
}

export interface PlannedBracket {
  readonly bracket: number;
  /** Trials of the plan drawn into this bracket. */
  readonly trials: number;
  /** Chance that a new trial lands here (softmax over rung counts; 1 with one bracket). */
  readonly probability: number;
  /** Milestones below max_t, lowest first (a milestone at max_t is the max_t stop itself). */
  readonly rungs: readonly PlannedRung[];
  /** Trials expected to run to max_t. */
  readonly toMaxT: number;
}

export interface StudyPlan {
  readonly spec: StudySpec;
  readonly trials: readonly PlannedTrialRow[];
  /** The first trial's command line, placeholders filled: what an agent runs. */
  readonly firstArgv: readonly string[] | null;
  /** ASHA / Hyperband only; null for median and fifo, which have no rungs. */
  readonly brackets: readonly PlannedBracket[] | null;
  /**
   * ASHA / Hyperband: time-attribute units all trials together are expected to run (epochs when
   * time_attr is epoch) by the counts above, and what running every trial to max_t would take.
   */
  readonly budget: { readonly expected: number; readonly full: number } | null;
}

export function planStudy(spec: StudySpec): StudyPlan {
  const planned = generateTrials(spec);
  const policy = createStudyPolicy(spec);
  const trials = planned.map((p) => ({ trial: p.trial, params: p.params, bracket: policy.onTrialAdd(p.trial).bracket }));
  const s = spec.scheduler;
  const firstArgv = planned[0] ? trialArgv(spec, planned[0]) : null;
  if (s.type !== "asha" && s.type !== "hyperband" && s.type !== "promotion") {
    return { spec, trials, firstArgv, brackets: null, budget: null };
  }
  // Promotion-based ASHA has ASHA's bracket 0 ladder, and promotes the top 1/rf of each rung.
  const bracketCount = s.type === "promotion" ? 1 : s.brackets;
  const probabilities = policy.scheduler instanceof Asha ? policy.scheduler.bracketProbabilities() : [1];
  const brackets: PlannedBracket[] = [];
  let expected = 0;
  for (let b = 0; b < bracketCount; b++) {
    const n = trials.filter((t) => (t.bracket ?? 0) === b).length;
    // With stop_last_trials a result at max_t stops the trial before any rung is looked at.
    const milestones = rungMilestones(s.gracePeriod, s.reductionFactor, s.maxT, b).filter((m) => m < s.maxT);
    const rungs = milestones.map((milestone, k) => ({ milestone, expected: Math.ceil(n / s.reductionFactor ** k) }));
    const toMaxT = Math.ceil(n / s.reductionFactor ** milestones.length);
    // Who stops at rung k ran to its milestone; the rest ran to max_t.
    rungs.forEach((r, k) => {
      expected += (r.expected - (rungs[k + 1]?.expected ?? toMaxT)) * r.milestone;
    });
    expected += toMaxT * s.maxT;
    brackets.push({ bracket: b, trials: n, probability: probabilities[b] ?? 0, rungs, toMaxT });
  }
  return { spec, trials, firstArgv, brackets, budget: { expected, full: trials.length * s.maxT } };
}
