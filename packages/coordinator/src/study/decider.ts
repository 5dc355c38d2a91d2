import { sourceOf, type TrialEvent } from "@rung/protocol";
import type { Promotion, SchedulerDecision } from "../scheduling/index.js";
import { createStudyPolicy, type StudyPolicy } from "./policy.js";
import { generateTrials } from "./search-space.js";
import type { StudySpec } from "./spec.js";
import { StudyState } from "./state.js";
import type { StoredEvent } from "./stored-event.js";

/** A STOP (or, from the promotion scheduler, a PAUSE) the scheduler decided on a report. */
export interface StopDecision extends SchedulerDecision {
  readonly trial: string;
  readonly attempt: number;
  /** `seq` of the report decided on. */
  readonly seq: number;
  readonly t: number;
  readonly value: number | null;
  /** t reached max_t: the trial ends by itself; no stop needs sending. */
  readonly atMaxT: boolean;
}

/**
 * The scheduling half of the coordinator as a pure function of the event stream: feed it a study's
 * events in stream order and it makes exactly the decisions the live coordinator made (invariant 3).
 * The live coordinator feeds it every event, stored ones first after a restart; tests and
 * `rung replay --study` feed it stored streams.
 *
 * Which reports count is decided from the stream alone:
 * - a trial's reports after its STOP are ignored (the process takes a moment to die);
 * - a report from an attempt older than the newest one seen, or from an attempt that has finished,
 *   is ignored (a lost agent's copy still talking).
 * Ray's controller calls `on_trial_complete` after a STOP and when a trial ends by itself; so do we,
 * on the STOP and on a `completed` finish of a trial never stopped.
 *
 * Only the study's own events count ({@link belongs}): its trials, created before anything else about
 * them. A forged or misrouted event — a report for a trial not in the search space, a second
 * `created`, one with an impossible bracket — never reaches the scheduler, live or in a replay.
 */
export class StudyDecider {
  readonly #scheduler: StudyPolicy;
  readonly #study: string;
  readonly #planned: ReadonlySet<string>;
  readonly #created = new Set<string>();
  readonly #timeAttr: string;
  readonly #metric: string;
  readonly #maxT: number | null;
  readonly #trials = new Map<
    string,
    { stopped: boolean; paused: boolean; latest: number; finished: Set<number>; last: Record<string, number> }
  >();

  constructor(spec: StudySpec) {
    this.#scheduler = createStudyPolicy(spec);
    this.#study = spec.name;
    this.#planned = new Set(generateTrials(spec).map((p) => p.trial));
    this.#timeAttr = spec.scheduler.timeAttr;
    this.#metric = spec.metric.name;
    this.#maxT = spec.scheduler.maxT;
  }

  /**
   * Whether an event, next in stream order, is one of the study's: a trial of its search space, and a
   * `created` the first time, anything else only after it. The coordinator drops (and counts) the rest.
   */
  belongs(ev: TrialEvent): boolean {
    if (ev.study !== this.#study || !this.#planned.has(ev.trial)) return false;
    return ev.type === "created" ? !this.#created.has(ev.trial) : this.#created.has(ev.trial);
  }

  /** A new trial's bracket, drawn from the seeded RNG (the live coordinator, before `created`). */
  addTrial(trial: string): { bracket: number | null } {
    return this.#scheduler.onTrialAdd(trial);
  }

  #trial(id: string) {
    let t = this.#trials.get(id);
    if (!t) {
      t = { stopped: false, paused: false, latest: 0, finished: new Set(), last: {} };
      this.#trials.set(id, t);
    }
    return t;
  }

  /**
   * The next paused trial to resume (promotion-based ASHA only; null otherwise, or when none is due):
   * `ready` says whether a trial's paused attempt has ended.
   */
  nextPromotion(ready: (trial: string) => boolean): Promotion | null {
    return this.#scheduler.promoter?.nextPromotion(ready) ?? null;
  }

