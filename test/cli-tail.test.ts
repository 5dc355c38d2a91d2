import { connectNats, encode } from "@rung/protocol";
import { startNats, type TestProcess, uniquePrefix, waitFor } from "@rung/testkit";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { cli, gpuMessage, gpuSample, trialEvent } from "./telemetry-helpers.js";

/**
 * Issue 13, items 7, 11 and 12: `rung tail` as a user runs it — printing history and exiting
 * (`--no-follow`), saying that it waits for a study or agent that does not exist yet, and saying so
 * when its NATS connection drops and comes back.
 */

const parse = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

function exitWithin(p: TestProcess, ms: number): Promise<number | null | "running"> {
  return Promise.race([p.exited, new Promise<"running">((r) => setTimeout(() => r("running"), ms))]);
}

describe("rung tail --no-follow", () => {
  it("prints the stored history, in time order, and exits", async ({ mesh, procs }) => {
    const { names, js, flags } = mesh;
    const t0 = Date.now() - 20 * 60_000;
    await js.publish(
      names.subjects.agentEvents("a", "t1", "box1"),
      encode(trialEvent("started", "a", "t1", t0 + 500, { attempt: 1, agent: "box1", pid: 1, gpus: [0] })),
    );
    await js.publish(
      names.subjects.agentEvents("a", "t1", "box1"),
      encode(
        trialEvent("report", "a", "t1", t0 + 2500, {
          attempt: 1,
          agent: "box1",
          seq: 0,
          metrics: { epoch: 1, val_acc: 0.5 },
        }),
      ),
    );
    for (let s = 0; s < 4; s++) {
      await js.publish(
        names.subjects.telemetry("box1"),
        encode(gpuMessage("box1", t0 + s * 1000, [gpuSample(0, 60 + s, "a", "t1")])),
      );
    }

    // As a script would: the last hour, as JSON, and nothing after that.
    const tail = cli(["tail", ...flags, "--since", "1h", "--json", "--no-follow"]);
    procs.push(tail);
    expect(await exitWithin(tail, 20_000), tail.stderr()).toBe(0);
    const objs = parse(tail.lines());
    expect(objs.map((o) => (o.kind === "gpu" ? `gpu ${o.util}` : `${o.event}`))).toEqual([
      "gpu 60",
      "started",
      "gpu 61",
      "gpu 62",
      "report",
      "gpu 63",
    ]);

    // Without --since: all that is stored; a filter applies as when following.
    const all = cli(["tail", ...flags, "--study", "b", "--no-follow"]);
    procs.push(all);
    expect(await exitWithin(all, 20_000)).toBe(0);
    expect(all.lines()).toEqual([]);
    expect(all.stderr()).toContain("rung tail: no study b in this mesh (yet)");
    // As text, the same history.
    const text = cli(["tail", ...flags, "--no-follow"]);
    procs.push(text);
    expect(await exitWithin(text, 20_000)).toBe(0);
    expect(text.lines()).toHaveLength(6);
    expect(text.lines()[1]).toMatch(/▶ a\/t1 started on box1 gpu 0 \(attempt 1\)$/);
    expect(text.lines()[4]).toMatch(/· a\/t1 epoch 1 val_acc 0\.5000$/);
  });
});

describe("rung tail for a study or agent not there yet", () => {
  it("says it is waiting, and when the study or agent turns up", async ({ mesh, procs }) => {
    const { names, nc, js, flags } = mesh;
    const byStudy = cli(["tail", ...flags, "--study", "later"]);
    const byAgent = cli(["tail", ...flags, "--agent", "box9", "--json"]);
    procs.push(byStudy, byAgent);
    await waitFor("the study notice", () =>
      byStudy.stderr().includes("rung tail: waiting for study later — none by that name yet"),
    );
    await waitFor("the agent notice", () =>
      byAgent.stderr().includes("rung tail: waiting for agent box9 — none by that name yet"),
    );

    await js.publish(
      names.subjects.agentEvents("later", "t0001", "box9"),
      encode(trialEvent("started", "later", "t0001", Date.now(), { attempt: 1, agent: "box9", pid: 1, gpus: [0] })),
    );
    await waitFor("the study's first line", () => byStudy.lines().some((l) => /▶ later\/t0001 started on box9/.test(l)));
    await waitFor("the study notice", () => byStudy.stderr().includes("rung tail: study later is here"));
    await waitFor(
      "the agent's first line",
      () => {
        nc.publish(names.subjects.telemetry("box9"), encode(gpuMessage("box9", Date.now(), [gpuSample(0, 42, null, null)])));
        return parse(byAgent.lines()).some((o) => o.kind === "gpu" && o.agent === "box9");
      },
      10_000,
      200,
    );
    expect(byAgent.stderr()).toContain("rung tail: agent box9 is here");

    // A study that exists is not waited for.
    const known = cli(["tail", ...flags, "--study", "later"]);
    procs.push(known);
    await new Promise((r) => setTimeout(r, 1500));
    expect(known.stderr()).not.toContain("waiting");
    for (const p of [byStudy, byAgent, known]) expect(await p.stop()).toBe(0);
  });
});

describe("rung tail across a NATS outage", () => {
  it("says disconnected, then reconnected, and keeps following", async ({ procs }) => {
    // A server of its own: the test restarts it.
    const nats = await startNats();
    const prefix = uniquePrefix();
    const nc = await connectNats({ url: nats.url, name: "tail-outage-publisher" });
    try {
      const tail = cli(["tail", "--nats", nats.url, "--prefix", prefix]);
      procs.push(tail);
      const gpu = (util: number) =>
        nc.publish(`${prefix}.telemetry.box1`, encode(gpuMessage("box1", Date.now(), [gpuSample(0, util, null, null)])));
      await waitFor(
        "a live line",
        () => {
          gpu(11);
          return tail.lines().some((l) => l.includes(" 11%"));
        },
        15_000,
        200,
      );

      await nats.restart();
      await waitFor("the disconnect line", () =>
        tail.lines().some((l) => /\[rung tail: disconnected from \S+ — reconnecting/.test(l)),
      );
      await waitFor(
        "the reconnect line",
        () => tail.lines().some((l) => /\[rung tail: reconnected to \S+ after \d+\.\d s\]/.test(l)),
        20_000,
      );
      await waitFor(
        "a live line after the outage",
        () => {
          gpu(22);
          return tail.lines().some((l) => l.includes(" 22%"));
        },
        15_000,
        200,
      );
      const lines = tail.lines();
      const down = lines.findIndex((l) => l.includes("disconnected from"));
      const up = lines.findIndex((l) => l.includes("reconnected to"));
      expect(down).toBeGreaterThan(lines.findIndex((l) => l.includes(" 11%")));
      expect(up).toBeGreaterThan(down);
      expect(lines.findIndex((l) => l.includes(" 22%"))).toBeGreaterThan(up);
      expect(await tail.stop()).toBe(0);
    } finally {
      await nc.close();
      await nats.destroy();
    }
  });
});
