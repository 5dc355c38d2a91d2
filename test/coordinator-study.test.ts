import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decideStudy, loadSpec, readStudyEvents, runStudy, StudyLeaseHeldError, TERMINAL_PHASES } from "@rung/coordinator";
import { connectNats, ensureResources, MeshNames, type TrialEvent } from "@rung/protocol";
import { rung, rungAgents, uniquePrefix, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

// Agents and coordinators as processes take their time to wind down.
const it = meshTest.extend("leakGraceMs", 5000);

const QUALITIES = [0.5, 0.9, 0.3, 0.95, 0.2, 0.7, 0.85, 0.4, 0.99, 0.1, 0.6, 0.8];

function count(events: TrialEvent[], type: TrialEvent["type"]): Map<string, number> {
  const m = new Map<string, number>();
  for (const e of events) if (e.type === type) m.set(e.trial, (m.get(e.trial) ?? 0) + 1);
  return m;
}

/** A study spec for the curve fixture: `qualities` become a grid, so trial i has qualities[i]. */
function curveSpec(name: string, qualities: number[], extra: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-spec-"));
  const file = join(dir, `${name}.json`);
  const spec = {
    name,
    command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs {max_t} --epoch-ms 120`,
    workdir: ".",
    metric: { name: "val_acc", mode: "max" },
    search: { algorithm: "grid", samples: 1, seed: 1, space: { quality: { grid: qualities } } },
    scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 9 },
    resources: { gpus: 1 },
    max_concurrent: 2,
    retries: 1,
    ...extra,
  };
  writeFileSync(file, JSON.stringify(spec));
  return file;
}

describe("a study on real agents", () => {
  it("runs a 12-trial ASHA study to the end, and its STOPs are exactly what the event stream implies", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const spec = await loadSpec(curveSpec("asha12", QUALITIES));
    const nc = await connectNats({ url: nats.url });
    try {
      const result = await runStudy({ nc, spec, prefix });
      expect(result.status).toBe("completed");
      const trials = [...result.state.trials.values()];
      expect(trials).toHaveLength(12);
      for (const t of trials) expect(TERMINAL_PHASES.has(t.phase)).toBe(true);
      const stopped = trials.filter((t) => t.phase === "stopped");
      const completed = trials.filter((t) => t.phase === "completed");
      expect(stopped.length).toBeGreaterThan(0);
      expect(completed.length).toBeGreaterThan(0);
      expect(stopped.length + completed.length).toBe(12);
      // The best trial (quality 0.99) survives every rung.
      expect(result.best?.params.quality).toBe(0.99);
      const events = (await readStudyEvents(nc, new MeshNames(prefix), "asha12")).map((s) => s.event);
      const live = events.filter((e) => e.type === "decision").map((e) => e.type === "decision" && `${e.trial}@${e.t}:${e.rung}`);
      const replayed = decideStudy(spec, events).map((d) => `${d.trial}@${d.t}:${d.rung}`);
      expect(live).toEqual(replayed);
      // Stopped trials were stopped below max_t; completed ones reached it.
      for (const t of stopped) expect(t.lastT).toBeLessThan(9);
      for (const t of completed) expect(t.lastT).toBe(9);
    } finally {
      await nc.close();
    }
  });

  it("resumes after the coordinator is killed with SIGKILL: same trial set, nothing dispatched twice", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const specFile = curveSpec("restart12", QUALITIES);
    const first = rung(["study", "run", specFile, "--nats", nats.url, "--prefix", prefix, "--lease", "3s"]);
    procs.push(first);
    const nc = await connectNats({ url: nats.url });
    const names = new MeshNames(prefix);
    try {
      await waitFor(
        "four trials ended",
        async () => {
          const evs = await readStudyEvents(nc, names, "restart12");
          return evs.filter((e) => e.event.type === "ended").length >= 4;
        },
        60_000,
        200,
      );
      first.child.kill("SIGKILL");
      await first.exited;
      // The dead coordinator's lease (3 s here) must run out before another may take the study.
      await new Promise((r) => setTimeout(r, 3500));
      const second = rung(["study", "run", specFile, "--nats", nats.url, "--prefix", prefix, "--lease", "3s"]);
      procs.push(second);
      expect(await second.exited).toBe(0);
      expect(second.out()).toMatch(/study restart12 completed/);
      const events = (await readStudyEvents(nc, names, "restart12")).map((s) => s.event);
      const created = count(events, "created");
      const ended = count(events, "ended");
      expect([...created.keys()].sort()).toEqual(Array.from({ length: 12 }, (_, i) => `t${String(i + 1).padStart(4, "0")}`));
      for (const n of created.values()) expect(n).toBe(1);
      for (const n of ended.values()) expect(n).toBe(1);
      expect(ended.size).toBe(12);
      const queued = events.filter((e) => e.type === "queued").map((e) => e.type === "queued" && `${e.trial}.${e.attempt}`);
      expect(new Set(queued).size).toBe(queued.length);
      const spec = await loadSpec(specFile);
      const live = events.filter((e) => e.type === "decision").map((e) => e.type === "decision" && `${e.trial}@${e.t}`);
      expect(live).toEqual(decideStudy(spec, events).map((d) => `${d.trial}@${d.t}`));
    } finally {
      await nc.close();
    }
  });

  it("refuses a second coordinator on the same study with a clear message", async ({ nats }) => {
    const prefix = uniquePrefix();
    const specFile = curveSpec("twice", QUALITIES.slice(0, 2));
    const spec = await loadSpec(specFile);
    const nc = await connectNats({ url: nats.url });
    const abort = new AbortController();
    try {
      // No agents: the first coordinator holds the lease and waits for capacity.
      const first = runStudy({ nc, spec, prefix, signal: abort.signal }).catch((e: unknown) => e);
      const res = await ensureResources(nc, new MeshNames(prefix));
      await waitFor("the first coordinator's lease", () => res.studies.get(`${spec.name}.lease`), 10_000, 50);
      const nc2 = await connectNats({ url: nats.url });
      try {
        await expect(runStudy({ nc: nc2, spec, prefix })).rejects.toThrow(StudyLeaseHeldError);
      } finally {
        await nc2.close();
      }
      const cli = rung(["study", "run", specFile, "--nats", nats.url, "--prefix", prefix]);
      expect(await cli.exited).toBe(1);
      expect(cli.out()).toMatch(/study twice is already run by coordinator .* — stop that one first/);
      abort.abort();
      await first;
    } finally {
      await nc.close();
    }
  });
});
