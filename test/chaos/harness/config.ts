import { join, resolve } from "node:path";
import { REPO } from "@rung/testkit";

/** Where the suite's files are, and the timings every scenario shares. */

export const CHAOS_DIR = resolve(import.meta.dirname, "..");
export const TRIAL = join(CHAOS_DIR, "fixtures", "chaos-trial.mjs");
export const RESULTS_DIR = join(REPO, "test-results");
export const RESULTS_FILE = join(RESULTS_DIR, "chaos.jsonl");
/** Claim lease of every agent and coordinator lease of every `study run` in the suite. */
export const LEASE = "3s";
export const LEASE_MS = 3000;
/** Agents heartbeat at a third of the lease. */
export const HEARTBEAT_MS = 1000;
/** Malformed report lines the fixture's bad-json mode writes (BAD_LINES in chaos-trial.mjs). */
export const BAD_REPORT_LINES = 7;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
