import { randomBytes } from "node:crypto";
import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import type { ObjectStore } from "@nats-io/obj";
import { headers, type MsgHdrs } from "@nats-io/transport-node";
import {
  type CheckpointIndex,
  type CheckpointRef,
  type ClaimNotice,
  type Control,
  decode,
  encode,
  ensureCheckpointStore,
  ensureResources,
  type MeshResources,
  newStudySecret,
  REPORT_BATCHES_HEADER,
  retry,
  type StudyRecord,
  StudyRecordSchema,
  type TrialEvent,
  TrialEventSchema,
  trialEventMsgId,
  type WorkOrder,
  WorkOrderSchema,
} from "@rung/protocol";
import { StudySpecChangedError } from "../errors.js";
import { type StudySpec, specContinuation, specForRecord, specHash } from "../study/index.js";
import type { CompiledRunOptions } from "./run-options.js";
import { WorkWaker } from "./work-wake.js";

/**
 * Everything one study's coordinator writes to the mesh, and nothing it decides: the study record,
 * its events, its work orders and its stop keys. Every write goes through a NATS hiccup (a restarting
 * server, a cluster electing a leader) by retrying, which is safe because each one is idempotent —
 * events and orders carry message ids the server de-duplicates, a stop key says the same each time.
 *
 * The store also remembers which of the coordinator's own actions are already in the stream (found
 * at catch-up or published since), so none is ever published twice.
 */
export class StudyStore {
  readonly #o: CompiledRunOptions;
  readonly #published = new Set<string>();
  /** From the record: the incarnation id and the secret that end the coordinator's message ids. */
  #studyId: string | null = null;
  #secret: string | null = null;
  #js!: JetStreamClient;
  #res!: MeshResources;
  /** Wakes idle agents after orders are stored (work-wake.ts). */
  #waker: WorkWaker | null = null;

  constructor(options: CompiledRunOptions) {
    this.#o = options;
  }

