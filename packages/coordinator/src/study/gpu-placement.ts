import { isFractionalGpus } from "@rung/protocol";
import { type PackingLevel, packingShare } from "./packing.js";
import type { StudySpec } from "./spec.js";
import type { TrialRecord } from "./state.js";

/**
 * What an attempt's order asks for, and what an out-of-memory attempt means: pure, so a restarted
 * coordinator (and `rung replay`) derives the same from the event stream and what it knows of the
 * devices.
 *
 * Out of memory is not a bad configuration until it happens alone: an attempt that ends `oom` while
 * it shared its GPU (a share below 1) is queued again asking for a whole GPU with at least the memory
 * of the device it ran out on (on a MIG-only agent a "whole GPU" may be a smaller instance), without
 * using a retry; when that one runs out of memory too, the trial fails, naming the device. Whole GPUs
 * (`gpus: 1`, `2`, …) are not retried differently: their `oom` is an ordinary failure that uses a
 * retry, as before shares existed — the agent cannot tell whether another process on the GPU took the
 * memory, so failing at once could fail a trial that runs fine on its next attempt.
 */

export interface OrderResources {
  gpus: number;
  cpus: number;
  gpuMemoryMiB?: number;
}

/**
 * The device an attempt ran out of memory on, from its agent's advert when the coordinator heard the
 * `finished`: its total memory and how a sentence names it (`GPU 0 of box (NVIDIA H100, 81559 MiB)`).
 */
export interface OomDevice {
  memoryMiB: number;
  label: string;
}

/** A GPU as an agent's advert lists it (GpuInfo): enough to name it and read its memory. */
export interface AdvertisedGpu {
  index: number;
  name: string;
  memoryTotalMiB: number;
  mig?: { parent: number; profile: string } | undefined;
}

/** The one device an attempt held on `agent`, named; null when it held several, or the advert lacks it. */
export function oomDevice(agent: string, held: readonly number[], gpus: readonly AdvertisedGpu[] | undefined): OomDevice | null {
  if (held.length !== 1) return null;
  const g = gpus?.find((x) => x.index === held[0]);
  if (!g) return null;
  const label = g.mig
    ? `MIG instance ${g.mig.profile} (GPU ${g.mig.parent}, device ${g.index % 100}) of ${agent} (${g.memoryTotalMiB} MiB)`
    : `GPU ${g.index} of ${agent} (${g.name}, ${g.memoryTotalMiB} MiB)`;
  return { memoryMiB: g.memoryTotalMiB, label };
}

/** True once an attempt of the trial ran out of GPU memory while sharing: from then on it runs alone. */
export function runsAlone(t: TrialRecord | undefined): boolean {
  return t?.attempts.some((a) => a.status === "oom") ?? false;
}

/**
 * The order's resources: the spec's, or — after an out-of-memory attempt on a share — a whole GPU of
 * its own with at least the memory of the device it ran out on (`device`; null when not known: a whole
 * GPU, of any size).
 */
export function orderResources(spec: StudySpec["resources"], alone: boolean, device: OomDevice | null = null): OrderResources {
  if (alone && isFractionalGpus(spec.gpus)) {
    const memory = Math.max(spec.gpuMemoryMiB ?? 0, device?.memoryMiB ?? 0);
    return { gpus: 1, cpus: spec.cpus, ...(memory > 0 ? { gpuMemoryMiB: memory } : {}) };
  }
  return { gpus: spec.gpus, cpus: spec.cpus, ...(spec.gpuMemoryMiB === null ? {} : { gpuMemoryMiB: spec.gpuMemoryMiB }) };
}

/**
 * The resources an order at a `packing: auto` level asks for, in the spec's shape: a share of
 * ⌊100 / perGpu⌋ % with the level's memory; the spec's own at level 1 (or without packing), so a
 * study without packing, or not yet packed, orders exactly as before.
 */
export function packedResources(spec: StudySpec["resources"], level: PackingLevel | null): StudySpec["resources"] {
  if (level === null || level.perGpu <= 1) return spec;
  return { gpus: packingShare(level.perGpu), cpus: spec.cpus, gpuMemoryMiB: level.gpuMemoryMiB ?? spec.gpuMemoryMiB };
}

/**
 * What the coordinator does with an attempt that ended `oom`: run it again alone (no retry used), fail
 * the trial, or — whole GPUs — treat it as an ordinary failure that uses a retry.
 */
export type OomOutcome = { kind: "alone"; why: string } | { kind: "fail"; reason: string } | { kind: "failure" };

export function oomOutcome(
  spec: StudySpec["resources"],
  t: TrialRecord,
  ev: { attempt: number; agent: string; reason: string },
  device: OomDevice | null = null,
): OomOutcome {
  if (!isFractionalGpus(spec.gpus)) return { kind: "failure" };
  const where = device?.label ?? `a GPU of ${ev.agent}`;
  if (t.attempts.filter((a) => a.status === "oom").length <= 1)
    return {
      kind: "alone",
      why: `${t.trial} attempt ${ev.attempt} ran out of GPU memory on ${where} while sharing it (${spec.gpus} of it); retrying alone on a whole GPU${device ? ` with at least ${device.memoryMiB} MiB` : ""} (no retry used)`,
    };
  return {
    kind: "fail",
    reason: `ran out of GPU memory even alone on ${device ? device.label : "a whole GPU"} (attempt ${ev.attempt} on ${ev.agent}: ${ev.reason}); lower its batch size or model size, or run it on GPUs with more memory`,
  };
}

/** Whether an attempt that ended `oom` used a retry: on whole GPUs it did (an ordinary failure). */
export function oomUsesRetry(spec: StudySpec["resources"]): boolean {
  return !isFractionalGpus(spec.gpus);
}
