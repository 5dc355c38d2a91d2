// Claiming: from a work order waiting in a pool to a trial running here and its order ended. What
// the rest of the agent uses; the files say which part is which.

export type { Admission, AdmissionInput, AdmissionPolicy, Rejection } from "./admission.js";
export { admitOrder, attemptKey, attemptNumber, checkOrder, SECURITY_REASONS } from "./admission.js";
export type { AttemptContext, AttemptInit } from "./attempt.js";
export { ATTEMPT_TRANSITIONS, Attempt, AttemptState, stopRequestFrom } from "./attempt.js";
export type { ClaimLoopOptions } from "./claim-loop.js";
export { ClaimLoop } from "./claim-loop.js";
export type { ClaimLoopCounters } from "./counters.js";
export { newClaimLoopCounters } from "./counters.js";
export type { Pool } from "./pools.js";
export { pickPool, poolsFor, poolsThatFit } from "./pools.js";
export type { RefusalEntry } from "./refusals.js";
export {
  MAX_REFUSAL_DELAY_MS,
  MAX_REFUSAL_PAUSE_MS,
  REFUSAL_DELAY_MS,
  Refusals,
  refusalDelayMs,
  refusalPauseMs,
} from "./refusals.js";
export type { MeshNonceResult, MessageId, MessageRef, ReplayLedgerOptions } from "./replay-ledger.js";
export { describeMessage, messageIdOf, nonceKey, ReplayLedger, SharedNonces } from "./replay-ledger.js";
export { OrderEnding } from "./work-message.js";
