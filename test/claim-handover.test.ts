import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TrialEvent, TrialEventOf } from "@rung/protocol";
import { rung, rungAgent, waitFor, waitForOutput } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { studyEvents } from "./gpu-helpers.js";

/**
 * At most one copy of a trial runs, whatever the agents' leases say.
 *
 * A claimed order stays an agent's while it heartbeats within the work consumer's ack wait (the claim
 * lease); each agent heartbeats at a third of its own `--lease`, and gives its copy up when it finds
 * itself past that lease. Two ways that went wrong, each the user's steps on a real nats-server:
 *  - an agent started with a shorter `--lease` than the agents already running set the shared
 *    consumer's ack wait to its own, so the server handed the others' orders on between two of their
 *    heartbeats, and both copies ran to their end (the older agent's lease check never fired). Now
 *    agents only lengthen it, and a study's coordinator, which sees each agent's lease in its advert,
 *    brings it down once no live agent needs it;
 *  - an agent whose claim the server handed on while the agent itself did not notice (an older agent
 *    version changing the ack wait as above, or a heartbeat sent just inside its lease that reached the
 *    server after it) ran its copy on. Now the coordinator, seeing the newer attempt claimed while the
 *    older still runs, writes a claim notice that makes the older copy's agent kill it at once.
 */
const it = meshTest.extend("leakGraceMs", 5000);

const EPOCHS = 30;
const EPOCH_MS = 500;

