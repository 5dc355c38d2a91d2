import type { AgentAdvert, GpuSample, Telemetry, TrialEvent } from "@rung/protocol";
import { nanPercentile } from "../common/index.js";
import { type StudyState, TERMINAL_PHASES, type TrialRecord } from "../study/index.js";
import type { AgentIdleStats, DiagnosisInput, Distribution, TrialGpuStats, TrialStats } from "./bottleneck.js";

/**
 * Joins a study's GPU and host samples with its trials. Pure: the study state (folded events), the
 * samples, and optionally the raw events and the agents' adverts in; per-trial statistics and
 * per-agent idle accounting out (the input of `diagnose`).
 *
 * Which trial a GPU sample belongs to: the agent tags every GPU entry with the study and trial on
 * it, and the tag decides: an agent that tags any entry tags all of them, so its untagged entries
 * are idle GPUs. For an agent that never tags (an older one), an entry falls back to the events: the
 * attempt that held that agent's GPU index (started → finished) at the sample's time, else idle. An
 * entry tagged with another study is busy, not idle.
 *
 * The trial's own CPU comes from its agent's host samples (the `trials` entry for it: the CPU time
 * of its processes over the sample's interval); the host CPU while it waited for data from its
 * reports (`data_wait_host_cpu`, which rung_trial.timed measures, weighted by each report's wait).
 *
 * A fake GPU's utilization is the trial's last reported busy share (5 % before the first report),
 * so its samples before an attempt's first report say nothing about the trial and are left out of
 * the utilization and memory statistics (they still count as GPU time). Real GPUs keep every sample.
 */

export interface JoinOptions {
  /** The study's raw events: first report per attempt, throughput and num_workers per report. */
  readonly events?: readonly TrialEvent[];
  /** Adverts, for core counts and GPU counts when samples lack them, and prices. */
  readonly adverts?: readonly AgentAdvert[];
  /** The end of a study still running. Default `Date.now()`. */
  readonly now?: number;
  /** Weight of a sample of an agent with a single GPU message. Default 1000 ms (the agents' default). */
  readonly defaultIntervalMs?: number;
}

export interface JoinedTelemetry extends DiagnosisInput {
  /** The study's time window: its first event to its last (or now while it runs). */
  readonly window: { readonly from: number | null; readonly to: number | null };
  readonly telemetry: {
    readonly gpuMessages: number;
    readonly hostMessages: number;
    readonly from: number | null;
    readonly to: number | null;
  };
}

interface AttemptWindow {
  readonly trial: string;
  readonly attempt: number;
  readonly agent: string;
  readonly gpus: readonly number[];
  readonly start: number;
  readonly end: number;
  firstReport: number | null;
}

interface TrialAcc {
  util: number[];
  memHigh: number | null;
  memTotal: number | null;
  memShare: number | null;
  sampledGpuSeconds: number;
  usedSamples: number;
  maxTogether: number;
  /** agent → GPU index → that GPU's utilization samples (all, and those taken with the trial's other GPUs). */
  perGpu: Map<string, Map<number, { agent: string; gpu: number; all: number[]; together: number[] }>>;
  /** Per agent: time range of the samples used (or of all samples when none was used). */
  usedRange: Map<string, [number, number]>;
  anyRange: Map<string, [number, number]>;
}

const THROUGHPUT =
  /(^|_)(throughput|samples_per_s(ec)?|items_per_s(ec)?|images_per_s(ec)?|examples_per_s(ec)?|tokens_per_s(ec)?)$/;

/** The map's value for `key`, created by `make` the first time. */
function entry<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key);
  if (v === undefined) {
    v = make();
    map.set(key, v);
  }
  return v;
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function distribution(xs: number[]): Distribution | null {
  if (xs.length === 0) return null;
  let sum = 0;
  for (const x of xs) sum += x;
  return { mean: sum / xs.length, p10: nanPercentile(xs, 10), p90: nanPercentile(xs, 90) };
}

function widen(map: Map<string, [number, number]>, agent: string, ts: number): void {
  const r = map.get(agent);
  if (!r) map.set(agent, [ts, ts]);
  else {
    if (ts < r[0]) r[0] = ts;
    if (ts > r[1]) r[1] = ts;
  }
}

function finite(x: number | null | undefined): x is number {
  return typeof x === "number" && Number.isFinite(x);
}

function numberParam(p: Readonly<Record<string, string | number | boolean>>, keys: readonly string[]): number | null {
  for (const k of keys) {
    const v = p[k];
    if (typeof v === "number" && Number.isFinite(v)) return v;
    if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) return Number(v);
  }
  return null;
}

