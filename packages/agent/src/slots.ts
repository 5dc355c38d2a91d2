import { FULL_SHARE } from "@rung/protocol";

/**
 * The agent's capacity: its GPUs (by index: nvidia-smi's, or a MIG instance's, see placement.ts in
 * protocol) and its CPU slots. Each GPU holds trials by *share*, in whole percent: a whole-GPU trial
 * holds 100, a `gpus: 0.25` trial 25, and the shares on one GPU never add up to more than 100.
 *
 * An order for k whole GPUs takes k GPUs with nothing on them together, or nothing (no partial
 * gangs; a gang of two or more never includes a MIG instance: a CUDA process sees one MIG device
 * only). A share takes room on one GPU (`takeShare`, where claiming/placement.ts chose it). Each
 * holder is shared by reference, so telemetry can tag samples with the trials on a GPU and fake GPUs
 * can follow their reports.
 */

export const SlotKind = { gpu: "gpu", cpu: "cpu" } as const;
export type SlotKind = (typeof SlotKind)[keyof typeof SlotKind];

/** The trial holding slots; shared by reference, so updates (busy share, pid) are seen by telemetry. */
export interface SlotHolder {
  readonly study: string;
  readonly trial: string;
  readonly attempt: number;
  /** compute_s / (compute_s + data_wait_s) of the latest report, 0..1; null before the first one. */
  busyShare: number | null;
  /** Share of each of its GPUs it holds, in percent: 100 for whole GPUs (the default). */
  share?: number;
  /** GPU memory it declared per GPU (the order's `gpuMemoryMiB`); null or absent when none. */
  memoryMiB?: number | null;
  /** Its process (and process group) once started: GPU memory of that group counts as its own. */
  pid?: number | null;
}

/** A GPU the agent places trials on. */
export interface GpuUnit {
  index: number;
  memoryTotalMiB: number;
  /** A MIG instance: never part of a gang of several GPUs. */
  mig: boolean;
}

export function shareOf(h: SlotHolder): number {
  return h.share ?? FULL_SHARE;
}

export class Slots {
  readonly gpuIndices: readonly number[];
  readonly cpuSlots: number;
  readonly #units = new Map<number, GpuUnit>();
  readonly #gpus = new Map<number, SlotHolder[]>();
  readonly #cpus = new Map<number, SlotHolder>();
  #waiters: (() => void)[] = [];

  /** `gpus`: indices (whole GPUs of unknown memory) or units. */
  constructor(gpus: readonly (number | GpuUnit)[], cpuSlots: number) {
    for (const g of gpus) {
      const u = typeof g === "number" ? { index: g, memoryTotalMiB: 0, mig: false } : g;
      this.#units.set(u.index, u);
    }
    this.gpuIndices = [...this.#units.keys()].sort((a, b) => a - b);
    this.cpuSlots = cpuSlots;
  }

  total(kind: SlotKind): number {
    return kind === "gpu" ? this.gpuIndices.length : this.cpuSlots;
  }

  /** The largest gang of whole GPUs this agent could ever run (MIG instances run alone). */
  get maxGang(): number {
    const whole = this.gpuIndices.filter((i) => !this.#units.get(i)?.mig).length;
    return this.gpuIndices.length > 0 ? Math.max(1, whole) : 0;
  }

  unit(index: number): GpuUnit | undefined {
    return this.#units.get(index);
  }

  /**
   * Free CPU slots, or GPUs with nothing on them that a trial needing `k` of them could take: for a
   * gang (k ≥ 2) whole GPUs only, MIG instances never join one.
   */
  free(kind: SlotKind, k = 1): number {
    if (kind === "cpu") return this.cpuSlots - this.#cpus.size;
    return this.gpuIndices.filter((i) => this.shareInUse(i) === 0 && (k < 2 || !this.#units.get(i)?.mig)).length;
  }

  /** Percent of a GPU held by trials (0..100). */
  shareInUse(index: number): number {
    return (this.#gpus.get(index) ?? []).reduce((s, h) => s + shareOf(h), 0);
  }

  /** The most free share (percent) on any one GPU: what a share order can get at best. */
  maxFreeShare(): number {
    let best = 0;
    for (const i of this.gpuIndices) best = Math.max(best, FULL_SHARE - this.shareInUse(i));
    return best;
  }

  /**
   * Takes `k` whole slots of a kind for `holder`, lowest ids first; null (and nothing taken) when
   * fewer are free. `prefer`: for one GPU, the one placement chose.
   */
  take(kind: SlotKind, k: number, holder: SlotHolder, prefer?: number): number[] | null {
    if (k < 1 || this.free(kind, k) < k) return null;
    if (kind === "cpu") {
      const got = Array.from({ length: this.cpuSlots }, (_, i) => i)
        .filter((i) => !this.#cpus.has(i))
        .slice(0, k);
      for (const i of got) this.#cpus.set(i, holder);
      return got;
    }
    let candidates = this.gpuIndices.filter((i) => this.shareInUse(i) === 0 && (k < 2 || !this.#units.get(i)?.mig));
    if (prefer !== undefined && k === 1 && candidates.includes(prefer)) candidates = [prefer];
    if (candidates.length < k) return null;
    const got = candidates.slice(0, k);
    holder.share = FULL_SHARE;
    for (const i of got) this.#gpus.set(i, [holder]);
    return got;
  }

  /** Takes `holder.share` percent of GPU `index`; null when it does not fit there. */
  takeShare(index: number, holder: SlotHolder): number[] | null {
    if (!this.#units.has(index) || this.shareInUse(index) + shareOf(holder) > FULL_SHARE) return null;
    this.#gpus.set(index, [...(this.#gpus.get(index) ?? []), holder]);
    return [index];
  }

  /** Gives back what `holder` holds on these slots (all of it, when no holder is named). */
  release(kind: SlotKind, ids: readonly number[], holder?: SlotHolder): void {
    if (kind === "cpu") for (const i of ids) this.#cpus.delete(i);
    else
      for (const i of ids) {
        const rest = holder ? (this.#gpus.get(i) ?? []).filter((h) => h !== holder) : [];
        if (rest.length > 0) this.#gpus.set(i, rest);
        else this.#gpus.delete(i);
      }
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** The first trial on a GPU (the one its samples are tagged with). */
  holderOfGpu(index: number): SlotHolder | undefined {
    return this.#gpus.get(index)?.[0];
  }

  /** Every trial on a GPU, in the order they were placed. */
  holdersOfGpu(index: number): readonly SlotHolder[] {
    return this.#gpus.get(index) ?? [];
  }

  /** True while any slot is held. */
  get busy(): boolean {
    return this.#gpus.size + this.#cpus.size > 0;
  }

  /** Resolves at the next release (or when `signal` aborts). */
  freed(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        signal?.removeEventListener("abort", done);
        resolve();
      };
      this.#waiters.push(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }
}
