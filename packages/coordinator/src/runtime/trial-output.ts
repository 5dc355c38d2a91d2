import { setTimeout as sleep } from "node:timers/promises";
import { DeliverPolicy, type JsMsg, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type BadMessageCounter,
  DecodeError,
  decode,
  isNotFound,
  LogChunkSchema,
  type MeshNames,
  type TrialEvent,
  validToken,
} from "@rung/protocol";
import { AmbiguousTrialError, TrialNotFoundError, TrialNotRunningError } from "../errors.js";
import { type StoredEvent, StudyState } from "../study/index.js";
import { readEvents, storedEvents } from "./event-reader.js";

/**
 * `rung logs` and `rung attach`: a trial's terminal output from the logs stream
 * (`rung.logs.<study>.<trial>.<attempt>.<agent>`), bytes exactly as the trial wrote them — tqdm's
 * carriage returns and colours included.
 *
 * Only the claimant's output counts: an attempt's chunks are read from the subject of the agent that
 * holds the attempt's claim (the trial's events, folded by StudyState, say which), so chunks another
 * box published — an end-of-output mark, an attempt that never existed — neither end nor hide it.
 *
 * Trial ids are unique per study only. A command names a trial as `study/trial`, or as `trial` with
 * `--study`, or as a bare `trial`: then the one study that has it is used (found from the logs and
 * events streams' subjects), and several studies having it is an error that lists them.
 */

export interface TrialRef {
  readonly study: string | null;
  readonly trial: string;
}

/** `study/trial`, or `trial` with an optional `--study`; when both name a study they must agree. */
export function parseTrialRef(arg: string, study?: string): TrialRef {
  const slash = arg.indexOf("/");
  if (slash >= 0) {
    const s = validToken(arg.slice(0, slash), "study");
    const t = validToken(arg.slice(slash + 1), "trial");
    if (study !== undefined && study !== s) throw new RangeError(`${arg} names study ${s} but --study says ${study}`);
    return { study: s, trial: t };
  }
  return { study: study === undefined ? null : validToken(study, "study"), trial: validToken(arg, "trial") };
}

export interface TrialOutputIndex {
  readonly study: string;
  readonly trial: string;
  /** Attempts with stored output, ascending. */
  readonly attempts: readonly number[];
}

