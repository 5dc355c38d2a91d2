import { jetstreamManager } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type AgentAdvert,
  type BadMessageCounter,
  decode,
  isNotFound,
  LeaseSchema,
  type MeshNames,
  type StudyRecord,
  StudyRecordSchema,
  type Telemetry,
  type TrialEvent,
} from "@rung/protocol";
import { StudyNotFoundError } from "../errors.js";
import { compileSpec, generateTrials, type StudySpec, StudyState, studyHistory } from "../study/index.js";
import { buildStudyReport } from "../telemetry/index.js";
import { type CurvePoint, curvePoints, type StudyPageSummary, studyPageSummary } from "../views/index.js";
import { followStudyEvents } from "./event-reader.js";
import { readAdverts, readTelemetry } from "./telemetry-reader.js";

/**
 * A study kept current for a live page (`rung ui`): its events followed and folded into a
 * `StudyState` as they arrive (the same fold every reader uses), its curve points kept in arrival
 * order so a page can be sent only the new ones, and its telemetry, adverts, record and lease read
 * again every `refreshMs` (the diagnosis needs the samples; the state word needs the lease). The
 * summary is built on demand from all of it with the report's own `buildStudyReport`.
 *
 * Telemetry is kept for a window only (`telemetryWindowMs` before the newest sample, and at most
 * `maxTelemetry` messages): a study that runs for days on a large mesh would otherwise grow without
 * bound, and every summary joins all it holds. The live page's diagnosis and idle time are about that
 * window (the summary says which); `rung study report` reads the whole study.
 */

export interface StudyWatchOptions {
  /** Called (at most once per event burst, by the caller's own throttle) when anything changed. */
  readonly onChange?: () => void;
  /** How often telemetry, adverts, the record and the lease are read again. Default 5 s. */
  readonly refreshMs?: number;
  readonly drops?: BadMessageCounter;
  /** Told when a refresh fails (NATS away); the watch keeps going and tries again. */
  readonly onError?: (err: unknown) => void;
  /** Told when following the events failed for good: the watch is dead, open a new one. */
  readonly onEnded?: (err: unknown) => void;
  /** How much telemetry is kept, back from the newest sample; null keeps the whole study's. Default 1 h. */
  readonly telemetryWindowMs?: number | null;
  /** At most this many telemetry messages are kept (the oldest go first). Default 100,000. */
  readonly maxTelemetry?: number;
}

const DEFAULT_TELEMETRY_WINDOW_MS = 3_600_000;
const DEFAULT_MAX_TELEMETRY = 100_000;
/** Samples this long before the study's first event belong to it (as `loadStudyReport` reads them). */
const SLACK_MS = 10_000;

interface RecordAndLease {
  record: StudyRecord;
  coordinator: { holder: string; host: string; pid: number; expiresAt: number } | null;
}

async function readRecord(nc: NatsConnection, names: MeshNames, study: string): Promise<RecordAndLease> {
  let studies: KV;
  try {
    studies = await new Kvm(nc).open(names.buckets.studies);
  } catch (err) {
    if (isNotFound(err)) throw new StudyNotFoundError(study);
    throw err;
  }
  const res = { studies };
  const e = await res.studies.get(names.subjects.studyKey(study));
  if (!e || e.operation !== "PUT") throw new StudyNotFoundError(study);
  const r = decode(StudyRecordSchema, e.value, "study record");
  if (!r.ok) throw new StudyNotFoundError(study);
  const le = await res.studies.get(names.subjects.leaseKey(study));
  const lease = le && le.operation === "PUT" ? decode(LeaseSchema, le.value, "lease") : null;
  const coordinator =
    lease?.ok && lease.value.expiresAt > Date.now()
      ? { holder: lease.value.holder, host: lease.value.host, pid: lease.value.pid, expiresAt: lease.value.expiresAt }
      : null;
  return { record: r.value, coordinator };
}

