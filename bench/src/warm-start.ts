import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { decode, encode, SCHEMA_VERSION, type TrialEvent, TrialEventSchema, type WorkOrder } from "@rung/protocol";
import { openMesh, type TestMesh } from "@rung/testkit";
import {
  type BenchContext,
  type BenchOutcome,
  dist,
  fmt,
  type Proc,
  PYTHON,
  round,
  sleep,
  startAgents,
  startBenchNats,
  stopAll,
  table,
  tempDir,
  waitForAgents,
  waitUntil,
} from "./common.js";

/**
 * 9. Warm starts: time from order to first report, cold vs warm, on the digits example.
 *
 * Two `rung agent --fake-gpus 1` processes on one nats-server, each on a mesh of its own: one as shipped
 * (cold: every trial starts `python3 train.py`), one with `--warm-python /usr/bin/python3 --warm-preload
 * torch,sklearn` (warm: the trial is handed to an interpreter that has imported those). The same digits
 * orders (one epoch, the first rung of ASHA; parameters varied per pair) go to them in turn — cold, warm,
 * cold, warm … — one trial on the machine at a time, so both see the same load; the warm agent's
 * replacement interpreter imports in the background while the next cold trial runs, as it would while
 * other slots train. Measured from the order's publication to its `started` and first `report` events
 * arriving (the same clock). A first order on each agent is run and not counted: on the warm agent it is
 * the one that starts its interpreters. Each warm trial's log is checked for the warm start line.
 */

interface Sample {
  mode: "cold" | "warm";
  trial: string;
  toStartedMs: number;
  toFirstReportMs: number;
  /** Started to first report: the process's own start-up (imports, data) and first epoch. */
  startToReportMs: number;
  totalMs: number;
  warm: boolean;
}

const PARAMS = [
  ["--lr", "0.005", "--hidden", "128", "--batch-size", "64"],
  ["--lr", "0.02", "--hidden", "64", "--batch-size", "32"],
  ["--lr", "0.001", "--hidden", "256", "--batch-size", "128"],
];

class Watch {
  readonly seen = new Map<string, { started?: number; report?: number; finished?: number; status?: string }>();
  static open(nc: NatsConnection, m: TestMesh): Watch {
    const w = new Watch();
    const sub = nc.subscribe(m.names.subjects.eventsAll());
    void (async () => {
      for await (const msg of sub) {
        const r = decode(TrialEventSchema, msg.data);
        if (!r.ok) continue;
        const e: TrialEvent = r.value;
        const at = Date.now();
        const s = w.seen.get(e.trial) ?? {};
        if (e.type === "started") s.started ??= at;
        if (e.type === "report") s.report ??= at;
        if (e.type === "finished") {
          s.finished ??= at;
          s.status = e.status;
        }
        w.seen.set(e.trial, s);
      }
    })();
    return w;
  }
}

function order(study: string, trial: string, argv: string[]): WorkOrder {
  const now = Date.now();
  return {
    v: SCHEMA_VERSION,
    type: "order",
    study,
    trial,
    attempt: 1,
    pool: "gpu1",
    resources: { gpus: 1, cpus: 0 },
    argv,
    workdir: "examples/digits",
    env: { OMP_NUM_THREADS: "1" },
    secretEnv: [],
    params: {},
    timeAttr: "epoch",
    issuedAt: now,
    expiresAt: now + 3_600_000,
    nonce: randomBytes(8).toString("hex"),
  };
}

/** The trial's log file under the agent's state directory (`logs/<study>/<trial>/1.log`). */
function logOf(stateDir: string, trial: string): string {
  const root = join(stateDir, "logs");
  if (!existsSync(root)) return "";
  for (const scope of readdirSync(root)) {
    const f = join(root, scope, trial, "1.log");
    if (existsSync(f)) return readFileSync(f, "utf8");
  }
  return "";
}