async function subjectsOf(nc: NatsConnection, stream: string, filter: string): Promise<string[]> {
  const jsm = await jetstreamManager(nc);
  try {
    const info = await jsm.streams.info(stream, { subjects_filter: filter });
    return Object.keys(info.state.subjects ?? {});
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

/**
 * Finds the study of a trial (from the events stream's subjects: a trial exists once the coordinator
 * created it) and the attempts whose claimant stored output.
 */
export async function findTrialOutput(nc: NatsConnection, names: MeshNames, ref: TrialRef): Promise<TrialOutputIndex> {
  const p = names.prefix;
  const eventSubjects = await subjectsOf(nc, names.streams.events, `${p}.events.${ref.study ?? "*"}.${ref.trial}.c`);
  const studies = [...new Set(eventSubjects.map((s) => s.split(".")[2] as string))].sort();
  if (studies.length === 0) throw new TrialNotFoundError(ref.trial, ref.study);
  if (studies.length > 1) throw new AmbiguousTrialError(ref.trial, studies);
  const study = studies[0] as string;
  const state = await trialState(nc, names, study, ref.trial);
  const attempts: number[] = [];
  for (const s of await subjectsOf(nc, names.streams.logs, names.subjects.trialLogs(study, ref.trial))) {
    const at = names.subjects.parseLogs(s);
    if (at && claimantOf(state, ref.trial, at.attempt) === at.agent) attempts.push(at.attempt);
  }
  return { study, trial: ref.trial, attempts: attempts.sort((a, b) => a - b) };
}

/** Every stored event of one trial, in order, with its publisher. */
export function readTrialEvents(
  nc: NatsConnection,
  names: MeshNames,
  study: string,
  trial: string,
  drops?: BadMessageCounter,
): Promise<StoredEvent[]> {
  return readEvents(nc, names, names.subjects.trialEvents(study, trial), drops);
}

/** One trial's events folded (who may say what: StudyState), for its claimants and ends. */
async function trialState(
  nc: NatsConnection,
  names: MeshNames,
  study: string,
  trial: string,
  drops?: BadMessageCounter,
): Promise<StudyState> {
  const state = new StudyState({ study, metric: "", mode: "max", timeAttr: "" });
  for (const { event, from } of await readTrialEvents(nc, names, study, trial, drops)) state.apply(event, from);
  return state;
}

function claimantOf(state: StudyState, trial: string, attempt: number): string | null {
  return state.trials.get(trial)?.attempts.find((a) => a.attempt === attempt)?.claimant ?? null;
}

/** How a trial attempt ended, for saying why there is no output: its `finished` event and the trial's `ended`. */
export interface AttemptEnding {
  readonly finished: Extract<TrialEvent, { type: "finished" }> | null;
  readonly ended: Extract<TrialEvent, { type: "ended" }> | null;
}

/** The `finished` event of `attempt` (or of the latest attempt, for null) and the trial's `ended` event. */
export async function attemptEnding(
  nc: NatsConnection,
  names: MeshNames,
  study: string,
  trial: string,
  attempt: number | null,
  drops?: BadMessageCounter,
): Promise<AttemptEnding> {
  let finished: AttemptEnding["finished"] = null;
  let ended: AttemptEnding["ended"] = null;
  const state = new StudyState({ study, metric: "", mode: "max", timeAttr: "" });
  for (const { event: e, from } of await readTrialEvents(nc, names, study, trial, drops)) {
    if (!state.apply(e, from)) continue; // what its publisher may not say
    if (e.type === "finished" && (attempt === null || e.attempt === attempt)) finished = e;
    else if (e.type === "ended") ended = e;
  }
  return { finished, ended };
}

export interface TrialOutputOptions {
  readonly study: string;
  readonly trial: string;
  /** The attempt; null: whichever attempt writes next (following a trial that has not started). */
  readonly attempt: number | null;
  /** Keep following new output until the attempt's end-of-output mark (or `signal`). */
  readonly follow: boolean;
  /** With `attempt` null: skip output of attempts below this (those that ended before). Default 1. */
  readonly minAttempt?: number;
  /** Receives the raw bytes; may return a promise (a full pipe) that is awaited. */
  readonly write: (data: Uint8Array) => void | Promise<void>;
  readonly signal?: AbortSignal;
  readonly drops?: BadMessageCounter;
  /**
   * While following: when the attempt's `finished` event arrives and no end-of-output mark follows
   * within this long (an agent that died cannot send one), stop anyway. Default 3 s.
   */
  readonly endGraceMs?: number;
}

export interface TrialOutputResult {
  readonly attempt: number | null;
  readonly chunks: number;
  readonly bytes: number;
  /** The end-of-output mark was seen. */
  readonly eof: boolean;
}

/** Writes a trial attempt's stored output, and with `follow` its new output until it ends. */
export async function streamTrialOutput(nc: NatsConnection, names: MeshNames, o: TrialOutputOptions): Promise<TrialOutputResult> {
  // Who holds each attempt: the trial's events folded, kept current while following.
  let state = await trialState(nc, names, o.study, o.trial, o.drops);
  let attempt = o.attempt;
  const known = attempt === null ? null : claimantOf(state, o.trial, attempt);
  const subject =
    attempt === null
      ? names.subjects.trialLogs(o.study, o.trial)
      : known === null
        ? names.subjects.attemptLogs(o.study, o.trial, attempt)
        : names.subjects.logs(o.study, o.trial, attempt, known);
  const consumer = await jetstream(nc).consumers.get(names.streams.logs, {
    filter_subjects: subject,
    deliver_policy: DeliverPolicy.All,
  });
  const pending = (await consumer.info()).num_pending;
  let chunks = 0;
  let bytes = 0;
  let eof = false;
  if (!o.follow && pending === 0) return { attempt, chunks, bytes, eof };

  const messages = await consumer.consume({ max_messages: 256 });
  const stop = () => void messages.stop();
  o.signal?.addEventListener("abort", stop, { once: true });
  let graceTimer: NodeJS.Timeout | undefined;
  const endSoon = () => {
    graceTimer ??= setTimeout(stop, o.endGraceMs ?? 3000);
  };
  const finished = (n: number) => state.trials.get(o.trial)?.attempts.find((a) => a.attempt === n)?.finished === true;

  // Following: an attempt that ended without an end-of-output mark (agent gone) must not hang us.
  let sub: ReturnType<NatsConnection["subscribe"]> | undefined;
  if (o.follow) {
    sub = nc.subscribe(names.subjects.trialEvents(o.study, o.trial), {
      callback: (err, m) => {
        if (err) return;
        for (const { event, from } of storedEvents({ data: m.data, seq: 0, subject: m.subject }, names, o.drops)) {
          if (!state.apply(event, from)) continue; // not what its publisher may say
          if (event.type === "finished" && (attempt === null || event.attempt === attempt)) endSoon();
        }
      },
    });
    if (attempt !== null && finished(attempt)) endSoon();
  }

  /**
   * Whether `agent` holds attempt `n`. A claimant not known yet is looked up again in the stream for a
   * moment: the claimant's `claimed` goes out before its trial starts, but the two streams store
   * independently.
   */
  const unclaimed = new Set<string>();
  const holds = async (n: number, agent: string): Promise<boolean> => {
    // An attempt looked up in vain once is not looked up again for every chunk someone sends for it.
    if (unclaimed.has(`${n}/${agent}`)) return claimantOf(state, o.trial, n) === agent;
    for (let i = 0; i < 4; i++) {
      const c = claimantOf(state, o.trial, n);
      if (c !== null) return c === agent;
      if (i < 3) {
        await sleep(250 * (i + 1));
        state = await trialState(nc, names, o.study, o.trial, o.drops);
      }
    }
    unclaimed.add(`${n}/${agent}`);
    return false;
  };

  let seen = 0;
  try {
    if (o.signal?.aborted) return { attempt, chunks, bytes, eof };
    for await (const m of messages as AsyncIterable<JsMsg>) {
      seen += 1;
      const r = decode(LogChunkSchema, m.data, "log chunk");
      const at = names.subjects.parseLogs(m.subject);
      if (!r.ok) {
        o.drops?.record("logs", r.error);
      } else if (at && r.value.attempt === at.attempt && r.value.agent === at.agent && (await holds(at.attempt, at.agent))) {
        const c = r.value;
        if (attempt === null && c.attempt >= (o.minAttempt ?? 1)) attempt = c.attempt;
        if (c.attempt === attempt) {
          chunks += 1;
          bytes += c.data.byteLength;
          if (c.data.byteLength > 0) await o.write(c.data);
          if (c.eof) {
            eof = true;
            break;
          }
        }
      } else {
        // Output of an attempt its publisher does not hold: another box's chunks.
        o.drops?.record(
          "logs",
          new DecodeError("stray", "log chunk", `log chunk on ${m.subject}: not from the attempt's claimant`),
        );
      }
      if (!o.follow && (m.info.pending === 0 || seen >= pending)) break;
    }
  } finally {
    if (graceTimer) clearTimeout(graceTimer);
    o.signal?.removeEventListener("abort", stop);
    sub?.unsubscribe();
    messages.stop();
  }
  return { attempt, chunks, bytes, eof };
}

export interface AttachOptions {
  readonly ref: TrialRef;
  readonly write: (data: Uint8Array) => void | Promise<void>;
  readonly signal?: AbortSignal;
  /** Called when the trial has not started yet and attach waits for it. */
  readonly onWaiting?: (study: string, trial: string) => void;
  readonly drops?: BadMessageCounter;
}

/**
 * A running trial's terminal, live and read-only: the current attempt's output from its start (so the
 * screen is rebuilt), then new output until the attempt ends or `signal` aborts. A trial not yet
 * started is waited for; a trial that has ended is an error that points to `rung logs`.
 */
export async function attachTrial(nc: NatsConnection, names: MeshNames, o: AttachOptions): Promise<TrialOutputResult> {
  const { study, trial } = await findTrialOutput(nc, names, o.ref);
  const state = await trialState(nc, names, study, trial, o.drops);
  const t = state.trials.get(trial);
  if (t && (t.phase === "completed" || t.phase === "stopped" || t.phase === "failed" || t.phase === "cancelled"))
    throw new TrialNotRunningError(study, trial, t.phase);
  const latest = t?.attempts.at(-1);
  const running = latest && (latest.status === "running" || latest.status === "claimed");
  if (!running) o.onWaiting?.(study, trial);
  // Waiting: the next attempt's output, not an earlier attempt's.
  const ended = (t?.attempts ?? []).filter((a) => a.status !== "queued" && a.status !== "claimed" && a.status !== "running");
  return streamTrialOutput(nc, names, {
    study,
    trial,
    attempt: running ? latest.attempt : null,
    minAttempt: Math.max(0, ...ended.map((a) => a.attempt)) + 1,
    follow: true,
    write: o.write,
    signal: o.signal,
    drops: o.drops,
  });
}
