import { parseCheckpointObject } from "@rung/protocol";
import {
  type EarlyStoppingSavings,
  type StudyProgress,
  StudyState,
  type TrialFailure,
  type TrialRecord,
} from "../study/index.js";
import { fmt, paramText } from "./format.js";

/** Text views of a study for terminals and logs: progress line, leaderboard, best configuration. */

/** One line: `12/16 created · 3 running · 2 queued · 5 stopped · 2 completed · best 0.9722 (t0007) · GPUs 3/4 busy` */
export function progressLine(p: StudyProgress): string {
  const c = p.state.counts();
  const created = [...p.state.trials.values()].filter((t) => t.createdAt !== null).length;
  const best = p.state.best();
  const parts = [
    `${created}/${p.planned} dispatched`,
    `${c.running} running`,
    ...(c.paused ? [`${c.paused} paused`] : []),
    `${c.queued} queued`,
    `${c.completed} completed`,
    `${c.stopped} stopped`,
  ];
  if (c.failed) parts.push(`${c.failed} failed`);
  if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
  parts.push(best ? `best ${p.state.metric} ${fmt(best.bestValue)} (${best.trial})` : "no result yet");
  parts.push(p.waitingForAgents ? "waiting for agents" : `GPUs ${p.busyGpus}/${p.gpus} busy`);
  if (p.budget !== undefined) parts.push(p.budget);
  return parts.join(" · ");
}

export function leaderboardTable(state: StudyState, top = 10): string {
  const rows: string[][] = [["#", "trial", state.metric, `at ${state.timeAttr}`, "state", "params"]];
  const board = state
    .leaderboard()
    .filter((t: TrialRecord) => t.createdAt !== null)
    .slice(0, top);
  board.forEach((t, i) => {
    const phase = StudyState.phaseOf(t);
    const state = StudyState.stoppedLabel(t, fmt) ?? (phase === "paused" ? `paused@${fmt(t.pausedAt)}` : t.phase);
    rows.push([String(i + 1), t.trial, fmt(t.bestValue), fmt(t.bestT), state, paramText(t.params)]);
  });
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length))) ?? [];
  const table = rows
    .map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c] ?? 0))).join("  "))
    .join("\n");
  const all = [...state.trials.values()].filter((t) => t.createdAt !== null).length;
  return board.length < all
    ? `${table}\n(the top ${board.length} of ${all} trials: "rung study status ${state.study}" lists them all)`
    : table;
}

export function bestText(state: StudyState): string {
  const b = state.best();
  if (!b) return "no trial reported the metric";
  return `best: ${b.trial} ${state.metric}=${fmt(b.bestValue)} at ${state.timeAttr}=${fmt(b.bestT)} with ${paramText(b.params)}`;
}

export function savingsText(s: EarlyStoppingSavings): string {
  const f = (x: number) => (x >= 3600 ? `${(x / 3600).toFixed(2)} GPU-h` : `${x.toFixed(0)} GPU-s`);
  return `GPU time: ${f(s.usedGpuSeconds)} used; running every trial to max_t would have taken about ${f(s.fullGpuSeconds)} — early stopping saved ${f(s.savedGpuSeconds)} (${(100 * s.savedShare).toFixed(0)}%)`;
}

/**
 * Trials whose attempts moved between boxes — preempted (SIGTERM), or lost (the box died or froze) — and
 * where the next attempt started from; "" when none moved.
 */
export function movesText(state: StudyState): string {
  const lines: string[] = [];
  for (const t of state.trials.values()) {
    const parts: string[] = [];
    for (const a of t.attempts) {
      if (a.status === "preempted" || a.status === "lost") parts.push(`attempt ${a.attempt} ${a.status} on ${a.agent ?? "?"}`);
      // (A resume from another trial's checkpoint is PBT's exploit: lineageText says it.)
      else if (a.resumedFrom && parseCheckpointObject(a.resumedFrom.object)?.trial === t.trial)
        parts.push(`attempt ${a.attempt} on ${a.agent ?? "?"} resumed from ${state.timeAttr}=${fmt(a.resumedFrom.t)}`);
    }
    if (parts.length > 0) lines.push(`  ${t.trial}: ${parts.join("; ")}`);
  }
  return lines.length === 0 ? "" : ["moved between boxes:", ...lines].join("\n");
}

/**
 * Population-based training: each exploit, in order — the trial, when, whose checkpoint it went on
 * from, and what its parameters became; "" when there was none.
 */
export function lineageText(state: StudyState): string {
  const lines: string[] = [];
  for (const t of state.trials.values())
    for (const l of t.lineage) {
      const changed = Object.keys(l.params)
        .filter((k) => l.params[k] !== l.from[k])
        .map((k) => `${k} ${fmtParam(l.from[k])} → ${fmtParam(l.params[k])}`);
      lines.push(
        `  ${t.trial} at ${state.timeAttr}=${fmt(l.t)}: went on from ${l.donor}'s checkpoint${changed.length ? `, ${changed.join(", ")}` : ""}`,
      );
    }
  return lines.length === 0 ? "" : ["population-based training (exploits):", ...lines].join("\n");
}

function fmtParam(v: string | number | boolean | undefined): string {
  return typeof v === "number" && !Number.isInteger(v) ? String(Number(v.toPrecision(4))) : String(v);
}

/** `header`, then each failed trial's reason and the end of its log, indented; "" when none failed. */
export function failuresText(failures: readonly TrialFailure[], header = "failed trials:"): string {
  if (failures.length === 0) return "";
  const lines = [header];
  for (const f of failures) {
    lines.push(`  ${f.trial}: ${f.reason}`);
    for (const l of f.tail) lines.push(`      | ${l}`);
  }
  return lines.join("\n");
}
