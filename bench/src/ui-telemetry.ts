import { readFileSync, rmSync } from "node:fs";
import { type AgentAdvert, connectNats, encode, ensureResources, MeshNames } from "@rung/protocol";
import { chromiumOptions } from "@rung/testkit";
import { chromium } from "playwright-core";
import {
  type BenchContext,
  childrenOf,
  cpuOf,
  fmt,
  median,
  ProcSampler,
  round,
  rung,
  sleep,
  startBenchNats,
  stopAll,
  table,
  tempDir,
  waitUntil,
} from "./common.js";
import { agentName, startLoad } from "./telemetry-load.js";

/**
 * 7b. `rung ui` while the mesh's telemetry streams: the telemetry-scale load (bench/src/telemetry-load.ts,
 * 1,000 simulated agents × 8 GPUs, one real `gpu` message per agent a second) into a real nats-server,
 * plus each agent's advert refreshed every 3 s as `rung agent` does (the mesh page shows the GPUs of
 * advertised agents), `rung ui` on a free port, and Debian's Chromium (headless, through playwright-core)
 * showing the mesh page (it polls /api/mesh every 5 s and redraws the 8,000-row table and the timeline).
 * Measured over the window (30 s, 10 s with --quick): `rung ui`'s CPU and RSS from /proc, the mesh
 * page's redraws, and from each /api/mesh answer the page got, its size and how old the oldest agent's
 * latest sample was when it was built (what "kept up" means: every agent's sample is about a second old).
 */

const ADVERT_INTERVAL_MS = 3000;

interface PageLog {
  redraws: { at: number; lead: string; watched: string }[];
  longTasks: { at: number; ms: number }[];
}

/** Every process below `pid`, from /proc. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  for (const c of childrenOf(pid)) out.push(c, ...descendants(c));
  return out;
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

function cpuSum(pids: readonly number[]): number {
  return pids.reduce((acc, pid) => acc + (cpuOf(pid)?.self ?? 0), 0);
}

interface MeshAnswer {
  at: number;
  /** Request start → last byte of the answer, as Chromium timed it. */
  ms: number;
  bytes: number;
  agents: number;
  gpus: number;
  /** generatedAt − the oldest agent's latest sample, ms. */
  oldestSampleAgeMs: number;
  busy: number;
}

export interface UiTelemetryFigures {
  agents: number;
  gpus: number;
  windowSeconds: number;
  uiCpuCores: number;
  uiCpuSeconds: number;
  uiRssMiB: number;
  uiMaxRssMiB: number;
  natsCpuCores: number;
  telemetryPublished: number;
  advertsPut: number;
  advertPutErrors: number;
  pageRedraws: number;
  meshAnswers: number;
  meshAnswerMiB: number | null;
  meshAnswerMs: { median: number | null; max: number | null };
  redrawGapMs: { median: number | null; max: number | null };
  oldestSampleAgeMs: { median: number | null; max: number | null };
  pageGpusShown: number[];
  pageLead: string;
  /** Redraws (from the one before the window) after which box0's GPU 1 showed a new utilization. */
  watchedUtilizationChanges: number;
  chromiumCpuCores: number;
  /** Share of the window the page's main thread spent in long tasks (> 50 ms). */
  pageLongTaskShare: number;
  keptUpdating: boolean;
}

function advertOf(a: number, gpus: number, startedAt: number): AgentAdvert {
  const name = agentName(a);
  return {
    v: 1,
    type: "advert",
    agent: name,
    state: "running",
    host: { hostname: name, cpuModel: "bench", cpuCores: 64, memoryTotalBytes: 512 * 2 ** 30, os: "linux" },
    gpus: Array.from({ length: gpus }, (_, g) => ({
      index: g,
      uuid: `GPU-${a}-${g}`,
      name: "NVIDIA H100 80GB HBM3",
      memoryTotalMiB: 81_559,
      driver: "550.54",
      fake: false,
      utilization: null,
      memoryUsedMiB: null,
      study: null,
      trial: null,
    })),
    cpuSlots: 0,
    freeGpus: 0,
    freeCpuSlots: 0,
    labels: {},
    pricePerGpuHour: 2.5,
    version: "0.1.0",
    startedAt,
    updatedAt: Date.now(),
  };
}

