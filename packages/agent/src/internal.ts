// @rung/agent/internal: the agent's pieces, for tests (nats.js keeps the same split: `internal_mod.ts`).
// Not an API: names come and go with the code. The public API is "@rung/agent" (src/index.ts); what is
// exported there is not repeated here.

export { Advertiser } from "./advert.js";
export { AGENT_TRANSITIONS } from "./agent.js";
export type {
  Admission,
  AdmissionInput,
  AdmissionPolicy,
  AttemptContext,
  AttemptInit,
  ClaimLoopCounters,
  ClaimLoopOptions,
  MeshNonceResult,
  MessageId,
  MessageRef,
  Pool,
  RefusalEntry,
  Rejection,
  ReplayLedgerOptions,
} from "./claiming/index.js";
export {
  ATTEMPT_TRANSITIONS,
  Attempt,
  AttemptState,
  admitOrder,
  attemptKey,
  attemptNumber,
  ClaimLoop,
  checkOrder,
  describeMessage,
  MAX_REFUSAL_DELAY_MS,
  MAX_REFUSAL_PAUSE_MS,
  messageIdOf,
  nonceKey,
  OrderEnding,
  pickPool,
  poolsFor,
  poolsThatFit,
  REFUSAL_DELAY_MS,
  Refusals,
  ReplayLedger,
  refusalDelayMs,
  refusalPauseMs,
  SECURITY_REASONS,
  SharedNonces,
  stopRequestFrom,
} from "./claiming/index.js";
export { IllegalTransitionError } from "./errors.js";
export type { EventPublisher, EventQueueOptions } from "./events.js";
export { EventQueue } from "./events.js";
export type { FakeLoad } from "./fake-gpus.js";
export { FAKE_GPU_NAME, fakeGpuInfos, fakeReading } from "./fake-gpus.js";
export { cleanLine } from "./log-stream.js";
export type { GpuReading, InventoryResult } from "./nvidia-smi.js";
export {
  COMPUTE_APPS_FIELDS,
  INVENTORY_FIELDS,
  parseComputeApps,
  parseInventory,
  parseReading,
  parseTelemetryLine,
  queryGpuInventory,
  TELEMETRY_FIELDS,
} from "./nvidia-smi.js";
export { compileAgentOptions, defaultAgentName } from "./options.js";
export type { ParsedReport } from "./report-socket.js";
export { MAX_REPORT_LINE, parseReportLine } from "./report-socket.js";
export { MIN_SECRET_LENGTH, SECRET_MASK, SecretMasker, secretValues } from "./secret-mask.js";
export type { Transitions } from "./state-machine.js";
export { StateMachine } from "./state-machine.js";
export type { StopRequest, TrialResult } from "./trial-runner.js";
export { PYTHON_HELPER_DIR, resolveExecutable, whyCannotRun } from "./trial-runner.js";
export type { WarmProcess, WarmSource } from "./warm-pool.js";
export { WarmPool, warmPoolFor } from "./warm-pool.js";
