import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readStudyEvents } from "@rung/coordinator";
import { connectNats, MeshNames, type TrialEvent } from "@rung/protocol";
import { rung, rungAgents, type TestProcess, uniquePrefix, waitFor, waitForOutput } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

// Issue: "Trust — everything a new user hit that loses work, hangs, or hides a failure". Each case is
// the user's own steps through the `rung` CLI on a real nats-server with real agents.
const it = meshTest.extend("leakGraceMs", 5000);

/** A spec for the curve fixture; `args` are extra fixture flags, `qualities` a grid (one trial each). */
function spec(name: string, o: { qualities?: number[]; args?: string; extra?: Record<string, unknown> } = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-spec-"));
  const file = join(dir, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      command:
        `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs 6 --epoch-ms 150 ${o.args ?? ""}`.trim(),
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { quality: { grid: o.qualities ?? [0.3, 0.6] } } },
      scheduler: { type: "fifo" },
      resources: { gpus: 1 },
      retries: 0,
      ...o.extra,
    }),
  );
  return file;
}

function cli(url: string, prefix: string, args: string[]): TestProcess {
  return rung([...args, "--nats", url, "--prefix", prefix]);
}

async function run(url: string, prefix: string, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const p = cli(url, prefix, args);
  const code = await p.exited;
  return { code, out: p.out(), err: p.stderr() };
}

async function events(url: string, prefix: string, study: string): Promise<TrialEvent[]> {
  const nc = await connectNats({ url });
  try {
    return (await readStudyEvents(nc, new MeshNames(prefix), study)).map((s) => s.event);
  } finally {
    await nc.close();
  }
}

describe("failures do not look like success", () => {
  it("a study whose every trial fails exits 4, and run and status name each trial's reason and log", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const r = await run(nats.url, prefix, ["study", "run", spec("allfail", { args: "--fail-always" })]);
    expect(r.code).toBe(4);
    expect(r.err).toMatch(/every trial failed \(2\)/);
    expect(r.out).toMatch(/failed trials:\n\s+t0001: failed after 1 attempt\(s\): exit code 3/);
    expect(r.out).toMatch(/\| simulated crash on attempt 1/);
    const status = await run(nats.url, prefix, ["study", "status", "allfail"]);
    expect(status.code).toBe(0);
    expect(status.out).toMatch(/study allfail: failed ·/);
    expect(status.out).toMatch(/t0002: failed after 1 attempt\(s\)/);
    // Warnings reach the terminal as sentences, never as JSON.
    expect(r.err).not.toMatch(/^\{/m);
    const report = await run(nats.url, prefix, ["study", "report", "allfail"]);
    expect(report.out).toMatch(/failed trials \(2\):\n\s+t0001: failed after 1 attempt\(s\)/);
    expect(report.out).toMatch(/\| simulated crash on attempt 1/);
    expect(report.out).toMatch(/\[critical\] trials-failed: 2 of 2 trial\(s\) failed/);
  });

  it("a study in which no trial reports the metric exits 3 and names the keys the trials did report", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const r = await run(nats.url, prefix, ["study", "run", spec("nometric", { args: "--metric-key accuracy" })]);
    expect(r.code).toBe(3);
    expect(r.out).toMatch(/t0001: t0001 reported accuracy, compute_s, data_wait_s, epoch, val_loss — not val_acc/);
    expect(r.err).toMatch(/no trial reported val_acc/);
  });

  it("a completed study with a best result exits 0", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const r = await run(nats.url, prefix, ["study", "run", spec("fine")]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/best: t0002 val_acc=/);
  });
});

describe("detach", () => {
  it("Ctrl-C exits 130; status then says detached and shows the trials the agents finished as finished", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const runner = cli(nats.url, prefix, ["study", "run", spec("detach", { args: "--epoch-ms 400" })]);
    procs.push(runner);
    await waitFor(
      "both trials running",
      async () => (await events(nats.url, prefix, "detach")).filter((e) => e.type === "started").length === 2,
      30_000,
      200,
    );
    runner.child.kill("SIGINT");
    expect(await runner.exited).toBe(130);
    await waitFor(
      "both trials finished",
      async () => (await events(nats.url, prefix, "detach")).filter((e) => e.type === "finished").length === 2,
      30_000,
      200,
    );
    const status = await run(nats.url, prefix, ["study", "status", "detach"]);
    expect(status.out).toMatch(/study detach: detached ·.* 0 running · 0 queued · 2 completed/);
    expect(status.out).toMatch(/run "rung study run SPEC" to resume/);
    const json = JSON.parse((await run(nats.url, prefix, ["study", "status", "detach", "--json"])).out) as {
      state: string;
      trials: { state: string }[];
    };
    expect(json.state).toBe("detached");
    expect(json.trials.map((t) => t.state)).toEqual(["completed", "completed"]);
  });
});

