import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { readStudyEvents } from "@rung/coordinator";
import {
  BadMessageCounter,
  connectNats,
  ensureResources,
  MeshNames,
  type ResourceOptions,
  type TrialEvent,
} from "@rung/protocol";
import { uniquePrefix, waitFor } from "@rung/testkit";
import { type Proc, REPO, rung, startAgents, stopAll } from "../study-helpers.js";

/**
 * The chaos harness: a mesh of real `rung` processes (agents, `rung study run`) on a real nats-server,
 * faults injected from outside (signals, server restarts, garbage, full disks), and at the end an
 * account of the study drawn from two independent sources:
 *
 *  - the study's event stream (`readStudyEvents`): trials created, terminal `ended` events, attempts;
 *  - the processes themselves: every 100 ms the harness reads /proc and follows each process whose
 *    environment carries RUNG_STUDY=<study> (trials and anything they started), so "no two attempts
 *    of a trial run at once" is checked on real process lifetimes, not on what the agents say.
 *
 * Each scenario appends one row to test-results/chaos.jsonl; global-setup.ts prints the table.
 */

export const CHAOS_DIR = resolve(import.meta.dirname);
export const TRIAL = join(CHAOS_DIR, "fixtures", "chaos-trial.mjs");
export const RESULTS_DIR = join(REPO, "test-results");
export const RESULTS_FILE = join(RESULTS_DIR, "chaos.jsonl");
/** Claim lease of every agent and coordinator lease of every `study run` in the suite. */
export const LEASE = "3s";
export const LEASE_MS = 3000;
/** Agents heartbeat at a third of the lease. */
export const HEARTBEAT_MS = 1000;
/** Malformed report lines the fixture's bad-json mode writes (BAD_LINES in chaos-trial.mjs). */
export const BAD_REPORT_LINES = 7;

// Agents and coordinators log at info, so the harness can read their counters from their last lines.
process.env.RUNG_LOG_LEVEL = "info";

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Specs

export interface ChaosSpecOptions {
  /** One trial per value, in this order (a grid). Default one curve trial per quality. */
  qualities?: number[];
  /** Grid over the fixture's --mode instead of qualities. */
  modes?: string[];
  epochMs?: number;
  maxT?: number;
  scheduler?: "asha" | "fifo";
  maxConcurrent?: number;
  retries?: number;
  /** Extra fixture flags, e.g. ["--term-delay", "3000"]. */
  flags?: string[];
}

/** Writes a study spec for the chaos fixture and returns its path. */
export function chaosSpec(name: string, o: ChaosSpecOptions = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-chaos-spec-"));
  const file = join(dir, `${name}.json`);
  const maxT = o.maxT ?? 9;
  const space = o.modes ? { mode: { grid: o.modes } } : { quality: { grid: o.qualities ?? [0.5, 0.9] } };
  const command = [
    process.execPath,
    TRIAL,
    ...(o.modes ? ["--mode", "{mode}"] : ["--quality", "{quality}"]),
    "--epochs",
    "{max_t}",
    "--epoch-ms",
    String(o.epochMs ?? 150),
    ...(o.flags ?? []),
  ].join(" ");
  const scheduler =
    (o.scheduler ?? "asha") === "asha"
      ? { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: maxT }
      : { type: "fifo", time_attr: "epoch", max_t: maxT };
  const spec = {
    name,
    command,
    workdir: ".",
    metric: { name: "val_acc", mode: "max" },
    search: { algorithm: "grid", samples: 1, seed: 1, space },
    scheduler,
    resources: { gpus: 1 },
    max_concurrent: o.maxConcurrent ?? 3,
    retries: o.retries ?? 1,
  };
  writeFileSync(file, JSON.stringify(spec, null, 2));
  return file;
}

// ---------------------------------------------------------------------------------------------
// Processes, as /proc sees them

interface ProcStat {
  state: string;
  ppid: number;
  pgrp: number;
  start: string;
}

