import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { BadMessageCounter, connectNats, ensureResources, MeshNames, type ResourceOptions } from "@rung/protocol";
import { rung, rungAgent, signalPid, stopAll, type TestProcess, uniquePrefix, waitFor, waitForOutput } from "@rung/testkit";
import { LEASE, RESULTS_DIR, sleep } from "./config.js";
import { type RunningAttempt, readTimedEvents, type TimedEvent } from "./events.js";
import { type Fault, trialMovedOn } from "./faults.js";
import { type AgentStopLine, agentStopLines, coordinatorDropCounts } from "./logs.js";
import { accountFor, appendRow, type ChaosReport, type ChaosRow, type FinishOptions, rowWithoutStudy } from "./report.js";
import { TrialWatcher } from "./watcher.js";

// Agents and coordinators log at info, so the harness can read their counters from their last lines.
process.env.RUNG_LOG_LEVEL = "info";
// The coordinators' logs are read back as JSON (their drop counts); on a terminal they would be sentences.
process.env.RUNG_LOG_FORMAT = "json";

export interface OpenOptions {
  scenario: string;
  url: string;
  study: string;
  /** Extra flags for every `rung agent` (`--replicas 3` on a cluster). */
  agentFlags?: string[];
  /** Extra flags for every `rung study run`. */
  studyFlags?: string[];
  /**
   * Create the mesh's streams and buckets before any process starts, as an operator setting up a
   * cluster would (on nats-server 2.9, several processes creating the same R3 streams at once can
   * leave a bucket unanswering for tens of seconds; see docs/reliability.md).
   */
  precreate?: ResourceOptions;
}

/**
 * A mesh of real `rung` processes (agents, `rung study run`) for one scenario: it starts them, lets
 * the scenario inject its faults, and at the end (`finish`) stops them all and accounts for the study.
 */
export class ChaosMesh {
  readonly names: MeshNames;
  readonly procs: TestProcess[] = [];
  readonly agents = new Map<string, TestProcess>();
  readonly coordinators: TestProcess[] = [];
  readonly faults: Fault[] = [];
  readonly notes: string[] = [];
  /** Trials a test forged events for (not the study's own): left out of the account. */
  readonly strayTrials = new Set<string>();
  readonly watcher: TrialWatcher;
  readonly stateRoot = mkdtempSync(join(tmpdir(), "rung-chaos-state-"));
  readonly startedAt = Date.now();
  #specFile: string | undefined;
  #agentFlags: string[] = [];
  #studyFlags: string[] = [];
  #closed = false;
  /** The scenario's row, appended on close with any notes the test added after finish(). */
  #report: { row: ChaosRow; notes: number } | undefined;

  private constructor(
    readonly scenario: string,
    readonly url: string,
    readonly study: string,
    readonly prefix: string,
    readonly nc: NatsConnection,
  ) {
    this.names = new MeshNames(prefix);
    this.watcher = new TrialWatcher(study);
    this.watcher.start();
  }

  static async open(o: OpenOptions): Promise<ChaosMesh> {
    const nc = await connectNats({ url: o.url, name: "chaos-harness" });
    const m = new ChaosMesh(o.scenario, o.url, o.study, uniquePrefix(), nc);
    if (o.precreate) {
      const res = await ensureResources(nc, m.names, o.precreate);
      const streams = [...Object.values(m.names.streams), ...Object.values(m.names.buckets).map((b) => `KV_${b}`)];
      await waitFor(
        "every stream to have a leader",
        async () => {
          for (const s of streams) if (!(await res.jsm.streams.info(s)).cluster?.leader) return false;
          return true;
        },
        30_000,
        200,
      );
    }
    m.#agentFlags = o.agentFlags ?? [];
    m.#studyFlags = o.studyFlags ?? [];
    return m;
  }

