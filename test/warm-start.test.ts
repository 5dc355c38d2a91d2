import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Kvm } from "@nats-io/kv";
import type { Agent } from "@rung/agent";
import { type WarmPool, warmPoolFor } from "@rung/agent/internal";
import { readStudyEvents } from "@rung/coordinator";
import { encode, SCHEMA_VERSION } from "@rung/protocol";
import { rung, rungAgent, waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { it, type Mesh, makeOrder } from "./agent-helpers.js";

/**
 * Warm starts (`--warm-python`, `--warm-preload`): Python trials handed to interpreters started ahead of
 * time. Real agent, real nats-server, real /usr/bin/python3 with PyTorch; each trial must behave as the
 * same trial started cold — results, output, exit status, environment, stop — and no interpreter serves
 * two trials.
 */

const PYTHON = "/usr/bin/python3";
const DIGITS = resolve(import.meta.dirname, "..", "examples", "digits", "train.py");

function poolOf(agent: Agent): WarmPool {
  const p = warmPoolFor(agent.options);
  if (!p) throw new Error("the agent has no warm pool");
  return p as WarmPool;
}

function putStop(m: Mesh, study: string, trial: string): Promise<number> {
  return new Kvm(m.nc)
    .open(m.names.buckets.control)
    .then((kv) =>
      kv.put(
        m.names.subjects.controlKey(study, trial),
        encode({ v: SCHEMA_VERSION, type: "stop", study, trial, reason: "user-stop", by: "test", rung: null, ts: Date.now() }),
      ),
    );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** What `rung logs` prints for an attempt. */
async function logsOf(m: Mesh, ref: string): Promise<string> {
  const p = rung(["logs", ref, "--attempt", "1", "--nats", m.url, "--prefix", m.names.prefix]);
  m.procs.push(p);
  const code = await p.exited;
  expect(code, p.out()).toBe(0);
  return p.out();
}

const TIMING = new Set(["data_wait_s", "compute_s", "data_wait_host_cpu"]);
function results(m: Mesh, trial: string): Record<string, number>[] {
  return m.events
    .of("report", trial)
    .map((r) => Object.fromEntries(Object.entries(r.metrics).filter(([k]) => !TIMING.has(k))) as Record<string, number>);
}

describe("warm starts", () => {
  it("a warm digits trial reports exactly what the same trial reports cold", async ({ newMesh }) => {
    const m = await newMesh();
    const agent = await m.agent({
      name: "warm",
      fakeGpus: 2,
      warm: { python: PYTHON, preload: ["torch", "sklearn"], spares: 2 },
    });
    const argv = [PYTHON, DIGITS, "--epochs", "2", "--seed", "7", "--lr", "0.01", "--hidden", "64"];
    // The first trial of its directory and environment starts cold; interpreters start for the next.
    await m.publish(makeOrder({ study: "dg", trial: "cold", argv }));
    expect((await m.events.wait("finished", "cold", 60_000)).status).toBe("completed");
    await waitFor("two warm interpreters", () => poolOf(agent).ready >= 2, 60_000);
    await m.publish(makeOrder({ study: "dg", trial: "warm1", argv }));
    await m.publish(makeOrder({ study: "dg", trial: "warm2", argv }));
    const [w1, w2] = await Promise.all([m.events.wait("finished", "warm1", 60_000), m.events.wait("finished", "warm2", 60_000)]);
    expect(w1.status).toBe("completed");
    expect(w2.status).toBe("completed");
    expect(results(m, "cold")).toHaveLength(2);
    expect(results(m, "warm1")).toEqual(results(m, "cold"));
    expect(results(m, "warm2")).toEqual(results(m, "cold"));
    expect(poolOf(agent).stats.taken).toBe(2);
    const pids = ["cold", "warm1", "warm2"].map((t) => m.events.of("started", t)[0]?.pid);
    expect(new Set(pids).size).toBe(3);
    // Output goes the same way as a cold trial's: the log file and the logs stream (`rung logs`: below).
    expect(w1.logTail).toEqual([]);
  });

  it("keeps each trial's environment, exit status and process group; never hands an interpreter two trials", async ({
    newMesh,
  }) => {
    const m = await newMesh();
    const agent = await m.agent({ name: "w", fakeGpus: 2, warm: { python: PYTHON, preload: ["json"], spares: 2 } });
    const script = join(m.dir, "env_trial.py");
    writeFileSync(
      script,
      `import json, os, subprocess, sys, time
out, code, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
child = subprocess.Popen(["sleep", "120"]) if mode == "hang" else None
with open(out, "w") as f:
    json.dump({"pid": os.getpid(), "child": child.pid if child else None,
               "env": {k: os.environ.get(k) for k in ("RUNG_TRIAL", "RUNG_ATTEMPT", "CUDA_VISIBLE_DEVICES")}}, f)
print("trial", os.environ["RUNG_TRIAL"], "running", flush=True)
if mode == "hang":
    while True:
        time.sleep(1)
sys.exit(code)
`,
    );
    const order = (trial: string, code: number, mode = "exit") =>
      makeOrder({ study: "env", trial, argv: [PYTHON, script, join(m.dir, `${trial}.json`), String(code), mode] });
    await m.publish(order("first", 0));
    expect((await m.events.wait("finished", "first", 30_000)).status).toBe("completed");
    await waitFor("two warm interpreters", () => poolOf(agent).ready >= 2, 30_000);

    // Two at once, one per fake GPU: each sees its own trial id and GPU.
    await m.publish(order("a", 0));
    await m.publish(order("b", 3));
    const [a, b] = await Promise.all([m.events.wait("finished", "a"), m.events.wait("finished", "b")]);
    expect(a).toMatchObject({ status: "completed", exitCode: 0 });
    expect(b).toMatchObject({ status: "failed", exitCode: 3, reason: "exit code 3" });
    const seenA = JSON.parse(readFileSync(join(m.dir, "a.json"), "utf8"));
    const seenB = JSON.parse(readFileSync(join(m.dir, "b.json"), "utf8"));
    expect(seenA.env.RUNG_TRIAL).toBe("a");
    expect(seenB.env.RUNG_TRIAL).toBe("b");
    expect(seenA.env.RUNG_ATTEMPT).toBe("1");
    expect(new Set([seenA.env.CUDA_VISIBLE_DEVICES, seenB.env.CUDA_VISIBLE_DEVICES])).toEqual(new Set(["0", "1"]));
    // The started event names the process that ran the script: the warm interpreter itself.
    expect(m.events.of("started", "a")[0]?.pid).toBe(seenA.pid);
    expect(b.logTail.join("\n")).toContain("trial b running");
    expect(b.logTail.join("\n")).toContain("[rung] warm start");

    // A stop ends the whole group: the trial and the child it started.
    await waitFor("a warm interpreter", () => poolOf(agent).ready >= 1, 30_000);
    await m.publish(order("hang", 0, "hang"));
    await m.events.wait("started", "hang");
    await waitFor("the trial's child", () => existsSync(join(m.dir, "hang.json")));
    const hang = JSON.parse(readFileSync(join(m.dir, "hang.json"), "utf8"));
    expect(alive(hang.child)).toBe(true);
    await putStop(m, "env", "hang");
    const stopped = await m.events.wait("finished", "hang", 20_000);
    expect(stopped).toMatchObject({ status: "stopped", reason: "user-stop by test" });
    await waitFor("the group to be gone", () => !alive(hang.pid) && !alive(hang.child), 5_000);

    const started = ["first", "a", "b", "hang"].map((t) => m.events.of("started", t)[0]?.pid);
    expect(new Set(started).size).toBe(4);
    expect(poolOf(agent).stats.taken).toBe(3);
  });

  it("a study on `rung agent --warm-python … --warm-preload torch,sklearn`: same results, output in rung logs", async ({
    newMesh,
  }) => {
    const m = await newMesh();
    const file = join(mkdtempSync(join(tmpdir(), "rung-warm-spec-")), "warm.json");
    // Four trials of the same configuration (`rep` is not a flag of train.py), one at a time on one GPU.
    writeFileSync(
      file,
      JSON.stringify({
        name: "wdigits",
        command: "/usr/bin/python3 train.py --epochs 2 --seed 7 --lr 0.01 --hidden 64",
        workdir: "examples/digits",
        env: { OMP_NUM_THREADS: "1" },
        metric: { name: "val_acc", mode: "max" },
        search: { algorithm: "grid", space: { rep: { grid: [1, 2, 3, 4] } } },
        scheduler: { type: "fifo" },
        resources: { gpus: 1 },
        max_concurrent: 1,
        retries: 0,
      }),
    );
    m.procs.push(
      rungAgent(m.url, m.names.prefix, {
        name: "wa",
        stateDir: join(m.dir, "wa"),
        flags: ["--warm-python", PYTHON, "--warm-preload", "torch,sklearn", "--warm-spares", "1"],
      }),
    );
    const study = rung(["study", "run", file, "--nats", m.url, "--prefix", m.names.prefix]);
    m.procs.push(study);
    expect(await study.exited, study.out()).toBe(0);
    const events = (await readStudyEvents(m.nc, m.names, "wdigits")).map((e) => e.event);
    const trials = ["t0001", "t0002", "t0003", "t0004"];
    const reports = trials.map((t) =>
      events
        .filter((e) => e.type === "report" && e.trial === t)
        .map((e) =>
          Object.fromEntries(Object.entries((e as { metrics: Record<string, number> }).metrics).filter(([k]) => !TIMING.has(k))),
        ),
    );
    expect(reports[0]).toHaveLength(2);
    for (const r of reports.slice(1)) expect(r).toEqual(reports[0]);
    const logs = await Promise.all(trials.map((t) => logsOf(m, `wdigits/${t}`)));
    // The first trial of its directory starts cold (the interpreters start with it); later ones warm.
    expect(logs[0]).not.toContain("[rung] warm start");
    expect(logs.filter((l) => l.includes("[rung] warm start: interpreter")).length).toBeGreaterThanOrEqual(1);
    const pids = events.filter((e) => e.type === "started").map((e) => (e as { pid: number }).pid);
    expect(new Set(pids).size).toBe(4);
  });
});
