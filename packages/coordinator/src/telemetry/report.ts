import type { AgentAdvert, Telemetry, TrialEvent } from "@rung/protocol";
import { rungMilestones } from "../scheduling/index.js";
import type { StudySpec } from "../study/index.js";
import {
  budgetText,
  budgetUse,
  failureSummary,
  type PhaseCounts,
  packingSummary,
  rungFunnel,
  StudyState,
  studyFailures,
  type TrialFailure,
  type TrialRecord,
} from "../study/index.js";
import {
  type AgentIdleStats,
  compareFindings,
  compileDiagnosisOptions,
  type DiagnosisOptions,
  type DiagnosisThresholds,
  type Distribution,
  diagnose,
  type Finding,
} from "./bottleneck.js";
import { joinTelemetry } from "./join.js";

/**
 * `rung study report`: one document per study — leaderboard, rung funnel, where the GPU time went,
 * GPU-hours and cost, and the diagnosis, worst first. `buildStudyReport` is pure (study, samples and
 * adverts in, JSON out); the renderers turn the JSON into Markdown (for a pull request) or plain text.
 */

export const REPORT_VERSION = 1;

/** What `buildStudyReport` needs of a study: `LoadedStudy` fits. */
export interface ReportableStudy {
  readonly record: { readonly state: string };
  readonly spec: StudySpec;
  readonly state: StudyState;
  readonly planned: number;
}

export interface StudyReportOptions {
  /** The study's raw events (see `JoinOptions.events`); without them warm-up cannot be told apart. */
  readonly events?: readonly TrialEvent[];
  /** The end of a study still running. Default `Date.now()`. */
  readonly now?: number;
  readonly diagnosis?: DiagnosisOptions;
  /** Leaderboard length. Default 10. */
  readonly top?: number;
  /** Bytes of the study's snapshots still in the checkpoint bucket; null when it was not read. */
  readonly checkpointBytes?: number | null;
}

/** The study's checkpoints: what they cost in storage and what resuming from them saved. */
export interface CheckpointSummary {
  /** Snapshots stored over the study (the `checkpoint` events). */
  readonly stored: number;
  /** Bytes still in the bucket (after retention); null when unknown. */
  readonly storedBytes: number | null;
  /** Attempts started from a checkpoint. */
  readonly resumedAttempts: number;
  /** GPU time the attempts before them had spent to reach those checkpoints (StudyState.resumeSavings). */
  readonly gpuSecondsSaved: number;
  /** Attempts preempted (their box shut down) and moved on. */
  readonly preemptedAttempts: number;
}

export interface LeaderboardRow {
  readonly rank: number;
  readonly trial: string;
  readonly value: number | null;
  readonly t: number | null;
  readonly state: string;
  readonly params: Readonly<Record<string, string | number | boolean>>;
}

/** GPU-seconds by where they went. `idleGpuS` is null without telemetry. */
export interface GpuTime {
  readonly completedGpuS: number;
  readonly stoppedGpuS: number;
  /** Attempts that failed or were lost (retried or not), and trials that failed for good. */
  readonly failedGpuS: number;
  readonly cancelledGpuS: number;
  readonly runningGpuS: number;
  readonly idleGpuS: number | null;
  readonly totalGpuS: number;
}

export interface AgentCost {
  readonly agent: string;
  readonly busyGpuHours: number;
  readonly idleGpuHours: number;
  readonly pricePerGpuHour: number | null;
  readonly cost: number | null;
}

export interface CostSummary {
  readonly gpuHours: number;
  /** Sum over the agents whose price is known; null when none is. */
  readonly total: number | null;
  /** Agents that advertised no price (or whose advert is gone): their hours are not in `total`. */
  readonly unpricedAgents: readonly string[];
  readonly agents: readonly AgentCost[];
}