/** A study's compiled spec, from its record. Throws `StudyNotFoundError`. */
export async function loadStudySpec(nc: NatsConnection, names: MeshNames, study: string): Promise<StudySpec> {
  return compileSpec((await readRecord(nc, names, study)).record.spec);
}

export class StudyWatch {
  readonly study: string;
  readonly spec: StudySpec;
  readonly state: StudyState;
  readonly planned: number;
  #rl: RecordAndLease;
  readonly #events: TrialEvent[] = [];
  readonly #points: CurvePoint[] = [];
  #telemetry: Telemetry[] = [];
  #telemetryTo: number | null = null;
  #adverts: AgentAdvert[] = [];
  readonly #abort = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #following: Promise<void> = Promise.resolve();
  #refreshing = false;
  #version = 0;
  readonly #windowMs: number | null;
  readonly #maxTelemetry: number;

  private constructor(
    readonly nc: NatsConnection,
    readonly names: MeshNames,
    rl: RecordAndLease,
    readonly options: StudyWatchOptions,
  ) {
    this.#rl = rl;
    this.#windowMs = options.telemetryWindowMs === undefined ? DEFAULT_TELEMETRY_WINDOW_MS : options.telemetryWindowMs;
    this.#maxTelemetry = Math.max(1, options.maxTelemetry ?? DEFAULT_MAX_TELEMETRY);
    this.spec = compileSpec(rl.record.spec);
    this.study = rl.record.name;
    this.planned = generateTrials(this.spec).length;
    this.state = new StudyState({
      study: this.study,
      metric: this.spec.metric.name,
      mode: this.spec.metric.mode,
      timeAttr: this.spec.scheduler.timeAttr,
      gpus: this.spec.resources.gpus,
    });
  }

  /** Reads the study's record and every stored event, then keeps following. Throws `StudyNotFoundError`. */
  static async open(nc: NatsConnection, names: MeshNames, study: string, options: StudyWatchOptions = {}): Promise<StudyWatch> {
    const w = new StudyWatch(nc, names, await readRecord(nc, names, study), options);
    await w.#start();
    return w;
  }

