import { execFile, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  COMPUTE_APPS_FIELDS,
  INVENTORY_FIELDS,
  parseComputeApps,
  parseInventory,
  parseTelemetryLine,
  TELEMETRY_FIELDS,
} from "@rung/agent/internal";
import { loadSpec, readStudyEvents, type StudyStatusJson, specToInput } from "@rung/coordinator";
import { connectNats, MeshNames, type TrialEvent } from "@rung/protocol";
import { descendants, FakeNvidiaSmi, fakeGpu } from "@rung/testkit";
import {
  type BenchContext,
  type BenchOutcome,
  dist,
  fmt,
  PYTHON,
  REPO,
  round,
  rung,
  sleep,
  startAgents,
  startBenchNats,
  stopAll,
  table,
  tempDir,
} from "./common.js";

/**
 * 11. The digits study on this machine's GPU: one trial per GPU, packed, `packing: auto`, packed and warm.
 *
 * The shipped study (configs/digits.yaml: TPE, promotion ASHA rf 4, 20 trials; the command's Python is
 * `BENCH_PYTHON`) runs four ways on one agent that owns this machine's first GPU: `resources.gpus: 1`
 * (one trial at a time, as every tuner without packing), `gpus: 0.12` (eight at a time, fixed by hand),
 * `packing: auto` (the coordinator measures the first trials alone and raises the trials per GPU), and
 * `gpus: 0.12` on an agent with warm starts. Each from a fresh nats-server and agent. From the study's
 * events: the makespan (first `queued` to last `ended`), attempts, each attempt's start-up (`started` to its
 * first report) and the share of slot time spent before a first report; from nvidia-smi, sampled every
 * 0.5 s while the study runs: the GPU's mean utilization, the most trial processes on it at once and its
 * peak memory. It starts with what the machine's nvidia-smi prints for each query the agent makes, and
 * what the agent's parsers read of it. Without a GPU (no `nvidia-smi`, or `BENCH_NVIDIA_SMI` failing) it
 * runs on one fake GPU and says so: the ratio then measures only overlapping start-up on this machine's
 * cores, not a GPU. `BENCH_REAL_GPU_MODES=packed,whole` runs only those.
 */

interface Mode {
  key: string;
  label: string;
  spec: Record<string, unknown>;
  warm?: boolean;
  quick?: boolean;
}

const MODES: readonly Mode[] = [
  {
    key: "packed",
    label: "packed: `gpus: 0.12` (8 per GPU)",
    spec: { resources: { gpus: 0.12, gpu_memory: "4GiB" }, max_concurrent: 8 },
    quick: true,
  },
  {
    key: "whole",
    label: "one trial per GPU (`gpus: 1`)",
    spec: { resources: { gpus: 1 }, max_concurrent: 8 },
    quick: true,
  },
  { key: "auto", label: "`packing: auto`", spec: { resources: { gpus: 1 }, packing: "auto", max_concurrent: 8 } },
  {
    key: "packed-warm",
    label: "packed, warm starts (`--warm-python`)",
    spec: { resources: { gpus: 0.12, gpu_memory: "4GiB" }, max_concurrent: 8 },
    warm: true,
  },
];

interface Probe {
  command: string;
  stdout: string;
  exitCode: number | null;
  parsed: string;
}

interface Row {
  key: string;
  label: string;
  exitCode: number | null;
  makespanS: number;
  attempts: number;
  trials: number;
  best: number | null;
  gpuSeconds: number;
  startupP50Ms: number;
  startupP90Ms: number;
  beforeFirstReportShare: number;
  meanUtilization: number | null;
  mostProcesses: number;
  peakMemoryMiB: number | null;
  packing?: string;
  /** Attempts handed to a warm interpreter (their log's warm start line), on the warm agent. */
  warmAttempts?: number;
  /** The agent's warnings, errors and warm-start lines (the last 30), for reading a run done elsewhere. */
  agentLog: string[];
}

/** Attempt logs under an agent's state directory (`logs/<scope>/<trial>/<attempt>.log`) that say they started warm. */
function warmStarted(stateDir: string): number {
  const root = join(stateDir, "logs");
  if (!existsSync(root)) return 0;
  let n = 0;
  for (const scope of readdirSync(root))
    for (const trial of readdirSync(join(root, scope)))
      for (const f of readdirSync(join(root, scope, trial)))
        if (f.endsWith(".log") && readFileSync(join(root, scope, trial, f), "utf8").includes("[rung] warm start: interpreter"))
          n += 1;
  return n;
}

