import { readFileSync } from "node:fs";
import { createAccount, fromPublic, fromSeed, type KeyPair } from "@nats-io/nkeys";
import { SigningKeyError } from "./errors.js";
import { type RejectReason, type WorkOrder, WorkOrderSchema } from "./messages.js";

/**
 * SIGNED WORK ORDERS
 *
 * Whoever can publish a work order can run code on every agent, so the coordinator signs each order
 * with an ed25519 key (an nkey, as NATS uses them; `rung auth init` creates one) and an agent started
 * with `--trust PUBKEY` runs only orders that verify against one of its keys.
 *
 * What is signed: the order as the agent will act on it — parsed by `WorkOrderSchema` (so defaults
 * are filled in the same way on both sides and fields the agent would ignore are dropped) — with
 * `signer` and without `sig`, written as canonical JSON: object keys sorted at every level, no
 * whitespace. Any change to any field the agent reads (argv, env, params, workdir, expiry, nonce,
 * the signer itself) breaks the signature.
 *
 * What is checked, in order, each failure with its own reason:
 *   unsigned          no `sig` or no `signer`
 *   untrusted-signer  `signer` is not one of the agent's trusted keys
 *   bad-signature     `signer` is not a valid key, or the signature does not match the bytes
 *   expired           `expiresAt` has passed (checked after the signature: only then is it authentic)
 *   replayed          the caller's replay check says the nonce belongs to another message
 *
 * The agent adds its own checks afterwards (`--allow-command`, workdir); see claim-loop.ts, and
 * replay-ledger.ts for what counts as a replay.
 */

/** The outcome of {@link verifyOrder}. `sender` is the key the order claims, for the security event. */
export type OrderCheck =
  | { ok: true; signer: string }
  | { ok: false; reason: RejectReason; detail: string; sender: string | null };

export interface VerifyOrderOptions {
  /** Public keys whose signatures are accepted (`--trust`). */
  trusted: readonly string[];
  /** Clock for the expiry check. Default `Date.now()`. */
  now?: number;
  /** Called only for an authentic, unexpired order: a reason text when it is a replay, else null. */
  replayed?: (order: WorkOrder) => string | null;
}

/** JSON with object keys sorted at every level and no whitespace: equal values, equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    const s = JSON.stringify(value);
    return s === undefined ? "null" : s;
  }
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

/** The bytes a signature covers: the parsed order with `signer` and without `sig`, canonical JSON. */
export function orderSigningBytes(order: WorkOrder): Uint8Array {
  const parsed = WorkOrderSchema.safeParse({ ...order, sig: undefined });
  // An order that does not parse cannot be verified; sign what was given so the signature simply fails.
  const { sig: _sig, ...unsigned } = parsed.success ? parsed.data : order;
  return new TextEncoder().encode(canonicalJson(unsigned));
}

/** A signing key as `rung auth init` writes it: the seed (secret) and the public key (for `--trust`). */
export interface SigningKey {
  readonly seed: string;
  readonly publicKey: string;
}

/** A fresh ed25519 signing key (an nkey with the account prefix: public keys start with `A`). */
export function createSigningKey(): SigningKey {
  const kp = createAccount();
  return { seed: new TextDecoder().decode(kp.getSeed()), publicKey: kp.getPublicKey() };
}

const SEED_LINE = /^S[A-Z][A-Z2-7]{50,}$/;

/** The seed in a key file's text: the first line that looks like one (comments and blanks are skipped). */
export function seedFromText(text: string): string | undefined {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => SEED_LINE.test(l));
}

function keyPairOf(seed: string, what: string): KeyPair {
  try {
    return fromSeed(new TextEncoder().encode(seed.trim()));
  } catch (cause) {
    throw new SigningKeyError(what, "does not hold a valid nkey seed", { cause });
  }
}

/** Reads a signing key file (`--signing-key`, `RUNG_SIGNING_KEY`). Throws one clear sentence when it cannot. */
export function readSigningKey(file: string): SigningKey {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new SigningKeyError(file, code === "ENOENT" ? "does not exist" : `cannot be read (${code ?? String(cause)})`, {
      cause,
    });
  }
  const seed = seedFromText(text);
  if (!seed) throw new SigningKeyError(file, "does not hold an nkey seed (a line starting with S)");
  const kp = keyPairOf(seed, file);
  return { seed, publicKey: kp.getPublicKey() };
}

/** True when `key` is a valid nkey public key that can verify signatures. */
export function isValidPublicKey(key: string): boolean {
  try {
    fromPublic(key);
    return true;
  } catch {
    return false;
  }
}

function base64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64url");
}

/** Returns the order with `signer` set to the key's public key and `sig` over {@link orderSigningBytes}. */
export function signOrder(order: WorkOrder, seed: string): WorkOrder {
  const kp = keyPairOf(seed, "the signing key");
  const signed: WorkOrder = { ...order, signer: kp.getPublicKey() };
  delete signed.sig;
  return { ...signed, sig: base64url(kp.sign(orderSigningBytes(signed))) };
}

/** Checks an order against the trusted keys, its expiry and the caller's replay check. Never throws. */
export function verifyOrder(order: WorkOrder, options: VerifyOrderOptions): OrderCheck {
  const sender = order.signer ?? null;
  if (!order.sig || !order.signer)
    return {
      ok: false,
      reason: "unsigned",
      detail: "the order is not signed; this agent runs only orders signed by a key it trusts (--trust)",
      sender,
    };
  if (!options.trusted.includes(order.signer))
    return {
      ok: false,
      reason: "untrusted-signer",
      detail: `the order is signed by ${order.signer}, which is not one of this agent's --trust keys`,
      sender,
    };
  let valid = false;
  try {
    valid = fromPublic(order.signer).verify(orderSigningBytes(order), Buffer.from(order.sig, "base64url"));
  } catch {
    valid = false;
  }
  if (!valid)
    return {
      ok: false,
      reason: "bad-signature",
      detail: "the signature does not match the order: it was forged, or changed after it was signed",
      sender,
    };
  const now = options.now ?? Date.now();
  if (order.expiresAt <= now)
    return { ok: false, reason: "expired", detail: `the order expired at ${new Date(order.expiresAt).toISOString()}`, sender };
  const replay = options.replayed?.(order) ?? null;
  if (replay !== null) return { ok: false, reason: "replayed", detail: replay, sender };
  return { ok: true, signer: order.signer };
}
