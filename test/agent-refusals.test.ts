import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { listAdverts } from "@rung/agent";
import { readStudyEvents } from "@rung/coordinator";
import { createSigningKey, type TrialEvent } from "@rung/protocol";
import { REPO, rung, rungAgent, type TestMesh, type TestProcess, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * Issue 13, item 1: one misconfigured agent must not black-hole a study. An agent that cannot run an
 * order for a reason of its own — it does not trust the signer, its --workdir lacks the study's
 * workdir, it lacks the program — hands the order back for another agent instead of failing the trial,
 * and says why (log, event, advert). Everything through the built CLI on a real nats-server.
 */

// Agents and coordinators as processes take their time to wind down.
const it = meshTest.extend("leakGraceMs", 5000);

const coordinatorKey = createSigningKey();
const rotatedKey = createSigningKey();

interface Status {
  counts: Record<string, number>;
  trials: { trial: string; state: string; attempts: number; endReason: string | null }[];
}

function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * An agent root whose `study/` holds the study's program, `./trial.sh` (the curve fixture: a report per
 * epoch on RUNG_REPORT). `withStudy: false` leaves `study/` out; `withProgram: false` leaves it empty.
 */
function agentRoot(o: { withStudy?: boolean; withProgram?: boolean } = {}): string {
  const root = tempDir("rung-refusal-root-");
  if (o.withStudy === false) return root;
  mkdirSync(join(root, "study"));
  if (o.withProgram === false) return root;
  const script = join(root, "study", "trial.sh");
  writeFileSync(script, `#!/bin/sh\nexec "${process.execPath}" "${join(REPO, "test", "fixtures", "curve-trial.mjs")}" "$@"\n`);
  chmodSync(script, 0o755);
  return root;
}

/** A study of `n` short trials with `retries: 0`: one lost trial would show as failed. */
function studySpec(name: string, n: number): string {
  const file = join(tempDir("rung-refusal-spec-"), `${name}.json`);
  const grid = Array.from({ length: n }, (_, i) => Math.round((0.3 + (0.6 * i) / Math.max(1, n - 1)) * 100) / 100);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      command: "./trial.sh --quality {quality} --epochs {max_t} --epoch-ms 80",
      workdir: "study",
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", samples: 1, seed: 1, space: { quality: { grid } } },
      scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 3 },
      resources: { gpus: 1 },
      max_concurrent: 2,
      retries: 0,
    }),
  );
  return file;
}

function keyFile(seed: string): string {
  const file = join(tempDir("rung-refusal-key-"), "signing.nk");
  writeFileSync(file, `${seed}\n`, { mode: 0o600 });
  return file;
}

function agent(mesh: TestMesh, name: string, workdir: string, flags: string[]): TestProcess {
  return rungAgent(mesh.url, mesh.prefix, {
    name,
    workdir,
    stateDir: join(tempDir("rung-refusal-state-"), name),
    fakeGpus: 1,
    flags,
    env: { RUNG_LOG_LEVEL: "info" },
  });
}

async function status(mesh: TestMesh, study: string): Promise<Status> {
  const p = rung(["study", "status", study, "--json", ...mesh.flags]);
  const code = await p.exited;
  if (code !== 0) throw new Error(`rung study status exited ${code}: ${p.out()}`);
  return JSON.parse(p.stdout().toString()) as Status;
}

/** The study's events as stored. */
async function studyEvents(mesh: TestMesh, study: string): Promise<TrialEvent[]> {
  return (await readStudyEvents(mesh.nc, mesh.names, study)).map((s) => s.event);
}

async function ordersLeft(mesh: TestMesh): Promise<number> {
  return (await (await jetstreamManager(mesh.nc)).streams.info(mesh.names.streams.work)).state.messages;
}

/** The study's exit code; when it has not ended within `ms`, fails with its output and the agents' logs. */
async function studyExit(study: TestProcess, agents: TestProcess[], ms = 90_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((r) => {
    timer = setTimeout(() => r("late"), ms);
  });
  const code = await Promise.race([study.exited, late]);
  clearTimeout(timer);
  if (code === "late")
    throw new Error(
      `the study did not end within ${ms / 1000} s\n--- rung study run:\n${study.out().slice(-4000)}\n${agents
        .map((a) => `--- agent ${a.child.spawnargs[a.child.spawnargs.indexOf("--name") + 1]}:\n${a.out().slice(-4000)}`)
        .join("\n")}`,
    );
  return code;
}

async function waitForAdvert(mesh: TestMesh, name: string) {
  return waitFor(`${name}'s advert`, async () => (await listAdverts(mesh.nc, mesh.names)).find((a) => a.agent === name), 20_000);
}

