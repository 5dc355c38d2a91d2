import { poolName } from "./subjects.js";

/**
 * How a trial's GPU request maps onto the work stream's pools, shared by the coordinator (which
 * publishes into a pool) and the agent (which pulls from the pools its free capacity fits).
 *
 * Whole GPUs: `gpus: k` goes to pool `gpu<k>`, pulled by an agent with k GPUs free together.
 *
 * A share of one GPU (`gpus: 0.25`) is kept in whole percent (25) so that shares on one GPU add up
 * exactly, and goes to the pool of its *share class*: `gpu1of<d>` with d the largest of
 * {@link SHARE_CLASSES} such that the share is at most 1/d (0.25 → `gpu1of4`, 0.3 → `gpu1of3`,
 * 0.1 → `gpu1of8`, 0.75 → `gpu1of1`). An agent pulls from `gpu1of<d>` only while one of its GPUs has
 * at least 1/d free, so every order it pulls fits that GPU by share — an agent with a GPU half used
 * still pulls 0.25 and 0.5 orders, never 0.75 ones. Five classes keep the number of pools (and the
 * "how many orders wait" questions before a pull) small; the price is that a share just above 1/d
 * needs the next class's free share (0.3 waits for 1/3 free, not 0.3). Memory cannot be a pool: the
 * agent checks it after the pull and hands back an order that does not fit (claiming/placement).
 */

/** The share classes: `gpu1of<d>` holds shares in (1/(next larger d), 1/d]. Largest first. */
export const SHARE_CLASSES = [8, 4, 3, 2, 1] as const;

/** Shares are whole percent of a GPU. */
export const FULL_SHARE = 100;

/** True for a share of one GPU (0 < gpus < 1); whole GPUs and CPU trials are not. */
export function isFractionalGpus(gpus: number): boolean {
  return gpus > 0 && gpus < 1;
}

/** A request in whole percent of one GPU: 0.25 → 25; whole GPUs are 100 each. */
export function sharePercent(gpus: number): number {
  return isFractionalGpus(gpus) ? Math.max(1, Math.round(gpus * FULL_SHARE)) : FULL_SHARE;
}

/** The class d of a share in percent: the largest d with share ≤ 100/d. */
export function shareClass(percent: number): number {
  for (const d of SHARE_CLASSES) if (percent * d <= FULL_SHARE) return d;
  return 1;
}

/** The smallest free share (percent) that fits every order of class d: ⌊100/d⌋ rounded up to fit 1/d. */
export function classNeeds(d: number): number {
  return Math.ceil(FULL_SHARE / d);
}

export function fractionalPoolName(d: number): string {
  return `gpu1of${d}`;
}

/** The pool an order with these resources goes to. */
export function orderPool(resources: { gpus: number; cpus: number }): string {
  const { gpus, cpus } = resources;
  if (isFractionalGpus(gpus)) return fractionalPoolName(shareClass(sharePercent(gpus)));
  return gpus > 0 ? poolName("gpu", gpus) : poolName("cpu", Math.max(1, cpus));
}

/** The index Rung gives a MIG instance: device d of GPU p is 100 × (p + 1) + d (GPU 0's device 1 is 101). */
export function migIndex(parent: number, device: number): number {
  return 100 * (parent + 1) + device;
}

const SIZE_UNITS: Record<string, number> = {
  k: 1 / 1024,
  kib: 1 / 1024,
  kb: 1000 / 1024 ** 2,
  m: 1,
  mib: 1,
  mb: 1000 ** 2 / 1024 ** 2,
  g: 1024,
  gib: 1024,
  gb: 1000 ** 3 / 1024 ** 2,
  t: 1024 ** 2,
  tib: 1024 ** 2,
  tb: 1000 ** 4 / 1024 ** 2,
};

/** `"10GiB"`, `"512 MiB"`, `"16GB"` → MiB (rounded up); null when it is not a size with a unit. */
export function parseMemoryMiB(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$/i.exec(text);
  if (!m) return null;
  const unit = SIZE_UNITS[(m[2] as string).toLowerCase()];
  if (unit === undefined) return null;
  const mib = Math.ceil(Number(m[1]) * unit);
  return Number.isFinite(mib) && mib > 0 ? mib : null;
}