/** Per-agent sample interval: the median gap between an agent's messages of one kind. */
function intervals(msgs: readonly { agent: string; ts: number }[], fallbackMs: number): Map<string, number> {
  const last = new Map<string, number>();
  const gaps = new Map<string, number[]>();
  for (const m of msgs) {
    const prev = last.get(m.agent);
    if (prev !== undefined && m.ts > prev) {
      entry(gaps, m.agent, () => []).push(m.ts - prev);
    }
    last.set(m.agent, m.ts);
  }
  const out = new Map<string, number>();
  for (const agent of last.keys()) out.set(agent, median(gaps.get(agent) ?? []) ?? fallbackMs);
  return out;
}

/** The end of a study's time window: its last event once every trial ended, else now. */
function studyEnd(state: StudyState, now: number): number | null {
  if (state.lastTs === null) return null;
  const created = [...state.trials.values()].filter((t) => t.createdAt !== null);
  const done = created.length > 0 && created.every((t) => TERMINAL_PHASES.has(t.phase));
  return done ? state.lastTs : Math.max(now, state.lastTs);
}

function attemptWindows(state: StudyState, now: number): AttemptWindow[] {
  const out: AttemptWindow[] = [];
  for (const t of state.trials.values()) {
    for (const a of t.attempts) {
      const start = a.startedAt ?? a.claimedAt;
      if (a.agent === null || start === null) continue;
      out.push({
        trial: t.trial,
        attempt: a.attempt,
        agent: a.agent,
        gpus: a.gpus,
        start,
        end: a.endedAt ?? t.endedAt ?? now,
        firstReport: null,
      });
    }
  }
  return out.sort((a, b) => a.start - b.start);
}

