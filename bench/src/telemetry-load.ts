import type { GpuSample, Telemetry } from "@rung/protocol";

/**
 * Simulated agents' telemetry: `agents` agents × `gpus` GPUs, one real `gpu` message per agent a second
 * (all its GPUs in one msgpack message, as the agent sends it), spread over the second in 10 ms slices.
 * GPU g of agent a is busy with trial `a<a>g<g>` of study `bench` unless (a + g) % 3 == 0 (idle), so a
 * diagnosis has both input-bound-looking and idle GPUs to find.
 */

export const LOAD_STUDY = "bench";
export const agentName = (a: number) => `box${a}`;
export const trialOf = (a: number, g: number) => ((a + g) % 3 === 0 ? null : `a${a}g${g}`);

export function telemetryMessage(a: number, gpus: number, tick: number, ts: number): Telemetry {
  const list: GpuSample[] = [];
  for (let g = 0; g < gpus; g++) {
    const trial = trialOf(a, g);
    const util = trial === null ? 0 : 25 + ((a * 7 + g * 13 + tick) % 70);
    list.push({
      index: g,
      uuid: `GPU-${a}-${g}`,
      utilizationGpu: util,
      utilizationMemory: trial === null ? 0 : Math.round(util * 0.6),
      memoryUsedMiB: trial === null ? 0 : 30_000 + 10 * g,
      memoryTotalMiB: 81_559,
      powerW: trial === null ? 60 : 350,
      temperatureC: trial === null ? 35 : 70,
      smClockMHz: 1980,
      study: trial === null ? null : LOAD_STUDY,
      trial,
    });
  }
  return { v: 1, type: "gpu", agent: agentName(a), ts, fake: false, gpus: list };
}

export function startLoad(
  agents: number,
  gpus: number,
  publish: (agent: number, msg: Telemetry) => void,
): { stop(): void; published(): number } {
  let published = 0;
  let slice = 0;
  const slices = 100;
  const per = Math.ceil(agents / slices);
  const timer = setInterval(() => {
    const from = (slice % slices) * per;
    const tick = Math.floor(slice / slices);
    const ts = Date.now();
    for (let a = from; a < Math.min(agents, from + per); a++) {
      publish(a, telemetryMessage(a, gpus, tick, ts));
      published += 1;
    }
    slice += 1;
  }, 1000 / slices);
  return { stop: () => clearInterval(timer), published: () => published };
}
