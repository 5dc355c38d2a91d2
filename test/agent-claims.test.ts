import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Kvm } from "@nats-io/kv";
import { listAdverts } from "@rung/agent";
import {
  decode,
  encode,
  LogChunkSchema,
  renderArgv,
  SCHEMA_VERSION,
  splitCommand,
  TelemetrySchema,
  type TrialEvent,
} from "@rung/protocol";
import { waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { it, type Mesh, makeOrder, NODE, writeTrials } from "./agent-helpers.js";

/** Messages still in the work stream (a work-queue stream keeps an order until it is acked or termed). */
async function ordersLeft(m: Mesh): Promise<number> {
  const { jetstreamManager } = await import("@nats-io/jetstream");
  const jsm = await jetstreamManager(m.nc);
  return (await jsm.streams.info(m.names.streams.work)).state.messages;
}

function putStop(m: Mesh, study: string, trial: string, rung: number | null = 3): Promise<number> {
  return new Kvm(m.nc)
    .open(m.names.buckets.control)
    .then((kv) =>
      kv.put(
        m.names.subjects.controlKey(study, trial),
        encode({ v: SCHEMA_VERSION, type: "stop", study, trial, reason: "scheduler-stop", by: "asha", rung, ts: Date.now() }),
      ),
    );
}

describe("claiming", () => {
  it("claims only with a free GPU, and runs the trial with the environment it needs", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    await m.agent({ name: "one", fakeGpus: 1 });
    const out = join(m.dir, "env.json");
    await m.publish(makeOrder({ study: "s", trial: "slow", argv: [NODE, t.sleep, "800"] }));
    await m.publish(
      makeOrder({
        study: "s",
        trial: "env",
        argv: [NODE, t.argv, out],
        params: { lr: 0.1, name: "x" },
        env: { STUDY_VAR: "from-the-spec" },
      }),
    );
    // A 2-GPU order has no pool on a 1-GPU agent: it stays queued.
    await m.publish(
      makeOrder({ study: "s", trial: "gang", pool: "gpu2", resources: { gpus: 2, cpus: 0 }, argv: [NODE, t.sleep, "1"] }),
    );
    const slowDone = await m.events.wait("finished", "slow");
    const envClaimed = await m.events.wait("claimed", "env");
    const envDone = await m.events.wait("finished", "env");
    expect(slowDone.status).toBe("completed");
    expect(envDone.status).toBe("completed");
    // Never two trials on the one GPU: the second is claimed after the first finished.
    expect(envClaimed.ts).toBeGreaterThanOrEqual(slowDone.ts);
    expect(envClaimed.gpus).toEqual([0]);
    const seen = JSON.parse(readFileSync(out, "utf8")) as { env: Record<string, string>; cwd: string };
    expect(seen.env).toMatchObject({
      CUDA_VISIBLE_DEVICES: "0",
      RUNG_STUDY: "s",
      RUNG_TRIAL: "env",
      RUNG_ATTEMPT: "1",
      STUDY_VAR: "from-the-spec",
    });
    expect(JSON.parse(seen.env.RUNG_PARAMS ?? "")).toEqual({ lr: 0.1, name: "x" });
    expect(seen.env.RUNG_CHECKPOINT_DIR).toBe(join(m.dir, "state", "one", "checkpoints", "s", "env"));
    expect(existsSync(seen.env.RUNG_CHECKPOINT_DIR ?? "")).toBe(true);
    expect(seen.env.PYTHONPATH?.split(":")[0]).toMatch(/packages\/agent\/python$/);
    expect(seen.env.RUNG_REPORT).toMatch(/\.sock$/);
    expect(seen.cwd).toBe(m.dir);
    expect(m.events.of("claimed", "gang")).toEqual([]);
    expect(await ordersLeft(m)).toBe(1);
  });

  it("runs gangs of 2 on a 4-GPU agent, never splitting a gang or sharing a GPU", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    const agent = await m.agent({ name: "four", fakeGpus: 4 });
    const gang = (trial: string, k: number) =>
      makeOrder({ study: "g", trial, pool: `gpu${k}`, resources: { gpus: k, cpus: 0 }, argv: [NODE, t.sleep, "2500"] });
    await m.publish(gang("x", 2));
    await m.publish(gang("y", 2));
    await m.publish(gang("all", 4));
    const done = await Promise.all(["x", "y", "all"].map((trial) => m.events.wait("finished", trial, 30_000)));
    expect(done.map((d) => d.status)).toEqual(["completed", "completed", "completed"]);
    const spans = ["x", "y", "all"].map((trial) => {
      const c = m.events.of("claimed", trial)[0] as TrialEvent & { gpus: number[] };
      const f = m.events.of("finished", trial)[0] as TrialEvent;
      return { trial, gpus: c.gpus, from: c.ts, to: f.ts };
    });
    expect(spans.map((s) => s.gpus.length)).toEqual([2, 2, 4]);
    for (const a of spans)
      for (const b of spans) {
        if (a === b || a.to <= b.from || b.to <= a.from) continue;
        // Overlapping in time: the GPU sets must be disjoint.
        expect(a.gpus.filter((g) => b.gpus.includes(g))).toEqual([]);
      }
    const [x, y] = spans;
    // The two 2-GPU gangs ran side by side on the four GPUs.
    expect(x && y && x.from < y.to && y.from < x.to).toBe(true);
    expect(agent.counters.ordersClaimed).toBe(3);
  });

  it("passes parameter values with ;, $() and spaces to argv literally", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    await m.agent();
    const out = join(m.dir, "argv.json");
    const pwned = join(m.dir, "pwned");
    const template = splitCommand(`${NODE} ${t.argv} {out} --name {name} --lr={lr} {sub}`);
    const params = { out, name: `x; touch ${pwned}`, lr: "0.1 && echo hi", sub: "$(touch pwned) `id` 'q'" };
    await m.publish(makeOrder({ study: "p", trial: "hostile", argv: renderArgv(template, params), params }));
    expect((await m.events.wait("finished", "hostile")).status).toBe("completed");
    const seen = JSON.parse(readFileSync(out, "utf8")) as { argv: string[] };
    expect(seen.argv).toEqual(["--name", `x; touch ${pwned}`, "--lr=0.1 && echo hi", "$(touch pwned) `id` 'q'"]);
    expect(existsSync(pwned)).toBe(false);
  });
});

