import { join } from "node:path";
import { decideStudy, loadSpec } from "@rung/coordinator";
import type { TrialEventOf } from "@rung/protocol";
import { REPO, rung, rungAgents, uniquePrefix, waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { curveSpec, it, of, run, streamOf } from "./scheduler-helpers.js";

/**
 * Promotion-based ASHA end to end: trials pause at each rung (a PAUSE decision, a stop with the
 * checkpoint kept), the best 1/rf of a rung is promoted — a new attempt that resumes from the
 * checkpoint on whichever agent is free — and the decisions replay from the stream.
 */

describe("promotion-based ASHA", () => {
  it("pauses every trial at its rung, resumes the best third from its checkpoint, and replays to the same decisions", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const qualities = [0.5, 0.9, 0.3, 0.95, 0.2, 0.7, 0.85, 0.4, 0.99];
    const file = curveSpec("promo", {
      space: { quality: { grid: qualities } },
      scheduler: { type: "promotion", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 9 },
      epochMs: 120,
      args: "--checkpoint",
    });
    const study = await run(nats.url, prefix, ["study", "run", file], procs);
    expect(study.child.exitCode, study.out()).toBe(0);
    const stored = await streamOf(nats.url, prefix, "promo");
    const evs = stored.map((s) => s.event);

    // Every trial paused at rung 1; the promoted ones went on, each time from their checkpoint.
    const pauses = of(evs, "decision").filter((d) => d.decision === "PAUSE");
    expect(new Set(pauses.filter((d) => d.rung === 1).map((d) => d.trial)).size).toBe(qualities.length);
    const promotions = of(evs, "queued").filter((q) => q.promotedTo !== undefined);
    expect(promotions.map((p) => p.promotedTo)).toEqual([3, 3, 3, 9]);
    for (const p of promotions) {
      const started = of(evs, "started").find((s) => s.trial === p.trial && s.attempt === p.attempt);
      // From its rung, or a little past it: the epoch it was in when the pause reached it is kept too.
      const rungBefore = p.promotedTo === 3 ? 1 : 3;
      expect(started?.resumedFrom?.t, `${p.trial} resumed from its checkpoint`).toBeGreaterThanOrEqual(rungBefore);
      expect(started?.resumedFrom?.t).toBeLessThan(p.promotedTo as number);
    }
    // Li et al.: the top third of 9 at rung 1 are the three best qualities; the best of those at 3 goes to 9.
    const byQuality = new Map(of(evs, "created").map((c) => [c.trial, c.params.quality as number]));
    expect(
      promotions
        .slice(0, 3)
        .map((p) => byQuality.get(p.trial))
        .sort(),
    ).toEqual([0.9, 0.95, 0.99]);
    expect(byQuality.get(promotions[3]?.trial as string)).toBe(0.99);

    // The best trial ran to max_t, the rest ended at their rung; no epoch was trained twice.
    const status = JSON.parse((await run(nats.url, prefix, ["study", "status", "promo", "--json"], procs)).out()) as {
      best: { value: number; t: number };
      trials: { trial: string; state: string; lastT: number }[];
    };
    expect(status.best.t).toBe(9);
    expect(status.best.value).toBeCloseTo(0.99 * (1 - 1 / 10), 6);
    expect(status.trials.filter((t) => t.state === "completed")).toHaveLength(1);
    expect(status.trials.filter((t) => t.state === "stopped")).toHaveLength(qualities.length - 1);
    for (const trial of byQuality.keys()) {
      const reported = of(evs, "report")
        .filter((r) => r.trial === trial)
        .map((r) => r.metrics.epoch);
      expect(new Set(reported).size, `${trial} trained no epoch twice`).toBe(reported.length);
    }

    // Decisions are a pure function of the stream (invariant 3).
    const spec = await loadSpec(file);
    const replayed = decideStudy(spec, stored).map((d) => `${d.decision} ${d.trial}@${d.t}`);
    const live = of(evs, "decision").map((d) => `${d.decision} ${d.trial}@${d.t}`);
    expect(replayed).toEqual(live);
  });

  it("runs the digits example with configs/digits-promotion.yaml, checkpointing and resuming real PyTorch training", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 3));
    const study = await run(
      nats.url,
      prefix,
      ["study", "run", join(REPO, "configs", "digits-promotion.yaml"), "--samples", "5"],
      procs,
    );
    expect(study.child.exitCode, study.out()).toBe(0);
    const evs = (await streamOf(nats.url, prefix, "digits-promotion")).map((s) => s.event);
    const promotions = of(evs, "queued").filter((q) => q.promotedTo !== undefined);
    expect(promotions.length).toBeGreaterThanOrEqual(2);
    // The trainer itself says it resumed from the restored checkpoint at its rung.
    const p = promotions[0] as TrialEventOf<"queued">;
    const log = await run(nats.url, prefix, ["logs", `digits-promotion/${p.trial}`, "--attempt", String(p.attempt)], procs);
    expect(log.out()).toMatch(/\[rung\] resuming from the checkpoint at epoch=1 /);
    expect(log.out()).toMatch(/resumed from .*last\.pt at epoch 1 \(attempt \d+\)/);
    const status = JSON.parse((await run(nats.url, prefix, ["study", "status", "digits-promotion", "--json"], procs)).out()) as {
      best: { value: number; t: number };
      trials: { state: string; lastT: number }[];
    };
    // 10 trials: 3 promoted from epoch 1 to 3, the best of those on to 9, where it completes.
    expect(status.trials.filter((t) => t.state === "completed").map((t) => t.lastT)).toEqual([9]);
    expect(status.best.value).toBeGreaterThan(0.9);
  });

  it("a stopped study ends its paused trials as cancelled instead of waiting for them", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 1));
    const file = curveSpec("halt", {
      space: { quality: { grid: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95] } },
      scheduler: { type: "promotion", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 9 },
      epochMs: 200,
      args: "--checkpoint",
    });
    const study = rung(["study", "run", file, "--nats", nats.url, "--prefix", prefix]);
    procs.push(study);
    // Two trials paused at rung 1 (their attempts ended), then the user stops the study.
    await waitFor(
      "two paused trials",
      async () =>
        of(
          (await streamOf(nats.url, prefix, "halt")).map((s) => s.event),
          "finished",
        ).filter((f) => f.reason.startsWith("scheduler-pause")).length >= 2,
      30_000,
      200,
    );
    await run(nats.url, prefix, ["study", "stop", "halt"], procs);
    const code = await Promise.race([study.exited, new Promise((r) => setTimeout(() => r("hung"), 30_000))]);
    expect(code, study.out()).toBe(5);
    const ended = of(
      (await streamOf(nats.url, prefix, "halt")).map((s) => s.event),
      "ended",
    );
    expect(ended.filter((e) => e.status === "cancelled" && /was paused at epoch 1/.test(e.reason)).length).toBeGreaterThanOrEqual(
      1,
    );
  });
});
