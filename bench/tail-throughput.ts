import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { connectNats, encode, ensureResources, type GpuSample, MeshNames, type Telemetry } from "@rung/protocol";
import { startNats } from "@rung/testkit";
import { it } from "vitest";

/**
 * Can `rung tail` keep up with 1,000 agents × 8 GPUs at 1 Hz? A load generator publishes real msgpack
 * telemetry (one message per agent per second, 8 GPU entries each, stamped at publish) to a real
 * nats-server (the telemetry stream stores them too, as in production); the real CLI tails them as a
 * child process with --json into a pipe read here. For each line: lag = time read − sample time.
 * Also: start-up (spawn → first line; and `rung --version` for what loading the CLI alone costs), the
 * tail process's CPU and memory, lines dropped, the same load tailed as text into /dev/null (CPU), and
 * `--since 10m` replaying everything stored meanwhile (time until the first live line, peak memory).
 *
 *   pnpm build && npx vitest run --config bench/vitest.config.ts tail-throughput
 *
 * Knobs (env): BENCH_AGENTS (1000), BENCH_GPUS (8), BENCH_SECONDS (20), BENCH_WARMUP_S (3).
 */

const REPO = resolve(import.meta.dirname, "..");
const RUNG = join(REPO, "packages", "cli", "dist", "bin.js");
const AGENTS = Number(process.env.BENCH_AGENTS ?? 1000);
const GPUS = Number(process.env.BENCH_GPUS ?? 8);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 3);
const CLK_TCK = 100;

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : 0;
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((q / 100) * sorted.length))] as number;
}

/** Publishes every agent's message once a second, spread over the second in 10 ms slices. */
function loadGenerator(publish: (agent: number, msg: Telemetry) => void): { stop(): void; published(): number } {
  let published = 0;
  let slice = 0;
  const slices = 100;
  const per = Math.ceil(AGENTS / slices);
  const timer = setInterval(() => {
    const from = (slice % slices) * per;
    const ts = Date.now();
    for (let a = from; a < Math.min(AGENTS, from + per); a++) {
      const gpus: GpuSample[] = [];
      for (let g = 0; g < GPUS; g++) {
        const busy = (a + g) % 3 !== 0;
        gpus.push({
          index: g,
          uuid: `GPU-${a}-${g}`,
          utilizationGpu: busy ? 40 + ((a * 7 + g * 13 + slice) % 60) : 0,
          utilizationMemory: busy ? 30 : 0,
          memoryUsedMiB: busy ? 30_000 + g : 0,
          memoryTotalMiB: 81_559,
          powerW: busy ? 350 : 60,
          temperatureC: busy ? 70 : 35,
          smClockMHz: 1980,
          study: busy ? "bench" : null,
          trial: busy ? `t${String((a * GPUS + g) % 5000).padStart(4, "0")}` : null,
        });
      }
      publish(a, { v: 1, type: "gpu", agent: `box${a}`, ts, fake: false, gpus });
      published += 1;
    }
    slice += 1;
  }, 1000 / slices);
  return { stop: () => clearInterval(timer), published: () => published };
}

