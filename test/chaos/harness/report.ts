import { appendFileSync, mkdirSync } from "node:fs";
import type { TrialEvent } from "@rung/protocol";
import { HEARTBEAT_MS, RESULTS_DIR, RESULTS_FILE } from "./config.js";
import { addCounts, byWhere, countBy } from "./counts.js";
import type { TimedEvent } from "./events.js";
import { type Fault, timesToRecovery } from "./faults.js";
import type { AgentStopLine } from "./logs.js";
import type { ObservedProcess, TrialWatcher } from "./watcher.js";

/**
 * The account of a study after the faults, drawn from two independent sources — the study's event
 * stream (trials created, terminal `ended` events, attempts) and the processes /proc saw run — and the
 * row each scenario appends to test-results/chaos.jsonl (global-setup.ts prints the table).
 */

export interface ChaosRow {
  scenario: string;
  faults: string;
  trials: number;
  lost: number;
  duplicated: number;
  recovered: number;
  ttrMeanMs: number | null;
  ttrMaxMs: number | null;
  outcome: string;
  dropped: string;
  seconds: number;
  notes: string[];
}

export interface ChaosReport extends ChaosRow {
  events: TimedEvent[];
  endedTwice: string[];
  endedNever: string[];
  overlaps: { trial: string; attempts: [number, number]; ms: number }[];
  leftovers: ObservedProcess[];
  agentStops: AgentStopLine[];
  coordinatorDrops: Record<string, number>;
  readerDrops: Record<string, number>;
  ttr: (number | null)[];
  /** Ended event per trial (the last one). */
  ended: Map<string, Extract<TrialEvent, { type: "ended" }>>;
  attempts: Map<string, Set<number>>;
  watcher: TrialWatcher;
  strayTrials: Set<string>;
}

export interface FinishOptions {
  /** The faults, in words, for the table. */
  faults: string;
  /** How long to wait for the coordinator to end the study. Default 90 s. */
  timeoutMs?: number;
  /** Bad messages injected, by who should drop them (`coordinator events`, `agents orders` …): the
   * table shows dropped/injected for each. */
  injected?: Record<string, number>;
}

/** Everything the account is drawn from, gathered once every process of the scenario has stopped. */
export interface AccountInput {
  scenario: string;
  startedAt: number;
  /** The study's outcome in words: `completed`, `stopped`, `exit 1` … */
  outcome: string;
  options: FinishOptions;
  events: TimedEvent[];
  faults: Fault[];
  notes: string[];
  /** Trials a test forged events for (not the study's own): left out of the account. */
  strayTrials: Set<string>;
  watcher: TrialWatcher;
  agentStops: AgentStopLine[];
  coordinatorDrops: Record<string, number>;
  readerDrops: Record<string, number>;
}

