import { compileSpec, StudyWatch, specHash, specToInput } from "@rung/coordinator";
import { encode, type StudyRecord, type TrialEvent } from "@rung/protocol";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { gpuMessage, gpuSample, trialEvent } from "./telemetry-helpers.js";

/**
 * `rung ui`'s StudyWatch against a real nats-server: a finished study written by hand (one trial,
 * three minutes) and five minutes of its agent's telemetry. The watch keeps a bounded window of it.
 */

describe("rung ui's study watch", () => {
  it("keeps only the telemetry window it is told to (and all of it for the HTML report)", async ({ mesh }) => {
    const { names, js, resources: res } = mesh;
    const spec = compileSpec({
      name: "long",
      command: "python3 train.py --lr {lr}",
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { lr: { grid: [0.1] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 3 },
      resources: { gpus: 1 },
    });
    const t0 = Date.now() - 600_000;
    const at = (s: number) => t0 + s * 1000;
    const record: StudyRecord = {
      v: 1,
      type: "study",
      name: "long",
      spec: specToInput(spec),
      specHash: specHash(spec),
      createdAt: t0,
      state: "completed",
      updatedAt: t0,
    };
    await res.studies.put(names.subjects.studyKey("long"), encode(record));
    const evs: TrialEvent[] = [
      trialEvent("created", "long", "t1", at(0), { params: { lr: 0.1 }, bracket: 0 }),
      trialEvent("queued", "long", "t1", at(0), { attempt: 1 }),
      trialEvent("claimed", "long", "t1", at(1), { attempt: 1, agent: "box1", gpus: [0] }),
      trialEvent("started", "long", "t1", at(1), { attempt: 1, agent: "box1", pid: 1, gpus: [0] }),
      ...[1, 2, 3].map((e) =>
        trialEvent("report", "long", "t1", at(e * 60), {
          attempt: 1,
          agent: "box1",
          seq: e,
          metrics: { epoch: e, val_acc: 0.5 + e / 10 },
        }),
      ),
      trialEvent("finished", "long", "t1", at(181), {
        attempt: 1,
        agent: "box1",
        status: "completed",
        exitCode: 0,
        signal: null,
        reason: "completed",
        logTail: [],
      }),
      trialEvent("ended", "long", "t1", at(181), { status: "completed", reason: "completed", attempts: 1 }),
    ];
    for (const e of evs) await js.publish(names.subjects.eventSubject(e), encode(e));
    // One message a second, from 30 s before the study to 40 s after it.
    for (let s = -30; s <= 220; s++) {
      const g = s >= 1 && s < 181 ? gpuSample(0, 80, "long", "t1") : gpuSample(0, 0, null, null);
      await js.publish(names.subjects.telemetry("box1"), encode(gpuMessage("box1", at(s), [g])));
    }

    expect(await StudyWatch.eventCount(mesh.nc, names, "long")).toBe(evs.length);

    // A minute before the newest sample (at 220 s): 160 s to 220 s.
    const windowed = await StudyWatch.open(mesh.nc, names, "long", { telemetryWindowMs: 60_000 });
    try {
      expect(windowed.telemetryHeld).toBe(61);
      const summary = windowed.summary();
      expect(summary.telemetryWindowMs).toBe(60_000);
      expect(summary.report.telemetry.gpuMessages).toBe(61);
    } finally {
      await windowed.close();
    }
    const capped = await StudyWatch.open(mesh.nc, names, "long", { telemetryWindowMs: 60_000, maxTelemetry: 20 });
    try {
      expect(capped.telemetryHeld).toBe(20);
    } finally {
      await capped.close();
    }
    // The HTML report's watch: everything read (here all 251 messages, stored just now).
    const whole = await StudyWatch.open(mesh.nc, names, "long", { telemetryWindowMs: null });
    try {
      expect(whole.telemetryHeld).toBe(251);
      expect(whole.summary().telemetryWindowMs).toBeNull();
    } finally {
      await whole.close();
    }
  });
});
