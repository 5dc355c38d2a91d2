// @rung/coordinator: study spec, search space, schedulers (ASHA/Hyperband, median, FIFO, early stopping), replay.

export type { AshaSnapshot } from "./asha.js";
export { Asha } from "./asha.js";
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
export type { RunStudyOptions, StudyProgress, StudyResult } from "./coordinator.js";
export { DetachedError, runStudy, StudyCoordinator } from "./coordinator.js";
export type { EarlyStoppingOptions } from "./early-stopping.js";
export { EarlyStopping } from "./early-stopping.js";
export type { SpecProblem } from "./errors.js";
export {
  AmbiguousTrialError,
  NoTrialOutputError,
  ReplayInputError,
  SchedulerOptionsError,
  SpecError,
  StudyLeaseHeldError,
  StudyLeaseLostError,
  StudyNotFoundError,
  StudySpecChangedError,
  TrialNotFoundError,
  TrialNotRunningError,
} from "./errors.js";
export type { FollowOptions, StoredEvent } from "./event-log.js";
export { followStudyEvents, readStudyEvents } from "./event-log.js";
export { FifoScheduler } from "./fifo.js";
export { MedianStoppingRule } from "./median.js";
export { MeshView } from "./mesh-view.js";
export { ashaCutoff, ashaPercentile, nanPercentile } from "./percentile.js";
export type { ReplayOptions } from "./replay.js";
export { Replayer, replayLines } from "./replay.js";
export type { StudyReplayResult } from "./replay-study.js";
export { replayStudy } from "./replay-study.js";
export type { Rng } from "./rng.js";
export { createRng } from "./rng.js";
export { bracketProbabilities, rungCount, rungMilestones } from "./rung-ladder.js";
export type { Scheduler, SchedulerDecision } from "./scheduler.js";
export { createScheduler } from "./scheduler.js";
export type {
  AshaOptions,
  FifoOptions,
  MedianOptions,
  OptionProblem,
  SchedulerOptions,
  SchedulerOptionsInput,
} from "./scheduler-options.js";
export {
  checkSchedulerOptions,
  compileSchedulerOptions,
  MetricMode,
  SCHEDULER_DEFAULTS,
  SchedulerType,
} from "./scheduler-options.js";
export type { ParamKind, ParamSpec, ParamValue, PlannedTrial, SearchSpec } from "./search-space.js";
export {
  countTrials,
  DISTRIBUTIONS,
  generateTrials,
  MAX_TRIALS,
  parseParam,
  SearchAlgorithm,
  sampleParam,
  trialId,
} from "./search-space.js";
export type { EarlyStoppingSpec, SchedulerSpec, SpecInput, StudySpec } from "./spec.js";
export {
  canonicalJson,
  compileSpec,
  DEFAULT_RETRIES,
  DEFAULT_TIME_ATTR,
  loadSpec,
  parseSpec,
  REDACTED,
  RESERVED_PLACEHOLDERS,
  schedulerOptionsOf,
  specForRecord,
  specHash,
  specToInput,
  trialArgv,
} from "./spec.js";
export type { LoadedStudy, StudyStatusJson, TrialStatusJson } from "./study-admin.js";
export { deleteStudy, listStudies, loadStudy, stopStudy, studyStatusJson, trialStatusJson } from "./study-admin.js";
export type { StopDecision } from "./study-decider.js";
export { decideStudy, StudyDecider } from "./study-decider.js";
export type {
  AgentCost,
  CostSummary,
  GpuTime,
  LeaderboardRow,
  ReportableStudy,
  ReportTrial,
  StudyReport,
  StudyReportOptions,
} from "./study-report.js";
export { buildStudyReport, groupFindings, REPORT_VERSION, renderReportMarkdown, renderReportText } from "./study-report.js";
export type { Metrics, StudyScheduler } from "./study-scheduler.js";
export { createStudyScheduler } from "./study-scheduler.js";
export type { AttemptRecord, AttemptStatus, PhaseCounts, StopInfo, TrialRecord } from "./study-state.js";
export { isCopyRejection, StudyState, TERMINAL_PHASES, TrialPhase } from "./study-state.js";
export type { EarlyStoppingSavings } from "./study-view.js";
export { bestText, earlyStoppingSavings, leaderboardTable, progressLine, rungFunnel, savingsText } from "./study-view.js";
export type { TailOptions, TailOutput, TailStats } from "./tail.js";
export { runTail } from "./tail.js";
export type { JoinedTelemetry, JoinOptions } from "./telemetry-join.js";
export { joinTelemetry } from "./telemetry-join.js";
export type { LoadStudyReportOptions, ReadTelemetryOptions } from "./telemetry-log.js";
export { loadStudyReport, readAdverts, readTelemetry } from "./telemetry-log.js";
export type { StudyMeta, TailFilter, TailViewOptions } from "./telemetry-view.js";
export { studyMetaFromSpec, TailFormat, TailView } from "./telemetry-view.js";
export type { AttachOptions, TrialOutputIndex, TrialOutputOptions, TrialOutputResult, TrialRef } from "./trial-logs.js";
export { attachTrial, findTrialOutput, parseTrialRef, readTrialEvents, streamTrialOutput } from "./trial-logs.js";