  /** Creates or checks the mesh's streams and buckets; the first call of a run. */
  async open(): Promise<MeshResources> {
    this.#res = await ensureResources(this.#o.nc, this.#o.names, this.#o.resources);
    this.#js = jetstream(this.#o.nc);
    const control = this.#res.control;
    const subjects = this.#o.names.subjects;
    const warned = new Set<string>();
    this.#waker = new WorkWaker({
      write: (pool) => control.put(subjects.workWakeKey(pool), encode({ pool, ts: Date.now() })),
      onError: (pool, err) => {
        if (warned.has(pool)) return;
        warned.add(pool);
        this.#o.log.debug({ pool, err: err.message }, "cannot write the work wake; agents find the order at their next look");
      },
    });
    this.#checkpoints = await ensureCheckpointStore(this.#o.nc, this.#o.names, this.#o.resources).catch((err) => {
      this.#o.log.warn(
        { err: (err as Error).message },
        "cannot open the mesh's checkpoint bucket: attempts resume only from their own box",
      );
      return null;
    });
    return this.#res;
  }

  #checkpoints: ObjectStore | null = null;

  /** Writes a trial's checkpoint index: the snapshots its next attempt may resume from, newest first. */
  async writeCheckpointIndex(trial: string, refs: CheckpointRef[]): Promise<void> {
    const study = this.#o.spec.name;
    const index: CheckpointIndex = { v: 1, type: "checkpoints", study, trial, refs, ts: Date.now() };
    const data = encode(index);
    await this.#retrying(`write the checkpoint index of ${trial}`, () =>
      this.#res.control.put(this.#o.names.subjects.checkpointIndexKey(study, trial), data),
    );
  }

  /** Removes a trial's checkpoint index (its snapshots are gone). */
  async deleteCheckpointIndex(trial: string): Promise<void> {
    await this.#res.control.purge(this.#o.names.subjects.checkpointIndexKey(this.#o.spec.name, trial)).catch(() => {});
  }

  /** Deletes snapshots from the bucket; one already gone is no error. Returns how many were deleted. */
  async deleteCheckpoints(objects: readonly string[]): Promise<number> {
    const os = this.#checkpoints;
    if (!os) return 0;
    let n = 0;
    for (const name of objects) {
      try {
        const r = await os.delete(name);
        if (r.success) n += 1;
      } catch (err) {
        this.#o.log.debug({ object: name, err: (err as Error).message }, "checkpoint not deleted");
      }
    }
    return n;
  }

  get resources(): MeshResources {
    return this.#res;
  }

  #studyKey(): string {
    return this.#o.names.subjects.studyKey(this.#o.spec.name);
  }

  /**
   * Writes the study record on the first run. On a later run the spec must be the same one, or the same
   * with more `search.samples` or a bigger `budget` (the study is extended: the record takes the new
   * spec). A study that was stopped or had ended (`budget-spent` included) is running again from here
   * on: its trials that never ran are queued, nothing that finished runs again. Returns what the record said before.
   */
  async recordStudy(
    spec: StudySpec,
  ): Promise<{ previous: StudyRecord["state"] | null; extendedFrom: number | null; studyId: string | null }> {
    const hash = specHash(spec);
    const e = await this.#res.studies.get(this.#studyKey());
    const now = Date.now();
    if (e && e.operation === "PUT") {
      const r = decode(StudyRecordSchema, e.value, "study record");
      if (r.ok) {
        const recordedSamples = recordedSampleCount(r.value.spec);
        const how = specContinuation(
          { hash: r.value.specHash, samples: recordedSamples, budget: recordedBudget(r.value.spec) },
          spec,
        );
        if (how !== "same" && how !== "extended") throw new StudySpecChangedError(spec.name, r.value.specHash, hash, how.changed);
        if (how === "extended" || r.value.state !== "running") {
          const next: StudyRecord =
            how === "extended"
              ? { ...r.value, spec: specForRecord(spec), specHash: hash, state: "running", updatedAt: now }
              : { ...r.value, state: "running", updatedAt: now };
          await this.#res.studies.put(this.#studyKey(), encode(next));
        }
        this.#studyId = r.value.id ?? null;
        this.#secret = r.value.secret ?? null;
        return {
          previous: r.value.state,
          extendedFrom: how === "extended" && spec.search.samples > recordedSamples ? recordedSamples : null,
          studyId: r.value.id ?? null,
        };
      }
    }
    // A new incarnation: a study deleted and run again under the same name gets a new id.
    const studyId = randomBytes(6).toString("hex");
    const rec: StudyRecord = {
      v: 1,
      type: "study",
      name: spec.name,
      spec: specForRecord(spec),
      specHash: hash,
      id: studyId,
      secret: newStudySecret(),
      createdAt: now,
      state: "running",
      updatedAt: now,
    };
    await this.#res.studies.put(this.#studyKey(), encode(rec));
    this.#studyId = studyId;
    this.#secret = rec.secret ?? null;
    return { previous: null, extendedFrom: null, studyId };
  }

  async setStudyState(state: StudyRecord["state"]): Promise<void> {
    const key = this.#studyKey();
    const e = await this.#retrying("read the study record", () => this.#res.studies.get(key));
    if (!e || e.operation !== "PUT") return;
    const r = decode(StudyRecordSchema, e.value, "study record");
    if (!r.ok || r.value.state === state) return;
    const data = encode({ ...r.value, state, updatedAt: Date.now() });
    await this.#retrying("record the study's end", () => this.#res.studies.put(key, data));
  }

  /** Calls `onStopped` once when `rung study stop` marks the record stopped. */
  watchStop(signal: AbortSignal, onStopped: () => void): void {
    void (async () => {
      const iter = await this.#res.studies.watch({ key: this.#studyKey() });
      signal.addEventListener("abort", () => iter.stop(), { once: true });
      for await (const e of iter) {
        if (e.operation !== "PUT") continue;
        const r = decode(StudyRecordSchema, e.value, "study record");
        if (r.ok && r.value.state === "stopped") onStopped();
      }
    })().catch(() => {});
  }

  /** Notes an action found in the stream at catch-up: it is never published again. */
  markPublished(msgID: string): void {
    this.#published.add(msgID);
  }

  isPublished(msgID: string): boolean {
    return this.#published.has(msgID);
  }

  /**
   * The message id of one of the coordinator's events: by what it is about (message-ids.ts), ending in
   * the study's secret, which no agent can read, so none can publish first under it.
   */
  eventId(ev: TrialEvent): string {
    return trialEventMsgId(ev, this.#studyId, this.#secret);
  }

  /** Publishes one of the coordinator's events once (a second call for the same event does nothing). */
  async publishEvent(ev: TrialEvent): Promise<void> {
    const msgID = this.eventId(ev);
    if (this.#published.has(msgID)) return;
    const data = encode(checked(TrialEventSchema, ev, `the ${ev.type} event of ${ev.trial}`));
    this.#published.add(msgID);
    await this.#retrying(`publish the ${ev.type} event of ${ev.trial}`, () =>
      this.#js.publish(this.#o.names.subjects.eventSubject(ev), data, { msgID }),
    );
  }

  /** Publishes a work order; `duplicate` is true when the server already had it (same message id). */
  async publishOrder(order: WorkOrder, msgID: string): Promise<{ duplicate: boolean }> {
    const data = encode(checked(WorkOrderSchema, order, `the order of ${order.trial} attempt ${order.attempt}`));
    const ack = await this.#retrying(`publish the order of ${order.trial} attempt ${order.attempt}`, () =>
      this.#js.publish(this.#o.names.subjects.work(order.pool), data, { msgID, headers: orderHeaders() }),
    );
    this.#waker?.note(order.pool);
    return { duplicate: ack.duplicate };
  }

  /** Stops waking agents; waits for the wakes in flight. */
  async close(): Promise<void> {
    await this.#waker?.close();
  }

  /** Removes a trial's stop key: a paused trial resumes, and its next attempt must not read the pause. */
  async clearStop(trial: string): Promise<void> {
    const key = this.#o.names.subjects.controlKey(this.#o.spec.name, trial);
    await this.#retrying(`clear the stop of ${trial}`, () => this.#res.control.delete(key));
  }

  /** Writes a trial's stop key, which its agent watches. */
  async writeStop(trial: string, reason: Control["reason"], by: string, rung: number | null): Promise<void> {
    const study = this.#o.spec.name;
    const control: Control = { v: 1, type: "stop", study, trial, reason, by, rung, ts: Date.now() };
    const data = encode(control);
    await this.#retrying(`write the stop of ${trial}`, () =>
      this.#res.control.put(this.#o.names.subjects.controlKey(study, trial), data),
    );
  }

  /**
   * Writes a trial's claim notice: attempt `attempt` holds its order now, so the agent still running an
   * older copy kills it (it watches `work.claim.…`; the notice goes when the trial ends). Best effort,
   * one try: the agent's own lease check is the rule, this only makes it quicker and closes its blind
   * spot (a heartbeat sent just inside its lease that reaches the server after it).
   */
  async writeClaimNotice(trial: string, attempt: number, agent: string): Promise<boolean> {
    const study = this.#o.spec.name;
    const notice: ClaimNotice = { v: 1, type: "claim", study, studyId: this.#studyId, trial, attempt, agent, ts: Date.now() };
    try {
      await this.#res.control.put(this.#o.names.subjects.claimNoticeKey(study, trial), encode(notice));
      return true;
    } catch (err) {
      this.#o.log.warn({ trial, attempt, err: (err as Error).message }, `cannot write the claim notice of ${trial}`);
      return false;
    }
  }

  /** Removes a trial's claim notice once the trial has ended: nothing of it runs any more. Best effort. */
  async deleteClaimNotice(trial: string): Promise<void> {
    await this.#res.control.purge(this.#o.names.subjects.claimNoticeKey(this.#o.spec.name, trial)).catch(() => {});
  }

  /**
   * Runs a write again through a NATS hiccup instead of dying of it ("jetstream is not enabled" during
   * an election, timeouts). Gives up (and the run fails) after a minute without success, or once the
   * connection is closed.
   */
  async #retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let failures = 0;
    const v = await retry(fn, {
      deadlineMs: 60_000,
      retryable: () => !this.#o.nc.isClosed(),
      onRetry: ({ error }) => {
        failures += 1;
        if (failures === 1) this.#o.log.warn({ err: (error as Error).message }, `cannot ${what}; retrying`);
      },
    });
    if (failures > 0) this.#o.log.info({ failures }, `could ${what} again`);
    return v;
  }
}

