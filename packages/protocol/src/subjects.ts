import { validToken } from "./tokens.js";

/**
 * Subject grammar (with the default prefix `rung`; tests use their own prefix so they never collide):
 *
 *   rung.work.<pool>                          work orders, one pool per trial shape (`gpu1`, `gpu2`, `cpu1`)
 *   rung.events.<study>.<trial>               trial lifecycle, reports and scheduler decisions
 *   rung.telemetry.<agent>                    GPU and host samples
 *   rung.logs.<study>.<trial>.<attempt>       terminal output chunks
 *
 * KV keys:
 *   rung-agents   <agent>                     adverts
 *   rung-control  <study>.<trial>             stop commands
 *   rung-studies  <study>  /  <study>.lease   study record and coordinator lease
 *
 * Every token is checked by {@link validToken}; nothing else in Rung concatenates subjects.
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
  events(study: string, trial: string): string {
    return `${this.prefix}.events.${validToken(study, "study")}.${validToken(trial, "trial")}`;
  }
  /** All events of one study (`*` for every study). */
  studyEvents(study: string | "*"): string {
    return `${this.prefix}.events.${study === "*" ? "*" : validToken(study, "study")}.*`;
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
  logs(study: string, trial: string, attempt: number): string {
    if (!Number.isInteger(attempt) || attempt < 1) throw new RangeError(`attempt must be a positive integer, got ${attempt}`);
    return `${this.prefix}.logs.${validToken(study, "study")}.${validToken(trial, "trial")}.${attempt}`;
  }
  /** Logs of one trial, every attempt. */
  trialLogs(study: string, trial: string): string {
    return `${this.prefix}.logs.${validToken(study, "study")}.${validToken(trial, "trial")}.*`;
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
  studyKey(study: string): string {
    return validToken(study, "study");
  }
  leaseKey(study: string): string {
    return `${validToken(study, "study")}.lease`;
  }

  /** Parses `…events.<study>.<trial>` back into its tokens; undefined for anything else. */
  parseEvents(subject: string): { study: string; trial: string } | undefined {
    const parts = subject.split(".");
    if (parts.length !== 4 || parts[0] !== this.prefix || parts[1] !== "events") return undefined;
    return { study: parts[2] as string, trial: parts[3] as string };
  }
}

/** Pool name for a trial shape: `gpu2` for two GPUs, `cpu1` for one CPU slot. */
export function poolName(kind: "gpu" | "cpu", count: number): string {
  if (!Number.isInteger(count) || count < 1 || count > 64) throw new RangeError(`a trial needs 1 to 64 ${kind}s, got ${count}`);
  return `${kind}${count}`;
}
