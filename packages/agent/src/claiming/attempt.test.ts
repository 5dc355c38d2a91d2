import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import {
  type Control,
  decode,
  MeshNames,
  SCHEMA_VERSION,
  silentLogger,
  type TrialEvent,
  TrialEventSchema,
  type WorkOrder,
} from "@rung/protocol";
import { checkLeaks } from "@rung/testkit";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { IllegalTransitionError } from "../errors.js";
import type { EventPublisher } from "../events.js";
import { type CompiledAgentOptions, compileAgentOptions } from "../options.js";
import { ATTEMPT_TRANSITIONS, Attempt, type AttemptContext, AttemptState, stopRequestFrom } from "./attempt.js";
import { newClaimLoopCounters } from "./counters.js";
import { poolsFor } from "./pools.js";

/**
 * An attempt's state machine without NATS: a stand-in work message records every ack, nak and term;
 * stand-ins for JetStream, the connection and the control bucket. The trials are real processes in a
 * real pseudo-terminal, as in production.
 */

const NODE = process.execPath;
const names = new MeshNames("t");
const dir = mkdtempSync(join(tmpdir(), "rung-attempt-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => {
  await checkLeaks();
});

let nextTrial = 0;
function order(argv: string[]): WorkOrder {
  nextTrial += 1;
  return {
    v: SCHEMA_VERSION,
    type: "order",
    study: "s",
    trial: `t${nextTrial}`,
    attempt: 1,
    pool: "gpu1",
    resources: { gpus: 1, cpus: 0 },
    argv,
    workdir: ".",
    env: {},
    secretEnv: [],
    params: {},
    timeAttr: "epoch",
    issuedAt: Date.now(),
    expiresAt: Date.now() + 3_600_000,
    nonce: `nonce-${nextTrial}`,
  };
}

function control(o: WorkOrder, c: Partial<Control> = {}): Control {
  return {
    v: SCHEMA_VERSION,
    type: "stop",
    study: o.study,
    trial: o.trial,
    reason: "scheduler-stop",
    by: "asha",
    rung: 3,
    ts: Date.now(),
    ...c,
  };
}

interface Rig {
  /** Every ack, nak and term the work message received, in order (in-progress acks apart). */
  endings: string[];
  workings: number;
  events: TrialEvent[];
  /** `exited` (the slots freed by the trial's exit), `finished` (published) and `ack`, in order. */
  timeline: string[];
  ctx: AttemptContext;
}

function rig(
  o: {
    options?: Partial<CompiledAgentOptions>;
    decided?: Control | null;
    readControl?: () => Promise<Control | null>;
    connected?: boolean;
    publishFails?: boolean;
  } = {},
): Rig {
  const r: Rig = { endings: [], workings: 0, events: [], timeline: [], ctx: undefined as unknown as AttemptContext };
  // Trial events are recorded (this tests the attempt's life, not NATS: test/agent-event-queue.test.ts does that).
  const events: EventPublisher = {
    async publish(subject: string, data: Uint8Array) {
      if (o.publishFails) throw new Error("no responders");
      if (subject.startsWith(`${names.prefix}.events.`)) {
        const e = decode(TrialEventSchema, data);
        if (e.ok) r.events.push(e.value);
        if (e.ok && e.value.type === "finished") r.timeline.push("finished");
      }
      return { seq: 1, duplicate: false, stream: "S" };
    },
  };
  let sockets = 0;
  r.ctx = {
    nc: { flush: async () => {} },
    // Log chunks: stored nowhere (this tests the attempt, not the log stream).
    js: { publish: async () => ({ seq: 1, duplicate: false, stream: "S" }) } as unknown as JetStreamClient,
    events,
    subjects: names.subjects,
    options: {
      ...compileAgentOptions({ name: "box", insecure: true, stateDir: join(dir, "state"), workdir: dir, stopGrace: "2s" }),
      ...o.options,
    },
    control: { read: o.readControl ?? (async () => o.decided ?? null) },
    counters: newClaimLoopCounters(),
    log: silentLogger(),
    isConnected: () => o.connected ?? true,
    isClosed: () => o.publishFails ?? false,
    nextReportPath: () => join(dir, `${++sockets}-${nextTrial}.sock`),
    onExited: () => {
      r.timeline.push("exited");
    },
  };
  return r;
}