export function accountFor(input: AccountInput): ChaosReport {
  const { events, faults, watcher, strayTrials, agentStops, coordinatorDrops, readerDrops } = input;
  const o = input.options;
  const created = new Set<string>();
  const endedCount = new Map<string, number>();
  const ended = new Map<string, Extract<TrialEvent, { type: "ended" }>>();
  const attempts = new Map<string, Set<number>>();
  const agentOf = new Map<string, string>();
  for (const { event: ev } of events) {
    if (strayTrials.has(ev.trial)) continue;
    if (ev.type === "created") created.add(ev.trial);
    if (ev.type === "ended") {
      endedCount.set(ev.trial, (endedCount.get(ev.trial) ?? 0) + 1);
      ended.set(ev.trial, ev);
    }
    if (ev.type === "claimed" || ev.type === "started" || ev.type === "finished") {
      const s = attempts.get(ev.trial) ?? new Set<number>();
      s.add(ev.attempt);
      attempts.set(ev.trial, s);
      agentOf.set(`${ev.trial}#${ev.attempt}`, ev.agent);
    }
  }
  const endedNever = [...created].filter((t) => !endedCount.has(t));
  const endedTwice = [...endedCount].filter(([, n]) => n > 1).map(([t]) => t);

  // Two attempts of one trial alive at once, less the time the older one's agent was frozen
  // (SIGSTOP): a frozen agent cannot act, and must kill its copy within a heartbeat of waking.
  const overlaps: ChaosReport["overlaps"] = [];
  const byTrial = new Map<string, { attempt: number; start: number; end: number }[]>();
  for (const w of watcher.windows().values()) {
    const list = byTrial.get(w.trial) ?? [];
    list.push(w);
    byTrial.set(w.trial, list);
  }
  for (const [trial, ws] of byTrial) {
    ws.sort((a, b) => a.attempt - b.attempt);
    for (let i = 0; i < ws.length; i++) {
      for (let j = i + 1; j < ws.length; j++) {
        const a = ws[i] as (typeof ws)[number];
        const b = ws[j] as (typeof ws)[number];
        const lo = Math.max(a.start, b.start);
        const hi = Math.min(a.end, b.end);
        if (hi <= lo) continue;
        let ms = hi - lo;
        const agent = agentOf.get(`${trial}#${a.attempt}`);
        for (const f of faults) {
          if (f.kind !== "SIGSTOP agent" || f.target !== agent) continue;
          const fl = Math.max(lo, f.at);
          const fh = Math.min(hi, f.clearedAt ?? Date.now());
          if (fh > fl) ms -= fh - fl;
        }
        if (ms > HEARTBEAT_MS) overlaps.push({ trial, attempts: [a.attempt, b.attempt], ms });
      }
    }
  }
  const duplicated = new Set([...endedTwice, ...overlaps.map((o) => o.trial)]);
  const recovered = [...created].filter((t) => {
    const e = ended.get(t);
    return e && (e.status === "completed" || e.status === "stopped") && (attempts.get(t)?.size ?? 0) > 1;
  });

  const ttr = timesToRecovery(faults, events);
  const measured = ttr.filter((x): x is number => x !== null);
  const leftovers = watcher.alive();
  const agentDrops = addCounts(...agentStops.map((s) => s.dropped));
  const reportLines = agentStops.reduce((n, a) => n + (a.counters.malformedReportLines ?? 0), 0);
  const droppedByWhere = addCounts(
    Object.fromEntries(Object.entries(byWhere(coordinatorDrops)).map(([k, n]) => [`coordinator ${k}`, n])),
    Object.fromEntries(Object.entries(byWhere(agentDrops)).map(([k, n]) => [`agents ${k}`, n])),
    reportLines > 0 ? { "agents report lines": reportLines } : {},
  );
  const injected = o.injected ?? {};
  const keys = [...new Set([...Object.keys(droppedByWhere), ...Object.keys(injected)])].sort();
  const dropped = keys.length
    ? keys.map((k) => `${k} ${droppedByWhere[k] ?? 0}${k in injected ? `/${injected[k]}` : ""}`).join(", ")
    : "0";
  const notes = [...input.notes];
  // The same event stored twice (same kind, trial, attempt and sequence): the server's duplicate
  // window should have dropped the second copy of a retried publish.
  const copies = countBy(
    events.map((e) => e.event),
    (e) => JSON.stringify(e),
  );
  const twice = [...copies]
    .filter(([, n]) => n > 1)
    .map(([k, n]) => {
      const e = JSON.parse(k) as TrialEvent;
      return `${e.type} of ${e.trial}${"attempt" in e ? ` attempt ${e.attempt}` : ""} ×${n}`;
    });
  if (twice.length) notes.push(`stored more than once: ${twice.join(", ")}`);
  faults.forEach((f, i) => {
    const t = ttr[i];
    const what = `${f.kind}${f.target ? ` (${f.target}${f.trial ? `, ${f.trial} attempt ${f.attempt}` : ""})` : ""}`;
    notes.push(
      `${what}: ${t === null || t === undefined ? "no recovery event" : `recovered ${(t / 1000).toFixed(1)} s after the fault${f.from === "cleared" ? " was cleared" : ""}`}`,
    );
  });
  if (leftovers.length) notes.push(`left running: ${leftovers.map((p) => `${p.pid} ${p.cmd}`).join("; ")}`);
  if (endedNever.length) notes.push(`never ended: ${endedNever.join(", ")}`);
  if (endedTwice.length) notes.push(`ended twice: ${endedTwice.join(", ")}`);
  for (const o of overlaps) notes.push(`${o.trial} attempts ${o.attempts.join("+")} ran together for ${o.ms} ms`);
  return {
    scenario: input.scenario,
    faults: o.faults,
    trials: created.size,
    lost: endedNever.length,
    duplicated: duplicated.size,
    recovered: recovered.length,
    ttrMeanMs: measured.length ? Math.round(measured.reduce((a, b) => a + b, 0) / measured.length) : null,
    ttrMaxMs: measured.length ? Math.max(...measured) : null,
    outcome: input.outcome,
    dropped,
    seconds: secondsSince(input.startedAt),
    notes,
    events,
    endedTwice,
    endedNever,
    overlaps,
    leftovers,
    agentStops,
    coordinatorDrops,
    readerDrops,
    ttr,
    ended,
    attempts,
    watcher,
    strayTrials,
  };
}

/** Seconds since `startedAt`, to a tenth. */
export function secondsSince(startedAt: number): number {
  return Math.round((Date.now() - startedAt) / 100) / 10;
}

/** A row for a scenario that ran no study (or failed before it could be accounted for). */
export function rowWithoutStudy(
  r: Pick<ChaosRow, "scenario" | "faults" | "outcome" | "notes"> & { startedAt: number },
): ChaosRow {
  return {
    scenario: r.scenario,
    faults: r.faults,
    trials: 0,
    lost: 0,
    duplicated: 0,
    recovered: 0,
    ttrMeanMs: null,
    ttrMaxMs: null,
    outcome: r.outcome,
    dropped: "—",
    seconds: secondsSince(r.startedAt),
    notes: r.notes,
  };
}

/** Appends a row (the report without its bulky parts) to test-results/chaos.jsonl. */
export function appendRow(r: ChaosRow): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const row: ChaosRow = {
    scenario: r.scenario,
    faults: r.faults,
    trials: r.trials,
    lost: r.lost,
    duplicated: r.duplicated,
    recovered: r.recovered,
    ttrMeanMs: r.ttrMeanMs,
    ttrMaxMs: r.ttrMaxMs,
    outcome: r.outcome,
    dropped: r.dropped,
    seconds: r.seconds,
    notes: r.notes,
  };
  appendFileSync(RESULTS_FILE, `${JSON.stringify(row)}\n`);
}