export interface ReportTrial {
  readonly trial: string;
  readonly phase: string;
  readonly params: Readonly<Record<string, string | number | boolean>>;
  readonly bestValue: number | null;
  readonly lastT: number | null;
  readonly attempts: number;
  /** PBT: each time it went on from another trial's checkpoint (at its time attribute `t`), with which parameters. */
  readonly lineage: readonly {
    readonly t: number;
    readonly donor: string;
    readonly params: Readonly<Record<string, string | number | boolean>>;
  }[];
  readonly agents: readonly string[];
  readonly gpuSeconds: number;
  readonly samples: number;
  readonly utilization: Distribution | null;
  readonly memoryHighWaterMiB: number | null;
  readonly memoryHighWaterShare: number | null;
  readonly dataWaitShare: number | null;
  readonly throughput: { readonly name: string; readonly value: number } | null;
  readonly numWorkers: number | null;
  readonly hostCpuMeanPercent: number | null;
}

export interface StudyReport {
  readonly v: typeof REPORT_VERSION;
  readonly study: string;
  readonly state: string;
  readonly generatedAt: string;
  readonly scheduler: string;
  readonly metric: { readonly name: string; readonly mode: string };
  readonly timeAttr: string;
  readonly planned: number;
  readonly counts: PhaseCounts;
  readonly window: { readonly from: string | null; readonly to: string | null; readonly seconds: number };
  readonly telemetry: {
    readonly gpuMessages: number;
    readonly hostMessages: number;
    /** Share of the study's window that GPU samples cover, 0..1; null without a window. */
    readonly coverage: number | null;
  };
  readonly best: LeaderboardRow | null;
  readonly leaderboard: readonly LeaderboardRow[];
  readonly funnel: readonly { readonly milestone: number; readonly trials: number }[];
  readonly gpuTime: GpuTime;
  readonly cost: CostSummary;
  /** Spent against the study's budget (`budgetText`); absent without a budget. */
  readonly budget?: string;
  /** What `packing: auto` chose and why (`packingSummary`); absent without packing. */
  readonly packing?: string;
  readonly findings: readonly Finding[];
  readonly trials: readonly ReportTrial[];
  /** Every failed trial: the first line of its reason and the end of its log. */
  readonly failures: readonly TrialFailure[];
  readonly checkpoints: CheckpointSummary;
  readonly agents: readonly AgentIdleStats[];
  readonly thresholds: DiagnosisThresholds;
}

const num = (x: number | null | undefined): number | null => (typeof x === "number" && Number.isFinite(x) ? x : null);
const iso = (ts: number | null): string | null => (ts === null ? null : new Date(ts).toISOString());

/** One finding for the study's failed trials: how many, the commonest first line, the GPU time they used. */
function failedTrialsFinding(failed: readonly TrialRecord[], state: StudyState, now: number): Finding {
  const created = [...state.trials.values()].filter((t) => t.createdAt !== null).length;
  const reasons = new Map<string, number>();
  for (const t of failed) {
    const first = failureSummary(t)?.reason ?? "failed";
    const key = first.replace(/^t\d+ /, "").replace(/attempt \d+/, "attempt N");
    reasons.set(key, (reasons.get(key) ?? 0) + 1);
  }
  const [common = "failed", n = failed.length] = [...reasons.entries()].sort((a, b) => b[1] - a[1])[0] ?? [];
  const gpuS = failed.reduce((sum, t) => sum + t.attempts.reduce((s, a) => s + StudyState.attemptGpuSeconds(a, now), 0), 0);
  const all = failed.length === created;
  return {
    kind: "trials-failed",
    severity: all || failed.length * 4 >= created ? "critical" : "warning",
    trial: failed.length === 1 ? (failed[0] as TrialRecord).trial : null,
    agent: null,
    summary: `${failed.length} of ${created} trial(s) failed; the commonest reason (${n}×): ${common}`,
    short: `${failed.length} failed`,
    evidence: { failed: failed.length, trials: created, commonReason: common, gpuSeconds: Math.round(gpuS) },
    advice: [
      `read each failed trial's reason and log tail below, and its whole output with "rung logs ${(failed[0] as TrialRecord).trial}"`,
      "a trial that fails at start on every agent is a spec or environment problem: try it once by hand in the agent's --workdir",
    ],
    wastedGpuSeconds: gpuS,
  };
}

