import type { TestNats } from "@rung/testkit";
import { describe, expect } from "vitest";
import { expectSound } from "./expect.js";
import { anyProgress, type ChaosMesh, chaosSpec, it, LEASE_MS, runningAttempts, sleep } from "./harness/index.js";

// Scenario 3: the nats-server (one node, file store) dies with SIGKILL in the middle of a study and
// comes back on the same port and store: once for less than the claim lease, once for longer. Agents,
// the coordinator and the harness reconnect by themselves; nobody is restarted.

const QUALITIES = [0.5, 0.9, 0.3, 0.95, 0.2, 0.7, 0.85, 0.4, 0.99, 0.1, 0.6, 0.8, 0.45, 0.75, 0.92];

async function serverOutage(nats: TestNats, m: ChaosMesh, downMs: number): Promise<void> {
  const f = m.fault({ kind: "nats-server SIGKILL", target: "nats-server", recovered: anyProgress });
  nats.signal("SIGKILL");
  await nats.exited;
  await sleep(downMs);
  await nats.restart();
  f.clearedAt = Date.now();
}

describe("chaos 3: nats-server restarted mid-study", () => {
  it("finishes the study with nothing lost, whether the outage is shorter or longer than the lease", async ({
    nats,
    openChaos,
  }) => {
    const m = await openChaos({ scenario: "3 nats-server restart", url: nats.url, study: "natsrestart" });
    m.startAgents(3);
    m.startStudy(chaosSpec("natsrestart", { qualities: QUALITIES, epochMs: 400, maxConcurrent: 3 }));
    await m.waitForEvents("trials mid-run", (evs) => runningAttempts(evs, 1).length >= 2);
    await serverOutage(nats, m, 1500);
    await m.waitForEvents("a trial mid-run again", (evs) => runningAttempts(evs, 1).some((r) => r.reports >= 2), 30_000);
    await serverOutage(nats, m, LEASE_MS + 2000);
    const r = await m.finish({ faults: "nats-server SIGKILL, down 1.5 s then restarted; again, down 5 s" });
    expectSound(r, { outcome: "completed", trials: QUALITIES.length });
    // The long outage outlived the claims of the trials then running: they ran again.
    expect(r.recovered).toBeGreaterThan(0);
    expect(r.ttr.every((x) => x !== null)).toBe(true);
  });
});
