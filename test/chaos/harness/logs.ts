import type { TestProcess } from "@rung/testkit";
import { addCounts } from "./counts.js";

/** What the agents and coordinators logged (JSON lines, at info) about what they dropped and counted. */

export interface AgentStopLine {
  agent: string;
  counters: Record<string, number>;
  dropped: Record<string, number>;
}

function jsonLines(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a progress line that happens to start with a brace
    }
  }
  return out;
}

/** The last `agent stopped` line of every agent process that exited cleanly. */
export function agentStopLines(procs: TestProcess[]): AgentStopLine[] {
  const out: AgentStopLine[] = [];
  for (const p of procs) {
    for (const l of jsonLines(p.out())) {
      if (l.msg === "agent stopped" && typeof l.counters === "object") {
        out.push({
          agent: String(l.agent),
          counters: l.counters as Record<string, number>,
          dropped: (l.dropped ?? {}) as Record<string, number>,
        });
      }
    }
  }
  return out;
}

/** Drop counts the coordinators logged when they ended (summed over restarts). */
export function coordinatorDropCounts(coordinators: TestProcess[]): Record<string, number> {
  const all: Record<string, number>[] = [];
  for (const p of coordinators)
    for (const l of jsonLines(p.out())) if (l.drops && typeof l.drops === "object") all.push(l.drops as Record<string, number>);
  return addCounts(...all);
}
