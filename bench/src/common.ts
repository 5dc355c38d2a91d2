import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, hostname, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { type AgentAdvert, AgentAdvertSchema, decode, type MeshNames } from "@rung/protocol";
import { startNats, type TestNats } from "@rung/testkit";

/** Shared plumbing of the benchmark suite: paths, statistics, Markdown tables, /proc sampling, processes. */

export const REPO = resolve(import.meta.dirname, "..", "..");
export const RUNG = join(REPO, "packages", "cli", "dist", "bin.js");
export const RESULTS = join(REPO, "bench", "results.json");
export const CURVE_TRIAL = "test/fixtures/curve-trial.mjs";
export const PYTHON = process.env.BENCH_PYTHON ?? "/usr/bin/python3";
const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

// ---------------------------------------------------------------------------------------------
// Statistics

/** Nearest-rank percentile of an ascending array (q in 0..100); NaN when empty. */
export function pct(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((q / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

export function sortNum(xs: readonly number[]): number[] {
  return [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
}

export interface Dist {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function dist(xs: readonly number[]): Dist {
  const s = sortNum(xs);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : Number.NaN;
  return { n: s.length, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), max: s.at(-1) ?? Number.NaN, mean };
}

export function median(xs: readonly number[]): number {
  const s = sortNum(xs);
  if (s.length === 0) return Number.NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Median and range of repeated measurements: "12.3 (11.9–13.0)"; one value alone when n = 1. */
export function spread(xs: readonly number[], digits = 1, unit = ""): string {
  const s = sortNum(xs);
  if (s.length === 0) return "–";
  const f = (x: number) => `${fmt(x, digits)}${unit}`;
  if (s.length === 1) return f(s[0] as number);
  return `${f(median(s))} (${fmt(s[0] as number, digits)}–${fmt(s.at(-1) as number, digits)})`;
}

export function fmt(x: number | null | undefined, digits = 1): string {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (!Number.isFinite(x)) return x > 0 ? "∞" : "-∞";
  const s = x.toFixed(digits);
  return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s;
}

export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const p = 10 ** digits;
  return Math.round(x * p) / p;
}

/** A Markdown table; numbers should already be formatted. */
export function table(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const line = (cells: readonly (string | number)[]) => `| ${cells.map(String).join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Processes, CPU and memory from /proc

export interface CpuSnapshot {
  /** CPU seconds of the process itself (user + system). */
  self: number;
  /** CPU seconds of its children that it has waited for (user + system). */
  children: number;
}

export function cpuOf(pid: number): CpuSnapshot | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return {
      self: (Number(f[11]) + Number(f[12])) / CLK_TCK,
      children: (Number(f[13]) + Number(f[14])) / CLK_TCK,
    };
  } catch {
    return null;
  }
}

export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** Children of a process (one level), from /proc. */
export function childrenOf(pid: number): number[] {
  try {
    const tasks = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
    return tasks ? tasks.split(/\s+/).map(Number) : [];
  } catch {
    return [];
  }
}

/**
 * Samples CPU and RSS of some processes once a second between `start()` and `stop()`: CPU as a share
 * of one core over the window (self only, so a parent is not charged for the children it reaps), RSS
 * median and max.
 */
export class ProcSampler {
  readonly #pids: Map<string, number>;
  readonly #rss = new Map<string, number[]>();
  #cpu0 = new Map<string, CpuSnapshot>();
  #t0 = 0;
  #timer: NodeJS.Timeout | undefined;
  #intervalMs: number;

  constructor(pids: Record<string, number>, intervalMs = 1000) {
    this.#pids = new Map(Object.entries(pids));
    this.#intervalMs = intervalMs;
  }

  start(): void {
    this.#t0 = performance.now();
    for (const [k, pid] of this.#pids) {
      this.#cpu0.set(k, cpuOf(pid) ?? { self: 0, children: 0 });
      this.#rss.set(k, []);
    }
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), this.#intervalMs);
  }

  #sample(): void {
    for (const [k, pid] of this.#pids) {
      const r = rssMiB(pid);
      if (r > 0) this.#rss.get(k)?.push(r);
    }
  }

  stop(): Record<string, { cpuCores: number; cpuSeconds: number; childCpuSeconds: number; rssMiB: number; maxRssMiB: number }> {
    if (this.#timer) clearInterval(this.#timer);
    this.#sample();
    const wall = (performance.now() - this.#t0) / 1000;
    const out: Record<
      string,
      { cpuCores: number; cpuSeconds: number; childCpuSeconds: number; rssMiB: number; maxRssMiB: number }
    > = {};
    for (const [k, pid] of this.#pids) {
      const a = this.#cpu0.get(k) ?? { self: 0, children: 0 };
      const b = cpuOf(pid) ?? a;
      const rss = this.#rss.get(k) ?? [];
      out[k] = {
        cpuSeconds: round(b.self - a.self, 2),
        childCpuSeconds: round(b.children - a.children, 2),
        cpuCores: round((b.self - a.self) / wall, 4),
        rssMiB: round(median(rss), 1),
        maxRssMiB: round(Math.max(0, ...rss), 1),
      };
    }
    return out;
  }
}

export interface Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  out(): string;
  readonly exited: Promise<number | null>;
}

/** Every process the suite started and that still runs, so a benchmark that hangs can be cleaned up. */
const started = new Set<ChildProcess>();
const servers = new Set<TestNats>();

export function startProc(cmd: string, args: readonly string[], env: Record<string, string> = {}, cwd = REPO): Proc {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
  started.add(child);
  child.once("exit", () => started.delete(child));
  let out = "";
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-200_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, pid: child.pid as number, out: () => out, exited };
}

export function rung(args: readonly string[], env: Record<string, string> = {}): Proc {
  return startProc(process.execPath, [RUNG, ...args], { RUNG_LOG_LEVEL: process.env.RUNG_LOG_LEVEL ?? "warn", ...env });
}

let insecureFlag: boolean | undefined;
/** Agents will soon refuse unsigned orders unless started with --insecure; pass it once the CLI has it. */
export function agentSecurityFlags(): string[] {
  insecureFlag ??= /--insecure\b/.test(spawnSync(process.execPath, [RUNG, "agent", "--help"], { encoding: "utf8" }).stdout ?? "");
  return insecureFlag ? ["--insecure"] : [];
}

export interface AgentSpec {
  name: string;
  fakeGpus?: number;
  extra?: readonly string[];
  env?: Record<string, string>;
}

/** Starts `rung agent` processes, the way an operator would. */
export function startAgents(url: string, prefix: string, agents: readonly AgentSpec[]): Proc[] {
  const state = mkdtempSync(join(tmpdir(), "rung-bench-agents-"));
  return agents.map((a) =>
    rung(
      [
        "agent",
        "--nats",
        url,
        "--prefix",
        prefix,
        "--name",
        a.name,
        ...(a.fakeGpus !== undefined ? ["--fake-gpus", String(a.fakeGpus)] : []),
        "--workdir",
        REPO,
        "--state-dir",
        join(state, a.name),
        "--stop-grace",
        "2s",
        ...agentSecurityFlags(),
        ...(a.extra ?? []),
      ],
      a.env,
    ),
  );
}

export async function stopAll(procs: readonly Proc[], signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((r) => {
          if (p.child.exitCode !== null || p.child.signalCode !== null) return r();
          const t = setTimeout(() => p.child.kill("SIGKILL"), 10_000);
          p.child.once("exit", () => {
            clearTimeout(t);
            r();
          });
          p.child.kill(signal);
        }),
    ),
  );
}

/** A nats-server for one benchmark (testkit's: port picked by the server, temp JetStream store). */
export async function startBenchNats(): Promise<TestNats> {
  const nats = await startNats();
  servers.add(nats);
  const destroy = nats.destroy.bind(nats);
  nats.destroy = async () => {
    servers.delete(nats);
    await destroy();
  };
  return nats;
}

/** Kills what the suite started and is still running (by pid), after a benchmark gave up. */
export async function killStarted(): Promise<void> {
  for (const c of started) c.kill("SIGKILL");
  await Promise.allSettled([...servers].map((s) => s.destroy()));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolves to `fallback` when `p` takes longer than `ms` (a check that hangs counts as "not yet"). */
export function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(fallback), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      () => {
        clearTimeout(t);
        resolve(fallback);
      },
    );
  });
}

/** The adverts of the named agents (one direct KV get each), missing ones left out. */
export async function advertsOf(nc: NatsConnection, names: MeshNames, agents: readonly string[]): Promise<AgentAdvert[]> {
  const kv: KV | null = await within(new Kvm(nc).open(names.buckets.agents), 5000, null);
  if (!kv) return [];
  const out: AgentAdvert[] = [];
  for (const a of agents) {
    const e = await within(kv.get(a), 5000, null);
    if (!e || e.operation !== "PUT") continue;
    const r = decode(AgentAdvertSchema, e.value, "advert");
    if (r.ok) out.push(r.value);
  }
  return out;
}

/** Waits until every named agent advertises itself running (and `also` holds for the adverts). */
export async function waitForAgents(
  nc: NatsConnection,
  names: MeshNames,
  agents: readonly string[],
  timeoutMs = 60_000,
  also: (adverts: AgentAdvert[]) => boolean = () => true,
): Promise<void> {
  await waitUntil(
    `${agents.length} agent(s) to advertise`,
    async () => {
      const ads = await advertsOf(nc, names, agents);
      return ads.filter((a) => a.state === "running").length === agents.length && also(ads);
    },
    timeoutMs,
    200,
  );
}

export async function waitUntil(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await within(Promise.resolve().then(check), 10_000, false)) return;
    if (Date.now() > deadline) throw new Error(`benchmark gave up waiting for ${what} after ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `rung-bench-${tag}-`));
}

// ---------------------------------------------------------------------------------------------
// Results

export interface Machine {
  cores: number;
  cpu: string;
  memoryGiB: number;
  node: string;
  host: string;
  loadAverageAtStart: number[];
}

export function machine(): Machine {
  const list = cpus();
  return {
    cores: list.length,
    cpu: list[0]?.model ?? "unknown",
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    node: process.version,
    host: hostname(),
    loadAverageAtStart: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(Number),
  };
}

/** Merges one benchmark's figures into bench/results.json, keeping what other benchmarks wrote. */
export function saveResult(key: string, value: unknown): void {
  let all: Record<string, unknown> = {};
  try {
    if (existsSync(RESULTS)) all = JSON.parse(readFileSync(RESULTS, "utf8")) as Record<string, unknown>;
  } catch {
    // unreadable: start again
  }
  all[key] = value;
  writeFileSync(RESULTS, `${JSON.stringify(all, null, 2)}\n`);
}

/** What each benchmark module exports. */
export interface BenchContext {
  quick: boolean;
  log(line: string): void;
}

export interface BenchOutcome {
  /** Markdown: one or more tables with a heading line. */
  markdown: string;
  data: unknown;
}