describe("stopping", () => {
  it("kills a trial that ignores SIGTERM within grace + 2 s of the stop decision", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    await m.agent({ stopGrace: "1s" });
    await m.publish(makeOrder({ study: "s", trial: "stubborn", argv: [NODE, t.ignoreTerm] }));
    await m.events.wait("started", "stubborn");
    await new Promise((r) => setTimeout(r, 500)); // let it install its SIGTERM handler
    const stoppedAt = Date.now();
    await putStop(m, "s", "stubborn", 3);
    const f = await m.events.wait("finished", "stubborn", 10_000);
    expect(Date.now() - stoppedAt).toBeLessThan(1000 + 2000);
    expect(f).toMatchObject({ status: "stopped", reason: "scheduler-stop at t=3", signal: "SIGKILL", exitCode: null });
    await waitFor("the order to be acked", async () => (await ordersLeft(m)) === 0);
  });

  it("does not start a trial whose stop was decided before the order arrived", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    await m.agent();
    await putStop(m, "s", "late", null);
    await m.publish(makeOrder({ study: "s", trial: "late", argv: [NODE, t.sleep, "10000"] }));
    const f = await m.events.wait("finished", "late");
    expect(f).toMatchObject({ status: "stopped", reason: "scheduler-stop" });
    expect(m.events.of("started", "late")).toEqual([]);
    await waitFor("the order to be acked", async () => (await ordersLeft(m)) === 0);
  });

  it("drain with requeue stops the trial and hands the order back: the next agent runs attempt 2", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    const first = await m.agent({ name: "first" });
    await m.publish(makeOrder({ study: "s", trial: "moved", argv: [NODE, t.sleep, "30000", "100"] }));
    await m.events.wait("started", "moved");
    await first.drain("requeue");
    const stopped = await m.events.wait("finished", "moved");
    expect(stopped).toMatchObject({ attempt: 1, status: "preempted", reason: "preempted: agent-shutdown", agent: "first" });
    await first.close();
    expect(first.state).toBe("stopped");
    await m.agent({ name: "second" });
    const f = await m.events.wait("finished", "moved", 20_000, (e) => e.attempt === 2);
    expect(f).toMatchObject({ status: "completed", agent: "second" });
  });
});

