// The only code that talks to NATS: the coordinator loop and its store, lease, event and telemetry readers, mesh adverts, admin, tail and trial output.

export type { StudyResult } from "./coordinator.js";
export { DetachedError, runStudy, StudyCoordinator } from "./coordinator.js";
export type { FollowOptions } from "./event-reader.js";
export { followStudyEvents, readStudyEvents } from "./event-reader.js";
export { StudyLease } from "./lease.js";
export { MeshAdverts } from "./mesh-adverts.js";
export type { MeshWatchOptions } from "./mesh-watch.js";
export { MeshWatch } from "./mesh-watch.js";
export type { CompiledRunOptions, RunStudyOptions } from "./run-options.js";
export { compileRunOptions, RUN_DEFAULTS } from "./run-options.js";
export type { DeleteStudyOptions, LoadedStudy, StudyStatusJson, TrialStatusJson } from "./study-admin.js";
export {
  deleteStudy,
  listStudies,
  loadStudy,
  stopStudy,
  studyStateWord,
  studyStatusJson,
  trialStatusJson,
} from "./study-admin.js";
export { loadStudyHistory } from "./study-history.js";
export { StudyStore } from "./study-store.js";
export type { StudyWatchOptions } from "./study-watch.js";
export { loadStudySpec, StudyWatch } from "./study-watch.js";
export type { TailOptions, TailOutput, TailStats } from "./tail.js";
export { runTail } from "./tail.js";
export type { LoadStudyReportOptions, ReadTelemetryOptions } from "./telemetry-reader.js";
export { loadStudyReport, readAdverts, readTelemetry } from "./telemetry-reader.js";
export type {
  AttachOptions,
  AttemptEnding,
  TrialOutputIndex,
  TrialOutputOptions,
  TrialOutputResult,
  TrialRef,
} from "./trial-output.js";
export {
  attachTrial,
  attemptEnding,
  findTrialOutput,
  parseTrialRef,
  readTrialEvents,
  streamTrialOutput,
} from "./trial-output.js";
export { loadTrialPage } from "./trial-page.js";
