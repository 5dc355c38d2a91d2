import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { compileSpec, specHash, specToInput } from "@rung/coordinator";
import { connectNats, encode, ensureResources, MeshNames, type StudyRecord, type TrialEvent } from "@rung/protocol";
import { CHROMIUM, chromiumOptions } from "@rung/testkit";
import { chromium } from "playwright-core";
import {
  type BenchContext,
  type BenchOutcome,
  cpuOf,
  fmt,
  median,
  round,
  rung,
  spread,
  startBenchNats,
  stopAll,
  table,
  tempDir,
  waitUntil,
} from "./common.js";
import { uiUnderTelemetry } from "./ui-telemetry.js";

/**
 * 7. The study page with many trials: a study of N trials × E epochs written into a real nats-server
 * (events as a coordinator and an agent write them), `rung ui` serving it, and Debian's Chromium
 * (headless, through playwright-core) opening the study page R times in a fresh page. Measured:
 *   page load         navigation start → the load event (the shell, uPlot and app.js);
 *   first curve       navigation start → the curves chart drawn with every trial (app.js marks it
 *                     with data-series), i.e. the API call, the fold already done by rung ui's watch,
 *                     and uPlot drawing N series;
 *   payload           bytes of the study's JSON;
 *   rung ui CPU       seconds of CPU `rung ui` spent over the whole run (watch start included).
 * Then (7b, bench/src/ui-telemetry.ts) `rung ui`'s CPU and RSS with the mesh page open while 1,000
 * simulated agents × 8 GPUs stream telemetry (the telemetry-scale load), and whether the page kept up.
 * Nothing is asserted: `pnpm bench --only ui-load`.
 */

function ev<T extends TrialEvent["type"]>(type: T, trial: string, ts: number, rest: Record<string, unknown>): TrialEvent {
  return { v: 1, type, study: "wide", trial, ts, ...rest } as TrialEvent;
}

export async function uiLoad(ctx: BenchContext): Promise<BenchOutcome> {
  const study = await studyPageLoad(ctx);
  // 7b: rung ui's CPU while the mesh's telemetry streams, the mesh page open (bench/src/ui-telemetry.ts).
  const mesh = await uiUnderTelemetry(ctx);
  return {
    markdown: `${study.markdown}\n\n${mesh.markdown}`,
    data: { ...(study.data as Record<string, unknown>), underTelemetry: mesh.data },
  };
}

