import { isAbsolute, relative, resolve } from "node:path";
import {
  isAgentSpecificRejection,
  NONCE_WINDOW_MS,
  orderPool,
  type RejectReason,
  verifyOrder,
  type WorkOrder,
} from "@rung/protocol";
import type { CompiledAgentOptions } from "../options.js";
import type { Pool } from "./pools.js";

/**
 * ORDER ADMISSION: can this decoded order run on this agent? A pure function of the order, the pool
 * it arrived on, the agent's options, the clock and what the caller looked up (this agent's replay
 * ledger, the attempts running here, what this machine has through `probe`); no NATS, no disk. The
 * claim loop does the looking up and acts on the answer: run it; refuse it for a reason of this agent's
 * own (protocol's `isAgentSpecificRejection`: unsigned, untrusted-signer, cannot-run), which hands it
 * back for another agent; or reject it for good (`term`) — either way with a `rejected` event.
 *
 * The checks, in this order (the first that fails is the reason):
 *   1. signature against `--trust` (unsigned, untrusted-signer, bad-signature), expiry, and replay
 *      against this agent's ledger — protocol's `verifyOrder`; an order valid for longer than the
 *      nonce window is refused too, since its nonce would be forgotten before it expires. With
 *      `--insecure`, expiry only;
 *   2. the pool: the order's own pool and gang size must be the ones it arrived on (`malformed`);
 *   3. `--allow-command`: argv, joined by spaces, starts with an allowed prefix, whole arguments;
 *   4. the workdir lies inside the agent's `--workdir`, exists, and holds or finds the order's program
 *      (absolute, relative to the workdir, or on PATH) — asked of `probe` (`cannot-run`);
 *   5. the same attempt of the trial is not running here already (`replayed`).
 *
 * The mesh-wide replay check (the nonces bucket) needs NATS and comes later, once the slots are held:
 * see `SharedNonces` in `replay-ledger.ts`.
 */

/** Refusals that say someone may be attacking the mesh, logged as such (`security: true`). */
export const SECURITY_REASONS: ReadonlySet<RejectReason> = new Set<RejectReason>([
  "unsigned",
  "bad-signature",
  "untrusted-signer",
  "replayed",
  "command-not-allowed",
]);

/** The options admission reads. */
export type AdmissionPolicy = Pick<CompiledAgentOptions, "insecure" | "trust" | "allowCommand" | "workdir">;

/** Why an order cannot run here; `detail` is the sentence that goes into the `rejected` event. */
export interface Rejection {
  reason: RejectReason;
  detail: string;
}

export interface AdmissionInput {
  order: WorkOrder;
  /** The pool the order was pulled from. */
  pool: Pool;
  /** JetStream's delivery count of the message: 1 on the first delivery. */
  deliveryCount: number;
  policy: AdmissionPolicy;
  /** The clock, in ms since the epoch. */
  now: number;
  /**
   * This agent's replay ledger on the order's nonce and message: the reason when the message is a
   * copy of an order accepted before, else null (also with `--insecure`, which keeps no ledger).
   */
  replayed: string | null;
  /** Whether an attempt with this key (see {@link attemptKey}) is running on this agent. */
  isRunning(key: string): boolean;
  /**
   * Whether this machine can run `program` in `workdir` (absolute, inside `--workdir`), the order's own
   * PATH given when it sets one: null when it can, else why not (`whyCannotRun` in trial-runner.ts).
   */
  probe(workdir: string, program: string, path: string | undefined): string | null;
}

/**
 * The verdict. Either way it carries the attempt number: the one to run, or the one the `rejected`
 * event names — the order's own for a final rejection; for a refusal of this agent's own, the delivery's
 * (as if it ran), so that each agent refusing one order names another attempt (and its event another
 * message id); an attempt already running here names itself.
 */
export type Admission = { admit: true; attempt: number } | ({ admit: false; attempt: number } & Rejection);

/**
 * The attempt a delivery runs: the order's attempt plus redeliveries, so a redelivery after an agent
 * died (or lost its claim, or handed the order back) runs attempt 2.
 */
export function attemptNumber(order: Pick<WorkOrder, "attempt">, deliveryCount: number): number {
  return order.attempt + deliveryCount - 1;
}

/** The key of one attempt of one trial, unique in the mesh: `<study>.<trial>.<attempt>`. */
export function attemptKey(study: string, trial: string, attempt: number): string {
  return `${study}.${trial}.${attempt}`;
}

/** Admits or rejects an order that decoded. See the checks at the top. */
export function admitOrder(input: AdmissionInput): Admission {
  const { order } = input;
  const problem = checkOrder(input);
  const attempt = attemptNumber(order, input.deliveryCount);
  if (problem) return { admit: false, ...problem, attempt: isAgentSpecificRejection(problem.reason) ? attempt : order.attempt };
  if (input.isRunning(attemptKey(order.study, order.trial, attempt)))
    return {
      admit: false,
      reason: "replayed",
      detail: `attempt ${attempt} of this trial is already running on this agent`,
      attempt,
    };
  return { admit: true, attempt };
}

/** Checks 1–4 at the top: can this order run here at all? Null when it can. */
export function checkOrder(input: Omit<AdmissionInput, "deliveryCount" | "isRunning">): Rejection | null {
  const { order, pool, policy: o, now } = input;
  if (o.insecure) {
    if (order.expiresAt <= now)
      return { reason: "expired", detail: `the order expired at ${new Date(order.expiresAt).toISOString()}` };
  } else {
    const check = verifyOrder(order, { trusted: o.trust, now, replayed: () => input.replayed });
    if (!check.ok) return { reason: check.reason, detail: check.detail };
    if (order.expiresAt - now > NONCE_WINDOW_MS)
      return {
        reason: "expired",
        detail: `the order is valid until ${new Date(order.expiresAt).toISOString()}, beyond the ${NONCE_WINDOW_MS / 86_400_000}-day replay window; give orders a shorter life`,
      };
  }
  if (order.pool !== pool.name)
    return { reason: "malformed", detail: `an order for pool ${order.pool} arrived on pool ${pool.name}` };
  const gpus = order.resources.gpus;
  const fits =
    pool.shareClass !== undefined ? orderPool(order.resources) === pool.name : pool.kind === "gpu" ? gpus === pool.k : gpus === 0;
  if (!fits) return { reason: "malformed", detail: `an order for ${gpus} GPU(s) arrived on pool ${pool.name}` };
  if (o.allowCommand.length > 0) {
    const command = order.argv.join(" ");
    // A prefix matches whole arguments: "python train.py" allows "python train.py --lr 1", not "python train.pyc".
    if (!o.allowCommand.some((p) => command === p.trim() || command.startsWith(`${p.trim()} `)))
      return {
        reason: "command-not-allowed",
        detail: `${JSON.stringify(order.argv[0])} is not allowed by --allow-command on this agent`,
      };
  }
  const workdir = resolve(o.workdir, order.workdir);
  const rel = relative(o.workdir, workdir);
  // No coordinator sends this (a spec's workdir is relative and has no ".."): an order escaping its
  // agent's --workdir is about the order, not the agent, so it is final rather than handed on.
  if (rel.startsWith("..") || isAbsolute(rel))
    return {
      reason: "malformed",
      detail: `workdir ${JSON.stringify(order.workdir)} lies outside the agent's --workdir ${o.workdir}`,
    };
  const missing = input.probe(workdir, order.argv[0] as string, order.env.PATH);
  if (missing)
    return {
      reason: "cannot-run",
      detail: `${missing} (workdir ${JSON.stringify(order.workdir)} under --workdir ${o.workdir})`,
    };
  return null;
}
