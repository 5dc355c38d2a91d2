import type { GpuSample, Telemetry, TrialEvent } from "@rung/protocol";
import { rung, type TestProcess } from "@rung/testkit";

/** The viewing commands (`rung tail`, `logs`, `attach`, `study report`), stopped as a user stops them: Ctrl-C. */
export function cli(args: string[]): TestProcess {
  return rung(args, { stopSignal: "SIGINT", killAfterMs: 5000 });
}

export function gpuSample(index: number, util: number, study: string | null, trial: string | null): GpuSample {
  return {
    index,
    uuid: `GPU-${index}`,
    utilizationGpu: util,
    utilizationMemory: Math.round(util * 0.6),
    memoryUsedMiB: trial ? 8000 : 0,
    memoryTotalMiB: 24_576,
    powerW: 60 + 2 * util,
    temperatureC: 40,
    smClockMHz: 1755,
    study,
    trial,
  };
}

export function gpuMessage(agent: string, ts: number, gpus: GpuSample[]): Telemetry {
  return { v: 1, type: "gpu", agent, ts, fake: true, gpus };
}

type EventInit<T extends TrialEvent["type"]> = Omit<Extract<TrialEvent, { type: T }>, "v" | "type" | "study" | "trial" | "ts">;

export function trialEvent<T extends TrialEvent["type"]>(
  type: T,
  study: string,
  trial: string,
  ts: number,
  rest: EventInit<T>,
): TrialEvent {
  return { v: 1, type, study, trial, ts, ...rest } as TrialEvent;
}
