import type { WorkOrder } from "@rung/protocol";

/** What a secret value becomes in logs. */
export const SECRET_MASK = "***";

/**
 * Values shorter than this are not masked: masking "1" or "ab" would garble every log while hiding
 * nothing worth hiding.
 */
export const MIN_SECRET_LENGTH = 4;

/** The values of the order's `secretEnv` names, as the trial will see them. */
export function secretValues(order: Pick<WorkOrder, "env" | "secretEnv">): string[] {
  const out = new Set<string>();
  for (const name of order.secretEnv) {
    const value = order.env[name];
    if (value !== undefined && value.length >= MIN_SECRET_LENGTH) out.add(value);
  }
  return [...out];
}

/**
 * Masks secret values in a trial's terminal output before it goes anywhere (the logs stream, the local
 * log file, the log tail of a `finished` event), the way CI systems mask secrets: every occurrence
 * becomes `***`. Output arrives in arbitrary chunks, so a secret may be split between two of them: the
 * end of a chunk that could be the start of a secret is held back until the next chunk (or `flush`)
 * says whether it is one.
 *
 * Works on bytes through latin1, which maps each byte to one character and back, so output that is
 * not valid UTF-8 passes through unchanged.
 */
export class SecretMasker {
  readonly #secrets: string[];
  readonly #longest: number;
  #carry = "";

  constructor(secrets: readonly string[]) {
    // latin1 forms of the UTF-8 bytes, longest first so a secret that contains another is masked whole.
    this.#secrets = [...new Set(secrets.filter((s) => s.length >= MIN_SECRET_LENGTH))]
      .map((s) => Buffer.from(s, "utf8").toString("latin1"))
      .sort((a, b) => b.length - a.length);
    this.#longest = this.#secrets[0]?.length ?? 0;
  }

  get active(): boolean {
    return this.#secrets.length > 0;
  }

  /** The chunk with every secret masked, minus a tail held back because it may begin one. */
  push(chunk: Buffer): Buffer {
    if (!this.active) return chunk;
    let text = this.#mask(this.#carry + chunk.toString("latin1"));
    const hold = this.#heldBack(text);
    this.#carry = text.slice(text.length - hold);
    text = text.slice(0, text.length - hold);
    return Buffer.from(text, "latin1");
  }

  /** Whatever was held back (it was not a secret after all). */
  flush(): Buffer {
    const rest = this.#carry;
    this.#carry = "";
    return Buffer.from(rest, "latin1");
  }

  /** Masks a whole string at once (error messages). */
  maskText(text: string): string {
    if (!this.active) return text;
    return Buffer.from(this.#mask(Buffer.from(text, "utf8").toString("latin1")), "latin1").toString("utf8");
  }

  #mask(text: string): string {
    let out = text;
    for (const s of this.#secrets) out = out.split(s).join(SECRET_MASK);
    return out;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of a secret. */
  #heldBack(text: string): number {
    for (let k = Math.min(this.#longest - 1, text.length); k > 0; k--) {
      const tail = text.slice(text.length - k);
      if (this.#secrets.some((s) => s.length > k && s.startsWith(tail))) return k;
    }
    return 0;
  }
}
