// Pure study model: spec, search space, the state folded from the event stream, the stopping policy and the decider (decisions as a pure function of the stream).

export type { StopDecision } from "./decider.js";
export { decideStudy, StudyDecider } from "./decider.js";
export type { Metrics, StudyPolicy } from "./policy.js";
export { createStudyPolicy } from "./policy.js";
export type { StudyProgress } from "./progress.js";
export type { StudyReplayResult } from "./replay-study.js";
export { replayStudy } from "./replay-study.js";
export type { ParamKind, ParamProblem, ParamSpec, ParamValue, PlannedTrial, SearchSpec } from "./search-space.js";
export {
  countTrials,
  DISTRIBUTIONS,
  generateTrials,
  isMultipleOf,
  MAX_TRIALS,
  paramToInput,
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
export type { AttemptRecord, AttemptStatus, PhaseCounts, StopInfo, TrialRecord } from "./state.js";
export { isCopyRejection, StudyState, TERMINAL_PHASES, TrialPhase } from "./state.js";
export type { StoredEvent } from "./stored-event.js";
export type { EarlyStoppingSavings } from "./summary.js";
export { earlyStoppingSavings, rungFunnel } from "./summary.js";
