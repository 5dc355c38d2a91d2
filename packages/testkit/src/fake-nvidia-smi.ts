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
  /**
   * MIG mode: the GPU's instances, listed by `nvidia-smi -L` under it (`  MIG 1g.10gb     Device  0:
   * (UUID: MIG-…)`). Processes of test trials register on an instance by its UUID.
   */
  mig?: FakeMigInstance[];
}

export interface FakeMigInstance {
  device: number;
  /** As nvidia-smi names it: `<compute slices>g.<memory>gb`, e.g. `1g.10gb`, `3g.40gb`. */
  profile: string;
  uuid: string;
  memoryTotalMiB: number;
}

/**
 * A MIG instance of GPU `parent` with a profile such as `3g.40gb`: its memory 97.5 % of the profile's
 * figure, as the agent takes it (a real `1g.10gb` has about 9.75 GiB).
 */
export function fakeMigInstance(parent: number, device: number, profile: string): FakeMigInstance {
  const gb = Number(/(\d+)gb/.exec(profile)?.[1] ?? "10");
  return {
    device,
    profile,
    uuid: `MIG-${(0xc0ffee00 + parent * 16 + device).toString(16)}-0000-4000-8000-${String(device).padStart(12, "0")}`,
    memoryTotalMiB: Math.floor(gb * 1024 * 0.975),
  };
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
 * Writes an executable `nvidia-smi` into `dir`. Processes on its GPUs are test trials that register
 * in `procs/` next to the state file (`bin/fake-gpu-model.mjs`): the fake lists them under
 * `--query-compute-apps`, adds their memory to memory.used and their allotted compute to utilization.
 * A trial finds the state file through the environment (`stateEnv`). It answers from a state file tests can
 * change at any time (`set`). Pass `path` to the agent's `--nvidia-smi`.
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

  /** Environment a test trial needs to live on these GPUs: the study's `env`. */
  get stateEnv(): Record<string, string> {
    return { FAKE_NVIDIA_SMI_STATE: this.statePath };
  }

  /**
   * Puts a process on the fake GPUs as a test trial would (`bin/fake-gpu-model.mjs`): `memoryMiB`
   * allocated and a compute demand (0..1) on each GPU named by UUID. It counts while `pid` lives.
   */
  addProcess(pid: number, gpus: { uuid: string; memoryMiB: number; compute: number }[]): void {
    const dir = join(dirname(this.statePath), "procs");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${pid}.tmp`), JSON.stringify({ pid, gpus }));
    renameSync(join(dir, `${pid}.tmp`), join(dir, `${pid}.json`));
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
