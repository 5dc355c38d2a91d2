import { InvalidTokenError } from "./errors.js";

/** Longest study, trial, agent or pool name accepted. */
export const MAX_TOKEN_LENGTH = 64;

const TOKEN = /^[A-Za-z0-9_-]+$/;

/**
 * Every name that ends up inside a NATS subject or KV key goes through here. NATS treats `.` as a
 * separator and `*`/`>` as wildcards, so a trial named `a.b` or `*` would silently address the wrong
 * messages; we keep to a conservative alphabet that is also valid for stream, consumer and bucket names.
 */
export function validToken(value: string, what = "name"): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new InvalidTokenError(what, String(value), "is empty");
  }
  if (value.length > MAX_TOKEN_LENGTH) {
    throw new InvalidTokenError(what, value, `is ${value.length} characters long`);
  }
  if (!TOKEN.test(value)) {
    const bad = [...value].find((c) => !/[A-Za-z0-9_-]/.test(c)) ?? "";
    const shown = /\s/.test(bad) ? "whitespace" : JSON.stringify(bad);
    throw new InvalidTokenError(what, value, `contains ${shown}`);
  }
  return value;
}

/** Same check as {@link validToken}, as a boolean, for zod refinements and filters. */
export function isValidToken(value: string): boolean {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_TOKEN_LENGTH && TOKEN.test(value);
}
