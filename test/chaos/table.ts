import { existsSync, readFileSync, writeFileSync } from "node:fs";
import type { ChaosRow } from "./harness/report.js";

/** The results table: printed after every chaos run, and written into docs/reliability.md on request. */

const HEADER = [
  "scenario",
  "faults injected",
  "trials",
  "lost",
  "duplicated",
  "recovered",
  "time to recover",
  "outcome",
  "dropped bad messages",
];

function ttr(r: ChaosRow): string {
  if (r.ttrMaxMs === null) return "—";
  const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  return r.ttrMeanMs === r.ttrMaxMs ? s(r.ttrMaxMs) : `${s(r.ttrMeanMs ?? 0)} mean, ${s(r.ttrMaxMs)} max`;
}

function cells(r: ChaosRow): string[] {
  return [
    r.scenario,
    r.faults,
    String(r.trials),
    String(r.lost),
    String(r.duplicated),
    String(r.recovered),
    ttr(r),
    r.outcome,
    r.dropped,
  ];
}

export function readRows(file: string): ChaosRow[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as ChaosRow)
    .sort((a, b) => a.scenario.localeCompare(b.scenario, undefined, { numeric: true }));
}

export function textTable(rows: ChaosRow[]): string {
  const all = [HEADER, ...rows.map(cells)];
  const widths = HEADER.map((_, i) => Math.max(...all.map((r) => (r[i] as string).length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] as number))
      .join("  ")
      .trimEnd();
  return [line(HEADER), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(cells).map(line)].join("\n");
}

export function markdownTable(rows: ChaosRow[]): string {
  const esc = (c: string) => c.replace(/\|/g, "\\|");
  return [
    `| ${HEADER.join(" | ")} |`,
    `|${HEADER.map(() => " --- ").join("|")}|`,
    ...rows.map((r) => `| ${cells(r).map(esc).join(" | ")} |`),
  ].join("\n");
}

const START = "<!-- chaos-results:start -->";
const END = "<!-- chaos-results:end -->";

/** Replaces the results section of docs/reliability.md (between its two markers). */
export function writeDocs(file: string, rows: ChaosRow[], meta: string): void {
  const doc = readFileSync(file, "utf8");
  const a = doc.indexOf(START);
  const b = doc.indexOf(END);
  if (a < 0 || b < a) throw new Error(`${file} has no ${START} … ${END} section to fill`);
  const notes = rows.flatMap((r) => r.notes.map((n) => `- ${r.scenario}: ${n}`));
  const body = [
    START,
    "",
    meta,
    "",
    markdownTable(rows),
    "",
    ...(notes.length ? ["Notes from the run:", "", ...notes, ""] : []),
    END,
  ];
  writeFileSync(file, doc.slice(0, a) + body.join("\n") + doc.slice(b + END.length));
}