export function joinTelemetry(state: StudyState, telemetry: readonly Telemetry[], options: JoinOptions = {}): JoinedTelemetry {
  const now = options.now ?? Date.now();
  const fallbackMs = options.defaultIntervalMs ?? 1000;
  const study = state.study;
  const adverts = new Map((options.adverts ?? []).map((a) => [a.agent, a]));

  // Attempts and what their reports said.
  const windows = attemptWindows(state, now);
  const byAgent = new Map<string, AttemptWindow[]>();
  const byAttempt = new Map<string, AttemptWindow>();
  const byTrial = new Map<string, AttemptWindow[]>();
  for (const w of windows) {
    entry(byAgent, w.agent, () => []).push(w);
    entry(byTrial, w.trial, () => []).push(w);
    byAttempt.set(`${w.trial}#${w.attempt}`, w);
  }
  const firstReportOfTrial = new Map<string, number>();
  const throughput = new Map<string, { name: string; sum: number; n: number }>();
  const workers = new Map<string, number>();
  /** Per trial: Σ data_wait_host_cpu × data_wait_s and Σ data_wait_s over the reports that carry both. */
  const waitCpu = new Map<string, { busy: number; wait: number }>();
  for (const ev of options.events ?? []) {
    if (ev.type !== "report" || ev.study !== study) continue;
    const w = byAttempt.get(`${ev.trial}#${ev.attempt}`);
    if (w && (w.firstReport === null || ev.ts < w.firstReport)) w.firstReport = ev.ts;
    const f = firstReportOfTrial.get(ev.trial);
    if (f === undefined || ev.ts < f) firstReportOfTrial.set(ev.trial, ev.ts);
    const waitS = ev.metrics.data_wait_s;
    const waitBusy = ev.metrics.data_wait_host_cpu;
    if (finite(waitS) && waitS > 0 && finite(waitBusy) && waitBusy >= 0 && waitBusy <= 1) {
      const acc = entry(waitCpu, ev.trial, () => ({ busy: 0, wait: 0 }));
      acc.busy += waitBusy * waitS;
      acc.wait += waitS;
    }
    for (const [k, v] of Object.entries(ev.metrics)) {
      if (!finite(v)) continue;
      if (k === "num_workers") workers.set(ev.trial, v);
      else if (THROUGHPUT.test(k)) {
        const acc = throughput.get(ev.trial);
        if (!acc) throughput.set(ev.trial, { name: k, sum: v, n: 1 });
        else if (acc.name === k) {
          acc.sum += v;
          acc.n += 1;
        }
      }
    }
  }
  const haveEvents = options.events !== undefined;

  const from = state.firstTs;
  const to = studyEnd(state, now);
  const inWindow = (ts: number) => from !== null && to !== null && ts >= from && ts <= to;

  const gpuMsgs: Extract<Telemetry, { type: "gpu" }>[] = [];
  const hostMsgs: Extract<Telemetry, { type: "host" }>[] = [];
  for (const m of telemetry) {
    if (m.type === "gpu") gpuMsgs.push(m);
    else hostMsgs.push(m);
  }
  gpuMsgs.sort((a, b) => a.ts - b.ts);
  hostMsgs.sort((a, b) => a.ts - b.ts);
  const gpuInterval = intervals(gpuMsgs, fallbackMs);
  const hostInterval = intervals(hostMsgs, 5 * fallbackMs);

  const studyAgents = new Set(byAgent.keys());
  // An agent that tags any sample tags them all: its untagged entries are idle GPUs.
  const tagging = new Set<string>();
  for (const m of gpuMsgs) {
    for (const g of m.gpus) {
      if (g.study === null) continue;
      tagging.add(m.agent);
      if (g.study === study) studyAgents.add(m.agent);
    }
  }

  const agentGpus = new Map<string, number>();
  const agentAcc = new Map<string, { observed: number; busy: number; other: number; idle: number }>();
  const trials = new Map<string, TrialAcc>();
  const trialAcc = (trial: string): TrialAcc => {
    let a = trials.get(trial);
    if (!a) {
      a = {
        util: [],
        memHigh: null,
        memTotal: null,
        memShare: null,
        sampledGpuSeconds: 0,
        usedSamples: 0,
        maxTogether: 0,
        perGpu: new Map(),
        usedRange: new Map(),
        anyRange: new Map(),
      };
      trials.set(trial, a);
    }
    return a;
  };

  const windowAt = (agent: string, gpu: number | null, ts: number, trial: string | null): AttemptWindow | undefined => {
    const list = byAgent.get(agent);
    if (!list) return undefined;
    let found: AttemptWindow | undefined;
    for (const w of list) {
      if (w.start > ts) break;
      if (ts > w.end) continue;
      if (trial !== null && w.trial !== trial) continue;
      if (gpu !== null && w.gpus.length > 0 && !w.gpus.includes(gpu)) continue;
      found = w;
    }
    return found;
  };

  /** The trial a GPU entry belongs to; "other" for another study's trial; null when idle. */
  const ownerOf = (agent: string, g: GpuSample, ts: number): string | "other" | null => {
    if (g.study !== null) return g.study === study && g.trial !== null ? g.trial : "other";
    if (tagging.has(agent)) return null;
    return windowAt(agent, g.index, ts, null)?.trial ?? null;
  };

  // Per message: its entries grouped by owning trial (most messages hold one or a few trials).
  const owned = new Map<string, GpuSample[]>();
  for (const m of gpuMsgs) {
    const w = (gpuInterval.get(m.agent) ?? fallbackMs) / 1000;
    agentGpus.set(m.agent, Math.max(agentGpus.get(m.agent) ?? 0, m.gpus.length));
    const tracked = studyAgents.has(m.agent) && inWindow(m.ts);
    const acc = tracked ? entry(agentAcc, m.agent, () => ({ observed: 0, busy: 0, other: 0, idle: 0 })) : undefined;
    owned.clear();
    for (const g of m.gpus) {
      const owner = ownerOf(m.agent, g, m.ts);
      if (acc) {
        acc.observed += w;
        if (owner === null) acc.idle += w;
        else if (owner === "other") acc.other += w;
        else acc.busy += w;
      }
      if (owner !== null && owner !== "other") entry(owned, owner, () => []).push(g);
    }
    for (const [owner, list] of owned) {
      const t = trialAcc(owner);
      t.sampledGpuSeconds += w * list.length;
      widen(t.anyRange, m.agent, m.ts);
      if (m.fake && haveEvents) {
        // Without the events we cannot tell warm-up from work: then the samples stay.
        const first = windowAt(m.agent, null, m.ts, owner)?.firstReport ?? firstReportOfTrial.get(owner) ?? null;
        if (first === null || m.ts < first) continue;
      }
      t.maxTogether = Math.max(t.maxTogether, list.length);
      widen(t.usedRange, m.agent, m.ts);
      const gpus = entry(t.perGpu, m.agent, () => new Map());
      for (const g of list) {
        t.usedSamples += 1;
        let pg = gpus.get(g.index);
        if (!pg) {
          pg = { agent: m.agent, gpu: g.index, all: [], together: [] };
          gpus.set(g.index, pg);
        }
        if (finite(g.utilizationGpu)) {
          t.util.push(g.utilizationGpu);
          pg.all.push(g.utilizationGpu);
          if (list.length >= 2) pg.together.push(g.utilizationGpu);
        }
        if (finite(g.memoryUsedMiB)) {
          if (t.memHigh === null || g.memoryUsedMiB > t.memHigh) t.memHigh = g.memoryUsedMiB;
          if (finite(g.memoryTotalMiB) && g.memoryTotalMiB > 0) {
            const share = g.memoryUsedMiB / g.memoryTotalMiB;
            if (t.memShare === null || share > t.memShare) {
              t.memShare = share;
              t.memTotal = g.memoryTotalMiB;
            }
          }
        }
      }
    }
  }

  // Host samples per agent.
  const hostByAgent = new Map<string, Extract<Telemetry, { type: "host" }>[]>();
  for (const h of hostMsgs) {
    entry(hostByAgent, h.agent, () => []).push(h);
  }
  const coresOf = (agent: string): number | null => {
    const list = hostByAgent.get(agent);
    const last = list?.[list.length - 1];
    if (last && last.cpuCores > 0) return last.cpuCores;
    const ad = adverts.get(agent);
    return ad && ad.host.cpuCores > 0 ? ad.host.cpuCores : null;
  };
  const gpusOf = (agent: string): number | null => {
    const n = Math.max(agentGpus.get(agent) ?? 0, adverts.get(agent)?.gpus.length ?? 0);
    return n > 0 ? n : null;
  };

  const trialStats: TrialStats[] = [];
  for (const rec of state.trials.values()) {
    if (rec.createdAt === null) continue;
    trialStats.push(
      trialStatsOf(rec, trials.get(rec.trial), {
        study,
        windows: byTrial.get(rec.trial) ?? [],
        hostByAgent,
        hostInterval,
        coresOf,
        gpusOf,
        throughput: throughput.get(rec.trial),
        numWorkers: workers.get(rec.trial),
        waitCpu: waitCpu.get(rec.trial),
      }),
    );
  }

  // Idle accounting and gaps between trials, per agent.
  const agents: AgentIdleStats[] = [];
  for (const agent of [...studyAgents].sort()) {
    const acc = agentAcc.get(agent) ?? { observed: 0, busy: 0, other: 0, idle: 0 };
    const gapList: number[] = [];
    const perGpu = new Map<number, AttemptWindow[]>();
    for (const w of byAgent.get(agent) ?? []) {
      for (const g of w.gpus.length > 0 ? w.gpus : [0]) {
        entry(perGpu, g, () => []).push(w);
      }
    }
    for (const list of perGpu.values()) {
      list.sort((a, b) => a.start - b.start);
      for (let i = 1; i < list.length; i++) {
        const gap = ((list[i] as AttemptWindow).start - (list[i - 1] as AttemptWindow).end) / 1000;
        if (gap > 0) gapList.push(gap);
      }
    }
    const totalS = gapList.reduce((s, x) => s + x, 0);
    agents.push({
      agent,
      gpus: gpusOf(agent) ?? 0,
      observedGpuSeconds: acc.observed,
      busyGpuSeconds: acc.busy,
      otherGpuSeconds: acc.other,
      idleGpuSeconds: acc.idle,
      idleShare: acc.observed > 0 ? acc.idle / acc.observed : 0,
      gaps: {
        count: gapList.length,
        totalS,
        meanS: gapList.length ? totalS / gapList.length : 0,
        maxS: gapList.length ? Math.max(...gapList) : 0,
      },
      pricePerGpuHour: adverts.get(agent)?.pricePerGpuHour ?? null,
    });
  }

  return {
    trials: trialStats,
    agents,
    window: { from, to },
    telemetry: {
      gpuMessages: gpuMsgs.length,
      hostMessages: hostMsgs.length,
      from: gpuMsgs[0]?.ts ?? hostMsgs[0]?.ts ?? null,
      to: Math.max(gpuMsgs[gpuMsgs.length - 1]?.ts ?? 0, hostMsgs[hostMsgs.length - 1]?.ts ?? 0) || null,
    },
  };
}

