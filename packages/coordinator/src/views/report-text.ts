import type { Finding, FindingKind, StudyReport } from "../telemetry/index.js";
import { fmt, paramText } from "./format.js";
import { failuresText } from "./study-text.js";

/** `rung study report` as text for a terminal and as Markdown for a pull request. */

/** GPU-hours with two decimals, or two significant digits below 0.01 (a short study: 0.0031, not 0.00). */
const hours = (h: number) => (h === 0 || h >= 0.01 ? h.toFixed(2) : h.toPrecision(2));
const hoursText = (s: number) => hours(s / 3600);
const shareText = (part: number, whole: number) => (whole > 0 ? `${Math.round((100 * part) / whole)}%` : "-");

function countsText(r: StudyReport): string {
  const c = r.counts;
  const created = c.queued + c.running + c.completed + c.stopped + c.failed + c.cancelled;
  const parts = [`${c.completed} completed`, `${c.stopped} stopped early`];
  if (c.failed) parts.push(`${c.failed} failed`);
  if (c.cancelled) parts.push(`${c.cancelled} cancelled`);
  if (c.running) parts.push(`${c.running} running`);
  if (c.queued) parts.push(`${c.queued} queued`);
  return `${created} of ${r.planned} planned trials: ${parts.join(", ")}`;
}

function costText(r: StudyReport): string {
  const c = r.cost;
  if (c.total === null) return `${hours(c.gpuHours)} GPU-hours, price unknown (no agent advertised one)`;
  const unpriced = c.unpricedAgents.length
    ? ` for the priced agents; price unknown for ${c.unpricedAgents.join(", ")} (${hours(
        c.agents.filter((a) => a.cost === null).reduce((s, a) => s + a.busyGpuHours + a.idleGpuHours, 0),
      )} GPU-hours not included)`
    : "";
  return `${c.total.toFixed(2)} for ${hours(c.gpuHours)} GPU-hours at the agents' advertised prices${unpriced}`;
}

interface FindingGroup {
  kind: FindingKind;
  findings: Finding[];
}

/** Findings of one kind together, in the order of their worst one (the list is sorted worst first). */
export function groupFindings(findings: readonly Finding[]): FindingGroup[] {
  const groups = new Map<FindingKind, FindingGroup>();
  for (const f of findings) {
    const g = groups.get(f.kind);
    if (g) g.findings.push(f);
    else groups.set(f.kind, { kind: f.kind, findings: [f] });
  }
  return [...groups.values()];
}

const MORE = 6;

function othersText(g: FindingGroup): string | null {
  const rest = g.findings.slice(1);
  if (rest.length === 0) return null;
  const shown = rest.slice(0, MORE).map((f) => `${f.trial ?? f.agent} (${f.short})`);
  const more = rest.length > MORE ? ` and ${rest.length - MORE} more` : "";
  return `also ${rest.length} more ${rest[0]?.trial !== null ? "trial(s)" : "agent(s)"}: ${shown.join(", ")}${more}`;
}

function gpuTimeRows(r: StudyReport): [string, number | null][] {
  const g = r.gpuTime;
  const rows: [string, number | null][] = [
    ["completed trials", g.completedGpuS],
    ["stopped early", g.stoppedGpuS],
    ["failed or lost attempts", g.failedGpuS],
  ];
  if (g.cancelledGpuS > 0) rows.push(["cancelled", g.cancelledGpuS]);
  if (g.runningGpuS > 0) rows.push(["still running", g.runningGpuS]);
  rows.push(["idle (no trial on the GPU)", g.idleGpuS]);
  return rows;
}

