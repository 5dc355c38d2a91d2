import { readFileSync } from "node:fs";
import { compileSpec, StudyCoordinator } from "@rung/coordinator";
import { connectNats, createLogger, type EventSource, MeshNames, type TrialEvent } from "@rung/protocol";
import type { TestNats } from "@rung/testkit";
import {
  type BenchContext,
  type BenchOutcome,
  dist,
  fmt,
  ProcSampler,
  PYTHON,
  round,
  startAgents,
  startBenchNats,
  stopAll,
  table,
  waitForAgents,
} from "./common.js";

/**
 * 2. Result throughput, after Ray's single-node result-throughput test (96 trials × 50 results/s for
 * 100 s). T trials (bench/fixtures/report-trial.py, a small Python process each) report r results a
 * second through the real report socket to real agents (8 fake GPUs each), which publish every result to
 * JetStream; the coordinator (StudyCoordinator, in this process) folds each one and asks ASHA for a
 * decision. Each result carries the time it was written (sent_ms); the coordinator's progress hook,
 * called right after each event is decided, gives the report → decision lag. A ladder of offered loads
 * shows where it saturates: handled < 97 % of offered, or the lag's p99 above one second.
 */

interface Level {
  trials: number;
  rate: number;
}

interface LevelResult extends Level {
  seconds: number;
  offeredPerS: number;
  handledPerS: number;
  handledShare: number;
  /** Every result decided over the whole run: first result written → last decision. */
  sustainedPerS: number;
  /** CPU per decided result, microseconds, per component. */
  cpuPerResultUs: Record<string, number>;
  lagMs: ReturnType<typeof dist>;
  trialToAgentMs: ReturnType<typeof dist>;
  agentToDecisionMs: ReturnType<typeof dist>;
  reportsSent: number;
  reportsDecided: number;
  cpuCores: Record<string, number>;
  /** CPU-seconds over the whole run, per component. */
  cpuSeconds: Record<string, number>;
  machineBusy: number;
  coordinatorRssMiB: number;
  saturated: boolean;
}

function machineCpu(): { busy: number; total: number } {
  const f = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total };
}

let seq = 0;

