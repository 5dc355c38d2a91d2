import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { createSigningKey, encode, ensureResources, signOrder, type WorkOrder } from "@rung/protocol";
import { rungAgent, type TestMesh, type TestProcess, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { EventLog, makeOrder, NODE, tempDir, writeTrials } from "./agent-helpers.js";

/**
 * Issue 13, item 2: an order that has run must never run again, whatever happens around it. A copy of
 * it published after the work stream was deleted and created again lands on the original's stream
 * sequence (numbering starts at 1 again), so the sequence alone cannot tell a copy from a redelivery.
 * Three ways the copy reaches an agent — each must refuse it (`replayed`) and start nothing:
 *   1. another agent, which never saw the order: the mesh's nonces bucket must know it;
 *   2. the agent that ran it, with the nonces purged: its own ledger must know it;
 *   3. the same, restarted on its state dir: the ledger on disk must know it.
 * The agents are `rung agent` processes with --trust; the "attacker" publishes bytes with a JetStream client.
 */

const it = meshTest.extend("leakGraceMs", 5000);
const coordinator = createSigningKey();

interface Setup {
  events: EventLog;
  dir: string;
  order: WorkOrder;
  marker: string;
}

async function setup(mesh: TestMesh, onCleanup: (fn: () => Promise<void>) => void): Promise<Setup> {
  const events = await EventLog.start(mesh.nc, mesh.names);
  onCleanup(() => events.stop());
  const dir = tempDir("rung-replay-");
  const t = writeTrials(dir);
  const marker = join(dir, "once.ran");
  const order = signOrder(makeOrder({ study: "replay", trial: "once", argv: [NODE, t.argv, marker] }), coordinator.seed);
  return { events, dir, order, marker };
}

function secureAgent(mesh: TestMesh, s: Setup, name: string): TestProcess {
  return rungAgent(mesh.url, mesh.prefix, {
    name,
    workdir: s.dir,
    stateDir: join(s.dir, "state", name),
    fakeGpus: 1,
    flags: ["--trust", coordinator.publicKey],
    env: { RUNG_LOG_LEVEL: "info" },
  });
}

async function publish(mesh: TestMesh, order: WorkOrder, msgID: string): Promise<number> {
  const ack = await mesh.js.publish(mesh.names.subjects.work(order.pool), encode(order), { msgID });
  return ack.seq;
}

/** Runs the order once on `agent`, then arms the marker: a second run would overwrite it. */
async function runOnce(mesh: TestMesh, s: Setup): Promise<void> {
  expect(await publish(mesh, s.order, "original")).toBe(1);
  expect((await s.events.wait("finished", "once", 30_000)).status).toBe("completed");
  writeFileSync(s.marker, "reset");
}

/** Deletes the work stream and creates it again, as an operator's `nats stream rm` and a restart would. */
async function recreateWorkStream(mesh: TestMesh): Promise<void> {
  const jsm = await jetstreamManager(mesh.nc);
  await jsm.streams.delete(mesh.names.streams.work);
  await ensureResources(mesh.nc, mesh.names);
}

async function purgeNonces(mesh: TestMesh): Promise<void> {
  const jsm = await jetstreamManager(mesh.nc);
  await jsm.streams.purge(`KV_${mesh.names.nonces}`);
}

/** The copy lands on the original's sequence; `by` refuses it as a replay; nothing runs a second time. */
async function expectRefusedCopy(mesh: TestMesh, s: Setup, by: string): Promise<void> {
  expect(await publish(mesh, s.order, "copy")).toBe(1);
  const ev = await s.events.wait("rejected", "once", 30_000);
  expect(ev).toMatchObject({ agent: by, reason: "replayed", sender: coordinator.publicKey });
  expect(ev.detail).toMatch(/nonce .* is a copy/);
  // Give a wrongly accepted copy time to start before looking.
  await new Promise((r) => setTimeout(r, 1000));
  expect(s.events.of("started", "once")).toHaveLength(1);
  expect(readFileSync(s.marker, "utf8")).toBe("reset");
}

describe("a work stream created again cannot replay an old order", { timeout: 150_000 }, () => {
  it("on another agent: the nonces bucket knows the message by sequence and stored time", async ({
    mesh,
    procs,
    onTestFinished,
  }) => {
    const s = await setup(mesh, onTestFinished);
    const first = secureAgent(mesh, s, "first");
    procs.push(first);
    await runOnce(mesh, s);
    expect(await first.stop()).toBe(0);
    await recreateWorkStream(mesh);
    procs.push(secureAgent(mesh, s, "second"));
    await expectRefusedCopy(mesh, s, "second");
  });

  it("on the agent that ran it, with the mesh's nonce records purged: its ledger knows", async ({
    mesh,
    procs,
    onTestFinished,
  }) => {
    const s = await setup(mesh, onTestFinished);
    const agent = secureAgent(mesh, s, "keeper");
    procs.push(agent);
    await runOnce(mesh, s);
    await recreateWorkStream(mesh);
    await purgeNonces(mesh);
    await expectRefusedCopy(mesh, s, "keeper");
  });

  it("on that agent restarted with its state dir, nonces purged: the ledger on disk knows", async ({
    mesh,
    procs,
    onTestFinished,
  }) => {
    const s = await setup(mesh, onTestFinished);
    const before = secureAgent(mesh, s, "phoenix");
    procs.push(before);
    await runOnce(mesh, s);
    expect(await before.stop()).toBe(0);
    await recreateWorkStream(mesh);
    await purgeNonces(mesh);
    procs.push(secureAgent(mesh, s, "phoenix"));
    await expectRefusedCopy(mesh, s, "phoenix");
  });

  it("while a real redelivery of the same message still runs (attempt 2 on the next agent)", async ({
    mesh,
    procs,
    onTestFinished,
  }) => {
    const s = await setup(mesh, onTestFinished);
    const t = writeTrials(s.dir);
    const order = signOrder(
      makeOrder({ study: "replay", trial: "moved", argv: [NODE, t.sleep, "60000", "200"] }),
      coordinator.seed,
    );
    const leaving = rungAgent(mesh.url, mesh.prefix, {
      name: "leaving",
      workdir: s.dir,
      stateDir: join(s.dir, "state", "leaving"),
      flags: ["--trust", coordinator.publicKey, "--drain", "requeue"],
    });
    procs.push(leaving);
    await publish(mesh, order, "moved");
    await s.events.wait("started", "moved", 30_000);
    expect(await leaving.stop()).toBe(0); // drain requeue: the same message goes back to the queue
    procs.push(secureAgent(mesh, s, "heir"));
    const done = await s.events.wait("finished", "moved", 30_000, (e) => e.attempt === 2);
    expect(done).toMatchObject({ agent: "heir", status: "completed" });
    expect(s.events.of("rejected", "moved")).toEqual([]);
    await waitFor(
      "no order left",
      async () => (await (await jetstreamManager(mesh.nc)).streams.info(mesh.names.streams.work)).state.messages === 0,
    );
  });
});
