import { createHash, randomBytes } from "node:crypto";

/**
 * WHAT ONLY THE CLAIMANT CAN SAY
 *
 * A signed order carries a random nonce, and JetStream hands each delivery of a work message to one
 * puller only (the shared consumers' deliveries travel on the puller's own inbox). The coordinator
 * writes the nonce into the attempt's `queued` event, which agents cannot read (permissions.ts). So:
 *
 *   claim proof   sha256("rung-claim", nonce, study, trial, attempt, agent), carried by `claimed` (and
 *                 `rejected`): only an agent that was handed the order can compute it, and only for
 *                 itself. Readers recompute it from the `queued` event; the first `claimed` of an
 *                 attempt whose proof checks out names the attempt's claimant, and only the claimant's
 *                 `started`, `report`, `finished` and log chunks count for that attempt.
 *   id tag        sha256("rung-id", nonce, agent), first 16 hex digits, ends the message ids of an
 *                 agent's events and log chunks. JetStream de-duplicates message ids across a whole
 *                 stream: an id another box could predict would let it publish first under that id
 *                 and have the real message dropped as a duplicate.
 *   study secret  the coordinator's tag (16 random hex digits in the study record, which agents cannot
 *                 read) ends the message ids of the coordinator's events, for the same reason.
 *
 * A nonce cannot be learnt from the nonces bucket either: its keys are hashes of nonces
 * (replay-ledger.ts `nonceKey`) and agents may read it by key only.
 */

function digest(parts: readonly (string | number)[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(String(p)).update("\0");
  return h.digest("hex");
}

export interface ClaimIdentity {
  readonly nonce: string;
  readonly study: string;
  readonly trial: string;
  readonly attempt: number;
  readonly agent: string;
}

/** The proof an agent's `claimed` (or `rejected`) carries for one attempt. */
export function claimProof(c: ClaimIdentity): string {
  return digest(["rung-claim", c.nonce, c.study, c.trial, c.attempt, c.agent]);
}

/** The tag that ends the message ids of one agent's events and log chunks for an order. */
export function agentIdTag(nonce: string, agent: string): string {
  return digest(["rung-id", nonce, agent]).slice(0, 16);
}

/** A fresh study secret (the coordinator's id tag), drawn when a study is first run. */
export function newStudySecret(): string {
  return randomBytes(8).toString("hex");
}
