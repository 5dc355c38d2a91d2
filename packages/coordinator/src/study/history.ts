import type { TrialEvent } from "@rung/protocol";

/**
 * `rung study history NAME`: every result every trial reported, one row per `report` event, in the
 * order the events stream holds them — for people who plot in their own notebooks. Nothing is left
 * out: reports after a STOP and reports of an attempt that was later retried are rows too, with their
 * attempt number, so a reader can pick what they want.
 */
export interface HistoryRow {
  readonly study: string;
  readonly trial: string;
  readonly attempt: number;
  /** The report's time attribute (`epoch` …); null when the report did not carry it. */
  readonly t: number | null;
  /** Every metric of the report, as reported. */
  readonly metrics: Readonly<Record<string, number>>;
  /** When the agent stamped the report (ms since the epoch). */
  readonly ts: number;
}

export function studyHistory(events: Iterable<TrialEvent>, timeAttr: string): HistoryRow[] {
  const rows: HistoryRow[] = [];
  for (const e of events) {
    if (e.type !== "report") continue;
    rows.push({
      study: e.study,
      trial: e.trial,
      attempt: e.attempt,
      t: e.metrics[timeAttr] ?? null,
      metrics: e.metrics,
      ts: e.ts,
    });
  }
  return rows;
}

/** The metric names of the rows, in the order they first appear: the columns of a table or CSV. */
export function historyMetricKeys(rows: Iterable<HistoryRow>): string[] {
  const keys = new Set<string>();
  for (const r of rows) for (const k of Object.keys(r.metrics)) keys.add(k);
  return [...keys];
}
