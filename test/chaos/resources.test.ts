import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect } from "vitest";
import { expectSound } from "./expect.js";
import { type ChaosMesh, chaosSpec, it, runningAttempts, sleep } from "./harness/index.js";

// Scenario 7: resource edges. (a) The disk under the agents' work and state directories fills up: the
// trials that need it fail with the reason in their log tail, the agents carry on, and once space is
// freed the rest of the study completes. (b) Trials that leave helper processes behind, deaf to SIGHUP
// and SIGTERM: they go with the trial's process group, whether the trial ends by itself, is stopped by
// the scheduler, or its agent is killed with SIGKILL and comes back.

/** A small tmpfs to fill, or why there cannot be one here (not root, no mount in a container …). */
function mountTmpfs(sizeMiB: number): { dir: string; unmount(): void } | { skip: string } {
  const dir = mkdtempSync(join(tmpdir(), "rung-chaos-disk-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${sizeMiB}m`, "tmpfs", dir], { stdio: "pipe" });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    return {
      skip: `cannot mount a tmpfs to fill (${(err as Error).message.split("\n")[0]}); run the suite as root to include it`,
    };
  }
  return {
    dir,
    unmount() {
      execFileSync("umount", ["-l", dir], { stdio: "pipe" });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes until the file system says ENOSPC; returns the bytes written. */
function fill(file: string): number {
  const fd = openSync(file, "w");
  const chunk = Buffer.alloc(64 * 1024, 1);
  let n = 0;
  try {
    for (;;) n += writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
  return n;
}

describe("chaos 7: resource edges", () => {
  it("a full disk fails the trials that need it, with the reason, and the study completes once space is back", async ({
    nats,
    openChaos,
    skip,
  }) => {
    const disk = mountTmpfs(8);
    if ("skip" in disk) {
      console.warn(`SKIPPED chaos 7a: ${disk.skip}`);
      skip();
      return;
    }
    // Closed here, before the disk is unmounted, as well as after the test.
    let mesh: ChaosMesh | undefined;
    try {
      const m = await openChaos({ scenario: "7a disk full", url: nats.url, study: "diskfull" });
      mesh = m;
      for (const name of ["a1", "a2"]) {
        mkdirSync(join(disk.dir, "work", name), { recursive: true });
        m.startAgent(name, ["--workdir", join(disk.dir, "work", name), "--state-dir", join(disk.dir, "state", name)]);
      }
      await sleep(1500); // the agents are up and have made their directories
      const filler = join(disk.dir, "filler");
      const bytes = fill(filler);
      const f = m.fault({
        kind: "disk full",
        target: "agents' work and state directories",
        from: "cleared",
        recovered: ({ event: e }) => e.type === "ended" && e.status === "completed",
      });
      m.startStudy(
        chaosSpec("diskfull", {
          qualities: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
          scheduler: "fifo",
          maxT: 4,
          epochMs: 200,
          maxConcurrent: 2,
          retries: 1,
          flags: ["--mode", "disk"],
        }),
      );
      await m.waitForEvents(
        "two trials to fail for want of space",
        (evs) => evs.filter(({ event: e }) => e.type === "ended" && e.status === "failed").length >= 2,
        60_000,
      );
      rmSync(filler);
      f.clearedAt = Date.now();
      m.notes.push(`filled ${Math.round(bytes / 1024)} KiB of an 8 MiB tmpfs, freed it after two trials had failed`);
      const r = await m.finish({ faults: "tmpfs under the agents' --workdir and --state-dir filled to ENOSPC, freed later" });
      expectSound(r, { outcome: "completed", trials: 6 });
      const failed = [...r.ended.values()].filter((e) => e.status === "failed");
      const completed = [...r.ended.values()].filter((e) => e.status === "completed");
      expect(failed.length).toBeGreaterThanOrEqual(2);
      for (const e of failed) expect(e.reason).toMatch(/ENOSPC|no space left/i);
      expect(completed.length).toBeGreaterThanOrEqual(1);
      expect(failed.length + completed.length).toBe(6);
      // Neither agent fell over: both ran to the end and exited cleanly when told to.
      expect(r.agentStops.map((a) => a.agent).sort()).toEqual(["a1", "a2"]);
    } finally {
      await mesh?.close();
      disk.unmount();
    }
  });

  it("helpers a trial leaves behind die with its process group, however the trial ends", async ({ nats, openChaos }) => {
    const m = await openChaos({ scenario: "7b leftover child processes", url: nats.url, study: "orphans" });
    m.startAgents(2);
    m.startStudy(
      chaosSpec("orphans", {
        qualities: [0.9, 0.2, 0.95, 0.1, 0.8],
        maxT: 9,
        epochMs: 300,
        maxConcurrent: 2,
        flags: ["--mode", "orphan"],
      }),
    );
    // Kill -9 the agent of a running trial: its helper must not outlive it for long.
    const v = await m.waitForEvents("a trial mid-run", (evs) => runningAttempts(evs, 1)[0]);
    await m.killAgentRunning(v);
    await sleep(1000);
    const restartedAt = Date.now();
    m.startAgent(v.agent);
    const r = await m.finish({
      faults: "5 trials that each leave a helper deaf to SIGHUP and SIGTERM; one agent killed with SIGKILL mid-trial",
    });
    // How long each attempt's helpers outlived the trial itself: the group goes with the trial; after a
    // SIGKILL of the agent, the helper goes when an agent starts again on that state directory.
    const late: string[] = [];
    let reaped = "";
    for (const w of r.watcher.windows().values()) {
      const leader = w.procs.find((p) => p.leader);
      const helpers = w.procs.filter((p) => !p.leader);
      if (!leader || helpers.length === 0) continue;
      for (const h of helpers) {
        const dead = h.deadAt ?? Date.now();
        if (w.trial === v.trial && w.attempt === v.attempt) {
          reaped = `the helper of the killed agent's trial died ${dead - restartedAt} ms after the agent was started again`;
          if (dead - restartedAt > 5000) late.push(`${w.trial}#${w.attempt}: ${reaped}`);
          continue;
        }
        const after = dead - (leader.deadAt ?? Date.now());
        if (after > 1000) late.push(`${w.trial}#${w.attempt}: helper ${h.pid} outlived the trial by ${after} ms`);
      }
    }
    m.notes.push(...late, ...(reaped ? [reaped] : []));
    expect(late).toEqual([]);
    expect(reaped).not.toBe("");
    expectSound(r, { outcome: "completed", trials: 5 });
    // Both ways a trial ends by itself were taken: to completion, and stopped by the scheduler.
    const statuses = new Set([...r.ended.values()].map((e) => e.status));
    expect(statuses).toEqual(new Set(["completed", "stopped"]));
  });
});
