/**
 * What `rung` exits with: 0 only when the job succeeded. `rung study run` says how the study turned
 * out; every command exits 1 on an error it could not recover from (one sentence on stderr).
 */
export const ExitCode = {
  /** Done; for `study run`, the study completed with a best result. */
  ok: 0,
  /** An error: bad input, NATS unreachable, a refused operation. The sentence on stderr says which. */
  error: 1,
  /** The study ended, but no trial reported the metric, so there is no best result. */
  noMetric: 3,
  /** Every trial of the study failed. */
  allFailed: 4,
  /** The study was stopped (`rung study stop`) before it completed. */
  stopped: 5,
  /** Ctrl-C detached `study run` from a study still running (run it again to resume). */
  detached: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];
