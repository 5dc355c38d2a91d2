import { expect } from "vitest";
import type { ChaosReport } from "./harness/index.js";

/**
 * What every scenario must show: the study ended the right way, every trial ended in exactly one
 * terminal state, none was lost, none ran twice at once, and nothing is left running.
 */
export function expectSound(r: ChaosReport, o: { outcome: "completed" | "stopped"; trials: number }): void {
  const context = r.notes.join("\n");
  expect(r.outcome, context).toBe(o.outcome);
  expect(r.trials, "trials created").toBe(o.trials);
  expect(r.endedNever, "trials without an end").toEqual([]);
  expect(r.endedTwice, "trials that ended twice").toEqual([]);
  expect(r.overlaps, "attempts of one trial running at once for longer than a heartbeat").toEqual([]);
  expect(
    r.leftovers.map((p) => `${p.pid} ${p.cmd}`),
    "trial processes left running",
  ).toEqual([]);
  // The harness saw the processes it judges: every trial that reported was seen running.
  const reported = new Set(
    r.events.flatMap(({ event: e }) => (e.type === "report" && !r.strayTrials.has(e.trial) ? [e.trial] : [])),
  );
  const seen = new Set([...r.watcher.seen.values()].map((p) => p.trial));
  expect(
    [...reported].filter((t) => !seen.has(t)),
    "trials whose processes the harness never saw",
  ).toEqual([]);
  expect(r.lost).toBe(0);
  expect(r.duplicated).toBe(0);
}
