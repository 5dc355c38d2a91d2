import type { TestNats } from "./nats.js";
import { signalPid } from "./processes.js";
import { descendants } from "./procfs.js";

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
    for (const p of descendants()) if (!serverPids.has(p.pid)) signalPid(p.pid, "SIGKILL");
    throw new LeakError(`the test left things running:\n  ${problems.join("\n  ")}`);
  }
}
