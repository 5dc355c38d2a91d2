import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  AgentAdvertSchema,
  bucketKeys,
  type Control,
  decode,
  encode,
  ensureCheckpointStore,
  ensureResources,
  isNotFound,
  LeaseSchema,
  type MeshNames,
  OrderIdentitySchema,
  parseCheckpointObject,
  type StudyRecord,
  StudyRecordSchema,
} from "@rung/protocol";
import { StudyNotFoundError, StudyRunningError } from "../errors.js";
import {
  budgetText,
  budgetUse,
  compileSpec,
  generateTrials,
  packingSummary,
  type StudySpec,
  StudyState,
  TERMINAL_PHASES,
  type TrialRecord,
} from "../study/index.js";
import { readStudyEvents } from "./event-reader.js";

/**
 * What the one-shot study commands need (`status`, `best`, `stop`, `list`, `delete`): read the study
 * record and its events, fold them, and answer. Nothing here needs the coordinator to be running.
 */

export interface LoadedStudy {
  record: StudyRecord;
  spec: StudySpec;
  state: StudyState;
  planned: number;
  /** The coordinator holding the study's lease now, or null when none is attached. */
  coordinator: { holder: string; host: string; pid: number; expiresAt: number } | null;
  /** Spent against the study's budget now (`budgetText`), at the live agents' prices; null without a budget. */
  budget: string | null;
  /** What `packing: auto` chose and why (`packingSummary`); null without packing. */
  packing: string | null;
}

export async function loadStudy(nc: NatsConnection, names: MeshNames, study: string): Promise<LoadedStudy> {
  const res = await ensureResources(nc, names);
  const e = await res.studies.get(names.subjects.studyKey(study));
  if (!e || e.operation !== "PUT") throw new StudyNotFoundError(study);
  const r = decode(StudyRecordSchema, e.value, "study record");
  if (!r.ok) throw new StudyNotFoundError(study);
  const spec = compileSpec(r.value.spec);
  const state = new StudyState({
    study,
    metric: spec.metric.name,
    mode: spec.metric.mode,
    timeAttr: spec.scheduler.timeAttr,
    gpus: spec.resources.gpus,
  });
  for (const { event, from } of await readStudyEvents(nc, names, study)) state.apply(event, from);
  const le = await res.studies.get(names.subjects.leaseKey(study));
  const lease = le && le.operation === "PUT" ? decode(LeaseSchema, le.value, "lease") : null;
  const coordinator =
    lease?.ok && lease.value.expiresAt > Date.now()
      ? { holder: lease.value.holder, host: lease.value.host, pid: lease.value.pid, expiresAt: lease.value.expiresAt }
      : null;
  let budget: string | null = null;
  if (spec.budget !== null) {
    // Prices from the adverts of the agents that ran its attempts (an agent gone counts 0, and says so).
    const prices = new Map<string, number | null>();
    for (const t of state.trials.values())
      for (const a of t.attempts) {
        if (a.agent === null || prices.has(a.agent)) continue;
        const ae = await res.agents.get(names.subjects.agentKey(a.agent)).catch(() => null);
        const ad = ae && ae.operation === "PUT" ? decode(AgentAdvertSchema, ae.value, "advert") : null;
        prices.set(a.agent, ad?.ok ? ad.value.pricePerGpuHour : null);
      }
    const use = budgetUse(spec, state, Date.now(), (agent) => prices.get(agent) ?? null);
    budget = use === null ? null : budgetText(use);
  }
  const packing = packingSummary(spec.packing, state.trials.values());
  return { record: r.value, spec, state, planned: generateTrials(spec).length, coordinator, budget, packing };
}

/**
 * The study's state as a reader should say it: the record's, except that a study the record calls
 * running with no coordinator attached is "detached" — nothing is stopping trials early, retrying
 * failed ones or queueing new ones until `rung study run SPEC` runs again.
 */
export function studyStateWord(s: Pick<LoadedStudy, "record" | "coordinator">): string {
  return s.record.state === "running" && s.coordinator === null ? "detached" : s.record.state;
}

export async function listStudies(nc: NatsConnection, names: MeshNames): Promise<StudyRecord[]> {
  const res = await ensureResources(nc, names);
  const out: StudyRecord[] = [];
  for (const key of await bucketKeys(res.jsm, names.buckets.studies)) {
    if (key.endsWith(".lease")) continue;
    const e = await res.studies.get(key);
    if (!e || e.operation !== "PUT") continue;
    const r = decode(StudyRecordSchema, e.value, "study record");
    if (r.ok) out.push(r.value);
  }
  return out.sort((a, b) => a.createdAt - b.createdAt);
}

/**
 * Stops a study: marks its record stopped (its coordinator dispatches nothing more) and writes a
 * user stop for every trial not yet ended, so agents stop running ones and drop queued ones.
 */
