/** Errors of the agent package. Each sets `name`, carries typed fields and reads as one sentence. */

/** A flag or option the agent cannot work with; `option` is the flag as the user typed it. */
export class AgentOptionsError extends Error {
  override name = "AgentOptionsError";
  constructor(
    readonly option: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`${option}: ${problem}`, options);
  }
}

/** The machine has nothing to offer: no GPU found and neither --fake-gpus nor --cpu-slots given. */
export class NoResourcesError extends Error {
  override name = "NoResourcesError";
  constructor(readonly gpuProblem: string) {
    super(
      `no GPU to offer (${gpuProblem}) — pass --cpu-slots N to run CPU trials here, --fake-gpus N to simulate GPUs, or --nvidia-smi PATH if nvidia-smi is elsewhere`,
    );
  }
}

/** `--gpus` named an index that nvidia-smi (or --fake-gpus) does not know. */
export class UnknownGpuError extends Error {
  override name = "UnknownGpuError";
  constructor(
    readonly index: number,
    readonly available: readonly number[],
  ) {
    super(
      `--gpus: GPU ${index} does not exist on this machine (found ${available.length ? available.join(", ") : "none"}); run nvidia-smi -L to list them`,
    );
  }
}

/** nvidia-smi ran but did not answer the inventory query (driver not loaded, permissions). */
export class NvidiaSmiError extends Error {
  override name = "NvidiaSmiError";
  constructor(
    readonly path: string,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${path} failed: ${detail} — check the NVIDIA driver, or pass --nvidia-smi PATH`, options);
  }
}

/** A trial's process could not be started at all (missing program, bad working directory). */
export class TrialStartError extends Error {
  override name = "TrialStartError";
  constructor(
    readonly study: string,
    readonly trial: string,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`cannot start trial ${study}/${trial}: ${detail}`, options);
  }
}

/** A state machine of the agent was asked to move along an edge it does not have: a bug in the agent. */
export class IllegalTransitionError extends Error {
  override name = "IllegalTransitionError";
  constructor(
    readonly machine: string,
    readonly from: string,
    readonly to: string,
  ) {
    super(`${machine}: illegal state transition ${from} → ${to} (a bug in rung agent; please report it)`);
  }
}
