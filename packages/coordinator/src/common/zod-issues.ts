import { z } from "zod";
import type { SpecProblem } from "../errors.js";

/**
 * Turns zod issues into one-line problems that name the field path and what is allowed
 * (`scheduler.reduction_factor: must be > 1, got 1`, `metric.mod: unknown key; did you mean "mode"?
 * allowed: name, mode`). Parse with `{ reportInput: true }` so messages can quote the bad value.
 * Internal to the package.
 */

/** A strict object whose unknown-key issues carry the allowed keys (read back by `issuesToProblems`). */
export function strictObject<T extends z.core.$ZodLooseShape>(shape: T) {
  const allowed = Object.keys(shape);
  return z.strictObject(shape, {
    error: (iss) => (iss.code === "unrecognized_keys" ? `${ALLOWED}${allowed.join(",")}` : undefined),
  });
}

const ALLOWED = "allowed:";

/** `search.space.lr`, `command[0]`, `env["A.B"]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else if (typeof key === "string" && /^[A-Za-z_][A-Za-z0-9_-]*$/.test(key)) out += out === "" ? key : `.${key}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

export function describeValue(x: unknown): string {
  if (x === undefined) return "nothing";
  if (typeof x === "number") return String(x);
  if (Array.isArray(x)) return "a list";
  if (x !== null && typeof x === "object") return "a mapping";
  return JSON.stringify(x) ?? String(x);
}

const EXPECTED: Record<string, string> = {
  number: "a number",
  int: "an integer",
  string: "a string",
  boolean: "true or false",
  array: "a list",
  object: "a mapping",
  record: "a mapping",
  null: "null",
};

const expectedWord = (e: string): string => EXPECTED[e] ?? e;

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const d: number[] = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0] as number;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j] as number;
      d[j] = Math.min((d[j] as number) + 1, (d[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length] as number;
}

export function suggest(word: string, candidates: readonly string[]): string | null {
  const w = word.toLowerCase();
  if (w.length >= 3) {
    const prefixed = candidates.filter((c) => c.toLowerCase().startsWith(w) || w.startsWith(c.toLowerCase()));
    if (prefixed.length === 1) return prefixed[0] as string;
  }
  let best: string | null = null;
  let bestD = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const dist = distance(word.toLowerCase(), c.toLowerCase());
    if (dist < bestD) {
      bestD = dist;
      best = c;
    }
  }
  return best !== null && bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : null;
}

/** A message the schema itself gives (`{ error: "must be …" }`), in the spec's own words: kept. */
function ownMessage(iss: z.core.$ZodIssue): string | null {
  return /^(must|is) /.test(iss.message) ? iss.message : null;
}

function unionMessage(iss: z.core.$ZodIssueInvalidUnion): string {
  const input = (iss as { input?: unknown }).input;
  const own = ownMessage(iss);
  if (own !== null && (input === null || typeof input !== "object" || Array.isArray(input)))
    return input === undefined ? own : `${own}, got ${describeValue(input)}`;
  if ((iss as { note?: string }).note === "No matching discriminator") {
    const options = ((iss as { options?: unknown[] }).options ?? []).map(String).join(", ");
    const disc = (iss as { discriminator?: string }).discriminator ?? "type";
    const got = input !== null && typeof input === "object" ? (input as Record<string, unknown>)[disc] : undefined;
    return got === undefined ? `is required; one of ${options}` : `must be one of ${options}, got ${describeValue(got)}`;
  }
  const expected = new Set<string>();
  for (const branch of iss.errors) {
    for (const sub of branch) if (sub.code === "invalid_type" && sub.path.length === 0) expected.add(expectedWord(sub.expected));
  }
  if (expected.size > 0) {
    const list = [...expected];
    const words = list.length === 1 ? list[0] : `${list.slice(0, -1).join(", ")} or ${list[list.length - 1]}`;
    return input === undefined ? `is required (${words})` : `must be ${words}, got ${describeValue(input)}`;
  }
  // A branch matched the type but failed deeper: report that branch's first issue (one inside the value
  // first: `{ mode: manual }` failed on `mode`, not on not being `auto`).
  const deeper = iss.errors.find((b) => (b[0]?.path.length ?? 0) > 0)?.[0] ?? iss.errors.find((b) => b.length > 0)?.[0];
  if (!deeper) return own ?? iss.message;
  return deeper.path.length > 0 ? `${formatPath(deeper.path)}: ${issueMessage(deeper)}` : issueMessage(deeper);
}

function issueMessage(iss: z.core.$ZodIssue): string {
  const input = (iss as { input?: unknown }).input;
  switch (iss.code) {
    case "invalid_type":
      return input === undefined
        ? `is required (${expectedWord(iss.expected)})`
        : `must be ${expectedWord(iss.expected)}, got ${describeValue(input)}`;
    case "too_small": {
      const own = ownMessage(iss);
      if (own !== null) return `${own}, got ${describeValue(input)}`;
      const min = String(iss.minimum);
      if (iss.origin === "array") return `must list at least ${min} item${min === "1" ? "" : "s"}`;
      if (iss.origin === "string") return min === "1" ? "must not be empty" : `must be at least ${min} characters long`;
      return `must be ${iss.inclusive ? ">=" : ">"} ${min}, got ${describeValue(input)}`;
    }
    case "too_big": {
      const max = String(iss.maximum);
      if (iss.origin === "array") return `must list at most ${max} items`;
      if (iss.origin === "string") return `must be at most ${max} characters long`;
      if (iss.origin === "int" && iss.maximum === Number.MAX_SAFE_INTEGER)
        return `must be a safe integer, got ${describeValue(input)}`;
      return `must be ${iss.inclusive ? "<=" : "<"} ${max}, got ${describeValue(input)}`;
    }
    case "invalid_value":
      return input === undefined
        ? `is required; one of ${iss.values.map(String).join(", ")}`
        : `must be one of ${iss.values.map(String).join(", ")}, got ${describeValue(input)}`;
    case "invalid_union":
      return unionMessage(iss);
    case "not_multiple_of":
      return `must be a multiple of ${String(iss.divisor)}, got ${describeValue(input)}`;
    default:
      return iss.message;
  }
}

/** zod issues -> problems with dotted paths, one per unknown key. `prefix` is prepended to every path. */
export function issuesToProblems(issues: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[] = []): SpecProblem[] {
  const out: SpecProblem[] = [];
  for (const iss of issues) {
    const path = [...prefix, ...iss.path];
    if (iss.code === "unrecognized_keys") {
      const allowed = iss.message.startsWith(ALLOWED) ? iss.message.slice(ALLOWED.length).split(",").filter(Boolean) : [];
      for (const key of iss.keys) {
        const guess = suggest(key, allowed);
        const hint = guess ? `did you mean ${JSON.stringify(guess)}? ` : "";
        out.push({
          path: formatPath([...path, key]),
          message: `unknown key; ${hint}${allowed.length > 0 ? `allowed here: ${allowed.join(", ")}` : "remove it"}`,
        });
      }
      continue;
    }
    out.push({ path: formatPath(path), message: issueMessage(iss) });
  }
  return out;
}