export async function stopStudy(nc: NatsConnection, names: MeshNames, study: string): Promise<{ stopped: string[] }> {
  const loaded = await loadStudy(nc, names, study);
  const res = await ensureResources(nc, names);
  await res.studies.put(names.subjects.studyKey(study), encode({ ...loaded.record, state: "stopped", updatedAt: Date.now() }));
  const stopped: string[] = [];
  for (const t of loaded.state.trials.values()) {
    if (t.createdAt === null || TERMINAL_PHASES.has(t.phase)) continue;
    const control: Control = {
      v: 1,
      type: "stop",
      study,
      trial: t.trial,
      reason: "user-stop",
      by: "user",
      rung: null,
      ts: Date.now(),
    };
    await res.control.put(names.subjects.controlKey(study, t.trial), encode(control));
    stopped.push(t.trial);
  }
  return { stopped };
}

export interface DeleteStudyOptions {
  /** Delete a study that is still running: stop its trials first and wait (up to `waitMs`) for them to end. */
  force?: boolean;
  /** How long a forced delete waits for the study's trials to stop. Default 30 s. */
  waitMs?: number;
  /** Told what is happening while a forced delete waits. */
  onProgress?: (message: string) => void;
}

/**
 * Removes a study and everything it left in the mesh: its orders still queued, events, logs, stop keys,
 * lease and record. A study with trials in flight (or a coordinator attached) is refused unless
 * `force`: then its trials are stopped first — so nothing keeps running and writing under the deleted
 * name — and the delete waits until their agents say they have ended.
 */
