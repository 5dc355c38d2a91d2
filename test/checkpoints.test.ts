import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { readStudyEvents } from "@rung/coordinator";
import { connectNats, ensureCheckpointStore, MeshNames, type TrialEvent, type TrialEventOf } from "@rung/protocol";
import { rung, rungAgent, type TestProcess, uniquePrefix, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * Trials that survive rented boxes: a trial checkpoints every epoch (`"checkpoint": true`), the agent
 * stores each snapshot in the mesh, and whichever agent runs the next attempt — each with its own state
 * directory, so nothing is shared on local disk — restores the newest snapshot that checks out.
 */

function spec(name: string, extra: Record<string, unknown> = {}): string {
  const file = join(mkdtempSync(join(tmpdir(), "rung-ckpt-spec-")), `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs 8 --epoch-ms 500 --checkpoint`,
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { quality: { grid: [0.8] } } },
      scheduler: { type: "fifo" },
      resources: { gpus: 1 },
      retries: 0,
      ...extra,
    }),
  );
  return file;
}

interface Mesh {
  url: string;
  prefix: string;
  names: MeshNames;
  nc: NatsConnection;
  cli(args: string[]): TestProcess;
  agent(name: string): TestProcess;
  events(study: string): Promise<TrialEvent[]>;
  /** The study's stored snapshots, once there are at least `n`. */
  checkpoints(study: string, n: number): Promise<TrialEventOf<"checkpoint">["ref"][]>;
}

function open(url: string, nc: NatsConnection, procs: TestProcess[]): Mesh {
  const prefix = uniquePrefix();
  const names = new MeshNames(prefix);
  const state = mkdtempSync(join(tmpdir(), "rung-ckpt-agents-"));
  return {
    url,
    prefix,
    names,
    nc,
    cli(args) {
      const p = rung([...args, "--nats", url, "--prefix", prefix]);
      procs.push(p);
      return p;
    },
    agent(name) {
      const p = rungAgent(url, prefix, { name, stateDir: join(state, name), lease: "2s" });
      procs.push(p);
      return p;
    },
    async events(study) {
      return (await readStudyEvents(nc, names, study)).map((s) => s.event);
    },
    async checkpoints(study, n) {
      await waitFor(`${n} checkpoints`, async () => of(await this.events(study), "checkpoint").length >= n, 30_000, 100);
      return of(await this.events(study), "checkpoint").map((e) => e.ref);
    },
  };
}

const of = <T extends TrialEvent["type"]>(evs: TrialEvent[], type: T) => evs.filter((e): e is TrialEventOf<T> => e.type === type);

/** A mesh of its own for each test, with a connection closed after it. */
const it = meshTest.extend("leakGraceMs", 5000).extend("m", async ({ nats, procs }, { onCleanup }) => {
  const nc = await connectNats({ url: nats.url });
  onCleanup(() => nc.close());
  return open(nats.url, nc, procs);
});

