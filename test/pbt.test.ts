import { join } from "node:path";
import { decideStudy, loadSpec } from "@rung/coordinator";
import type { TrialEvent } from "@rung/protocol";
import { REPO, rungAgents, uniquePrefix } from "@rung/testkit";
import { describe, expect } from "vitest";
import { curveSpec, it, of, run, streamOf } from "./scheduler-helpers.js";

/**
 * Population-based training end to end: a trial of the bottom quantile stops (EXPLOIT), goes on from a
 * top trial's checkpoint — restored by whichever agent takes its next attempt — with perturbed
 * parameters, and the report shows each trial's lineage; the decisions replay from the stream.
 */

/** Each exploit: the donor, and the checkpoint the trial's next attempt started from. */
function exploits(evs: TrialEvent[]) {
  return of(evs, "queued")
    .filter((q) => q.exploitOf !== undefined)
    .map((q) => ({
      trial: q.trial,
      attempt: q.attempt,
      donor: q.exploitOf as string,
      params: q.params ?? {},
      resumedFrom: of(evs, "started").find((s) => s.trial === q.trial && s.attempt === q.attempt)?.resumedFrom ?? null,
    }));
}

describe("population-based training", () => {
  it("the bottom quantile goes on from the top's checkpoints with perturbed parameters, and replays", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 4));
    const file = curveSpec("pbt", {
      space: { quality: { grid: [0.2, 0.4, 0.6, 0.8] } },
      scheduler: {
        type: "pbt",
        time_attr: "epoch",
        perturbation_interval: 2,
        quantile_fraction: 0.25,
        resample_probability: 0,
        max_t: 10,
        hyperparam_mutations: ["quality"],
      },
      epochMs: 250,
      args: "--checkpoint",
    });
    const study = await run(nats.url, prefix, ["study", "run", file], procs);
    expect(study.child.exitCode, study.out()).toBe(0);
    const stored = await streamOf(nats.url, prefix, "pbt");
    const evs = stored.map((s) => s.event);

    const xs = exploits(evs);
    expect(xs.length).toBeGreaterThanOrEqual(1);
    const created = new Map(of(evs, "created").map((c) => [c.trial, c.params.quality as number]));
    // Each exploit as its decision said: the k-th EXPLOIT of a trial is its k-th attempt from a donor.
    const decided = of(evs, "decision").filter((d) => d.decision === "EXPLOIT");
    // The weights a trial runs on: its own snapshots, or — just after it exploited another and before it
    // stored one — those of the trials it went on from.
    const weightsOf = (trial: string, seen = new Set<string>()): Set<string> => {
      seen.add(trial);
      for (const y of xs) if (y.trial === trial && !seen.has(y.donor)) weightsOf(y.donor, seen);
      return seen;
    };
    for (const x of xs) {
      // From the donor's weights (never from scratch), with the donor's quality moved one place in the grid.
      const from = x.resumedFrom?.object.split("/")[1];
      expect(from, `${x.trial} restored ${x.donor}'s checkpoint`).toBeDefined();
      expect([...weightsOf(x.donor)]).toContain(from);
      expect([0.2, 0.4, 0.6, 0.8]).toContain(x.params.quality);
      const k = xs.filter((y) => y.trial === x.trial).indexOf(x);
      const d = decided.filter((y) => y.trial === x.trial)[k];
      expect([d?.donor, d?.params]).toEqual([x.donor, x.params]);
    }
    // The first exploit takes the checkpoint of a trial that ranked above it (of those that had
    // reported at that moment, which depends on timing): a better curve, as the qualities say. (Later
    // ones compare trials whose qualities earlier exploits changed.)
    const first = xs[0] as (typeof xs)[number];
    expect(created.get(first.donor) as number).toBeGreaterThan(created.get(first.trial) as number);
    // The trial's own terminal says where it went on from.
    const log = await run(nats.url, prefix, ["logs", `pbt/${first.trial}`, "--attempt", String(first.attempt)], procs);
    expect(log.out()).toMatch(
      new RegExp(`\\[rung\\] resuming from the checkpoint at epoch=${first.resumedFrom?.t} \\(attempt \\d+ on a\\d`),
    );
    expect(log.out()).toContain(`resumed at epoch ${first.resumedFrom?.t}`);

    // Every trial ran to max_t; the report and status show the lineage.
    const status = await run(nats.url, prefix, ["study", "status", "pbt"], procs);
    expect(status.out()).toMatch(/population-based training \(exploits\):/);
    expect(status.out()).toMatch(new RegExp(`${first.trial} at epoch=\\d+: went on from ${first.donor}'s checkpoint`));
    const report = JSON.parse((await run(nats.url, prefix, ["study", "report", "pbt", "--json"], procs)).out()) as {
      trials: { trial: string; phase: string; lastT: number; lineage: { donor: string }[] }[];
    };
    expect(report.trials.every((t) => t.phase === "completed" && t.lastT === 10)).toBe(true);
    expect(report.trials.find((t) => t.trial === first.trial)?.lineage[0]?.donor).toBe(first.donor);

    // Decisions, exploits included, are a pure function of the stream.
    const spec = await loadSpec(file);
    const live = of(evs, "decision").map(
      (d) => `${d.decision} ${d.trial}@${d.t} ${d.donor ?? ""} ${JSON.stringify(d.params ?? {})}`,
    );
    const replayed = decideStudy(spec, stored).map(
      (d) => `${d.decision} ${d.trial}@${d.t} ${d.exploit?.donor ?? ""} ${JSON.stringify(d.exploit?.params ?? {})}`,
    );
    expect(replayed).toEqual(live);
  });

  it("runs the digits example with configs/digits-pbt.yaml: real PyTorch weights go on with a perturbed learning rate", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 4));
    const study = await run(
      nats.url,
      prefix,
      ["study", "run", join(REPO, "configs", "digits-pbt.yaml"), "--samples", "4"],
      procs,
    );
    expect(study.child.exitCode, study.out()).toBe(0);
    const evs = (await streamOf(nats.url, prefix, "digits-pbt")).map((s) => s.event);
    const xs = exploits(evs);
    expect(xs.length).toBeGreaterThanOrEqual(1);
    const x = xs[0] as (typeof xs)[number];
    const log = await run(nats.url, prefix, ["logs", `digits-pbt/${x.trial}`, "--attempt", String(x.attempt)], procs);
    // The trainer loaded the donor's weights and took the perturbed learning rate.
    expect(log.out()).toMatch(/resumed from .*last\.pt at epoch \d+ \(attempt \d+\), lr [\d.e-]+ -> [\d.e-]+/);
    const status = JSON.parse((await run(nats.url, prefix, ["study", "status", "digits-pbt", "--json"], procs)).out()) as {
      trials: { state: string; lastT: number }[];
      best: { value: number };
    };
    expect(status.trials.every((t) => t.state === "completed" && t.lastT === 8)).toBe(true);
    expect(status.best.value).toBeGreaterThan(0.9);
  });
});
