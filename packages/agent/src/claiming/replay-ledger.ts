import { createHash } from "node:crypto";
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { KV } from "@nats-io/kv";
import { decode, encode, type Logger, type NonceRecord, NonceRecordSchema, SCHEMA_VERSION, type WorkOrder } from "@rung/protocol";
import { sleep } from "./timers.js";

/**
 * THE REPLAY RULE
 *
 * Every signed order carries a random nonce. A nonce belongs to the first work-stream message that
 * carried it to an agent, identified by its stream sequence AND the time the server stored it
 * ({@link MessageId}). The sequence alone is not enough: a work stream deleted and created again
 * numbers its messages from 1 again, so a copy of an old order could land on the old order's number.
 * The stored time is the server's, set when the message entered the stream; a redelivery keeps it,
 * and no copy published later can have it.
 *
 *   - the SAME message delivered again — JetStream redelivering it after its agent died, lost its
 *     claim or handed it back on drain — has the same sequence and stored time: not a replay. It runs as
 *     attempt `order.attempt + deliveries - 1`, as before;
 *   - ANOTHER message carrying a nonce already recorded — the signed order published again, by anyone,
 *     with or without a message id — is a replay: `term`, a `rejected` event with reason `replayed`
 *     and the claimed signer, and the process never starts. Its delivery count says nothing (it is 1
 *     for a fresh copy and can be more if the copy itself was redelivered), so it is not used.
 *
 * Two records, both checked before a trial starts:
 *   1. this agent's ledger, in its state dir (`accepted-orders.jsonl`), checked synchronously when the
 *      order arrives: a restarted agent still refuses a copy of an order it ran;
 *   2. the mesh's nonces bucket (`<prefix>-nonces`), written create-only when the attempt begins: the
 *      first agent to claim a message records it, so a copy that reaches ANOTHER agent is refused too.
 *
 * Both forget a nonce once its order has expired (an expired order is refused anyway): the ledger
 * keeps an entry until the order's `expiresAt`, the bucket for 7 days, and agents refuse orders valid
 * for longer than that. The ledger holds at most `maxEntries` (default 100 000) and drops the entries
 * that expire first when full; the bucket covers what it dropped. Records written before the stored
 * time was kept (ledger lines without `t`, bucket records without `stored`) are matched by sequence.
 *
 * A copy made before the original was claimed is caught the same way: whichever of the two messages
 * is claimed first runs, the other is a replay. When the bucket cannot be reached the order is handed
 * back, never run unchecked. Limits: agents may write the bucket, so a malicious agent can erase
 * records (each agent's own ledger still holds); unsigned orders (`--insecure`) are not checked at all,
 * since anyone able to publish them can make up a fresh nonce.
 *
 * This file is the I/O of the rule (the ledger file, the bucket); deciding what an answer means for
 * an order is admission's (`admission.ts`) and the claim loop's.
 */

/**
 * What identifies one work-stream message for good: its stream sequence and the time the server stored
 * it (nanoseconds since the epoch as a decimal string: `JsMsg.timestampNanos`), which a redelivery
 * keeps and a re-created stream cannot give another message.
 */
export interface MessageId {
  seq: number;
  stored: string;
}

/** A message as a record names it: its {@link MessageId}, or a sequence alone (records of older agents). */
export type MessageRef = MessageId | number;

function refOf(m: MessageRef): { seq: number; stored?: string } {
  return typeof m === "number" ? { seq: m } : m;
}

/** The identity of a pulled work message. */
export function messageIdOf(msg: { seq: number; timestampNanos: bigint }): MessageId {
  return { seq: msg.seq, stored: msg.timestampNanos.toString() };
}

/** Whether a record names this message; where either side's stored time is unknown, by sequence alone. */
function sameMessage(recorded: { seq: number; stored?: string | undefined }, id: { seq: number; stored?: string }): boolean {
  return recorded.seq === id.seq && (recorded.stored === undefined || id.stored === undefined || recorded.stored === id.stored);
}

/** `message 3 (stored 2026-11-30T11:50:55.123Z)`, for refusal details. */
export function describeMessage(m: { seq: number; stored?: string | undefined }): string {
  if (m.stored === undefined) return `work-stream message ${m.seq}`;
  let when = m.stored;
  try {
    when = new Date(Number(BigInt(m.stored) / 1_000_000n)).toISOString();
  } catch {
    // not a number: show it as it is
  }
  return `work-stream message ${m.seq} (stored ${when})`;
}

interface Entry {
  seq: number;
  /** Absent in lines written before the stored time was kept. */
  stored?: string;
  expiresAt: number;
}

export interface ReplayLedgerOptions {
  /** The append-only file in the agent's state dir. */
  file: string;
  /** Entries kept at most. Default 100 000. */
  maxEntries?: number;
  now?: () => number;
}

export class ReplayLedger {
  readonly file: string;
  readonly #max: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  #lines = 0;

