import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { decode, encode, expandEvent, type LogChunk, MeshNames, type TrialEvent, TrialEventSchema } from "@rung/protocol";
import { REPO, waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { PREFIX, secureTest } from "./security-helpers.js";

/**
 * A box speaks only for its own trials. With `rung auth init` users on a real server, one agent (a1)
 * runs a study while a second agent's credentials (a2, "a box whose owner read its credentials") try
 * to rewrite it: forged reports, a forged end, the coordinator's own events, a claim of the next
 * attempt, log chunks, acks of a1's order, and the nonces. The server refuses what it can; every reader
 * ignores the rest; the report names a2.
 */

const names = new MeshNames(PREFIX);
const it = secureTest;

type Outcome = "stored" | "refused";

/** Publishes through JetStream as the attacker: stored, or refused by the server's permissions. */
async function attempt(nc: NatsConnection, subject: string, data: Uint8Array, msgID?: string): Promise<Outcome> {
  try {
    await jetstream(nc).publish(subject, data, msgID === undefined ? undefined : { msgID, timeout: 3000 });
    return "stored";
  } catch (err) {
    if (/Permissions Violation/.test((err as Error).message)) return "refused";
    throw err;
  }
}

describe("a box speaks only for its own trials", () => {
  it("ignores or refuses every event, log chunk and ack another agent's credentials forge, and names that agent", async ({
    nats,
    auth,
    sec,
  }) => {
    const { as, violations, agent, viewer } = sec;
    const logStart = nats.stderr.length;
    agent("a1");
    const study = sec.study({
      name: "scoped",
      command: `${process.execPath} ${join(REPO, "test", "fixtures", "curve-trial.mjs")} --quality {quality} --epochs {max_t} --epoch-ms 500`,
      env: { OMP_NUM_THREADS: 1 },
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { quality: { grid: [0.8] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 6 },
      resources: { gpus: 1 },
    });

    // Watching as a viewer: a1's first report.
    const watcher = await as("viewer.creds");
    const seen: TrialEvent[] = [];
    watcher.subscribe(`${PREFIX}.events.scoped.>`, {
      callback: (err, m) => {
        const r = err ? null : decode(TrialEventSchema, m.data);
        if (r?.ok) seen.push(...expandEvent(r.value));
      },
    });
    await waitFor("a1's first report", () => seen.some((e) => e.type === "report" && e.agent === "a1"), 30_000);
    const trial = (seen.find((e) => e.type === "report") as TrialEvent).trial;
    const base = { v: 1 as const, study: "scoped", trial };
    const report = (agentName: string, seq: number): TrialEvent => ({
      ...base,
      ts: Date.now(),
      type: "report",
      attempt: 1,
      agent: agentName,
      seq,
      metrics: { epoch: 6, val_acc: 999 },
    });
    const finished = (agentName: string): TrialEvent => ({
      ...base,
      ts: Date.now(),
      type: "finished",
      attempt: 1,
      agent: agentName,
      status: "completed",
      exitCode: 0,
      signal: null,
      reason: "exit 0",
      logTail: ["FORGED"],
    });
    const ended: TrialEvent = { ...base, ts: Date.now(), type: "ended", status: "stopped", reason: "FORGED end", attempts: 1 };
    const claim: TrialEvent = {
      ...base,
      ts: Date.now(),
      type: "claimed",
      attempt: 2,
      agent: "a2",
      gpus: [0],
      proof: "0".repeat(64),
    };
    const chunk = (attemptNo: number, eof: boolean): Uint8Array =>
      encode({
        v: 1,
        type: "log",
        ...base,
        attempt: attemptNo,
        agent: "a2",
        seq: 0,
        ts: Date.now(),
        data: new Uint8Array(Buffer.from("FORGED OUTPUT\r\n")),
        eof,
      } satisfies LogChunk);

    // The attacker writes subjects by hand: the grammar is public (docs/architecture.md).
    const a2 = await as("agent-a2.creds");
    const legacy = `${PREFIX}.events.scoped.${trial}`;
    const coordinator = `${PREFIX}.events.scoped.${trial}.c`;
    const a1Events = `${PREFIX}.events.scoped.${trial}.a.a1`;
    const own = `${PREFIX}.events.scoped.${trial}.a.a2`;
    const forged: [string, string, Uint8Array, string?][] = [
      // What the server refuses: any subject but a2's own.
      ["a report on the unscoped subject of older versions", legacy, encode(report("a1", 0))],
      ["a report on the coordinator's subject", coordinator, encode(report("a1", 0))],
      ["a report on a1's subject", a1Events, encode(report("a1", 0))],
      ["the coordinator's ended on its subject", coordinator, encode(ended)],
      ["a log chunk on a1's subject", `${PREFIX}.logs.scoped.${trial}.1.a1`, chunk(1, true)],
      ["a log chunk on the unscoped subject", `${PREFIX}.logs.scoped.${trial}.1`, chunk(1, true)],
      // What it stores, on a2's own subject, and every reader must ignore.
      ["a report in a1's name", own, encode(report("a1", 1)), `scoped.${trial}.1.report.1`],
      ["a report with a1's seq", own, encode(report("a2", 0))],
      ["a report with a new seq", own, encode(report("a2", 99))],
      ["a finished in a1's name", own, encode(finished("a1"))],
      ["a finished of its own", own, encode(finished("a2"))],
      ["a copy of the coordinator's ended", own, encode(ended), `scoped.${trial}.ended`],
      ["a claim of the next attempt", own, encode(claim)],
      ["an end-of-output chunk for the running attempt", `${PREFIX}.logs.scoped.${trial}.1.a2`, chunk(1, true)],
      ["output of an attempt that never existed", `${PREFIX}.logs.scoped.${trial}.2.a2`, chunk(2, false)],
    ];
    const outcomes: Record<string, Outcome> = {};
    for (const [what, subject, data, msgID] of forged) outcomes[what] = await attempt(a2, subject, data, msgID);
    expect(outcomes).toEqual({
      "a report on the unscoped subject of older versions": "refused",
      "a report on the coordinator's subject": "refused",
      "a report on a1's subject": "refused",
      "the coordinator's ended on its subject": "refused",
      "a log chunk on a1's subject": "refused",
      "a log chunk on the unscoped subject": "refused",
      "a report in a1's name": "stored",
      "a report with a1's seq": "stored",
      "a report with a new seq": "stored",
      "a finished in a1's name": "stored",
      "a finished of its own": "stored",
      "a copy of the coordinator's ended": "stored",
      "a claim of the next attempt": "stored",
      "an end-of-output chunk for the running attempt": "stored",
      "output of an attempt that never existed": "stored",
    });

    // a1's order: a2 knows where it sits (stream and consumer sequences are small counters) and tries to
    // nak and terminate it — which would hand a1's trial to another box — and to read the nonces.
    const coord = await as("coordinator.creds");
    const consumer = await (await jetstreamManager(coord)).consumers.info(names.streams.work, names.workConsumer("gpu1"));
    const { stream_seq: sseq, consumer_seq: dseq } = consumer.delivered;
    const ack = `$JS.ACK.${names.streams.work}.${names.workConsumer("gpu1")}.1.${sseq}.${dseq}.${Date.now()}000000.0`;
    a2.publish(ack, new TextEncoder().encode("-NAK"));
    a2.publish(ack, new TextEncoder().encode("+TERM"));
    const a2m = await jetstreamManager(a2);
    await expect(a2m.streams.getMessage(`KV_${names.nonces}`, { seq: 1 })).rejects.toThrow(/Permissions Violation/);
    await expect(a2m.direct.getMessage(`KV_${names.nonces}`, { seq: 1 })).rejects.toThrow(/Permissions Violation|timeout/i);
    await a2.flush().catch(() => {});

    expect(await study.exited, study.out()).toBe(0);
    expect(study.out()).not.toContain("999");

    // What every reader rebuilds from the stream: one attempt by a1, its real end, its real value.
    const status = await viewer(["study", "status", "scoped", "--json"]);
    expect(status.code, status.out).toBe(0);
    const parsed = JSON.parse(status.out) as {
      best: { value: number };
      trials: {
        trial: string;
        state: string;
        attempts: number;
        agent: string;
        bestValue: number;
        lastT: number;
        endReason: string;
      }[];
    };
    const t = parsed.trials.find((x) => x.trial === trial);
    expect(t).toMatchObject({ state: "completed", attempts: 1, agent: "a1", lastT: 6, endReason: "completed at epoch=6" });
    expect(parsed.best.value).toBeCloseTo(0.8 * (1 - 1 / 7), 6);

    const report_ = await viewer(["study", "report", "scoped", "--json"]);
    expect(report_.code, report_.out).toBe(0);
    const rep = JSON.parse(report_.out) as {
      findings: { kind: string; agent: string | null; summary: string; evidence: { events: number } }[];
    };
    const finding = rep.findings.find((f) => f.kind === "forged-events");
    expect(finding?.agent).toBe("a2");
    // Every event a2 got stored (7 of them, the claim included); its chunks are the logs reader's to drop.
    expect(finding?.evidence.events).toBe(7);
    const text = await viewer(["study", "report", "scoped"]);
    expect(text.out).toMatch(/forged-events: agent a2 published 7 event\(s\) about trials it does not run/);

    // What other scheduler settings would have picked, from the same stream: a1's value, not a2's 999.
    const replay = await viewer(["replay", "--study", "scoped", "--json"]);
    expect(replay.code, replay.out).toBe(0);
    expect(replay.out).not.toContain("999");

    // The log: a1's whole output, not cut short by the forged end-of-output mark nor hidden by attempt 2.
    const logs = await viewer(["logs", `scoped/${trial}`]);
    expect(logs.code, logs.out).toBe(0);
    expect(logs.out).toContain("epoch 6 val_acc");
    expect(logs.out).not.toContain("FORGED");

    // The server's own record: every refusal is a2's, including the acks of a1's order.
    const refused = violations(logStart);
    const a2Key = auth.credentials.find((c) => c.agent === "a2")?.publicKey as string;
    expect(refused.length).toBeGreaterThanOrEqual(8);
    for (const line of refused) expect(line).toContain(a2Key);
    expect(refused.filter((l) => l.includes("$JS.ACK")).length).toBe(2);
  });
});
