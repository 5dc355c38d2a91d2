import { encode } from "@rung/protocol";
import { waitFor } from "@rung/testkit";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { cli, gpuMessage, gpuSample, trialEvent } from "./telemetry-helpers.js";

/** `rung tail` as a real child process, fed telemetry and events published by hand. Build first (pnpm build). */

const parse = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

describe("rung tail", () => {
  it("follows live telemetry and trial events as newline-delimited JSON", async ({ mesh, procs }) => {
    const { names, nc, js } = mesh;
    const tail = cli(["tail", ...mesh.flags, "--json"]);
    procs.push(tail);
    const telemetry = (util: number) =>
      nc.publish(
        names.subjects.telemetry("box1"),
        encode(gpuMessage("box1", Date.now(), [gpuSample(0, util, "digits", "t0001"), gpuSample(1, 0, null, null)])),
      );
    // Live is a core subscription: it sees what is published after it subscribed.
    await waitFor(
      "the first GPU lines",
      () => {
        telemetry(40);
        return tail.lines().length >= 2;
      },
      15_000,
      100,
    );

    const ts = Date.now();
    const publish = (ev: ReturnType<typeof trialEvent>) => js.publish(names.subjects.eventSubject(ev), encode(ev));
    await publish(trialEvent("started", "digits", "t0001", ts, { attempt: 1, agent: "box1", pid: 7, gpus: [0] }));
    await publish(
      trialEvent("report", "digits", "t0001", ts + 1, {
        attempt: 1,
        agent: "box1",
        seq: 0,
        metrics: { epoch: 2, val_acc: 0.91, data_wait_s: 3, compute_s: 1 },
      }),
    );
    await publish(
      trialEvent("decision", "digits", "t0001", ts + 2, {
        attempt: 1,
        seq: 0,
        t: 2,
        value: 0.91,
        decision: "STOP",
        by: "asha",
        rung: 2,
        cutoff: 0.95,
      }),
    );
    await publish(
      trialEvent("finished", "digits", "t0001", ts + 3, {
        attempt: 1,
        agent: "box1",
        status: "stopped",
        exitCode: null,
        signal: "SIGTERM",
        reason: "scheduler-stop",
        logTail: [],
      }),
    );
    telemetry(25);
    await waitFor("the trial's lines and a GPU line after the report", () => {
      const objs = parse(tail.lines());
      return objs.some((o) => o.event === "stopped") && objs.some((o) => o.kind === "gpu" && o.util === 25);
    });
    const objs = parse(tail.lines());
    const gpus = objs.filter((o) => o.kind === "gpu");
    expect(gpus[0]).toMatchObject({ agent: "box1", gpu: 0, util: 40, memTotalMiB: 24_576, study: "digits", trial: "t0001" });
    expect(gpus[1]).toMatchObject({ gpu: 1, util: 0, study: null, trial: null });
    expect(gpus.find((o) => o.util === 25)).toMatchObject({ t: 2, metric: "val_acc", value: 0.91, dataWaitShare: 0.75 });
    expect(objs.filter((o) => o.kind === "trial").map((o) => o.event)).toEqual(["started", "report", "stopped", "finished"]);
    expect(objs.find((o) => o.event === "stopped")).toMatchObject({ rung: 2, by: "asha" });
    expect(await tail.stop()).toBe(0);
    expect(tail.stdout().toString()).not.toContain("\x1b[");
  });

  it("replays --since from the streams, in time order, filtered by study, then keeps following", async ({ mesh, procs }) => {
    const { names, js } = mesh;
    const t0 = Date.now() - 30_000;
    // Stored first: events of two studies, and samples of two agents.
    await js.publish(
      names.subjects.agentEvents("a", "t1", "box1"),
      encode(trialEvent("started", "a", "t1", t0 + 500, { attempt: 1, agent: "box1", pid: 1, gpus: [0] })),
    );
    await js.publish(
      names.subjects.agentEvents("b", "t9", "box2"),
      encode(trialEvent("started", "b", "t9", t0 + 600, { attempt: 1, agent: "box2", pid: 1, gpus: [0] })),
    );
    for (let s = 0; s < 5; s++) {
      await js.publish(
        names.subjects.telemetry("box1"),
        encode(gpuMessage("box1", t0 + s * 1000, [gpuSample(0, 50 + s, "a", "t1")])),
      );
      await js.publish(
        names.subjects.telemetry("box2"),
        encode(gpuMessage("box2", t0 + s * 1000, [gpuSample(0, 90, "b", "t9")])),
      );
    }
    const tail = cli(["tail", ...mesh.flags, "--study", "a", "--since", "5m"]);
    procs.push(tail);
    await waitFor("the replay", () => tail.lines().length >= 6);
    const replay = tail.lines();
    expect(replay).toHaveLength(6);
    expect(replay[0]).toMatch(/box1 +gpu0 .* 50% .*a\/t1$/);
    expect(replay[1]).toMatch(/▶ a\/t1 started on box1 gpu 0 \(attempt 1\)$/);
    expect(replay.slice(2).map((l) => l.match(/(\d+)%/)?.[1])).toEqual(["51", "52", "53", "54"]);
    expect(tail.stdout().toString()).not.toMatch(/box2|\x1b\[/);
    // and live after the replay
    await js.publish(names.subjects.telemetry("box1"), encode(gpuMessage("box1", Date.now(), [gpuSample(0, 77, "a", "t1")])));
    await waitFor("a live line", () => tail.lines().some((l) => l.includes(" 77%")));
    expect(await tail.stop()).toBe(0);
  });
});
