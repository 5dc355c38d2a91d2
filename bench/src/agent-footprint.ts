import { spawn } from "node:child_process";
import { join } from "node:path";
import { compileSpec, DetachedError, runStudy } from "@rung/coordinator";
import { connectNats, createLogger, MeshNames } from "@rung/protocol";
import { FakeNvidiaSmi, type TestNats } from "@rung/testkit";
import {
  type BenchContext,
  type BenchOutcome,
  CURVE_TRIAL,
  childrenOf,
  cpuOf,
  fmt,
  ProcSampler,
  REPO,
  round,
  rssMiB,
  sleep,
  startAgents,
  startBenchNats,
  stopAll,
  table,
  tempDir,
  waitForAgents,
} from "./common.js";

/**
 * 4. Agent footprint: one `rung agent` process, CPU share (of one core) and RSS over a window:
 *   idle        8 fake GPUs, nothing to run;
 *   busy        8 fake GPUs, each running a trial (test/fixtures/curve-trial.mjs: one report and one
 *               line of output a second), 1 Hz telemetry — the coordinator in this process;
 *   smi-child   idle, 8 GPUs behind an nvidia-smi (testkit's fake, which prints exactly the real CSV)
 *               sampled the agent's way: one long-lived `nvidia-smi … -lms 1000` child;
 *   smi-spawn   the same agent and GPUs, but behind bench/fixtures/nvidia-smi-respawn.sh, which starts
 *               a new nvidia-smi for every sample — what sampling by repeated spawning costs.
 * The sampler's cost is the agent's child tree (the long-lived child, or the loop and every one-shot
 * process it starts), reported next to the agent's own.
 */

interface Footprint {
  mode: string;
  agentCpuCores: number;
  agentRssMiB: number;
  agentMaxRssMiB: number;
  samplerCpuCores: number | null;
  samplerRssMiB: number | null;
  telemetryMessagesPerS: number | null;
}

let seq = 0;

async function measure(
  nats: TestNats,
  mode: string,
  windowS: number,
  agentOptions: { fakeGpus?: number; extra?: string[]; env?: Record<string, string> },
  busyTrials: number,
  ctx: BenchContext,
): Promise<Footprint> {
  seq += 1;
  const prefix = `af${process.pid.toString(36)}x${seq}`;
  const names = new MeshNames(prefix);
  const [agent] = startAgents(nats.url, prefix, [
    { name: "box", ...agentOptions, extra: [...(agentOptions.extra ?? []), "--drain", "requeue"] },
  ]);
  if (!agent) throw new Error("no agent");
  const nc = await connectNats({ url: nats.url, name: "bench-footprint" });
  const detach = new AbortController();
  let study: Promise<unknown> = Promise.resolve();
  try {
    await waitForAgents(nc, names, ["box"]);
    if (busyTrials > 0) {
      const spec = compileSpec({
        name: `fp${seq}`,
        command: [
          process.execPath,
          CURVE_TRIAL,
          "--quality",
          "0.7",
          "--epochs",
          String(windowS + 60),
          "--epoch-ms",
          "1000",
          "--i",
          "{i}",
        ],
        workdir: ".",
        metric: { name: "val_acc", mode: "max" },
        search: {
          algorithm: "grid",
          samples: 1,
          seed: 1,
          space: { i: { grid: Array.from({ length: busyTrials }, (_, i) => i + 1) } },
        },
        scheduler: { type: "fifo", time_attr: "epoch" },
        resources: { gpus: 1 },
        retries: 0,
      });
      study = runStudy({ nc, spec, prefix, log: createLogger({ level: "error" }), signal: detach.signal }).catch(
        (err: unknown) => {
          if (!(err instanceof DetachedError)) throw err;
        },
      );
      await waitForAgents(nc, names, ["box"], 60_000, (ads) => ads.some((a) => a.freeGpus === 0));
    }
    // Telemetry published in the window: count on the agent's subject.
    let telemetry = 0;
    const sub = nc.subscribe(names.subjects.telemetry("box"), {
      callback: () => {
        telemetry++;
      },
    });
    await sleep(3000);
    const sampler = new ProcSampler({ agent: agent.pid });
    const smiPid = agentOptions.fakeGpus === undefined ? childrenOf(agent.pid)[0] : undefined;
    const smi0 = smiPid !== undefined ? cpuOf(smiPid) : null;
    const smiRss: number[] = [];
    const smiTimer = smiPid !== undefined ? setInterval(() => smiRss.push(rssMiB(smiPid)), 1000) : undefined;
    telemetry = 0;
    const t0 = performance.now();
    sampler.start();
    await sleep(windowS * 1000);
    const r = sampler.stop();
    const wall = (performance.now() - t0) / 1000;
    const smi1 = smiPid !== undefined ? cpuOf(smiPid) : null;
    if (smiTimer) clearInterval(smiTimer);
    sub.unsubscribe();
    const a = r.agent as { cpuCores: number; rssMiB: number; maxRssMiB: number };
    const f: Footprint = {
      mode,
      agentCpuCores: a.cpuCores,
      agentRssMiB: a.rssMiB,
      agentMaxRssMiB: a.maxRssMiB,
      // The sampler child's own CPU plus everything it started and reaped (one-shot queries, sleeps).
      samplerCpuCores: smi0 && smi1 ? round((smi1.self + smi1.children - smi0.self - smi0.children) / wall, 4) : null,
      samplerRssMiB: smiRss.length ? round(Math.max(...smiRss), 1) : null,
      telemetryMessagesPerS: round(telemetry / wall, 2),
    };
    ctx.log(
      `  ${mode.padEnd(9)}: agent ${fmt(100 * f.agentCpuCores, 2)} % of a core, RSS ${fmt(f.agentRssMiB, 0)} MiB (max ${fmt(f.agentMaxRssMiB, 0)})${f.samplerCpuCores !== null ? `; nvidia-smi sampling ${fmt(100 * f.samplerCpuCores, 2)} % of a core` : ""}`,
    );
    return f;
  } finally {
    detach.abort();
    await stopAll([agent]);
    await study;
    await nc.close();
  }
}