describe("reporting, logs and failures", () => {
  it("publishes good report lines, counts garbage ones, and the trial still completes", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    const agent = await m.agent();
    const lines = [
      JSON.stringify({ epoch: 1, val_loss: "NaN", compute_s: 9, data_wait_s: 1 }),
      "this is not json",
      "[1, 2, 3]",
      JSON.stringify({ epoch: "two" }),
      "x".repeat(70_000),
      JSON.stringify({ epoch: 2, grad: "Infinity" }),
    ];
    await m.publish(makeOrder({ study: "r", trial: "noisy", argv: [NODE, t.report, JSON.stringify(lines)] }));
    const f = await m.events.wait("finished", "noisy");
    expect(f.status).toBe("completed");
    const reports = m.events.of("report", "noisy");
    expect(reports.map((r) => [r.seq, r.metrics.epoch])).toEqual([
      [0, 1],
      [1, 2],
    ]);
    expect(reports[0]?.metrics.val_loss).toBeNaN();
    expect(reports[1]?.metrics.grad).toBe(Number.POSITIVE_INFINITY);
    expect(agent.counters.malformedReportLines).toBe(4);
  });

  it("runs a real Python trial with rung_trial.py; fake GPU utilization follows its reports", async ({ newMesh }) => {
    const m = await newMesh();
    const agent = await m.agent({ name: "py", telemetryInterval: "200ms" });
    const script = join(m.dir, "trial.py");
    writeFileSync(
      script,
      `import time, rung_trial
class Slow:
    def __iter__(self):
        for i in range(4):
            time.sleep(0.02)
            yield i
assert rung_trial.params() == {"lr": 0.5}
for epoch in range(1, 4):
    for _ in rung_trial.timed(Slow()):
        time.sleep(0.06)
    rung_trial.report(epoch=epoch, val_loss=float("nan") if epoch == 2 else 1.0 / epoch, attempt=rung_trial.attempt())
time.sleep(1.5)
`,
    );
    const samples: number[] = [];
    const sub = m.nc.subscribe(m.names.subjects.telemetry("py"));
    void (async () => {
      for await (const msg of sub) {
        const r = decode(TelemetrySchema, msg.data);
        if (r.ok && r.value.type === "gpu" && r.value.gpus[0]?.trial === "py1" && m.events.of("report", "py1").length === 3)
          samples.push(r.value.gpus[0].utilizationGpu ?? -1);
      }
    })();
    await m.publish(makeOrder({ study: "py", trial: "py1", argv: ["/usr/bin/python3", script], params: { lr: 0.5 } }));
    const f = await m.events.wait("finished", "py1", 30_000);
    sub.unsubscribe();
    expect(f.status).toBe("completed");
    const reports = m.events.of("report", "py1");
    expect(reports.map((r) => r.metrics.epoch)).toEqual([1, 2, 3]);
    expect(reports[1]?.metrics.val_loss).toBeNaN();
    for (const r of reports) {
      expect(r.metrics.data_wait_s).toBeGreaterThan(0);
      expect(r.metrics.compute_s).toBeGreaterThan(r.metrics.data_wait_s as number);
    }
    // Busy share ~ 0.06 / (0.06 + 0.02) = 75 %, ±3 noise, a little more for timing slack.
    expect(samples.length).toBeGreaterThan(0);
    for (const u of samples) {
      expect(u).toBeGreaterThan(55);
      expect(u).toBeLessThan(90);
    }
    expect(agent.counters.malformedReportLines).toBe(0);
  });

  it("a crash finishes failed with the exit code and the last 50 lines; output reaches the logs stream and a file", async ({
    newMesh,
  }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    await m.agent({ name: "c" });
    await m.publish(makeOrder({ study: "f", trial: "crash", argv: [NODE, t.crash, "80", "3"] }));
    await m.publish(makeOrder({ study: "f", trial: "missing", argv: ["no-such-program-xyz", "--x"] }));
    const crash = await m.events.wait("finished", "crash");
    expect(crash).toMatchObject({ status: "failed", exitCode: 3, signal: null, reason: "exit code 3" });
    expect(crash.logTail).toHaveLength(50);
    expect(crash.logTail[0]).toBe("line 31");
    expect(crash.logTail[49]).toBe("line 80");
    // A program this box lacks is refused before anything starts, and handed back for another agent.
    const missing = await m.events.wait("rejected", "missing");
    expect(missing).toMatchObject({ reason: "cannot-run", attempt: 1 });
    expect(missing.detail).toMatch(/^program "no-such-program-xyz" not found or not executable on this agent's PATH/);
    expect(m.events.of("finished", "missing")).toEqual([]);
    await waitFor("the crash's order to be acked, the refused one to wait", async () => (await ordersLeft(m)) === 1);
    // Not redelivered: exactly one attempt each.
    expect(m.events.of("claimed", "crash")).toHaveLength(1);

    const file = join(m.dir, "state", "c", "logs", "f", "crash", "1.log");
    expect(readFileSync(file, "utf8")).toContain("line 80");
    const { jetstream } = await import("@nats-io/jetstream");
    const consumer = await jetstream(m.nc).consumers.get(m.names.streams.logs, {
      filter_subjects: m.names.subjects.attemptLogs("f", "crash", 1),
    });
    let text = "";
    let eof = false;
    for (;;) {
      const msg = await consumer.next({ expires: 2000 });
      if (!msg) break;
      const r = decode(LogChunkSchema, msg.data);
      if (!r.ok) throw r.error;
      text += Buffer.from(r.value.data).toString("utf8");
      if (r.value.eof) {
        eof = true;
        break;
      }
    }
    expect(eof).toBe(true);
    expect(text).toContain("line 1\r\n");
    expect(text).toContain("line 80\r\n");
  });
});