  constructor(options: ReplayLedgerOptions) {
    this.file = options.file;
    this.#max = options.maxEntries ?? 100_000;
    this.#now = options.now ?? Date.now;
    this.#load();
    this.#compact();
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Null when this message may carry this nonce; the reason when it is a replay. */
  check(nonce: string, message: MessageRef): string | null {
    const id = refOf(message);
    const e = this.#entries.get(nonce);
    if (!e || e.expiresAt <= this.#now()) return null;
    if (sameMessage(e, id)) return null;
    return `this agent already accepted an order with nonce ${nonce} (${describeMessage(e)}); ${describeMessage(id)} is a copy`;
  }

  /** Remembers an accepted order, on disk before its process starts. */
  record(nonce: string, message: MessageRef, expiresAt: number): void {
    const id = refOf(message);
    const known = this.#entries.get(nonce);
    if (known && known.seq === id.seq && known.stored === id.stored) return;
    const entry: Entry = id.stored === undefined ? { seq: id.seq, expiresAt } : { seq: id.seq, stored: id.stored, expiresAt };
    this.#entries.set(nonce, entry);
    appendFileSync(this.file, `${JSON.stringify(line(nonce, entry))}\n`);
    this.#lines += 1;
    if (this.#entries.size > this.#max || this.#lines > 2 * this.#max) this.#compact();
  }

  #load(): void {
    mkdirSync(dirname(this.file), { recursive: true });
    if (!existsSync(this.file)) return;
    for (const line of readFileSync(this.file, "utf8").split("\n")) {
      if (!line.trim()) continue;
      try {
        const r = JSON.parse(line) as { n?: unknown; s?: unknown; t?: unknown; e?: unknown };
        if (typeof r.n === "string" && typeof r.s === "number" && typeof r.e === "number")
          this.#entries.set(r.n, { seq: r.s, expiresAt: r.e, ...(typeof r.t === "string" ? { stored: r.t } : {}) });
      } catch {
        // a line cut short by a crash: the entries before it still count
      }
    }
  }

  /** Drops expired entries (and, past the bound, those expiring first) and rewrites the file. */
  #compact(): void {
    const now = this.#now();
    const live = [...this.#entries].filter(([, e]) => e.expiresAt > now);
    live.sort((a, b) => a[1].expiresAt - b[1].expiresAt);
    const kept = live.slice(Math.max(0, live.length - this.#max));
    this.#entries.clear();
    for (const [n, e] of kept) this.#entries.set(n, e);
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, kept.map(([n, e]) => `${JSON.stringify(line(n, e))}\n`).join(""));
    renameSync(tmp, this.file);
    this.#lines = kept.length;
  }
}

/** One ledger line: `{n: nonce, s: sequence, t: stored time, e: expiresAt}`. */
function line(n: string, e: Entry): { n: string; s: number; t?: string; e: number } {
  return e.stored === undefined ? { n, s: e.seq, e: e.expiresAt } : { n, s: e.seq, t: e.stored, e: e.expiresAt };
}

/**
 * What the mesh says about a message's nonce: `first` (or the same message again: run it), `copy`
 * (another message carried it first: a replay), or `unreachable` (the bucket did not answer: hand the
 * order back rather than run it unchecked).
 */
export type MeshNonceResult = { kind: "first" } | { kind: "copy"; why: string } | { kind: "unreachable"; error: Error };

/**
 * A nonce as a KV key: its SHA-256, never the nonce itself. The nonce is what proves a claim
 * (protocol's claims.ts); a key that showed it would hand it to whoever reads the bucket.
 */
export function nonceKey(nonce: string): string {
  return createHash("sha256").update(`rung-nonce\0${nonce}`).digest("hex");
}

/** The mesh-wide half of the rule: the nonces bucket, written create-only. */
export class SharedNonces {
  readonly #kv: KV;
  readonly #agent: string;
  readonly #log: Logger;

  constructor(kv: KV, agent: string, log: Logger) {
    this.#kv = kv;
    this.#agent = agent;
    this.#log = log;
  }

  /**
   * Records that message `id` carries the order's nonce. Null when it is the first record or the same
   * message again; the reason when another message carried the nonce first. Throws when the bucket
   * cannot be reached (the caller hands the order back rather than run it unchecked).
   */
  async claim(order: WorkOrder, id: MessageId): Promise<string | null> {
    const key = nonceKey(order.nonce);
    const record: NonceRecord = {
      v: SCHEMA_VERSION,
      type: "nonce",
      seq: id.seq,
      stored: id.stored,
      agent: this.#agent,
      study: order.study,
      trial: order.trial,
      ts: Date.now(),
    };
    try {
      await this.#kv.create(key, encode(record));
      return null;
    } catch (err) {
      const existing = await this.#kv.get(key);
      if (!existing || existing.operation !== "PUT") throw err;
      const r = decode(NonceRecordSchema, existing.value, "nonce record");
      if (!r.ok) {
        this.#log.warn({ key }, "unreadable nonce record; treating the order as a replay");
        return `nonce ${order.nonce} is already recorded in the mesh (unreadable record)`;
      }
      if (sameMessage(r.value, id)) return null;
      return `an order with nonce ${order.nonce} was already accepted by agent ${r.value.agent} (${describeMessage(r.value)}); ${describeMessage(id)} is a copy`;
    }
  }

  /**
   * {@link claim}, tried three times with a growing pause while the bucket does not answer (not once
   * the connection is closed for good).
   */
  async claimRetrying(order: WorkOrder, id: MessageId, isClosed: () => boolean): Promise<MeshNonceResult> {
    let why: string | null = null;
    let failure: Error | undefined;
    for (let i = 0; i < 3; i++) {
      try {
        why = await this.claim(order, id);
        failure = undefined;
        break;
      } catch (err) {
        failure = err as Error;
        if (isClosed()) break;
        await sleep(500 * (i + 1));
      }
    }
    if (failure) return { kind: "unreachable", error: failure };
    return why === null ? { kind: "first" } : { kind: "copy", why };
  }
}
