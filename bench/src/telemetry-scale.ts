import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connectNats, encode, ensureResources, MeshNames } from "@rung/protocol";
import {
  type BenchContext,
  type BenchOutcome,
  fmt,
  ProcSampler,
  REPO,
  RESULTS,
  round,
  startBenchNats,
  startProc,
  table,
} from "./common.js";
import { agentName, startLoad, telemetryMessage } from "./telemetry-load.js";

/**
 * 3. Telemetry at mesh scale: 1,000 simulated agents × 8 GPUs at 1 Hz, from a load generator publishing
 * real telemetry messages (msgpack, one per agent a second, stored by the telemetry stream as in
 * production), not 1,000 processes.
 *   - coordinator diagnosis ingest: bench/src/telemetry-ingest.ts as its own process (lag p99, CPU, RSS);
 *   - `rung tail`: the telemetry team's bench/tail-throughput.ts (vitest), run here with the same load
 *     and read back from bench/results.json;
 *   - bytes per sample: the encoded message, what NATS counts in (varz), and what the stream stores.
 */

const TAIL_BENCH = join(REPO, "bench", "tail-throughput.ts");

interface TailFigures {
  receivedLines?: number;
  expectedLines?: number;
  received?: number;
  droppedLines?: number;
  lagMs?: { p50: number; p90?: number; p99: number; max: number | null };
  tailCpuCoresJson?: number;
  tailCpuCoresTextDevNull?: number;
  tailMaxRssMiB?: number;
  startupMs?: number;
}

async function runTailBench(
  ctx: BenchContext,
  seconds: number,
  agents: number,
  gpus: number,
): Promise<TailFigures | { skipped: string }> {
  if (!existsSync(TAIL_BENCH)) return { skipped: "bench/tail-throughput.ts is not there yet (the telemetry work adds it)" };
  ctx.log(`  rung tail: bench/tail-throughput.ts (vitest), ${agents} agents × ${gpus} GPUs, ${seconds} s`);
  const p = startProc(
    process.execPath,
    [join(REPO, "node_modules", "vitest", "vitest.mjs"), "run", "--config", "bench/vitest.config.ts", "tail-throughput"],
    {
      BENCH_AGENTS: String(agents),
      BENCH_GPUS: String(gpus),
      BENCH_SECONDS: String(seconds),
    },
  );
  const code = await p.exited;
  if (code !== 0) return { skipped: `tail-throughput exited with ${code}: ${p.out().trim().split("\n").slice(-3).join(" / ")}` };
  const all = JSON.parse(readFileSync(RESULTS, "utf8")) as Record<string, TailFigures>;
  return all["tail-throughput"] ?? { skipped: "tail-throughput wrote no figures" };
}