  /** Starts (or restarts, same name and state dir) one `rung agent` with one fake GPU. */
  startAgent(name: string, extra: string[] = []): TestProcess {
    // rungAgent owns the flags every test agent needs (lease, workdir, and the trust flags of signed
    // work orders); flags given again in `extra` win.
    const proc = rungAgent(this.url, this.prefix, {
      name,
      stateDir: join(this.stateRoot, name),
      flags: [...this.#agentFlags, ...extra],
    });
    this.agents.set(name, proc);
    this.procs.push(proc);
    if (proc.child.pid) this.watcher.agentPids.add(proc.child.pid);
    return proc;
  }

  startAgents(n: number, extra: string[] = []): TestProcess[] {
    return Array.from({ length: n }, (_, i) => this.startAgent(`a${i + 1}`, extra));
  }

  /** `rung study run SPEC` with the suite's short coordinator lease. */
  startStudy(specFile: string): TestProcess {
    this.#specFile = specFile;
    const p = rung([
      "study",
      "run",
      specFile,
      "--nats",
      this.url,
      "--prefix",
      this.prefix,
      "--lease",
      LEASE,
      ...this.#studyFlags,
    ]);
    this.procs.push(p);
    this.coordinators.push(p);
    return p;
  }

  get coordinator(): TestProcess | undefined {
    return this.coordinators.at(-1);
  }

  /**
   * Starts the coordinator again after it died. Its lease must run out first: a coordinator refused
   * because the lease still lives exits at once, and is started again.
   */
  async restartStudy(timeoutMs = 20_000): Promise<TestProcess> {
    const spec = this.#specFile as string;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = this.startStudy(spec);
      const outcome = await Promise.race([
        // A coordinator that finds the study already done (the last trials ended while none ran) ends it.
        p.exited.then((code) =>
          code === 0 && /study \S+ (completed|stopped)/.test(p.out()) ? ("running" as const) : ("exited" as const),
        ),
        waitForOutput(p, /resuming study|dispatched|study \S+ (completed|stopped)/, timeoutMs, "the coordinator to resume").then(
          () => "running" as const,
        ),
      ]).catch(() => "timeout" as const);
      if (outcome === "running") return p;
      if (outcome === "exited" && /already run by coordinator/.test(p.out()) && Date.now() < deadline) {
        await sleep(250);
        continue;
      }
      throw new Error(`the coordinator did not resume (${outcome}):\n${p.out().slice(-2000)}`);
    }
  }

  /** The agent process running attempt `v` (one of `runningAttempts`). */
  agentOf(v: Pick<RunningAttempt, "agent">): TestProcess {
    const agent = this.agents.get(v.agent);
    if (!agent) throw new Error(`no agent ${v.agent}`);
    return agent;
  }

  /** kill -9 of the agent running attempt `v`: a fault the trial recovers from by moving on (a later attempt, or its end). */
  async killAgentRunning(v: RunningAttempt): Promise<Fault> {
    const agent = this.agentOf(v);
    const f = this.fault({
      kind: "kill -9 agent",
      target: v.agent,
      trial: v.trial,
      attempt: v.attempt,
      recovered: trialMovedOn(v.trial, v.attempt),
    });
    await this.kill(agent);
    return f;
  }

  fault(f: Omit<Fault, "at"> & { at?: number }): Fault {
    const fault: Fault = { at: Date.now(), ...f };
    this.faults.push(fault);
    return fault;
  }

  /** SIGKILL, and wait until the process is gone. */
  async kill(p: TestProcess, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    p.child.kill(signal);
    await p.exited;
  }

  events(): Promise<TimedEvent[]> {
    return readTimedEvents(this.nc, this.names, this.study);
  }

  async waitForEvents<T>(what: string, pick: (evs: TimedEvent[]) => T, timeoutMs = 60_000): Promise<NonNullable<T>> {
    return waitFor(what, async () => pick(await this.events()), timeoutMs, 400);
  }

  /** Stops everything this mesh started: agents get SIGTERM (their clean exit logs their counters). */
  async stopAll(): Promise<void> {
    // Thaw every frozen agent first, so none is still frozen while the coordinators stop.
    for (const p of this.procs) if (p.alive()) p.child.kill("SIGCONT");
    await stopAll(this.coordinators.filter((p) => p.alive()));
    await stopAll(this.agents.values());
    await stopAll(this.procs);
  }