  onEvent(ev: TrialEvent): StopDecision | null {
    if (!this.belongs(ev)) return null;
    const t = this.#trial(ev.trial);
    switch (ev.type) {
      case "created":
        this.#created.add(ev.trial);
        this.#scheduler.pbt?.setParams(ev.trial, ev.params);
        try {
          this.#scheduler.onTrialAdd(ev.trial, { bracket: ev.bracket });
        } catch {
          // A bracket this scheduler does not have (a hand-made event): draw one, as for a new trial.
          this.#scheduler.onTrialAdd(ev.trial);
        }
        return null;
      case "queued":
        // A promotion: the paused trial goes on (to the rung the event names) from its checkpoint.
        if (ev.promotedTo !== undefined && this.#scheduler.promoter) {
          const rung = this.#scheduler.promoter.milestones.indexOf(ev.promotedTo);
          if (rung > 0) this.#scheduler.promoter.onPromote(ev.trial, rung);
          t.paused = false;
        }
        // An exploit (PBT): the trial goes on from the donor's checkpoint with new parameters.
        if (ev.exploitOf !== undefined && ev.params !== undefined && this.#scheduler.pbt) {
          this.#scheduler.pbt.onExploit(ev.trial, ev.exploitOf, ev.params);
          t.paused = false;
        }
        t.latest = Math.max(t.latest, ev.attempt);
        return null;
      case "claimed":
      case "started":
        t.latest = Math.max(t.latest, ev.attempt);
        return null;
      case "report": {
        if (t.stopped || t.paused || ev.attempt < t.latest || t.finished.has(ev.attempt)) return null;
        t.latest = ev.attempt;
        t.last = ev.metrics;
        const d = this.#scheduler.onReport(ev.trial, ev.metrics);
        if (d.decision === "CONTINUE") return null;
        if (d.decision === "PAUSE" || d.decision === "EXPLOIT") t.paused = true;
        else {
          t.stopped = true;
          this.#scheduler.onComplete(ev.trial, ev.metrics);
        }
        const tv = ev.metrics[this.#timeAttr] ?? Number.NaN;
        return {
          ...d,
          trial: ev.trial,
          attempt: ev.attempt,
          seq: ev.seq,
          t: tv,
          value: ev.metrics[this.#metric] ?? null,
          atMaxT: this.#maxT !== null && tv >= this.#maxT,
        };
      }
      case "checkpoint":
        this.#scheduler.pbt?.onCheckpoint(ev.trial);
        return null;
      case "finished":
        t.finished.add(ev.attempt);
        if (ev.status === "completed" && !t.stopped && ev.attempt >= t.latest) {
          t.stopped = true;
          this.#scheduler.onComplete(ev.trial, t.last);
        }
        return null;
      default:
        return null;
    }
  }
}

/**
 * Every STOP (and PAUSE) a study's stored events lead to, in order: what `rung replay --study` and tests compare.
 * As in the live coordinator, only what each event's publisher may say reaches the scheduler
 * (`StudyState.apply`); a bare event is taken as from the publisher it names.
 */
export function decideStudy(spec: StudySpec, events: Iterable<TrialEvent | StoredEvent>): StopDecision[] {
  const decider = new StudyDecider(spec);
  const out: StopDecision[] = [];
  for (const event of admitted(spec.name, events)) {
    const d = decider.onEvent(event);
    if (d) out.push(d);
  }
  return out;
}

/** The events a fold of the study takes, in order (see StudyState: who may say what). */
export function* admitted(study: string, events: Iterable<TrialEvent | StoredEvent>): Generator<TrialEvent> {
  const state = new StudyState({ study, metric: "", mode: "max", timeAttr: "" });
  for (const x of events) {
    const { event, from } = "event" in x ? x : { event: x, from: sourceOf(x) };
    if (state.apply(event, from)) yield event;
  }
}
