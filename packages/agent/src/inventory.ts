import { cpus, hostname, platform, release, totalmem } from "node:os";
import type { GpuInfo, HostInfo, Logger } from "@rung/protocol";
import si from "systeminformation";
import { NoResourcesError, UnknownGpuError } from "./errors.js";
import { fakeGpuInfos } from "./fake-gpus.js";
import { expandMig, queryGpuInventory, queryMigListing, queryMigModes } from "./nvidia-smi.js";

/**
 * What this machine offers, found once at start: host facts from systeminformation (it knows the CPU
 * model and distribution better than `os`), GPUs from one `nvidia-smi --query-gpu` call, or simulated
 * ones with `--fake-gpus`.
 */

export async function hostFacts(log?: Logger): Promise<HostInfo> {
  try {
    const [cpu, mem, os] = await Promise.all([si.cpu(), si.mem(), si.osInfo()]);
    return {
      hostname: hostname(),
      cpuModel: [cpu.manufacturer, cpu.brand].filter(Boolean).join(" ") || (cpus()[0]?.model ?? "unknown"),
      cpuCores: cpu.cores || cpus().length,
      memoryTotalBytes: mem.total || totalmem(),
      os: [os.distro, os.release].filter(Boolean).join(" ") || `${platform()} ${release()}`,
    };
  } catch (err) {
    // The inventory is informational; a machine where systeminformation stumbles still runs trials.
    log?.warn({ err: (err as Error).message }, "systeminformation failed; host facts come from node:os");
    return {
      hostname: hostname(),
      cpuModel: cpus()[0]?.model ?? "unknown",
      cpuCores: cpus().length,
      memoryTotalBytes: totalmem(),
      os: `${platform()} ${release()}`,
    };
  }
}

export interface GpuDiscovery {
  gpus: GpuInfo[];
  fake: boolean;
  /** Why no GPU was found (for the log and the error), or null. */
  problem: string | null;
}

export interface DiscoverGpusOptions {
  agent: string;
  nvidiaSmi: string;
  fakeGpus: number;
  cpuSlots: number;
  /** `--gpus`: keep only these indices. */
  only: readonly number[] | null;
  log: Logger;
}

export async function discoverGpus(o: DiscoverGpusOptions): Promise<GpuDiscovery> {
  let gpus: GpuInfo[];
  let fake = false;
  let problem: string | null = null;
  if (o.fakeGpus > 0) {
    gpus = fakeGpuInfos(o.agent, o.fakeGpus);
    fake = true;
  } else {
    const r = await queryGpuInventory(o.nvidiaSmi);
    if (r.ok) {
      // GPUs in MIG mode are offered as their instances (`--gpus` still names the physical GPUs).
      const listing = r.gpus.length > 0 ? await queryMigListing(o.nvidiaSmi) : [];
      const migEnabled = r.gpus.length > 0 ? await queryMigModes(o.nvidiaSmi) : new Set<number>();
      gpus = r.gpus;
      if (o.only) {
        const available = gpus.map((g) => g.index);
        for (const i of o.only) if (!available.includes(i)) throw new UnknownGpuError(i, available);
        gpus = gpus.filter((g) => o.only?.includes(g.index));
      }
      for (const g of gpus)
        if (migEnabled.has(g.index) && !listing.some((m) => m.parent === g.index))
          o.log.warn(
            { gpu: g.index },
            `GPU ${g.index} is in MIG mode with no instances: not offered (create instances with "nvidia-smi mig -cgi … -C", or turn MIG off)`,
          );
      gpus = expandMig(gpus, listing, migEnabled);
      if (gpus.length === 0) problem = `${o.nvidiaSmi} lists no GPU`;
    } else {
      gpus = [];
      problem = r.missing ? `${o.nvidiaSmi} not found` : r.error.message;
    }
  }
  if (o.only && fake) {
    const available = gpus.map((g) => g.index);
    for (const i of o.only) if (!available.includes(i)) throw new UnknownGpuError(i, available);
    gpus = gpus.filter((g) => o.only?.includes(g.index));
  }
  if (gpus.length === 0) {
    if (o.cpuSlots === 0) throw new NoResourcesError(problem ?? "none found");
    o.log.warn({ why: problem }, `no GPU found; offering ${o.cpuSlots} CPU slot(s) only`);
  }
  return { gpus, fake, problem };
}
