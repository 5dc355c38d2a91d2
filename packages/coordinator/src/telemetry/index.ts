// Pure telemetry analysis: joining GPU samples with trials, the bottleneck diagnosis, the study report as data.

export type {
  AgentIdleStats,
  DiagnosisInput,
  DiagnosisOptions,
  DiagnosisThresholds,
  Distribution,
  Evidence,
  Finding,
  TrialGpuStats,
  TrialStats,
} from "./bottleneck.js";
export { compareFindings, compileDiagnosisOptions, DIAGNOSIS_DEFAULTS, diagnose, FindingKind, Severity } from "./bottleneck.js";
export type { JoinedTelemetry, JoinOptions } from "./join.js";
export { joinTelemetry } from "./join.js";
export type {
  AgentCost,
  CostSummary,
  GpuTime,
  LeaderboardRow,
  ReportableStudy,
  ReportTrial,
  StudyReport,
  StudyReportOptions,
} from "./report.js";
export { buildStudyReport, REPORT_VERSION } from "./report.js";
