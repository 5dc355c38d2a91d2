import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeliverPolicy, type JetStreamClient, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Agent, AgentOptions } from "@rung/agent";
import { startAgent } from "@rung/agent";
import {
  createLogger,
  decode,
  encode,
  expandEvent,
  type MeshNames,
  type ResourceOptions,
  SCHEMA_VERSION,
  type TrialEvent,
  TrialEventSchema,
  type WorkOrder,
} from "@rung/protocol";
import { openMesh, stopAll, type TestProcess, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";

/** Shared by the agent test files: orders, an event recorder, tiny trials, agents that clean up. */

export const NODE = process.execPath;

export function tempDir(prefix = "rung-agent-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function makeOrder(o: Partial<WorkOrder> & Pick<WorkOrder, "study" | "trial" | "argv">): WorkOrder {
  const now = Date.now();
  return {
    v: SCHEMA_VERSION,
    type: "order",
    attempt: 1,
    pool: "gpu1",
    resources: { gpus: 1, cpus: 0 },
    workdir: ".",
    env: {},
    secretEnv: [],
    params: {},
    timeAttr: "epoch",
    issuedAt: now,
    expiresAt: now + 3_600_000,
    nonce: randomBytes(8).toString("hex"),
    ...o,
  };
}

export async function publishOrder(js: JetStreamClient, names: MeshNames, order: WorkOrder): Promise<void> {
  await js.publish(names.subjects.work(order.pool), encode(order), { msgID: `${order.study}.${order.trial}.${order.attempt}` });
}

/** Records every trial event of a mesh as it arrives, for assertions and waits. */
export class EventLog {
  readonly events: TrialEvent[] = [];
  #stop: (() => void) | undefined;
  #done: Promise<void> = Promise.resolve();

  static async start(nc: NatsConnection, names: MeshNames): Promise<EventLog> {
    const log = new EventLog();
    const js = jetstream(nc);
    const consumer = await js.consumers.get(names.streams.events, {
      // A string, not an array: filter_subjects (plural) needs nats-server 2.10.
      filter_subjects: names.subjects.eventsAll(),
      deliver_policy: DeliverPolicy.All,
    });
    const messages = await consumer.consume();
    log.#stop = () => messages.stop();
    log.#done = (async () => {
      for await (const m of messages) {
        const r = decode(TrialEventSchema, m.data);
        if (r.ok) log.events.push(...expandEvent(r.value));
      }
    })();
    return log;
  }

  of<T extends TrialEvent["type"]>(type: T, trial?: string): Extract<TrialEvent, { type: T }>[] {
    return this.events.filter((e) => e.type === type && (trial === undefined || e.trial === trial)) as Extract<
      TrialEvent,
      { type: T }
    >[];
  }

  async wait<T extends TrialEvent["type"]>(
    type: T,
    trial: string,
    timeoutMs = 20_000,
    extra: (e: Extract<TrialEvent, { type: T }>) => boolean = () => true,
  ): Promise<Extract<TrialEvent, { type: T }>> {
    return waitFor(`${type} event of ${trial}`, () => this.of(type, trial).find(extra), timeoutMs);
  }

  async stop(): Promise<void> {
    this.#stop?.();
    await this.#done;
  }
}

/**
 * A mesh for one test: a connection, the resources, an event log, and agents — in this process, or
 * `rung agent` processes pushed to `procs` — that are closed after.
 */
export class Mesh {
  readonly agents: Agent[] = [];
  readonly procs: TestProcess[] = [];
  readonly dirs: string[] = [];

  private constructor(
    readonly url: string,
    readonly names: MeshNames,
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly events: EventLog,
    readonly dir: string,
  ) {}

  /** A mesh of its own (a new prefix) on the server at `url`. */
  static async start(url: string, resources: ResourceOptions = {}): Promise<Mesh> {
    const m = await openMesh(url, { name: "agent-test", resources });
    let events: EventLog;
    try {
      events = await EventLog.start(m.nc, m.names);
    } catch (err) {
      await m.close();
      throw err;
    }
    const dir = tempDir();
    return new Mesh(url, m.names, m.nc, m.js, events, dir);
  }

