import { classNeeds, fractionalPoolName, SHARE_CLASSES } from "@rung/protocol";
import type { SlotKind } from "../slots.js";

/**
 * Pools are the work stream's queues, one per trial shape: `gpu<k>` holds orders for a gang of k GPUs,
 * `cpu<k>` orders for k CPU slots. Which pools an agent serves and which one it pulls from next are
 * pure decisions, made here; the pulling itself is the claim loop's.
 *
 * Shares of one GPU have their own pools, one per share class (`gpu1of<d>`, protocol's placement.ts):
 * such a pool fits while one GPU has at least 1/d of it free, so an order pulled from it fits that
 * GPU by share (memory is checked after the pull, claiming/placement.ts).
 */

export interface Pool {
  name: string;
  kind: SlotKind;
  k: number;
  /** A share-class pool (`gpu1of<d>`): d. Absent for whole GPUs and CPU slots. */
  shareClass?: number;
}

/**
 * The pools an agent with these slots serves: every gang size it could ever run, and with `shares`
 * every share class (after the whole GPUs, so a whole-GPU order is pulled first when both wait).
 */
export function poolsFor(gpus: number, cpuSlots: number, o: { shares?: boolean } = {}): Pool[] {
  const pools: Pool[] = [];
  for (let k = 1; k <= gpus; k++) pools.push({ name: `gpu${k}`, kind: "gpu", k });
  if (o.shares && gpus > 0)
    for (const d of [...SHARE_CLASSES].reverse()) pools.push({ name: fractionalPoolName(d), kind: "gpu", k: 1, shareClass: d });
  for (let k = 1; k <= cpuSlots; k++) pools.push({ name: `cpu${k}`, kind: "cpu", k });
  return pools;
}

/**
 * The pools whose k slots are free together right now (no partial gangs; `free(kind, k)` counts the
 * slots a k-gang could take: for k ≥ 2 whole GPUs only, not MIG instances), and the share classes
 * whose share one GPU has free (`freeShare`: the most free percent on any one GPU).
 */
export function poolsThatFit(
  pools: readonly Pool[],
  free: (kind: SlotKind, k: number) => number,
  freeShare: () => number = () => 0,
): Pool[] {
  return pools.filter((p) => (p.shareClass !== undefined ? freeShare() >= classNeeds(p.shareClass) : free(p.kind, p.k) >= p.k));
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

/**
 * Where to wait when no fitting pool holds an order: the next pool in turn among those in use
 * (`inUse[i]`: orders of `fits[i]` run somewhere in the mesh now, or this agent's last order came from
 * it), else among all. A pull waits on one pool only (up to its expiry, a second), and orders of a
 * study's next trials go to the pool its running trials came from: waiting in turn on every pool an
 * agent serves (a whole GPU and five share classes) left most orders unclaimed for up to that second.
 */
export function idlePool(fits: readonly Pool[], inUse: readonly boolean[], turn: number): Pool {
  const used = fits.filter((_, i) => inUse[i] === true);
  const from = used.length > 0 ? used : fits;
  return from[turn % from.length] as Pool;
}
