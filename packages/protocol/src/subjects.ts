import type { TrialEvent } from "./messages.js";
import { validToken } from "./tokens.js";
import { COORDINATOR, type EventSource, sourceOf } from "./trial-events.js";

/**
 * Subject grammar (with the default prefix `rung`; tests use their own prefix so they never collide):
 *
 *   rung.work.<pool>                          work orders, one pool per trial shape (`gpu1`, `gpu2`, `cpu1`)
 *   rung.events.<study>.<trial>.c             the coordinator's trial events (created, queued, decision, ended)
 *   rung.events.<study>.<trial>.a.<agent>     one agent's trial events (claimed, started, report, finished, rejected)
 *   rung.telemetry.<agent>                    GPU and host samples
 *   rung.logs.<study>.<trial>.<attempt>.<agent>  terminal output chunks of one attempt, by the agent that ran it
 *
 * KV keys:
 *   rung-agents   <agent>                     adverts
 *   rung-control  <study>.<trial>             stop commands
 *   rung-control  ckpt.<study>.<trial>        the checkpoints an attempt may resume from (coordinator)
 *   rung-control  work.wake.<pool>            orders were queued in a pool: idle agents look at once (coordinator)
 *   rung-control  work.claim.<study>.<trial>  the attempt that holds a trial's order now (coordinator)
 *   rung-studies  <study>  /  <study>.lease   study record and coordinator lease
 *
 * Every token is checked by {@link validToken}; nothing else in Rung concatenates subjects.
 *
 * The last tokens of an event or log subject name its publisher, and the server lets each user publish
 * only under its own name (permissions.ts): readers learn who wrote a message from its subject, which a
 * box cannot forge, never from its body, which it can.
 */
export class Subjects {
  readonly prefix: string;

  constructor(prefix = "rung") {
    this.prefix = validToken(prefix, "subject prefix");
  }

  work(pool: string): string {
    return `${this.prefix}.work.${validToken(pool, "pool")}`;
  }
  workAll(): string {
    return `${this.prefix}.work.>`;
  }
  /** The coordinator's events of one trial. */
  coordinatorEvents(study: string, trial: string): string {
    return `${this.prefix}.events.${validToken(study, "study")}.${validToken(trial, "trial")}.c`;
  }
  /** One agent's events of one trial. */
  agentEvents(study: string, trial: string, agent: string): string {
    return `${this.prefix}.events.${validToken(study, "study")}.${validToken(trial, "trial")}.a.${validToken(agent, "agent")}`;
  }
  /** The subject an event is published on: its writer's (TrialEventWriter), an agent's by the agent it names. */
  eventSubject(ev: TrialEvent): string {
    const from = sourceOf(ev);
    return from.role === "coordinator"
      ? this.coordinatorEvents(ev.study, ev.trial)
      : this.agentEvents(ev.study, ev.trial, from.agent);
  }
  /** Every event of one trial, whoever wrote it. */
  trialEvents(study: string, trial: string): string {
    return `${this.prefix}.events.${validToken(study, "study")}.${validToken(trial, "trial")}.>`;
  }
  /** All events of one study (`*` for every study). */
  studyEvents(study: string | "*"): string {
    return `${this.prefix}.events.${study === "*" ? "*" : validToken(study, "study")}.>`;
  }
  eventsAll(): string {
    return `${this.prefix}.events.>`;
  }
  telemetry(agent: string): string {
    return `${this.prefix}.telemetry.${validToken(agent, "agent")}`;
  }
  telemetryAll(): string {
    return `${this.prefix}.telemetry.*`;
  }
  /** One attempt's terminal output, as published by the agent that runs it. */
  logs(study: string, trial: string, attempt: number, agent: string): string {
    return `${this.attemptLogsPrefix(study, trial, attempt)}.${validToken(agent, "agent")}`;
  }
  /** One attempt's output, whoever published it (readers then keep the claimant's only). */
  attemptLogs(study: string, trial: string, attempt: number): string {
    return `${this.attemptLogsPrefix(study, trial, attempt)}.*`;
  }
  /** Logs of one trial, every attempt and publisher. */
  trialLogs(study: string, trial: string): string {
    return `${this.prefix}.logs.${validToken(study, "study")}.${validToken(trial, "trial")}.*.*`;
  }
  private attemptLogsPrefix(study: string, trial: string, attempt: number): string {
    if (!Number.isInteger(attempt) || attempt < 1) throw new RangeError(`attempt must be a positive integer, got ${attempt}`);
    return `${this.prefix}.logs.${validToken(study, "study")}.${validToken(trial, "trial")}.${attempt}`;
  }
  logsAll(): string {
    return `${this.prefix}.logs.>`;
  }

