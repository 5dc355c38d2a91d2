import { isFractionalGpus } from "@rung/protocol";
import { packingShare } from "./packing.js";
import type { StudySpec } from "./spec.js";
import type { StudyState, TrialRecord } from "./state.js";

/**
 * A budget the user sets (`budget: { gpu_hours: 10 }` or `{ cost: 25 }`), and what the study has
 * spent against it: pure, from the study's state and a clock, so the coordinator, `study status` and
 * `study report` count the same.
 *
 * Spent = every attempt's GPU time (from its `started` to its `finished`; while it runs, to now; an
 * attempt whose `finished` never came, to its trial's end) × the GPUs it held (its share of one for
 * `gpus: 0.25`, a whole one for a retry alone after running out of memory), in GPU-hours; its cost at
 * its agent's advertised price per GPU-hour (an agent without a price counts 0, and the use says so).
 * Two thresholds: `full` — spent plus the mean of the attempts that have ended (running ones' partial
 * hours would pull the mean down and count twice) would pass a limit: no new trial is dispatched;
 * `spent` — a limit is reached: running trials end at their next report.
 */

export interface BudgetUse {
  gpuHours: number;
  /** Spent at the agents' prices; attempts on unpriced agents count 0 (`unpriced` of them). */
  cost: number;
  unpriced: number;
  budget: NonNullable<StudySpec["budget"]>;
  /** Spent has reached a limit: running trials end. */
  spent: boolean;
  /** One more attempt of the mean cost of the ended ones would pass a limit (or it is spent): no dispatch. */
  full: boolean;
}

/** GPUs an attempt held: the spec's share, a whole GPU after an out-of-memory retry, or its gang. */
function gpusHeld(spec: StudySpec["resources"], t: TrialRecord, i: number): number {
  const a = t.attempts[i];
  if (!a || a.gpus.length === 0) return 0;
  const aloneAfterOom = t.attempts.slice(0, i).some((p) => p.status === "oom");
  // `packing: auto` sized its order: its share is its level's.
  const share = a.packing !== null && a.packing.perGpu > 1 ? packingShare(a.packing.perGpu) : spec.gpus;
  return isFractionalGpus(share) && !aloneAfterOom ? share : a.gpus.length;
}

export function budgetUse(
  spec: Pick<StudySpec, "resources" | "budget">,
  state: StudyState,
  now: number,
  priceOf: (agent: string) => number | null,
): BudgetUse | null {
  if (spec.budget === null) return null;
  let gpuHours = 0;
  let cost = 0;
  let unpriced = 0;
  // The attempts that have ended, apart: the mean one more attempt is projected with.
  let ended = 0;
  let endedHours = 0;
  let endedCost = 0;
  for (const t of state.trials.values())
    t.attempts.forEach((a, i) => {
      if (a.startedAt === null) return;
      const end = a.endedAt ?? t.endedAt ?? now;
      const h = (gpusHeld(spec.resources, t, i) * Math.max(0, end - a.startedAt)) / 3_600_000;
      const price = a.agent === null ? null : priceOf(a.agent);
      const c = price === null ? 0 : h * price;
      gpuHours += h;
      cost += c;
      if (price === null) unpriced += 1;
      if (a.endedAt !== null || t.endedAt !== null) {
        ended += 1;
        endedHours += h;
        endedCost += c;
      }
    });
  const b = spec.budget;
  const spent = (b.gpuHours !== null && gpuHours >= b.gpuHours) || (b.cost !== null && cost >= b.cost);
  const meanH = ended > 0 ? endedHours / ended : 0;
  const meanCost = ended > 0 ? endedCost / ended : 0;
  const full = spent || (b.gpuHours !== null && gpuHours + meanH > b.gpuHours) || (b.cost !== null && cost + meanCost > b.cost);
  return { gpuHours, cost, unpriced, budget: b, spent, full };
}

/** `budget: 0.52 of 10 GPU-hours · 3.10 of 25 spent`, for the progress line, status and report. */
export function budgetText(u: BudgetUse): string {
  const parts: string[] = [];
  if (u.budget.gpuHours !== null) parts.push(`${fmtAmount(u.gpuHours)} of ${u.budget.gpuHours} GPU-hours`);
  if (u.budget.cost !== null)
    parts.push(
      `${fmtAmount(u.cost)} of ${u.budget.cost} spent${u.unpriced > 0 ? ` (${u.unpriced} attempt(s) on unpriced agents count 0)` : ""}`,
    );
  return `budget: ${parts.join(" · ")}${u.spent ? " — spent" : ""}`;
}

function fmtAmount(x: number): string {
  return x === 0 ? "0" : x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toPrecision(2);
}
