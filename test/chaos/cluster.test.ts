import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect } from "vitest";
import { expectSound } from "./expect.js";
import { anyProgress, chaosSpec, it, runningAttempts, sleep } from "./harness/index.js";

// Scenario 4: a three-node JetStream cluster (streams and buckets with 3 replicas). One node is killed
// with SIGKILL and restarted later, twice: first a node that leads neither the work nor the events
// stream, then the leader of the events stream (the study's source of truth).

const QUALITIES = [0.5, 0.9, 0.3, 0.95, 0.2, 0.7, 0.85, 0.4, 0.99, 0.1, 0.6, 0.8, 0.45, 0.75, 0.92, 0.35];

describe("chaos 4: a node of a three-node cluster killed and restarted", () => {
  it("loses nothing when a follower dies, nor when the events stream's leader does", async ({ cluster, openChaos }) => {
    const m = await openChaos({
      scenario: "4 cluster node kill",
      url: cluster.url,
      study: "cluster",
      agentFlags: ["--replicas", "3"],
      studyFlags: ["--replicas", "3"],
      precreate: { replicas: 3 },
    });
    m.startAgents(3);
    m.startStudy(chaosSpec("cluster", { qualities: QUALITIES, epochMs: 400, maxConcurrent: 3 }));
    await m.waitForEvents("trials mid-run", (evs) => runningAttempts(evs, 1).length >= 2);
    const jsm = await jetstreamManager(m.nc);
    const leaders = async () => ({
      events: (await jsm.streams.info(m.names.streams.events)).cluster?.leader,
      work: (await jsm.streams.info(m.names.streams.work)).cluster?.leader,
    });
    const replicas = (await jsm.streams.info(m.names.streams.events)).config.num_replicas;
    expect(replicas).toBe(3);

    const outage = async (name: string, why: string) => {
      const node = cluster.servers.find((s) => s.options.serverName === name);
      if (!node) throw new Error(`no node ${name}`);
      const f = m.fault({ kind: "cluster node SIGKILL", target: name, note: why, recovered: anyProgress });
      node.signal("SIGKILL");
      await node.exited;
      await sleep(4000);
      await node.restart();
      f.clearedAt = Date.now();
      m.notes.push(`killed ${name} (${why}) at ${new Date(f.at).toISOString().slice(11, 23)}, restarted 4 s later`);
    };

    const l1 = await leaders();
    const follower = ["n1", "n2", "n3"].find((n) => n !== l1.events && n !== l1.work) ?? "n1";
    await outage(follower, "leads neither stream");
    await m.waitForEvents("a trial mid-run again", (evs) => runningAttempts(evs, 1).some((r) => r.reports >= 2), 60_000);
    const l2 = await m
      .waitForEvents("an events stream leader", async () => (await leaders()).events, 20_000)
      .catch(() => undefined);
    await outage(l2 ?? "n1", "the events stream's leader");
    const r = await m.finish({
      faults: "SIGKILL of a follower node, then of the events stream's leader; each restarted 4 s later",
    });
    expectSound(r, { outcome: "completed", trials: QUALITIES.length });
    expect(r.ttr.every((x) => x !== null)).toBe(true);
  });
});