function durationText(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function coverageText(r: StudyReport): string {
  const c = r.telemetry.coverage;
  const span = durationText(r.window.seconds);
  if (c === null) return "no study window yet";
  if (r.telemetry.gpuMessages === 0)
    return `no GPU telemetry for the study's ${span} (the telemetry stream keeps 1 h by default): utilization findings and idle time are missing`;
  return `telemetry covers ${Math.round(100 * c)}% of the study's ${span}`;
}

function mdCell(s: string): string {
  return s.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

/** `checkpoints: 8 stored (1.2 MiB kept) · 1 attempt resumed, 14 GPU-s saved · 1 preempted`; "" without any. */
function checkpointText(r: StudyReport): string {
  const c = r.checkpoints;
  if (c.stored === 0 && c.preemptedAttempts === 0) return "";
  const parts = [`${c.stored} stored${c.storedBytes === null ? "" : ` (${bytesText(c.storedBytes)} kept)`}`];
  parts.push(
    `${c.resumedAttempts} attempt(s) resumed, ${c.gpuSecondsSaved >= 3600 ? `${(c.gpuSecondsSaved / 3600).toFixed(2)} GPU-h` : `${c.gpuSecondsSaved.toFixed(0)} GPU-s`} saved`,
  );
  if (c.preemptedAttempts > 0) parts.push(`${c.preemptedAttempts} preempted`);
  return `checkpoints: ${parts.join(" · ")}`;
}

function bytesText(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** The report as Markdown, to paste into a pull request. */
export function renderReportMarkdown(r: StudyReport): string {
  const L: string[] = [];
  const critical = r.findings.filter((f) => f.severity === "critical").length;
  L.push(`## Rung study report: \`${r.study}\``);
  L.push("");
  L.push(
    `**${r.state}** · ${countsText(r)} · ${r.scheduler} on \`${r.metric.name}\` (${r.metric.mode}) · ${hoursText(r.gpuTime.totalGpuS)} GPU-hours · ${r.findings.length} finding(s)${critical ? `, ${critical} critical` : ""}`,
  );
  L.push("");
  if (r.best)
    L.push(
      `**Best:** \`${r.best.trial}\` ${r.metric.name} = ${fmt(r.best.value)} at ${r.timeAttr} ${fmt(r.best.t)} with \`${paramText(r.best.params)}\``,
    );
  else L.push("**Best:** no trial reported the metric yet");
  L.push("");

  L.push("### Findings, worst first");
  L.push("");
  const groups = groupFindings(r.findings);
  if (groups.length === 0) L.push("None: no rule fired with the thresholds below.");
  groups.forEach((g, i) => {
    const f = g.findings[0] as Finding;
    L.push(`${i + 1}. **${f.severity} · ${f.kind}** — ${f.summary}.`);
    for (const a of f.advice) L.push(`   - ${a}`);
    const others = othersText(g);
    if (others) L.push(`   - _${others}_`);
  });
  L.push("");

  if (r.failures.length > 0) {
    L.push(`### Failed trials (${r.failures.length})`);
    L.push("");
    for (const f of r.failures) {
      L.push(`- **${f.trial}**: ${mdCell(f.reason)}`);
      if (f.tail.length > 0) L.push(`  \`${f.tail.map(mdCell).join(" ⏎ ")}\``);
    }
    L.push("");
  }
  L.push(`### Leaderboard (top ${r.leaderboard.length})`);
  L.push("");
  if (r.leaderboard.length === 0) L.push("No trials yet.");
  else {
    L.push(`| # | trial | ${mdCell(r.metric.name)} | at ${mdCell(r.timeAttr)} | state | params |`);
    L.push("|---:|---|---:|---:|---|---|");
    for (const row of r.leaderboard)
      L.push(
        `| ${row.rank} | ${row.trial} | ${fmt(row.value)} | ${fmt(row.t)} | ${mdCell(row.state)} | ${mdCell(paramText(row.params))} |`,
      );
  }
  L.push("");

  if (r.funnel.length > 0) {
    L.push("### Rung funnel");
    L.push("");
    L.push(`| ${mdCell(r.timeAttr)} ≥ | trials |`);
    L.push("|---:|---:|");
    for (const f of r.funnel) L.push(`| ${fmt(f.milestone)} | ${f.trials} |`);
    L.push("");
  }

  L.push("### Where the GPU time went");
  L.push("");
  L.push("| | GPU-hours | share |");
  L.push("|---|---:|---:|");
  for (const [label, s] of gpuTimeRows(r))
    L.push(`| ${label} | ${s === null ? "unknown" : hoursText(s)} | ${s === null ? "-" : shareText(s, r.gpuTime.totalGpuS)} |`);
  L.push(`| **total** | **${hoursText(r.gpuTime.totalGpuS)}** | |`);
  L.push("");
  const ck = checkpointText(r);
  if (ck) L.push(`**Checkpoints:** ${ck.replace(/^checkpoints: /, "")}.`, "");
  L.push(`**Cost:** ${costText(r)}.`);
  if (r.budget !== undefined) L.push(`**Budget:** ${r.budget.replace(/^budget: /, "")}.`);
  if (r.packing !== undefined) L.push(`**Packing:** ${r.packing.replace(/^packing: /, "")}.`);
  L.push("");
  L.push(
    `<sub>${coverageText(r)} · input-bound: GPU < ${r.thresholds.inputBoundMaxUtilization}% and data wait > ${Math.round(100 * r.thresholds.inputBoundMinDataWait)}% · generated ${r.generatedAt} by \`rung study report\`</sub>`,
  );
  return `${L.join("\n")}\n`;
}

/** The report as plain text for a terminal. */
export function renderReportText(r: StudyReport): string {
  const L: string[] = [];
  L.push(`study ${r.study}: ${r.state} · ${countsText(r)}`);
  L.push(`${r.scheduler} on ${r.metric.name} (${r.metric.mode}) · ${coverageText(r)}`);
  L.push(
    r.best
      ? `best: ${r.best.trial} ${r.metric.name}=${fmt(r.best.value)} at ${r.timeAttr}=${fmt(r.best.t)} with ${paramText(r.best.params)}`
      : "best: no trial reported the metric yet",
  );
  L.push("");
  L.push(`findings (${r.findings.length}), worst first:`);
  const groups = groupFindings(r.findings);
  if (groups.length === 0) L.push("  none");
  groups.forEach((g, i) => {
    const f = g.findings[0] as Finding;
    L.push(`  ${i + 1}. [${f.severity}] ${f.kind}: ${f.summary}`);
    for (const a of f.advice) L.push(`       - ${a}`);
    const others = othersText(g);
    if (others) L.push(`       ${others}`);
  });
  if (r.failures.length > 0) L.push("", failuresText(r.failures, `failed trials (${r.failures.length}):`));
  const ck = checkpointText(r);
  if (ck) L.push("", ck);
  const lineage = r.trials.flatMap((t) =>
    t.lineage.map(
      (l) => `  ${t.trial} at ${r.timeAttr}=${fmt(l.t)}: went on from ${l.donor}'s checkpoint with ${paramText(l.params)}`,
    ),
  );
  if (lineage.length > 0) L.push("", "population-based training (exploits):", ...lineage);
  L.push("");
  L.push(`leaderboard (top ${r.leaderboard.length}):`);
  const rows: string[][] = [["#", "trial", r.metric.name, `at ${r.timeAttr}`, "state", "params"]];
  for (const row of r.leaderboard)
    rows.push([String(row.rank), row.trial, fmt(row.value), fmt(row.t), row.state, paramText(row.params)]);
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((x) => (x[c] ?? "").length))) ?? [];
  for (const x of rows) L.push(`  ${x.map((cell, c) => (c === x.length - 1 ? cell : cell.padEnd(widths[c] ?? 0))).join("  ")}`);
  if (r.funnel.length > 0) {
    L.push("");
    L.push(`rung funnel: ${r.funnel.map((f) => `${r.timeAttr}>=${fmt(f.milestone)}: ${f.trials}`).join(" · ")}`);
  }
  L.push("");
  L.push("GPU time:");
  for (const [label, s] of gpuTimeRows(r))
    L.push(
      `  ${label.padEnd(28)} ${s === null ? "unknown" : `${hoursText(s)} GPU-h`.padStart(12)}  ${s === null ? "" : shareText(s, r.gpuTime.totalGpuS)}`,
    );
  L.push(`  ${"total".padEnd(28)} ${`${hoursText(r.gpuTime.totalGpuS)} GPU-h`.padStart(12)}`);
  L.push(`cost: ${costText(r)}`);
  if (r.budget !== undefined) L.push(r.budget);
  if (r.packing !== undefined) L.push(r.packing);
  return `${L.join("\n")}\n`;
}
