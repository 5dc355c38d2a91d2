import type { AgentAdvert, GpuSample, TrialEvent } from "@rung/protocol";
import {
  type EarlyStoppingSavings,
  earlyStoppingSavings,
  type HistoryRow,
  type ParamSpec,
  type StudySpec,
  StudyState,
  type TrialRecord,
} from "../study/index.js";
import type { StudyReport } from "../telemetry/index.js";

/**
 * What the web pages (`rung ui`, `rung study report --html`) show, as plain JSON: the study report
 * (telemetry/report.ts) plus what a picture needs and the report leaves out — each trial's place on
 * the rung ladder, where it was stopped, the kind of each parameter axis, and the learning curves as
 * points. Pure: the page's browser code only draws what this says.
 */

export const STUDY_PAGE_VERSION = 1;

/** How a parameter axis is drawn in the parallel-coordinates plot. */
export type ParamAxisKind = "linear" | "log" | "choice";

export interface StudyPageTrial {
  readonly trial: string;
  /** The phase as a word (`completed`, `stopped@3`, `running` …), as the leaderboard says it. */
  readonly state: string;
  readonly phase: string;
  readonly params: Readonly<Record<string, string | number | boolean>>;
  readonly bestValue: number | null;
  readonly lastT: number | null;
  readonly attempts: number;
  /** The time attribute at which a STOP ended it early (dimmed in the curves from there), else null. */
  readonly stoppedAt: number | null;
  readonly stoppedBy: string | null;
  readonly agent: string | null;
  readonly gpuSeconds: number;
}

/** One result of a curve: trial, time attribute, metric (null for NaN). */
export type CurvePoint = readonly [trial: string, t: number, value: number | null];

export interface StudyPageSummary {
  readonly v: typeof STUDY_PAGE_VERSION;
  readonly study: string;
  /** The state as `rung study status` says it (`detached` while no coordinator is attached). */
  readonly state: string;
  readonly metric: { readonly name: string; readonly mode: string };
  readonly timeAttr: string;
  readonly scheduler: string;
  /** The rung milestones of the time attribute (ASHA's rungs, else the funnel's milestones). */
  readonly rungs: readonly number[];
  readonly maxT: number | null;
  readonly params: readonly { readonly name: string; readonly kind: ParamAxisKind; readonly values?: readonly string[] }[];
  readonly trials: readonly StudyPageTrial[];
  readonly savings: EarlyStoppingSavings;
  readonly report: StudyReport;
  /** The diagnosis and idle time cover this much telemetry before the newest sample; null: the whole study. */
  readonly telemetryWindowMs: number | null;
  readonly generatedAt: string;
}

/** The whole page as one document: the summary and every curve point (the HTML report embeds this). */
export interface StudyPageData {
  readonly summary: StudyPageSummary;
  readonly points: readonly CurvePoint[];
}

function axisKind(p: ParamSpec | undefined, values: readonly (string | number | boolean)[]): ParamAxisKind {
  if (p?.kind === "loguniform" || p?.kind === "qloguniform") return "log";
  if (p?.kind === "grid" || p?.kind === "choice" || p?.kind === "constant") {
    return values.every((v) => typeof v === "number") && p.kind !== "constant" ? "linear" : "choice";
  }
  return values.every((v) => typeof v === "number") ? "linear" : "choice";
}

function trialWord(t: TrialRecord): string {
  const stopped = StudyState.stoppedLabel(t);
  if (stopped !== null) return stopped;
  const phase = StudyState.phaseOf(t);
  return phase === "paused" ? `paused@${t.pausedAt}` : phase;
}

const finite = (x: number | null | undefined): number | null => (typeof x === "number" && Number.isFinite(x) ? x : null);