function spec(name: string, trials: number, epochs = EPOCHS): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-handover-"));
  const file = join(dir, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs ${epochs} --epoch-ms ${EPOCH_MS}`,
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { quality: { grid: [0.3, 0.6, 0.9].slice(0, trials) } } },
      scheduler: { type: "fifo" },
      resources: { gpus: 1 },
      max_concurrent: trials,
      retries: 0,
    }),
  );
  return file;
}

function claims(evs: TrialEvent[]): TrialEventOf<"claimed">[] {
  return evs.filter((e): e is TrialEventOf<"claimed"> => e.type === "claimed");
}

describe("one copy of a trial at a time", () => {
  it("an agent started with a shorter --lease leaves the running agents' claims alone, says the mesh keeps the longer lease, and the lease comes down once no agent needs it", async ({
    mesh,
    procs,
  }) => {
    const state = mkdtempSync(join(tmpdir(), "rung-handover-agents-"));
    const agent = (name: string, lease: string) => rungAgent(mesh.url, mesh.prefix, { name, stateDir: join(state, name), lease });
    const a1 = agent("a1", "12s");
    procs.push(a1);
    const run = rung(["study", "run", spec("leases", 2), ...mesh.flags]);
    procs.push(run);
    // a1, alone, claims a trial; it heartbeats every 4 s, a third of its lease.
    const first = await waitFor(
      "a1 to claim a trial",
      async () => claims(await studyEvents(mesh.url, mesh.prefix, "leases"))[0],
      30_000,
      200,
    );
    expect(first.agent).toBe("a1");
    // Two agents with a 3 s lease join: one takes the other trial, the other is free to take a1's order
    // if the server hands it on.
    const a2 = agent("a2", "3s");
    procs.push(a2, agent("a3", "3s"));
    await waitForOutput(a2, /shorter than the 12s claim lease the mesh keeps/, 20_000);
    // The mesh's table says so too, once every agent has advertised.
    await waitFor(
      "rung agents to show the leases",
      async () => {
        const table = rung(["agents", ...mesh.flags]);
        await table.exited;
        return /claim leases differ \(a1 12s, a2 3s, a3 3s\)/.test(table.out());
      },
      20_000,
      300,
    );

    expect(await run.exited, run.out().slice(-2000)).toBe(0);
    const evs = await studyEvents(mesh.url, mesh.prefix, "leases");
    // Each trial was claimed once: a1's order was never handed on ...
    expect(
      claims(evs)
        .map((e) => `${e.trial}#${e.attempt}`)
        .sort(),
    ).toEqual(["t0001#1", "t0002#1"]);
    // ... though a1's trial ran on long after the 3 s agents came (one of them idle): time enough for the
    // server to hand it on, had the consumer taken their lease.
    const other = claims(evs).find((e) => e.agent !== "a1");
    const a1Done = evs.find((e) => e.type === "finished" && e.agent === "a1");
    expect((a1Done?.ts ?? 0) - (other?.ts ?? Number.POSITIVE_INFINITY)).toBeGreaterThan(5000);
    expect(evs.filter((e) => e.type === "ended").map((e) => (e.type === "ended" ? e.status : null))).toEqual([
      "completed",
      "completed",
    ]);
    const ackWait = async () =>
      (await mesh.resources.jsm.consumers.info(mesh.names.streams.work, mesh.names.workConsumer("gpu1"))).config.ack_wait;
    expect(await ackWait()).toBe(12_000 * 1_000_000);

    // a1 goes: the next study's coordinator sees only 3 s agents and, once 3 s has been all they needed
    // for a whole 12 s lease, brings the lease down to theirs.
    await a1.stop();
    const next = rung(["study", "run", spec("after", 1, 40), ...mesh.flags]);
    procs.push(next);
    expect(await next.exited, next.out().slice(-2000)).toBe(0);
    expect(await ackWait()).toBe(3_000 * 1_000_000);
  });

  it("an agent whose claim was handed on without its knowing kills its copy as soon as the newer attempt is claimed", async ({
    mesh,
    procs,
  }) => {
    const state = mkdtempSync(join(tmpdir(), "rung-handover-agents-"));
    const a1 = rungAgent(mesh.url, mesh.prefix, { name: "a1", stateDir: join(state, "a1"), lease: "30s" });
    procs.push(a1);
    const run = rung(["study", "run", spec("handover", 1), ...mesh.flags]);
    procs.push(run);
    const first = await waitFor(
      "a report of the first attempt",
      async () => (await studyEvents(mesh.url, mesh.prefix, "handover")).find((e) => e.type === "report"),
      30_000,
      200,
    );
    expect(first.agent).toBe("a1");
    // A second agent with a 2 s lease (it heartbeats every 0.7 s), then what an agent of an older version
    // does when it starts with `--lease 2s`: set the shared consumer's ack wait to its own. The server now
    // hands a1's order on 2 s after a1's last heartbeat, while a1, with its 30 s lease, sees nothing wrong.
    const a2 = rungAgent(mesh.url, mesh.prefix, { name: "a2", stateDir: join(state, "a2"), lease: "2s" });
    procs.push(a2);
    await waitForOutput(a2, /shorter than the 30s claim lease/, 20_000);
    await mesh.resources.jsm.consumers.update(mesh.names.streams.work, mesh.names.workConsumer("gpu1"), {
      ack_wait: 2_000 * 1_000_000,
    });

    expect(await run.exited, run.out().slice(-2000)).toBe(0);
    const evs = await studyEvents(mesh.url, mesh.prefix, "handover");
    const second = claims(evs).find((e) => e.attempt === 2);
    expect(second, "the order handed on to the other agent").toBeDefined();
    expect(second?.agent).toBe("a2");
    const older = evs.find((e): e is TrialEventOf<"finished"> => e.type === "finished" && e.attempt === 1);
    // The older copy went as soon as the coordinator saw attempt 2 claimed, not at the end of its run
    // (nor 30 s later, when its own lease check would have found out).
    expect(older).toMatchObject({ agent: "a1", status: "stopped", reason: "claim-lost" });
    expect((older?.ts ?? Number.POSITIVE_INFINITY) - (second?.ts ?? 0)).toBeLessThan(5000);
    expect(run.out()).toMatch(/attempt 2 claimed by a2 while attempt 1 was still running on a1; told it to stop its copy/);
    expect(a1.out()).toMatch(/claim lost: attempt 2 of this trial was claimed by agent a2/);
    expect(evs.filter((e) => e.type === "ended").map((e) => (e.type === "ended" ? e.status : null))).toEqual(["completed"]);
  });
});