export async function warmStart(ctx: BenchContext): Promise<BenchOutcome> {
  const n = ctx.quick ? 5 : 10;
  const nats = await startBenchNats();
  const procs: Proc[] = [];
  const meshes: TestMesh[] = [];
  try {
    const cold = await openMesh(nats.url, { name: "bench-warm-cold" });
    const warm = await openMesh(nats.url, { name: "bench-warm-warm" });
    meshes.push(cold, warm);
    const state = tempDir("warm-start");
    const stateOf = { cold: join(state, "cold"), warm: join(state, "warm") };
    procs.push(
      ...startAgents(cold.url, cold.prefix, [{ name: "cold", fakeGpus: 1, extra: ["--state-dir", stateOf.cold] }]),
      ...startAgents(warm.url, warm.prefix, [
        {
          name: "warm",
          fakeGpus: 1,
          extra: ["--state-dir", stateOf.warm, "--warm-python", PYTHON, "--warm-preload", "torch,sklearn"],
        },
      ]),
    );
    await waitForAgents(cold.nc, cold.names, ["cold"]);
    await waitForAgents(warm.nc, warm.names, ["warm"]);
    const watches = { cold: Watch.open(cold.nc, cold), warm: Watch.open(warm.nc, warm) };
    const meshOf = { cold, warm };

    const run = async (mode: "cold" | "warm", trial: string, params: string[]): Promise<Sample> => {
      const m = meshOf[mode];
      const argv = [PYTHON, "train.py", "--epochs", "1", ...params];
      const t0 = Date.now();
      await m.js.publish(m.names.subjects.work("gpu1"), encode(order("warmbench", trial, argv)), { msgID: `${trial}.1` });
      await waitUntil(
        `${mode} trial ${trial} to finish`,
        () => watches[mode].seen.get(trial)?.finished !== undefined,
        120_000,
        20,
      );
      const s = watches[mode].seen.get(trial) as { started: number; report: number; finished: number; status: string };
      if (s.status !== "completed") throw new Error(`${mode} trial ${trial} ended ${s.status}`);
      return {
        mode,
        trial,
        toStartedMs: s.started - t0,
        toFirstReportMs: s.report - t0,
        startToReportMs: s.report - s.started,
        totalMs: s.finished - t0,
        warm: logOf(stateOf[mode], trial).includes("[rung] warm start"),
      };
    };

    // Not counted: the warm agent's first trial of this directory starts its interpreters.
    await run("cold", "prime-c", PARAMS[0] as string[]);
    await run("warm", "prime-w", PARAMS[0] as string[]);
    await sleep(3000);
    const samples: Sample[] = [];
    for (let i = 0; i < n; i++) {
      const params = PARAMS[i % PARAMS.length] as string[];
      for (const mode of i % 2 === 0 ? (["cold", "warm"] as const) : (["warm", "cold"] as const)) {
        const s = await run(mode, `${mode}-${i}`, params);
        samples.push(s);
        ctx.log(
          `  ${s.trial}: started ${s.toStartedMs} ms, first report ${s.toFirstReportMs} ms, finished ${s.totalMs} ms${mode === "warm" ? (s.warm ? " (warm)" : " (NOT warm: no interpreter was ready)") : ""}`,
        );
        await sleep(500);
      }
    }

    const of = (mode: "cold" | "warm") => samples.filter((s) => s.mode === mode);
    const summary = (["cold", "warm"] as const).map((mode) => {
      const xs = of(mode);
      const first = dist(xs.map((s) => s.toFirstReportMs));
      const start = dist(xs.map((s) => s.toStartedMs));
      const own = dist(xs.map((s) => s.startToReportMs));
      const total = dist(xs.map((s) => s.totalMs));
      return { mode, n: xs.length, warmHits: xs.filter((s) => s.warm).length, first, start, own, total };
    });
    const [c, w] = summary as [(typeof summary)[number], (typeof summary)[number]];
    const markdown = [
      `### 9. Warm starts: order to first report on the digits example (1 epoch, ${n} trials each, interleaved)`,
      "",
      table(
        [
          "start",
          "trials (warm)",
          "order → first report p50 / p90",
          "of which order → started",
          "started → first report",
          "order → finished",
        ],
        summary.map((s) => [
          s.mode === "cold" ? "cold (`python3 train.py`)" : "warm (`--warm-preload torch,sklearn`)",
          `${s.n} (${s.warmHits})`,
          `**${fmt(s.first.p50, 0)} / ${fmt(s.first.p90, 0)} ms**`,
          `${fmt(s.start.p50, 0)} / ${fmt(s.start.p90, 0)} ms`,
          `${fmt(s.own.p50, 0)} / ${fmt(s.own.p90, 0)} ms`,
          `${fmt(s.total.p50, 0)} / ${fmt(s.total.p90, 0)} ms`,
        ]),
      ),
      "",
      `Warm starts take the first report from ${fmt(c.first.p50, 0)} ms to ${fmt(w.first.p50, 0)} ms at the median (${fmt((100 * (c.first.p50 - w.first.p50)) / c.first.p50, 0)} % less), and a one-epoch trial from ${fmt(c.total.p50, 0)} ms to ${fmt(w.total.p50, 0)} ms.`,
    ].join("\n");
    return {
      markdown,
      data: {
        n,
        summary: summary.map((s) => ({
          mode: s.mode,
          n: s.n,
          warmHits: s.warmHits,
          toStartedMs: { p50: round(s.start.p50, 0), p90: round(s.start.p90, 0) },
          toFirstReportMs: { p50: round(s.first.p50, 0), p90: round(s.first.p90, 0) },
          startedToFirstReportMs: { p50: round(s.own.p50, 0), p90: round(s.own.p90, 0) },
          totalMs: { p50: round(s.total.p50, 0), p90: round(s.total.p90, 0) },
        })),
        samples,
      },
    };
  } finally {
    await stopAll(procs);
    for (const m of meshes) await m.close().catch(() => {});
    await nats.destroy();
  }
}
