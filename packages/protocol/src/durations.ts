import { DurationError } from "./errors.js";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `"30s"` → 30000. Numbers are taken as milliseconds. Friendly values in, plain `…Ms` numbers out. */
export function parseDuration(value: string | number, what = "duration"): number {
  if (typeof value === "number") {
    if (Number.isFinite(value) && value >= 0) return value;
    throw new DurationError(what, value);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
  if (!m) throw new DurationError(what, value);
  const n = Number(m[1]);
  const unit = m[2] ?? "ms";
  return Math.round(n * (UNITS[unit] as number));
}

/**
 * 30000 → `"30s"`: a duration as a user writes it in a flag or spec (`parseDuration` reads it back),
 * in whole hours or minutes when it is one, else in seconds to a tenth.
 */
export function durationText(ms: number): string {
  if (ms > 0 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms > 0 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 100) / 10}s`;
}

/** Milliseconds to JetStream nanoseconds. */
export function nanos(ms: number): number {
  return Math.round(ms * 1_000_000);
}
