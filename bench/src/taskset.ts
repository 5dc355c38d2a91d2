import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { REPO } from "./common.js";

/**
 * The real TaskSet learning curves in `../shared/data/taskset/` (relative to the repository): 1,000
 * configurations × 51 validation losses per file, lower is better, point i = the loss after i equal
 * units of training. Two files carry bare `NaN` tokens (diverged runs), which strict JSON rejects: they
 * are read as NaN, "a failed measurement".
 */

export const TASKSET_DIR = resolve(REPO, "..", "shared", "data", "taskset");

export interface CurveFile {
  /** File name without `.json`. */
  name: string;
  /** A short label for tables: the architecture token (LSTM128, GRU64, …). */
  label: string;
  /** valid[config][point], point 0..50. */
  valid: Float64Array[];
  /** Best final (point 50) validation loss in the file, NaN ignored. */
  bestFinal: number;
}

export function taskSetFiles(): string[] {
  if (!existsSync(TASKSET_DIR)) {
    throw new Error(
      `the TaskSet curves are missing: expected ${TASKSET_DIR} (the shared data next to the repository) — fetch ../shared/data/taskset before running this benchmark`,
    );
  }
  const files = readdirSync(TASKSET_DIR)
    .filter((f) => f.endsWith(".json"))
    .sort();
  if (files.length === 0) throw new Error(`no TaskSet curve files (*.json) in ${TASKSET_DIR}`);
  return files.map((f) => join(TASKSET_DIR, f));
}

/** JSON with bare NaN / Infinity tokens outside strings, as Python's json module writes them. */
export function parseLooseJson(text: string): unknown {
  // Only tokens outside strings: walk the text once, copying strings verbatim.
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (text.startsWith("NaN", i)) {
      out += '"__NaN__"';
      i += 3;
    } else if (text.startsWith("-Infinity", i)) {
      out += '"__-Inf__"';
      i += 9;
    } else if (text.startsWith("Infinity", i)) {
      out += '"__Inf__"';
      i += 8;
    } else {
      // copy a run of ordinary characters at once
      let j = i + 1;
      while (j < text.length && text[j] !== '"' && text[j] !== "N" && text[j] !== "I" && text[j] !== "-") j++;
      if (j === i + 1 && text[i] === "-") {
        out += "-";
        i += 1;
        continue;
      }
      out += text.slice(i, j);
      i = j;
    }
  }
  return JSON.parse(out, (_k, v) =>
    v === "__NaN__" ? Number.NaN : v === "__Inf__" ? Number.POSITIVE_INFINITY : v === "__-Inf__" ? Number.NEGATIVE_INFINITY : v,
  );
}

export function loadCurveFile(path: string): CurveFile {
  const name =
    path
      .split("/")
      .at(-1)
      ?.replace(/\.json$/, "") ?? path;
  const raw = parseLooseJson(readFileSync(path, "utf8")) as { valid: { loss: (number | null)[] } }[];
  const valid = raw.map((c) => Float64Array.from(c.valid.loss, (x) => (x === null ? Number.NaN : x)));
  let bestFinal = Number.POSITIVE_INFINITY;
  for (const v of valid) {
    const f = v[v.length - 1] as number;
    if (f < bestFinal) bestFinal = f;
  }
  const label = /_(LSTM\d+|GRU\d+|IRNN\d+|VRNN\d+)/.exec(name)?.[1] ?? name;
  return { name, label, valid, bestFinal };
}
