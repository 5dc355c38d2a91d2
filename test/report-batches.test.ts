import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import { decideStudy, loadSpec, readStudyEvents } from "@rung/coordinator";
import { connectNats, decode, MeshNames, type TrialEvent, TrialEventSchema } from "@rung/protocol";
import { rung, rungAgents, uniquePrefix } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * A trial that reports faster than its agent writes: the agent sends the reports queued behind one
 * publish as one message (the order's message says the coordinator reads them so), and every reader —
 * the coordinator's scheduler, `rung study status`, `rung tail` — sees each report as if it had come
 * alone. Through the public commands, on a real nats-server with real agents.
 */

const it = meshTest.extend("leakGraceMs", 5000);

const EPOCHS = 300;

function spec(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-spec-"));
  const file = join(dir, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      // An epoch every millisecond: hundreds of results a second from each trial.
      command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs ${EPOCHS} --epoch-ms 1`,
      workdir: ".",
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", samples: 1, seed: 1, space: { quality: { grid: [0.3, 0.9, 0.5, 0.95] } } },
      scheduler: { type: "asha", time_attr: "epoch", grace_period: 3, reduction_factor: 3, max_t: EPOCHS },
      resources: { gpus: 1 },
      retries: 0,
    }),
  );
  return file;
}

/** The messages stored for a study's agent reports: how many reports each carries. */
async function reportMessages(url: string, names: MeshNames, study: string): Promise<number[]> {
  const nc = await connectNats({ url });
  try {
    const consumer = await jetstream(nc).consumers.get(names.streams.events, {
      filter_subjects: names.subjects.studyEvents(study),
      deliver_policy: DeliverPolicy.All,
    });
    let pending = (await consumer.info()).num_pending;
    const sizes: number[] = [];
    while (pending > 0) {
      const batch = await consumer.fetch({ max_messages: Math.min(pending, 1000), expires: 2000 });
      for await (const m of batch) {
        const r = decode(TrialEventSchema, m.data);
        if (r.ok && r.value.type === "report") sizes.push(1 + (r.value.more?.length ?? 0));
        pending = m.info.pending;
      }
    }
    return sizes;
  } finally {
    await nc.close();
  }
}

describe("reports sent several to a message", () => {
  it("reach the scheduler, the status and the tail each as one report, none lost or doubled, in fewer messages", async ({
    nats,
    procs,
  }) => {
    const prefix = uniquePrefix();
    const names = new MeshNames(prefix);
    procs.push(...rungAgents(nats.url, prefix, 2));
    const file = spec("fast");
    const run = rung(["study", "run", file, "--nats", nats.url, "--prefix", prefix]);
    procs.push(run);
    expect(await run.exited, run.stderr()).toBe(0);
    expect(run.out()).toMatch(/study fast completed/);

    const nc = await connectNats({ url: nats.url });
    let events: TrialEvent[];
    try {
      events = (await readStudyEvents(nc, names, "fast")).map((s) => s.event);
    } finally {
      await nc.close();
    }
    // Every attempt's reports, each once and in order: seq 0, 1, 2, … and epoch 1, 2, 3, …
    const reports = events.filter((e) => e.type === "report");
    const byAttempt = new Map<string, number[]>();
    for (const r of reports) {
      const k = `${r.trial}.${r.attempt}`;
      byAttempt.set(k, [...(byAttempt.get(k) ?? []), r.seq]);
      expect(r.metrics.epoch).toBe(r.seq + 1);
    }
    expect(byAttempt.size).toBe(4);
    for (const seqs of byAttempt.values()) expect(seqs).toEqual(seqs.map((_, i) => i));
    // The best trial ran to the end; ASHA stopped someone, and stopped exactly whom the stream implies.
    const complete = [...byAttempt.values()].filter((s) => s.length === EPOCHS);
    expect(complete.length).toBeGreaterThan(0);
    const live = events.filter((e) => e.type === "decision").map((e) => e.type === "decision" && `${e.trial}@${e.t}:${e.rung}`);
    expect(live.length).toBeGreaterThan(0);
    expect(live).toEqual(decideStudy(await loadSpec(file), events).map((d) => `${d.trial}@${d.t}:${d.rung}`));

    // Fewer messages than reports: the agents batched them, and none carried more than its share.
    const sizes = await reportMessages(nats.url, names, "fast");
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(reports.length);
    expect(sizes.length).toBeLessThan(reports.length);
    expect(Math.max(...sizes)).toBeGreaterThan(1);

    // `rung study status --json` counts what the stream holds; `rung tail` shows every report.
    const status = rung(["study", "status", "fast", "--nats", nats.url, "--prefix", prefix, "--json"]);
    procs.push(status);
    expect(await status.exited, status.stderr()).toBe(0);
    const st = JSON.parse(status.out()) as { trials: { trial: string; lastT: number | null }[] };
    for (const t of st.trials) expect(t.lastT).toBe(byAttempt.get(`${t.trial}.1`)?.length);
    const tail = rung([
      "tail",
      "--nats",
      nats.url,
      "--prefix",
      prefix,
      "--study",
      "fast",
      "--since",
      "1h",
      "--json",
      "--no-follow",
    ]);
    procs.push(tail);
    expect(await tail.exited, tail.stderr()).toBe(0);
    const shown = tail
      .out()
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as { event?: string });
    expect(shown.filter((o) => o.event === "report")).toHaveLength(reports.length);
  }, 120_000);
});