describe("delete", () => {
  it("refuses a live study without --force; --force stops its trials and removes everything it left", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 1));
    // Three trials, one GPU: one runs, one order waits in the queue.
    const file = spec("live", { qualities: [0.2, 0.4, 0.6], args: "--epoch-ms 5000" });
    const runner = cli(nats.url, prefix, ["study", "run", file]);
    procs.push(runner);
    await waitFor(
      "a trial running",
      async () => (await events(nats.url, prefix, "live")).some((e) => e.type === "started"),
      30_000,
      200,
    );
    const refused = await run(nats.url, prefix, ["study", "delete", "live"]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/study live is still running .* --force/);
    const forced = await run(nats.url, prefix, ["study", "delete", "live", "--force", "--yes"]);
    expect(forced.code).toBe(0);
    expect(forced.out).toMatch(/study live deleted/);
    // The coordinator saw the stop and wound down; the trial's agent stopped it before the delete.
    expect(await runner.exited).toBe(5);
    const list = await run(nats.url, prefix, ["study", "list", "--json"]);
    expect(JSON.parse(list.out)).toEqual([]);
    expect(await events(nats.url, prefix, "live")).toEqual([]);
    // Nothing of it runs on, nor waits to run: the agent's GPU is free and no order is left.
    await waitFor(
      "the agent's GPU free",
      async () => {
        const adverts = JSON.parse((await run(nats.url, prefix, ["agents", "--json"])).out) as { freeGpus: number }[];
        return adverts[0]?.freeGpus === 1;
      },
      15_000,
      300,
    );
    const nc = await connectNats({ url: nats.url });
    try {
      const { jetstreamManager } = await import("@nats-io/jetstream");
      const jsm = await jetstreamManager(nc);
      expect((await jsm.streams.info(new MeshNames(prefix).streams.work)).state.messages).toBe(0);
    } finally {
      await nc.close();
    }
  });
});

describe("delete takes only the study's own keys", () => {
  it("deleting a study named like a kind of control key (ckpt) leaves the other studies' checkpoint indexes and work keys", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    const names = new MeshNames(prefix);
    procs.push(...rungAgents(nats.url, prefix, 1));
    expect((await run(nats.url, prefix, ["study", "run", spec("ckpt", { qualities: [0.5] })])).code).toBe(0);
    const nc = await connectNats({ url: nats.url });
    try {
      const { Kvm } = await import("@nats-io/kv");
      const control = await new Kvm(nc).open(names.buckets.control);
      // Another study's keys of every kind, and one of the study's own stop keys.
      const others = [
        names.subjects.checkpointIndexKey("other", "t0001"),
        names.subjects.claimNoticeKey("other", "t0001"),
        names.subjects.workWakeKey("gpu1"),
        names.subjects.controlKey("other", "t0001"),
      ];
      for (const k of others) await control.put(k, new TextEncoder().encode("{}"));
      await control.put(names.subjects.controlKey("ckpt", "t0001"), new TextEncoder().encode("{}"));
      await control.put(names.subjects.claimNoticeKey("ckpt", "t0001"), new TextEncoder().encode("{}"));
      expect((await run(nats.url, prefix, ["study", "delete", "ckpt", "--yes"])).code).toBe(0);
      for (const k of others) expect((await control.get(k))?.operation, k).toBe("PUT");
      for (const k of [names.subjects.controlKey("ckpt", "t0001"), names.subjects.claimNoticeKey("ckpt", "t0001")])
        expect((await control.get(k))?.operation ?? "gone", k).not.toBe("PUT");
    } finally {
      await nc.close();
    }
  });
});

describe("a study is an incarnation, not a name", () => {
  it("the same spec runs again at once after a delete, as a new study with every trial's value", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const file = spec("again", { qualities: [0.3, 0.6, 0.9] });
    expect((await run(nats.url, prefix, ["study", "run", file])).code).toBe(0);
    expect((await run(nats.url, prefix, ["study", "delete", "again", "--yes"])).code).toBe(0);
    // Within the duplicate window: the new study's orders and events must not be taken for the old ones'.
    const second = cli(nats.url, prefix, ["study", "run", file]);
    procs.push(second);
    const code = await Promise.race([second.exited, new Promise((r) => setTimeout(() => r("hung"), 60_000))]);
    expect(code, second.out()).toBe(0);
    const evs = await events(nats.url, prefix, "again");
    expect(evs.filter((e) => e.type === "started")).toHaveLength(3);
    const ended = evs.filter((e) => e.type === "ended");
    expect(ended.map((e) => e.type === "ended" && e.status)).toEqual(["completed", "completed", "completed"]);
    const json = JSON.parse((await run(nats.url, prefix, ["study", "status", "again", "--json"])).out) as {
      trials: { bestValue: number | null }[];
    };
    expect(json.trials.every((t) => typeof t.bestValue === "number")).toBe(true);
  });
});

