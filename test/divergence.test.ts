import { rungAgents, uniquePrefix } from "@rung/testkit";
import { describe, expect } from "vitest";
import { curveSpec, it, of, run, streamOf } from "./scheduler-helpers.js";

/** Divergence is a result: with `diverged` in the spec a trial whose metric blows up stops at once. */

function spec(name: string, extra: Record<string, unknown>): string {
  return curveSpec(name, {
    space: { quality: 0.8, diverge: { grid: [3, 0] } },
    scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 2, max_t: 8 },
    epochMs: 100,
    args: "--diverge-at {diverge}",
    extra,
  });
}

describe("divergence", () => {
  it("stops a trial whose metric turns NaN at once when the spec asks, and says 'diverged at epoch 3'; Ray's ASHA alone lets it run", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const study = await run(nats.url, prefix, ["study", "run", spec("blowup", { diverged: {} })], procs);
    expect(study.child.exitCode, study.out()).toBe(0);
    const evs = (await streamOf(nats.url, prefix, "blowup")).map((s) => s.event);
    const ended = new Map(of(evs, "ended").map((e) => [e.trial, e]));
    // t0001 has diverge 3: its metric is NaN from epoch 3.
    expect(ended.get("t0001")).toMatchObject({ status: "stopped", reason: "diverged at epoch 3" });
    expect(of(evs, "report").filter((r) => r.trial === "t0001").length).toBeLessThanOrEqual(4);
    expect(ended.get("t0002")?.status).toBe("completed");
    const status = await run(nats.url, prefix, ["study", "status", "blowup"], procs);
    expect(status.out()).toMatch(/t0001 .*diverged@3/);

    // Without `diverged`, Ray-identical ASHA never stops on NaN: the same trial runs to max_t.
    const ray = await run(nats.url, prefix, ["study", "run", spec("raylike", {})], procs);
    expect(ray.child.exitCode, ray.out()).toBe(0);
    const rayEvs = (await streamOf(nats.url, prefix, "raylike")).map((s) => s.event);
    expect(
      Math.max(
        ...of(rayEvs, "report")
          .filter((r) => r.trial === "t0001")
          .map((r) => r.metrics.epoch ?? 0),
      ),
    ).toBe(8);
  });
});