describe("checkpoints in the mesh", () => {
  it("a box killed with kill -9 after epoch k: the next attempt, on another box, resumes at k; a corrupt snapshot is skipped", async ({
    m,
  }) => {
    const first = m.agent("doomed");
    const study = m.cli(["study", "run", spec("killed")]);
    // Three snapshots stored (epochs 1..3; two are kept): then the newest is damaged in the bucket —
    // a partial upload, a disk error — and the box dies without a word.
    const stored = await m.checkpoints("killed", 3);
    first.child.kill("SIGKILL");
    const newest = stored.at(-1) as (typeof stored)[number];
    const previous = stored.at(-2) as (typeof stored)[number];
    const os = await ensureCheckpointStore(m.nc, m.names);
    await os.putBlob({ name: newest.object }, new Uint8Array(Buffer.from("not what was stored")));
    m.agent("heir");
    expect(await study.exited, study.out()).toBe(0);

    const all = await m.events("killed");
    const started = of(all, "started");
    expect(started.map((e) => [e.attempt, e.agent])).toEqual([
      [1, "doomed"],
      [2, "heir"],
    ]);
    // The heir resumed from the newest snapshot that checks out, not from epoch 0, and its `started`
    // event names the one it skipped.
    expect(started[1]?.resumedFrom?.t).toBe(previous.t);
    expect(started[1]?.skippedCheckpoints?.map((s) => [s.t, s.object])).toEqual([[newest.t, newest.object]]);
    expect(previous.t).toBeGreaterThanOrEqual(2);
    const log = m.cli(["logs", "killed/t0001", "--attempt", "2"]);
    expect(await log.exited).toBe(0);
    const text = log.out();
    expect(text).toMatch(
      new RegExp(`\\[rung\\] skipped the checkpoint at epoch=${newest.t} \\(attempt 1 on doomed\\): its bytes do not match`),
    );
    expect(text).toMatch(new RegExp(`\\[rung\\] resuming from the checkpoint at epoch=${previous.t} \\(attempt 1 on doomed`));
    expect(text).toContain(`resumed at epoch ${previous.t} (RUNG_RESUME_FROM=${previous.t})`);
    expect(text).not.toContain("epoch 1 val_acc");
    // Nothing lost: the trial completed all 8 epochs, its value is the full curve's.
    const status = m.cli(["study", "status", "killed", "--json"]);
    expect(await status.exited).toBe(0);
    const s = JSON.parse(status.out()) as { trials: { state: string; lastT: number; bestValue: number }[] };
    expect(s.trials[0]).toMatchObject({ state: "completed", lastT: 8 });
    expect(s.trials[0]?.bestValue).toBeCloseTo(0.8 * (1 - 1 / 9), 6);
    const report = m.cli(["study", "report", "killed", "--json"]);
    expect(await report.exited).toBe(0);
    const r = JSON.parse(report.out()) as {
      checkpoints: { resumedAttempts: number; gpuSecondsSaved: number; storedBytes: number };
    };
    expect(r.checkpoints.resumedAttempts).toBe(1);
    expect(r.checkpoints.gpuSecondsSaved).toBeGreaterThan(0.5);
    expect(r.checkpoints.storedBytes).toBeGreaterThan(64 * 1024);

    // The best trial's last checkpoint outlives the study: fetch it.
    const out = mkdtempSync(join(tmpdir(), "rung-ckpt-out-"));
    const fetch = m.cli(["study", "checkpoint", "killed", "t0001", "--out", out]);
    expect(await fetch.exited, fetch.stderr()).toBe(0);
    expect(fetch.out()).toMatch(/wrote 2 file\(s\) of killed\/t0001's checkpoint at epoch=8/);

    // A deleted study leaves no snapshot behind.
    const del = m.cli(["study", "delete", "killed", "--yes"]);
    expect(await del.exited).toBe(0);
    const left = (await os.list()).filter((o) => !o.deleted && o.name.startsWith("killed"));
    expect(left).toEqual([]);
  });

  it("SIGTERM to a box (a spot reclaim) preempts its trial: a last checkpoint, then the trial moves on, no retry used", async ({
    m,
  }) => {
    const first = m.agent("spot");
    const study = m.cli(["study", "run", spec("reclaimed")]);
    await m.checkpoints("reclaimed", 2);
    m.agent("ondemand");
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);
    // retries: 0 — a preemption is not a failure.
    expect(await study.exited, study.out()).toBe(0);
    const all = await m.events("reclaimed");
    const finished = of(all, "finished");
    expect(finished.map((e) => [e.attempt, e.agent, e.status])).toEqual([
      [1, "spot", "preempted"],
      [2, "ondemand", "completed"],
    ]);
    // Attempt 2 starts from the last snapshot attempt 1 stored (its last one, written before it stopped).
    const lastOfFirst = of(all, "checkpoint")
      .filter((e) => e.attempt === 1)
      .at(-1);
    const resumed = of(all, "started").find((e) => e.attempt === 2)?.resumedFrom;
    expect(resumed?.object).toBe(lastOfFirst?.ref.object);
    const status = m.cli(["study", "status", "reclaimed"]);
    expect(await status.exited).toBe(0);
    expect(status.out()).toMatch(/t0001 .*completed/);
    expect(status.out()).toMatch(/attempt 1 preempted on spot/);
  });
});
