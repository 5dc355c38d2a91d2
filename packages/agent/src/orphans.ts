import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "@rung/protocol";

/**
 * An agent killed with SIGKILL (the OOM killer, `kill -9`) cannot stop anything on its way out. Its
 * trials lose their terminals and die of SIGHUP, but a helper a trial started that ignores SIGHUP (a
 * `nohup`ed logger, a TensorBoard) lives on, holding the GPU while another agent runs the trial again.
 * So each running trial's process group is written down under `<state-dir>/groups/`, and an agent
 * starting on that state directory kills whatever is left of the recorded groups before it claims work.
 * (Under the systemd unit in deploy/, the unit's cgroup goes with the agent anyway.) Linux only: on a
 * system without /proc nothing is reaped.
 */

export interface GroupRecord {
  pgid: number;
  study: string;
  trial: string;
  attempt: number;
}

/** Best effort: a full disk must not keep a trial from running. */
export function recordGroup(dir: string, r: GroupRecord): void {
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, String(r.pgid)), JSON.stringify({ ...r, agentPid: process.pid }));
  } catch {
    // no record, no reaping after a crash: the same as before records existed
  }
}

export function forgetGroup(dir: string, pgid: number): void {
  rmSync(join(dir, String(pgid)), { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function trialOf(pid: number): { study?: string; trial?: string; attempt?: string } | undefined {
  try {
    const env = new Map<string, string>();
    for (const kv of readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")) {
      const eq = kv.indexOf("=");
      if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
    return { study: env.get("RUNG_STUDY"), trial: env.get("RUNG_TRIAL"), attempt: env.get("RUNG_ATTEMPT") };
  } catch {
    return undefined;
  }
}

/** Kills what is left of each recorded group, then forgets the records. Returns how many it killed. */
export function reapOrphans(dir: string, log: Logger): number {
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return 0;
  }
  if (files.length === 0) return 0;
  const members = new Map<number, number[]>();
  try {
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const stat = readFileSync(`/proc/${d}/stat`, "utf8");
        const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        if (f[0] === "Z") continue;
        const pgrp = Number(f[2]);
        members.set(pgrp, [...(members.get(pgrp) ?? []), Number(d)]);
      } catch {
        // ended while we looked
      }
    }
  } catch {
    // no /proc
  }
  let killed = 0;
  for (const f of files) {
    const file = join(dir, f);
    let rec: (GroupRecord & { agentPid?: number }) | undefined;
    try {
      rec = JSON.parse(readFileSync(file, "utf8")) as GroupRecord & { agentPid?: number };
    } catch {
      rec = undefined;
    }
    // Another agent alive on the same state directory (a misconfiguration) keeps its own trials.
    if (rec?.agentPid !== undefined && rec.agentPid !== process.pid && alive(rec.agentPid)) continue;
    for (const pid of rec ? (members.get(rec.pgid) ?? []) : []) {
      // Group ids are reused: only a process that carries the recorded trial in its environment is ours.
      const t = trialOf(pid);
      if (!rec || t?.study !== rec.study || t.trial !== rec.trial || t.attempt !== String(rec.attempt)) continue;
      try {
        process.kill(pid, "SIGKILL");
        killed += 1;
      } catch {
        // gone already
      }
    }
    rmSync(file, { force: true });
  }
  if (killed > 0) log.warn({ killed }, "killed processes that trials of a previous agent on this state directory left behind");
  return killed;
}
