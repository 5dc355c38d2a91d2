// Pure scheduling: the Scheduler interface, ASHA/Hyperband, median rule, FIFO, early stopping, the factory and `rung replay`. No I/O, no clock.

export type { AshaSnapshot } from "./asha.js";
export { Asha } from "./asha.js";
export type { CleanCurve, CurveFamily, CurvePoint, CurvePrediction, FamilyFit } from "./curve-fit.js";
export { cleanCurve, normalCdf, predictAt } from "./curve-fit.js";
export type { CurveStoppingOptions } from "./curve-stopping.js";
export { CurveStopping } from "./curve-stopping.js";
export type { EarlyStoppingOptions } from "./early-stopping.js";
export { EarlyStopping } from "./early-stopping.js";
export { createScheduler } from "./factory.js";
export { FifoScheduler } from "./fifo.js";
export { MedianStoppingRule } from "./median.js";
export type {
  AshaOptions,
  CurveOptions,
  FifoOptions,
  MedianOptions,
  OptionProblem,
  PbtOptions,
  PromotionOptions,
  SchedulerOptions,
  SchedulerOptionsInput,
} from "./options.js";
export {
  CURVE_DEFAULTS,
  checkSchedulerOptions,
  compileSchedulerOptions,
  MetricMode,
  SCHEDULER_DEFAULTS,
  SchedulerType,
} from "./options.js";
export type { Promotion } from "./promotion.js";
export { PromotionAsha } from "./promotion.js";
export type { ReplayOptions } from "./replay.js";
export { Replayer, replayLines } from "./replay.js";
export { bracketProbabilities, drawIndex, rungCount, rungMilestones } from "./rung-ladder.js";
export type { Scheduler, SchedulerDecision } from "./scheduler.js";
