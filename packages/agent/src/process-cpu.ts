import { readdirSync, readFileSync } from "node:fs";
import { isValidToken } from "@rung/protocol";

/**
 * Each running trial's own CPU use, read from /proc: what the diagnosis needs to tell a DataLoader
 * that keeps the cores busy (more workers will not help) from one that waits on storage with the CPU
 * idle (more workers will), and a trial that saturates the CPU from a neighbour that does.
 *
 * Which processes are a trial's: node-pty makes every trial a session leader and a direct child of
 * the agent, so its session holds the trial, its DataLoader workers and whatever they start (the
 * process group is part of it; a helper that moves to a group of its own stays in the session). A
 * leader is recognised by its environment (RUNG_STUDY, RUNG_TRIAL, RUNG_ATTEMPT, set by the agent for
 * every trial), read once per leader. Nothing here depends on the claim loop.
 *
 * How much: per sample, the CPU time the session's processes used since the previous sample, over the
 * time between the two. Each process's time is `utime + stime + cutime + cstime`: a worker that exits
 * and is reaped by its parent moves its time into the parent's `cutime`, so its last moments (and a
 * worker that lived and died between two samples, as non-persistent DataLoader workers do) are still
 * counted; what a reaped process had already been counted for is subtracted once, so nothing counts
 * twice. A process not seen before that started after the meter did is new (a process joins a trial's
 * session only by being forked in it): all of its time counts. The agent is the trials' parent, so
 * its meter starts before any of them; an older process is a baseline.
 *
 * Linux only (elsewhere `sample()` returns nothing); the cost is one read of /proc/<pid>/stat per
 * process on the box per sample, every few seconds, and only while a trial runs (`idle()` otherwise).
 */

/** One trial's CPU over the last interval. */
export interface TrialCpu {
  readonly study: string;
  readonly trial: string;
  readonly attempt: number;
  /** CPU-seconds its processes used over the interval, per second: cores busy on average. */
  readonly cpuCores: number;
  /** Its processes alive now. */
  readonly processes: number;
}

/** What /proc/<pid>/stat says that matters here. */
export interface ProcCpuStat {
  readonly pid: number;
  readonly ppid: number;
  readonly session: number;
  /** Clock ticks: user + system, of the process and of its reaped children. */
  readonly ticks: number;
  /** Start time after boot, in clock ticks. */
  readonly start: number;
}

/** Clock ticks per second of /proc's times (USER_HZ): 100 on every Linux the agent runs on. */
export const CLOCK_TICKS = 100;

/** Parses /proc/<pid>/stat (proc(5)); undefined when it is not one. */
export function parseProcStat(pid: number, text: string): ProcCpuStat | undefined {
  // The command name (field 2) is in parentheses and may itself hold spaces and parentheses.
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const f = text.slice(close + 2).split(" ");
  // f[0] is field 3 (state); field n is f[n - 3].
  const num = (field: number) => Number(f[field - 3]);
  const stat = {
    pid,
    ppid: num(4),
    session: num(6),
    ticks: num(14) + num(15) + num(16) + num(17),
    start: num(22),
  };
  return Number.isFinite(stat.ticks) && Number.isFinite(stat.session) && Number.isFinite(stat.start) ? stat : undefined;
}

/** The /proc this meter reads; a test passes a fake. */
export interface ProcSource {
  /** Every process now. */
  stats(): ProcCpuStat[];
  /** A process's environment, or undefined when it cannot be read (gone, another user's). */
  environ(pid: number): Map<string, string> | undefined;
  /** Seconds since boot, as /proc/uptime says. */
  uptimeS(): number;
}

export const linuxProc: ProcSource = {
  stats() {
    const out: ProcCpuStat[] = [];
    let pids: string[];
    try {
      pids = readdirSync("/proc");
    } catch {
      return out;
    }
    for (const d of pids) {
      if (d.charCodeAt(0) < 48 || d.charCodeAt(0) > 57) continue;
      const pid = Number(d);
      try {
        const s = parseProcStat(pid, readFileSync(`/proc/${d}/stat`, "utf8"));
        if (s) out.push(s);
      } catch {
        // it ended while we looked
      }
    }
    return out;
  },
  environ(pid) {
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
  },
  uptimeS() {
    try {
      return Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]);
    } catch {
      return Number.NaN;
    }
  },
};

interface Leader {
  readonly study: string;
  readonly trial: string;
  readonly attempt: number;
}

const key = (p: { pid: number; start: number }) => `${p.pid}@${p.start}`;

export class TrialCpuMeter {
  readonly #proc: ProcSource;
  readonly #parent: number;
  /** Trial leaders seen, by pid@start. */
  readonly #leaders = new Map<string, Leader>();
  /** Every process of a trial at the previous sample: its ticks and its parent. */
  readonly #last = new Map<string, { ticks: number; ppid: number; session: number }>();
  #lastUptimeS = Number.NaN;
  /** When the meter started: a process started since that it has not seen yet is new, all of its time. */
  readonly #bornS: number;
  readonly #available: boolean;

