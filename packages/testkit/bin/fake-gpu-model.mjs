// The physics of the fake GPU, shared by the fake nvidia-smi (which reports it) and test trials
// (which live in it). A process on a fake GPU registers itself in `<state dir>/procs/<pid>.json`:
//   { pid, gpus: [{ uuid, memoryMiB, compute }] }
// memoryMiB is what it allocated on that GPU, compute the share of the GPU's SMs it would keep busy
// alone (0..1). A GPU is one GPU or one MIG instance, named by its UUID. What follows from that:
//   - memory: a process that would take a GPU past its total gets CUDA's out-of-memory error instead
//     (register() says so; nothing is registered);
//   - compute: each process gets its demand, scaled down when the demands on one GPU add up to more
//     than 100 % (allotted() — at most 100 % in all), so packed trials slow down when oversubscribed;
//   - utilization: the allotted shares added up; memory used: the processes' memory added up.
// Files of processes that have exited are ignored (and removed), as the driver frees their memory.
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";

export function procsDir(statePath) {
  return join(dirname(statePath), "procs");
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === "EPERM";
  }
}

export function readState(statePath) {
  return JSON.parse(readFileSync(statePath, "utf8"));
}

/** Every GPU and MIG instance of the state: { uuid, memoryTotalMiB, index, parent }. */
export function devices(state) {
  const out = [];
  for (const g of state.gpus ?? []) {
    if (Array.isArray(g.mig) && g.mig.length > 0)
      for (const m of g.mig) out.push({ uuid: m.uuid, memoryTotalMiB: m.memoryTotalMiB, index: m.device, parent: g.index });
    else out.push({ uuid: g.uuid, memoryTotalMiB: g.memoryTotalMiB, index: g.index, parent: null });
  }
  return out;
}

/** The live registered processes. */
export function readProcs(statePath) {
  const dir = procsDir(statePath);
  if (!existsSync(dir)) return [];
  const out = [];
  for (const f of readdirSync(dir)) {
    if (!f.endsWith(".json")) continue;
    let p;
    try {
      p = JSON.parse(readFileSync(join(dir, f), "utf8"));
    } catch {
      continue;
    }
    if (alive(p.pid)) out.push(p);
    else rmSync(join(dir, f), { force: true });
  }
  return out.sort((a, b) => a.pid - b.pid);
}

/** Memory the live processes hold on a GPU (MiB). */
export function memoryOn(procs, uuid) {
  let used = 0;
  for (const p of procs) for (const g of p.gpus) if (g.uuid === uuid) used += g.memoryMiB;
  return used;
}

/** The share of a GPU's compute each process gets there: pid → 0..1, adding up to at most 1. */
export function allotted(procs, uuid) {
  const demands = [];
  for (const p of procs) for (const g of p.gpus) if (g.uuid === uuid) demands.push([p.pid, Math.max(0, g.compute)]);
  const total = demands.reduce((s, [, d]) => s + d, 0);
  const scale = total > 1 ? 1 / total : 1;
  return new Map(demands.map(([pid, d]) => [pid, d * scale]));
}

/**
 * Runs `fn` holding `<state dir>/procs.lock` (created exclusively; retried every 5 ms): two trials that
 * allocate at once must not both see the same free memory. A lock older than 5 s is a dead holder's.
 */
function withLock(statePath, fn) {
  const lock = join(dirname(statePath), "procs.lock");
  const deadline = Date.now() + 10_000;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  let fd;
  for (;;) {
    try {
      fd = openSync(lock, "wx");
      break;
    } catch (err) {
      if (err.code !== "EEXIST") throw err;
      try {
        if (Date.now() - statSync(lock).mtimeMs > 5000) {
          rmSync(lock, { force: true });
          continue;
        }
      } catch {
        continue; // released meanwhile
      }
      if (Date.now() > deadline) throw new Error(`fake GPU: ${lock} is held for too long`);
      Atomics.wait(nap, 0, 0, 5);
    }
  }
  try {
    return fn();
  } finally {
    closeSync(fd);
    rmSync(lock, { force: true });
  }
}

/**
 * Registers (or updates) process `pid` on its GPUs. Returns { ok: true } or, when a GPU's memory would
 * be overcommitted, { ok: false, uuid, wantMiB, freeMiB, totalMiB } and registers nothing. The check
 * and the write are one step under a lock (withLock).
 */
export function register(statePath, pid, gpus) {
  return withLock(statePath, () => registerLocked(statePath, pid, gpus));
}

function registerLocked(statePath, pid, gpus) {
  const st = readState(statePath);
  const devs = devices(st);
  const others = readProcs(statePath).filter((p) => p.pid !== pid);
  for (const g of gpus) {
    const dev = devs.find((d) => d.uuid === g.uuid);
    if (!dev) throw new Error(`fake GPU ${g.uuid} is not in ${statePath}`);
    const base =
      typeof st.gpus.find((x) => x.uuid === g.uuid)?.memoryUsedMiB === "number"
        ? st.gpus.find((x) => x.uuid === g.uuid).memoryUsedMiB
        : 0;
    const free = dev.memoryTotalMiB - base - memoryOn(others, g.uuid);
    if (g.memoryMiB > free) return { ok: false, uuid: g.uuid, wantMiB: g.memoryMiB, freeMiB: free, totalMiB: dev.memoryTotalMiB };
  }
  const dir = procsDir(statePath);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `${pid}.tmp`);
  writeFileSync(tmp, JSON.stringify({ pid, gpus }));
  renameSync(tmp, join(dir, `${pid}.json`));
  return { ok: true };
}

/** The UUID of what CUDA_VISIBLE_DEVICES names: an index (of a GPU) or a UUID (GPU-… or MIG-…). */
export function resolveDevice(state, entry) {
  const e = String(entry).trim();
  if (/^\d+$/.test(e)) return (state.gpus ?? []).find((g) => g.index === Number(e))?.uuid ?? null;
  return devices(state).find((d) => d.uuid === e)?.uuid ?? null;
}