interface TrialContext {
  study: string;
  windows: AttemptWindow[];
  hostByAgent: Map<string, Extract<Telemetry, { type: "host" }>[]>;
  hostInterval: Map<string, number>;
  coresOf(agent: string): number | null;
  gpusOf(agent: string): number | null;
  throughput: { name: string; sum: number; n: number } | undefined;
  numWorkers: number | undefined;
  waitCpu: { busy: number; wait: number } | undefined;
}

function trialStatsOf(rec: TrialRecord, acc: TrialAcc | undefined, c: TrialContext): TrialStats {
  const agents = [...new Set([...c.windows.map((w) => w.agent), ...(acc ? acc.anyRange.keys() : [])])];
  const gpuCount = Math.max(acc?.maxTogether ?? 0, ...c.windows.map((w) => w.gpus.length), 0);
  const gpus: TrialGpuStats[] = [];
  if (acc) {
    for (const pg of [...acc.perGpu.values()].flatMap((m) => [...m.values()])) {
      const xs = gpuCount >= 2 ? pg.together : pg.all;
      gpus.push({
        agent: pg.agent,
        gpu: pg.gpu,
        samples: xs.length,
        meanUtilization: xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : null,
      });
    }
    gpus.sort((a, b) => a.agent.localeCompare(b.agent) || a.gpu - b.gpu);
  }

  // Host CPU while the trial ran, and the trial's own: host samples of its agents inside the time its
  // samples cover (a host sample describes the interval before it, hence the interval's slack at the
  // end). The trial's own CPU is the entry its agent made for it in each host sample.
  let cpuSum = 0;
  let cpuN = 0;
  let ownSum = 0;
  let ownMax = 0;
  let ownN = 0;
  const ranges = new Map(acc && acc.usedRange.size > 0 ? acc.usedRange : acc?.anyRange);
  if (ranges.size === 0) {
    for (const w of c.windows) {
      widen(ranges, w.agent, w.start);
      widen(ranges, w.agent, w.end);
    }
  }
  for (const [agent, [lo, hi]] of ranges) {
    const slack = c.hostInterval.get(agent) ?? 5000;
    for (const h of c.hostByAgent.get(agent) ?? []) {
      if (h.ts < lo || h.ts > hi + slack) continue;
      if (finite(h.cpuLoadPercent)) {
        cpuSum += h.cpuLoadPercent;
        cpuN += 1;
      }
      if (h.trials === undefined) continue;
      // Several entries for one trial in one sample (two attempts overlapping on one agent): summed.
      let own: number | null = null;
      for (const e of h.trials)
        if (e.study === c.study && e.trial === rec.trial && finite(e.cpuCores)) own = (own ?? 0) + e.cpuCores;
      // No entry: the trial had not started or had ended within that interval; not a zero.
      if (own === null) continue;
      ownSum += own;
      ownN += 1;
      if (own > ownMax) ownMax = own;
    }
  }
  const mainAgent = agents[0];
  const wait = rec.dataWaitS;
  const compute = rec.computeS;
  const t = c.throughput;
  const lastWorkers = rec.lastMetrics.num_workers;
  return {
    study: c.study,
    trial: rec.trial,
    phase: rec.phase,
    params: rec.params,
    agents,
    gpuCount,
    samples: acc?.usedSamples ?? 0,
    sampledGpuSeconds: acc?.sampledGpuSeconds ?? 0,
    utilization: acc ? distribution(acc.util) : null,
    memoryHighWaterMiB: acc?.memHigh ?? null,
    memoryTotalMiB: acc?.memTotal ?? null,
    memoryHighWaterShare: acc?.memShare ?? null,
    gpus,
    dataWaitS: wait,
    computeS: compute,
    dataWaitShare: wait + compute > 0 ? wait / (wait + compute) : null,
    throughput: t ? { name: t.name, value: t.sum / t.n } : lastThroughput(rec),
    numWorkers: c.numWorkers ?? (finite(lastWorkers) ? lastWorkers : null),
    trialCpu: ownN > 0 ? { meanCores: ownSum / ownN, maxCores: ownMax, samples: ownN } : null,
    waitHostCpuPercent: c.waitCpu && c.waitCpu.wait > 0 ? (100 * c.waitCpu.busy) / c.waitCpu.wait : null,
    batchSize:
      numberParam(rec.params, ["batch_size", "batch-size", "batchsize", "bs"]) ??
      (finite(rec.lastMetrics.batch_size) ? rec.lastMetrics.batch_size : null),
    host: {
      cores: mainAgent !== undefined ? c.coresOf(mainAgent) : null,
      gpus: mainAgent !== undefined ? c.gpusOf(mainAgent) : null,
      cpuMeanPercent: cpuN > 0 ? cpuSum / cpuN : null,
      samples: cpuN,
    },
  };
}

function lastThroughput(rec: TrialRecord): { name: string; value: number } | null {
  for (const [k, v] of Object.entries(rec.lastMetrics)) if (THROUGHPUT.test(k) && finite(v)) return { name: k, value: v };
  return null;
}