async function studyPageLoad(ctx: BenchContext): Promise<BenchOutcome> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (./setup installs Debian's chromium)`);
  const trials = ctx.quick ? 200 : 1000;
  const epochs = ctx.quick ? 50 : 100;
  const repeats = ctx.quick ? 3 : 5;
  const nats = await startBenchNats();
  const names = new MeshNames("uibench");
  const nc = await connectNats({ url: nats.url, name: "bench-ui" });
  const profile = tempDir("ui-chromium");
  let ui: ReturnType<typeof rung> | undefined;
  try {
    const res = await ensureResources(nc, names);
    const spec = compileSpec({
      name: "wide",
      command: "python3 train.py --lr {lr} --wd {wd}",
      metric: { name: "val_acc", mode: "max" },
      search: {
        algorithm: "random",
        samples: trials,
        seed: 1,
        space: { lr: { loguniform: [1e-4, 1e-1] }, wd: { uniform: [0, 0.1] } },
      },
      scheduler: { type: "fifo" },
      resources: { gpus: 1 },
    });
    const t0 = Date.now() - 3_600_000;
    const record: StudyRecord = {
      v: 1,
      type: "study",
      name: "wide",
      spec: specToInput(spec),
      specHash: specHash(spec),
      createdAt: t0,
      state: "completed",
      updatedAt: t0,
    };
    await res.studies.put(names.subjects.studyKey("wide"), encode(record));
    ctx.log(`writing ${trials} trials × ${epochs} epochs (${trials * (epochs + 6)} events)`);
    const js = jetstream(nc);
    let pending: Promise<unknown>[] = [];
    const publish = async (e: TrialEvent) => {
      pending.push(js.publish(names.subjects.eventSubject(e), encode(e)));
      if (pending.length >= 2000) {
        await Promise.all(pending);
        pending = [];
      }
    };
    for (let i = 1; i <= trials; i++) {
      const trial = `t${String(i).padStart(4, "0")}`;
      const agent = `box${i % 64}`;
      const q = 0.5 + 0.45 * Math.sin(i);
      const at = t0 + i * 100;
      await publish(
        ev("created", trial, at, { params: { lr: 10 ** (-4 + (3 * i) / trials), wd: (i % 10) / 100 }, bracket: null }),
      );
      await publish(ev("queued", trial, at, { attempt: 1 }));
      await publish(ev("claimed", trial, at + 1, { attempt: 1, agent, gpus: [0] }));
      await publish(ev("started", trial, at + 2, { attempt: 1, agent, pid: 1, gpus: [0] }));
      for (let e = 1; e <= epochs; e++)
        await publish(
          ev("report", trial, at + 2 + e * 10, {
            attempt: 1,
            agent,
            seq: e,
            metrics: { epoch: e, val_acc: q * (1 - 1 / (e + 1)) },
          }),
        );
      const end = at + 3 + epochs * 10;
      await publish(
        ev("finished", trial, end, {
          attempt: 1,
          agent,
          status: "completed",
          exitCode: 0,
          signal: null,
          reason: "exit 0",
          logTail: [],
        }),
      );
      await publish(ev("ended", trial, end, { status: "completed", reason: "completed", attempts: 1 }));
    }
    await Promise.all(pending);

    ui = rung(["ui", "--port", "0", "--nats", nats.url, "--prefix", names.prefix]);
    const started = ui;
    await waitUntil("rung ui to serve", () => /rung ui: http/.test(started.out()), 20_000);
    const url = (/rung ui: (http:\/\/\S+)\//.exec(ui.out()) as RegExpExecArray)[1] as string;
    const cpu0 = cpuOf(ui.pid);

    const api0 = Date.now();
    const body = await (await fetch(`${url}/api/study/wide`)).text();
    const firstApiMs = Date.now() - api0;

    const context = await chromium.launchPersistentContext(profile, chromiumOptions({ width: 1400, height: 900 }));
    const loads: number[] = [];
    const firstCurves: number[] = [];
    try {
      for (let r = 0; r < repeats; r++) {
        const page = await context.newPage();
        await page.goto(`${url}/study/wide`, { waitUntil: "load" });
        await page.waitForSelector(`#curves[data-series="${trials}"]`, { timeout: 120_000 });
        const t = await page.evaluate(() => {
          const nav = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
          return { load: nav.loadEventEnd, now: performance.now() };
        });
        loads.push(t.load);
        firstCurves.push(t.now);
        await page.close();
      }
    } finally {
      await context.close();
    }
    const cpu1 = cpuOf(ui.pid);
    const uiCpuS = cpu0 && cpu1 ? cpu1.self - cpu0.self : Number.NaN;
    const data = {
      trials,
      epochs,
      repeats,
      payloadBytes: body.length,
      firstApiMs,
      pageLoadMs: loads.map((x) => round(x, 0)),
      firstCurveMs: firstCurves.map((x) => round(x, 0)),
      // JSON has no NaN: unmeasured (no /proc) is null, not a string "NaN" or a silent null from stringify.
      uiCpuSeconds: Number.isFinite(uiCpuS) ? round(uiCpuS, 2) : null,
    };
    const markdown = [
      `**7. The study page with ${trials} trials × ${epochs} epochs** (rung ui + Chromium headless, ${repeats} fresh page loads; median (range))`,
      "",
      table(
        ["study JSON", "first API call (watch start)", "page load", "first curve (all series drawn)", "rung ui CPU over the run"],
        [
          [
            `${fmt(body.length / 1e6, 1)} MB`,
            `${fmt(firstApiMs / 1000, 2)} s`,
            `${spread(loads, 0, " ms")}`,
            `${spread(firstCurves, 0, " ms")}`,
            Number.isFinite(uiCpuS) ? `${fmt(uiCpuS, 1)} s` : "not measured",
          ],
        ],
      ),
      "",
      `Median first curve ${fmt(median(firstCurves), 0)} ms.`,
    ].join("\n");
    return { markdown, data };
  } finally {
    if (ui) await stopAll([ui], "SIGINT");
    await nc.close();
    await nats.destroy();
    rmSync(join(profile), { recursive: true, force: true });
  }
}