export async function deleteStudy(
  nc: NatsConnection,
  names: MeshNames,
  study: string,
  options: DeleteStudyOptions = {},
): Promise<{ removedOrders: number; removedCheckpoints: number }> {
  const res = await ensureResources(nc, names);
  const loaded = await loadStudy(nc, names, study);
  const live = liveTrials(loaded);
  if ((live.length > 0 || loaded.coordinator !== null) && !options.force)
    throw new StudyRunningError(study, live.length, loaded.coordinator);
  if (live.length > 0 || loaded.coordinator !== null) {
    await stopStudy(nc, names, study);
    const deadline = Date.now() + (options.waitMs ?? 30_000);
    // Wait for the agents to stop the trials, and for an attached coordinator to wind down and let go
    // of its lease: otherwise either could write under the study's name after it is gone.
    for (let said = ""; ; ) {
      const now = await loadStudy(nc, names, study);
      const running = liveTrials(now).filter(isRunningOnAnAgent).length;
      if (running === 0 && now.coordinator === null) break;
      if (Date.now() > deadline) {
        options.onProgress?.(
          `${running} trial(s) did not confirm their stop${now.coordinator ? " and the coordinator is still attached" : ""} after ${Math.round((options.waitMs ?? 30_000) / 1000)} s; deleting anyway`,
        );
        break;
      }
      const say =
        running > 0 ? `waiting for ${running} running trial(s) to stop` : "waiting for the study's coordinator to wind down";
      if (say !== said) options.onProgress?.(say);
      said = say;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  const removedOrders = await removeQueuedOrders(res.jsm, names, study);
  await res.jsm.streams.purge(names.streams.events, { filter: names.subjects.studyEvents(study) });
  await res.jsm.streams.purge(names.streams.logs, { filter: `${names.prefix}.logs.${study}.>` });
  // Stop keys have two tokens exactly: `${study}.>` would reach the keys of other kinds (a study named
  // "ckpt" or "work" would take every checkpoint index or work key with it).
  for (const key of await bucketKeys(res.jsm, names.buckets.control, `${study}.*`)) await res.control.purge(key);
  for (const key of await bucketKeys(res.jsm, names.buckets.control, `ckpt.${study}.>`)) await res.control.purge(key);
  for (const key of await bucketKeys(res.jsm, names.buckets.control, names.subjects.studyClaimNotices(study)))
    await res.control.purge(key);
  const removedCheckpoints = await removeCheckpoints(nc, names, loaded.state);
  await res.studies.purge(names.subjects.studyKey(study));
  await res.studies.purge(names.subjects.leaseKey(study));
  return { removedOrders, removedCheckpoints };
}

/**
 * Deletes the study's snapshots: every one its events name, and every object stored under its name
 * (`<study>/…`, `<study>~<id>/…`: also one whose event never made it), so nothing of it is ever restored.
 */
async function removeCheckpoints(nc: NatsConnection, names: MeshNames, state: StudyState): Promise<number> {
  const os = await ensureCheckpointStore(nc, names);
  const objects = new Set([...state.trials.values()].flatMap((t) => t.checkpoints.map((c) => c.ref.object)));
  const study = state.study;
  for (const info of await os.list().catch(() => []))
    if (!info.deleted && parseCheckpointObject(info.name)?.study === study) objects.add(info.name);
  let n = 0;
  for (const o of objects) if ((await os.delete(o).catch(() => ({ success: false }))).success) n += 1;
  return n;
}

function liveTrials(s: LoadedStudy): TrialRecord[] {
  return [...s.state.trials.values()].filter((t) => t.createdAt !== null && !TERMINAL_PHASES.has(StudyState.phaseOf(t)));
}

function isRunningOnAnAgent(t: TrialRecord): boolean {
  const a = t.attempts.at(-1);
  return a !== undefined && (a.status === "claimed" || a.status === "running");
}

/** Deletes the study's orders still waiting in the work stream, so no agent picks one up after the delete. */
async function removeQueuedOrders(jsm: JetStreamManager, names: MeshNames, study: string): Promise<number> {
  let removed = 0;
  let info: Awaited<ReturnType<JetStreamManager["streams"]["info"]>>;
  try {
    info = await jsm.streams.info(names.streams.work);
  } catch (err) {
    if (isNotFound(err)) return 0;
    throw err;
  }
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && seq > 0; seq++) {
    let m: Awaited<ReturnType<JetStreamManager["streams"]["getMessage"]>>;
    try {
      m = await jsm.streams.getMessage(names.streams.work, { seq });
    } catch (err) {
      if (isNotFound(err)) continue; // already taken (work-queue retention) or deleted
      throw err;
    }
    if (!m) continue;
    const id = decode(OrderIdentitySchema, m.data, "order");
    if (id.ok && id.value.study === study) {
      await jsm.streams.deleteMessage(names.streams.work, seq, false).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
      removed += 1;
    }
  }
  return removed;
}

export interface TrialStatusJson {
  trial: string;
  state: string;
  attempts: number;
  params: Record<string, string | number | boolean>;
  bracket: number | null;
  lastT: number | null;
  lastValue: number | null;
  bestValue: number | null;
  stoppedBy: { by: string; t: number; rung: number | null } | null;
  agent: string | null;
  endReason: string | null;
  /** GPU time its attempts held, in GPU-seconds (a running attempt up to now). */
  gpuSeconds: number;
}

export interface StudyStatusJson {
  study: string;
  state: string;
  metric: { name: string; mode: string };
  timeAttr: string;
  planned: number;
  counts: Record<string, number>;
  best: { trial: string; value: number; t: number | null; params: Record<string, string | number | boolean> } | null;
  trials: TrialStatusJson[];
  /** Spent against the budget, as text; absent without one. */
  budget?: string;
  /** What `packing: auto` chose and why; absent without packing. */
  packing?: string;
}

/** JSON numbers cannot be NaN: NaN becomes null in every `--json` output. */
function num(x: number | null): number | null {
  return x === null || !Number.isFinite(x) ? null : x;
}

export function trialStatusJson(t: TrialRecord): TrialStatusJson {
  return {
    trial: t.trial,
    state: StudyState.phaseOf(t),
    attempts: t.attempts.length,
    params: t.params,
    bracket: t.bracket,
    lastT: num(t.lastT),
    lastValue: num(t.lastValue),
    bestValue: num(t.bestValue),
    stoppedBy: t.stop ? { by: t.stop.by, t: t.stop.t, rung: t.stop.rung } : null,
    agent: t.attempts.at(-1)?.agent ?? null,
    endReason: t.endReason ?? (StudyState.phaseOf(t) === "failed" ? (t.attempts.at(-1)?.reason ?? null) : null),
    gpuSeconds: Math.round(t.attempts.reduce((sum, a) => sum + StudyState.attemptGpuSeconds(a, Date.now()), 0) * 10) / 10,
  };
}

export function studyStatusJson(
  s:
    | LoadedStudy
    | {
        record: { state: string };
        spec: StudySpec;
        state: StudyState;
        planned: number;
        coordinator?: LoadedStudy["coordinator"];
      },
): StudyStatusJson {
  const best = s.state.best();
  return {
    study: s.state.study,
    state: "coordinator" in s && s.coordinator !== undefined ? studyStateWord(s as LoadedStudy) : s.record.state,
    metric: { name: s.spec.metric.name, mode: s.spec.metric.mode },
    timeAttr: s.spec.scheduler.timeAttr,
    planned: s.planned,
    counts: { ...s.state.counts(true) },
    best: best ? { trial: best.trial, value: best.bestValue as number, t: num(best.bestT), params: best.params } : null,
    trials: [...s.state.trials.values()].filter((t) => t.createdAt !== null).map(trialStatusJson),
    ...("budget" in s && typeof s.budget === "string" ? { budget: s.budget } : {}),
    ...("packing" in s && typeof s.packing === "string" ? { packing: s.packing } : {}),
  };
}