/**
 * One security finding per agent that published events about attempts it does not hold: what kinds,
 * about which trials, the first reason. None of them was folded (StudyState), so the leaderboard and
 * the trials' ends are as their real agents and the coordinator wrote them.
 */
function forgedEventsFindings(state: StudyState): Finding[] {
  const out: Finding[] = state.contests.map((c) => ({
    kind: "forged-events" as const,
    severity: "critical" as const,
    trial: c.trial,
    agent: null,
    summary: `agents ${c.agents[0]} and ${c.agents[1]} both claimed ${c.trial} attempt ${c.attempt} with its order's proof — one of them took the order and handed it back to claim a later delivery; the attempt was voided and its trial given a fresh order`,
    short: `${c.trial} attempt ${c.attempt} contested`,
    evidence: { trial: c.trial, attempt: c.attempt, agents: c.agents.join(" ") },
    advice: [
      `one of ${c.agents.join(" and ")} is not what it claims: check both boxes, and remove the user of the one you cannot vouch for from auth.conf`,
    ],
    wastedGpuSeconds: 0,
  }));
  for (const [agent, total] of [...state.forgeriesBy.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))) {
    const mine = state.forgeries.filter((f) => f.agent === agent);
    const kinds = new Map<string, number>();
    for (const f of mine) kinds.set(f.type, (kinds.get(f.type) ?? 0) + 1);
    const trials = [...new Set(mine.map((f) => f.trial))].sort();
    const kindText = [...kinds.entries()].map(([k, n]) => `${n} ${k}`).join(", ");
    const first = mine[0]?.why ?? `agent ${agent} published events it may not`;
    out.push({
      kind: "forged-events",
      severity: "critical",
      trial: trials.length === 1 ? (trials[0] as string) : null,
      agent,
      summary: `agent ${agent} published ${total} event(s) about trials it does not run (${kindText}) for ${trials.join(", ")}; none was counted — e.g. ${first}`,
      short: `${total} forged`,
      evidence: { events: total, trials: trials.join(" "), kinds: kindText },
      advice: [
        `treat the credentials of agent ${agent} as stolen: remove its user from auth.conf (rung auth init, then reload the server) and stop its box`,
        "the leaderboard and the trials' ends shown here count only events from each attempt's real claimant and the coordinator",
      ],
      wastedGpuSeconds: 0,
    });
  }
  return out;
}

function checkpointSummary(state: StudyState, storedBytes: number | null): CheckpointSummary {
  let stored = 0;
  let resumed = 0;
  let saved = 0;
  let preempted = 0;
  for (const t of state.trials.values()) {
    stored += t.checkpoints.length;
    const s = StudyState.resumeSavings(t);
    resumed += s.resumed;
    saved += s.gpuSeconds;
    preempted += t.attempts.filter((a) => a.status === "preempted").length;
  }
  return {
    stored,
    storedBytes,
    resumedAttempts: resumed,
    gpuSecondsSaved: Math.round(saved * 10) / 10,
    preemptedAttempts: preempted,
  };
}

function trialState(t: TrialRecord): string {
  const stopped = StudyState.stoppedLabel(t);
  if (stopped !== null) return stopped;
  return StudyState.phaseOf(t) === "paused" ? `paused@${t.pausedAt}` : t.phase;
}

