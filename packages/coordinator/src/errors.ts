/** Errors of the coordinator package. Each sets `name`, carries typed fields and reads as one sentence. */

/** One thing wrong with a study spec: where (`scheduler.reduction_factor`) and what (`must be > 1, got 1`). */
export interface SpecProblem {
  /** Dotted field path as written in the spec (`search.space.lr.loguniform`); "" for the document itself. */
  readonly path: string;
  readonly message: string;
}

function describeProblem(p: SpecProblem): string {
  return p.path === "" ? p.message : `${p.path}: ${p.message}`;
}

/**
 * A study spec that cannot be run. Thrown before anything starts, listing every problem found in the
 * pass that failed (structure first; cross-field rules once the structure is sound).
 */
export class SpecError extends Error {
  override name = "SpecError";
  /** Path of the first problem; see `problems` for all of them. */
  readonly path: string;
  readonly problems: readonly SpecProblem[];
  /** The file the spec came from, when there was one. */
  readonly file: string | null;

  constructor(problems: readonly SpecProblem[], options?: { file?: string | null; cause?: unknown }) {
    const list = problems.length > 0 ? problems : [{ path: "", message: "is not a valid study spec" }];
    const file = options?.file ?? null;
    const where = file === null ? "" : `${file}: `;
    const text =
      list.length === 1
        ? `${where}${describeProblem(list[0] as SpecProblem)}`
        : `${where}${list.length} problems in the study spec: ${list.map(describeProblem).join("; ")}`;
    super(text, options?.cause === undefined ? undefined : { cause: options.cause });
    this.problems = list;
    this.path = (list[0] as SpecProblem).path;
    this.file = file;
  }
}

/** Scheduler options that break a construction rule (`reductionFactor: must be > 1, got 1`). */
export class SchedulerOptionsError extends Error {
  override name = "SchedulerOptionsError";
  /** Option name of the first problem (camelCase, as passed). */
  readonly option: string;
  readonly problems: readonly { readonly option: string; readonly message: string }[];

  constructor(problems: readonly { readonly option: string; readonly message: string }[]) {
    const list = problems.length > 0 ? problems : [{ option: "scheduler", message: "is not valid" }];
    super(`invalid scheduler options: ${list.map((p) => `${p.option}: ${p.message}`).join("; ")}`);
    this.problems = list;
    this.option = (list[0] as { option: string }).option;
  }
}

/** A `rung replay` input line that cannot be read; names the 1-based line number. */
export class ReplayInputError extends Error {
  override name = "ReplayInputError";
  constructor(
    readonly line: number,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`replay input line ${line}: ${problem}`, options);
  }
}

/** A second coordinator for a study whose lease is live. */
export class StudyLeaseHeldError extends Error {
  override name = "StudyLeaseHeldError";
  constructor(
    readonly study: string,
    readonly holder: string,
    readonly expiresAt: number,
  ) {
    super(
      `study ${study} is already run by coordinator ${holder} — stop that one first, or wait until its lease expires (${new Date(expiresAt).toISOString()}) if it died`,
    );
  }
}

export class StudyLeaseLostError extends Error {
  override name = "StudyLeaseLostError";
  constructor(
    readonly study: string,
    options?: { cause?: unknown },
  ) {
    super(`another coordinator took over study ${study}; this one stops so that only one decides`, options);
  }
}

/** The study exists in NATS with a different spec than the one given. */
export class StudySpecChangedError extends Error {
  override name = "StudySpecChangedError";
  constructor(
    readonly study: string,
    readonly storedHash: string,
    readonly givenHash: string,
    readonly what = "the spec differs from the one the study was started with",
  ) {
    super(
      `study ${study} already exists and ${what} — only search.samples (rung study run SPEC --samples N) and the budget may grow; give a changed study a new name, or remove the old one with "rung study delete ${study}"`,
    );
  }
}

export class StudyNotFoundError extends Error {
  override name = "StudyNotFoundError";
  constructor(readonly study: string) {
    super(`no study named ${study} in this mesh — "rung study list" shows the studies there are`);
  }
}

/** `rung logs` / `rung attach`: no trial of that id in any study (or in the study named). */
export class TrialNotFoundError extends Error {
  override name = "TrialNotFoundError";
  constructor(
    readonly trial: string,
    readonly study: string | null,
  ) {
    super(
      study === null
        ? `no trial ${trial} in any study of this mesh — "rung study status NAME" lists a study's trials`
        : `no trial ${trial} in study ${study} — "rung study status ${study}" lists its trials`,
    );
  }
}

/** A bare trial id that several studies have. */
export class AmbiguousTrialError extends Error {
  override name = "AmbiguousTrialError";
  constructor(
    readonly trial: string,
    readonly studies: readonly string[],
  ) {
    super(
      `trial ${trial} is in ${studies.length} studies (${studies.join(", ")}) — name one, as ${studies[0]}/${trial} or with --study ${studies[0]}`,
    );
  }
}

/** The trial (or attempt) has no terminal output stored. */
export class NoTrialOutputError extends Error {
  override name = "NoTrialOutputError";
  constructor(
    readonly study: string,
    readonly trial: string,
    readonly attempt: number | null,
    readonly attempts: readonly number[] = [],
  ) {
    super(
      attempt === null
        ? `trial ${study}/${trial} has no terminal output yet — follow it with -f, or "rung attach ${study}/${trial}"`
        : `trial ${study}/${trial} has no output for attempt ${attempt}${attempts.length ? ` (attempts with output: ${attempts.join(", ")})` : ""}`,
    );
  }
}

/** `rung attach` on a trial that has ended. */
export class TrialNotRunningError extends Error {
  override name = "TrialNotRunningError";
  constructor(
    readonly study: string,
    readonly trial: string,
    readonly phase: string,
  ) {
    super(`trial ${study}/${trial} is not running (${phase}) — see its output with "rung logs ${study}/${trial}"`);
  }
}

/** A `runStudy` option out of its bounds (`leaseMs: must be at least 1000, got 10`). */
export class RunOptionsError extends Error {
  override name = "RunOptionsError";
  constructor(
    readonly option: string,
    readonly problem: string,
  ) {
    super(`invalid study run option ${option}: ${problem}`);
  }
}

/** `rung study delete` of a study that still runs, without --force. */
export class StudyRunningError extends Error {
  override name = "StudyRunningError";
  constructor(
    readonly study: string,
    readonly trialsInFlight: number,
    readonly coordinator: { readonly host: string; readonly pid: number } | null,
  ) {
    const who = coordinator ? `its coordinator runs on ${coordinator.host} (pid ${coordinator.pid})` : "";
    const what = [trialsInFlight > 0 ? `${trialsInFlight} trial(s) in flight` : "", who].filter(Boolean).join(" and ");
    super(
      `study ${study} is still running (${what}) — stop it with "rung study stop ${study}" first, or delete it with --force, which stops its trials before removing it`,
    );
  }
}
