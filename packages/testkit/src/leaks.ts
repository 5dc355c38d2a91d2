import { readdirSync, readFileSync } from "node:fs";
import type { TestNats } from "./nats.js";

/**
 * Leak check: after each test nothing it started may still run. It looks at the real things —
 * client connections the nats-server itself reports, and this process's descendants in /proc — so
 * it catches an agent, coordinator or trial the test forgot, however it was started.
 */

const servers = new Set<TestNats>();

export function registerServer(s: TestNats): void {
  servers.add(s);
}
export function unregisterServer(s: TestNats): void {
  servers.delete(s);
}

interface Proc {
  pid: number;
  ppid: number;
  cmd: string;
  state: string;
}

function readProcs(): Proc[] {
  const out: Proc[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const fields = stat.slice(close + 2).split(" ");
      const cmd = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").join(" ").trim();
      out.push({ pid: Number(d), state: fields[0] ?? "?", ppid: Number(fields[1]), cmd });
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** Live (non-zombie) descendants of `root`. */
export function descendants(root = process.pid): Proc[] {
  const procs = readProcs();
  const byParent = new Map<number, Proc[]>();
  for (const p of procs) {
    const list = byParent.get(p.ppid) ?? [];
    list.push(p);
    byParent.set(p.ppid, list);
  }
  const out: Proc[] = [];
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

export class LeakError extends Error {
  override name = "LeakError";
}

export interface LeakCheckOptions {
  /** How long things may take to wind down after the test before they count as leaked. Default 3 s. */
  graceMs?: number;
}

/**
 * Fails when a test leaves a client connection on any test server, or a child process other than the
 * test servers themselves. Leaked processes are killed so the next test starts clean.
 */
export async function checkLeaks(options: LeakCheckOptions = {}): Promise<void> {
  const deadline = Date.now() + (options.graceMs ?? 3000);
  let problems: string[] = [];
  for (;;) {
    problems = [];
    const serverPids = new Set([...servers].map((s) => s.pid).filter((p): p is number => p !== undefined));
    const procs = descendants().filter((p) => !serverPids.has(p.pid));
    for (const p of procs) problems.push(`process ${p.pid} still running: ${p.cmd.slice(0, 160)}`);
    for (const s of servers) {
      for (const c of await s.connections().catch(() => [])) {
        problems.push(`NATS connection ${c.cid}${c.name ? ` (${c.name})` : ""} still open on ${s.url}`);
      }
    }
    if (problems.length === 0 || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (problems.length) {
    const serverPids = new Set([...servers].map((s) => s.pid));
    for (const p of descendants()) {
      if (!serverPids.has(p.pid)) {
        try {
          process.kill(p.pid, "SIGKILL");
        } catch {
          // gone already
        }
      }
    }
    throw new LeakError(`the test left things running:\n  ${problems.join("\n  ")}`);
  }
}