function run(cmd: string, args: readonly string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 15_000, maxBuffer: 4 << 20 }, (err, stdout) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : null) : 0;
      resolve({ code, out: String(stdout) });
    });
  });
}

function realGpuPath(): string | null {
  const path = process.env.BENCH_NVIDIA_SMI ?? "nvidia-smi";
  const r = spawnSync(path, ["-L"], { encoding: "utf8", timeout: 15_000 });
  return r.status === 0 && /^GPU \d+:/m.test(r.stdout ?? "") ? path : null;
}

/** What nvidia-smi prints for each query the agent makes, and what the agent's parsers read of it. */
async function probeNvidiaSmi(path: string, env: Record<string, string>): Promise<Probe[]> {
  const fmtArg = "--format=csv,noheader,nounits";
  const queries: { args: string[]; parse(out: string): string }[] = [
    { args: ["-L"], parse: (o) => `${o.split("\n").filter((l) => /^\s*(GPU|MIG) /.test(l)).length} device lines` },
    {
      args: [`--query-gpu=${INVENTORY_FIELDS.join(",")}`, fmtArg],
      parse: (o) => JSON.stringify(parseInventory(o)),
    },
    {
      args: [`--query-gpu=${TELEMETRY_FIELDS.join(",")}`, fmtArg],
      parse: (o) =>
        JSON.stringify(
          o
            .split("\n")
            .filter((l) => l.trim())
            .map((l) => parseTelemetryLine(l) ?? "UNPARSED"),
        ),
    },
    { args: ["--query-gpu=index,mig.mode.current", fmtArg], parse: (o) => o.trim() },
    {
      args: [`--query-compute-apps=${COMPUTE_APPS_FIELDS.join(",")}`, fmtArg],
      parse: (o) => JSON.stringify(parseComputeApps(o)),
    },
  ];
  const out: Probe[] = [];
  for (const q of queries) {
    const r = await run(path, q.args, env);
    out.push({ command: `nvidia-smi ${q.args.join(" ")}`, stdout: r.out, exitCode: r.code, parsed: q.parse(r.out) });
  }
  return out;
}

/** nvidia-smi every 0.5 s while a study runs: utilization, memory used, trial processes on the GPU. */
class GpuSampler {
  readonly utilization: number[] = [];
  readonly memory: number[] = [];
  mostProcesses = 0;
  lastApps = "";
  #stop = false;
  #done: Promise<void>;
  constructor(path: string, env: Record<string, string>, pidsOf: () => Set<number> | null) {
    this.#done = (async () => {
      while (!this.#stop) {
        const [g, a] = await Promise.all([
          run(path, ["--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"], env),
          run(path, [`--query-compute-apps=${COMPUTE_APPS_FIELDS.join(",")}`, "--format=csv,noheader,nounits"], env),
        ]);
        const first = g.out
          .split("\n")[0]
          ?.split(",")
          .map((s) => Number(s.trim()));
        if (first && Number.isFinite(first[1])) this.utilization.push(first[1] as number);
        if (first && Number.isFinite(first[2])) this.memory.push(first[2] as number);
        const apps = parseComputeApps(a.out);
        const ours = pidsOf();
        const n = ours ? apps.filter((p) => ours.has(p.pid)).length : apps.length;
        if (n > this.mostProcesses) {
          this.mostProcesses = n;
          this.lastApps = a.out.trim();
        }
        await sleep(500);
      }
    })();
  }
  async stop(): Promise<void> {
    this.#stop = true;
    await this.#done;
  }
}

function attemptFigures(events: TrialEvent[]): {
  makespanS: number;
  attempts: number;
  trials: number;
  startup: number[];
  beforeShare: number;
} {
  const queued = events.filter((e) => e.type === "queued").map((e) => e.ts);
  const ended = events.filter((e) => e.type === "ended").map((e) => e.ts);
  const byAttempt = new Map<string, { started?: number; report?: number; finished?: number }>();
  for (const e of events) {
    if (e.type !== "started" && e.type !== "report" && e.type !== "finished") continue;
    const k = `${e.trial}/${e.attempt}`;
    const a = byAttempt.get(k) ?? {};
    if (e.type === "started") a.started ??= e.ts;
    if (e.type === "report") a.report ??= e.ts;
    if (e.type === "finished") a.finished ??= e.ts;
    byAttempt.set(k, a);
  }
  const startup: number[] = [];
  let before = 0;
  let slot = 0;
  for (const a of byAttempt.values()) {
    if (a.started === undefined || a.finished === undefined) continue;
    slot += a.finished - a.started;
    const first = a.report ?? a.finished;
    before += first - a.started;
    if (a.report !== undefined) startup.push(a.report - a.started);
  }
  return {
    makespanS: queued.length && ended.length ? (Math.max(...ended) - Math.min(...queued)) / 1000 : Number.NaN,
    attempts: [...byAttempt.values()].filter((a) => a.started !== undefined).length,
    trials: new Set(events.map((e) => e.trial)).size,
    startup,
    beforeShare: slot > 0 ? before / slot : Number.NaN,
  };
}

