// The chaos harness: a mesh of real `rung` processes (agents, `rung study run`) on a real nats-server,
// faults injected from outside (signals, server restarts, garbage, full disks), and at the end an
// account of the study from two independent sources — its event stream and the processes /proc saw.
//
//   config    paths, leases and timings every scenario shares
//   spec      study specs for the chaos fixture trial
//   mesh      ChaosMesh: starts agents and coordinators, injects faults, finishes and accounts
//   watcher   follows the study's processes through /proc
//   events    the study's events with their stored times; attempts running now (victims)
//   faults    what a fault is, and what counts as recovering from it
//   logs      counters the processes logged
//   report    the account of a study, and the row each scenario adds to test-results/chaos.jsonl
//   fixture   the suite's `it`: a server (or cluster) per file, a ChaosMesh per test, the leak check

export { BAD_REPORT_LINES, HEARTBEAT_MS, LEASE, LEASE_MS, RESULTS_FILE, sleep, TRIAL } from "./config.js";
export { addCounts, byWhere, countBy } from "./counts.js";
export type { RunningAttempt, TimedEvent } from "./events.js";
export { clearOfRungs, hadWorkLeft, runningAttempts } from "./events.js";
export type { Fault, KillCost } from "./faults.js";
export { anyProgress, coordinatorProgress, killCosts, killCostText, trialMovedOn } from "./faults.js";
export { it } from "./fixture.js";
export type { AgentStopLine } from "./logs.js";
export type { OpenOptions } from "./mesh.js";
export { ChaosMesh } from "./mesh.js";
export type { ChaosReport, ChaosRow, FinishOptions } from "./report.js";
export { appendRow, rowWithoutStudy } from "./report.js";
export type { ChaosSpecOptions } from "./spec.js";
export { chaosSpec } from "./spec.js";
export type { ObservedProcess } from "./watcher.js";
export { TrialWatcher } from "./watcher.js";