describe("orders that can never run here", () => {
  it("terms them with a rejected event instead of retrying them for ever", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    const agent = await m.agent({ allowCommand: [NODE] });
    const subject = m.names.subjects.work("gpu1");
    // Decodes as msgpack, fails the schema, but says which trial it is.
    await m.js.publish(subject, encode({ v: SCHEMA_VERSION, type: "order", study: "bad", trial: "half", attempt: 1 }));
    // Not even msgpack: nobody can be told; counted and termed.
    await m.js.publish(subject, new Uint8Array([0xc1, 0xc1, 0xc1]));
    await m.js.publish(subject, randomBytes(64));
    await m.publish(makeOrder({ study: "bad", trial: "expired", argv: [NODE, t.sleep, "1"], expiresAt: Date.now() - 1000 }));
    await m.publish(makeOrder({ study: "bad", trial: "escape", argv: [NODE, t.sleep, "1"], workdir: "../.." }));
    await m.publish(makeOrder({ study: "bad", trial: "cmd", argv: ["/bin/echo", "hi"] }));
    await m.publish(makeOrder({ study: "bad", trial: "fine", argv: [NODE, t.sleep, "1"] }));

    expect((await m.events.wait("rejected", "half")).reason).toBe("malformed");
    expect((await m.events.wait("rejected", "expired")).reason).toBe("expired");
    const outside = await m.events.wait("rejected", "escape");
    expect(outside).toMatchObject({ reason: "malformed", attempt: 1, agent: "a1" });
    expect(outside.detail).toMatch(/outside the agent's --workdir/);
    expect((await m.events.wait("rejected", "cmd")).reason).toBe("command-not-allowed");
    expect((await m.events.wait("finished", "fine")).status).toBe("completed");
    // A workdir escaping --workdir is never sent by a coordinator: ended like the other bad orders.
    await waitFor("every order to leave the work stream", async () => (await ordersLeft(m)) === 0);
    expect(agent.counters.ordersRejected).toBe(6);
    expect(agent.counters.droppedMessages).toBeGreaterThanOrEqual(3);
    for (const trial of ["half", "expired", "escape", "cmd"]) expect(m.events.of("claimed", trial)).toEqual([]);
    // Nothing is said again: wait past one lease and check no rejection was counted twice.
    await new Promise((r) => setTimeout(r, 3500));
    expect(agent.counters.ordersRejected).toBe(6);
    expect(m.events.of("rejected", "escape")).toHaveLength(1);
  });
});