/** Milestones worth counting trials at: the ASHA rungs of bracket 0 and max_t, else the times reached. */
function funnelMilestones(spec: StudySpec, state: StudyState): number[] {
  const s = spec.scheduler;
  if ((s.type === "asha" || s.type === "hyperband") && s.maxT > 0) {
    const m = rungMilestones(s.gracePeriod, s.reductionFactor, s.maxT, 0);
    if (m.length === 0 || (m[m.length - 1] as number) < s.maxT) m.push(s.maxT);
    return m;
  }
  const seen = [...new Set([...state.trials.values()].map((t) => t.lastT).filter((x): x is number => num(x) !== null))].sort(
    (a, b) => a - b,
  );
  if (seen.length <= 10) return seen;
  return Array.from({ length: 10 }, (_, i) => seen[Math.round((i * (seen.length - 1)) / 9)] as number);
}

function gpuTimeOf(state: StudyState, idleGpuS: number | null, now: number): GpuTime {
  let completed = 0;
  let stopped = 0;
  let failed = 0;
  let cancelled = 0;
  let running = 0;
  for (const t of state.trials.values()) {
    for (const a of t.attempts) {
      const s = StudyState.attemptGpuSeconds(a, now);
      if (a.status === "failed" || a.status === "lost" || a.status === "rejected" || t.phase === "failed") failed += s;
      else if (t.phase === "completed") completed += s;
      else if (t.phase === "stopped") stopped += s;
      else if (t.phase === "cancelled") cancelled += s;
      else running += s;
    }
  }
  const total = completed + stopped + failed + cancelled + running + (idleGpuS ?? 0);
  return {
    completedGpuS: completed,
    stoppedGpuS: stopped,
    failedGpuS: failed,
    cancelledGpuS: cancelled,
    runningGpuS: running,
    idleGpuS: idleGpuS,
    totalGpuS: total,
  };
}

function budgetOf(spec: StudySpec, state: StudyState, adverts: readonly AgentAdvert[], now: number): { budget?: string } {
  const price = new Map(adverts.map((a) => [a.agent, a.pricePerGpuHour] as const));
  const use = budgetUse(spec, state, now, (agent) => price.get(agent) ?? null);
  return use === null ? {} : { budget: budgetText(use) };
}

function packingOf(spec: StudySpec, state: StudyState): { packing?: string } {
  const text = packingSummary(spec.packing, state.trials.values());
  return text === null ? {} : { packing: text };
}

function costOf(state: StudyState, agents: readonly AgentIdleStats[], adverts: readonly AgentAdvert[], now: number): CostSummary {
  const busy = new Map<string, number>();
  for (const t of state.trials.values())
    for (const a of t.attempts)
      if (a.agent !== null) busy.set(a.agent, (busy.get(a.agent) ?? 0) + StudyState.attemptGpuSeconds(a, now));
  const idle = new Map(agents.map((a) => [a.agent, a.idleGpuSeconds]));
  const price = new Map<string, number | null>(adverts.map((a) => [a.agent, a.pricePerGpuHour]));
  for (const a of agents) if (a.pricePerGpuHour !== null) price.set(a.agent, a.pricePerGpuHour);
  const names = [...new Set([...busy.keys(), ...idle.keys()])].sort();
  let total: number | null = null;
  let hours = 0;
  const unpriced: string[] = [];
  const rows: AgentCost[] = names.map((agent) => {
    const busyH = (busy.get(agent) ?? 0) / 3600;
    const idleH = (idle.get(agent) ?? 0) / 3600;
    const p = price.get(agent) ?? null;
    const cost = p === null ? null : (busyH + idleH) * p;
    hours += busyH + idleH;
    if (cost === null) unpriced.push(agent);
    else total = (total ?? 0) + cost;
    return { agent, busyGpuHours: busyH, idleGpuHours: idleH, pricePerGpuHour: p, cost };
  });
  return { gpuHours: hours, total, unpricedAgents: unpriced, agents: rows };
}

