import type { NatsConnection } from "@nats-io/transport-node";
import {
  type Control,
  decode,
  encode,
  ensureResources,
  type MeshNames,
  type StudyRecord,
  StudyRecordSchema,
} from "@rung/protocol";
import { StudyNotFoundError } from "../errors.js";
import { compileSpec, generateTrials, type StudySpec, StudyState, TERMINAL_PHASES, type TrialRecord } from "../study/index.js";
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
  });
  for (const { event } of await readStudyEvents(nc, names, study)) state.apply(event);
  return { record: r.value, spec, state, planned: generateTrials(spec).length };
}

export async function listStudies(nc: NatsConnection, names: MeshNames): Promise<StudyRecord[]> {
  const res = await ensureResources(nc, names);
  const out: StudyRecord[] = [];
  for await (const key of await res.studies.keys()) {
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

/** Removes a study: its events, logs, stop keys and record. */
export async function deleteStudy(nc: NatsConnection, names: MeshNames, study: string): Promise<void> {
  const res = await ensureResources(nc, names);
  const e = await res.studies.get(names.subjects.studyKey(study));
  if (!e || e.operation !== "PUT") throw new StudyNotFoundError(study);
  await res.jsm.streams.purge(names.streams.events, { filter: names.subjects.studyEvents(study) });
  await res.jsm.streams.purge(names.streams.logs, { filter: `${names.prefix}.logs.${study}.>` });
  for await (const key of await res.control.keys(`${study}.>`)) await res.control.purge(key);
  await res.studies.purge(names.subjects.studyKey(study));
  await res.studies.purge(names.subjects.leaseKey(study));
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
}

/** JSON numbers cannot be NaN: NaN becomes null in every `--json` output. */
function num(x: number | null): number | null {
  return x === null || !Number.isFinite(x) ? null : x;
}

export function trialStatusJson(t: TrialRecord): TrialStatusJson {
  return {
    trial: t.trial,
    state: t.phase,
    attempts: t.attempts.length,
    params: t.params,
    bracket: t.bracket,
    lastT: num(t.lastT),
    lastValue: num(t.lastValue),
    bestValue: num(t.bestValue),
    stoppedBy: t.stop ? { by: t.stop.by, t: t.stop.t, rung: t.stop.rung } : null,
    agent: t.attempts.at(-1)?.agent ?? null,
    endReason: t.endReason,
  };
}

export function studyStatusJson(
  s: LoadedStudy | { record: { state: string }; spec: StudySpec; state: StudyState; planned: number },
): StudyStatusJson {
  const best = s.state.best();
  return {
    study: s.state.study,
    state: s.record.state,
    metric: { name: s.spec.metric.name, mode: s.spec.metric.mode },
    timeAttr: s.spec.scheduler.timeAttr,
    planned: s.planned,
    counts: { ...s.state.counts() },
    best: best ? { trial: best.trial, value: best.bestValue as number, t: num(best.bestT), params: best.params } : null,
    trials: [...s.state.trials.values()].filter((t) => t.createdAt !== null).map(trialStatusJson),
  };
}
