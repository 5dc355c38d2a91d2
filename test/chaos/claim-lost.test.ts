import { waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { expectSound } from "./expect.js";
import { chaosSpec, HEARTBEAT_MS, it, runningAttempts, sleep, trialMovedOn } from "./harness/index.js";

// Scenario 5: an agent cut off for longer than the claim lease (SIGSTOP, then SIGCONT). Its trial goes
// to another agent; when the old one wakes it must see that it lost the claim and kill its copy, so no
// two attempts of a trial run at once for longer than one heartbeat. A pause shorter than the lease
// must change nothing. The trials here take their time over SIGTERM (--term-delay: a trainer saving a
// checkpoint), as real ones do.

describe("chaos 5: an agent frozen past its claim lease", () => {
  it("hands the trial on, and the woken agent kills its copy within a heartbeat", async ({ nats, openChaos }) => {
    const m = await openChaos({ scenario: "5 agent frozen (SIGSTOP)", url: nats.url, study: "frozen" });
    m.startAgents(3);
    m.startStudy(
      chaosSpec("frozen", {
        qualities: [0.6, 0.7, 0.8],
        scheduler: "fifo",
        maxT: 12,
        epochMs: 800,
        maxConcurrent: 2,
        flags: ["--term-delay", "3000"],
      }),
    );

    // A pause shorter than the lease: the claim holds, the trial runs on where it was.
    const short = await m.waitForEvents("a trial mid-run", (evs) => runningAttempts(evs, 1)[0]);
    const shortAgent = m.agentOf(short);
    const f1 = m.fault({
      kind: "SIGSTOP agent",
      target: short.agent,
      trial: short.trial,
      attempt: short.attempt,
      from: "cleared",
      recovered: ({ event: e }) => e.trial === short.trial && e.type === "report",
    });
    shortAgent.child.kill("SIGSTOP");
    await sleep(1200);
    shortAgent.child.kill("SIGCONT");
    f1.clearedAt = Date.now();

    // A pause well past the lease.
    const long = await m.waitForEvents("another trial mid-run", (evs) =>
      runningAttempts(evs, 1).find((r) => r.trial !== short.trial && r.agent !== short.agent),
    );
    const longAgent = m.agentOf(long);
    const f2 = m.fault({
      kind: "SIGSTOP agent",
      target: long.agent,
      trial: long.trial,
      attempt: long.attempt,
      recovered: trialMovedOn(long.trial, long.attempt),
    });
    longAgent.child.kill("SIGSTOP");
    await m.waitForEvents(
      "the trial to start again on another agent",
      (evs) => evs.find(({ event: e }) => e.type === "started" && e.trial === long.trial && e.attempt > long.attempt),
      15_000,
    );
    await sleep(1500);
    longAgent.child.kill("SIGCONT");
    const wokeAt = Date.now();
    f2.clearedAt = wokeAt;
    const copyGone = await waitFor(
      "the woken agent to kill its copy",
      () => {
        const mine = [...m.watcher.seen.values()].filter((p) => p.trial === long.trial && p.attempt === long.attempt);
        if (mine.length === 0 || mine.some((p) => p.deadAt === null)) return undefined;
        return Math.max(...mine.map((p) => p.deadAt as number));
      },
      15_000,
      20,
    );
    const killedAfterMs = copyGone - wokeAt;
    m.notes.push(`the woken agent killed its copy ${killedAfterMs} ms after SIGCONT (heartbeat ${HEARTBEAT_MS} ms)`);

    const r = await m.finish({ faults: "SIGSTOP of a busy agent for 1.2 s (< lease), then another for ~6 s (> lease)" });
    expectSound(r, { outcome: "completed", trials: 3 });
    expect(killedAfterMs).toBeLessThanOrEqual(HEARTBEAT_MS);
    // The short pause: one attempt, the trial ran on.
    expect(r.attempts.get(short.trial)).toEqual(new Set([short.attempt]));
    expect(r.ended.get(short.trial)?.status).toBe("completed");
    // The long one: the old copy said it lost its claim; the new attempt finished the trial.
    const finished = r.events.map((e) => e.event).filter((e) => e.type === "finished" && e.trial === long.trial);
    expect(finished.find((e) => e.type === "finished" && e.attempt === long.attempt)).toMatchObject({
      status: "stopped",
      reason: "claim-lost",
      agent: long.agent,
    });
    expect(r.ended.get(long.trial)?.status).toBe("completed");
    expect(r.recovered).toBe(1);
  });
});