export async function uiUnderTelemetry(ctx: BenchContext): Promise<{ markdown: string; data: UiTelemetryFigures }> {
  const agents = Number(process.env.BENCH_AGENTS ?? 1000);
  const gpus = Number(process.env.BENCH_GPUS ?? 8);
  const windowS = Number(process.env.BENCH_UI_SECONDS ?? (ctx.quick ? 10 : 30));
  const nats = await startBenchNats();
  const names = new MeshNames("uitel");
  const nc = await connectNats({ url: nats.url, name: "bench-ui-telemetry-load" });
  const profile = tempDir("ui-tel-chromium");
  let ui: ReturnType<typeof rung> | undefined;
  let gen: ReturnType<typeof startLoad> | undefined;
  let adverts: NodeJS.Timeout | undefined;
  try {
    const res = await ensureResources(nc, names);
    const subjects = Array.from({ length: agents }, (_, a) => names.subjects.telemetry(agentName(a)));
    const startedAt = Date.now();
    let advertsPut = 0;
    let advertPutErrors = 0;
    const putAdvert = (a: number) => {
      res.agents.put(names.subjects.agentKey(agentName(a)), encode(advertOf(a, gpus, startedAt))).then(
        () => {
          advertsPut += 1;
        },
        () => {
          advertPutErrors += 1;
        },
      );
    };
    // Every advert once, then each refreshed every 3 s, spread over the interval in 30 ms slices.
    for (let a = 0; a < agents; a++) putAdvert(a);
    let slice = 0;
    const slices = 100;
    const per = Math.ceil(agents / slices);
    adverts = setInterval(() => {
      const from = (slice % slices) * per;
      for (let a = from; a < Math.min(agents, from + per); a++) putAdvert(a);
      slice += 1;
    }, ADVERT_INTERVAL_MS / slices);
    ctx.log(`  ${agents} agents × ${gpus} GPUs: telemetry at 1 Hz, adverts every ${ADVERT_INTERVAL_MS / 1000} s`);
    gen = startLoad(agents, gpus, (a, msg) => nc.publish(subjects[a] as string, encode(msg)));
    await sleep(3000);

    ui = rung(["ui", "--port", "0", "--nats", nats.url, "--prefix", names.prefix]);
    const started = ui;
    await waitUntil("rung ui to serve", () => /rung ui: http/.test(started.out()), 20_000);
    const url = (/rung ui: (http:\/\/\S+)\//.exec(ui.out()) as RegExpExecArray)[1] as string;
    await waitUntil(
      "rung ui to show every GPU",
      async () => {
        const d = (await (await fetch(`${url}/api/mesh`)).json()) as { gpus: unknown[] };
        return d.gpus.length === agents * gpus;
      },
      60_000,
      1000,
    );

    const context = await chromium.launchPersistentContext(profile, chromiumOptions({ width: 1400, height: 900 }));
    const answers: MeshAnswer[] = [];
    let measuring = false;
    let figures: UiTelemetryFigures;
    try {
      const page = await context.newPage();
      page.on("requestfinished", (req) => {
        if (!measuring || !req.url().endsWith("/api/mesh")) return;
        const at = Date.now();
        // From the request's start to the answer's last byte.
        const ms = req.timing().responseEnd;
        void req
          .response()
          .then((r) => r?.body())
          .then((buf) => {
            if (!buf) return;
            const d = JSON.parse(buf.toString("utf8")) as {
              agents: unknown[];
              gpus: { sampledAt: number | null; trial: string | null }[];
              generatedAt: string;
            };
            const built = Date.parse(d.generatedAt);
            let oldest = built;
            for (const g of d.gpus) oldest = Math.min(oldest, g.sampledAt ?? 0);
            answers.push({
              at,
              ms,
              bytes: buf.length,
              agents: d.agents.length,
              gpus: d.gpus.length,
              oldestSampleAgeMs: built - oldest,
              busy: d.gpus.filter((g) => g.trial).length,
            });
          })
          .catch(() => {});
      });
      // From the page's start: each redraw (main's children replaced) with the lead line and the
      // utilization of box0's GPU 1 (busy, so it changes every second), and the main thread's long tasks.
      await page.addInitScript(() => {
        const w = window as unknown as PageLog;
        w.redraws = [];
        w.longTasks = [];
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) w.longTasks.push({ at: performance.timeOrigin + e.startTime, ms: e.duration });
        }).observe({ type: "longtask", buffered: true });
        document.addEventListener("DOMContentLoaded", () => {
          const main = document.getElementById("main") as HTMLElement;
          new MutationObserver(() => {
            const lead = main.querySelector("p.lead")?.textContent ?? "";
            const watched = main.querySelector("table.gpus tbody tr:nth-child(2) td:nth-child(3)")?.textContent ?? "";
            w.redraws.push({ at: Date.now(), lead, watched });
          }).observe(main, { childList: true });
        });
      });
      await page.goto(`${url}/mesh`, { waitUntil: "load" });
      await page.waitForSelector(`#timeline[data-series]`, { timeout: 120_000 });

      const sampler = new ProcSampler({ ui: ui.pid, nats: nats.pid as number });
      const cpu0 = cpuOf(ui.pid);
      const browserPids = descendants(process.pid).filter((pid) => /chrom/i.test(commOf(pid)));
      const browser0 = cpuSum(browserPids);
      const t0 = Date.now();
      measuring = true;
      sampler.start();
      ctx.log(`  measuring rung ui with the mesh page open for ${windowS} s`);
      await sleep(windowS * 1000);
      const procs = sampler.stop();
      measuring = false;
      const t1 = Date.now();
      const cpu1 = cpuOf(ui.pid);
      const browserCpu = cpuSum(browserPids) - browser0;
      const log = (await page.evaluate(() => {
        const w = window as unknown as PageLog;
        return { redraws: w.redraws, longTasks: w.longTasks };
      })) as PageLog;
      // Answers whose body was still being read when the window closed.
      await sleep(500);
      const inWindow = log.redraws.filter((r) => r.at >= t0 && r.at <= t1);
      // The redraw before the window too: did what the page shows change from one redraw to the next?
      const before = log.redraws.filter((r) => r.at < t0).at(-1);
      const seen = before ? [before, ...inWindow] : inWindow;
      const changes = seen.slice(1).filter((r, i) => r.watched !== (seen[i] as { watched: string }).watched).length;
      const shown = inWindow.map((r) => Number(/(\d+) GPU\(s\)/.exec(r.lead)?.[1] ?? Number.NaN));
      const busyMs = log.longTasks.filter((x) => x.at >= t0 && x.at <= t1).reduce((acc, x) => acc + x.ms, 0);
      const ages = answers.map((a) => a.oldestSampleAgeMs);
      const sizes = answers.map((a) => a.bytes);
      const times = answers.map((a) => a.ms).filter((x) => x >= 0);
      const gaps = seen.slice(1).map((r, i) => r.at - (seen[i] as { at: number }).at);
      figures = {
        agents,
        gpus,
        windowSeconds: windowS,
        uiCpuCores: procs.ui?.cpuCores ?? Number.NaN,
        uiCpuSeconds: cpu0 && cpu1 ? round(cpu1.self - cpu0.self, 2) : Number.NaN,
        uiRssMiB: procs.ui?.rssMiB ?? Number.NaN,
        uiMaxRssMiB: procs.ui?.maxRssMiB ?? Number.NaN,
        natsCpuCores: procs.nats?.cpuCores ?? Number.NaN,
        chromiumCpuCores: round(browserCpu / ((t1 - t0) / 1000), 2),
        pageLongTaskShare: round(busyMs / (t1 - t0), 3),
        telemetryPublished: gen.published(),
        advertsPut,
        advertPutErrors,
        pageRedraws: inWindow.length,
        meshAnswers: answers.length,
        meshAnswerMiB: sizes.length ? round(median(sizes) / 2 ** 20, 2) : null,
        meshAnswerMs: {
          median: times.length ? round(median(times), 0) : null,
          max: times.length ? round(Math.max(...times), 0) : null,
        },
        redrawGapMs: { median: gaps.length ? round(median(gaps), 0) : null, max: gaps.length ? Math.max(...gaps) : null },
        oldestSampleAgeMs: { median: ages.length ? round(median(ages), 0) : null, max: ages.length ? Math.max(...ages) : null },
        pageGpusShown: shown,
        pageLead: inWindow.at(-1)?.lead ?? "",
        watchedUtilizationChanges: changes,
        keptUpdating:
          inWindow.length >= 1 &&
          shown.every((n) => n === agents * gpus) &&
          changes === seen.length - 1 &&
          changes >= 1 &&
          answers.length >= 1 &&
          ages.every((x) => x < 5000),
      };
    } finally {
      await context.close();
    }
    const f = figures;
    const markdown = [
      `**7b. \`rung ui\` while ${agents} agents × ${gpus} GPUs stream telemetry** (the telemetry-scale load at 1 Hz plus an advert per agent every 3 s; the mesh page open in Chromium headless, which polls /api/mesh 5 s after each redraw; measured over ${windowS} s)`,
      "",
      table(
        [
          "rung ui CPU (cores)",
          "rung ui RSS median / max",
          "/api/mesh answer (size, time)",
          "oldest agent sample in an answer, median / max",
          "page redraws in the window",
          "GPUs on the page",
          "kept updating",
        ],
        [
          [
            `${fmt(f.uiCpuCores, 2)} (${fmt(f.uiCpuSeconds, 1)} CPU-s)`,
            `${fmt(f.uiRssMiB, 0)} / ${fmt(f.uiMaxRssMiB, 0)} MiB`,
            `${fmt(f.meshAnswerMiB, 2)} MiB, ${fmt(f.meshAnswerMs.median, 0)} ms (max ${fmt(f.meshAnswerMs.max, 0)} ms; ${f.meshAnswers} answers)`,
            `${fmt(f.oldestSampleAgeMs.median, 0)} / ${fmt(f.oldestSampleAgeMs.max, 0)} ms`,
            `${f.pageRedraws} (every ${fmt(f.redrawGapMs.median, 0)} ms, max ${fmt(f.redrawGapMs.max, 0)} ms)`,
            [...new Set(f.pageGpusShown)].join(", ") || "–",
            f.keptUpdating
              ? `yes (a busy GPU's utilization changed at each of ${f.watchedUtilizationChanges} redraws)`
              : `**no** (a busy GPU's utilization changed at ${f.watchedUtilizationChanges} redraws)`,
          ],
        ],
      ),
      "",
      `Chromium (all its processes) ${fmt(f.chromiumCpuCores, 2)} cores, its page's main thread ${fmt(100 * f.pageLongTaskShare, 0)} % of the window in long tasks; nats-server ${fmt(f.natsCpuCores, 2)} cores. ${f.telemetryPublished} telemetry messages published in all, ${f.advertsPut} advert puts (${f.advertPutErrors} failed).`,
    ].join("\n");
    return { markdown, data: f };
  } finally {
    if (adverts) clearInterval(adverts);
    gen?.stop();
    if (ui) await stopAll([ui], "SIGINT");
    await nc.close();
    await nats.destroy();
    rmSync(profile, { recursive: true, force: true });
  }
}
