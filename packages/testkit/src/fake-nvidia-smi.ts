import { chmodSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** One simulated GPU; any reading may be the literal "[N/A]" or "[Not Supported]". */
export interface FakeGpu {
  index: number;
  uuid: string;
  name: string;
  driver?: string;
  memoryTotalMiB: number | string;
  memoryUsedMiB: number | string;
  utilizationGpu: number | string;
  utilizationMemory: number | string;
  powerW: number | string;
  temperatureC: number | string;
  smClockMHz: number | string;
}

export interface FakeNvidiaSmiState {
  gpus: FakeGpu[];
  /** Exit after this many sampling ticks (tests of the restart-with-backoff path). */
  dieAfterTicks?: number;
  dieExitCode?: number;
}

export function fakeGpu(index: number, overrides: Partial<FakeGpu> = {}): FakeGpu {
  return {
    index,
    uuid: `GPU-${(0xa1b2c3d4 + index).toString(16)}-0000-4000-8000-${String(index).padStart(12, "0")}`,
    name: "NVIDIA H100 80GB HBM3",
    driver: "535.129.03",
    memoryTotalMiB: 81559,
    memoryUsedMiB: 0,
    utilizationGpu: 0,
    utilizationMemory: 0,
    powerW: 69.82,
    temperatureC: 31,
    smClockMHz: 345,
    ...overrides,
  };
}

const SCRIPT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "bin", "fake-nvidia-smi.mjs");

/**
 * Writes an executable `nvidia-smi` into `dir` that answers from a state file tests can change at
 * any time (`set`). Pass `path` to the agent's `--nvidia-smi`.
 */
export class FakeNvidiaSmi {
  readonly path: string;
  readonly statePath: string;
  state: FakeNvidiaSmiState;

  constructor(dir: string, gpus: FakeGpu[] | number = 2) {
    mkdirSync(dir, { recursive: true });
    this.path = join(dir, "nvidia-smi");
    this.statePath = join(dir, "nvidia-smi-state.json");
    this.state = { gpus: typeof gpus === "number" ? Array.from({ length: gpus }, (_, i) => fakeGpu(i)) : gpus };
    this.#write();
    writeFileSync(
      this.path,
      `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(SCRIPT)} --state ${JSON.stringify(this.statePath)} "$@"\n`,
    );
    chmodSync(this.path, 0o755);
  }

  set(update: Partial<FakeNvidiaSmiState>): void {
    this.state = { ...this.state, ...update };
    this.#write();
  }

  setGpu(index: number, update: Partial<FakeGpu>): void {
    this.state.gpus = this.state.gpus.map((g) => (g.index === index ? { ...g, ...update } : g));
    this.#write();
  }

  #write(): void {
    // The fake re-reads the file every tick: write a temp file and rename it, so it never sees half.
    const tmp = `${this.statePath}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.state));
    renameSync(tmp, this.statePath);
  }
}