  async agent(options: AgentOptions = {}): Promise<Agent> {
    const n = this.agents.length + 1;
    const name = options.name ?? `a${n}`;
    const agent = await startAgent({
      nats: { url: this.url },
      prefix: this.names.prefix,
      name,
      fakeGpus: 1,
      lease: "3s",
      stopGrace: "1s",
      workdir: this.dir,
      stateDir: join(this.dir, "state", name),
      advertInterval: "500ms",
      drain: "requeue",
      logger: createLogger({ level: process.env.RUNG_TEST_LOG ?? "silent", base: { agent: name } }),
      // These tests publish unsigned orders; the security tests pass `trust`.
      insecure: (options.trust ?? []).length === 0,
      ...options,
    });
    this.agents.push(agent);
    return agent;
  }

  publish(order: WorkOrder): Promise<void> {
    return publishOrder(this.js, this.names, order);
  }

  async close(): Promise<void> {
    await stopAll(this.procs.splice(0));
    await Promise.allSettled(this.agents.map((a) => a.close()));
    await this.events.stop();
    await this.nc.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The end-to-end fixtures (a server per file, the leak check) and `newMesh(resources?)`: opens a `Mesh`
 * on the file's server, closed after the test (before the leak check).
 */
export const test = meshTest.extend("newMesh", ({ nats, leakCheck: _ }, { onCleanup }) => {
  const meshes: Mesh[] = [];
  onCleanup(async () => {
    for (const m of meshes.splice(0)) await m.close();
  });
  return async (resources: ResourceOptions = {}): Promise<Mesh> => {
    const m = await Mesh.start(nats.url, resources);
    meshes.push(m);
    return m;
  };
});
export const it = test;

/**
 * Tiny trials as Node scripts (fast to start, no shell anywhere): each takes its behaviour from argv.
 *   sleep.mjs MS [MS_LATER]      sleeps MS (MS_LATER on attempts after the first), exits 0
 *   argv.mjs OUT ARGS…           writes {argv, env} as JSON to OUT
 *   ignore-term.mjs              ignores SIGTERM, runs until killed
 *   report.mjs JSONLINES [CODE]  writes each element (a string) as a line to RUNG_REPORT, exits CODE
 *   crash.mjs N CODE             prints N numbered lines, exits CODE
 */
export function writeTrials(dir: string): Record<"sleep" | "argv" | "ignoreTerm" | "report" | "crash", string> {
  const files = {
    sleep: join(dir, "sleep.mjs"),
    argv: join(dir, "argv.mjs"),
    ignoreTerm: join(dir, "ignore-term.mjs"),
    report: join(dir, "report.mjs"),
    crash: join(dir, "crash.mjs"),
  };
  writeFileSync(
    files.sleep,
    `const ms = Number(process.env.RUNG_ATTEMPT !== "1" && process.argv[3] ? process.argv[3] : process.argv[2]);
console.log("sleeping", ms, "attempt", process.env.RUNG_ATTEMPT);
setTimeout(() => console.log("done"), ms);
`,
  );
  writeFileSync(
    files.argv,
    `import { writeFileSync } from "node:fs";
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("RUNG_") || k.startsWith("CUDA_") || k === "PYTHONPATH" || k === "STUDY_VAR"));
writeFileSync(process.argv[2], JSON.stringify({ argv: process.argv.slice(3), env, cwd: process.cwd() }));
`,
  );
  writeFileSync(
    files.ignoreTerm,
    `process.on("SIGTERM", () => console.log("ignoring SIGTERM"));\nconsole.log("ready");\nsetInterval(() => {}, 1000);\n`,
  );
  writeFileSync(
    files.report,
    `import { connect } from "node:net";
const lines = JSON.parse(process.argv[2]);
const code = Number(process.argv[3] ?? 0);
const s = connect(process.env.RUNG_REPORT, () => {
  for (const l of lines) s.write(l + "\\n");
  s.end(() => setTimeout(() => process.exit(code), 50));
});
`,
  );
  writeFileSync(
    files.crash,
    `for (let i = 1; i <= Number(process.argv[2]); i++) console.log("line " + i);\nprocess.exitCode = Number(process.argv[3]);\n`,
  );
  for (const f of Object.values(files)) chmodSync(f, 0o755);
  return files;
}
