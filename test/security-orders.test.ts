import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { Agent } from "@rung/agent";
import { createLogger, createSigningKey, decode, encode, LogChunkSchema, signOrder, type WorkOrder } from "@rung/protocol";
import { rung, uniquePrefix, waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { it, type Mesh, makeOrder, NODE, writeTrials } from "./agent-helpers.js";

/**
 * Agents started with --trust: what they run and what they refuse. "No process starts" is checked
 * three ways: no claimed or started event, the trial's marker file absent, the order gone from the
 * queue (terminated, not redelivered).
 */

const coordinator = createSigningKey();
const attacker = createSigningKey();

function secureAgent(m: Mesh, options: Parameters<Mesh["agent"]>[0] = {}): Promise<Agent> {
  return m.agent({ trust: [coordinator.publicKey], ...options });
}

/** An order whose trial writes `marker` when (and only when) it runs. */
function markerOrder(m: Mesh, trial: string, extra: Partial<WorkOrder> = {}): { order: WorkOrder; marker: string } {
  const t = writeTrials(m.dir);
  const marker = join(m.dir, `${trial}.ran`);
  return { order: makeOrder({ study: "sec", trial, argv: [NODE, t.argv, marker], ...extra }), marker };
}

async function ordersLeft(m: Mesh): Promise<number> {
  return (await (await jetstreamManager(m.nc)).streams.info(m.names.streams.work)).state.messages;
}

/** Publishes the same bytes again as a new stream message: what a replay is. */
async function publishCopy(m: Mesh, order: WorkOrder, msgID: string): Promise<void> {
  await m.js.publish(m.names.subjects.work(order.pool), encode(order), { msgID });
}

function neverStarted(m: Mesh, trial: string, marker: string): void {
  expect(m.events.of("claimed", trial)).toEqual([]);
  expect(m.events.of("started", trial)).toEqual([]);
  expect(existsSync(marker)).toBe(false);
}

describe("signed orders", () => {
  it("runs an order signed by a trusted key", async ({ newMesh }) => {
    const m = await newMesh();
    await secureAgent(m);
    const { order, marker } = markerOrder(m, "good");
    await m.publish(signOrder(order, coordinator.seed));
    expect((await m.events.wait("finished", "good")).status).toBe("completed");
    expect(existsSync(marker)).toBe(true);
  });

  it("rejects unsigned, untrusted, forged, altered, expired and disallowed orders; none starts", async ({ newMesh }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    const agent = await secureAgent(m, { allowCommand: [`${NODE} ${t.argv}`] });
    const cases: { trial: string; order: (o: WorkOrder) => WorkOrder; reason: string; sender: string | null }[] = [
      { trial: "unsigned", order: (o) => o, reason: "unsigned", sender: null },
      { trial: "untrusted", order: (o) => signOrder(o, attacker.seed), reason: "untrusted-signer", sender: attacker.publicKey },
      {
        trial: "forged",
        order: (o) => ({ ...signOrder(o, attacker.seed), signer: coordinator.publicKey }),
        reason: "bad-signature",
        sender: coordinator.publicKey,
      },
      {
        trial: "altered",
        order: (o) => ({ ...signOrder(o, coordinator.seed), params: { lr: 99 } }),
        reason: "bad-signature",
        sender: coordinator.publicKey,
      },
      {
        trial: "expired",
        order: (o) => signOrder({ ...o, issuedAt: Date.now() - 7200_000, expiresAt: Date.now() - 3600_000 }, coordinator.seed),
        reason: "expired",
        sender: coordinator.publicKey,
      },
      {
        trial: "disallowed",
        order: (o) => signOrder({ ...o, argv: [NODE, t.crash, "1", "0"] }, coordinator.seed),
        reason: "command-not-allowed",
        sender: coordinator.publicKey,
      },
    ];
    const markers = new Map<string, string>();
    for (const c of cases) {
      const { order, marker } = markerOrder(m, c.trial);
      markers.set(c.trial, marker);
      await m.publish(c.order(order));
    }
    for (const c of cases) {
      const ev = await m.events.wait("rejected", c.trial);
      expect(ev, c.trial).toMatchObject({ reason: c.reason, sender: c.sender, agent: agent.name, attempt: 1 });
    }
    // Give a wrongly accepted order time to start before looking.
    await new Promise((r) => setTimeout(r, 500));
    for (const c of cases) neverStarted(m, c.trial, markers.get(c.trial) as string);
    // Unsigned and untrusted orders may run on another agent (one --insecure, or trusting that key):
    // they go back to the queue. The others are ended.
    expect(await ordersLeft(m)).toBe(2);
    expect(agent.counters.ordersRejected).toBe(cases.length);
    expect(agent.counters.ordersClaimed).toBe(0);
  });

  it("refuses a replayed order: on the agent that ran it, after its restart, and on another agent", async ({ newMesh }) => {
    const m = await newMesh();
    const stateDir = join(m.dir, "state", "x");
    const first = await secureAgent(m, { name: "x", stateDir });
    const { order, marker } = markerOrder(m, "once");
    const signed = signOrder(order, coordinator.seed);
    await m.publish(signed);
    expect((await m.events.wait("finished", "once")).status).toBe("completed");
    writeFileSync(marker, "reset"); // from here on, a run would rewrite it
    const rejectedBy = async (a: Agent, n: number) =>
      waitFor(`${n} rejection(s) by ${a.name}`, () => a.counters.ordersRejected >= n, 15_000);

    await publishCopy(m, signed, "copy-1");
    await rejectedBy(first, 1);
    const ev = await m.events.wait("rejected", "once");
    expect(ev).toMatchObject({ reason: "replayed", sender: coordinator.publicKey });
    expect(ev.detail).toMatch(/nonce .* is a copy/);

    // The same agent, restarted on the same state dir: its ledger still knows the nonce.
    await first.close();
    const again = await secureAgent(m, { name: "x", stateDir });
    await publishCopy(m, signed, "copy-2");
    await rejectedBy(again, 1);
    await again.close();

    // Another agent, which never saw the order: the mesh's nonces bucket knows it.
    const other = await secureAgent(m, { name: "y" });
    await publishCopy(m, signed, "copy-3");
    await rejectedBy(other, 1);

    expect(m.events.of("started", "once")).toHaveLength(1);
    expect(readFileSync(marker, "utf8")).toBe("reset");
    expect(await ordersLeft(m)).toBe(0);
  });

  it("a redelivered order is not a replay: an order handed back by a stopping agent runs on the next one", async ({
    newMesh,
  }) => {
    const m = await newMesh();
    const t = writeTrials(m.dir);
    const first = await secureAgent(m, { name: "leaving" });
    await m.publish(
      signOrder(makeOrder({ study: "sec", trial: "moved", argv: [NODE, t.sleep, "60000", "200"] }), coordinator.seed),
    );
    await m.events.wait("started", "moved");
    await first.close(); // drain: requeue — the order goes back to the queue, same message
    await secureAgent(m, { name: "heir" });
    const done = await m.events.wait("finished", "moved", 20_000, (e) => e.attempt === 2);
    expect(done).toMatchObject({ agent: "heir", status: "completed" });
    expect(m.events.of("rejected", "moved")).toEqual([]);
  });
});

describe("secrets", () => {
  it("a secret_env value reaches the trial but no log: logs stream, log tail, local log file, agent log", async ({ newMesh }) => {
    const m = await newMesh();
    const secret = "sk-live-0123456789abcdef";
    const agentLog = join(m.dir, "agent.log");
    await secureAgent(m, { logger: createLogger({ level: "debug", destination: agentLog }) });
    const script = join(m.dir, "leaky.mjs");
    // Prints the secret split across two writes (two terminal chunks), then fails so the tail is kept.
    writeFileSync(
      script,
      `const s = process.env.API_TOKEN;
process.stdout.write("token=" + s.slice(0, 7));
setTimeout(() => { process.stdout.write(s.slice(7) + " len=" + s.length + "\\n"); process.exitCode = 3; }, 300);
`,
    );
    await m.publish(
      signOrder(
        makeOrder({
          study: "sec",
          trial: "leaky",
          argv: [NODE, script],
          env: { API_TOKEN: secret },
          secretEnv: ["API_TOKEN"],
        }),
        coordinator.seed,
      ),
    );
    const done = await m.events.wait("finished", "leaky");
    expect(done.status).toBe("failed");
    expect(done.logTail.join("\n")).toContain(`token=*** len=${secret.length}`);
    const chunks: Uint8Array[] = [];
    const consumer = await jetstream(m.nc).consumers.get(m.names.streams.logs, {
      filter_subjects: m.names.subjects.logsAll(),
      deliver_policy: DeliverPolicy.All,
    });
    await waitFor("the last log chunk", async () => {
      const msgs = await consumer.fetch({ max_messages: 100, expires: 1000 });
      for await (const msg of msgs) {
        const r = decode(LogChunkSchema, msg.data);
        if (r.ok) chunks.push(r.value.data);
      }
      return chunks.length > 0 && Buffer.concat(chunks).toString().includes("len=");
    });
    const streamed = Buffer.concat(chunks).toString();
    expect(streamed).toContain("token=***");
    const localDir = join(m.dir, "state", "a1", "logs", "sec", "leaky");
    const local = readdirSync(localDir).map((f) => readFileSync(join(localDir, f), "utf8"));
    const everything = [streamed, ...local, readFileSync(agentLog, "utf8"), JSON.stringify(m.events.events)];
    for (const text of everything) expect(text).not.toContain(secret);
    expect(local.join("")).toContain("token=***");
  });
});

describe("rung agent", () => {
  it("refuses to start without --trust unless --insecure, and says why", async ({ nats }) => {
    const p = rung(["agent", "--nats", nats.url, "--prefix", uniquePrefix(), "--fake-gpus", "1"]);
    expect(await p.exited).toBe(1);
    expect(p.out()).toMatch(/--trust: no coordinator key to trust.*--insecure/s);
    const both = rung(["agent", "--nats", nats.url, "--fake-gpus", "1", "--insecure", "--trust", coordinator.publicKey]);
    expect(await both.exited).toBe(1);
    expect(both.out()).toMatch(/--insecure: cannot be combined with --trust/);
    const bad = rung(["agent", "--nats", nats.url, "--fake-gpus", "1", "--trust", "not-a-key"]);
    expect(await bad.exited).toBe(1);
    expect(bad.out()).toMatch(/--trust: "not-a-key" is not an nkey public key/);
  });
});