  async #start(): Promise<void> {
    let caughtUp!: () => void;
    let failed!: (err: unknown) => void;
    const ready = new Promise<void>((resolve, reject) => {
      caughtUp = resolve;
      failed = reject;
    });
    this.#following = followStudyEvents(this.nc, this.names, this.study, {
      signal: this.#abort.signal,
      drops: this.options.drops,
      onCatchUp: (events) => {
        for (const e of events) this.#apply(e.event, e.from);
        caughtUp();
      },
      onEvents: (evs) => {
        for (const e of evs) this.#apply(e.event, e.from);
        this.#version += 1;
        this.options.onChange?.();
      },
    }).catch((err) => {
      failed(err);
      if (!this.#abort.signal.aborted) this.options.onEnded?.(err);
    });
    await ready;
    await this.#refresh();
    this.#timer = setInterval(() => void this.#refresh(), this.options.refreshMs ?? 5000);
  }

  #apply(event: TrialEvent, from: Parameters<StudyState["apply"]>[1]): void {
    this.state.apply(event, from);
    this.#events.push(event);
    if (event.type === "report")
      this.#points.push(...curvePoints(studyHistory([event], this.state.timeAttr), this.spec.metric.name));
  }

  async #refresh(): Promise<void> {
    if (this.#refreshing || this.#abort.signal.aborted) return;
    this.#refreshing = true;
    try {
      const before = `${this.#rl.record.state}/${this.#rl.coordinator?.holder ?? ""}`;
      this.#rl = await readRecord(this.nc, this.names, this.study);
      const agents = new Set<string>();
      for (const t of this.state.trials.values()) for (const a of t.attempts) if (a.agent !== null) agents.add(a.agent);
      this.#adverts = (await readAdverts(this.nc, this.names, this.options.drops)).filter((a) => agents.has(a.agent));
      let grew = false;
      if (this.state.firstTs !== null && agents.size > 0) {
        let fromTs = this.#telemetryTo === null ? this.state.firstTs - SLACK_MS : this.#telemetryTo + 1;
        if (this.#telemetryTo === null && this.#windowMs !== null) {
          // First read: only the window before the study's end (or now, while it runs).
          const end = this.state.inFlight().length > 0 ? Date.now() : (this.state.lastTs ?? Date.now()) + SLACK_MS;
          fromTs = Math.max(fromTs, end - this.#windowMs);
        }
        const more = await readTelemetry(this.nc, this.names, { fromTs, agents: [...agents].sort(), drops: this.options.drops });
        for (const m of more) if (this.#telemetryTo === null || m.ts > this.#telemetryTo) this.#telemetryTo = m.ts;
        if (more.length > 0) this.#telemetry = this.#trim(this.#telemetry.concat(more));
        grew = more.length > 0;
      }
      if (grew || before !== `${this.#rl.record.state}/${this.#rl.coordinator?.holder ?? ""}`) {
        this.#version += 1;
        this.options.onChange?.();
      }
    } catch (err) {
      this.options.onError?.(err);
    } finally {
      this.#refreshing = false;
    }
  }

  /** Drops the samples older than the window before the newest one, then the oldest past the cap. */
  #trim(all: Telemetry[]): Telemetry[] {
    let keep = all;
    if (this.#windowMs !== null && this.#telemetryTo !== null) {
      const from = this.#telemetryTo - this.#windowMs;
      if (keep.some((m) => m.ts < from)) keep = keep.filter((m) => m.ts >= from);
    }
    if (keep.length > this.#maxTelemetry) {
      // Per-agent order is kept (readTelemetry's), so cut by time, not by position.
      const cut = keep.map((m) => m.ts).sort((a, b) => a - b)[keep.length - this.#maxTelemetry] as number;
      keep = keep.filter((m) => m.ts >= cut).slice(-this.#maxTelemetry);
    }
    return keep;
  }

  /** Telemetry messages held now (bounded by the window and the cap). */
  get telemetryHeld(): number {
    return this.#telemetry.length;
  }

  /** The window the summary's diagnosis covers: null for the whole study. */
  get telemetryWindowMs(): number | null {
    return this.#windowMs;
  }

  /** Goes up by one with every change `onChange` was told of: equal versions, equal summaries (but for `now`). */
  get version(): number {
    return this.#version;
  }

  /** The study's record as last read. */
  get record(): StudyRecord {
    return this.#rl.record;
  }

  /**
   * How many events the study has stored, from the events stream's per-subject counts (no event is
   * read): a cheap way to tell whether a study changed since it was last folded.
   */
  static async eventCount(nc: NatsConnection, names: MeshNames, study: string): Promise<number> {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(names.streams.events, { subjects_filter: names.subjects.studyEvents(study) });
    let n = 0;
    for (const c of Object.values(info.state.subjects ?? {})) n += c;
    return n;
  }

  /** The state as `rung study status` says it. */
  get stateWord(): string {
    return this.#rl.record.state === "running" && this.#rl.coordinator === null ? "detached" : this.#rl.record.state;
  }

  /** Everything the study page shows but the curves. */
  summary(now = Date.now()): StudyPageSummary {
    const study = { record: this.#rl.record, spec: this.spec, state: this.state, planned: this.planned };
    const report = buildStudyReport(study, this.#telemetry, this.#adverts, { events: this.#events, now });
    return studyPageSummary(report, this.state, this.spec, this.stateWord, now, this.#windowMs);
  }

  /** Curve points from index `from` on (in arrival order), and the index to ask from next time. */
  pointsSince(from: number): { points: CurvePoint[]; next: number } {
    return { points: this.#points.slice(from), next: this.#points.length };
  }

  /** The stored events folded so far (for a trial page). */
  get events(): readonly TrialEvent[] {
    return this.#events;
  }

  async close(): Promise<void> {
    this.#abort.abort();
    if (this.#timer) clearInterval(this.#timer);
    await this.#following.catch(() => {});
  }
}
