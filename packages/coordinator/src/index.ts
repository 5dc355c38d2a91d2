// @rung/coordinator: study spec, search space, schedulers (ASHA/Hyperband, median, FIFO, early stopping), replay.

export type { AshaSnapshot } from "./asha.js";
export { Asha } from "./asha.js";
export type { EarlyStoppingOptions } from "./early-stopping.js";
export { EarlyStopping } from "./early-stopping.js";
export type { SpecProblem } from "./errors.js";
export { ReplayInputError, SchedulerOptionsError, SpecError } from "./errors.js";
export { FifoScheduler } from "./fifo.js";
export { MedianStoppingRule } from "./median.js";
export { ashaCutoff, ashaPercentile, nanPercentile } from "./percentile.js";
export type { ReplayOptions } from "./replay.js";
export { Replayer, replayLines } from "./replay.js";
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
  RESERVED_PLACEHOLDERS,
  schedulerOptionsOf,
  specHash,
  specToInput,
  trialArgv,
} from "./spec.js";
export type { Metrics, StudyScheduler } from "./study-scheduler.js";
export { createStudyScheduler } from "./study-scheduler.js";
export { DetachedError, runStudy, StudyCoordinator } from "./coordinator.js";
export type { RunStudyOptions, StudyProgress, StudyResult } from "./coordinator.js";
export { StudyLeaseHeldError, StudyLeaseLostError, StudyNotFoundError, StudySpecChangedError } from "./errors.js";
export { followStudyEvents, readStudyEvents } from "./event-log.js";
export type { FollowOptions, StoredEvent } from "./event-log.js";
export { MeshView } from "./mesh-view.js";
export { StudyState, TERMINAL_PHASES, TrialPhase } from "./study-state.js";
export type { AttemptRecord, AttemptStatus, PhaseCounts, StopInfo, TrialRecord } from "./study-state.js";
export { deleteStudy, listStudies, loadStudy, stopStudy, studyStatusJson, trialStatusJson } from "./study-admin.js";
export type { LoadedStudy, StudyStatusJson, TrialStatusJson } from "./study-admin.js";
export { bestText, earlyStoppingSavings, leaderboardTable, progressLine, rungFunnel, savingsText } from "./study-view.js";
export type { EarlyStoppingSavings } from "./study-view.js";
export { replayStudy } from "./replay-study.js";
export type { StudyReplayResult } from "./replay-study.js";
export { decideStudy, StudyDecider } from "./study-decider.js";
export type { StopDecision } from "./study-decider.js";