function procStat(pid: number): ProcStat | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return { state: f[0] ?? "?", ppid: Number(f[1]), pgrp: Number(f[2]), start: f[19] ?? "" };
  } catch {
    return undefined;
  }
}

function procEnv(pid: number): Map<string, string> | undefined {
  try {
    const env = new Map<string, string>();
    for (const kv of readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")) {
      const eq = kv.indexOf("=");
      if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
    return env;
  } catch {
    return undefined;
  }
}

export interface ObservedProcess {
  pid: number;
  pgrp: number;
  trial: string;
  attempt: number;
  /** The trial's own process (its process group leader), not something it started. */
  leader: boolean;
  cmd: string;
  firstSeen: number;
  deadAt: number | null;
}

/** Follows every process of one study (by the RUNG_STUDY its environment carries) through /proc. */
export class TrialWatcher {
  readonly seen = new Map<string, ObservedProcess>();
  /** Processes whose parent is one of these are re-read until they exec (node-pty forks, then execs). */
  readonly agentPids = new Set<number>();
  readonly #ignored = new Set<string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly study: string,
    readonly everyMs = 100,
  ) {}

  start(): void {
    this.scan();
    this.#timer = setInterval(() => this.scan(), this.everyMs);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.scan();
  }

  scan(): void {
    const now = Date.now();
    const listed = new Set<string>();
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      const pid = Number(d);
      const st = procStat(pid);
      if (!st) continue;
      const key = `${pid}:${st.start}`;
      listed.add(key);
      const known = this.seen.get(key);
      if (known) {
        if (known.deadAt === null && st.state === "Z") known.deadAt = now;
        continue;
      }
      if (this.#ignored.has(key) || st.state === "Z") continue;
      const env = procEnv(pid);
      if (!env) continue;
      if (env.get("RUNG_STUDY") !== this.study) {
        if (!this.agentPids.has(st.ppid)) this.#ignored.add(key);
        continue;
      }
      let cmd = "";
      try {
        cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
      } catch {
        // gone
      }
      this.seen.set(key, {
        pid,
        pgrp: st.pgrp,
        trial: env.get("RUNG_TRIAL") ?? "?",
        attempt: Number(env.get("RUNG_ATTEMPT") ?? 0),
        leader: st.pgrp === pid,
        cmd: cmd.slice(0, 200),
        firstSeen: now,
        deadAt: null,
      });
    }
    for (const [key, p] of this.seen) if (p.deadAt === null && !listed.has(key)) p.deadAt = now;
    for (const key of this.#ignored) if (!listed.has(key)) this.#ignored.delete(key);
  }

  alive(): ObservedProcess[] {
    return [...this.seen.values()].filter((p) => p.deadAt === null);
  }

  /** When each attempt's processes ran: first seen to the last of them gone (or now). */
  windows(
    now = Date.now(),
  ): Map<string, { trial: string; attempt: number; start: number; end: number; procs: ObservedProcess[] }> {
    const out = new Map<string, { trial: string; attempt: number; start: number; end: number; procs: ObservedProcess[] }>();
    for (const p of this.seen.values()) {
      const k = `${p.trial}#${p.attempt}`;
      const w = out.get(k) ?? { trial: p.trial, attempt: p.attempt, start: p.firstSeen, end: 0, procs: [] };
      w.start = Math.min(w.start, p.firstSeen);
      w.end = Math.max(w.end, p.deadAt ?? now);
      w.procs.push(p);
      out.set(k, w);
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Events, with the time the server stored them

export interface TimedEvent {
  seq: number;
  /** When the server stored it (ms); agents' own `ts` may be older when they had to retry. */
  storedAt: number;
  event: TrialEvent;
}

async function storedTimes(nc: NatsConnection, names: MeshNames, study: string): Promise<Map<number, number>> {
  const js = jetstream(nc);
  const consumer = await js.consumers.get(names.streams.events, {
    filter_subjects: names.subjects.studyEvents(study),
    deliver_policy: DeliverPolicy.All,
  });
  const out = new Map<number, number>();
  let pending = (await consumer.info()).num_pending;
  while (pending > 0) {
    const batch = await consumer.fetch({ max_messages: Math.min(pending, 1000), expires: 2000 });
    let got = 0;
    for await (const m of batch) {
      got += 1;
      out.set(m.seq, Math.round(Number(m.info.timestampNanos) / 1e6));
      pending = m.info.pending;
      if (pending === 0) break;
    }
    if (got === 0) break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Faults and results

export interface Fault {
  kind: string;
  at: number;
  /** When the cause was cleared (process back, node restarted, agent thawed, disk freed). */
  clearedAt?: number;
  target?: string;
  trial?: string;
  attempt?: number;
  /** Recovery = the first stored event after `from` for which this holds. */
  recovered: (e: TimedEvent) => boolean;
  /** Measure recovery from the fault (default) or from when it was cleared. */
  from?: "fault" | "cleared";
  note?: string;
}

/** Any event of the affected trial from a later attempt, or its end. */
export function trialMovedOn(trial: string, attempt: number): (e: TimedEvent) => boolean {
  return ({ event: ev }) =>
    ev.trial === trial && (ev.type === "ended" || ((ev.type === "started" || ev.type === "report") && ev.attempt > attempt));
}

/** Any event at all: the mesh is moving again. */
export const anyProgress = (): boolean => true;

/** An event only a coordinator writes. */
export const coordinatorProgress = ({ event: ev }: TimedEvent): boolean =>
  ev.type === "created" || ev.type === "queued" || ev.type === "decision" || ev.type === "ended";

export interface ChaosRow {
  scenario: string;
  faults: string;
  trials: number;
  lost: number;
  duplicated: number;
  recovered: number;
  ttrMeanMs: number | null;
  ttrMaxMs: number | null;
  outcome: string;
  dropped: string;
  seconds: number;
  notes: string[];
}

export interface ChaosReport extends ChaosRow {
  events: TimedEvent[];
  endedTwice: string[];
  endedNever: string[];
  overlaps: { trial: string; attempts: [number, number]; ms: number }[];
  leftovers: ObservedProcess[];
  agentStops: AgentStopLine[];
  coordinatorDrops: Record<string, number>;
  readerDrops: Record<string, number>;
  ttr: (number | null)[];
  /** Ended event per trial (the last one). */
  ended: Map<string, Extract<TrialEvent, { type: "ended" }>>;
  attempts: Map<string, Set<number>>;
  watcher: TrialWatcher;
  strayTrials: Set<string>;
}

export interface FinishOptions {
  /** The faults, in words, for the table. */
  faults: string;
  /** How long to wait for the coordinator to end the study. Default 90 s. */
  timeoutMs?: number;
  /** Bad messages injected, by who should drop them (`coordinator events`, `agents orders` …): the
   * table shows dropped/injected for each. */
  injected?: Record<string, number>;
}

export interface AgentStopLine {
  agent: string;
  counters: Record<string, number>;
  dropped: Record<string, number>;
}

function jsonLines(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a progress line that happens to start with a brace
    }
  }
  return out;
}

/** Sums per-kind counters (`orders:msgpack` …) by where they were dropped (`orders`). */
export function byWhere(counts: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, n] of Object.entries(counts)) {
    const where = k.split(":")[0] as string;
    out[where] = (out[where] ?? 0) + n;
  }
  return out;
}

export function addCounts(...all: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of all) for (const [k, n] of Object.entries(c)) out[k] = (out[k] ?? 0) + n;
  return out;
}

function alive(p: Proc): boolean {
  return p.child.exitCode === null && p.child.signalCode === null;
}

// ---------------------------------------------------------------------------------------------
// The mesh

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

export class ChaosMesh {
  readonly names: MeshNames;
  readonly procs: Proc[] = [];
  readonly agents = new Map<string, Proc>();
  readonly coordinators: Proc[] = [];
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
  startAgent(name: string, extra: string[] = []): Proc {
    // startAgents owns the flags every test agent needs (lease, workdir, and the trust flags of signed
    // work orders); the last --name / --state-dir given wins.
    const [p] = startAgents(this.url, this.prefix, 1, [
      "--name",
      name,
      "--state-dir",
      join(this.stateRoot, name),
      ...this.#agentFlags,
      ...extra,
    ]);
    const proc = p as Proc;
    this.agents.set(name, proc);
    this.procs.push(proc);
    if (proc.child.pid) this.watcher.agentPids.add(proc.child.pid);
    return proc;
  }

  startAgents(n: number, extra: string[] = []): Proc[] {
    return Array.from({ length: n }, (_, i) => this.startAgent(`a${i + 1}`, extra));
  }

  /** `rung study run SPEC` with the suite's short coordinator lease. */
  startStudy(specFile: string): Proc {
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

  get coordinator(): Proc | undefined {
    return this.coordinators.at(-1);
  }

  /**
   * Starts the coordinator again after it died. Its lease must run out first: a coordinator refused
   * because the lease still lives exits at once, and is started again.
   */
  async restartStudy(timeoutMs = 20_000): Promise<Proc> {
    const spec = this.#specFile as string;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = this.startStudy(spec);
      const outcome = await Promise.race([
        // A coordinator that finds the study already done (the last trials ended while none ran) ends it.
        p.exited.then((code) =>
          code === 0 && /study \S+ (completed|stopped)/.test(p.out()) ? ("running" as const) : ("exited" as const),
        ),
        waitFor(
          "the coordinator to resume",
          () => /resuming study|dispatched|study \S+ (completed|stopped)/.test(p.out()),
          timeoutMs,
          50,
        ).then(() => "running" as const),
      ]).catch(() => "timeout" as const);
      if (outcome === "running") return p;
      if (outcome === "exited" && /already run by coordinator/.test(p.out()) && Date.now() < deadline) {
        await sleep(250);
        continue;
      }
      throw new Error(`the coordinator did not resume (${outcome}):\n${p.out().slice(-2000)}`);
    }
  }

  fault(f: Omit<Fault, "at"> & { at?: number }): Fault {
    const fault: Fault = { at: Date.now(), ...f };
    this.faults.push(fault);
    return fault;
  }

  /** SIGKILL, and wait until the process is gone. */
  async kill(p: Proc, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    p.child.kill(signal);
    await p.exited;
  }

  async events(): Promise<TimedEvent[]> {
    const [stored, times] = await Promise.all([
      readStudyEvents(this.nc, this.names, this.study),
      storedTimes(this.nc, this.names, this.study),
    ]);
    return stored.map((s) => ({ seq: s.seq, storedAt: times.get(s.seq) ?? s.event.ts, event: s.event }));
  }

  async waitForEvents<T>(what: string, pick: (evs: TimedEvent[]) => T, timeoutMs = 60_000): Promise<NonNullable<T>> {
    return waitFor(what, async () => pick(await this.events()), timeoutMs, 400);
  }

  /** Stops everything this mesh started: agents get SIGTERM (their clean exit logs their counters). */
  async stopAll(): Promise<void> {
    for (const p of this.procs) if (alive(p)) p.child.kill("SIGCONT");
    const coordinators = this.coordinators.filter(alive);
    await stopAll(coordinators);
    await stopAll([...this.agents.values()]);
    await stopAll(this.procs);
  }

  /** The last `agent stopped` line of every agent process that exited cleanly. */
  agentStops(): AgentStopLine[] {
    const out: AgentStopLine[] = [];
    for (const p of this.procs) {
      for (const l of jsonLines(p.out())) {
        if (l.msg === "agent stopped" && typeof l.counters === "object") {
          out.push({
            agent: String(l.agent),
            counters: l.counters as Record<string, number>,
            dropped: (l.dropped ?? {}) as Record<string, number>,
          });
        }
      }
    }
    return out;
  }

  /** Drop counts the coordinators logged when they ended (summed over restarts). */
  coordinatorDrops(): Record<string, number> {
    const all: Record<string, number>[] = [];
    for (const p of this.coordinators)
      for (const l of jsonLines(p.out())) if (l.drops && typeof l.drops === "object") all.push(l.drops as Record<string, number>);
    return addCounts(...all);
  }

  /**
   * Waits for the coordinator to end the study, stops every process, and accounts for the study. The
   * scenario's row goes to the results file when the mesh is closed (afterEach), asserts or not.
   */
  async finish(o: FinishOptions): Promise<ChaosReport> {
    const coord = this.coordinator;
    let code: number | null = null;
    if (coord) {
      code = await Promise.race([coord.exited, sleep(o.timeoutMs ?? 90_000).then(() => -1)]);
      if (code === -1) this.notes.push(`coordinator still running after ${o.timeoutMs ?? 90_000} ms`);
    }
    const outcome =
      code === 0 ? (/study \S+ (completed|stopped)/.exec(coord?.out() ?? "")?.[1] ?? "exit 0") : `exit ${code ?? "signal"}`;
    await this.stopAll();
    // Trials end with their agents; give /proc a moment to show it.
    await waitFor("every trial process to be gone", () => this.watcher.alive().length === 0, 5000, 100).catch(() => {});
    this.watcher.stop();
    const readerDrops = new BadMessageCounter();
    const stored = await readStudyEvents(this.nc, this.names, this.study, readerDrops);
    const times = await storedTimes(this.nc, this.names, this.study);
    const events = stored.map((s) => ({ seq: s.seq, storedAt: times.get(s.seq) ?? s.event.ts, event: s.event }));
    const report = this.#account(events, outcome, o, readerDrops.snapshot());
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

  #account(events: TimedEvent[], outcome: string, o: FinishOptions, readerDrops: Record<string, number>): ChaosReport {
    const created = new Set<string>();
    const endedCount = new Map<string, number>();
    const ended = new Map<string, Extract<TrialEvent, { type: "ended" }>>();
    const attempts = new Map<string, Set<number>>();
    const agentOf = new Map<string, string>();
    for (const { event: ev } of events) {
      if (this.strayTrials.has(ev.trial)) continue;
      if (ev.type === "created") created.add(ev.trial);
      if (ev.type === "ended") {
        endedCount.set(ev.trial, (endedCount.get(ev.trial) ?? 0) + 1);
        ended.set(ev.trial, ev);
      }
      if (ev.type === "claimed" || ev.type === "started" || ev.type === "finished") {
        const s = attempts.get(ev.trial) ?? new Set<number>();
        s.add(ev.attempt);
        attempts.set(ev.trial, s);
        agentOf.set(`${ev.trial}#${ev.attempt}`, ev.agent);
      }
    }
    const endedNever = [...created].filter((t) => !endedCount.has(t));
    const endedTwice = [...endedCount].filter(([, n]) => n > 1).map(([t]) => t);

    // Two attempts of one trial alive at once, less the time the older one's agent was frozen
    // (SIGSTOP): a frozen agent cannot act, and must kill its copy within a heartbeat of waking.
    const overlaps: ChaosReport["overlaps"] = [];
    const byTrial = new Map<string, { attempt: number; start: number; end: number }[]>();
    for (const w of this.watcher.windows().values()) {
      const list = byTrial.get(w.trial) ?? [];
      list.push(w);
      byTrial.set(w.trial, list);
    }
    for (const [trial, ws] of byTrial) {
      ws.sort((a, b) => a.attempt - b.attempt);
      for (let i = 0; i < ws.length; i++) {
        for (let j = i + 1; j < ws.length; j++) {
          const a = ws[i] as (typeof ws)[number];
          const b = ws[j] as (typeof ws)[number];
          const lo = Math.max(a.start, b.start);
          const hi = Math.min(a.end, b.end);
          if (hi <= lo) continue;
          let ms = hi - lo;
          const agent = agentOf.get(`${trial}#${a.attempt}`);
          for (const f of this.faults) {
            if (f.kind !== "SIGSTOP agent" || f.target !== agent) continue;
            const fl = Math.max(lo, f.at);
            const fh = Math.min(hi, f.clearedAt ?? Date.now());
            if (fh > fl) ms -= fh - fl;
          }
          if (ms > HEARTBEAT_MS) overlaps.push({ trial, attempts: [a.attempt, b.attempt], ms });
        }
      }
    }
    const duplicated = new Set([...endedTwice, ...overlaps.map((o) => o.trial)]);
    const recovered = [...created].filter((t) => {
      const e = ended.get(t);
      return e && (e.status === "completed" || e.status === "stopped") && (attempts.get(t)?.size ?? 0) > 1;
    });

    const ttr = this.faults.map((f) => {
      const from = f.from === "cleared" ? (f.clearedAt ?? f.at) : f.at;
      const next = events.filter((e) => e.storedAt > from && f.recovered(e)).sort((x, y) => x.storedAt - y.storedAt)[0];
      return next ? next.storedAt - from : null;
    });
    const measured = ttr.filter((x): x is number => x !== null);
    const leftovers = this.watcher.alive();
    const coordinatorDrops = this.coordinatorDrops();
    const agentStops = this.agentStops();
    const agentDrops = addCounts(...agentStops.map((s) => s.dropped));
    const reportLines = agentStops.reduce((n, a) => n + (a.counters.malformedReportLines ?? 0), 0);
    const droppedByWhere = addCounts(
      Object.fromEntries(Object.entries(byWhere(coordinatorDrops)).map(([k, n]) => [`coordinator ${k}`, n])),
      Object.fromEntries(Object.entries(byWhere(agentDrops)).map(([k, n]) => [`agents ${k}`, n])),
      reportLines > 0 ? { "agents report lines": reportLines } : {},
    );
    const injected = o.injected ?? {};
    const keys = [...new Set([...Object.keys(droppedByWhere), ...Object.keys(injected)])].sort();
    const dropped = keys.length
      ? keys.map((k) => `${k} ${droppedByWhere[k] ?? 0}${k in injected ? `/${injected[k]}` : ""}`).join(", ")
      : "0";
    const notes = [...this.notes];
    // The same event stored twice (same kind, trial, attempt and sequence): the server's duplicate
    // window should have dropped the second copy of a retried publish.
    const copies = countBy(
      events.map((e) => e.event),
      (e) => JSON.stringify(e),
    );
    const twice = [...copies]
      .filter(([, n]) => n > 1)
      .map(([k, n]) => {
        const e = JSON.parse(k) as TrialEvent;
        return `${e.type} of ${e.trial}${"attempt" in e ? ` attempt ${e.attempt}` : ""} ×${n}`;
      });
    if (twice.length) notes.push(`stored more than once: ${twice.join(", ")}`);
    this.faults.forEach((f, i) => {
      const t = ttr[i];
      const what = `${f.kind}${f.target ? ` (${f.target}${f.trial ? `, ${f.trial} attempt ${f.attempt}` : ""})` : ""}`;
      notes.push(
        `${what}: ${t === null || t === undefined ? "no recovery event" : `recovered ${(t / 1000).toFixed(1)} s after the fault${f.from === "cleared" ? " was cleared" : ""}`}`,
      );
    });
    if (leftovers.length) notes.push(`left running: ${leftovers.map((p) => `${p.pid} ${p.cmd}`).join("; ")}`);
    if (endedNever.length) notes.push(`never ended: ${endedNever.join(", ")}`);
    if (endedTwice.length) notes.push(`ended twice: ${endedTwice.join(", ")}`);
    for (const o of overlaps) notes.push(`${o.trial} attempts ${o.attempts.join("+")} ran together for ${o.ms} ms`);
    return {
      scenario: this.scenario,
      faults: o.faults,
      trials: created.size,
      lost: endedNever.length,
      duplicated: duplicated.size,
      recovered: recovered.length,
      ttrMeanMs: measured.length ? Math.round(measured.reduce((a, b) => a + b, 0) / measured.length) : null,
      ttrMaxMs: measured.length ? Math.max(...measured) : null,
      outcome,
      dropped,
      seconds: Math.round((Date.now() - this.startedAt) / 100) / 10,
      notes,
      events,
      endedTwice,
      endedNever,
      overlaps,
      leftovers,
      agentStops,
      coordinatorDrops,
      readerDrops,
      ttr,
      ended,
      attempts,
      watcher: this.watcher,
      strayTrials: this.strayTrials,
    };
  }

  /** Records the scenario's row (after finish), stops whatever still runs, closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#report) {
      const { row, notes } = this.#report;
      this.#report = undefined;
      appendRow({ ...row, notes: [...row.notes, ...this.notes.slice(notes)] });
    } else if (!this.#closed) {
      // The test failed before finish(): the table says so rather than leave the scenario out.
      appendRow({
        scenario: this.scenario,
        faults: this.faults.map((f) => f.kind).join(", ") || "—",
        trials: 0,
        lost: 0,
        duplicated: 0,
        recovered: 0,
        ttrMeanMs: null,
        ttrMaxMs: null,
        outcome: "FAILED (see the test output)",
        dropped: "—",
        seconds: Math.round((Date.now() - this.startedAt) / 100) / 10,
        notes: [...this.notes, `logs in test-results/chaos-logs/`],
      });
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
    for (const p of this.watcher.alive()) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    await this.nc.close().catch(() => {});
  }
}

/** Appends a row (the report without its bulky parts) to test-results/chaos.jsonl. */
export function appendRow(r: ChaosRow): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const row: ChaosRow = {
    scenario: r.scenario,
    faults: r.faults,
    trials: r.trials,
    lost: r.lost,
    duplicated: r.duplicated,
    recovered: r.recovered,
    ttrMeanMs: r.ttrMeanMs,
    ttrMaxMs: r.ttrMaxMs,
    outcome: r.outcome,
    dropped: r.dropped,
    seconds: r.seconds,
    notes: r.notes,
  };
  appendFileSync(RESULTS_FILE, `${JSON.stringify(row)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Picking victims

export interface RunningAttempt {
  trial: string;
  attempt: number;
  agent: string;
  pid: number;
  reports: number;
}

/** Attempts that started, reported at least `minReports` times and have not finished, newest first. */
export function runningAttempts(evs: TimedEvent[], minReports = 1): RunningAttempt[] {
  const started = new Map<string, RunningAttempt>();
  const done = new Set<string>();
  const endedTrials = new Set<string>();
  for (const { event: ev } of evs) {
    if (ev.type === "started")
      started.set(`${ev.trial}#${ev.attempt}`, {
        trial: ev.trial,
        attempt: ev.attempt,
        agent: ev.agent,
        pid: ev.pid,
        reports: 0,
      });
    if (ev.type === "report") {
      const r = started.get(`${ev.trial}#${ev.attempt}`);
      if (r) r.reports += 1;
    }
    if (ev.type === "finished") done.add(`${ev.trial}#${ev.attempt}`);
    if (ev.type === "decision") done.add(`${ev.trial}#${ev.attempt}`);
    if (ev.type === "ended") endedTrials.add(ev.trial);
  }
  return [...started.entries()]
    .filter(([k, r]) => !done.has(k) && !endedTrials.has(r.trial) && r.reports >= minReports)
    .map(([, r]) => r)
    .reverse();
}

export function countBy<T>(items: T[], key: (t: T) => string): Map<string, number> {
  const m = new Map<string, number>();
  for (const i of items) m.set(key(i), (m.get(key(i)) ?? 0) + 1);
  return m;
}
