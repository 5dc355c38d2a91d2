import { procCmdline, procEnv, procPids, procStat } from "@rung/testkit";

/**
 * The processes of one study as /proc shows them: every 100 ms the watcher follows each process whose
 * environment carries RUNG_STUDY=<study> (trials and anything they started), so "no two attempts of a
 * trial run at once" is checked on real process lifetimes, not on what the agents say.
 */

export interface ObservedProcess {
  pid: number;
  pgrp: number;
  trial: string;
  attempt: number;
  /** The trial's own process (its process group leader), not something it started. */
  leader: boolean;
  cmd: string;
  firstSeen: number;
  deadAt: number | null;
}

/** When the processes of one attempt ran: first seen to the last of them gone (or now). */
export interface AttemptWindow {
  trial: string;
  attempt: number;
  start: number;
  end: number;
  procs: ObservedProcess[];
}

/** Follows every process of one study (by the RUNG_STUDY its environment carries) through /proc. */
export class TrialWatcher {
  readonly seen = new Map<string, ObservedProcess>();
  /** Processes whose parent is one of these are re-read until they exec (node-pty forks, then execs). */
  readonly agentPids = new Set<number>();
  readonly #ignored = new Set<string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly study: string,
    readonly everyMs = 100,
  ) {}

  start(): void {
    this.scan();
    this.#timer = setInterval(() => this.scan(), this.everyMs);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.scan();
  }

  scan(): void {
    const now = Date.now();
    const listed = new Set<string>();
    for (const pid of procPids()) {
      const st = procStat(pid);
      if (!st) continue;
      const key = `${pid}:${st.start}`;
      listed.add(key);
      const known = this.seen.get(key);
      if (known) {
        if (known.deadAt === null && st.state === "Z") known.deadAt = now;
        continue;
      }
      if (this.#ignored.has(key) || st.state === "Z") continue;
      const env = procEnv(pid);
      if (!env) continue;
      if (env.get("RUNG_STUDY") !== this.study) {
        if (!this.agentPids.has(st.ppid)) this.#ignored.add(key);
        continue;
      }
      this.seen.set(key, {
        pid,
        pgrp: st.pgrp,
        trial: env.get("RUNG_TRIAL") ?? "?",
        attempt: Number(env.get("RUNG_ATTEMPT") ?? 0),
        leader: st.pgrp === pid,
        cmd: (procCmdline(pid) ?? "").slice(0, 200),
        firstSeen: now,
        deadAt: null,
      });
    }
    for (const [key, p] of this.seen) if (p.deadAt === null && !listed.has(key)) p.deadAt = now;
    for (const key of this.#ignored) if (!listed.has(key)) this.#ignored.delete(key);
  }

  alive(): ObservedProcess[] {
    return [...this.seen.values()].filter((p) => p.deadAt === null);
  }

  /** When each attempt's processes ran, by `trial#attempt`. */
  windows(now = Date.now()): Map<string, AttemptWindow> {
    const out = new Map<string, AttemptWindow>();
    for (const p of this.seen.values()) {
      const k = `${p.trial}#${p.attempt}`;
      const w = out.get(k) ?? { trial: p.trial, attempt: p.attempt, start: p.firstSeen, end: 0, procs: [] };
      w.start = Math.min(w.start, p.firstSeen);
      w.end = Math.max(w.end, p.deadAt ?? now);
      w.procs.push(p);
      out.set(k, w);
    }
    return out;
  }
}