// Real agents and a real coordinator on a loaded 2-core machine.
describe("orders an agent cannot run go to another agent", { timeout: 180_000 }, () => {
  it("a stale --trust key (after a rotation): every trial of a retries: 0 study completes on the healthy agent", async ({
    mesh,
    procs,
  }) => {
    const root = agentRoot();
    const stale = agent(mesh, "stale", root, ["--trust", rotatedKey.publicKey]);
    const healthy = agent(mesh, "healthy", root, ["--trust", coordinatorKey.publicKey]);
    procs.push(stale, healthy);
    await Promise.all([waitForAdvert(mesh, "stale"), waitForAdvert(mesh, "healthy")]);

    const study = rung(["study", "run", studySpec("rotated", 6), ...mesh.flags, "--signing-key", keyFile(coordinatorKey.seed)]);
    procs.push(study);
    expect(await studyExit(study, [stale, healthy]), study.out()).toBe(0);

    const s = await status(mesh, "rotated");
    expect(s.counts.failed, JSON.stringify(s.trials)).toBe(0);
    expect(s.counts.completed + s.counts.stopped).toBe(6);
    const events = await studyEvents(mesh, "rotated");
    // The stale agent refused work (with the healthy agent busy, the second queued order is its), said
    // so once per order, and never started anything.
    const refused = events.filter((e) => e.type === "rejected");
    expect(refused.length).toBeGreaterThan(0);
    for (const e of refused) expect(e).toMatchObject({ agent: "stale", reason: "untrusted-signer" });
    expect(new Set(refused.map((e) => e.trial)).size).toBe(refused.length);
    expect(events.filter((e) => e.type === "started" && e.agent === "stale")).toEqual([]);
    // …in its log and its advert too.
    expect(stale.out()).toMatch(/cannot run this order here \(untrusted-signer/);
    const advert = await waitForAdvert(mesh, "stale");
    expect(advert.refusals?.[0]).toMatchObject({ study: "rotated", reason: "untrusted-signer" });
    const table = rung(["agents", ...mesh.flags]);
    expect(await table.exited).toBe(0);
    expect(table.out()).toMatch(/stale cannot run rotated\/t\d+ \(untrusted-signer/);
  });

  it("a --workdir without the study's workdir, and one without its program: the study still completes", async ({
    mesh,
    procs,
  }) => {
    const noWorkdir = agent(mesh, "nodir", agentRoot({ withStudy: false }), ["--insecure"]);
    const noProgram = agent(mesh, "noprog", agentRoot({ withProgram: false }), ["--insecure"]);
    const healthy = agent(mesh, "healthy", agentRoot(), ["--insecure"]);
    procs.push(noWorkdir, noProgram, healthy);
    await Promise.all(["nodir", "noprog", "healthy"].map((n) => waitForAdvert(mesh, n)));

    const study = rung(["study", "run", studySpec("roots", 6), ...mesh.flags]);
    procs.push(study);
    const code = await studyExit(study, [noWorkdir, noProgram, healthy]).catch(async (err: Error) => {
      const jsm = await jetstreamManager(mesh.nc);
      const info = await jsm.consumers.info(mesh.names.streams.work, mesh.names.workConsumer("gpu1"));
      throw new Error(
        `${err.message}\n--- consumer: ${JSON.stringify({ pending: info.num_pending, ackPending: info.num_ack_pending, redelivered: info.num_redelivered, waiting: info.num_waiting, delivered: info.delivered })}`,
      );
    });
    expect(code, study.out()).toBe(0);
    const s = await status(mesh, "roots");
    expect(s.counts.failed, JSON.stringify(s.trials)).toBe(0);
    expect(s.counts.completed + s.counts.stopped).toBe(6);
    const events = await studyEvents(mesh, "roots");
    const refused = events.filter((e) => e.type === "rejected");
    expect(refused.length).toBeGreaterThan(0);
    for (const e of refused) {
      expect(e.type === "rejected" && e.reason).toBe("cannot-run");
      if (e.type !== "rejected") continue;
      if (e.agent === "nodir") expect(e.detail).toMatch(/working directory .*\/study does not exist on this agent/);
      else expect(e).toMatchObject({ agent: "noprog", detail: expect.stringMatching(/program "\.\/trial\.sh" not found/) });
    }
    // Checked before spawning: nothing ever started on the misconfigured agents.
    expect(events.filter((e) => e.type === "started" && e.agent !== "healthy")).toEqual([]);
  });

  it("when no live agent can run it, the trial fails with the agent's reason and the order leaves the queue", async ({
    mesh,
    procs,
  }) => {
    const stale = agent(mesh, "alone", agentRoot(), ["--trust", rotatedKey.publicKey]);
    procs.push(stale);
    await waitForAdvert(mesh, "alone");
    const study = rung(["study", "run", studySpec("nobody", 1), ...mesh.flags, "--signing-key", keyFile(coordinatorKey.seed)]);
    procs.push(study);
    await studyExit(study, [stale]);
    const s = await status(mesh, "nobody");
    expect(s.trials[0]).toMatchObject({ state: "failed" });
    expect(s.trials[0]?.endReason).toMatch(/alone.*untrusted-signer/);
    // The next delivery finds the stop key: the agent drops the order, and says nothing more.
    await waitFor("the refused order to leave the queue", async () => (await ordersLeft(mesh)) === 0, 60_000, 250);
    const events = await studyEvents(mesh, "nobody");
    expect(events.filter((e) => e.type === "rejected")).toHaveLength(1);
  });
});

describe("rung agent --workdir", () => {
  it("refuses to start when the directory does not exist, in one sentence", async ({ nats, procs }) => {
    const missing = join(tempDir("rung-refusal-"), "no-such-dir");
    const p = rung(["agent", "--nats", nats.url, "--insecure", "--fake-gpus", "1", "--workdir", missing]);
    procs.push(p);
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toMatch(new RegExp(`^rung: --workdir: ${missing} does not exist or is not a directory — create it`));
    expect(p.stderr().trim().split("\n")).toHaveLength(1);
  });
});
