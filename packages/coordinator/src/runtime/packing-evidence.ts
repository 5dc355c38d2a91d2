import type { NatsConnection } from "@nats-io/transport-node";
import type { BadMessageCounter, MeshNames, Telemetry } from "@rung/protocol";
import { type AloneEvidence, MIN_SAMPLES, type StudyState, type TrialRecord } from "../study/index.js";
import { joinTelemetry } from "../telemetry/index.js";
import { readTelemetry } from "./telemetry-reader.js";

/**
 * What `packing: auto` decides from (study/packing.ts): the peak memory and busy share of the study's
 * trials that ran alone on a GPU, read live from the agents' telemetry and joined to the trials as
 * the diagnosis joins them (`joinTelemetry`). Only GPU samples tagged with this study are kept, and
 * only trials whose every attempt asked for a whole GPU count: a shared GPU's samples are tagged with
 * one of its trials and would charge it with the others' load.
 *
 * `refresh` reads the samples stored since the last read (from the study's first event, 10 s before,
 * the first time, so a restarted coordinator sees the trials it ran before).
 */
/** GPU messages kept (the newest): about 5.5 hours of one agent's samples at 1 Hz. */
const MAX_KEPT = 20_000;

export class PackingEvidence {
  #telemetry: Telemetry[] = [];
  #to: number | null = null;
  #alone: AloneEvidence | null = null;

  constructor(
    readonly nc: NatsConnection,
    readonly names: MeshNames,
    readonly study: string,
    readonly drops?: BadMessageCounter,
  ) {}

  /** The evidence from the last refresh; null while no trial has run alone long enough. */
  get alone(): AloneEvidence | null {
    return this.#alone;
  }

  async refresh(state: StudyState, alone: (t: TrialRecord) => boolean): Promise<void> {
    const agents = new Set<string>();
    for (const t of state.trials.values()) for (const a of t.attempts) if (a.agent !== null) agents.add(a.agent);
    if (state.firstTs === null || agents.size === 0) return;
    const fromTs = this.#to === null ? state.firstTs - 10_000 : this.#to + 1;
    const more = await readTelemetry(this.nc, this.names, { fromTs, agents: [...agents].sort(), drops: this.drops });
    for (const m of more) {
      if (this.#to === null || m.ts > this.#to) this.#to = m.ts;
      if (m.type === "gpu" && m.gpus.some((g) => g.study === this.study)) this.#telemetry.push(m);
    }
    // Bounded: a study that stays at one per GPU for days keeps its newest samples only.
    if (this.#telemetry.length > MAX_KEPT) this.#telemetry = this.#telemetry.slice(-MAX_KEPT);
    this.#alone = aloneEvidence(state, this.#telemetry, alone);
  }
}

/** Peak memory and busy share of the trials that ran alone, from the joined telemetry. */
export function aloneEvidence(
  state: StudyState,
  telemetry: readonly Telemetry[],
  alone: (t: TrialRecord) => boolean,
): AloneEvidence | null {
  const joined = joinTelemetry(state, telemetry);
  let trials = 0;
  let peak = 0;
  let total = Number.POSITIVE_INFINITY;
  let busy = 0;
  for (const s of joined.trials) {
    const t = state.trials.get(s.trial);
    if (!t || !alone(t) || s.gpuCount !== 1 || s.samples < MIN_SAMPLES) continue;
    if (s.memoryHighWaterMiB === null || s.memoryTotalMiB === null || s.utilization === null) continue;
    trials += 1;
    peak = Math.max(peak, s.memoryHighWaterMiB);
    total = Math.min(total, s.memoryTotalMiB);
    busy = Math.max(busy, s.utilization.p90 / 100);
  }
  return trials === 0 ? null : { trials, peakMemoryMiB: peak, gpuMemoryMiB: total, busy: Math.min(1, busy) };
}
