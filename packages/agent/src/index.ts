// @rung/agent: the process on every GPU box — inventory, telemetry, advert, claim loop, trial runner.
// This is the public API, what `rung` and other programs use. The pieces that tests reach into are in
// "@rung/agent/internal" (src/internal.ts), not here.

export { formatAgentsTable, listAdverts } from "./advert.js";
export type { Agent, AgentCounters, AgentExitReason } from "./agent.js";
export { startAgent } from "./agent.js";
export type { PackedSnapshot, RestoreResult } from "./checkpoints.js";
export { CheckpointStore, CheckpointTooLargeError, packDirectory, unpackArchive } from "./checkpoints.js";
export {
  AgentOptionsError,
  NoResourcesError,
  NvidiaSmiError,
  TrialStartError,
  UnknownGpuError,
} from "./errors.js";
export type { AgentOptions, CompiledAgentOptions } from "./options.js";
export { DrainMode, LogFormat } from "./options.js";
