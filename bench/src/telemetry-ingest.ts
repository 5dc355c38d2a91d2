import { diagnose, joinTelemetry, StudyState } from "@rung/coordinator";
import { connectNats, decode, MeshNames, sourceOf, type Telemetry, TelemetrySchema, type TrialEvent } from "@rung/protocol";
import { dist, round } from "./common.js";
import { agentName, LOAD_STUDY, trialOf } from "./telemetry-load.js";

/**
 * The coordinator's side of telemetry at mesh scale, as its own process (so its CPU and memory are its
 * own): a core NATS subscription on every agent's telemetry subject (as `rung tail` and a live
 * coordinator would use), each message decoded and validated (msgpack + zod) on arrival and kept for a
 * minute, and every `--every` seconds the diagnosis the study report runs — joinTelemetry over that
 * minute, then diagnose(). Lag = time the message is decoded here − the sample's own timestamp; a
 * diagnosis pass blocks the loop, so its cost shows up in the lag of the messages behind it.
 *
 *   node bench/dist/telemetry-ingest.js --nats URL --prefix P --agents 1000 --gpus 8 --seconds 20 --warmup 3
 *
 * Prints one JSON line with the figures when done.
 */

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] as string) : dflt;
};
const url = arg("nats", "nats://127.0.0.1:4222");
const names = new MeshNames(arg("prefix", "rung"));
const AGENTS = Number(arg("agents", "1000"));
const GPUS = Number(arg("gpus", "8"));
const SECONDS = Number(arg("seconds", "20"));
const WARMUP = Number(arg("warmup", "3"));
const EVERY = Number(arg("every", "5"));
const KEEP_MS = 60_000;

// The study the samples belong to: every busy GPU runs one trial, started before the load began.
const state = new StudyState({ study: LOAD_STUDY, metric: "val_loss", mode: "min", timeAttr: "epoch" });
const t0 = Date.now() - 1000;
for (let a = 0; a < AGENTS; a++) {
  for (let g = 0; g < GPUS; g++) {
    const trial = trialOf(a, g);
    if (trial === null) continue;
    const base = { v: 1 as const, study: LOAD_STUDY, trial, ts: t0 };
    const events: TrialEvent[] = [
      { ...base, type: "created", params: { lr: 0.01 }, bracket: null },
      { ...base, type: "queued", attempt: 1 },
      { ...base, type: "claimed", attempt: 1, agent: agentName(a), gpus: [g] },
      { ...base, type: "started", attempt: 1, agent: agentName(a), pid: 1, gpus: [g] },
    ];
    for (const e of events) state.apply(e, sourceOf(e));
  }
}

const nc = await connectNats({ url, name: "bench-telemetry-ingest" });
const window: Telemetry[] = [];
const lags: number[] = [];
const passes: number[] = [];
let findings = 0;
let messages = 0;
let samples = 0;
let bad = 0;
let measuring = false;
let maxRss = 0;
const sub = nc.subscribe(names.subjects.telemetryAll());
const loop = (async () => {
  for await (const m of sub) {
    const r = decode(TelemetrySchema, m.data, "telemetry");
    if (!r.ok) {
      bad += 1;
      continue;
    }
    const now = Date.now();
    window.push(r.value);
    if (!measuring) continue;
    messages += 1;
    if (r.value.type === "gpu") samples += r.value.gpus.length;
    lags.push(now - r.value.ts);
  }
})();

const diagnosis = setInterval(() => {
  const now = Date.now();
  let drop = 0;
  while (drop < window.length && (window[drop] as Telemetry).ts < now - KEEP_MS) drop++;
  if (drop > 0) window.splice(0, drop);
  const t = performance.now();
  const joined = joinTelemetry(state, window, { now });
  const found = diagnose(joined);
  if (measuring) {
    passes.push(performance.now() - t);
    findings = found.length;
  }
  maxRss = Math.max(maxRss, process.memoryUsage().rss);
}, EVERY * 1000);

await new Promise((r) => setTimeout(r, WARMUP * 1000));
const cpu0 = process.cpuUsage();
const wall0 = performance.now();
measuring = true;
const rssTimer = setInterval(() => {
  maxRss = Math.max(maxRss, process.memoryUsage().rss);
}, 500);
await new Promise((r) => setTimeout(r, SECONDS * 1000));
measuring = false;
const cpu = process.cpuUsage(cpu0);
const wall = (performance.now() - wall0) / 1000;
clearInterval(rssTimer);
clearInterval(diagnosis);
sub.unsubscribe();
await loop;
await nc.close();
process.stdout.write(
  `${JSON.stringify({
    messages,
    samples,
    messagesPerS: round(messages / wall, 0),
    samplesPerS: round(samples / wall, 0),
    bad,
    lagMs: dist(lags),
    diagnosisPassMs: dist(passes),
    windowMessages: window.length,
    findings,
    cpuCores: round((cpu.user + cpu.system) / 1e6 / wall, 3),
    maxRssMiB: round(maxRss / 2 ** 20, 0),
  })}\n`,
);
