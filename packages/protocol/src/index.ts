// @rung/protocol: everything that crosses NATS — names, subjects, messages, codec, resources.

export type { PublishAck } from "./acked-publisher.js";
export { AckedPublisher } from "./acked-publisher.js";
export type { AuthInitOptions, AuthInitResult, WrittenCredentials } from "./auth-init.js";
export { initAuth } from "./auth-init.js";
export type { ClaimIdentity } from "./claims.js";
export { agentIdTag, claimProof, newStudySecret } from "./claims.js";
export type { Decoded, DropLogger } from "./codec.js";
export { BadMessageCounter, DecodeError, DecodeErrorKind, decode, encode, MAX_MESSAGE_BYTES } from "./codec.js";
export { CommandTemplateError, placeholders, renderArgv, splitCommand } from "./command-template.js";
export type { NatsCredentials, NatsOptions } from "./connect.js";
export { connectNats, DEFAULT_NATS_URL, inboxPrefixFor, inboxPrefixOf, natsUrl, readNatsCredentials } from "./connect.js";
export { durationText, nanos, parseDuration } from "./durations.js";
export {
  DurationError,
  InvalidTokenError,
  NatsAuthError,
  NatsCredentialsError,
  NatsServerMissingError,
  NatsUnreachableError,
  ResourceSetupError,
  SigningKeyError,
} from "./errors.js";
export { bucketKeys } from "./kv-keys.js";
export type { Logger, LoggerOptions } from "./logger.js";
export { createLogger, silentLogger } from "./logger.js";
export {
  agentEventMsgId,
  createdMsgId,
  decisionMsgId,
  endedMsgId,
  logChunkMsgId,
  queuedMsgId,
  rejectedMsgId,
  reportMsgId,
  studyScope,
  trialEventMsgId,
  workOrderMsgId,
} from "./message-ids.js";
export type {
  AgentAdvert,
  AgentState,
  CheckpointIndex,
  CheckpointRef,
  ClaimNotice,
  Control,
  GpuInfo,
  GpuSample,
  HostInfo,
  Lease,
  LogChunk,
  NonceRecord,
  OrderIdentity,
  StudyRecord,
  Telemetry,
  TrialCpuSample,
  TrialEvent,
  TrialEventOf,
  TrialEventType,
  WorkOrder,
} from "./messages.js";
export {
  AGENT_SPECIFIC_REJECTIONS,
  AgentAdvertSchema,
  AgentStateSchema,
  CheckpointIndexSchema,
  CheckpointRefSchema,
  ClaimNoticeSchema,
  ControlSchema,
  Decision,
  GpuInfoSchema,
  GpuSampleSchema,
  HostInfoSchema,
  isAgentSpecificRejection,
  LeaseSchema,
  LogChunkSchema,
  MAX_REPORT_BATCH,
  NonceRecordSchema,
  OrderIdentitySchema,
  REPORT_BATCH_BYTES,
  REPORT_BATCHES_HEADER,
  RejectReason,
  SCHEMA_VERSION,
  StopReason,
  StudyRecordSchema,
  TelemetrySchema,
  TrialCpuSampleSchema,
  TrialEventSchema,
  TrialStatus,
  WorkOrderSchema,
} from "./messages.js";
export {
  isAuthError,
  isConnectionClosed,
  isConnectionRefused,
  isConsumerNotFound,
  isJetStreamNotEnabled,
  isNoResponders,
  isNotFound,
  isPermissionError,
  isStreamNotFound,
  isTimeout,
  isTlsError,
  isWrongLastSequence,
  jetStreamApiCode,
} from "./nats-errors.js";
export type { NatsServerExit, NatsServerOptions } from "./nats-server.js";
export {
  findNatsServer,
  NatsServerExitedError,
  NatsServerProcess,
  NatsServerStartError,
  startNatsServer,
} from "./nats-server.js";
export type { OrderCheck, SigningKey, VerifyOrderOptions } from "./order-signing.js";
export {
  canonicalJson,
  createSigningKey,
  isValidPublicKey,
  orderSigningBytes,
  readSigningKey,
  seedFromText,
  signOrder,
  verifyOrder,
} from "./order-signing.js";
export type { MeshUser, RolePermissionOptions, SubjectPermissions } from "./permissions.js";
export { defaultAccountName, Role, renderAuthConfig, rolePermissions } from "./permissions.js";
export {
  classNeeds,
  FULL_SHARE,
  fractionalPoolName,
  isFractionalGpus,
  migIndex,
  orderPool,
  parseMemoryMiB,
  SHARE_CLASSES,
  shareClass,
  sharePercent,
} from "./placement.js";
export type {
  CompiledResourceOptions,
  MeshResources,
  ResourceOptions,
  StreamDefinition,
  WorkConsumer,
  WorkConsumerOptions,
} from "./resources.js";
export {
  compileResourceOptions,
  ensureCheckpointStore,
  ensureNonceBucket,
  ensureResources,
  ensureWorkConsumer,
  MeshNames,
  NONCE_WINDOW_MS,
  streamConfigs,
} from "./resources.js";
export type { RetryInfo, RetryOptions } from "./retry.js";
export { retry } from "./retry.js";
export { parseCheckpointObject, poolName, Subjects } from "./subjects.js";
export { isValidToken, MAX_TOKEN_LENGTH, validToken } from "./tokens.js";
export type { AgentEventType, CoordinatorEventType, EventSource, TrialEventInit } from "./trial-events.js";
export {
  COORDINATOR,
  describeSource,
  expandEvent,
  reportBatch,
  reportSize,
  sourceOf,
  TrialEvents,
  TrialEventWriter,
  trialEvent,
} from "./trial-events.js";
export { RUNG_VERSION } from "./version.js";