export async function telemetryScale(ctx: BenchContext): Promise<BenchOutcome> {
  const agents = Number(process.env.BENCH_AGENTS ?? 1000);
  const gpus = Number(process.env.BENCH_GPUS ?? 8);
  // The ingest keeps a minute of samples: the full run measures long enough to reach it.
  const seconds = Number(process.env.BENCH_TELEMETRY_SECONDS ?? (ctx.quick ? 10 : 60));
  const tailSeconds = Math.min(seconds, ctx.quick ? 10 : 30);
  const warmup = 3;

  // Bytes per sample of one typical message.
  const sample = telemetryMessage(1, gpus, 0, Date.now());
  const payload = encode(sample).length;
  const subject = new MeshNames("rung").subjects.telemetry(agentName(123));
  const protocolLine = `PUB ${subject} ${payload}\r\n`.length + 2;

  const nats = await startBenchNats();
  const prefix = "bt";
  const names = new MeshNames(prefix);
  const nc = await connectNats({ url: nats.url, name: "bench-telemetry-load" });
  let ingest: Record<string, unknown> = {};
  let server: Record<string, number> = {};
  let stored = { messages: 0, bytes: 0 };
  try {
    await ensureResources(nc, names);
    const subjects = Array.from({ length: agents }, (_, a) => names.subjects.telemetry(agentName(a)));
    ctx.log(`  coordinator ingest: ${agents} agents × ${gpus} GPUs at 1 Hz for ${seconds} s (+${warmup} s warm-up)`);
    const child = startProc(process.execPath, [
      join(REPO, "bench", "dist", "telemetry-ingest.js"),
      "--nats",
      nats.url,
      "--prefix",
      prefix,
      "--agents",
      String(agents),
      "--gpus",
      String(gpus),
      "--seconds",
      String(seconds),
      "--warmup",
      String(warmup),
    ]);
    await new Promise((r) => setTimeout(r, 500));
    const varz0 = (await (await fetch(`${nats.monitorUrl}/varz`)).json()) as { in_msgs: number; in_bytes: number };
    const gen = startLoad(agents, gpus, (a, msg) => nc.publish(subjects[a] as string, encode(msg)));
    await new Promise((r) => setTimeout(r, warmup * 1000));
    // The ingest process measures its own CPU and memory (it has exited by the time this one stops).
    const sampler = new ProcSampler({ nats: nats.pid as number });
    sampler.start();
    const code = await child.exited;
    const procs = sampler.stop();
    gen.stop();
    await nc.flush();
    const varz1 = (await (await fetch(`${nats.monitorUrl}/varz`)).json()) as { in_msgs: number; in_bytes: number };
    if (code !== 0)
      throw new Error(`telemetry-ingest exited with ${code}: ${child.out().trim().split("\n").slice(-3).join(" / ")}`);
    ingest = JSON.parse(child.out().trim().split("\n").at(-1) as string) as Record<string, unknown>;
    server = {
      cpuCores: procs.nats?.cpuCores ?? 0,
      maxRssMiB: procs.nats?.maxRssMiB ?? 0,
      inBytesPerMsg: round((varz1.in_bytes - varz0.in_bytes) / Math.max(1, varz1.in_msgs - varz0.in_msgs), 1),
    };
    const jsm = await jetstreamManager(nc);
    const si = await jsm.streams.info(names.streams.telemetry);
    stored = { messages: si.state.messages, bytes: si.state.bytes };
  } finally {
    await nc.close();
    await nats.destroy();
  }

  const tail = await runTailBench(ctx, tailSeconds, agents, gpus);
  const lag = ingest.lagMs as { p50: number; p99: number; max: number };
  const pass = ingest.diagnosisPassMs as { p50: number; max: number };
  const storedPerMsg = stored.messages ? stored.bytes / stored.messages : Number.NaN;
  const t = "skipped" in tail ? null : tail;
  const markdown = [
    `### 3. Telemetry at mesh scale (${agents} simulated agents × ${gpus} GPUs at 1 Hz = ${agents * gpus} GPU samples/s in ${agents} messages/s; ingest measured ${seconds} s, tail ${tailSeconds} s)`,
    "",
    table(
      ["consumer", "kept up", "lag p50 / p99 / max", "CPU (cores)", "RSS max", "notes"],
      [
        [
          "coordinator diagnosis ingest (decode + validate each message; join + diagnose the last minute every 5 s)",
          `${fmt(Number(ingest.messagesPerS), 0)} msg/s, ${fmt(Number(ingest.samplesPerS), 0)} samples/s`,
          `${fmt(lag.p50, 0)} / ${fmt(lag.p99, 0)} / ${fmt(lag.max, 0)} ms`,
          fmt(Number(ingest.cpuCores), 2),
          `${fmt(Number(ingest.maxRssMiB), 0)} MiB`,
          `diagnosis pass p50 ${fmt(pass.p50, 0)} ms (max ${fmt(pass.max, 0)} ms) over ${ingest.windowMessages} messages; ${ingest.findings} findings`,
        ],
        t
          ? [
              "`rung tail --json` into a pipe (bench/tail-throughput.ts)",
              `${fmt(100 * (t.received ?? Number.NaN), 1)} % of lines, ${t.droppedLines ?? 0} dropped`,
              `${fmt(t.lagMs?.p50, 0)} / ${fmt(t.lagMs?.p99, 0)} / ${fmt(t.lagMs?.max ?? Number.NaN, 0)} ms`,
              `${fmt(t.tailCpuCoresJson, 2)} (text to /dev/null: ${fmt(t.tailCpuCoresTextDevNull, 2)})`,
              `${fmt(t.tailMaxRssMiB, 0)} MiB`,
              `start-up ${t.startupMs ?? "–"} ms`,
            ]
          : ["`rung tail`", "–", "–", "–", "–", (tail as { skipped: string }).skipped],
        [
          "nats-server (during the ingest run, stream storing every message)",
          "–",
          "–",
          fmt(server.cpuCores, 2),
          `${fmt(server.maxRssMiB, 0)} MiB`,
          "",
        ],
      ],
    ),
    "",
    `Bytes per GPU sample on the wire: ${fmt(payload / gpus, 1)} B of msgpack (${payload} B per ${gpus}-GPU message; NATS counted ${fmt(server.inBytesPerMsg, 0)} B in per message), ${fmt((payload + protocolLine) / gpus, 1)} B with the PUB line and subject; ${fmt(storedPerMsg / gpus, 1)} B per sample stored in the telemetry stream. At ${agents} × ${gpus} GPUs: ${fmt(((payload + protocolLine) * agents) / 1e6, 2)} MB/s in, ${fmt((storedPerMsg * agents * 3600) / 1e9, 2)} GB per hour of stream retention.`,
  ].join("\n");
  return {
    markdown,
    data: {
      agents,
      gpus,
      seconds,
      bytes: {
        payloadPerMessage: payload,
        payloadPerSample: round(payload / gpus, 1),
        wirePerSample: round((payload + protocolLine) / gpus, 1),
        natsInBytesPerMessage: server.inBytesPerMsg,
        storedPerSample: round(storedPerMsg / gpus, 1),
      },
      ingest,
      natsServer: server,
      tail,
    },
  };
}