export async function realGpu(ctx: BenchContext): Promise<BenchOutcome> {
  const dir = tempDir("real-gpu");
  const realPath = realGpuPath();
  const fake = realPath ? undefined : new FakeNvidiaSmi(join(dir, "smi"), [fakeGpu(0)]);
  const smiPath = realPath ?? (fake as FakeNvidiaSmi).path;
  const smiEnv = fake?.stateEnv ?? {};
  const gpuName = realPath
    ? (spawnSync(realPath, ["--query-gpu=name,memory.total", "--format=csv,noheader"], { encoding: "utf8" }).stdout ?? "")
        .split("\n")[0]
        ?.trim()
    : "no GPU here: one fake GPU (packages/testkit/bin/fake-nvidia-smi.mjs)";
  ctx.log(`  GPU: ${gpuName}; python ${PYTHON}`);
  const probe = await probeNvidiaSmi(smiPath, smiEnv);
  for (const p of probe) ctx.log(`  ${p.command} → exit ${p.exitCode}; agent reads ${p.parsed.slice(0, 300)}`);

  const base = specToInput(await loadSpec(join(REPO, "configs", "digits.yaml"))) as Record<string, unknown>;
  const command = Array.isArray(base.command)
    ? base.command.map((a) => (a === "/usr/bin/python3" ? PYTHON : a))
    : String(base.command).replace("/usr/bin/python3", PYTHON);
  const rows: Row[] = [];
  let computeAppsWhilePacked = "";
  const only = process.env.BENCH_REAL_GPU_MODES?.split(",");
  for (const mode of MODES.filter((m) => (only ? only.includes(m.key) : !ctx.quick || m.quick))) {
    const nats = await startBenchNats();
    const prefix = `rg${Math.random().toString(36).slice(2, 8)}`;
    const name = `digits-${mode.key}`;
    const extra = [
      ...(fake ? ["--nvidia-smi", fake.path] : ["--gpus", "0"]),
      ...(mode.warm
        ? ["--warm-python", PYTHON, "--warm-preload", "torch,sklearn", "--warm-spares", "8", "--state-dir", join(dir, name)]
        : []),
    ];
    // At info: the warm pool says there why a trial started cold (kept in the results below).
    const agents = startAgents(nats.url, prefix, [{ name: "gpu-box", extra, env: { RUNG_LOG_LEVEL: "info" } }]);
    const agentPid = agents[0]?.pid ?? 0;
    try {
      const spec = join(dir, `${name}.json`);
      writeFileSync(
        spec,
        JSON.stringify({
          ...base,
          name,
          command,
          env: { ...(base.env as Record<string, string>), ...smiEnv },
          ...mode.spec,
        }),
      );
      ctx.log(`  ${mode.key}: rung study run ${spec}`);
      const sampler = new GpuSampler(smiPath, smiEnv, () => (realPath ? new Set(descendants(agentPid).map((q) => q.pid)) : null));
      const p = rung(["study", "run", spec, "--nats", nats.url, "--prefix", prefix]);
      const code = await p.exited;
      await sampler.stop();
      if (code !== 0) ctx.log(`  ${mode.key} exited ${code}: ${p.out().trim().split("\n").slice(-3).join(" / ")}`);
      if (mode.key === "packed") computeAppsWhilePacked = sampler.lastApps;
      const nc = await connectNats({ url: nats.url });
      let events: TrialEvent[] = [];
      try {
        events = (await readStudyEvents(nc, new MeshNames(prefix), name)).map((e) => e.event);
      } catch (err) {
        ctx.log(`  no events for ${name}: ${(err as Error).message}`);
      } finally {
        await nc.close();
      }
      const st = rung(["study", "status", name, "--json", "--nats", nats.url, "--prefix", prefix]);
      await st.exited;
      let status: StudyStatusJson | undefined;
      try {
        status = JSON.parse(st.out()) as StudyStatusJson;
      } catch {
        ctx.log(`  status of ${name} unreadable: ${st.out().slice(0, 200)}`);
      }
      let packing: string | undefined;
      if (mode.spec.packing) {
        const rep = rung(["study", "report", name, "--nats", nats.url, "--prefix", prefix]);
        await rep.exited;
        packing = rep
          .out()
          .split("\n")
          .find((l) => /packing/i.test(l))
          ?.trim();
      }
      const f = attemptFigures(events);
      const s = dist(f.startup);
      const row: Row = {
        key: mode.key,
        label: mode.label,
        exitCode: code,
        makespanS: round(f.makespanS, 1),
        attempts: f.attempts,
        trials: f.trials,
        best: status?.best?.value ?? null,
        gpuSeconds: round(status?.trials.reduce((a, t) => a + (t.gpuSeconds ?? 0), 0) ?? Number.NaN, 1),
        startupP50Ms: round(s.p50, 0),
        startupP90Ms: round(s.p90, 0),
        beforeFirstReportShare: round(f.beforeShare, 3),
        meanUtilization: sampler.utilization.length
          ? round(sampler.utilization.reduce((a, b) => a + b, 0) / sampler.utilization.length, 1)
          : null,
        mostProcesses: sampler.mostProcesses,
        peakMemoryMiB: sampler.memory.length ? Math.max(...sampler.memory) : null,
        ...(packing ? { packing } : {}),
        ...(mode.warm ? { warmAttempts: warmStarted(join(dir, name)) } : {}),
        agentLog: (agents[0]?.out() ?? "")
          .split("\n")
          .filter((l) => /warm|"level":[456]0/.test(l))
          .slice(-30),
      };
      rows.push(row);
      ctx.log(
        `    makespan ${fmt(row.makespanS, 1)} s, ${row.attempts} attempts, best ${fmt(row.best, 4)}, start-up p50 ${row.startupP50Ms} ms, ` +
          `${fmt(100 * row.beforeFirstReportShare, 0)} % of slot time before a first report, GPU ${fmt(row.meanUtilization, 0)} % busy, ` +
          `${row.mostProcesses} processes at once, peak ${row.peakMemoryMiB} MiB${packing ? `; ${packing}` : ""}` +
          (row.warmAttempts !== undefined ? `; ${row.warmAttempts} of ${row.attempts} attempts started warm` : ""),
      );
      if (process.env.BENCH_OUT)
        writeFileSync(join(process.env.BENCH_OUT, "real-gpu.partial.json"), JSON.stringify({ probe, rows }, null, 2));
    } finally {
      await stopAll(agents);
      await nats.destroy();
    }
  }
  const failed = rows.filter((r) => r.exitCode !== 0);
  if (failed.length) throw new Error(`the study exited non-zero in ${failed.map((r) => `${r.key} (${r.exitCode})`).join(", ")}`);
  const whole = rows.find((r) => r.key === "whole");
  const markdown = [
    `### 11. The digits study on ${realPath ? `a real GPU (${gpuName})` : "one fake GPU — no GPU on this machine, so only start-up overlaps"} (configs/digits.yaml, ${rows[0]?.trials ?? 0} trials; one agent)`,
    "",
    table(
      [
        "placement",
        "makespan",
        "vs one per GPU",
        "attempts",
        "best val_acc",
        "start-up p50 / p90",
        "slot time before a first report",
        "GPU utilization (mean)",
        "trial processes at once",
        "peak GPU memory",
      ],
      rows.map((r) => [
        r.label,
        `${fmt(r.makespanS, 1)} s`,
        whole ? `${fmt(whole.makespanS / r.makespanS, 1)}× faster` : "–",
        String(r.attempts),
        r.best === null ? "–" : r.best.toFixed(4),
        `${r.startupP50Ms} / ${r.startupP90Ms} ms`,
        `${fmt(100 * r.beforeFirstReportShare, 0)} %`,
        r.meanUtilization === null ? "–" : `${fmt(r.meanUtilization, 0)} %`,
        String(r.mostProcesses),
        r.peakMemoryMiB === null ? "–" : `${fmt(r.peakMemoryMiB / 1024, 1)} GiB`,
      ]),
    ),
    ...rows.filter((r) => r.packing).map((r) => `\n${r.label}: ${r.packing}`),
    ...rows
      .filter((r) => r.warmAttempts !== undefined)
      .map((r) => `\n${r.label}: ${r.warmAttempts} of ${r.attempts} attempts started warm.`),
  ].join("\n");
  return { markdown, data: { gpu: gpuName, real: realPath !== null, probe, computeAppsWhilePacked, rows } };
}