function attempt(r: Rig, o: WorkOrder): Attempt {
  const msg = {
    info: { streamSequence: 1, deliveryCount: 1 },
    working: () => {
      r.workings += 1;
    },
    nak: (delay?: number) => r.endings.push(delay ? `nak ${delay}` : "nak"),
    term: () => r.endings.push("term"),
    ackAck: async () => {
      r.endings.push("ack");
      r.timeline.push("ack");
      return true;
    },
  } as unknown as JsMsg;
  const [pool] = poolsFor(1, 0);
  if (!pool) throw new Error("no pool");
  return new Attempt(r.ctx, {
    order: o,
    number: 1,
    msg,
    pool,
    ids: [0],
    holder: { study: o.study, trial: o.trial, attempt: 1, busyShare: null },
  });
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const finished = (r: Rig) => r.events.find((e) => e.type === "finished");
const SLEEPER = [NODE, "-e", "setInterval(() => {}, 1000)"];
const PYTHON = "/usr/bin/python3";

describe("an attempt", () => {
  it("moves forward only, never from claimed straight to running, and ends for good", () => {
    const order_ = Object.values(AttemptState);
    for (const [i, from] of order_.entries()) {
      const later = order_.slice(i + 1).filter((to) => !(from === "claimed" && to === "running"));
      expect([...ATTEMPT_TRANSITIONS[from]].sort()).toEqual([...later].sort());
    }
    expect(ATTEMPT_TRANSITIONS.ended).toEqual([]);
  });

  it("runs a trial to the end: starting, running, finished completed, acked once, ended", async () => {
    const r = rig();
    const a = attempt(r, order([NODE, "-e", "setTimeout(() => {}, 300)"]));
    expect(a.state).toBe("claimed");
    const done = a.run();
    expect(a.state).toBe("starting");
    await until("the trial runs", () => a.state === "running");
    await done;
    expect(r.events.map((e) => e.type)).toEqual(["claimed", "started", "finished"]);
    expect(finished(r)).toMatchObject({ status: "completed", attempt: 1, agent: "box" });
    expect(r.endings).toEqual(["ack"]);
    // The GPU went to the next order as soon as the trial's processes were gone.
    expect(r.timeline).toEqual(["exited", "finished", "ack"]);
    expect(a.ending).toBe("ack");
    expect(a.state).toBe("running");
    a.end();
    expect(a.state).toBe("ended");
    expect(() => a.end()).toThrow(IllegalTransitionError);
  });

  it("counts as a running trial only while its process runs, not while finished goes out after the exit", async () => {
    const o = order(SLEEPER);
    const r = rig();
    const recorded = r.ctx.events;
    let finishing = false;
    let letFinishedOut = () => {};
    const held = new Promise<void>((res) => {
      letFinishedOut = res;
    });
    // `finished` is held on its way out: the attempt is still on the books, its trial's process is not.
    r.ctx.events = {
      async publish(subject, data, msgID, timeoutMs) {
        const e = decode(TrialEventSchema, data);
        if (e.ok && e.value.type === "finished") {
          finishing = true;
          await held;
        }
        return recorded.publish(subject, data, msgID, timeoutMs);
      },
    };
    const a = attempt(r, o);
    expect(a.trialRunning).toBe(false);
    const done = a.run();
    await until("the trial runs", () => r.events.some((e) => e.type === "started"));
    expect(a.trialRunning).toBe(true);
    a.onControl(control(o));
    await until("finished is on its way", () => finishing);
    expect(a.state).toBe("stopping");
    expect(a.trialRunning).toBe(false);
    letFinishedOut();
    await done;
    expect(a.trialRunning).toBe(false);
    a.end();
  });

  it("never starts a trial whose stop was decided before the order arrived; acks it", async () => {
    const o = order(SLEEPER);
    const r = rig({ decided: control(o) });
    const a = attempt(r, o);
    await a.run();
    expect(a.state).toBe("stopping");
    expect(r.events.map((e) => e.type)).toEqual(["claimed", "finished"]);
    expect(finished(r)).toMatchObject({ status: "stopped", reason: "scheduler-stop at t=3" });
    expect(r.endings).toEqual(["ack"]);
    a.end();
  });

  it("stops on its trial's stop decision only, the first one wins, and acks", async () => {
    const o = order(SLEEPER);
    const r = rig();
    const a = attempt(r, o);
    const done = a.run();
    await until("the trial runs", () => a.state === "running" && r.events.some((e) => e.type === "started"));
    a.onControl(control(order(SLEEPER)));
    expect(a.state).toBe("running");
    a.onControl(control(o));
    expect(a.state).toBe("stopping");
    a.onControl(control(o, { reason: "user-stop", by: "alice" }));
    expect(a.stopRequest).toEqual({ reason: "scheduler-stop", detail: "scheduler-stop at t=3" });
    await done;
    expect(finished(r)).toMatchObject({ status: "stopped", reason: "scheduler-stop at t=3" });
    expect(r.endings).toEqual(["ack"]);
    a.end();
  });

  it("kills its copy at once on a claim notice of a newer attempt of its trial and incarnation, and ends nothing", async () => {
    const o = { ...order(SLEEPER), studyId: "inc1" };
    const r = rig();
    const a = attempt(r, o);
    const done = a.run();
    await until("the trial runs", () => a.state === "running" && r.events.some((e) => e.type === "started"));
    const notice = {
      v: 1,
      type: "claim",
      study: o.study,
      studyId: "inc1",
      trial: o.trial,
      attempt: 2,
      agent: "other",
      ts: 1,
    } as const;
    // Not ours: another trial, the same attempt, another incarnation of the study.
    a.onClaimNotice({ ...notice, trial: "t-other" });
    a.onClaimNotice({ ...notice, attempt: 1 });
    a.onClaimNotice({ ...notice, studyId: "inc0" });
    expect(a.state).toBe("running");
    // A notice from a coordinator that knows no incarnation id still names a newer attempt of this trial.
    a.onClaimNotice({ ...notice, studyId: null });
    expect(a.state).toBe("lost");
    await done;
    expect(finished(r)).toMatchObject({ status: "stopped", reason: "claim-lost" });
    // The order is another agent's now: neither acked nor handed back.
    expect(r.endings).toEqual([]);
    expect(r.ctx.counters.claimsLost).toBe(1);
    // Once the trial has exited there is nothing to kill: a late notice changes nothing.
    const r2 = rig();
    const b = attempt(r2, { ...order([NODE, "-e", ""]), studyId: "inc1" });
    await b.run();
    b.onClaimNotice({ ...notice, trial: b.order.trial });
    expect(b.state).not.toBe("lost");
    expect(r2.ctx.counters.claimsLost).toBe(0);
    a.end();
    b.end();
  });

  it("drain with requeue stops the trial and hands the order back once, also after a stop decision", async () => {
    const o = order(SLEEPER);
    const r = rig();
    const a = attempt(r, o);
    const done = a.run();
    await until("the trial runs", () => r.events.some((e) => e.type === "started"));
    a.onControl(control(o));
    a.requeue();
    expect(a.state).toBe("requeuing");
    a.requeue();
    await done;
    expect(finished(r)).toMatchObject({ status: "stopped" });
    expect(r.endings).toEqual(["nak"]);
    expect(r.ctx.counters.ordersReturned).toBe(1);
    a.end();

    const r2 = rig();
    const b = attempt(r2, order(SLEEPER));
    const done2 = b.run();
    await until("the trial runs", () => r2.events.some((e) => e.type === "started"));
    b.requeue();
    await done2;
    // Handed back as a preemption: the next attempt resumes from the last checkpoint, no retry used.
    expect(finished(r2)).toMatchObject({ status: "preempted", reason: "preempted: agent-shutdown" });
    expect(r2.endings).toEqual(["nak"]);
    b.end();
  });

  it("keeps its slots while a checkpoint asked for just before the trial exited is still being stored", async () => {
    const r = rig();
    let uploads = 0;
    // The mesh's store, slow: the snapshot is still on its way when the trial's process is gone.
    r.ctx.checkpoints = {
      upload: async () => {
        await new Promise((res) => setTimeout(res, 2000));
        uploads += 1;
        r.timeline.push("uploaded");
      },
    } as unknown as AttemptContext["checkpoints"];
    r.ctx.control = { ...r.ctx.control, readCheckpoints: async () => null };
    const trial = `const fs = require("fs"), net = require("net");
      fs.writeFileSync(require("path").join(process.env.RUNG_CHECKPOINT_DIR, "w.bin"), "weights");
      const s = net.connect(process.env.RUNG_REPORT, () => s.end(JSON.stringify({ epoch: 1, val: 0.5, checkpoint: true }) + "\\n"));
      setTimeout(() => process.exit(0), 300);`;
    const a = attempt(r, order([NODE, "-e", trial]));
    await a.run();
    expect(uploads).toBe(1);
    // Freed only when the attempt ended (the claim loop's #forget), not at the trial's exit.
    expect(r.timeline).toEqual(["uploaded", "finished", "ack"]);
  });

  it("publishes finished without waiting for the trial's process group to empty, and frees the slots once it has", async () => {
    const r = rig();
    const keeperPid = join(dir, `keeper-${nextTrial + 1}.pid`);
    // A member of the trial's group outlives the group's SIGKILL: a dead child stays in its group until
    // its parent reaps it, and this parent sits in a group of its own (out of the kill's reach) and reaps
    // it only on SIGTERM, or after 10 s when the test failed to send one.
    const trial = `import os, signal, time
leader = os.getpid()
ready_r, ready_w = os.pipe()
if os.fork() == 0:
    os.setpgid(0, 0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    os.setpgid(child, leader)
    def reap(*_):
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(child, 0)
        os._exit(0)
    signal.signal(signal.SIGTERM, reap)
    with open(${JSON.stringify(keeperPid)}, "w") as f:
        f.write(str(os.getpid()))
    os.write(ready_w, b"x")
    time.sleep(10)
    reap()
os.close(ready_w)
os.read(ready_r, 1)
`;
    const a = attempt(r, order([PYTHON, "-c", trial]));
    await a.run();
    // The order ended while the group still held its dead member: the slots were not freed yet.
    expect(finished(r)).toMatchObject({ status: "completed" });
    expect(r.timeline).toEqual(["finished", "ack"]);
    // The member is reaped: the group is empty, and the slots go before the attempt ends.
    process.kill(Number(readFileSync(keeperPid, "utf8")), "SIGTERM");
    await until("the slots are freed", () => r.timeline.includes("exited"));
    expect(r.timeline).toEqual(["finished", "ack", "exited"]);
    a.end();
  });

  it("a drain that comes once the trial has exited leaves its result alone: finished completed, acked", async () => {
    const r = rig();
    const a = attempt(r, order([NODE, "-e", "setTimeout(() => {}, 100)"]));
    r.ctx.onExited = () => {
      r.timeline.push("exited");
      a.requeue(); // the agent told to drain just as the trial ended
    };
    await a.run();
    expect(finished(r)).toMatchObject({ status: "completed" });
    expect(r.endings).toEqual(["ack"]);
  });

  it("a forced shutdown that comes once the trial has exited leaves its result alone: finished completed, acked", async () => {
    const r = rig();
    const a = attempt(r, order([NODE, "-e", "setTimeout(() => {}, 100)"]));
    r.ctx.onExited = () => {
      r.timeline.push("exited");
      a.kill(); // the agent killed (a second signal) just as the trial ended
    };
    await a.run();
    expect(finished(r)).toMatchObject({ status: "completed" });
    expect(r.endings).toEqual(["ack"]);
    expect(a.ending).toBe("ack");
    expect(r.ctx.counters.ordersReturned).toBe(0);
    a.end();
  });

  it("a forced shutdown hands the order back at once, and only once", async () => {
    const r = rig();
    const a = attempt(r, order(SLEEPER));
    const done = a.run();
    await until("the trial runs", () => r.events.some((e) => e.type === "started"));
    a.kill();
    expect(a.state).toBe("requeuing");
    expect(r.endings).toEqual(["nak"]);
    await done;
    expect(finished(r)).toMatchObject({ status: "preempted", reason: "preempted: agent-shutdown (forced)" });
    expect(r.endings).toEqual(["nak"]);
    expect(a.ending).toBe("nak");
    a.end();
  });

  it("confirmed heartbeats keep a claim alive past its lease", async () => {
    const r = rig({ options: { leaseMs: 1000, heartbeatMs: 100 } });
    const a = attempt(r, order([NODE, "-e", "setTimeout(() => {}, 1500)"]));
    await a.run();
    expect(r.workings).toBeGreaterThanOrEqual(3);
    expect(r.ctx.counters.claimsLost).toBe(0);
    expect(finished(r)).toMatchObject({ status: "completed" });
    expect(r.endings).toEqual(["ack"]);
    a.end();
  });

  it("loses a claim not kept alive within the lease: kills the trial at once and leaves the order alone", async () => {
    const r = rig({ options: { leaseMs: 300, heartbeatMs: 100 }, connected: false });
    const a = attempt(r, order(SLEEPER));
    await a.run();
    expect(a.state).toBe("lost");
    expect(finished(r)).toMatchObject({ status: "stopped", reason: "claim-lost" });
    expect(r.ctx.counters.claimsLost).toBe(1);
    expect(r.ctx.counters.missedHeartbeats).toBeGreaterThanOrEqual(1);
    // Not ours any more: neither a drain nor a forced shutdown touches the order.
    a.requeue();
    a.kill();
    expect(a.state).toBe("lost");
    expect(r.endings).toEqual([]);
    expect(a.ending).toBeNull();
    // The order is back in the queue: its next attempt may come here, so the slots wait for the end.
    expect(r.timeline).toEqual(["finished"]);
    a.end();
    expect(a.state).toBe("ended");
  });

  it("ends its order even when our own code fails: ack once finished went out, nak when it could not", async () => {
    const r = rig({ readControl: () => Promise.reject(new Error("boom")) });
    const a = attempt(r, order(SLEEPER));
    await a.run();
    expect(finished(r)).toMatchObject({ status: "failed", reason: "agent error: boom" });
    expect(r.endings).toEqual(["ack"]);
    a.end();

    const r2 = rig({ readControl: () => Promise.reject(new Error("boom")), publishFails: true });
    const b = attempt(r2, order(SLEEPER));
    await b.run();
    expect(r2.events).toEqual([]);
    expect(r2.endings).toEqual(["nak"]);
    expect(r2.ctx.counters.ordersReturned).toBe(1);
    b.end();
  });

  it("ends the work message at most once: a rejected copy is termed, a later nak does nothing", () => {
    const r = rig();
    const a = attempt(r, order(SLEEPER));
    expect(a.term()).toBe(true);
    expect(a.nak(5000)).toBe(false);
    expect(r.endings).toEqual(["term"]);
    expect(a.ending).toBe("term");
    a.end();
    expect(a.state).toBe("ended");
  });

  it("turns stop decisions into the finished event's reason", () => {
    const base = { v: 1 as const, type: "stop" as const, study: "s", trial: "t", by: "asha", ts: 1 };
    expect(stopRequestFrom({ ...base, reason: "scheduler-stop", rung: 3 })).toEqual({
      reason: "scheduler-stop",
      detail: "scheduler-stop at t=3",
    });
    expect(stopRequestFrom({ ...base, reason: "user-stop", rung: null, by: "alice" }).detail).toBe("user-stop by alice");
  });
});
