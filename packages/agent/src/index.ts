// @rung/agent: the process on every GPU box — inventory, telemetry, advert, claim loop, trial runner.

export type { AdvertiserOptions } from "./advert.js";
export { formatAgentsTable, listAdverts } from "./advert.js";
export type { Agent, AgentCounters, AgentExitReason } from "./agent.js";
export { startAgent } from "./agent.js";
export type { Pool } from "./claim-loop.js";
export { poolsFor, stopRequestFrom } from "./claim-loop.js";
export {
  AgentOptionsError,
  NoResourcesError,
  NvidiaSmiError,
  TrialStartError,
  UnknownGpuError,
} from "./errors.js";
export { eventMsgId } from "./events.js";
export type { FakeLoad } from "./fake-gpus.js";
export { FAKE_GPU_NAME, fakeGpuInfos, fakeReading } from "./fake-gpus.js";
export { cleanLine } from "./log-stream.js";
export type { GpuReading, InventoryResult } from "./nvidia-smi.js";
export {
  INVENTORY_FIELDS,
  parseInventory,
  parseReading,
  parseTelemetryLine,
  queryGpuInventory,
  TELEMETRY_FIELDS,
} from "./nvidia-smi.js";
export type { AgentOptions, CompiledAgentOptions } from "./options.js";
export { compileAgentOptions, DrainMode, defaultAgentName } from "./options.js";
export type { ReplayLedgerOptions } from "./replay-ledger.js";
export { nonceKey, ReplayLedger, SharedNonces } from "./replay-ledger.js";
export type { ParsedReport } from "./report-socket.js";
export { MAX_REPORT_LINE, parseReportLine } from "./report-socket.js";
export { MIN_SECRET_LENGTH, SECRET_MASK, SecretMasker, secretValues } from "./secret-mask.js";
export type { StopRequest, TrialResult } from "./trial-runner.js";
export { PYTHON_HELPER_DIR, resolveExecutable } from "./trial-runner.js";