  agentKey(agent: string): string {
    return validToken(agent, "agent");
  }
  controlKey(study: string, trial: string): string {
    return `${validToken(study, "study")}.${validToken(trial, "trial")}`;
  }
  /** The trial's checkpoint index in the control bucket (three tokens: stop keys have two). */
  checkpointIndexKey(study: string, trial: string): string {
    return `ckpt.${validToken(study, "study")}.${validToken(trial, "trial")}`;
  }
  /**
   * The work wake of a pool in the control bucket (three tokens, so the stop-key watch `*.*` of any
   * agent, old or new, never sees it): the coordinator writes it after queueing orders there, and idle
   * agents, which watch `work.>` ({@link workKeysAll}), look for work at once instead of at their next poll.
   */
  workWakeKey(pool: string): string {
    return `work.wake.${validToken(pool, "pool")}`;
  }
  /**
   * The claim notice of a trial in the control bucket (four tokens): which attempt holds the trial's
   * order now. The coordinator writes it when an attempt is claimed while an older one still runs (its
   * agent froze, or its lease ran out unnoticed): the older copy's agent, which watches `work.>`,
   * kills it at once instead of when its own lease check finds out.
   */
  claimNoticeKey(study: string, trial: string): string {
    return `work.claim.${validToken(study, "study")}.${validToken(trial, "trial")}`;
  }
  /** The claim notices of one study (to delete with it). */
  studyClaimNotices(study: string): string {
    return `work.claim.${validToken(study, "study")}.>`;
  }
  /** Every work key of the control bucket: wakes and claim notices, the second watch of every agent. */
  workKeysAll(): string {
    return "work.>";
  }
  /** What a key under `work.` is: a wake of a pool, a claim notice of a trial, or neither. */
  parseWorkKey(key: string): { kind: "wake"; pool: string } | { kind: "claim"; study: string; trial: string } | undefined {
    const parts = key.split(".");
    if (parts[0] !== "work") return undefined;
    if (parts.length === 3 && parts[1] === "wake") return { kind: "wake", pool: parts[2] as string };
    if (parts.length === 4 && parts[1] === "claim")
      return { kind: "claim", study: parts[2] as string, trial: parts[3] as string };
    return undefined;
  }
  /** One snapshot's object name: `<study scope>/<trial>/<attempt>/<seq>`, unique per report that asked for it. */
  checkpointObject(scope: string, trial: string, attempt: number, seq: number): string {
    return `${scope}/${validToken(trial, "trial")}/${attempt}/${seq}`;
  }
  studyKey(study: string): string {
    return validToken(study, "study");
  }
  leaseKey(study: string): string {
    return `${validToken(study, "study")}.lease`;
  }

  /**
   * Parses an event subject back into its tokens and its publisher; undefined for anything else
   * (including the unscoped `…events.<study>.<trial>` of versions before publishers were named).
   */
  parseEvents(subject: string): { study: string; trial: string; from: EventSource } | undefined {
    const parts = subject.split(".");
    if (parts[0] !== this.prefix || parts[1] !== "events") return undefined;
    const study = parts[2] as string;
    const trial = parts[3] as string;
    if (parts.length === 5 && parts[4] === "c") return { study, trial, from: COORDINATOR };
    if (parts.length === 6 && parts[4] === "a") return { study, trial, from: { role: "agent", agent: parts[5] as string } };
    return undefined;
  }

  /** Parses a log subject; undefined for anything else (including unscoped subjects of older versions). */
  parseLogs(subject: string): { study: string; trial: string; attempt: number; agent: string } | undefined {
    const parts = subject.split(".");
    if (parts.length !== 6 || parts[0] !== this.prefix || parts[1] !== "logs") return undefined;
    const attempt = Number(parts[4]);
    if (!Number.isInteger(attempt) || attempt < 1) return undefined;
    return { study: parts[2] as string, trial: parts[3] as string, attempt, agent: parts[5] as string };
  }
}

/** A snapshot's object name (`Subjects.checkpointObject`) read back; undefined for any other name. */
export function parseCheckpointObject(
  name: string,
): { scope: string; study: string; trial: string; attempt: number; seq: number } | undefined {
  const parts = name.split("/");
  if (parts.length !== 4) return undefined;
  const [scope = "", trial = "", a = "", q = ""] = parts;
  const attempt = Number(a);
  const seq = Number(q);
  if (!scope || !trial || !Number.isInteger(attempt) || attempt < 1 || !Number.isInteger(seq) || seq < 0) return undefined;
  return { scope, study: scope.split("~")[0] as string, trial, attempt, seq };
}

/** Pool name for a trial shape: `gpu2` for two GPUs, `cpu1` for one CPU slot. */
export function poolName(kind: "gpu" | "cpu", count: number): string {
  if (!Number.isInteger(count) || count < 1 || count > 64) throw new RangeError(`a trial needs 1 to 64 ${kind}s, got ${count}`);
  return `${kind}${count}`;
}