/** Shapes the report and the study's state into what the study page draws. */
export function studyPageSummary(
  report: StudyReport,
  state: StudyState,
  spec: StudySpec,
  stateWord: string,
  now: number,
  telemetryWindowMs: number | null = null,
): StudyPageSummary {
  const created = [...state.trials.values()].filter((t) => t.createdAt !== null);
  const s = spec.scheduler as { type: string; maxT?: number };
  const maxT = typeof s.maxT === "number" && s.maxT > 0 ? s.maxT : null;
  const params = Object.keys(spec.search.space)
    .filter((name) => spec.search.space[name]?.kind !== "constant")
    .map((name) => {
      const values = created.map((t) => t.params[name]).filter((v) => v !== undefined);
      const kind = axisKind(spec.search.space[name], values);
      if (kind !== "choice") return { name, kind };
      const p = spec.search.space[name];
      const declared = p && (p.kind === "grid" || p.kind === "choice") ? p.values.map(String) : [];
      return { name, kind, values: [...new Set([...declared, ...values.map(String)])] };
    });
  const trials: StudyPageTrial[] = created.map((t) => ({
    trial: t.trial,
    state: trialWord(t),
    phase: StudyState.phaseOf(t),
    params: t.params,
    bestValue: finite(t.bestValue),
    lastT: finite(t.lastT),
    attempts: t.attempts.length,
    stoppedAt: t.stop && t.phase === "stopped" ? t.stop.t : null,
    stoppedBy: t.stop?.by ?? null,
    agent: t.attempts.at(-1)?.agent ?? null,
    gpuSeconds: t.attempts.reduce((sum, a) => sum + StudyState.attemptGpuSeconds(a, now), 0),
  }));
  return {
    v: STUDY_PAGE_VERSION,
    study: report.study,
    state: stateWord,
    metric: report.metric,
    timeAttr: report.timeAttr,
    scheduler: report.scheduler,
    rungs: report.funnel.map((f) => f.milestone),
    maxT,
    params,
    trials,
    savings: earlyStoppingSavings(state, maxT, now),
    report: { ...report, state: stateWord },
    telemetryWindowMs,
    generatedAt: new Date(now).toISOString(),
  };
}

/** History rows as curve points of the study's metric (rows without the time attribute or the metric are left out). */
export function curvePoints(rows: Iterable<HistoryRow>, metric: string): CurvePoint[] {
  const out: CurvePoint[] = [];
  for (const r of rows) {
    const v = r.metrics[metric];
    if (r.t === null || v === undefined || !Number.isFinite(r.t)) continue;
    out.push([r.trial, r.t, finite(v)]);
  }
  return out;
}

/** One attempt of a trial as the trial page lists it. */
export interface TrialPageAttempt {
  readonly attempt: number;
  readonly status: string;
  readonly agent: string | null;
  readonly gpus: readonly number[];
  readonly queuedAt: number | null;
  readonly startedAt: number | null;
  readonly endedAt: number | null;
  readonly exitCode: number | null;
  readonly reason: string | null;
}

/** One event of a trial, in a line. */
export interface TrialPageEvent {
  readonly ts: number;
  readonly type: string;
  readonly attempt: number | null;
  readonly from: string;
  readonly text: string;
}

export interface TrialPageData {
  readonly study: string;
  readonly trial: string;
  readonly state: string;
  readonly metric: { readonly name: string; readonly mode: string };
  readonly timeAttr: string;
  readonly params: Readonly<Record<string, string | number | boolean>>;
  readonly bestValue: number | null;
  readonly endReason: string | null;
  readonly attempts: readonly TrialPageAttempt[];
  readonly events: readonly TrialPageEvent[];
  readonly points: readonly CurvePoint[];
  /** The end of its terminal output (escape sequences removed), and which attempt it is from. */
  readonly output: { readonly attempt: number | null; readonly text: string; readonly truncated: boolean };
  readonly rungs: readonly number[];
}

function eventText(e: TrialEvent): string {
  switch (e.type) {
    case "report":
      return Object.entries(e.metrics)
        .map(([k, v]) => `${k}=${Number.isInteger(v) ? v : Number(v).toPrecision(4)}`)
        .join(" ");
    case "decision":
      return `${e.decision} by ${e.by} at ${e.t}${e.rung === null || e.rung === undefined ? "" : ` (rung ${e.rung})`}`;
    case "finished":
      return `${e.status}${e.exitCode === null ? "" : `, exit ${e.exitCode}`}${e.reason ? ` — ${e.reason}` : ""}`;
    case "ended":
      return `${e.status}${e.reason ? ` — ${e.reason}` : ""}`;
    case "claimed":
    case "started":
      return `on ${e.agent} GPU ${e.gpus.join(",") || "-"}`;
    case "rejected":
      return `${e.reason}${"detail" in e && e.detail ? ` — ${e.detail}` : ""}`;
    default:
      return "";
  }
}

/** Terminal output as text for a web page: colours and cursor moves removed, each carriage-return redraw kept at its last state. */
export function terminalText(raw: string): string {
  const plain = raw
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, "")
    .replace(/\x1b\][^\x07]*(\x07|\x1b\\)/g, "")
    .replace(/\r\n/g, "\n");
  return plain
    .split("\n")
    .map(
      (line) =>
        line
          .split("\r")
          .filter((part) => part !== "")
          .at(-1) ?? "",
    )
    .join("\n");
}

