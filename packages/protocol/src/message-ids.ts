import type { TrialEvent } from "./messages.js";
import { validToken } from "./tokens.js";
import type { AgentEventType } from "./trial-events.js";

/**
 * Message-id grammar (the `msgID` of a JetStream publish, `Nats-Msg-Id` on the wire). The server drops a
 * message whose id it has stored within the stream's duplicate window (10 min), so a publish retried
 * after a lost acknowledgement, or repeated by a coordinator catching up after a restart, is stored
 * once. Every id is built from what identifies the message, never at random:
 *
 *   RUNG_WORK     <study>.<trial>.<attempt>                     the order of one attempt
 *   RUNG_EVENTS   <study>.<trial>.<attempt>.<type>              agent: claimed, started, finished
 *                 <study>.<trial>.<attempt>.rejected.<agent>    agent: a refusal (attempt 0 when the order
 *                                                               names none); each agent's refusal counts
 *                 <study>.<trial>.<attempt>.report.<seq>        agent: one report, or a batch whose first is <seq>
 *                 <study>.<trial>.<attempt>.checkpoint.<seq>    agent: the snapshot report <seq> asked for
 *                 <study>.<trial>.created                       coordinator
 *                 <study>.<trial>.queued.<attempt>              coordinator
 *                 <study>.<trial>.decision.<attempt>.<seq>      coordinator: a STOP on report <seq>
 *                 <study>.<trial>.ended                         coordinator
 *   RUNG_LOGS     <study>.<trial>.<attempt>.log.<seq>           one chunk of terminal output
 *
 * Every event and log id then ends with `.<tag>` where its writer has one (claims.ts): an agent's
 * `agentIdTag(nonce, agent)`, the coordinator's study secret. The server de-duplicates ids across the
 * whole stream, whatever the subject, so an id another box could predict would let it publish first
 * and have the real message dropped; the tag makes every id unpredictable to everyone but its writer.
 * Studies recorded before secrets existed, and refusals of orders that could not be read, have none.
 *
 * Ids need only be unique within a stream. In RUNG_EVENTS the agent's ids carry a number third and the
 * coordinator's a word, and no token contains a `.`, so the two never meet. The coordinator also keys
 * its memory of what it has published by these ids, rebuilt from the stored events on a restart (see
 * {@link trialEventMsgId}). Changing any of them changes what the server de-duplicates across an
 * upgrade. Tokens pass {@link validToken}, as in subjects.ts; counts must be integers.
 *
 * `<study>` is the study's *scope* ({@link studyScope}): its name, and for a study recorded with an
 * incarnation id, `<name>~<id>`. Each `rung study run` of a new study (also the same spec run again
 * after `rung study delete`) draws a new id, so none of its messages can be taken for a deleted
 * study's inside the duplicate window. Studies recorded before ids existed keep their name alone.
 */

/** The study part of every id: `<name>`, or `<name>~<id>` when the study has an incarnation id. */
export function studyScope(study: string, studyId?: string | null): string {
  const name = validToken(study, "study");
  return studyId ? `${name}~${validToken(studyId, "study id")}` : name;
}

/** A study part as {@link studyScope} builds it: a token, or two joined by `~`. */
function scopeOf(study: string): string {
  const [name = "", id, ...rest] = study.split("~");
  if (rest.length > 0) validToken(study, "study");
  return id === undefined ? validToken(name, "study") : studyScope(name, id);
}

function count(value: number, what: string, min: 0 | 1): number {
  if (!Number.isInteger(value) || value < min)
    throw new RangeError(`${what} must be ${min === 1 ? "a positive" : "a non-negative"} integer, got ${value}`);
  return value;
}

const trialOf = (study: string, trial: string): string => `${scopeOf(study)}.${validToken(trial, "trial")}`;

/** `<study>.<trial>.<attempt>`: the work order of one attempt. */
export function workOrderMsgId(study: string, trial: string, attempt: number): string {
  return `${trialOf(study, trial)}.${count(attempt, "attempt", 1)}`;
}