  /** `parent`: the process whose children the trials are (this agent). */
  constructor(options: { proc?: ProcSource; parent?: number } = {}) {
    this.#proc = options.proc ?? linuxProc;
    this.#parent = options.parent ?? process.pid;
    this.#available = options.proc !== undefined || process.platform === "linux";
    this.#bornS = this.#available ? this.#proc.uptimeS() : Number.NaN;
    // The first look: what runs already is the baseline of the first interval.
    this.sample();
  }

  /**
   * Nothing runs (no slot is held): starts the next interval now without reading every process.
   * A trial that starts before the next `sample()` is new to it, so all of its time is counted.
   */
  idle(): [] {
    if (this.#available) {
      this.#lastUptimeS = this.#proc.uptimeS();
      this.#last.clear();
    }
    return [];
  }

  /** Each running trial's CPU since the previous call (the first call measures from construction). */
  sample(): TrialCpu[] {
    if (!this.#available) return [];
    const uptime = this.#proc.uptimeS();
    const since = this.#lastUptimeS;
    this.#lastUptimeS = uptime;
    const stats = this.#proc.stats();

    // The trials: sessions led by a direct child of the agent whose environment names a trial.
    const sessions = new Map<number, Leader>();
    const alive = new Set<string>();
    for (const p of stats) {
      if (p.ppid !== this.#parent || p.session !== p.pid) continue;
      const k = key(p);
      alive.add(k);
      let leader: Leader | null | undefined = this.#leaders.get(k);
      if (leader === undefined) {
        // Only a trial is remembered: a child caught between fork and exec still has the agent's
        // environment, and is asked again next time.
        leader = leaderOf(this.#proc.environ(p.pid));
        if (leader !== null) this.#leaders.set(k, leader);
      }
      if (leader) sessions.set(p.pid, leader);
    }
    for (const k of this.#leaders.keys()) if (!alive.has(k)) this.#leaders.delete(k);

    const next = new Map<string, { ticks: number; ppid: number; session: number }>();
    const used = new Map<number, { ticks: number; processes: number }>();
    const members = new Set<number>();
    for (const p of stats) {
      if (!sessions.has(p.session)) continue;
      members.add(p.pid);
      const k = key(p);
      next.set(k, { ticks: p.ticks, ppid: p.ppid, session: p.session });
      const prev = this.#last.get(k);
      // Not seen before and started since the meter did: new (a process joins a trial's session only
      // by being forked in it), so all of its time is in this interval. Older: a baseline.
      const base = prev !== undefined ? prev.ticks : p.start / CLOCK_TICKS >= this.#bornS ? 0 : p.ticks;
      const u = used.get(p.session) ?? { ticks: 0, processes: 0 };
      u.ticks += Math.max(0, p.ticks - base);
      u.processes += 1;
      used.set(p.session, u);
    }
    // A process gone since the previous sample was reaped by its parent, whose cutime now holds its
    // whole time, of which `ticks` was counted already; if the parent is gone too, the grandparent
    // holds both. Subtracted once when the chain reaches a process of the trial still alive.
    const lastByPid = new Map<number, { key: string; ppid: number }>();
    for (const [k, prev] of this.#last) lastByPid.set(Number(k.slice(0, k.indexOf("@"))), { key: k, ppid: prev.ppid });
    for (const [k, prev] of this.#last) {
      if (next.has(k)) continue;
      let ancestor = prev.ppid;
      for (let hops = 0; hops < 64 && !members.has(ancestor); hops++) {
        const up = lastByPid.get(ancestor);
        if (up === undefined || next.has(up.key)) break;
        ancestor = up.ppid;
      }
      if (!members.has(ancestor)) continue;
      const u = used.get(prev.session);
      if (u) u.ticks -= prev.ticks;
    }
    this.#last.clear();
    for (const [k, v] of next) this.#last.set(k, v);

    const seconds = uptime - since;
    const out: TrialCpu[] = [];
    for (const [session, leader] of sessions) {
      const u = used.get(session) ?? { ticks: 0, processes: 0 };
      if (!(seconds > 0)) continue;
      out.push({
        ...leader,
        cpuCores: Math.round((1000 * Math.max(0, u.ticks)) / CLOCK_TICKS / seconds) / 1000,
        processes: u.processes,
      });
    }
    return out;
  }
}

function leaderOf(env: Map<string, string> | undefined): Leader | null {
  const study = env?.get("RUNG_STUDY");
  const trial = env?.get("RUNG_TRIAL");
  const attempt = Number(env?.get("RUNG_ATTEMPT"));
  if (!study || !trial || !isValidToken(study) || !isValidToken(trial) || !Number.isInteger(attempt) || attempt < 1) return null;
  return { study, trial, attempt };
}
