import { readFileSync } from "node:fs";
import type { GpuProcess } from "./claiming/placement.js";
import { queryComputeApps } from "./nvidia-smi.js";

/**
 * What placement reads about the GPUs' processes (claiming/placement.ts): `nvidia-smi
 * --query-compute-apps` now, and which trial a process belongs to (its process group, from /proc).
 * Simulated GPUs (`--fake-gpus`) have no processes: their placed trials' declarations are all there is.
 */

/** The process group of `pid` (field 5 of /proc/<pid>/stat), or null when it is gone. */
export function processGroupOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const pgrp = Number(rest[2]);
    return Number.isInteger(pgrp) ? pgrp : null;
  } catch {
    return null;
  }
}

export function gpuProcessReader(nvidiaSmi: string | null): () => Promise<readonly GpuProcess[] | null> {
  if (nvidiaSmi === null) return async () => [];
  return () => queryComputeApps(nvidiaSmi);
}
