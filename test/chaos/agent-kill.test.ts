import { describe, expect } from "vitest";
import { expectSound } from "./expect.js";
import { chaosSpec, clearOfRungs, hadWorkLeft, it, killCosts, killCostText, runningAttempts, sleep } from "./harness/index.js";

// Scenario 1: kill -9 of an agent in the middle of a trial, three times across a study on 3 agents.
// Each killed agent comes back (a rebooted box) under the same name and state directory.

const QUALITIES = [0.5, 0.9, 0.3, 0.95, 0.2, 0.7, 0.85, 0.4, 0.99, 0.1, 0.6, 0.8];
const KILLS = 3;
const MAX_T = 9;

describe("chaos 1: agents killed with SIGKILL mid-trial", () => {
  it("loses no trial and runs none twice at once; each killed trial runs again elsewhere", async ({ nats, openChaos }) => {
    const m = await openChaos({ scenario: "1 agent kill -9", url: nats.url, study: "agentkill" });
    m.startAgents(3);
    m.startStudy(chaosSpec("agentkill", { qualities: QUALITIES, epochMs: 300, maxConcurrent: 3, maxT: MAX_T }));
    const victims: { trial: string; attempt: number }[] = [];
    for (let k = 0; k < KILLS; k++) {
      const v = await m.waitForEvents("a trial mid-run on a live agent", (evs) =>
        runningAttempts(evs, 2).find(
          (r) => !victims.some((x) => x.trial === r.trial) && clearOfRungs(r) && m.agents.get(r.agent)?.child.exitCode === null,
        ),
      );
      await m.killAgentRunning(v);
      victims.push(v);
      await sleep(1000);
      m.startAgent(v.agent);
    }
    const r = await m.finish({ faults: `${KILLS}× kill -9 of the agent running a trial (restarted 1 s later)` });
    expectSound(r, { outcome: "completed", trials: QUALITIES.length });
    // A kill that lands just after the scheduler stopped the attempt, or after its last report, leaves
    // nothing to run again: that trial ends as decided. Every other killed trial runs again.
    const midWork = victims.filter((v) => hadWorkLeft(r.events, v.trial, v.attempt, MAX_T));
    for (const v of victims) {
      if (midWork.includes(v)) expect(r.attempts.get(v.trial)?.size, `${v.trial} ran again`).toBeGreaterThan(1);
      else m.notes.push(`${v.trial} attempt ${v.attempt} was killed after its work was done (stopped, or at its last epoch)`);
      expect(["completed", "stopped"]).toContain(r.ended.get(v.trial)?.status);
    }
    expect(midWork.length, "kills that landed mid-work").toBeGreaterThan(0);
    expect(r.recovered).toBeGreaterThanOrEqual(midWork.length);
    // These trials keep no checkpoints: each kill loses everything the killed attempt had run (1b compares).
    for (const c of killCosts(m.faults, r.events)) {
      m.notes.push(killCostText(c));
      expect(c.resumedFrom).toBeNull();
    }
    expect(r.ttr.every((x) => x !== null)).toBe(true);
  });
});