/** The trial page: its record, its events (each with its publisher), its curve and its output's tail. */
export function trialPageData(
  state: StudyState,
  spec: StudySpec,
  trial: string,
  events: readonly { event: TrialEvent; from: string }[],
  output: TrialPageData["output"],
  rungs: readonly number[],
): TrialPageData | null {
  const t = state.trials.get(trial);
  if (!t || t.createdAt === null) return null;
  const rows = events.filter((e) => e.event.type === "report").map((e) => e.event as Extract<TrialEvent, { type: "report" }>);
  return {
    study: state.study,
    trial,
    state: trialWord(t),
    metric: { name: spec.metric.name, mode: spec.metric.mode },
    timeAttr: state.timeAttr,
    params: t.params,
    bestValue: finite(t.bestValue),
    endReason: t.endReason,
    attempts: t.attempts.map((a) => ({
      attempt: a.attempt,
      status: a.status,
      agent: a.agent,
      gpus: a.gpus,
      queuedAt: a.queuedAt,
      startedAt: a.startedAt,
      endedAt: a.endedAt,
      exitCode: a.exitCode,
      reason: a.reason,
    })),
    events: events.map(({ event: e, from }) => ({
      ts: e.ts,
      type: e.type,
      attempt: "attempt" in e && typeof e.attempt === "number" ? e.attempt : null,
      from,
      text: eventText(e),
    })),
    points: curvePoints(
      rows.map((r) => ({
        study: r.study,
        trial: r.trial,
        attempt: r.attempt,
        t: r.metrics[state.timeAttr] ?? null,
        metrics: r.metrics,
        ts: r.ts,
      })),
      spec.metric.name,
    ),
    output,
    rungs,
  };
}

/** One GPU as the mesh page shows it. */
export interface MeshPageGpu {
  readonly agent: string;
  readonly index: number;
  readonly name: string | null;
  readonly utilization: number | null;
  readonly memoryUsedMiB: number | null;
  readonly memoryTotalMiB: number | null;
  readonly powerW: number | null;
  readonly study: string | null;
  readonly trial: string | null;
  /** Share of the trial's time spent waiting for data (its latest report), 0..1. */
  readonly dataWaitShare: number | null;
  readonly sampledAt: number | null;
}

export interface MeshPageData {
  readonly agents: readonly {
    readonly agent: string;
    readonly state: string;
    readonly host: string;
    readonly gpus: number;
    readonly freeGpus: number;
    readonly pricePerGpuHour: number | null;
    readonly updatedAt: number;
    readonly fake: boolean;
  }[];
  readonly gpus: readonly MeshPageGpu[];
  /** GPU utilization over the last hour: one series per GPU (`agent/index`), bucketed. */
  readonly timeline: {
    readonly bucketMs: number;
    readonly start: number;
    readonly series: Readonly<Record<string, readonly (number | null)[]>>;
  };
  readonly generatedAt: string;
}

/** Adverts, each GPU's latest sample and the utilization timeline as the mesh page draws them. */
export function meshPageData(
  adverts: readonly AgentAdvert[],
  latest: ReadonlyMap<string, { ts: number; fake: boolean; gpus: readonly GpuSample[] }>,
  dataWait: (study: string, trial: string) => number | null,
  timeline: MeshPageData["timeline"],
  now: number,
): MeshPageData {
  const agents = [...adverts].sort((a, b) => a.agent.localeCompare(b.agent));
  const gpus: MeshPageGpu[] = [];
  for (const a of agents) {
    const sample = latest.get(a.agent);
    const byIndex = new Map((sample?.gpus ?? []).map((g) => [g.index, g]));
    for (const g of a.gpus) {
      const s = byIndex.get(g.index);
      const study = s?.study ?? null;
      const trial = s?.trial ?? null;
      gpus.push({
        agent: a.agent,
        index: g.index,
        name: g.name ?? null,
        utilization: s?.utilizationGpu ?? null,
        memoryUsedMiB: s?.memoryUsedMiB ?? null,
        memoryTotalMiB: s?.memoryTotalMiB ?? g.memoryTotalMiB ?? null,
        powerW: s?.powerW ?? null,
        study,
        trial,
        dataWaitShare: study && trial ? dataWait(study, trial) : null,
        sampledAt: sample?.ts ?? null,
      });
    }
  }
  return {
    agents: agents.map((a) => ({
      agent: a.agent,
      state: a.state,
      host: a.host.hostname,
      gpus: a.gpus.length,
      freeGpus: a.freeGpus,
      pricePerGpuHour: a.pricePerGpuHour,
      updatedAt: a.updatedAt,
      fake: latest.get(a.agent)?.fake ?? false,
    })),
    gpus,
    timeline,
    generatedAt: new Date(now).toISOString(),
  };
}
