import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { StudyStatusJson } from "@rung/coordinator";
import { readStudyEvents } from "@rung/coordinator";
import { connectNats, MeshNames, type TrialEvent } from "@rung/protocol";
import { REPO, rung, rungAgents, uniquePrefix, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

// Real PyTorch training (Debian's python3-torch, CPU) of the digits classifier, through the real CLI.

const it = meshTest.extend("leakGraceMs", 5000);

describe("rung demo", () => {
  it("runs the recommended digits study end to end (TPE + promotion ASHA): every trial ends, trials pause at the rungs and some stop there, the best reaches 0.95", async ({
    procs,
  }) => {
    const out = join(mkdtempSync(join(tmpdir(), "rung-demo-test-")), "status.json");
    const demo = rung(["demo", "--out", out]);
    procs.push(demo);
    const code = await demo.exited;
    expect(demo.out()).toMatch(/study digits completed/);
    expect(code).toBe(0);
    const status = JSON.parse(readFileSync(out, "utf8")) as StudyStatusJson;
    expect(status.trials).toHaveLength(status.planned);
    for (const t of status.trials) expect(["completed", "stopped"]).toContain(t.state);
    expect(status.counts.stopped).toBeGreaterThan(0);
    expect(status.best?.value).toBeGreaterThanOrEqual(0.95);
    expect(demo.out()).toMatch(/early stopping saved/);
    expect(demo.out()).toMatch(/stopped at rung|paused/);
  });

  it("finishes the study with every trial accounted for when an agent is killed mid-study", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    const nc = await connectNats({ url: nats.url });
    try {
      const agents = rungAgents(nats.url, prefix, 3);
      procs.push(...agents);
      const study = rung(["study", "run", join(REPO, "configs", "digits-asha.yaml"), "--nats", nats.url, "--prefix", prefix]);
      procs.push(study);
      const names = new MeshNames(prefix);
      // Kill the agent running the first trial once it has reported.
      const victim = await waitFor(
        "a trial that reported",
        async () => {
          const evs = (await readStudyEvents(nc, names, "digits-asha")).map((e) => e.event);
          const reported = new Set(evs.filter((e) => e.type === "report").map((e) => e.trial));
          const started = evs.find(
            (e): e is Extract<TrialEvent, { type: "started" }> => e.type === "started" && reported.has(e.trial),
          );
          return started?.agent;
        },
        60_000,
        100,
      );
      const idx = Number(victim.slice(1)) - 1;
      agents[idx]?.child.kill("SIGKILL");
      expect(await study.exited).toBe(0);
      expect(study.out()).toMatch(/study digits-asha completed/);
      const evs = (await readStudyEvents(nc, names, "digits-asha")).map((e) => e.event);
      const ended = evs.filter((e) => e.type === "ended");
      const created = evs.filter((e) => e.type === "created");
      expect(created.length).toBe(16);
      expect(new Set(ended.map((e) => e.trial)).size).toBe(16);
      expect(ended.length).toBe(16);
      // The killed agent's trial ran again elsewhere, as a later attempt.
      const moved = evs.filter((e) => e.type === "claimed" && e.attempt > 1);
      expect(moved.length).toBeGreaterThan(0);
    } finally {
      await nc.close();
    }
  });
});
