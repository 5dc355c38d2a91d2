import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type DiagnosisInput, type Finding, type FindingKind, joinTelemetry, StudyState } from "@rung/coordinator";
import { type GpuSample, sourceOf, type Telemetry, type TrialEvent } from "@rung/protocol";
import { cpuTicks, descendants, rung, spawnProcess, type TestProcess } from "@rung/testkit";

/**
 * The labelled suite of the diagnosis: real PyTorch runs of examples/digits/train.py (reports
 * collected on a Unix socket, as an agent would) turned into fake-GPU traces exactly as the agent's
 * fake GPU makes them; studies of examples/slow-loader/train.py run by a real `rung agent` with a fake
 * GPU and reported by `rung study report`, as a user runs them; and synthetic GPU-side scenarios.
 * Each case says which findings it must produce; anything else it produces is a false positive.
 */

export const REPO = resolve(import.meta.dirname, "..");
const TRAIN = join(REPO, "examples", "digits", "train.py");
const STUDY = "lab";

export interface LabelledCase {
  name: string;
  source: "real" | "agent" | "synthetic";
  expected: FindingKind[];
  /**
   * Expected findings that the box's other load may take away: found, they are true positives;
   * missing, not false negatives. (A CPU-bound trial fills the cores only when nothing else wants them.)
   */
  optional?: FindingKind[];
  /** What the diagnosis is run on; or, for the agent's studies, what `rung study report` found. */
  input: DiagnosisInput | { findings: readonly Finding[] };
  /** What the case measured, for the printed table. */
  note: string;
}

// ---------------------------------------------------------------------------------------------
// Real runs

export interface RealRun {
  startedAt: number;
  endedAt: number;
  exitCode: number | null;
  reports: { ts: number; metrics: Record<string, number> }[];
  /** CPU load of the run's process tree as a share of the whole host, sampled like the agent's host samples. */
  cpu: { ts: number; percent: number }[];
  cores: number;
  output: string;
}