async function runLevel(nats: TestNats, level: Level, seconds: number, ctx: BenchContext): Promise<LevelResult> {
  seq += 1;
  const prefix = `rt${process.pid.toString(36)}x${seq}`;
  const names = new MeshNames(prefix);
  const nAgents = Math.ceil(level.trials / 8);
  const agents = startAgents(
    nats.url,
    prefix,
    Array.from({ length: nAgents }, (_, i) => ({ name: `a${i + 1}`, fakeGpus: Math.min(8, level.trials - 8 * i) })),
  );
  const nc = await connectNats({ url: nats.url, name: "bench-coordinator" });
  try {
    await waitForAgents(
      nc,
      names,
      agents.map((_, i) => `a${i + 1}`),
      90_000,
    );
    const n = Math.round(level.rate * seconds);
    const spec = compileSpec({
      name: `rt${seq}`,
      command: [
        PYTHON,
        "bench/fixtures/report-trial.py",
        "--rate",
        String(level.rate),
        "--seconds",
        String(seconds),
        "--i",
        "{i}",
      ],
      workdir: ".",
      metric: { name: "val_acc", mode: "max" },
      search: {
        algorithm: "grid",
        samples: 1,
        seed: 1,
        space: { i: { grid: Array.from({ length: level.trials }, (_, i) => i + 1) } },
      },
      scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: n },
      resources: { gpus: 1 },
      retries: 0,
    });
    // Every report the coordinator folds, and when its decision was made: the progress hook runs once
    // the events of a message are decided (a batch of reports is several), before the next message.
    const decided: { sent: number; agentTs: number; at: number }[] = [];
    let folded: TrialEvent[] = [];
    const coordinator = new StudyCoordinator({
      nc,
      spec,
      prefix,
      log: createLogger({ level: "warn" }),
      onProgress: () => {
        const at = Date.now();
        for (const ev of folded)
          if (ev.type === "report") decided.push({ sent: ev.metrics.sent_ms ?? Number.NaN, agentTs: ev.ts, at });
        folded = [];
      },
    });
    const apply = coordinator.state.apply.bind(coordinator.state);
    coordinator.state.apply = (ev: TrialEvent, from: EventSource) => {
      const ok = apply(ev, from);
      // Only reports: a STOP folds its own decision event before the progress hook runs.
      if (ok && ev.type === "report") folded.push(ev);
      return ok;
    };
    const sampler = new ProcSampler({
      nats: nats.pid as number,
      coordinator: process.pid,
      ...Object.fromEntries(agents.map((a, i) => [`agent${i}`, a.pid])),
    });
    const cpu0 = machineCpu();
    const run0 = performance.now();
    sampler.start();
    const result = await coordinator.run();
    const cpu = sampler.stop();
    const runSeconds = (performance.now() - run0) / 1000;
    const cpu1 = machineCpu();
    if (result.status !== "completed") throw new Error(`study ended ${result.status}`);

    // Steady state: once every trial reports, until the first one stops.
    const bySent = [...decided].sort((a, b) => a.sent - b.sent);
    const trialsFirst: number[] = [];
    const trialsLast: number[] = [];
    for (const t of result.state.trials.values()) {
      const a = t.attempts[0];
      if (a?.startedAt != null) trialsFirst.push(a.startedAt);
      if (a?.endedAt != null) trialsLast.push(a.endedAt);
    }
    const from = Math.max(...trialsFirst) + 1000;
    const to = Math.min(...trialsLast) - 500;
    const window = Math.max(0.001, (to - from) / 1000);
    const sentIn = bySent.filter((d) => d.sent >= from && d.sent < to);
    const handledIn = decided.filter((d) => d.at >= from && d.at < to).length;
    const offeredPerS = sentIn.length / window;
    const handledPerS = handledIn / window;
    const lagMs = dist(sentIn.map((d) => d.at - d.sent));
    const totalSent = level.trials * n;
    let firstSent = Number.POSITIVE_INFINITY;
    let lastDecision = 0;
    for (const d of decided) {
      if (d.sent < firstSent) firstSent = d.sent;
      if (d.at > lastDecision) lastDecision = d.at;
    }
    const cpuCores: Record<string, number> = {
      coordinator: cpu.coordinator?.cpuCores ?? 0,
      natsServer: cpu.nats?.cpuCores ?? 0,
      agents: round(
        Object.entries(cpu)
          .filter(([k]) => k.startsWith("agent"))
          .reduce((s, [, v]) => s + v.cpuCores, 0),
        3,
      ),
    };
    const r: LevelResult = {
      ...level,
      seconds,
      offeredPerS: round(offeredPerS, 0),
      handledPerS: round(handledPerS, 0),
      handledShare: round(handledPerS / Math.max(1, level.trials * level.rate), 3),
      sustainedPerS: round(decided.length / Math.max(0.001, (lastDecision - firstSent) / 1000), 0),
      cpuPerResultUs: Object.fromEntries(
        Object.entries(cpuCores).map(([k, v]) => [k, round((1e6 * v * runSeconds) / Math.max(1, decided.length), 1)]),
      ),
      lagMs,
      trialToAgentMs: dist(sentIn.map((d) => d.agentTs - d.sent)),
      agentToDecisionMs: dist(sentIn.map((d) => d.at - d.agentTs)),
      reportsSent: totalSent,
      reportsDecided: decided.length,
      cpuCores,
      cpuSeconds: Object.fromEntries(Object.entries(cpuCores).map(([k, v]) => [k, round(v * runSeconds, 3)])),
      machineBusy: round((cpu1.busy - cpu0.busy) / Math.max(1, cpu1.total - cpu0.total), 3),
      coordinatorRssMiB: cpu.coordinator?.maxRssMiB ?? 0,
      saturated: handledPerS < 0.97 * level.trials * level.rate || lagMs.p99 > 1000 || decided.length < totalSent,
    };
    ctx.log(
      `  ${level.trials} trials × ${level.rate}/s: offered ${r.offeredPerS}/s, decided ${r.handledPerS}/s, lag p50 ${fmt(lagMs.p50, 0)} ms p99 ${fmt(lagMs.p99, 0)} ms, ${r.reportsDecided}/${totalSent} decided, machine ${Math.round(100 * r.machineBusy)} % busy`,
    );
    return r;
  } finally {
    await nc.close();
    await stopAll(agents);
  }
}

