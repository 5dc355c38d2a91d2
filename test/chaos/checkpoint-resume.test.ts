import { describe, expect } from "vitest";
import { expectSound } from "./expect.js";
import { chaosSpec, clearOfRungs, hadWorkLeft, it, killCosts, killCostText, runningAttempts, sleep } from "./harness/index.js";

// Scenario 1b: scenario 1's kill -9 of an agent mid-trial, with trials that checkpoint every epoch.
// Each killed trial's next attempt, on whichever agent takes it, resumes from the killed attempt's last
// stored snapshot: the GPU time lost per kill is what ran after that snapshot, not the whole attempt.

const QUALITIES = [0.5, 0.9, 0.3, 0.95, 0.2, 0.7, 0.85, 0.4, 0.99];
const KILLS = 3;
const MAX_T = 9;

describe("chaos 1b: agents killed with SIGKILL mid-trial, trials that checkpoint", () => {
  it("each killed trial resumes from its last snapshot elsewhere; nothing is lost or run twice at once", async ({
    nats,
    openChaos,
  }) => {
    const m = await openChaos({ scenario: "1b agent kill -9, checkpoints", url: nats.url, study: "ckptkill" });
    m.startAgents(3);
    // Epochs of 500 ms: a trial is a candidate for only an epoch or a few (between rungs, after a stored
    // snapshot), and the events are polled every 400 ms; with 300 ms epochs a promoted trial could pass
    // its whole window between two polls, and the study end before a third victim came along.
    m.startStudy(
      chaosSpec("ckptkill", { qualities: QUALITIES, epochMs: 500, maxConcurrent: 3, flags: ["--checkpoint"], maxT: MAX_T }),
    );
    const victims: string[] = [];
    for (let k = 0; k < KILLS; k++) {
      // A trial two epochs in, away from a rung, whose agent has stored a snapshot of it.
      const v = await m.waitForEvents("a checkpointed trial mid-run on a live agent", (evs) =>
        runningAttempts(evs, 2).find(
          (r) =>
            !victims.includes(r.trial) &&
            clearOfRungs(r) &&
            m.agents.get(r.agent)?.child.exitCode === null &&
            evs.some(({ event: e }) => e.type === "checkpoint" && e.trial === r.trial && e.attempt === r.attempt),
        ),
      );
      await m.killAgentRunning(v);
      victims.push(v.trial);
      await sleep(1000);
      m.startAgent(v.agent);
    }
    const r = await m.finish({ faults: `${KILLS}× kill -9 of the agent running a checkpointed trial (restarted 1 s later)` });
    expectSound(r, { outcome: "completed", trials: QUALITIES.length });
    // A kill that lands just after the scheduler stopped the attempt, or after its last report, leaves
    // nothing to resume: that trial ends as decided. Every other killed trial resumes.
    const all = killCosts(m.faults, r.events);
    expect(all).toHaveLength(KILLS);
    const costs = all.filter((c) => hadWorkLeft(r.events, c.trial, c.attempt, MAX_T));
    expect(costs.length, "kills that landed mid-work").toBeGreaterThan(0);
    for (const c of all.filter((x) => !costs.includes(x)))
      m.notes.push(`${c.trial} attempt ${c.attempt} was killed after its work was done (stopped, or at its last epoch)`);
    for (const c of costs) {
      m.notes.push(killCostText(c));
      expect(c.resumedFrom, `${c.trial} resumed from a checkpoint`).not.toBeNull();
      expect(c.resumedFrom as number).toBeGreaterThanOrEqual(1);
      expect(c.keptGpuS).toBeGreaterThan(0);
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    m.notes.push(
      `GPU-s lost per kill: ${mean(costs.map((c) => c.lostGpuS)).toFixed(1)} mean of ${mean(costs.map((c) => c.ranGpuS)).toFixed(1)} run (checkpoints kept ${(100 * (1 - mean(costs.map((c) => c.lostGpuS)) / mean(costs.map((c) => c.ranGpuS)))).toFixed(0)}%)`,
    );
    for (const t of victims) expect(["completed", "stopped"]).toContain(r.ended.get(t)?.status);
  });
});
