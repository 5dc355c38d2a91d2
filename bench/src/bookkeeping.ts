import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import { compileSpec, readStudyEvents, runStudy } from "@rung/coordinator";
import { connectNats, createLogger, MeshNames, type TrialEvent } from "@rung/protocol";
import type { TestNats } from "@rung/testkit";
import {
  type BenchContext,
  type BenchOutcome,
  CURVE_TRIAL,
  dist,
  fmt,
  median,
  ProcSampler,
  PYTHON,
  REPO,
  round,
  sleep,
  spread,
  startAgents,
  startBenchNats,
  startProc,
  stopAll,
  table,
  tempDir,
  waitForAgents,
} from "./common.js";

/**
 * 1. Bookkeeping overhead, the shape of Ray Tune's `test_bookkeeping_overhead` (10,000 trials of 1 s on
 * 16 slots, limit 800 s against the ideal 625 s) scaled to this machine: N trials of d seconds on
 * S = agents × fake GPUs slots, through a real nats-server, real `rung agent` processes and the real
 * coordinator (`runStudy`, in this process) with ASHA on.
 *
 * The trial is test/fixtures/curve-trial.mjs: a Node process that reports R results through the real
 * RUNG_REPORT socket, one every d/R seconds. Every trial reports the same curve, so every ASHA rung
 * sees ties (a tie continues) and no trial is stopped early: every report is decided by ASHA, and
 * N·d/S stays the exact lower bound. Side by side in the same run:
 *   direct   the same argv started by a plain pool of S slots here (spawn, report socket, wait) — the
 *            process start-up every system pays, so the mesh is not charged for it;
 *   Optuna   S worker processes sharing one storage (SQLite; the journal file) with a
 *            SuccessiveHalvingPruner, running the same argv per trial (bench/optuna-bookkeeping.py).
 */

interface Shape {
  n: number;
  d: number;
  agents: number;
  gpus: number;
  reports: number;
}

const slots = (s: Shape) => s.agents * s.gpus;
const ideal = (s: Shape) => (s.n * s.d) / slots(s);

function trialArgv(s: Shape): string[] {
  return [
    process.execPath,
    CURVE_TRIAL,
    "--quality",
    "0.5",
    "--epochs",
    String(s.reports),
    "--epoch-ms",
    String(Math.round((s.d * 1000) / s.reports)),
  ];
}

export interface SystemRun {
  system: string;
  shape: Shape;
  makespanS: number;
  trials: number;
  /** Median per-trial process time (spawn → exit), seconds. */
  trialS: number;
  gapMs: ReturnType<typeof dist> | null;
  dispatchMs?: ReturnType<typeof dist>;
  earlyStops?: number;
  cpuSecondsPerTrial?: Record<string, number>;
  crashes?: { exit: number; error: string }[];
  states?: Record<string, number>;
}

/** The same argv, started by a plain pool of S slots in this process. */
async function runDirect(shape: Shape): Promise<SystemRun> {
  const dir = tempDir("direct");
  const sock = join(dir, "report.sock");
  const server = createServer((c) => c.resume());
  await new Promise<void>((r) => server.listen(sock, r));
  const argv = trialArgv(shape);
  const durations: number[] = [];
  const gaps: number[] = [];
  let next = 0;
  const t0 = performance.now();
  const slot = async () => {
    let lastExit: number | null = null;
    while (next < shape.n) {
      next += 1;
      const i = next;
      const spawned = performance.now();
      if (lastExit !== null) gaps.push(spawned - lastExit);
      await new Promise<void>((resolve, reject) => {
        const child = spawn(argv[0] as string, [...argv.slice(1), "--i", String(i)], {
          cwd: REPO,
          env: { ...process.env, RUNG_REPORT: sock },
          stdio: "ignore",
        });
        child.once("error", reject);
        child.once("exit", () => resolve());
      });
      lastExit = performance.now();
      durations.push((lastExit - spawned) / 1000);
    }
  };
  await Promise.all(Array.from({ length: slots(shape) }, slot));
  const makespanS = (performance.now() - t0) / 1000;
  server.close();
  return { system: "direct", shape, makespanS, trials: shape.n, trialS: median(durations), gapMs: dist(gaps) };
}

