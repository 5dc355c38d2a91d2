// @rung/protocol: everything that crosses NATS — names, subjects, messages, codec, resources.

export type { Decoded, DropLogger } from "./codec.js";
export { BadMessageCounter, DecodeError, DecodeErrorKind, decode, encode, MAX_MESSAGE_BYTES } from "./codec.js";
export { CommandTemplateError, placeholders, renderArgv, splitCommand } from "./command-template.js";
export type { NatsOptions } from "./connect.js";
export { connectNats, DEFAULT_NATS_URL, natsUrl } from "./connect.js";
export { nanos, parseDuration } from "./durations.js";
export {
  DurationError,
  InvalidTokenError,
  NatsServerMissingError,
  NatsUnreachableError,
  ResourceSetupError,
} from "./errors.js";
export type { Logger, LoggerOptions } from "./logger.js";
export { createLogger, silentLogger } from "./logger.js";
export type {
  AgentAdvert,
  AgentState,
  Control,
  GpuInfo,
  GpuSample,
  HostInfo,
  Lease,
  LogChunk,
  OrderIdentity,
  StudyRecord,
  Telemetry,
  TrialEvent,
  TrialEventOf,
  TrialEventType,
  WorkOrder,
} from "./messages.js";
export {
  AgentAdvertSchema,
  AgentStateSchema,
  ControlSchema,
  Decision,
  GpuInfoSchema,
  GpuSampleSchema,
  HostInfoSchema,
  LeaseSchema,
  LogChunkSchema,
  OrderIdentitySchema,
  RejectReason,
  SCHEMA_VERSION,
  StopReason,
  StudyRecordSchema,
  TelemetrySchema,
  TrialEventSchema,
  TrialStatus,
  WorkOrderSchema,
} from "./messages.js";
export type { NatsServerOptions } from "./nats-server.js";
export { findNatsServer, NatsServerProcess, NatsServerStartError, startNatsServer } from "./nats-server.js";
export type {
  CompiledResourceOptions,
  MeshResources,
  ResourceOptions,
  StreamDefinition,
  WorkConsumerOptions,
} from "./resources.js";
export {
  compileResourceOptions,
  ensureResources,
  ensureWorkConsumer,
  MeshNames,
  streamConfigs,
} from "./resources.js";
export { poolName, Subjects } from "./subjects.js";
export { isValidToken, MAX_TOKEN_LENGTH, validToken } from "./tokens.js";
export { RUNG_VERSION } from "./version.js";
