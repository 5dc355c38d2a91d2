import { decideStudy, generateTrials, loadSpec } from "@rung/coordinator";
import { rungAgents, uniquePrefix } from "@rung/testkit";
import { describe, expect } from "vitest";
import { curveSpec, it, of, run, streamOf } from "./scheduler-helpers.js";

/**
 * Search that learns from the study (issue 15) end to end, on a real nats-server with real agents:
 * TPE draws trials from the results so far and those draws repeat from the event stream;
 * learning-curve stopping stops curves that cannot catch up and its decisions replay from the stream.
 * The curve fixture's metric is quality·(1 − 1/(epoch+1)), so a trial's quality is its final value.
 */

describe("model-based search and learning-curve stopping", () => {
  it("search.algorithm tpe: trials after the startup ones are drawn by the model from the results, go where the results are good, and draw again the same from the stream", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const file = curveSpec("tpe", {
      space: {},
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 3 },
      epochMs: 40,
      extra: {
        search: {
          algorithm: "tpe",
          samples: 24,
          startup_trials: 6,
          seed: 7,
          space: { quality: { uniform: [0.05, 1] }, lr: { loguniform: [1e-4, 0.1] }, opt: { choice: ["sgd", "adam"] } },
        },
      },
    });
    const study = await run(nats.url, prefix, ["study", "run", file], procs);
    expect(study.child.exitCode, study.out()).toBe(0);
    const evs = (await streamOf(nats.url, prefix, "tpe")).map((s) => s.event);
    const created = of(evs, "created");
    expect(created).toHaveLength(24);
    const startup = created.filter((c) => c.sampledBy === undefined);
    const drawn = created.filter((c) => c.sampledBy === "tpe");
    // The startup trials are the plan's random draws (t0001..t0006, and any created before six trials
    // had results); every later one is the model's.
    const plan = new Map(generateTrials(await loadSpec(file)).map((p) => [p.trial, p.params]));
    for (const c of startup) expect(c.params).toEqual(plan.get(c.trial));
    expect(
      startup
        .map((c) => c.trial)
        .sort()
        .slice(0, 6),
    ).toEqual(["t0001", "t0002", "t0003", "t0004", "t0005", "t0006"]);
    expect(drawn.length).toBeGreaterThanOrEqual(12);
    for (const c of drawn) expect(c.basis).toBeGreaterThan(0);
    for (const c of created) {
      expect(c.params.quality).toBeGreaterThanOrEqual(0.05);
      expect(c.params.quality).toBeLessThan(1);
      expect(["sgd", "adam"]).toContain(c.params.opt);
    }
    // The model goes where the results are good: most of its draws beat the median of the random ones.
    const q = (c: (typeof created)[number]) => c.params.quality as number;
    const startupMedian = [...startup.map(q)].sort((a, b) => a - b)[3] as number;
    expect(drawn.filter((c) => q(c) > startupMedian).length).toBeGreaterThan(drawn.length / 2);

    // Seeded and reproducible: every draw comes out the same when drawn again from the stream.
    const replay = await run(nats.url, prefix, ["replay", "--study", "tpe"], procs);
    expect(replay.child.exitCode, replay.out()).toBe(0);
    expect(replay.out()).toContain(
      `sampling: ${drawn.length} trials drawn by tpe; drawn again from the event stream, ${drawn.length} of them get the same parameters`,
    );

    // What another stopping rule would have spent on this study's own results.
    const other = await run(
      nats.url,
      prefix,
      ["replay", "--study", "tpe", "--scheduler", "curve", "--probability", "0.2"],
      procs,
    );
    expect(other.child.exitCode, other.out()).toBe(0);
    expect(other.out()).toMatch(
      /replayed with curve \(grace_period 1, reduction_factor 3, max_t 3, probability 0\.2\d*, top_k 1\)/,
    );
    const spent = /these settings spend (\d+) epochs \(the live run spent (\d+)\)/.exec(other.out());
    expect(Number(spent?.[1])).toBeLessThan(Number(spent?.[2]));
  });

  it("scheduler curve: stops the curves that cannot catch the best by their extrapolation, keeps the best, and replays every decision from the stream", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const file = curveSpec("lce", {
      // Good trials come first and one at a time, so the hopeless ones meet three finished curves
      // (before that, the rule is the median one, and says so).
      space: { quality: { grid: [0.9, 0.92, 0.88, 0.3, 0.2, 0.95, 0.15, 0.35] } },
      scheduler: { type: "curve", time_attr: "epoch", max_t: 9, grace_period: 1, reduction_factor: 3 },
      epochMs: 40,
      extra: { max_concurrent: 1 },
    });
    const study = await run(nats.url, prefix, ["study", "run", file], procs);
    expect(study.child.exitCode, study.out()).toBe(0);
    const stored = await streamOf(nats.url, prefix, "lce");
    const evs = stored.map((s) => s.event);
    const ended = new Map(of(evs, "ended").map((e) => [e.trial, e]));
    const params = new Map(of(evs, "created").map((c) => [c.trial, c.params.quality as number]));
    // The best configuration ran to max_t; every hopeless one (quality ≤ 0.35) was stopped early.
    const best = [...params].sort((a, b) => b[1] - a[1])[0]?.[0] as string;
    expect(ended.get(best)?.status).toBe("completed");
    const curveStops = of(evs, "decision").filter((d) => d.decision === "STOP" && d.by === "curve" && d.t < 9);
    expect(curveStops.length).toBeGreaterThan(0);
    // Each stopped trial could not beat a trial that ran before it (top_k 1: the reference is the best).
    const order = [...params.keys()];
    for (const d of curveStops) {
      const earlier = order.slice(0, order.indexOf(d.trial)).map((t) => params.get(t) as number);
      expect(params.get(d.trial)).toBeLessThan(Math.max(...earlier));
    }
    const lastEpoch = (trial: string) =>
      Math.max(
        ...of(evs, "report")
          .filter((r) => r.trial === trial)
          .map((r) => r.metrics.epoch ?? 0),
      );
    for (const [trial, quality] of params) if (quality <= 0.35) expect(lastEpoch(trial)).toBeLessThan(9);

    // Decisions are a pure function of the stream: the replay decides exactly what the live run did.
    const spec = await loadSpec(file);
    const decided = decideStudy(spec, stored);
    const replayed = decided.map((d) => `${d.decision} ${d.trial}@${d.t} ${d.by}`);
    const live = of(evs, "decision").map((d) => `${d.decision} ${d.trial}@${d.t} ${d.by}`);
    expect(replayed).toEqual(live);
    // Once three curves have finished, a stop says how likely the trial was to beat the best.
    const why = decided.filter((d) => d.by === "curve" && d.decision === "STOP").map((d) => `${d.trial}: ${d.reason}`);
    expect(
      why.some((r) => /P\(beat [\d.]+ at 9\)/.test(r)),
      why.join("\n"),
    ).toBe(true);
  });
});