describe("silent waits get a sentence and a limit", () => {
  it("report_timeout fails a trial that stops reporting, saying so", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 1));
    const r = await run(nats.url, prefix, [
      "study",
      "run",
      spec("hang", { qualities: [0.5], args: "--hang-after 2", extra: { report_timeout: "3s" } }),
    ]);
    expect(r.code).toBe(4);
    expect(r.out).toMatch(/t0001: no report for 3s \(report_timeout\)/);
  });

  it("trial_timeout fails an attempt that runs too long", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 1));
    const r = await run(nats.url, prefix, [
      "study",
      "run",
      spec("slow", { qualities: [0.5], args: "--epoch-ms 1000", extra: { trial_timeout: "4s" } }),
    ]);
    expect(r.code).toBe(4);
    expect(r.out).toMatch(/t0001: attempt 1 ran longer than 4s \(trial_timeout\)/);
  });

  it("a study asking for more GPUs than any agent has says so", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const runner = cli(nats.url, prefix, ["study", "run", spec("big", { extra: { resources: { gpus: 4 } } })]);
    procs.push(runner);
    await waitForOutput(runner, /no agent has 4 GPUs; the largest has 1/, 30_000);
    runner.child.kill("SIGINT");
    expect(await runner.exited).toBe(130);
  });

  it("a study of CPU trials on agents that offer no CPU slot says so instead of waiting in silence", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 1));
    const runner = cli(nats.url, prefix, ["study", "run", spec("cpu", { extra: { resources: { gpus: 0 } } })]);
    procs.push(runner);
    await waitForOutput(runner, /no live agent offers a CPU slot.*--cpu-slots/, 30_000);
    runner.child.kill("SIGINT");
    expect(await runner.exited).toBe(130);
  });
});

describe("continue and extend", () => {
  it("more --samples extend a completed study; nothing that finished runs again", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 2));
    const file = spec("grow", {
      extra: { search: { algorithm: "random", samples: 2, seed: 3, space: { quality: { uniform: [0.1, 0.9] } } } },
    });
    expect((await run(nats.url, prefix, ["study", "run", file])).code).toBe(0);
    const first = await events(nats.url, prefix, "grow");
    const params = new Map(first.filter((e) => e.type === "created").map((e) => [e.trial, e.type === "created" && e.params]));
    const r = await run(nats.url, prefix, ["study", "run", file, "--samples", "4"]);
    expect(r.code).toBe(0);
    const all = await events(nats.url, prefix, "grow");
    const started = new Map<string, number>();
    for (const e of all) if (e.type === "started") started.set(e.trial, (started.get(e.trial) ?? 0) + 1);
    expect([...started.entries()].sort()).toEqual([
      ["t0001", 1],
      ["t0002", 1],
      ["t0003", 1],
      ["t0004", 1],
    ]);
    // The trials that had run kept their parameters.
    for (const e of all) if (e.type === "created" && params.has(e.trial)) expect(e.params).toEqual(params.get(e.trial));
    // Fewer samples than the study has is refused in one sentence.
    const fewer = await run(nats.url, prefix, ["study", "run", file, "--samples", "1"]);
    expect(fewer.code).toBe(1);
    expect(fewer.err).toMatch(/search\.samples can only grow \(the study has 4, the spec asks for 1\)/);
  });

  it("a stopped study runs on when run again: the trials that never ran are queued", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    procs.push(...rungAgents(nats.url, prefix, 1));
    const file = spec("resume", { qualities: [0.2, 0.4, 0.6], args: "--epoch-ms 500", extra: { max_concurrent: 1 } });
    const runner = cli(nats.url, prefix, ["study", "run", file]);
    procs.push(runner);
    await waitFor(
      "t0001 running",
      async () => (await events(nats.url, prefix, "resume")).some((e) => e.type === "started"),
      30_000,
      200,
    );
    expect((await run(nats.url, prefix, ["study", "stop", "resume"])).code).toBe(0);
    expect(await runner.exited).toBe(5);
    const again = await run(nats.url, prefix, ["study", "run", file]);
    expect(again.code).toBe(0);
    const all = await events(nats.url, prefix, "resume");
    const ended = new Map(all.filter((e) => e.type === "ended").map((e) => [e.trial, e.type === "ended" && e.status]));
    expect(ended.get("t0001")).toBe("cancelled");
    expect(ended.get("t0002")).toBe("completed");
    expect(ended.get("t0003")).toBe("completed");
    expect(all.filter((e) => e.type === "started" && e.trial === "t0001")).toHaveLength(1);
  });
});