/** CPU seconds of one one-shot query of the fake nvidia-smi (what each sample costs when spawning). */
async function oneShotCost(smi: string): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const before = cpuOf(process.pid);
    await new Promise<void>((resolve) => {
      spawn(
        smi,
        [
          "--query-gpu=index,uuid,utilization.gpu,utilization.memory,memory.used,memory.total,power.draw,temperature.gpu,clocks.sm",
          "--format=csv,noheader,nounits",
        ],
        {
          stdio: "ignore",
        },
      ).once("exit", () => resolve());
    });
    const after = cpuOf(process.pid);
    if (before && after) runs.push(after.children - before.children);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(runs.length / 2)] ?? Number.NaN;
}

export async function agentFootprint(ctx: BenchContext): Promise<BenchOutcome> {
  const windowS = Number(process.env.BENCH_WINDOW_S ?? (ctx.quick ? 8 : 60));
  const dir = tempDir("smi");
  const smi = new FakeNvidiaSmi(dir, 8);
  const respawn = join(REPO, "bench", "fixtures", "nvidia-smi-respawn.sh");
  const nats = await startBenchNats();
  const out: Footprint[] = [];
  try {
    out.push(await measure(nats, "idle", windowS, { fakeGpus: 8 }, 0, ctx));
    out.push(await measure(nats, "busy", windowS, { fakeGpus: 8 }, 8, ctx));
    out.push(await measure(nats, "smi-child", windowS, { extra: ["--nvidia-smi", smi.path] }, 0, ctx));
    out.push(
      await measure(
        nats,
        "smi-spawn",
        windowS,
        { extra: ["--nvidia-smi", respawn], env: { RUNG_BENCH_REAL_NVIDIA_SMI: smi.path } },
        0,
        ctx,
      ),
    );
  } finally {
    await nats.destroy();
  }
  const perSpawn = await oneShotCost(smi.path);
  const by = (m: string) => out.find((f) => f.mode === m) as Footprint;
  const child = by("smi-child");
  const spawned = by("smi-spawn");
  const label: Record<string, string> = {
    idle: "idle, 8 fake GPUs",
    busy: "8 fake GPUs each running a trial (1 report + 1 log line/s), 1 Hz telemetry",
    "smi-child": "idle, 8 GPUs via nvidia-smi: one long-lived `-lms 1000` child (the agent's way)",
    "smi-spawn": "idle, 8 GPUs via nvidia-smi: a new process per sample",
  };
  const markdown = [
    `### 4. Agent footprint (one \`rung agent\`, ${windowS} s windows; CPU as % of one core)`,
    "",
    table(
      ["mode", "agent CPU", "agent RSS (median / max)", "nvidia-smi sampling CPU", "sampler RSS", "telemetry msgs/s"],
      out.map((f) => [
        label[f.mode] ?? f.mode,
        `${fmt(100 * f.agentCpuCores, 2)} %`,
        `${fmt(f.agentRssMiB, 0)} / ${fmt(f.agentMaxRssMiB, 0)} MiB`,
        f.samplerCpuCores === null ? "–" : `${fmt(100 * f.samplerCpuCores, 2)} %`,
        f.samplerRssMiB === null ? "–" : `${fmt(f.samplerRssMiB, 0)} MiB`,
        fmt(f.telemetryMessagesPerS, 2),
      ]),
    ),
    "",
    `Sampling by spawning costs ${(child.samplerCpuCores ?? 0) > 0 ? `${fmt((spawned.samplerCpuCores ?? Number.NaN) / (child.samplerCpuCores as number), 0)}×` : "far more than"} the CPU of the long-lived child here (${fmt(100 * (spawned.samplerCpuCores ?? Number.NaN), 2)} % vs ${fmt(100 * (child.samplerCpuCores ?? Number.NaN), 2)} % of a core). One one-shot query of the stand-in costs ${fmt(1000 * perSpawn, 0)} ms of CPU (a Node start-up: testkit's nvidia-smi is a Node script); the real tool's start-up (driver and NVML initialisation) is of the same order or more, so on a GPU box expect a similar ratio.`,
  ].join("\n");
  return { markdown, data: { windowS, modes: out, oneShotQueryCpuSeconds: round(perSpawn, 4) } };
}
