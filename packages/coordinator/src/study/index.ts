// Pure study model: spec, search space, the state folded from the event stream, the stopping policy and the decider (decisions as a pure function of the stream).

export type { BudgetUse } from "./budget.js";
export { budgetText, budgetUse } from "./budget.js";
export type { StopDecision } from "./decider.js";
export { admitted, decideStudy, StudyDecider } from "./decider.js";
export type { OomDevice, OomOutcome, OrderResources } from "./gpu-placement.js";
export { oomDevice, oomOutcome, oomUsesRetry, orderResources, packedResources, runsAlone } from "./gpu-placement.js";
export type { HistoryRow } from "./history.js";
export { historyMetricKeys, studyHistory } from "./history.js";
export type { AloneEvidence, PackingInput, PackingLevel, PackingSpec } from "./packing.js";
export {
  aloneText,
  decidePacking,
  MIN_ALONE_TRIALS,
  MIN_EPOCHS,
  MIN_SAMPLES,
  PACKING_DEFAULTS,
  PackingLedger,
  PackingStep,
  packedSlowdown,
  packingLadder,
  packingShare,
  packingSummary,
  packingText,
} from "./packing.js";
export type { Metrics, StudyPolicy } from "./policy.js";
export { createStudyPolicy } from "./policy.js";
export type { StudyProgress } from "./progress.js";
export type { StudyReplayOptions, StudyReplayResult } from "./replay-study.js";
export { replayStudy, studyReplayOptions } from "./replay-study.js";
export type { RedrawnTrial } from "./sampling.js";
export { budgetsOf, observationOf, redrawSampledTrials, trialParams } from "./sampling.js";
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
  DEFAULT_CHECKPOINTS,
  DEFAULT_RETRIES,
  DEFAULT_STARTUP_TRIALS,
  DEFAULT_TIME_ATTR,
  loadSpec,
  parseSpec,
  REDACTED,
  RESERVED_PLACEHOLDERS,
  schedulerOptionsOf,
  specContinuation,
  specForRecord,
  specHash,
  specToInput,
  trialArgv,
} from "./spec.js";
export type { AttemptRecord, AttemptStatus, PhaseCounts, Refusal, StopInfo, TrialRecord } from "./state.js";
export { BUDGET_SPENT, isCopyRejection, StudyState, TERMINAL_PHASES, TrialPhase } from "./state.js";
export type { StoredEvent } from "./stored-event.js";
export type { PlannedBracket, PlannedRung, PlannedTrialRow, StudyPlan } from "./study-plan.js";
export { planStudy } from "./study-plan.js";
export type { EarlyStoppingSavings, StudyOutcome, TrialFailure } from "./summary.js";
export {
  earlyStoppingSavings,
  failureSummary,
  missingMetricReason,
  rungFunnel,
  studyEndState,
  studyFailures,
  studyOutcome,
} from "./summary.js";