export function buildStudyReport(
  study: ReportableStudy,
  telemetry: readonly Telemetry[],
  adverts: readonly AgentAdvert[],
  options: StudyReportOptions = {},
): StudyReport {
  const now = options.now ?? Date.now();
  const { spec, state } = study;
  const thresholds = compileDiagnosisOptions(options.diagnosis);
  const joined = joinTelemetry(state, telemetry, { events: options.events, adverts, now });
  const failed = [...state.trials.values()].filter((t) => t.createdAt !== null && StudyState.phaseOf(t) === "failed");
  const findings = [
    ...diagnose(joined, thresholds),
    ...(failed.length > 0 ? [failedTrialsFinding(failed, state, now)] : []),
    ...forgedEventsFindings(state),
  ].sort(compareFindings);
  const top = options.top ?? 10;

  const created = [...state.trials.values()].filter((t) => t.createdAt !== null);
  const leaderboard: LeaderboardRow[] = state
    .leaderboard()
    .filter((t) => t.createdAt !== null)
    .slice(0, top)
    .map((t, i) => ({
      rank: i + 1,
      trial: t.trial,
      value: num(t.bestValue),
      t: num(t.bestT),
      state: trialState(t),
      params: t.params,
    }));
  const bestRec = state.best();
  const best = bestRec ? (leaderboard.find((r) => r.trial === bestRec.trial) ?? null) : null;

  const haveTelemetry = joined.telemetry.gpuMessages > 0;
  const idleGpuS = haveTelemetry ? joined.agents.reduce((s, a) => s + a.idleGpuSeconds, 0) : null;
  const { from, to } = joined.window;
  const seconds = from !== null && to !== null ? Math.max(0, to - from) / 1000 : 0;
  let coverage: number | null = null;
  if (from !== null && to !== null && to > from) {
    const tf = joined.telemetry.from;
    const tt = joined.telemetry.to;
    coverage = tf === null || tt === null ? 0 : Math.max(0, Math.min(tt, to) - Math.max(tf, from)) / (to - from);
  }

  const statsByTrial = new Map(joined.trials.map((t) => [t.trial, t]));
  const trials: ReportTrial[] = created.map((t) => {
    const s = statsByTrial.get(t.trial);
    return {
      trial: t.trial,
      phase: t.phase,
      params: t.params,
      bestValue: num(t.bestValue),
      lastT: num(t.lastT),
      attempts: t.attempts.length,
      lineage: t.lineage.map((l) => ({ t: l.t, donor: l.donor, params: l.params })),
      agents: s?.agents ?? [],
      gpuSeconds: t.attempts.reduce((sum, a) => sum + StudyState.attemptGpuSeconds(a, now), 0),
      samples: s?.samples ?? 0,
      utilization: s?.utilization ?? null,
      memoryHighWaterMiB: s?.memoryHighWaterMiB ?? null,
      memoryHighWaterShare: s?.memoryHighWaterShare ?? null,
      dataWaitShare: s?.dataWaitShare ?? null,
      throughput: s?.throughput ?? null,
      numWorkers: s?.numWorkers ?? null,
      hostCpuMeanPercent: s?.host.cpuMeanPercent ?? null,
    };
  });

  return {
    v: REPORT_VERSION,
    study: state.study,
    state: study.record.state,
    generatedAt: new Date(now).toISOString(),
    scheduler: spec.scheduler.type,
    metric: { name: spec.metric.name, mode: spec.metric.mode },
    timeAttr: spec.scheduler.timeAttr,
    planned: study.planned,
    counts: state.counts(),
    window: { from: iso(from), to: iso(to), seconds },
    telemetry: { gpuMessages: joined.telemetry.gpuMessages, hostMessages: joined.telemetry.hostMessages, coverage },
    best,
    leaderboard,
    funnel: rungFunnel(state, funnelMilestones(spec, state)),
    gpuTime: gpuTimeOf(state, idleGpuS, now),
    cost: costOf(state, joined.agents, adverts, now),
    ...budgetOf(spec, state, adverts, now),
    ...packingOf(spec, state),
    findings,
    trials,
    failures: studyFailures(state),
    checkpoints: checkpointSummary(state, options.checkpointBytes ?? null),
    agents: joined.agents,
    thresholds,
  };
}