/** `.<tag>`, or nothing without one. */
function tagged(id: string, tag: string | null | undefined): string {
  return tag ? `${id}.${validToken(tag, "message id tag")}` : id;
}

/** `<study>.<trial>.<attempt>.log.<seq>[.<tag>]`: one chunk of an attempt's terminal output. */
export function logChunkMsgId(study: string, trial: string, attempt: number, seq: number, tag?: string | null): string {
  return tagged(`${trialOf(study, trial)}.${count(attempt, "attempt", 1)}.log.${count(seq, "seq", 0)}`, tag);
}

/**
 * `<study>.<trial>.<attempt>.<type>`: an agent's lifecycle event (one of each per attempt). A refused
 * order that names no attempt (`attempt: null`) counts as attempt 0.
 */
export function agentEventMsgId(
  study: string,
  trial: string,
  attempt: number | null,
  type: Exclude<AgentEventType, "report" | "checkpoint">,
): string {
  return `${trialOf(study, trial)}.${attempt === null ? 0 : count(attempt, "attempt", 0)}.${type}`;
}

/** `<study>.<trial>.<attempt>.report.<seq>`: one report of an attempt. */
export function reportMsgId(study: string, trial: string, attempt: number, seq: number): string {
  return `${trialOf(study, trial)}.${count(attempt, "attempt", 1)}.report.${count(seq, "seq", 0)}`;
}

/** `<study>.<trial>.created`. */
export function createdMsgId(study: string, trial: string): string {
  return `${trialOf(study, trial)}.created`;
}

/** `<study>.<trial>.queued.<attempt>`. */
export function queuedMsgId(study: string, trial: string, attempt: number): string {
  return `${trialOf(study, trial)}.queued.${count(attempt, "attempt", 1)}`;
}

/** `<study>.<trial>.decision.<attempt>.<seq>`: the decision on report `<seq>` of an attempt. */
export function decisionMsgId(study: string, trial: string, attempt: number, seq: number): string {
  return `${trialOf(study, trial)}.decision.${count(attempt, "attempt", 1)}.${count(seq, "seq", 0)}`;
}

/** `<study>.<trial>.ended`. */
export function endedMsgId(study: string, trial: string): string {
  return `${trialOf(study, trial)}.ended`;
}

/** One agent's refusal of an attempt's order: another agent's refusal of the same order is another message. */
export function rejectedMsgId(study: string, trial: string, attempt: number | null, agent: string): string {
  return `${agentEventMsgId(study, trial, attempt, "rejected")}.${validToken(agent, "agent")}`;
}

/**
 * The id of any trial event, by its type: the one id each event is published under. `tag`: its
 * writer's (an agent's id tag for the order, the coordinator's study secret), when it has one.
 */
export function trialEventMsgId(e: TrialEvent, studyId?: string | null, tag?: string | null): string {
  return tagged(untaggedEventId(e, studyScope(e.study, studyId)), tag);
}

function untaggedEventId(e: TrialEvent, study: string): string {
  switch (e.type) {
    case "created":
      return createdMsgId(study, e.trial);
    case "queued":
      return queuedMsgId(study, e.trial, e.attempt);
    case "decision":
      return decisionMsgId(study, e.trial, e.attempt, e.seq);
    case "ended":
      return endedMsgId(study, e.trial);
    case "report":
      return reportMsgId(study, e.trial, e.attempt, e.seq);
    case "checkpoint":
      return `${trialOf(study, e.trial)}.${count(e.attempt, "attempt", 1)}.checkpoint.${count(e.seq, "seq", 0)}`;
    case "claimed":
    case "started":
    case "finished":
      return agentEventMsgId(study, e.trial, e.attempt, e.type);
    case "rejected":
      return rejectedMsgId(study, e.trial, e.attempt, e.agent);
  }
}
