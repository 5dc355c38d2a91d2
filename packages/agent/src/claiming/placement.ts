import { FULL_SHARE } from "@rung/protocol";
import type { SlotHolder, Slots } from "../slots.js";

/**
 * Where a trial goes on this agent, as a pure function of what the GPUs hold now.
 *
 * A GPU's room is its free share (100 % minus the shares of the trials placed on it) and its free
 * memory: its total, minus what its processes use *now* (one `nvidia-smi --query-compute-apps` just
 * before the pull), minus what trials already placed there declared (`gpu_memory`) but have not yet
 * allocated — a trial placed a moment ago has not touched its GPU yet, and counting only the
 * processes would place the next one on memory already promised. A process counts as a trial's when
 * it is the trial's process or in its process group (a trial runs as its own group).
 *
 * nvidia-smi names the *parent* GPU's UUID for a process on a MIG instance, and a GPU in MIG mode is
 * offered only as its instances: such processes match no GPU here, so on MIG instances the room is
 * the declared memory of the trials placed there alone (memory held by anything else is not seen).
 *
 * A share goes to the GPU it fits with the least share left over (best fit: it packs trials onto
 * GPUs already in use and keeps whole GPUs free for whole-GPU orders), lowest index on ties.
 */

/** One line of `--query-compute-apps=pid,used_memory,gpu_uuid`. */
export interface GpuProcess {
  pid: number;
  usedMiB: number;
  gpuUuid: string;
}

export interface GpuRoom {
  index: number;
  /** Percent of the GPU not held by any trial. */
  freeShare: number;
  /** MiB free now and not promised to a placed trial; null when the GPU's total is unknown. */
  freeMemoryMiB: number | null;
}

export interface RoomInput {
  slots: Slots;
  gpus: readonly { index: number; uuid: string; memoryTotalMiB: number }[];
  /** The GPU processes now; null when they could not be read (then placed trials' declarations only). */
  processes: readonly GpuProcess[] | null;
  /** The process group of a pid (from /proc), or null when it is gone. */
  groupOf(pid: number): number | null;
}

function belongsTo(p: GpuProcess, h: SlotHolder, groupOf: (pid: number) => number | null): boolean {
  if (h.pid === undefined || h.pid === null) return false;
  return p.pid === h.pid || groupOf(p.pid) === h.pid;
}

export function gpuRooms(o: RoomInput): GpuRoom[] {
  return o.gpus.map((g) => {
    const holders = o.slots.holdersOfGpu(g.index);
    const procs = (o.processes ?? []).filter((p) => p.gpuUuid === g.uuid);
    const used = procs.reduce((s, p) => s + p.usedMiB, 0);
    let promised = 0;
    for (const h of holders) {
      const own = procs.filter((p) => belongsTo(p, h, o.groupOf)).reduce((s, p) => s + p.usedMiB, 0);
      promised += Math.max(0, (h.memoryMiB ?? 0) - own);
    }
    return {
      index: g.index,
      freeShare: FULL_SHARE - o.slots.shareInUse(g.index),
      freeMemoryMiB: g.memoryTotalMiB > 0 ? Math.max(0, g.memoryTotalMiB - used - promised) : null,
    };
  });
}

export type Placement = { ok: true; index: number } | { ok: false; why: string };

/** The GPU for a trial asking `share` percent and `memoryMiB` (null: no memory declared). */
export function chooseGpu(rooms: readonly GpuRoom[], share: number, memoryMiB: number | null): Placement {
  const byShare = rooms.filter((r) => r.freeShare >= share);
  if (byShare.length === 0) return { ok: false, why: `no GPU here has ${share}% free` };
  const fits = byShare.filter((r) => memoryMiB === null || r.freeMemoryMiB === null || r.freeMemoryMiB >= memoryMiB);
  if (fits.length === 0) {
    const best = Math.max(...byShare.map((r) => r.freeMemoryMiB ?? 0));
    return { ok: false, why: `no GPU here with ${share}% free has ${memoryMiB} MiB of memory free (at most ${best} MiB)` };
  }
  const best = [...fits].sort((a, b) => a.freeShare - b.freeShare || a.index - b.index)[0] as GpuRoom;
  return { ok: true, index: best.index };
}
