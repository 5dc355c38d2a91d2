/**
 * `packing: auto`: how many trials of a study share one GPU, decided by the coordinator from what the
 * study's own trials did. Pure: the evidence comes in, a level and a sentence come out; the
 * coordinator records each decision in the `queued` event of the order it sized (`packing`), so a
 * restarted coordinator, `rung replay` and the report read the levels back from the event stream and
 * never need the telemetry that led to them.
 *
 * The ladder: 1 → 2 → 4 → 8 trials per GPU (powers of two, and `max_per_gpu` itself when it is not
 * one). At level n an order asks for a share of ⌊100 / n⌋ % of a GPU (`packingShare`) and for
 * `gpu_memory` = the peak seen alone × (1 + `memory_margin`) (or the spec's own `gpu_memory`, if
 * larger); at level 1 it asks for what the spec says, as without packing.
 *
 *   observe   fewer than MIN_ALONE_TRIALS trials have run alone (one per GPU) for MIN_SAMPLES GPU
 *             samples each: stay at 1.
 *   raise     the next level still fits: n × busy ≤ `target_busy` (busy: the highest p90 GPU
 *             utilization of a trial alone) and n × memory need ≤ the GPU's memory — and, above
 *             level 1, the trials packed at this level ran their epochs no more than `slowdown`
 *             slower than alone (MIN_EPOCHS epochs measured at each). One step at a time: each
 *             level is measured before the next.
 *   back-off  packed epochs are more than `slowdown` slower than alone epochs: one step down, and
 *             never above that level again (the ceiling), so the study does not oscillate.
 *   hold      otherwise; the sentence says what bounds it (busy, memory, max_per_gpu, the ceiling).
 *
 * Epoch time: the time between two reports of one attempt divided by the time attribute's advance
 * between them (seconds per epoch); the interval up to an attempt's first report (start-up) is left
 * out. Alone epochs are those of attempts queued at level 1 (or run alone after running out of
 * memory); packed ones those of attempts queued at the current level since the study reached it.
 * Where attempts are too short to have two reports (promotion-based ASHA runs most of them for one
 * epoch), the slowdown is judged on the time from each first attempt's start to its first report
 * instead (later attempts restore a checkpoint first), alone against packed, once there are
 * MIN_ALONE_TRIALS alone and MIN_EPOCHS packed. That time includes the process's start-up, which is
 * mostly CPU: on a box with few cores, many trials starting at once read as a slowdown too — rightly, as
 * far as the trials' time goes.
 */

/** `packing` as compiled from the spec (defaults applied). */
export interface PackingSpec {
  readonly mode: "auto";
  /** Raise only while (trials per GPU) × (busy share of one trial alone) stays at or under this. Default 0.8. */
  readonly targetBusy: number;
  /** Memory asked per packed trial: its peak alone × (1 + this). Default 0.2. */
  readonly memoryMargin: number;
  /** Never more trials on one GPU than this (1–16). Default 8. */
  readonly maxPerGpu: number;
  /** Back off when packed epochs are slower than alone ones by more than this share. Default 0.25. */
  readonly slowdown: number;
}

export const PACKING_DEFAULTS = { targetBusy: 0.8, memoryMargin: 0.2, maxPerGpu: 8, slowdown: 0.25 } as const;

/** Trials measured alone before the first raise. */
export const MIN_ALONE_TRIALS = 2;
/** GPU samples a trial alone needs to count (telemetry comes once a second by default). */
export const MIN_SAMPLES = 3;
/** Epochs measured at a level (and alone) before a slowdown is judged. */
export const MIN_EPOCHS = 4;

export const PackingStep = { observe: "observe", hold: "hold", raise: "raise", backOff: "back-off" } as const;
export type PackingStep = (typeof PackingStep)[keyof typeof PackingStep];

/** A decision, as the `queued` event of the order it sized carries it. */
export interface PackingLevel {
  readonly perGpu: number;
  /** Memory each order at this level declares; null: the spec's `gpu_memory` (level 1). */
  readonly gpuMemoryMiB: number | null;
  readonly step: PackingStep;
  readonly why: string;
}

/** What the trials that ran alone showed (runtime/packing-evidence: the diagnosis' join of telemetry). */
export interface AloneEvidence {
  /** Trials alone on a GPU with at least MIN_SAMPLES samples. */
  readonly trials: number;
  /** The highest GPU memory any of them used (MiB). */
  readonly peakMemoryMiB: number;
  /** The smallest GPU they ran on (MiB). */
  readonly gpuMemoryMiB: number;
  /** The highest busy share (p90 utilization, 0–1) of any of them. */
  readonly busy: number;
}

