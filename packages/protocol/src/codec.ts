import { Packr } from "msgpackr";
import type { z } from "zod";

/**
 * msgpack on the wire, zod on arrival. `decode` never throws: it returns the typed value or a typed
 * error, so a consumer loop can count and drop a bad message and go on.
 */

/** Messages above this are refused before unpacking (NATS' default max_payload is 1 MiB). */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

// Plain maps, no record extension: payloads stay readable by any msgpack library (the Python helper
// and other languages never need msgpackr's extensions).
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

export const DecodeErrorKind = {
  tooLarge: "too-large",
  msgpack: "msgpack",
  schema: "schema",
  /** Well-formed, but it does not belong where it arrived: its body names another subject's study or
   * trial, or a trial its study never created. Dropped and counted like the others. */
  stray: "stray",
} as const;
export type DecodeErrorKind = (typeof DecodeErrorKind)[keyof typeof DecodeErrorKind];

export class DecodeError extends Error {
  override name = "DecodeError";
  constructor(
    readonly kind: DecodeErrorKind,
    readonly schemaName: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; error: DecodeError };

export function decode<S extends z.ZodType>(schema: S, bytes: Uint8Array, schemaName = "message"): Decoded<z.infer<S>> {
  if (bytes.byteLength > MAX_MESSAGE_BYTES) {
    return {
      ok: false,
      error: new DecodeError(
        "too-large",
        schemaName,
        `${schemaName}: ${bytes.byteLength} bytes is over the ${MAX_MESSAGE_BYTES}-byte limit`,
      ),
    };
  }
  let raw: unknown;
  try {
    raw = packr.unpack(bytes);
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    return { ok: false, error: new DecodeError("msgpack", schemaName, `${schemaName}: not valid msgpack (${why})`, { cause }) };
  }
  let parsed: ReturnType<S["safeParse"]>;
  try {
    parsed = schema.safeParse(raw) as ReturnType<S["safeParse"]>;
  } catch (cause) {
    // zod does not throw from safeParse, but a refinement in a schema might; never let it escape.
    return { ok: false, error: new DecodeError("schema", schemaName, `${schemaName}: validation threw`, { cause }) };
  }
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const where = first && first.path.length > 0 ? first.path.join(".") : "(root)";
    return {
      ok: false,
      error: new DecodeError("schema", schemaName, `${schemaName}: ${where}: ${first?.message ?? "invalid"}`, {
        cause: parsed.error,
      }),
    };
  }
  return { ok: true, value: parsed.data as z.infer<S> };
}

export interface DropLogger {
  warn(obj: object, msg: string): void;
}

/**
 * Counts dropped messages by kind and warns once per kind, so a flood of garbage cannot flood the log.
 * Readers of a stream share one counter; its totals are what the chaos suite compares with what it
 * injected.
 */
export class BadMessageCounter {
  readonly #counts = new Map<string, number>();
  readonly #log: DropLogger | undefined;

  constructor(log?: DropLogger) {
    this.#log = log;
  }

  record(where: string, error: DecodeError): void {
    const key = `${where}:${error.kind}`;
    const n = (this.#counts.get(key) ?? 0) + 1;
    this.#counts.set(key, n);
    if (n === 1)
      this.#log?.warn(
        { where, kind: error.kind, err: error.message },
        "dropped a malformed message (further ones of this kind are counted, not logged)",
      );
  }

  get total(): number {
    let t = 0;
    for (const n of this.#counts.values()) t += n;
    return t;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.#counts);
  }
}