describe("advert and lifecycle", () => {
  it("advertises GPUs and free slots, shows the running trial, deletes the advert on close", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    const agent = await m.agent({ name: "adv", fakeGpus: 2, labels: { zone: "eu" }, pricePerGpuHour: 2.5 });
    const first = await waitFor("the advert", async () => (await listAdverts(m.nc, m.names)).find((a) => a.agent === "adv"));
    expect(first).toMatchObject({ state: "running", freeGpus: 2, labels: { zone: "eu" }, pricePerGpuHour: 2.5 });
    expect(first.gpus.map((g) => [g.index, g.fake, g.name])).toEqual([
      [0, true, "Rung simulated GPU"],
      [1, true, "Rung simulated GPU"],
    ]);
    await m.publish(makeOrder({ study: "s", trial: "busy", argv: [NODE, t.sleep, "3000"] }));
    const busy = await waitFor("an advert with the trial", async () =>
      (await listAdverts(m.nc, m.names)).find((a) => a.agent === "adv" && a.freeGpus === 1),
    );
    expect(busy.gpus[0]).toMatchObject({ study: "s", trial: "busy" });
    await agent.close();
    expect(await listAdverts(m.nc, m.names)).toEqual([]);
    expect(m.events.of("finished", "busy")).toHaveLength(1);
    // close() with drain "requeue" (the helper's default) stops the trial and hands the order back.
    expect(m.events.of("finished", "busy")[0]).toMatchObject({ status: "preempted", reason: "preempted: agent-shutdown" });
    await agent.close(); // idempotent
  });

  it("exits after --idle-exit without work and runs --on-idle", async ({ newMesh }) => {
    const m = await newMesh();
    const marker = join(m.dir, "idle-ran");
    const agent = await m.agent({ idleExit: "1s", onIdle: `touch ${marker}` });
    await agent.done;
    expect(agent.exitReason).toBe("idle");
    expect(agent.state).toBe("stopped");
    await waitFor("the --on-idle command", () => existsSync(marker), 5000);
  });

  it("refuses to start with no GPU and no CPU slots, and runs CPU trials with --cpu-slots", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    await expect(m.agent({ fakeGpus: 0, nvidiaSmi: "/nonexistent/nvidia-smi" })).rejects.toThrow(/no GPU to offer.*--cpu-slots/);
    const out = join(m.dir, "cpu.json");
    await m.agent({ name: "cpu", fakeGpus: 0, nvidiaSmi: "/nonexistent/nvidia-smi", cpuSlots: 1 });
    await m.publish(
      makeOrder({ study: "c", trial: "cpu", pool: "cpu1", resources: { gpus: 0, cpus: 1 }, argv: [NODE, t.argv, out] }),
    );
    expect((await m.events.wait("finished", "cpu")).status).toBe("completed");
    expect((await m.events.wait("claimed", "cpu")).gpus).toEqual([]);
    const seen = JSON.parse(readFileSync(out, "utf8")) as { env: Record<string, string> };
    expect(seen.env.CUDA_VISIBLE_DEVICES).toBe("");
  });
});