it(`rung tail keeps up with ${AGENTS} agents × ${GPUS} GPUs at 1 Hz`, async () => {
  const nats = await startNats();
  const prefix = "bench";
  const names = new MeshNames(prefix);
  const nc = await connectNats({ url: nats.url, name: "bench-load" });
  const results: Record<string, unknown> = {};
  try {
    await ensureResources(nc, names);
    const subjects = Array.from({ length: AGENTS }, (_, a) => names.subjects.telemetry(`box${a}`));
    const gen = loadGenerator((a, msg) => nc.publish(subjects[a] as string, encode(msg)));
    await new Promise((r) => setTimeout(r, 1500));

    // What loading the CLI alone costs (every command pays it), to tell it from tail's own start-up.
    const loads: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t = Date.now();
      await new Promise((r) => spawn(process.execPath, [RUNG, "--version"], { stdio: "ignore" }).once("exit", r));
      loads.push(Date.now() - t);
    }
    const cliLoadMs = loads.sort((a, b) => a - b)[1];

    // JSON into a pipe read here: lag per line.
    const spawnedAt = Date.now();
    const child = spawn(process.execPath, [RUNG, "tail", "--json", "--nats", nats.url, "--prefix", prefix], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const pid = child.pid as number;
    let firstLineAt = 0;
    let measuring = false;
    let lines = 0;
    let dropped = 0;
    const lags: number[] = [];
    let rest = "";
    const TS = /"ts":(\d+)/;
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      const now = Date.now();
      if (firstLineAt === 0) firstLineAt = now;
      const text = rest + chunk;
      let start = 0;
      for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", start)) {
        const line = text.slice(start, i);
        start = i + 1;
        if (!measuring) continue;
        if (line.startsWith('{"kind":"dropped"')) {
          dropped += Number(/"lines":(\d+)/.exec(line)?.[1] ?? 0);
          continue;
        }
        lines += 1;
        const m = TS.exec(line);
        if (m) lags.push(now - Number(m[1]));
      }
      rest = text.slice(start);
    });
    await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
    const startupMs = firstLineAt - spawnedAt;
    measuring = true;
    const ticks0 = cpuTicks(pid);
    const pub0 = gen.published();
    const t0 = Date.now();
    let rss = 0;
    const rssTimer = setInterval(() => {
      rss = Math.max(rss, rssMiB(pid));
    }, 500);
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const wall = (Date.now() - t0) / 1000;
    const cpu = (cpuTicks(pid) - ticks0) / CLK_TCK / wall;
    const published = gen.published() - pub0;
    clearInterval(rssTimer);
    measuring = false;
    child.kill("SIGINT");
    await new Promise((r) => child.once("exit", r));

    // Text into /dev/null: CPU only.
    const devnull = spawn(process.execPath, [RUNG, "tail", "--nats", nats.url, "--prefix", prefix], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
    const tt0 = cpuTicks(devnull.pid as number);
    const tw0 = Date.now();
    await new Promise((r) => setTimeout(r, Math.min(10, SECONDS) * 1000));
    const textCpu = (cpuTicks(devnull.pid as number) - tt0) / CLK_TCK / ((Date.now() - tw0) / 1000);
    devnull.kill("SIGINT");
    await new Promise((r) => devnull.once("exit", r));

    // --since: replay everything stored so far (the load keeps running), until the first live line.
    const replayAt = Date.now();
    const replay = spawn(process.execPath, [RUNG, "tail", "--json", "--since", "10m", "--nats", nats.url, "--prefix", prefix], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let replayed = 0;
    let replayRss = 0;
    let replayRest = "";
    const replayDone = new Promise<number>((resolveDone) => {
      replay.stdout.setEncoding("utf8");
      replay.stdout.on("data", (chunk: string) => {
        const text = replayRest + chunk;
        let startAt = 0;
        for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", startAt)) {
          const m = TS.exec(text.slice(startAt, i));
          startAt = i + 1;
          if (m && Number(m[1]) >= replayAt) return resolveDone(Date.now() - replayAt);
          replayed += 1;
        }
        replayRest = text.slice(startAt);
      });
    });
    const replayRssTimer = setInterval(() => {
      try {
        replayRss = Math.max(replayRss, rssMiB(replay.pid as number));
      } catch {
        // exited
      }
    }, 200);
    const replayMs = await replayDone;
    clearInterval(replayRssTimer);
    replay.kill("SIGINT");
    await new Promise((r) => replay.once("exit", r));
    gen.stop();

    lags.sort((a, b) => a - b);
    const expectedLines = published * GPUS;
    Object.assign(results, {
      agents: AGENTS,
      gpusPerAgent: GPUS,
      seconds: Number(wall.toFixed(1)),
      publishedMessages: published,
      expectedLines,
      receivedLines: lines,
      received: Number((lines / expectedLines).toFixed(4)),
      droppedLines: dropped,
      linesPerSecond: Math.round(lines / wall),
      startupMs,
      cliLoadMs,
      lagMs: { p50: percentile(lags, 50), p90: percentile(lags, 90), p99: percentile(lags, 99), max: lags.at(-1) ?? null },
      tailCpuCoresJson: Number(cpu.toFixed(3)),
      tailCpuCoresTextDevNull: Number(textCpu.toFixed(3)),
      tailMaxRssMiB: Number(rss.toFixed(0)),
      sinceReplay: {
        lines: replayed,
        msToLive: replayMs,
        linesPerSecond: Math.round(replayed / (replayMs / 1000)),
        maxRssMiB: Number(replayRss.toFixed(0)),
      },
      cores: (await import("node:os")).cpus().length,
      node: process.version,
    });
    console.log(`tail-throughput: ${JSON.stringify(results, null, 2)}`);
    const file = join(REPO, "bench", "results.json");
    let all: Record<string, unknown> = {};
    try {
      all = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    } catch {
      // first bench to write it
    }
    all["tail-throughput"] = { ...results, at: new Date().toISOString() };
    writeFileSync(file, `${JSON.stringify(all, null, 2)}\n`);
  } finally {
    await nc.close();
    await nats.destroy();
  }
});
