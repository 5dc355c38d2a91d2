import { readdirSync, readFileSync } from "node:fs";

/**
 * The one reader of /proc in the tests: the leak check, the chaos suite's trial watcher and the CPU
 * sampling of the diagnosis suite all see processes through it. Every read may find the process gone
 * (it ended while we looked); then it answers `undefined`, never throws.
 */

/** What /proc/<pid>/stat says of a process (fields 3 on, see proc(5)). */
export interface ProcStat {
  pid: number;
  /** R, S, D, Z (zombie), T (stopped) … */
  state: string;
  ppid: number;
  /** Process group: a trial's processes share the group of its leader. */
  pgrp: number;
  /** User and system CPU time, in clock ticks (100 a second on Linux). */
  utime: number;
  stime: number;
  /** Start time since boot, in clock ticks: with the pid, it names one process even after pid reuse. */
  start: string;
}

/** A process with its command line. */
export interface ProcInfo extends ProcStat {
  /** argv joined by spaces; empty for kernel threads. */
  cmd: string;
}

/** Every pid in /proc now. */
export function procPids(): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
}

export function procStat(pid: number): ProcStat | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return {
      pid,
      state: f[0] ?? "?",
      ppid: Number(f[1]),
      pgrp: Number(f[2]),
      utime: Number(f[11]),
      stime: Number(f[12]),
      start: f[19] ?? "",
    };
  } catch {
    return undefined;
  }
}

/** The command line, argv joined by spaces. */
export function procCmdline(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return undefined;
  }
}

/** The environment the process was started with. */
export function procEnv(pid: number): Map<string, string> | undefined {
  try {
    const env = new Map<string, string>();
    for (const kv of readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")) {
      const eq = kv.indexOf("=");
      if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
    return env;
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) a process has used so far, in clock ticks; 0 once it is gone. */
export function cpuTicks(pid: number): number {
  const st = procStat(pid);
  return st ? st.utime + st.stime : 0;
}

/** Every process now, with its command line (those that end while we look are left out). */
export function listProcesses(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const pid of procPids()) {
    const st = procStat(pid);
    const cmd = st && procCmdline(pid);
    if (st && cmd !== undefined) out.push({ ...st, cmd });
  }
  return out;
}

/** Live (non-zombie) descendants of `root`, by default this process. */
export function descendants(root = process.pid): ProcInfo[] {
  const byParent = new Map<number, ProcInfo[]>();
  for (const p of listProcesses()) {
    const list = byParent.get(p.ppid) ?? [];
    list.push(p);
    byParent.set(p.ppid, list);
  }
  const out: ProcInfo[] = [];
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop() as number;
    for (const c of byParent.get(pid) ?? []) {
      if (c.state !== "Z") out.push(c);
      stack.push(c.pid);
    }
  }
  return out;
}
