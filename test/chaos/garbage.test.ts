import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { encode, SCHEMA_VERSION } from "@rung/protocol";
import { rung } from "@rung/testkit";
import { describe, expect } from "vitest";
import { expectSound } from "./expect.js";
import {
  addCounts,
  appendRow,
  BAD_REPORT_LINES,
  byWhere,
  chaosSpec,
  it,
  rowWithoutStudy,
  runningAttempts,
  TRIAL,
} from "./harness/index.js";

// Scenario 6: garbage. (a) Random bytes and valid-looking but wrong messages on every subject the
// processes read: work orders (agents), trial events (coordinator), the control bucket (agents), the
// agents bucket (coordinator); the drop counters must match what was injected. (b) Trials that crash at
// start, crash in a loop, print megabytes a second, never report, hang, or write invalid report lines.
// (c) Spec files with each kind of error.

/** Bytes no msgpack decoder accepts: 0xc1 is the one byte the format never uses. */
const notMsgpack = () => Buffer.concat([Buffer.from([0xc1]), randomBytes(40)]);

describe("chaos 6: garbage", () => {
  it("drops and counts every bad message on every subject, and the study goes on unharmed", async ({ nats, openChaos }) => {
    const m = await openChaos({ scenario: "6a garbage messages", url: nats.url, study: "garbage" });
    const QUALITIES = [0.5, 0.9, 0.3, 0.95, 0.2, 0.7, 0.85, 0.4, 0.99];
    m.startAgents(3);
    m.startStudy(chaosSpec("garbage", { qualities: QUALITIES, epochMs: 300, maxConcurrent: 3 }));
    await m.waitForEvents("trials mid-run", (evs) => runningAttempts(evs, 1).length >= 2);

    const js = jetstream(m.nc);
    const s = m.names.subjects;
    const now = Date.now();
    const order = (o: Record<string, unknown>) => ({
      v: SCHEMA_VERSION,
      type: "order",
      study: "decoy",
      trial: "d1",
      attempt: 1,
      pool: "gpu1",
      resources: { gpus: 1, cpus: 0 },
      argv: ["/bin/false"],
      workdir: ".",
      env: {},
      secretEnv: [],
      params: {},
      timeAttr: "epoch",
      issuedAt: now,
      expiresAt: now + 60_000,
      nonce: randomBytes(8).toString("hex"),
      ...o,
    });
    const report = (o: Record<string, unknown>) => ({
      v: SCHEMA_VERSION,
      type: "report",
      study: "garbage",
      trial: "t0001",
      ts: Date.now(),
      attempt: 1,
      agent: "a1",
      seq: 9999,
      metrics: { epoch: 1, val_acc: 0.99 },
      ...o,
    });

    // Work orders: read by whichever agent pulls them.
    const orders: [string, Uint8Array][] = [
      ["not msgpack", notMsgpack()],
      ["not msgpack", notMsgpack()],
      ["not msgpack", notMsgpack()],
      ["JSON, not msgpack", Buffer.from(JSON.stringify(order({})))],
      ["schema v2", encode(order({ v: 2 }))],
      ["no argv", encode(order({ argv: undefined }))],
      ["a real trial's name, no fields", encode({ v: SCHEMA_VERSION, type: "order", study: "garbage", trial: "t0005" })],
    ];
    const undecodableOrders = orders.length;
    const wrongOrders: [string, Uint8Array][] = [
      ["expired", encode(order({ expiresAt: now - 1000, trial: "d2" }))],
      ["pool mismatch", encode(order({ pool: "gpu4", resources: { gpus: 4, cpus: 0 }, trial: "d3" }))],
      ["workdir outside", encode(order({ workdir: "../../etc", trial: "d4" }))],
    ];
    for (const [, data] of [...orders, ...wrongOrders]) await js.publish(s.work("gpu1"), data);

    // Trial events: read by the coordinator (and by every reader of the study), each on the subject of the
    // publisher its body names (agent a1's, the coordinator's for `created`).
    const events: [string, string, Uint8Array][] = [
      ["not msgpack", s.agentEvents("garbage", "t0001", "a1"), notMsgpack()],
      ["not msgpack", s.agentEvents("garbage", "t0002", "a1"), notMsgpack()],
      ["truncated", s.agentEvents("garbage", "t0003", "a1"), encode(report({})).subarray(0, 20)],
      ["schema v2", s.agentEvents("garbage", "t0001", "a1"), encode(report({ v: 2 }))],
      ["unknown type", s.agentEvents("garbage", "t0001", "a1"), encode(report({ type: "teleported" }))],
    ];
    const readerDropped = events.length;
    const strays: [string, string, Uint8Array][] = [
      ["body names another trial", s.agentEvents("garbage", "t0003", "a1"), encode(report({ trial: "t0002" }))],
      ["body names another study", s.agentEvents("garbage", "t0001", "a1"), encode(report({ study: "decoy" }))],
    ];
    const coordinatorOnly: [string, string, Uint8Array][] = [
      ["a trial not in the study", s.agentEvents("garbage", "t0099", "a1"), encode(report({ trial: "t0099" }))],
      [
        "created with an impossible bracket",
        s.coordinatorEvents("garbage", "zz"),
        encode({ v: SCHEMA_VERSION, type: "created", study: "garbage", trial: "zz", ts: Date.now(), params: {}, bracket: 99 }),
      ],
      [
        "finished for a trial never created",
        s.agentEvents("garbage", "t0009", "a1"),
        encode({
          ...report({ trial: "t0009" }),
          type: "finished",
          status: "failed",
          exitCode: 1,
          signal: null,
          reason: "forged",
          logTail: [],
        }),
      ],
    ];
    for (const [, subject, data] of [...events, ...strays, ...coordinatorOnly]) await js.publish(subject, data);
    m.strayTrials.add("zz");
    m.strayTrials.add("t0099");

    // The control bucket (every agent watches it) and the agents bucket (the coordinator watches it).
    const kvm = new Kvm(m.nc);
    const control = await kvm.open(m.names.buckets.control);
    const controls: [string, Uint8Array][] = [
      ["decoy.g1", notMsgpack()],
      ["decoy.g2", encode({ v: SCHEMA_VERSION, type: "stop", study: "decoy", trial: "g2", reason: "because", by: "x", ts: 1 })],
      ["decoy.g3", encode({ v: 2, type: "stop" })],
    ];
    for (const [k, data] of controls) await control.put(k, data);
    const agentsKv = await kvm.open(m.names.buckets.agents);
    const adverts: [string, Uint8Array][] = [
      ["ghost1", notMsgpack()],
      ["ghost2", encode({ v: 2, type: "advert", agent: "ghost2" })],
      ["ghost3", Buffer.from("{}")],
    ];
    for (const [k, data] of adverts) await agentsKv.put(k, data);

    // What each reader must have dropped. The coordinator also drops, as a stray, the agent's refusal of
    // the order that named t0005 but no attempt (an order it never issued).
    const injected = {
      "agents orders": undecodableOrders,
      "agents control": controls.length * 3,
      "coordinator events": events.length + strays.length + coordinatorOnly.length + 1,
      "coordinator agents": adverts.length,
    };
    const r = await m.finish({
      faults: `${orders.length + wrongOrders.length} bad work orders, ${events.length + strays.length + coordinatorOnly.length} bad events, ${controls.length} bad stop decisions, ${adverts.length} bad adverts`,
      injected,
    });
    expectSound(r, { outcome: "completed", trials: QUALITIES.length });
    // Nothing the garbage named was touched: every real trial ended by running, none by a rejection.
    for (const [trial, e] of r.ended) expect(e.reason, trial).not.toMatch(/rejected|forged/);
    expect([...r.ended.keys()].sort()).toEqual(QUALITIES.map((_, i) => `t${String(i + 1).padStart(4, "0")}`));
    // Counters match what was injected (each of the 3 agents watches the whole control bucket).
    expect(r.agentStops.length).toBe(3);
    const agentDrops = byWhere(addCounts(...r.agentStops.map((a) => a.dropped)));
    const coordinator = byWhere(r.coordinatorDrops);
    expect({
      "agents orders": agentDrops.orders ?? 0,
      "agents control": agentDrops.control ?? 0,
      "coordinator events": coordinator.events ?? 0,
      "coordinator agents": coordinator.agents ?? 0,
    }).toEqual(injected);
    const rejected = r.agentStops.reduce((n, a) => n + (a.counters.ordersRejected ?? 0), 0);
    expect(rejected).toBe(orders.length + wrongOrders.length);
    // A plain reader of the study (status, report, this harness) drops what it can tell is wrong.
    expect(byWhere(r.readerDrops).events ?? 0).toBe(readerDropped + strays.length);
  });

  it("ends every misbehaving trial the right way: crashes fail after their retry, a trial that never reports fails, the rest complete", async ({
    nats,
    openChaos,
  }) => {
    const m = await openChaos({ scenario: "6b misbehaving trials", url: nats.url, study: "badtrials" });
    const MODES = ["curve", "crash-start", "crash-loop", "flood", "silent", "bad-json", "hang"];
    m.startAgents(3);
    m.startStudy(
      chaosSpec("badtrials", { modes: MODES, scheduler: "fifo", maxT: 6, epochMs: 300, maxConcurrent: 7, retries: 1 }),
    );
    const trialOf = (mode: string) => `t${String(MODES.indexOf(mode) + 1).padStart(4, "0")}`;
    // Everything but the hanging trial ends by itself; that one only a stop ends.
    await m.waitForEvents(
      "every trial but the hanging one to end",
      (evs) => new Set(evs.flatMap(({ event: e }) => (e.type === "ended" ? [e.trial] : []))).size >= MODES.length - 1,
      90_000,
    );
    const stop = rung(["study", "stop", "badtrials", "--nats", m.url, "--prefix", m.prefix]);
    expect(await stop.exited).toBe(0);
    const r = await m.finish({
      faults: "7 trials: crash at start, crash loop, 4 MiB/s of output, silent, 7 bad report lines, hang (then study stop)",
      injected: { "agents report lines": BAD_REPORT_LINES },
    });
    expectSound(r, { outcome: "stopped", trials: MODES.length });
    const ended = (mode: string) => r.ended.get(trialOf(mode));
    expect(ended("curve")).toMatchObject({ status: "completed" });
    expect(ended("flood")).toMatchObject({ status: "completed" });
    // Ran to its end without ever reporting the metric: nothing to rank it by, and the reason says so.
    expect(ended("silent")).toMatchObject({ status: "failed", reason: expect.stringMatching(/reported nothing — not val_acc/) });
    expect(ended("bad-json")).toMatchObject({ status: "completed" });
    expect(ended("crash-start")).toMatchObject({ status: "failed", attempts: 2 });
    expect(ended("crash-start")?.reason).toMatch(/failed after 2 attempt\(s\): exit code 3[\s\S]*simulated crash at start/);
    expect(ended("crash-loop")).toMatchObject({ status: "failed", attempts: 2 });
    expect(ended("crash-loop")?.reason).toMatch(/exit code 1[\s\S]*simulated crash after epoch 1/);
    expect(ended("hang")).toMatchObject({ status: "cancelled" });
    const malformed = r.agentStops.reduce((n, a) => n + (a.counters.malformedReportLines ?? 0), 0);
    expect(malformed).toBe(BAD_REPORT_LINES);
  });

  it("refuses a spec with each kind of error in one sentence, before anything starts", async () => {
    const started = Date.now();
    const dir = mkdtempSync(join(tmpdir(), "rung-chaos-specs-"));
    const good = {
      name: "ok",
      command: `${process.execPath} ${TRIAL} --quality {quality} --epochs {max_t}`,
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { quality: { grid: [0.5] } } },
      scheduler: { type: "asha", max_t: 9, grace_period: 1, reduction_factor: 3 },
    };
    const cases: [string, string, RegExp][] = [
      ["missing file", "", /no such|not found|cannot read/i],
      ["empty file", "", /empty/i],
      ["YAML syntax", "name: [unclosed\ncommand: x\n", /yaml|line/i],
      ["JSON syntax", '{"name": "x",', /json|unexpected|yaml|line/i],
      ["a list, not a mapping", "- a\n- b\n", /mapping/i],
      ["unknown key", JSON.stringify({ ...good, colour: "blue" }), /colour/],
      ["wrong type", JSON.stringify({ ...good, max_concurrent: "two" }), /max_concurrent/],
      ["invalid name", JSON.stringify({ ...good, name: "has space" }), /name/],
      ["unknown placeholder", JSON.stringify({ ...good, command: "python train.py --lr {nope}" }), /nope/],
      [
        "bad scheduler settings",
        JSON.stringify({ ...good, scheduler: { type: "asha", max_t: 9, reduction_factor: 1 } }),
        /reduction_factor/,
      ],
      [
        "empty search space",
        JSON.stringify({ ...good, search: { algorithm: "grid", space: { quality: { grid: [] } } } }),
        /quality|grid/,
      ],
      ["bad metric mode", JSON.stringify({ ...good, metric: { name: "val_acc", mode: "biggest" } }), /mode/],
      ["workdir escapes", JSON.stringify({ ...good, workdir: "../.." }), /workdir/],
      ["reserved env", JSON.stringify({ ...good, env: { CUDA_VISIBLE_DEVICES: "0" } }), /CUDA_VISIBLE_DEVICES/],
    ];
    const failures: string[] = [];
    const runs = cases.map(([what, text], i) => {
      const file = join(dir, `spec${i}.yaml`);
      if (what !== "missing file") writeFileSync(file, text);
      // A server nobody listens on: a spec error must come before any attempt to connect.
      return { what, p: rung(["study", "run", file, "--nats", "nats://127.0.0.1:1", "--prefix", "specs"]) };
    });
    for (const [i, { what, p }] of runs.entries()) {
      const code = await p.exited;
      const out = p.out().trim();
      const want = (cases[i] as [string, string, RegExp])[2];
      if (code !== 1) failures.push(`${what}: exit ${code}`);
      if (!out.startsWith("rung: ")) failures.push(`${what}: no "rung: …" sentence: ${out.slice(0, 200)}`);
      if (/\n\s+at /.test(out)) failures.push(`${what}: a stack trace`);
      if (/nats|connect/i.test(out)) failures.push(`${what}: tried NATS before checking the spec: ${out.slice(0, 200)}`);
      if (!want.test(out)) failures.push(`${what}: does not say what is wrong: ${out.slice(0, 300)}`);
    }
    appendRow(
      rowWithoutStudy({
        scenario: "6c bad spec files",
        faults: `${cases.length} spec files, one error kind each`,
        outcome: failures.length ? `${failures.length} wrong` : `all ${cases.length} refused`,
        startedAt: started,
        notes: failures,
      }),
    );
    expect(failures).toEqual([]);
  });
});
