/**
 * The agent's capacity: its GPUs (by nvidia-smi index) and its CPU slots. An order for k GPUs takes k
 * free GPUs together or nothing (no partial gangs). Each taken slot points at the trial holding it, so
 * telemetry can tag samples with the trial and fake GPUs can follow the trial's reports.
 */

export const SlotKind = { gpu: "gpu", cpu: "cpu" } as const;
export type SlotKind = (typeof SlotKind)[keyof typeof SlotKind];

/** The trial holding slots; shared by reference, so updates (busy share) are seen by telemetry. */
export interface SlotHolder {
  readonly study: string;
  readonly trial: string;
  readonly attempt: number;
  /** compute_s / (compute_s + data_wait_s) of the latest report, 0..1; null before the first one. */
  busyShare: number | null;
}

export class Slots {
  readonly gpuIndices: readonly number[];
  readonly cpuSlots: number;
  readonly #gpus = new Map<number, SlotHolder>();
  readonly #cpus = new Map<number, SlotHolder>();
  #waiters: (() => void)[] = [];

  constructor(gpuIndices: readonly number[], cpuSlots: number) {
    this.gpuIndices = [...gpuIndices].sort((a, b) => a - b);
    this.cpuSlots = cpuSlots;
  }

  total(kind: SlotKind): number {
    return kind === "gpu" ? this.gpuIndices.length : this.cpuSlots;
  }

  free(kind: SlotKind): number {
    return kind === "gpu" ? this.gpuIndices.length - this.#gpus.size : this.cpuSlots - this.#cpus.size;
  }

  /** Takes `k` slots of a kind for `holder`, lowest ids first; null (and nothing taken) when fewer are free. */
  take(kind: SlotKind, k: number, holder: SlotHolder): number[] | null {
    if (k < 1 || this.free(kind) < k) return null;
    const ids = kind === "gpu" ? this.gpuIndices : Array.from({ length: this.cpuSlots }, (_, i) => i);
    const held = kind === "gpu" ? this.#gpus : this.#cpus;
    const got = ids.filter((i) => !held.has(i)).slice(0, k);
    for (const i of got) held.set(i, holder);
    return got;
  }

  release(kind: SlotKind, ids: readonly number[]): void {
    const held = kind === "gpu" ? this.#gpus : this.#cpus;
    for (const i of ids) held.delete(i);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  holderOfGpu(index: number): SlotHolder | undefined {
    return this.#gpus.get(index);
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