  /** The last `agent stopped` line of every agent process that exited cleanly. */
  agentStops(): AgentStopLine[] {
    return agentStopLines(this.procs);
  }

  /** Drop counts the coordinators logged when they ended (summed over restarts). */
  coordinatorDrops(): Record<string, number> {
    return coordinatorDropCounts(this.coordinators);
  }

  /**
   * Waits for the coordinator to end the study, stops every process, and accounts for the study. The
   * scenario's row goes to the results file when the mesh is closed (after the test), asserts or not.
   */
  async finish(o: FinishOptions): Promise<ChaosReport> {
    const coord = this.coordinator;
    let code: number | null = null;
    if (coord) {
      code = await Promise.race([coord.exited, sleep(o.timeoutMs ?? 90_000).then(() => -1)]);
      if (code === -1) this.notes.push(`coordinator still running after ${o.timeoutMs ?? 90_000} ms`);
    }
    // `rung study run` exits 0 with a best result, 3 or 4 when the study ended without one (no metric,
    // every trial failed), 5 when it was stopped: its own last line says which.
    const said = /study \S+ (completed|stopped)/.exec(coord?.out() ?? "")?.[1];
    const outcome = code === 0 || code === 3 || code === 4 || code === 5 ? (said ?? `exit ${code}`) : `exit ${code ?? "signal"}`;
    await this.stopAll();
    // Trials end with their agents; give /proc a moment to show it.
    await waitFor("every trial process to be gone", () => this.watcher.alive().length === 0, 5000, 100).catch(() => {});
    this.watcher.stop();
    const readerDrops = new BadMessageCounter();
    const events = await readTimedEvents(this.nc, this.names, this.study, readerDrops);
    const report = accountFor({
      scenario: this.scenario,
      startedAt: this.startedAt,
      outcome,
      options: o,
      events,
      faults: this.faults,
      notes: this.notes,
      strayTrials: this.strayTrials,
      watcher: this.watcher,
      agentStops: this.agentStops(),
      coordinatorDrops: this.coordinatorDrops(),
      readerDrops: readerDrops.snapshot(),
    });
    this.#report = { row: report, notes: this.notes.length };
    await this.#shutdown();
    return report;
  }

  /** Every process's output, for a post-mortem: test-results/chaos-logs/<scenario>/. */
  #saveLogs(): void {
    const dir = join(RESULTS_DIR, "chaos-logs", this.scenario.replace(/[^A-Za-z0-9]+/g, "-"));
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    this.procs.forEach((p, i) => {
      const role = this.coordinators.includes(p) ? "coordinator" : "agent";
      const name = [...this.agents.entries()].find(([, q]) => q === p)?.[0] ?? role;
      writeFileSync(join(dir, `${String(i).padStart(2, "0")}-${name}.log`), p.out());
    });
  }

  /** Records the scenario's row (after finish), stops whatever still runs, closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#report) {
      const { row, notes } = this.#report;
      this.#report = undefined;
      appendRow({ ...row, notes: [...row.notes, ...this.notes.slice(notes)] });
    } else if (!this.#closed) {
      // The test failed before finish(): the table says so rather than leave the scenario out.
      appendRow(
        rowWithoutStudy({
          scenario: this.scenario,
          faults: this.faults.map((f) => f.kind).join(", ") || "—",
          outcome: "FAILED (see the test output)",
          startedAt: this.startedAt,
          notes: [...this.notes, `logs in test-results/chaos-logs/`],
        }),
      );
    }
    await this.#shutdown();
  }

  async #shutdown(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.stopAll();
    this.#saveLogs();
    this.watcher.stop();
    // Whatever of the study still runs (orphans reparented away from us, which checkLeaks cannot see)
    // is reported by finish(); kill it here so the next scenario starts clean.
    for (const p of this.watcher.alive()) signalPid(p.pid, "SIGKILL");
    await this.nc.close().catch(() => {});
  }
}