export interface PackingInput {
  readonly spec: PackingSpec;
  /** The spec's `resources.gpu_memory`, if any: a floor for what a packed trial declares. */
  readonly declaredMemoryMiB: number | null;
  /** The level of the last order queued; null before the first. */
  readonly current: PackingLevel | null;
  /** The highest level allowed after a back-off (else `spec.maxPerGpu`). */
  readonly ceiling: number;
  readonly alone: AloneEvidence | null;
  /**
   * Seconds per epoch: alone, and packed at the current level since the study reached it; `starts`:
   * seconds from an attempt's start to its first report, the same way.
   */
  readonly epochs: {
    readonly alone: readonly number[];
    readonly packed: readonly number[];
    readonly starts?: { readonly alone: readonly number[]; readonly packed: readonly number[] };
  };
}

/** 1, 2, 4, 8, … up to `max`, and `max` itself. */
export function packingLadder(max: number): number[] {
  const out: number[] = [];
  for (let n = 1; n < max; n *= 2) out.push(n);
  out.push(max);
  return out;
}

/** The share of a GPU an order at `perGpu` trials per GPU asks for: whole percent, 1 for one. */
export function packingShare(perGpu: number): number {
  return perGpu <= 1 ? 1 : Math.floor(100 / perGpu) / 100;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** How much slower packed epochs are than alone ones (0.41 = 41 % slower); null until both have MIN_EPOCHS. */
export function packedSlowdown(epochs: PackingInput["epochs"]): number | null {
  if (epochs.alone.length < MIN_EPOCHS || epochs.packed.length < MIN_EPOCHS) return null;
  const alone = median(epochs.alone);
  return alone > 0 ? median(epochs.packed) / alone - 1 : null;
}

/** The slowdown and what it was measured on: epochs, or (attempts too short for epochs) first reports. */
export interface Slowdown {
  readonly value: number;
  readonly of: "epochs" | "first reports";
}

/**
 * Epochs when both sides have MIN_EPOCHS of them, else the start-to-first-report times (packed: MIN_EPOCHS;
 * alone: MIN_ALONE_TRIALS, as many as the study runs alone before it raises); null until then.
 */
export function packedSlowdownOf(epochs: PackingInput["epochs"]): Slowdown | null {
  const e = packedSlowdown(epochs);
  if (e !== null) return { value: e, of: "epochs" };
  const s = epochs.starts;
  if (!s || s.alone.length < MIN_ALONE_TRIALS || s.packed.length < MIN_EPOCHS) return null;
  const alone = median(s.alone);
  return alone > 0 ? { value: median(s.packed) / alone - 1, of: "first reports" } : null;
}

const pct = (x: number) => `${Math.round(x * 100)} %`;
const gib = (mib: number) => `${(mib / 1024).toFixed(mib < 10 * 1024 ? 1 : 0)} GiB`;

/** "peak 1.2 GiB of 80 GiB, busy 18 %": the evidence alone, as the report says it. */
export function aloneText(a: AloneEvidence): string {
  return `peak ${gib(a.peakMemoryMiB)} of ${gib(a.gpuMemoryMiB)}, busy ${pct(a.busy)}`;
}

function slowText(s: Slowdown): string {
  const what = s.of === "epochs" ? "packed epochs" : "packed trials' first reports";
  return s.value >= 0 ? `${what} ${pct(s.value)} slower` : `${what} ${pct(-s.value)} faster`;
}

/** The level the next order is sized at, and why. */
export function decidePacking(input: PackingInput): PackingLevel {
  const { spec, current, alone, declaredMemoryMiB } = input;
  const cur = current?.perGpu ?? 1;
  const ladder = packingLadder(spec.maxPerGpu);
  const below = [...ladder].reverse().find((n) => n < cur) ?? 1;
  const slow = cur > 1 ? packedSlowdownOf(input.epochs) : null;
  const need = alone === null ? null : Math.max(Math.ceil(alone.peakMemoryMiB * (1 + spec.memoryMargin)), declaredMemoryMiB ?? 0);
  const level = (perGpu: number, step: PackingStep, why: string): PackingLevel => ({
    perGpu,
    // A trial that used no GPU memory alone (it computes on the CPU, or its GPU reports none) declares
    // none: an order's memory is a positive number or absent.
    gpuMemoryMiB:
      perGpu > 1 && need !== null
        ? need > 0
          ? need
          : null
        : perGpu > 1
          ? (current?.gpuMemoryMiB ?? declaredMemoryMiB)
          : declaredMemoryMiB,
    step,
    why,
  });

  if (slow !== null && slow.value > spec.slowdown)
    return level(below, PackingStep.backOff, `${slowText(slow)} than alone, over the ${pct(spec.slowdown)} allowed`);
  if (alone === null || alone.trials < MIN_ALONE_TRIALS || need === null) {
    const seen = alone?.trials ?? 0;
    return cur > 1
      ? level(cur, PackingStep.hold, "no measurements alone to go on")
      : level(1, PackingStep.observe, `observing: ${seen} of ${MIN_ALONE_TRIALS} trials measured alone`);
  }
  const fitsBusy = (n: number) => n * alone.busy <= spec.targetBusy + 1e-9;
  const fitsMemory = (n: number) => n * need <= alone.gpuMemoryMiB;
  const bound = Math.min(spec.maxPerGpu, input.ceiling);
  const desired = ladder.filter((n) => n <= bound && fitsBusy(n) && fitsMemory(n)).at(-1) ?? 1;
  const evidence = aloneText(alone);
  if (desired < cur) {
    const why = !fitsBusy(cur)
      ? `busy ${pct(alone.busy)} alone: ${cur} per GPU would be ${pct(cur * alone.busy)}, over the ${pct(spec.targetBusy)} target`
      : `${cur} × ${gib(need)} would not fit in ${gib(alone.gpuMemoryMiB)}`;
    return level(desired, PackingStep.backOff, why);
  }
  if (desired > cur) {
    const next = ladder.find((n) => n > cur) ?? cur;
    if (cur === 1) return level(next, PackingStep.raise, evidence);
    if (slow !== null) return level(next, PackingStep.raise, `${evidence}; ${slowText(slow)}`);
    return level(cur, PackingStep.hold, `${evidence}; measuring epochs at ${cur} per GPU before going on`);
  }
  // Stays: say what bounds it.
  const next = ladder.find((n) => n > cur);
  let why: string;
  if (next === undefined || cur >= spec.maxPerGpu) why = `${evidence}; at max_per_gpu ${spec.maxPerGpu}`;
  else if (next > input.ceiling) why = `${evidence}; backed off from ${next} earlier`;
  else if (!fitsBusy(next))
    why = `busy ${pct(alone.busy)} alone: ${next} per GPU would be ${pct(next * alone.busy)}, over the ${pct(spec.targetBusy)} target`;
  else why = `peak ${gib(alone.peakMemoryMiB)} alone: ${next} × ${gib(need)} would not fit in ${gib(alone.gpuMemoryMiB)}`;
  return level(cur, PackingStep.hold, why);
}

/**
 * The packing history of a study, folded from its `queued` events in stream order: the current level,
 * the ceiling after back-offs, the epoch times of each attempt by the level it was queued at, and the
 * changes (for the report). Feeding the same events gives the same state, so a restarted coordinator
 * decides on from where it stopped.
 */
export class PackingLedger {
  readonly #spec: PackingSpec;
  #current: PackingLevel | null = null;
  #ceiling: number;
  /** When the current level began: only epochs of attempts queued since count as packed. */
  #levelSince = 0;
  #queued = 0;
  readonly #attempts = new Map<
    string,
    { perGpu: number; order: number; startedTs: number | null; lastTs: number | null; lastT: number | null }
  >();
  readonly #alone: number[] = [];
  readonly #packed = new Map<number, { order: number; s: number }[]>();
  readonly #startsAlone: number[] = [];
  readonly #startsPacked = new Map<number, { order: number; s: number }[]>();
  readonly changes: { trial: string; level: PackingLevel }[] = [];

  constructor(spec: PackingSpec) {
    this.#spec = spec;
    this.#ceiling = spec.maxPerGpu;
  }

  get current(): PackingLevel | null {
    return this.#current;
  }

  get ceiling(): number {
    return this.#ceiling;
  }

  /**
   * An order was queued at `level` (its `queued` event; the first of an attempt counts). `alone`: the
   * order asked for a whole GPU whatever the level (a retry after running out of memory).
   */
  onQueued(trial: string, attempt: number, level: PackingLevel, alone = false): void {
    const key = `${trial}#${attempt}`;
    if (this.#attempts.has(key)) return;
    this.#queued += 1;
    const prev = this.#current;
    if (prev === null || prev.perGpu !== level.perGpu) this.#levelSince = this.#queued;
    if (level.step === PackingStep.backOff) this.#ceiling = Math.min(this.#ceiling, level.perGpu);
    if (prev === null || prev.perGpu !== level.perGpu || (prev.step === PackingStep.observe && level.step !== prev.step))
      this.changes.push({ trial, level });
    this.#current = level;
    this.#attempts.set(key, {
      perGpu: alone ? 1 : level.perGpu,
      order: this.#queued,
      startedTs: null,
      lastTs: null,
      lastT: null,
    });
  }

  /** An attempt's process started (its `started` event). */
  onStarted(trial: string, attempt: number, ts: number): void {
    const a = this.#attempts.get(`${trial}#${attempt}`);
    if (a && a.startedTs === null) a.startedTs = ts;
  }

  /** A report of an attempt: its time attribute `t` at `ts`. */
  onReport(trial: string, attempt: number, ts: number, t: number | undefined): void {
    const a = this.#attempts.get(`${trial}#${attempt}`);
    if (!a || t === undefined || !Number.isFinite(t)) return;
    // First attempts only: a later one restores a checkpoint first, which alone attempts never do.
    if (attempt === 1 && a.lastT === null && a.startedTs !== null && ts >= a.startedTs) {
      const s = (ts - a.startedTs) / 1000;
      if (a.perGpu === 1) this.#startsAlone.push(s);
      else push(this.#startsPacked, a.perGpu, { order: a.order, s });
    }
    if (a.lastTs !== null && a.lastT !== null && t > a.lastT && ts >= a.lastTs) {
      const s = (ts - a.lastTs) / 1000 / (t - a.lastT);
      if (a.perGpu === 1) this.#alone.push(s);
      else push(this.#packed, a.perGpu, { order: a.order, s });
    }
    if (a.lastT === null || t > a.lastT) {
      a.lastTs = ts;
      a.lastT = t;
    }
  }

  /** Epoch times: alone, and packed at the current level since the study reached it. */
  epochs(): PackingInput["epochs"] {
    const cur = this.#current?.perGpu ?? 1;
    const since = (m: Map<number, { order: number; s: number }[]>) =>
      cur > 1 ? (m.get(cur) ?? []).filter((e) => e.order >= this.#levelSince).map((e) => e.s) : [];
    return {
      alone: [...this.#alone],
      packed: since(this.#packed),
      starts: { alone: [...this.#startsAlone], packed: since(this.#startsPacked) },
    };
  }

  /** The next order's level. */
  decide(alone: AloneEvidence | null, declaredMemoryMiB: number | null): PackingLevel {
    return decidePacking({
      spec: this.#spec,
      declaredMemoryMiB,
      current: this.#current,
      ceiling: this.#ceiling,
      alone,
      epochs: this.epochs(),
    });
  }
}

function push(m: Map<number, { order: number; s: number }[]>, perGpu: number, e: { order: number; s: number }): void {
  const list = m.get(perGpu);
  if (list) list.push(e);
  else m.set(perGpu, [e]);
}

/**
 * What packing chose and why, in one line:
 * `4 trials per GPU from t0009 on (peak 1.2 GiB of 80 GiB, busy 18 %); backed off to 2 at t0031 (packed epochs 41 % slower …)`.
 */
export function packingText(
  changes: readonly { trial: string; level: PackingLevel }[],
  last: PackingLevel | null = null,
): string {
  const parts: string[] = [];
  /** What level 1 said last (observing, or why it stays), shown only when the study never packed. */
  let alone: string | null = null;
  let first: string | null = null;
  for (const { trial, level } of changes) {
    const n = level.perGpu;
    if (level.step === PackingStep.raise) {
      // A later raise repeats the evidence alone (unchanged, mostly): only what is new is said.
      const why = first !== null && level.why.startsWith(`${first}; `) ? level.why.slice(first.length + 2) : level.why;
      parts.push(parts.length > 0 ? `raised to ${n} at ${trial} (${why})` : `${n} trials per GPU from ${trial} on (${why})`);
      first ??= level.why;
    } else if (level.step === PackingStep.backOff) parts.push(`backed off to ${n} at ${trial} (${level.why})`);
    else if (parts.length === 0) alone = `${n} trial${n === 1 ? "" : "s"} per GPU (${level.why})`;
  }
  if (parts.length > 0) return parts.join("; ");
  // Never packed: the latest verdict says best why (it saw the most trials alone).
  if (last !== null && last.perGpu === 1 && last.step !== PackingStep.observe) return `1 trial per GPU (${last.why})`;
  return alone ?? "no trial queued yet";
}

/**
 * `packing: …` for status and the report: the study's packing history folded from its attempts'
 * `queued` levels (ordered by when they were queued); null without `packing`.
 */
export function packingSummary(
  spec: PackingSpec | null,
  trials: Iterable<{
    readonly trial: string;
    readonly attempts: readonly {
      readonly attempt: number;
      readonly queuedAt: number | null;
      readonly packing: PackingLevel | null;
    }[];
  }>,
): string | null {
  if (spec === null) return null;
  const queued: { trial: string; attempt: number; ts: number; level: PackingLevel }[] = [];
  for (const t of trials)
    for (const a of t.attempts)
      if (a.packing !== null) queued.push({ trial: t.trial, attempt: a.attempt, ts: a.queuedAt ?? 0, level: a.packing });
  queued.sort((a, b) => a.ts - b.ts || a.trial.localeCompare(b.trial) || a.attempt - b.attempt);
  const ledger = new PackingLedger(spec);
  for (const q of queued) ledger.onQueued(q.trial, q.attempt, q.level);
  return `packing: ${packingText(ledger.changes, ledger.current)}`;
}