let studySeq = 0;
const IDLE_BEFORE_STUDY_MS = Number(process.env.BENCH_IDLE_MS ?? 3000);

async function runRung(nats: TestNats, shape: Shape): Promise<SystemRun> {
  studySeq += 1;
  const prefix = `bk${process.pid.toString(36)}x${studySeq}`;
  const names = new MeshNames(prefix);
  const agents = startAgents(
    nats.url,
    prefix,
    Array.from({ length: shape.agents }, (_, i) => ({ name: `a${i + 1}`, fakeGpus: shape.gpus })),
  );
  const nc = await connectNats({ url: nats.url, name: "bench-coordinator" });
  try {
    await waitForAgents(
      nc,
      names,
      agents.map((_, i) => `a${i + 1}`),
    );
    // As when a user starts the agents and then the study: the agents sit idle a few seconds first
    // (started at once, each would still be on its first pull, which is on `gpu1`, the pool this study uses).
    await sleep(IDLE_BEFORE_STUDY_MS);
    const argv = trialArgv(shape);
    const spec = compileSpec({
      name: `bk${studySeq}`,
      command: [...argv, "--i", "{i}"],
      workdir: ".",
      metric: { name: "val_acc", mode: "max" },
      search: {
        algorithm: "grid",
        samples: 1,
        seed: 1,
        space: { i: { grid: Array.from({ length: shape.n }, (_, i) => i + 1) } },
      },
      scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 2, max_t: shape.reports },
      resources: { gpus: 1 },
      retries: 0,
    });
    const sampler = new ProcSampler({
      nats: nats.pid as number,
      ...Object.fromEntries(agents.map((a, i) => [`agent${i}`, a.pid])),
      coordinator: process.pid,
    });
    sampler.start();
    const t0 = performance.now();
    const result = await runStudy({ nc, spec, prefix, log: createLogger({ level: "warn" }) });
    const makespanS = (performance.now() - t0) / 1000;
    const cpu = sampler.stop();
    if (result.status !== "completed") throw new Error(`study ended ${result.status}`);
    const events = (await readStudyEvents(nc, names, spec.name)).map((s) => s.event);
    const a = analyse(events);
    const agentCpu = Object.entries(cpu)
      .filter(([k]) => k.startsWith("agent"))
      .reduce((s, [, v]) => s + v.cpuSeconds, 0);
    return {
      system: "rung",
      shape,
      makespanS,
      trials: a.trials,
      trialS: a.trialS,
      gapMs: a.gapMs,
      dispatchMs: a.dispatchMs,
      earlyStops: a.earlyStops,
      cpuSecondsPerTrial: {
        coordinator: round((cpu.coordinator?.cpuSeconds ?? 0) / shape.n, 4),
        agents: round(agentCpu / shape.n, 4),
        natsServer: round((cpu.nats?.cpuSeconds ?? 0) / shape.n, 4),
      },
    };
  } finally {
    await nc.close();
    await stopAll(agents);
  }
}

