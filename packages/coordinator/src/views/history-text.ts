import { type HistoryRow, historyMetricKeys } from "../study/index.js";
import { fmt } from "./format.js";

/**
 * `rung study history NAME` in three forms, one report per line:
 *
 *   --json  {"study":"digits","trial":"t0001","attempt":1,"t":3,"epoch":3,"val_acc":0.91,"val_loss":0.3,"ts":1764500000000}
 *           (newline-delimited; NaN and infinities are null; `pandas.read_json(f, lines=True)`)
 *   --csv   study,trial,attempt,t,epoch,val_acc,val_loss,ts — the union of every report's metrics as
 *           columns, empty where a report lacks one; NaN, inf, -inf as pandas reads them
 *   text    an aligned table for a terminal
 *
 * `t` is the study's time attribute (also present under its own name). A metric whose name is one of
 * the fixed keys (study, trial, attempt, t, ts) is written as `metric.<name>` so neither is lost.
 */

const FIXED = new Set(["study", "trial", "attempt", "t", "ts"]);
const column = (metric: string) => (FIXED.has(metric) ? `metric.${metric}` : metric);

export function historyJsonLines(rows: readonly HistoryRow[]): string {
  let out = "";
  for (const r of rows) {
    const o: Record<string, unknown> = { study: r.study, trial: r.trial, attempt: r.attempt, t: finiteOrNull(r.t) };
    for (const [k, v] of Object.entries(r.metrics)) o[column(k)] = finiteOrNull(v);
    o.ts = r.ts;
    out += `${JSON.stringify(o)}\n`;
  }
  return out;
}

function finiteOrNull(x: number | null): number | null {
  return x !== null && Number.isFinite(x) ? x : null;
}

function csvNumber(x: number | null | undefined): string {
  if (x === null || x === undefined) return "";
  if (Number.isNaN(x)) return "NaN";
  if (x === Number.POSITIVE_INFINITY) return "inf";
  if (x === Number.NEGATIVE_INFINITY) return "-inf";
  return String(x);
}

function csvText(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function historyCsv(rows: readonly HistoryRow[]): string {
  const keys = historyMetricKeys(rows);
  const lines = [["study", "trial", "attempt", "t", ...keys.map(column), "ts"].map(csvText).join(",")];
  for (const r of rows) {
    lines.push(
      [
        csvText(r.study),
        csvText(r.trial),
        String(r.attempt),
        csvNumber(r.t),
        ...keys.map((k) => csvNumber(r.metrics[k])),
        String(r.ts),
      ].join(","),
    );
  }
  return `${lines.join("\n")}\n`;
}

function clock(ts: number): string {
  return new Date(ts).toISOString().replace("T", " ").slice(0, 19);
}

export function historyTable(rows: readonly HistoryRow[], timeAttr: string): string {
  if (rows.length === 0) return "no reports yet\n";
  const keys = historyMetricKeys(rows).filter((k) => k !== timeAttr);
  const table = [["trial", "attempt", timeAttr, ...keys, "time (UTC)"]];
  for (const r of rows)
    table.push([r.trial, String(r.attempt), fmt(r.t), ...keys.map((k) => fmt(r.metrics[k] ?? null)), clock(r.ts)]);
  const widths = table[0]?.map((_, c) => Math.max(...table.map((row) => (row[c] ?? "").length))) ?? [];
  return `${table.map((row) => row.map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c] ?? 0))).join("  ")).join("\n")}\n`;
}