/** `search.samples` of a recorded spec (as written: snake_case input). */
/** The recorded spec's budget (its `specToInput` form), compiled: null when it had none. */
function recordedBudget(spec: Record<string, unknown>): StudySpec["budget"] {
  const b = spec.budget as { gpu_hours?: unknown; cost?: unknown } | undefined;
  if (b === undefined || b === null || typeof b !== "object") return null;
  return {
    gpuHours: typeof b.gpu_hours === "number" ? b.gpu_hours : null,
    cost: typeof b.cost === "number" ? b.cost : null,
  };
}

function recordedSampleCount(spec: Record<string, unknown>): number {
  const samples = (spec.search as { samples?: unknown } | undefined)?.samples;
  return typeof samples === "number" ? samples : 1; // the spec's default
}

/**
 * What the coordinator publishes, checked against the schema every reader decodes with: a message that
 * fails it would be dropped as malformed by every reader (and an order refused by every agent), and the
 * study would wait for it forever. A coordinator bug ends the study with this sentence instead.
 */
function checked<T>(
  schema: { safeParse(v: unknown): { success: boolean; error?: { issues: { path: PropertyKey[]; message: string }[] } } },
  value: T,
  what: string,
): T {
  const r = schema.safeParse(value);
  if (r.success) return value;
  const issue = r.error?.issues[0];
  throw new Error(
    `internal error: the coordinator made ${what} that no reader would accept (${issue ? `${issue.path.join(".")}: ${issue.message}` : "invalid"}); it was not published — please report this with the study spec`,
  );
}

/** Every order's message says this coordinator reads reports sent several to a message (messages.ts). */
function orderHeaders(): MsgHdrs {
  const h = headers();
  h.set(REPORT_BATCHES_HEADER, "1");
  return h;
}