/** Dispatch latency (queued → started), idle gap per slot (finished → next started), trial time. */
function analyse(events: TrialEvent[]) {
  const attempts = new Map<string, { queued?: number; started?: number; finished?: number; slot?: string }>();
  let earlyStops = 0;
  for (const e of events) {
    if (e.type === "decision" && e.decision === "STOP" && e.rung !== null) earlyStops += 1;
    if (!("attempt" in e) || e.attempt === null) continue;
    const key = `${e.trial}#${e.attempt}`;
    const a = attempts.get(key) ?? {};
    attempts.set(key, a);
    if (e.type === "queued") a.queued = e.ts;
    if (e.type === "started") {
      a.started = e.ts;
      a.slot = `${e.agent}:${e.gpus.join(",")}`;
    }
    if (e.type === "finished") a.finished = e.ts;
  }
  const dispatch: number[] = [];
  const runs: number[] = [];
  const bySlot = new Map<string, { started: number; finished: number }[]>();
  for (const a of attempts.values()) {
    if (a.queued !== undefined && a.started !== undefined) dispatch.push(a.started - a.queued);
    if (a.started !== undefined && a.finished !== undefined && a.slot) {
      runs.push((a.finished - a.started) / 1000);
      const list = bySlot.get(a.slot) ?? [];
      list.push({ started: a.started, finished: a.finished });
      bySlot.set(a.slot, list);
    }
  }
  const gaps: number[] = [];
  for (const list of bySlot.values()) {
    list.sort((x, y) => x.started - y.started);
    for (let i = 1; i < list.length; i++)
      gaps.push((list[i] as { started: number }).started - (list[i - 1] as { finished: number }).finished);
  }
  return { trials: runs.length, trialS: median(runs), dispatchMs: dist(dispatch), gapMs: dist(gaps), earlyStops };
}

async function runOptuna(shape: Shape, storage: "sqlite" | "journal"): Promise<SystemRun> {
  const dir = tempDir(`optuna-${storage}`);
  const p = startProc(PYTHON, [
    join(REPO, "bench", "optuna-bookkeeping.py"),
    "--storage",
    storage,
    "--dir",
    dir,
    "--workers",
    String(slots(shape)),
    "--trials",
    String(shape.n),
    "--cmd",
    JSON.stringify(trialArgv(shape)),
    "--cwd",
    REPO,
  ]);
  const code = await p.exited;
  const out = p.out();
  const start = out.indexOf('{"version"');
  if (code !== 0 || start < 0)
    throw new Error(
      `bench/optuna-bookkeeping.py (${storage}) exited with ${code}: ${out.trim().split("\n").slice(-3).join(" / ")}`,
    );
  const r = JSON.parse(out.slice(start)) as {
    makespan: number;
    states: Record<string, number>;
    workers: { spawned: number; exited: number; pruned: boolean }[][];
    crashes: { exit: number; error: string }[];
  };
  const durations: number[] = [];
  const gaps: number[] = [];
  for (const w of r.workers) {
    w.sort((a, b) => a.spawned - b.spawned);
    w.forEach((x, i) => {
      durations.push(x.exited - x.spawned);
      const prev = w[i - 1];
      if (prev) gaps.push((x.spawned - prev.exited) * 1000);
    });
  }
  const finished = (r.states.COMPLETE ?? 0) + (r.states.PRUNED ?? 0);
  return {
    system: `optuna-${storage}`,
    shape,
    makespanS: r.makespan,
    trials: finished,
    trialS: median(durations),
    gapMs: dist(gaps),
    earlyStops: r.states.PRUNED ?? 0,
    crashes: r.crashes,
    states: r.states,
  };
}

/** Overhead over the ideal N·d/S, counting the trials that actually finished. */
const overhead = (r: SystemRun) => r.makespanS / ((r.trials * r.shape.d) / slots(r.shape)) - 1;
/** Seconds of slot time the system adds per trial, over the direct pool's at the same shape. */
const costPerTrialMs = (r: SystemRun, direct: SystemRun) => ((r.makespanS - direct.makespanS) * slots(r.shape) * 1000) / r.trials;