/** Runs train.py without an agent: RUNG_REPORT is our socket, so we get the real report lines. */
export async function runDigits(args: string[], sampleMs = 250): Promise<RealRun> {
  const dir = mkdtempSync(join(tmpdir(), "rung-lab-"));
  const socketPath = join(dir, "report.sock");
  const reports: RealRun["reports"] = [];
  const server = createServer((sock) => {
    let buf = "";
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => {
      buf += d;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const raw = JSON.parse(line) as Record<string, number | string>;
        const metrics: Record<string, number> = {};
        for (const [k, v] of Object.entries(raw)) metrics[k] = typeof v === "string" ? Number(v) : v;
        reports.push({ ts: Date.now(), metrics });
      }
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  const cores = cpus().length;
  const startedAt = Date.now();
  const train = spawnProcess("/usr/bin/python3", [TRAIN, ...args], {
    cwd: dir,
    env: { RUNG_REPORT: socketPath, RUNG_CHECKPOINT_DIR: join(dir, "ckpt"), OMP_NUM_THREADS: "1" },
  });
  const cpu: RealRun["cpu"] = [];
  let lastTicks = 0;
  let lastAt = startedAt;
  const timer = setInterval(() => {
    const pid = train.child.pid;
    if (pid === undefined) return;
    let ticks = cpuTicks(pid);
    for (const p of descendants(pid)) ticks += cpuTicks(p.pid);
    const now = Date.now();
    const seconds = (now - lastAt) / 1000;
    if (seconds > 0)
      cpu.push({ ts: now, percent: Math.max(0, Math.min(100, ((ticks - lastTicks) / 100 / seconds / cores) * 100)) });
    lastTicks = ticks;
    lastAt = now;
  }, sampleMs);
  const exitCode = await train.exited;
  clearInterval(timer);
  const endedAt = Date.now();
  await new Promise<void>((r) => server.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
  return { startedAt, endedAt, exitCode, reports, cpu, cores, output: train.out() };
}

/** Deterministic noise in [-1, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 2 - 1;
  };
}

const FAKE_MEMORY_MIB = 24_576;

/**
 * The agent's fake GPU, step for step (packages/agent/src/fake-gpus.ts): utilization is the busy share
 * of the trial's latest report ± 3 points, 5 % before the first report; memory 15 % + half the
 * utilization's share of 24 GiB. Sampled every `intervalMs` from spawn to exit.
 */
export function fakeGpuTrace(run: RealRun, trial: string, intervalMs = 250, seed = 1): Telemetry[] {
  const noise = rng(seed);
  const out: Telemetry[] = [];
  let next = 0;
  let busy: number | null = null;
  for (let ts = run.startedAt; ts <= run.endedAt; ts += intervalMs) {
    while (next < run.reports.length && (run.reports[next]?.ts ?? Number.POSITIVE_INFINITY) <= ts) {
      const m = run.reports[next]?.metrics ?? {};
      const w = m.data_wait_s ?? 0;
      const c = m.compute_s ?? 0;
      busy = w + c > 0 ? c / (w + c) : busy;
      next += 1;
    }
    const base = busy === null ? 5 : 100 * busy;
    const util = Math.round(Math.min(100, Math.max(0, base + noise() * 3)));
    out.push({
      v: 1,
      type: "gpu",
      agent: "lab-host",
      ts,
      fake: true,
      gpus: [sample(0, util, Math.round(FAKE_MEMORY_MIB * (0.15 + 0.5 * (util / 100))), trial)],
    });
  }
  // The run's process tree is the only load we account for: it is the host's CPU and, as the agent
  // measures it, the trial's own.
  for (const c of run.cpu)
    out.push({
      v: 1,
      type: "host",
      agent: "lab-host",
      ts: c.ts,
      cpuLoadPercent: c.percent,
      cpuCores: run.cores,
      memoryUsedBytes: 0,
      memoryTotalBytes: 1,
      trials: [{ study: STUDY, trial, attempt: 1, cpuCores: (c.percent / 100) * run.cores, processes: 1 }],
    });
  return out;
}

function sample(index: number, util: number, memMiB: number, trial: string | null): GpuSample {
  return {
    index,
    uuid: `GPU-lab-${index}`,
    utilizationGpu: util,
    utilizationMemory: null,
    memoryUsedMiB: memMiB,
    memoryTotalMiB: FAKE_MEMORY_MIB,
    powerW: 60 + 2.4 * util,
    temperatureC: 35 + 0.4 * util,
    smClockMHz: null,
    study: trial === null ? null : STUDY,
    trial,
  };
}

function lifecycle(
  trial: string,
  agent: string,
  gpus: number[],
  start: number,
  end: number,
  reports: RealRun["reports"],
): TrialEvent[] {
  const b = { v: 1 as const, study: STUDY, trial };
  return [
    { ...b, ts: start, type: "created", params: {}, bracket: 0 },
    { ...b, ts: start, type: "queued", attempt: 1 },
    { ...b, ts: start, type: "claimed", attempt: 1, agent, gpus },
    { ...b, ts: start, type: "started", attempt: 1, agent, pid: 1, gpus },
    ...reports.map((r, seq): TrialEvent => ({ ...b, ts: r.ts, type: "report", attempt: 1, agent, seq, metrics: r.metrics })),
    {
      ...b,
      ts: end,
      type: "finished",
      attempt: 1,
      agent,
      status: "completed",
      exitCode: 0,
      signal: null,
      reason: "completed",
      logTail: [],
    },
    { ...b, ts: end, type: "ended", status: "completed", reason: "completed", attempts: 1 },
  ];
}

function join_(events: TrialEvent[], telemetry: Telemetry[], now: number): DiagnosisInput {
  const state = new StudyState({ study: STUDY, metric: "val_acc", mode: "max", timeAttr: "epoch" });
  for (const e of [...events].sort((a, b) => a.ts - b.ts)) state.apply(e, sourceOf(e));
  return joinTelemetry(state, telemetry, { events, now });
}

/** A real run as the diagnosis sees it: its events and the fake GPU's trace, joined. */
export function realCase(run: RealRun, trial: string): DiagnosisInput {
  return join_(lifecycle(trial, "lab-host", [0], run.startedAt, run.endedAt, run.reports), fakeGpuTrace(run, trial), run.endedAt);
}

// ---------------------------------------------------------------------------------------------
// Studies on a real agent: examples/slow-loader/train.py through `rung study run` and `rung study report`

/** What `rung study report --json` says, as far as the suite reads it. */
export interface ReportJson {
  findings: Finding[];
  trials: { trial: string; dataWaitShare: number | null; numWorkers: number | null; utilization: { mean: number } | null }[];
}

export interface LoaderStudy {
  name: string;
  report: ReportJson;
  /** The study's one trial as the report shows it. */
  trial: ReportJson["trials"][number];
  /** The input-bound finding, if any. */
  inputBound: Finding | undefined;
  wallS: number;
}

/**
 * Runs a one-trial study of the slow loader on the mesh behind `flags` (`--nats … --prefix …`), as a
 * user would: a spec file, `rung study run`, then `rung study report --json`. `args` go to train.py;
 * `push` takes each process started, so the test stops it whatever happens.
 */
export async function runLoaderStudy(o: {
  flags: string[];
  name: string;
  args: string[];
  epochs: number;
  push(p: TestProcess): void;
}): Promise<LoaderStudy> {
  const dir = mkdtempSync(join(tmpdir(), "rung-loader-"));
  const file = join(dir, `${o.name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name: o.name,
      command: `/usr/bin/python3 train.py --lr {lr} ${o.args.join(" ")} --epochs {max_t}`,
      workdir: "examples/slow-loader",
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { lr: { grid: [0.01] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: o.epochs },
      resources: { gpus: 1 },
      retries: 0,
    }),
  );
  const started = Date.now();
  try {
    const run = rung(["study", "run", file, ...o.flags]);
    o.push(run);
    const code = await run.exited;
    if (code !== 0) throw new Error(`rung study run ${o.name} exited with ${code}:\n${run.out()}`);
    const wallS = (Date.now() - started) / 1000;
    // The agent's last host sample of the trial may still be on its way: the report reads what is stored.
    await new Promise((r) => setTimeout(r, 500));
    const rep = rung(["study", "report", o.name, "--json", ...o.flags]);
    o.push(rep);
    const rc = await rep.exited;
    if (rc !== 0) throw new Error(`rung study report ${o.name} exited with ${rc}:\n${rep.out()}`);
    const report = JSON.parse(rep.stdout().toString()) as ReportJson;
    const trial = report.trials[0];
    if (!trial) throw new Error(`the report of ${o.name} has no trial`);
    return { name: o.name, report, trial, inputBound: report.findings.find((f) => f.kind === "input-bound"), wallS };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Synthetic GPU-side scenarios (real-GPU style samples at 1 Hz)

const T0 = 1_750_000_000_000;

interface SynthGpu {
  util: number;
  mem: number;
}

/** One trial on `gpus.length` GPUs of one agent for `seconds`, reporting every 20 s. */
function synthTrial(o: {
  trial: string;
  gpus: SynthGpu[];
  wait: number;
  seconds?: number;
  workers?: number;
  hostCpu?: number;
  cores?: number;
  /** The trial's own CPU in cores, as its agent measures it; unset: an agent that does not. */
  own?: number;
  /** The host's CPU percent while the loader waited, as rung_trial reports it; unset: not reported. */
  waitCpu?: number;
  seed?: number;
}): DiagnosisInput {
  const seconds = o.seconds ?? 300;
  const noise = rng(o.seed ?? 7);
  const start = T0;
  const end = T0 + seconds * 1000;
  const reports: RealRun["reports"] = [];
  for (let s = 20, e = 1; s <= seconds; s += 20, e++) {
    const metrics: Record<string, number> = {
      epoch: e,
      val_acc: 0.5 + e / 100,
      data_wait_s: 20 * o.wait,
      compute_s: 20 * (1 - o.wait),
    };
    if (o.workers !== undefined) metrics.num_workers = o.workers;
    if (o.waitCpu !== undefined) metrics.data_wait_host_cpu = o.waitCpu / 100;
    reports.push({ ts: start + s * 1000, metrics });
  }
  const tel: Telemetry[] = [];
  for (let s = 0; s < seconds; s++) {
    const gpus = o.gpus.map((g, i) =>
      sample(
        i,
        Math.round(Math.min(100, Math.max(0, g.util + noise() * 3))),
        Math.round(FAKE_MEMORY_MIB * Math.min(1, g.mem + noise() * 0.005)),
        o.trial,
      ),
    );
    tel.push({ v: 1, type: "gpu", agent: "synth", ts: start + s * 1000, fake: false, gpus });
    if (s % 5 === 4)
      tel.push({
        v: 1,
        type: "host",
        agent: "synth",
        ts: start + s * 1000,
        cpuLoadPercent: Math.min(100, (o.hostCpu ?? 35) + noise() * 2),
        cpuCores: o.cores ?? 16,
        memoryUsedBytes: 0,
        memoryTotalBytes: 1,
        ...(o.own === undefined
          ? {}
          : {
              trials: [
                { study: STUDY, trial: o.trial, attempt: 1, cpuCores: Math.max(0, o.own + noise() * 0.05), processes: 13 },
              ],
            }),
      });
  }
  const events = lifecycle(
    o.trial,
    "synth",
    o.gpus.map((_, i) => i),
    start,
    end,
    reports,
  );
  return join_(events, tel, end);
}

/** An agent with 4 GPUs over 20 minutes: short trials on two GPUs with minute-long gaps, two GPUs never used. */
function synthIdle(): DiagnosisInput {
  const events: TrialEvent[] = [];
  const tel: Telemetry[] = [];
  const seconds = 1200;
  const windows: { trial: string; gpu: number; from: number; to: number }[] = [];
  let n = 0;
  for (const gpu of [0, 1]) {
    for (let from = gpu * 30; from + 240 <= seconds; from += 300) windows.push({ trial: `i${++n}`, gpu, from, to: from + 240 });
  }
  for (const w of windows) {
    const reports = [1, 2, 3].map((e) => ({
      ts: T0 + (w.from + e * 80) * 1000,
      metrics: { epoch: e, val_acc: 0.8, data_wait_s: 2, compute_s: 78 },
    }));
    events.push(...lifecycle(w.trial, "idle-box", [w.gpu], T0 + w.from * 1000, T0 + w.to * 1000, reports));
  }
  const noise = rng(3);
  for (let s = 0; s < seconds; s++) {
    const gpus = [0, 1, 2, 3].map((g) => {
      const w = windows.find((x) => x.gpu === g && s >= x.from && s < x.to);
      return w ? sample(g, Math.round(90 + noise() * 3), 14_000, w.trial) : sample(g, 0, 0, null);
    });
    tel.push({ v: 1, type: "gpu", agent: "idle-box", ts: T0 + s * 1000, fake: false, gpus });
  }
  return join_(events, tel, T0 + seconds * 1000);
}

export function syntheticCases(): LabelledCase[] {
  return [
    {
      name: "under-filled: small batch, GPU 22%, no data wait",
      source: "synthetic",
      expected: ["gpu-under-filled"],
      input: synthTrial({ trial: "uf", gpus: [{ util: 22, mem: 0.18 }], wait: 0.02, workers: 4 }),
      note: "GPU 22%, wait 2%, memory 18%",
    },
    {
      name: "imbalance: 4 GPUs at 90/88/86/52",
      source: "synthetic",
      expected: ["multi-gpu-imbalance"],
      input: synthTrial({
        trial: "imb",
        gpus: [
          { util: 90, mem: 0.6 },
          { util: 88, mem: 0.6 },
          { util: 86, mem: 0.6 },
          { util: 52, mem: 0.6 },
        ],
        wait: 0.05,
      }),
      note: "gpu3 38 points behind",
    },
    {
      name: "near-OOM: memory at 98%",
      source: "synthetic",
      expected: ["near-oom"],
      input: synthTrial({ trial: "oom", gpus: [{ util: 93, mem: 0.98 }], wait: 0.03 }),
      note: "GPU 93%, memory 98%",
    },
    {
      name: "host CPU saturated: 12 workers on 8 cores",
      source: "synthetic",
      expected: ["host-cpu-saturated", "input-bound"],
      input: synthTrial({
        trial: "cpu",
        gpus: [{ util: 34, mem: 0.4 }],
        wait: 0.45,
        workers: 12,
        hostCpu: 97,
        cores: 8,
        own: 7.7,
        waitCpu: 98,
      }),
      note: "trial 7.7 of 8 cores, host 97% (98% while waiting), GPU 34%, wait 45%",
    },
    {
      name: "busy neighbours: host 97%, the trial's own CPU half a core",
      source: "synthetic",
      expected: ["input-bound"],
      input: synthTrial({
        trial: "nbr",
        gpus: [{ util: 34, mem: 0.4 }],
        wait: 0.45,
        workers: 4,
        hostCpu: 97,
        cores: 8,
        own: 0.5,
        waitCpu: 96,
      }),
      note: "other processes load the host; not host-cpu-saturated",
    },
    {
      name: "idle rented GPUs: 2 of 4 never used, gaps between trials",
      source: "synthetic",
      expected: ["idle-gpus"],
      input: synthIdle(),
      note: "4 GPUs, trials on 2, 60 s gaps",
    },
    {
      name: "healthy: 2 GPUs at 91/89",
      source: "synthetic",
      expected: [],
      input: synthTrial({
        trial: "ok2",
        gpus: [
          { util: 91, mem: 0.55 },
          { util: 89, mem: 0.55 },
        ],
        wait: 0.04,
      }),
      note: "GPU 90%, wait 4%",
    },
    {
      name: "healthy-ish: GPU 58%, data wait 25%",
      source: "synthetic",
      expected: [],
      input: synthTrial({ trial: "mid", gpus: [{ util: 58, mem: 0.55 }], wait: 0.25, workers: 4 }),
      note: "near the thresholds, on the right side",
    },
  ];
}