export async function resultThroughput(ctx: BenchContext): Promise<BenchOutcome> {
  const seconds = Number(process.env.BENCH_RESULT_SECONDS ?? (ctx.quick ? 10 : 30));
  // The first two levels differ only in rate (the same trials, agents and start-ups): what the second
  // costs more, per result more, is the marginal CPU of a result, free of each run's fixed costs.
  const levels: Level[] = ctx.quick
    ? [
        { trials: 8, rate: 5 },
        { trials: 8, rate: 50 },
        { trials: 48, rate: 50 },
      ]
    : [
        { trials: 8, rate: 5 },
        { trials: 8, rate: 50 },
        { trials: 24, rate: 50 },
        { trials: 48, rate: 50 },
        { trials: 96, rate: 50 },
        { trials: 96, rate: 100 },
      ];
  const nats = await startBenchNats();
  const results: LevelResult[] = [];
  try {
    for (const level of levels) results.push(await runLevel(nats, level, seconds, ctx));
  } finally {
    await nats.destroy();
  }
  const [low, high] = results;
  const marginal =
    low && high
      ? Object.fromEntries(
          Object.keys(high.cpuSeconds).map((k) => [
            k,
            round(
              (1e6 * ((high.cpuSeconds[k] ?? 0) - (low.cpuSeconds[k] ?? 0))) /
                Math.max(1, high.reportsDecided - low.reportsDecided),
              0,
            ),
          ]),
        )
      : {};
  if (low && high)
    ctx.log(
      `  marginal CPU per result (8 × 50 against 8 × 5): agent ${marginal.agents} µs, nats-server ${marginal.natsServer} µs, coordinator ${marginal.coordinator} µs`,
    );
  const sat = results.find((r) => r.saturated);
  const best = results.filter((r) => !r.saturated).at(-1);
  const markdown = [
    `### 2. Result throughput (each trial reports for ${seconds} s; ASHA decides every result; Ray's test: 96 trials × 50/s for 100 s)`,
    "",
    table(
      [
        "trials × results/s",
        "offered /s (steady state)",
        "decided /s (steady state)",
        "decided /s (whole run)",
        "report → decision p50 / p99 / max",
        "CPU cores: coordinator / agents / nats-server",
        "CPU µs per result: coordinator / agents / nats-server",
        "machine busy",
        "decided / sent",
      ],
      results.map((r) => [
        `${r.trials} × ${r.rate}`,
        String(r.offeredPerS),
        String(r.handledPerS),
        String(r.sustainedPerS),
        `${fmt(r.lagMs.p50, 0)} / ${fmt(r.lagMs.p99, 0)} / ${fmt(r.lagMs.max, 0)} ms`,
        `${fmt(r.cpuCores.coordinator, 2)} / ${fmt(r.cpuCores.agents, 2)} / ${fmt(r.cpuCores.natsServer, 2)}`,
        `${fmt(r.cpuPerResultUs.coordinator, 0)} / ${fmt(r.cpuPerResultUs.agents, 0)} / ${fmt(r.cpuPerResultUs.natsServer, 0)}`,
        `${Math.round(100 * r.machineBusy)} %`,
        `${r.reportsDecided} / ${r.reportsSent}`,
      ]),
    ),
    "",
    low && high
      ? `Marginal CPU per result (the same 8 trials at 50/s against 5/s: Δ CPU-seconds / Δ results, free of start-up and other fixed costs): agent ${marginal.agents} µs, nats-server ${marginal.natsServer} µs, coordinator ${marginal.coordinator} µs.`
      : "",
    "",
    sat
      ? `Saturates at ${sat.trials} × ${sat.rate} = ${sat.trials * sat.rate} results/s offered (${sat.sustainedPerS}/s decided over the run, p99 lag ${fmt(sat.lagMs.p99, 0)} ms)${best ? `; the largest load sustained is ${best.trials} × ${best.rate} = ${best.trials * best.rate}/s` : ""}.`
      : `Not saturated up to ${results.at(-1)?.trials} × ${results.at(-1)?.rate} = ${(results.at(-1)?.trials ?? 0) * (results.at(-1)?.rate ?? 0)} results/s.`,
  ].join("\n");
  return { markdown, data: { seconds, levels: results, marginalCpuPerResultUs: marginal } };
}
