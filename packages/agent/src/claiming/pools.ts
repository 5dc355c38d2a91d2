import type { SlotKind } from "../slots.js";

/**
 * Pools are the work stream's queues, one per trial shape: `gpu<k>` holds orders for a gang of k GPUs,
 * `cpu<k>` orders for k CPU slots. Which pools an agent serves and which one it pulls from next are
 * pure decisions, made here; the pulling itself is the claim loop's.
 */

export interface Pool {
  name: string;
  kind: SlotKind;
  k: number;
}

/** The pools an agent with these slots serves: every gang size it could ever run. */
export function poolsFor(gpus: number, cpuSlots: number): Pool[] {
  const pools: Pool[] = [];
  for (let k = 1; k <= gpus; k++) pools.push({ name: `gpu${k}`, kind: "gpu", k });
  for (let k = 1; k <= cpuSlots; k++) pools.push({ name: `cpu${k}`, kind: "cpu", k });
  return pools;
}

/** The pools whose k slots are free together right now: no partial gangs. */
export function poolsThatFit(pools: readonly Pool[], free: (kind: SlotKind) => number): Pool[] {
  return pools.filter((p) => free(p.kind) >= p.k);
}

/**
 * Where to pull next, given how many orders each fitting pool holds (`pending[i]` for `fits[i]`):
 * the largest gang that has work — small orders fill gaps, a gang needs its GPUs free together and
 * would starve behind them. No work anywhere: `fallback` (the next pool in turn).
 */
export function pickPool(fits: readonly Pool[], pending: readonly number[], fallback: Pool): Pool {
  let best: Pool | undefined;
  fits.forEach((p, i) => {
    if ((pending[i] ?? 0) > 0 && (!best || p.k > best.k)) best = p;
  });
  return best ?? fallback;
}