export async function bookkeepingOverhead(ctx: BenchContext): Promise<BenchOutcome> {
  const d = Number(process.env.BENCH_TRIAL_S ?? 1);
  const reports = 4;
  const reps = Number(process.env.BENCH_REPS ?? (ctx.quick ? 1 : 3));
  const main: Shape = { n: ctx.quick ? 48 : 240, d, agents: 4, gpus: 2, reports };
  const nSizes = ctx.quick ? [16, 32] : [60, 120];
  const perSlot = ctx.quick ? 4 : 15;
  const sShapes: Shape[] = (
    ctx.quick
      ? [
          [2, 1],
          [2, 2],
          [4, 2],
        ]
      : [
          [2, 1],
          [2, 2],
          [4, 2],
          [8, 2],
        ]
  ).map(([agents, gpus]) => ({
    n: perSlot * (agents as number) * (gpus as number),
    d,
    agents: agents as number,
    gpus: gpus as number,
    reports,
  }));
  const nats = await startBenchNats();
  const runs: SystemRun[] = [];
  const say = (r: SystemRun) =>
    ctx.log(
      `  ${r.system.padEnd(15)} N=${r.shape.n} S=${slots(r.shape)}: ${r.makespanS.toFixed(1)} s (ideal ${ideal(r.shape).toFixed(1)} s, overhead ${(100 * overhead(r)).toFixed(0)} %)${r.crashes?.length ? `, ${r.crashes.length} worker crash(es)` : ""}`,
    );
  const run = async (system: string, shape: Shape) => {
    const r =
      system === "direct"
        ? await runDirect(shape)
        : system === "rung"
          ? await runRung(nats, shape)
          : await runOptuna(shape, system === "optuna-sqlite" ? "sqlite" : "journal");
    say(r);
    runs.push(r);
    return r;
  };
  const tag = (r: SystemRun) => `${r.system}:${r.shape.n}:${r.shape.agents}x${r.shape.gpus}`;
  const of = (system: string, shape: Shape) =>
    runs.filter((r) => r.system === system && tag(r) === `${system}:${shape.n}:${shape.agents}x${shape.gpus}`);
  try {
    ctx.log(
      `  main shape: N=${main.n} trials of ${d} s on S=${slots(main)} slots (${main.agents} agents × ${main.gpus} fake GPUs), ${reps} repetition(s)`,
    );
    for (let rep = 0; rep < reps; rep++) {
      // Interleaved, so drift in the machine's load hits every system alike.
      for (const system of ["direct", "rung", "optuna-sqlite", "optuna-journal"]) await run(system, main);
    }
    // The sweeps: one run each, shapes already measured are not run again.
    for (const s of [...nSizes.map((n) => ({ ...main, n })), ...sShapes]) {
      const systems = ["direct", "rung", ...(!ctx.quick && sShapes.includes(s) ? ["optuna-sqlite"] : [])];
      for (const system of systems) if (of(system, s).length === 0) await run(system, s);
    }
  } finally {
    await nats.destroy();
  }

  // Tables.
  const directMain = of("direct", main);
  const mainRows = ["direct", "rung", "optuna-sqlite", "optuna-journal"].map((system) => {
    const rs = of(system, main);
    const costs = rs.map((r, i) => costPerTrialMs(r, directMain[i] ?? (directMain[0] as SystemRun)));
    const gap = rs.map((r) => r.gapMs?.p50 ?? Number.NaN);
    const gap99 = rs.map((r) => r.gapMs?.p99 ?? Number.NaN);
    return [
      system === "rung"
        ? "Rung (nats-server, 4 agents, coordinator, ASHA)"
        : system === "direct"
          ? "direct (no scheduler)"
          : `Optuna ${system.slice(7)} storage, SHA pruner`,
      spread(
        rs.map((r) => r.makespanS),
        1,
        " s",
      ),
      spread(
        rs.map((r) => r.trialS),
        2,
        " s",
      ),
      spread(
        rs.map((r) => 100 * overhead(r)),
        0,
        " %",
      ),
      system === "direct" ? "–" : spread(costs, 0, " ms"),
      spread(gap, 0, " ms"),
      spread(gap99, 0, " ms"),
      system === "rung"
        ? `${spread(
            rs.map((r) => r.dispatchMs?.p50 ?? Number.NaN),
            0,
          )} / ${spread(
            rs.map((r) => r.dispatchMs?.p99 ?? Number.NaN),
            0,
          )} ms`
        : "–",
      `${rs.map((r) => r.trials).join(", ")}${rs.some((r) => r.crashes?.length) ? ` (crashes: ${rs.map((r) => r.crashes?.length ?? 0).join(", ")})` : ""}`,
    ];
  });
  const rungMain = of("rung", main);
  const cpuRow = (k: string) =>
    spread(
      rungMain.map((r) => 1000 * (r.cpuSecondsPerTrial?.[k] ?? Number.NaN)),
      1,
      " ms",
    );
  const scaleRows = (shapes: Shape[]) =>
    shapes.map((s) => {
      const rr = of("rung", s);
      const dd = of("direct", s);
      const r = rr[0] as SystemRun;
      const dr = dd[0] as SystemRun;
      return [
        String(s.n),
        String(slots(s)),
        `${fmt(ideal(s), 1)} s`,
        `${fmt(median(dd.map((x) => x.makespanS)), 1)} s`,
        `${fmt(median(rr.map((x) => x.makespanS)), 1)} s`,
        `${fmt(median(rr.map((x) => 100 * overhead(x))), 0)} %`,
        `${fmt(median(dd.map((x) => 100 * overhead(x))), 0)} %`,
        `${fmt(costPerTrialMs(r, dr), 0)} ms`,
        `${fmt(r.dispatchMs?.p50, 0)} / ${fmt(r.dispatchMs?.p99, 0)} ms`,
        `${fmt(r.gapMs?.p50, 0)} / ${fmt(r.gapMs?.p99, 0)} ms`,
        of("optuna-sqlite", s).length ? `${fmt(median(of("optuna-sqlite", s).map((x) => 100 * overhead(x))), 0)} %` : "–",
      ];
    });
  const byN = [...nSizes.map((n) => ({ ...main, n })), main];
  const byS = sShapes;
  const scaleHeader = [
    "N",
    "S",
    "ideal N·d/S",
    "direct",
    "Rung",
    "Rung overhead",
    "direct overhead",
    "Rung cost / trial",
    "dispatch p50 / p99",
    "slot idle gap p50 / p99",
    "Optuna SQLite overhead",
  ];
  const markdown = [
    `### 1. Bookkeeping overhead (trials of d = ${d} s reporting ${reports} results, ASHA rf 2 on; medians of ${reps} interleaved run(s), range in brackets)`,
    "",
    `Main shape: N = ${main.n} trials on S = ${slots(main)} slots (${main.agents} agents × ${main.gpus} fake GPUs); ideal N·d/S = ${ideal(main).toFixed(0)} s.`,
    "",
    table(
      [
        "system",
        "makespan",
        "trial process p50",
        "overhead over N·d/S",
        "own cost / trial (vs direct)",
        "slot idle gap p50",
        "slot idle gap p99",
        "dispatch p50 / p99",
        "trials finished",
      ],
      mainRows,
    ),
    "",
    `Rung's CPU per trial (main shape): coordinator ${cpuRow("coordinator")}, agents ${cpuRow("agents")}, nats-server ${cpuRow("natsServer")}.`,
    "",
    "Growth with N (S fixed):",
    "",
    table(scaleHeader, scaleRows(byN)),
    "",
    "Growth with S (N = k·S, so the ideal stays the same):",
    "",
    table(scaleHeader, scaleRows(byS)),
  ].join("\n");
  return {
    markdown,
    data: {
      trialSeconds: d,
      reportsPerTrial: reports,
      repetitions: reps,
      main: { shape: main, ideal: ideal(main) },
      runs: runs.map((r) => ({ ...r, overhead: round(overhead(r), 4), ideal: ideal(r.shape) })),
    },
  };
}
