import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connectNats, decode, encode, ensureResources, MeshNames, NatsAuthError, StudyRecordSchema } from "@rung/protocol";
import { REPO, rung, waitFor } from "@rung/testkit";
import { describe, expect } from "vitest";
import { PREFIX, secureTest } from "./security-helpers.js";

/**
 * A nats-server that knows only the users `rung auth init` generated: the mesh works end to end with
 * least-privilege users, and the server itself refuses what a role may not do.
 */

const names = new MeshNames(PREFIX);
const it = secureTest;

describe("a mesh of least-privilege users", () => {
  it("runs a signed study end to end — coordinator, two agents, a viewer's commands — without one refused operation", async ({
    nats,
    sec,
  }) => {
    const { as, violations, agent, viewer } = sec;
    const logStart = nats.stderr.length;
    const secret = "wandb-0b5e-SECRET-value";
    const dir = mkdtempSync(join(tmpdir(), "rung-secure-study-"));
    // A trial that prints its secret before it trains.
    const trial = join(dir, "secret-trial.mjs");
    writeFileSync(
      trial,
      `console.log("token " + process.env.WANDB_API_KEY);\nawait import(${JSON.stringify(join(REPO, "test", "fixtures", "curve-trial.mjs"))});\n`,
    );
    agent("a1");
    agent("a2");
    const study = sec.study({
      name: "secure",
      command: `${process.execPath} ${trial} --quality {quality} --epochs {max_t} --epoch-ms 60`,
      env: { WANDB_API_KEY: secret, OMP_NUM_THREADS: 1 },
      secret_env: ["WANDB_API_KEY"],
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { quality: { grid: [0.5, 0.9, 0.3, 0.7] } } },
      scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 3 },
      resources: { gpus: 1 },
      max_concurrent: 2,
    });
    expect(await study.exited).toBe(0);
    expect(study.out()).toMatch(/study secure completed/);

    const status = await viewer(["study", "status", "secure", "--json"]);
    expect(status.code).toBe(0);
    const parsed = JSON.parse(status.out) as { counts: Record<string, number>; trials: { agent: string }[] };
    expect(parsed.counts.completed + parsed.counts.stopped).toBe(4);
    expect(new Set(parsed.trials.map((t) => t.agent))).toEqual(new Set(["a1", "a2"]));
    const agents = await viewer(["agents", "--json"]);
    expect(agents.code).toBe(0);
    expect((JSON.parse(agents.out) as { agent: string }[]).map((a) => a.agent).sort()).toEqual(["a1", "a2"]);
    expect((await viewer(["study", "list"])).out).toMatch(/secure\tcompleted/);
    const report = await viewer(["study", "report", "secure", "--json"]);
    expect(report.code, report.out).toBe(0);
    const logs = await viewer(["logs", "secure/t0001"]);
    expect(logs.code).toBe(0);
    expect(logs.out).toMatch(/token \*\*\*/);
    expect(logs.out).toMatch(/epoch 1 val_acc/);
    const tail = await viewer(["tail", "--since", "5m", "--json"], 2500);
    expect(tail.out).toMatch(/"event":"finished"/);

    // The secret reached the trials and nothing else: not the study record, status, logs or tail.
    const nc = await as("coordinator.creds");
    const kv = await new Kvm(nc).open(names.buckets.studies);
    const rec = decode(StudyRecordSchema, (await kv.get("secure"))?.value ?? new Uint8Array());
    expect(rec.ok && (rec.value.spec.env as Record<string, string>).WANDB_API_KEY).toBe("***");
    for (const out of [status.out, report.out, logs.out, tail.out, JSON.stringify(rec)]) expect(out).not.toContain(secret);

    expect(violations(logStart)).toEqual([]);
  });

  it("refuses a viewer that publishes work, reads orders or writes stop decisions", async ({ nats, sec }) => {
    const { as, violations, viewer } = sec;
    const coord = await as("coordinator.creds");
    await ensureResources(coord, names);
    const logStart = nats.stderr.length;
    const nc = await as("viewer.creds");
    const js = jetstream(nc);
    await expect(js.publish(names.subjects.work("gpu1"), new Uint8Array([1]))).rejects.toThrow(/Permissions Violation/);
    const jsm = await jetstreamManager(nc);
    await expect(jsm.streams.getMessage(names.streams.work, { seq: 1 })).rejects.toThrow(/Permissions Violation/);
    const control = await new Kvm(nc).open(names.buckets.control);
    await expect(control.put("secure.t0001", encode({ stop: true }))).rejects.toThrow(/Permissions Violation/);
    // Orders travel on the work subject and on reply inboxes: a viewer may listen to neither.
    nc.subscribe(names.subjects.workAll());
    nc.subscribe("_INBOX.>");
    await nc.flush().catch(() => {});
    await waitFor(
      "the server to refuse the subscriptions",
      () => violations(logStart).filter((l) => /Subscription/.test(l)).length >= 2,
    );
    expect(violations(logStart).join("\n")).toMatch(/Publish Violation .* Subject "sec\.work\.gpu1"/);
    // And the CLI says so in one sentence.
    const stop = await viewer(["study", "stop", "secure"]);
    expect(stop.code).toBe(1);
    expect(stop.out).toMatch(/rung: .*Permissions Violation/);
  });

  it("refuses an agent that publishes as another agent, publishes work or writes stop decisions", async ({ nats, sec }) => {
    const { as, violations } = sec;
    const coord = await as("coordinator.creds");
    await ensureResources(coord, names);
    const logStart = nats.stderr.length;
    const nc = await as("agent-a1.creds");
    const js = jetstream(nc);
    const adverts = await new Kvm(nc).open(names.buckets.agents);
    await adverts.put("a1", encode({ mine: true }));
    await expect(adverts.put("a2", encode({ forged: true }))).rejects.toThrow(/Permissions Violation/);
    nc.publish(names.subjects.telemetry("a1"), new Uint8Array([1]));
    nc.publish(names.subjects.telemetry("a2"), new Uint8Array([1]));
    await expect(js.publish(names.subjects.work("gpu1"), new Uint8Array([1]))).rejects.toThrow(/Permissions Violation/);
    const control = await new Kvm(nc).open(names.buckets.control);
    await expect(control.put("secure.t0001", encode({ stop: true }))).rejects.toThrow(/Permissions Violation/);
    await nc.flush().catch(() => {});
    await waitFor("the server to log the telemetry refusal", () =>
      violations(logStart).some((l) => l.includes("sec.telemetry.a2")),
    );
    const refused = violations(logStart).join("\n");
    expect(refused).not.toContain('"sec.telemetry.a1"');
    expect(refused).not.toContain('"$KV.sec-agents.a1"');
    expect(refused).toContain('"$KV.sec-agents.a2"');
  });

  it("refuses a client without credentials, and a `rung` command says why in one sentence", async ({ nats, procs, sec }) => {
    const { mesh } = sec;
    await expect(connectNats({ url: nats.url, reconnectForever: false })).rejects.toThrow(NatsAuthError);
    const p = rung(["agents", ...mesh()]);
    procs.push(p);
    expect(await p.exited).toBe(1);
    expect(p.out()).toMatch(/rung: NATS at .* refused the connection \(Authorization Violation\) — check --creds/);
  });
});
