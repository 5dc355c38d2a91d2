import { accessSync, constants, mkdirSync, statSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { delimiter, dirname, isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { JetStreamClient } from "@nats-io/jetstream";
import { agentIdTag, type Logger, type StopReason, type TrialStatus, type WorkOrder } from "@rung/protocol";
import pty from "node-pty";
import { TrialStartError } from "./errors.js";
import { LogStream } from "./log-stream.js";
import { ReportSocket } from "./report-socket.js";
import { SecretMasker, secretValues } from "./secret-mask.js";
import type { WarmSource } from "./warm-pool.js";

/**
 * Runs one attempt of a trial in a pseudo-terminal — the trial sees a terminal, so progress bars and
 * line-buffered output behave as they do for a person — without a shell: the order carries argv, which
 * goes to execvp as it is, so no parameter value is ever parsed by a shell.
 *
 * node-pty makes the child a session leader, so its pid is also its process group: a stop signals the
 * whole group (`kill(-pid)`), DataLoader workers and other helpers included: SIGTERM, a grace period,
 * then SIGKILL. Whatever is left of the group when the leader exits is killed too, so nothing a trial
 * started outlives it.
 */

/** Where the Python helper lives, relative to this module: the same from `src/` and from `dist/`. */
export const PYTHON_HELPER_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..", "python");

/** Why a trial was stopped, carried as its AbortController's reason. */
export interface StopRequest {
  reason: StopReason;
  /** The text of the finished event's `reason`, e.g. `scheduler-stop at t=3`. */
  detail: string;
}

export interface TrialResult {
  status: TrialStatus;
  exitCode: number | null;
  signal: string | null;
  reason: string;
  /** The last lines of output; filled for failures only. */
  logTail: string[];
  /** Whether the process ever ran (false: it could not be started). */
  started: boolean;
  stop: StopRequest | null;
}

export interface TrialRunOptions {
  order: WorkOrder;
  attempt: number;
  agent: string;
  /** GPU indices the trial holds; empty for a CPU trial. */
  gpus: readonly number[];
  /** What CUDA_VISIBLE_DEVICES lists for them (an index, or a MIG instance's UUID); default the indices. */
  visibleDevices?: readonly string[];
  /** Absolute working directory, already checked to lie inside the agent's --workdir. */
  workdir: string;
  checkpointDir: string;
  /** The time attribute's value of the checkpoint restored into `checkpointDir` (`RUNG_RESUME_FROM`); null for a fresh start. */
  resumeFrom?: number | null;
  /** Lines written to the trial's log before it starts (what the agent restored, or could not). */
  preamble?: readonly string[];
  logFile: string;
  reportPath: string;
  logsSubject: string;
  js: JetStreamClient;
  log: Logger;
  stopGraceMs: number;
  /** True once NATS is closed for good: output is then kept in the local file only. */
  isClosed(): boolean;
  onStarted(pid: number): void;
  /** `checkpoint`: the report said its checkpoint files are written (`"checkpoint": true`). */
  onReport(metrics: Record<string, number>, checkpoint: boolean): void;
  onMalformedReport(why: string, line: string): void;
  /** Warm starts (warm-pool.ts): a pre-started interpreter for this trial, if one fits. Default none. */
  warm?: WarmSource | null;
}

const SIGNAL_NAMES = new Map<number, string>(Object.entries(osConstants.signals).map(([name, n]) => [n, name]));

/** The environment of a trial: the agent's own, minus its `RUNG_*` settings, plus the study's and ours. */
export function trialEnv(
  o: Pick<TrialRunOptions, "order" | "attempt" | "gpus" | "visibleDevices" | "checkpointDir" | "reportPath" | "resumeFrom">,
) {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    // The agent's RUNG_* variables (NATS URL, credentials file) are not the trial's business.
    if (v !== undefined && !k.startsWith("RUNG_")) env[k] = v;
  }
  Object.assign(env, o.order.env);
  const pythonPath = env.PYTHONPATH ? `${PYTHON_HELPER_DIR}${delimiter}${env.PYTHONPATH}` : PYTHON_HELPER_DIR;
  Object.assign(env, {
    // nvidia-smi numbers GPUs by PCI bus; CUDA by default numbers the fastest first. Make CUDA agree,
    // so the indices we hand out are the GPUs we measure.
    CUDA_DEVICE_ORDER: "PCI_BUS_ID",
    CUDA_VISIBLE_DEVICES: (o.visibleDevices ?? o.gpus.map(String)).join(","),
    RUNG_STUDY: o.order.study,
    RUNG_TRIAL: o.order.trial,
    RUNG_ATTEMPT: String(o.attempt),
    RUNG_PARAMS: JSON.stringify(o.order.params),
    RUNG_REPORT: o.reportPath,
    RUNG_CHECKPOINT_DIR: o.checkpointDir,
    PYTHONPATH: pythonPath,
  });
  // Set only when a checkpoint was restored: its absence means a fresh start.
  if (o.resumeFrom !== undefined && o.resumeFrom !== null) env.RUNG_RESUME_FROM = String(o.resumeFrom);
  return env;
}

function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** execvp's lookup, done up front so a missing program is a clear error rather than a pty message. */
export function resolveExecutable(program: string, workdir: string, pathVar: string | undefined): string | undefined {
  if (program.includes("/")) {
    const p = isAbsolute(program) ? program : resolve(workdir, program);
    return isExecutableFile(p) ? p : undefined;
  }
  for (const dir of (pathVar ?? "/usr/local/bin:/usr/bin:/bin").split(delimiter)) {
    if (!dir) continue;
    const p = resolve(workdir, dir, program);
    if (isExecutableFile(p)) return p;
  }
  return undefined;
}

/**
 * Why an order's program cannot run here, or null when it can: its working directory (absolute) must
 * exist and its program must resolve as execvp would resolve it — absolute, relative to the working
 * directory, or on `pathVar` (the trial's PATH). The claim loop asks before it claims an order, so a
 * box that lacks either refuses the order (another agent may have them) instead of failing the trial.
 */
export function whyCannotRun(workdir: string, program: string, pathVar: string | undefined): string | null {
  let isDir = false;
  try {
    isDir = statSync(workdir).isDirectory();
  } catch {
    // reported below
  }
  if (!isDir) return `working directory ${workdir} does not exist on this agent`;
  if (resolveExecutable(program, workdir, pathVar)) return null;
  return program.includes("/")
    ? `program ${JSON.stringify(program)} not found or not executable on this agent`
    : `program ${JSON.stringify(program)} not found or not executable on this agent's PATH (${pathVar ?? ""})`;
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

export class TrialRun {
  readonly controller = new AbortController();
  readonly result: Promise<TrialResult>;
  readonly #o: TrialRunOptions;
  #pid: number | undefined;

  constructor(options: TrialRunOptions) {
    this.#o = options;
    this.result = this.#run();
  }

  get pid(): number | undefined {
    return this.#pid;
  }

  /** Asks the trial to stop: SIGTERM to its group, SIGKILL after the grace period. Idempotent. */
  stop(request: StopRequest): void {
    if (!this.controller.signal.aborted) this.controller.abort(request);
  }

  /** Kills the trial's group at once (a forced shutdown cannot wait for a grace period). */
  killNow(request: StopRequest): void {
    this.stop(request);
    if (this.#pid !== undefined) killGroup(this.#pid, "SIGKILL");
  }

  async #run(): Promise<TrialResult> {
    const o = this.#o;
    const signal = this.controller.signal;
    const logs = new LogStream({
      js: o.js,
      subject: o.logsSubject,
      study: o.order.study,
      studyId: o.order.studyId ?? null,
      tag: agentIdTag(o.order.nonce, o.agent),
      trial: o.order.trial,
      attempt: o.attempt,
      agent: o.agent,
      filePath: o.logFile,
      log: o.log,
      giveUp: o.isClosed,
    });
    for (const line of o.preamble ?? []) logs.write(Buffer.from(`[rung] ${line}\r\n`));
    // The values of the order's secret_env never reach a log, whatever the trial prints.
    const masker = new SecretMasker(secretValues(o.order));
    const env = trialEnv(o);
    let program: string;
    try {
      program = this.#prepare(env);
    } catch (err) {
      return cannotStart(logs, masker.maskText(err instanceof TrialStartError ? err.detail : (err as Error).message));
    }
    const reports = await ReportSocket.listen(o.reportPath, { onReport: o.onReport, onMalformed: o.onMalformedReport });
    if (signal.aborted) {
      // Stopped before it could start (a stop decision that arrived with the claim): never spawn it.
      await reports.close(0);
      await logs.finish();
      const stop = signal.reason as StopRequest;
      return { status: "stopped", exitCode: null, signal: null, reason: stop.detail, logTail: [], started: false, stop };
    }
    // A waiting interpreter becomes this trial (warm-pool.ts), or the trial starts its own process.
    const warm = o.warm?.take({ program, argv: o.order.argv, cwd: o.workdir, env }) ?? null;
    let term: pty.IPty;
    try {
      term = warm
        ? warm.term
        : pty.spawn(program, o.order.argv.slice(1), {
            name: "xterm-256color",
            cols: 120,
            rows: 40,
            cwd: o.workdir,
            env,
            // Raw bytes: a chunk may end inside a UTF-8 sequence, and logs keep the bytes as they were.
            encoding: null,
          });
    } catch (err) {
      await reports.close(0);
      return cannotStart(logs, masker.maskText((err as Error).message));
    }
    const pid = term.pid;
    this.#pid = pid;
    const exited = warm ? warm.exited : new Promise<{ exitCode: number; signal?: number }>((r) => term.onExit(r));
    if (warm) {
      logs.write(Buffer.from(`[rung] warm start: interpreter ${pid} had ${warm.preload.join(", ") || "nothing"} imported\r\n`));
      const early = masker.push(warm.preamble);
      if (early.length > 0) logs.write(early);
    }
    term.onData((d) => {
      const out = masker.push(d as unknown as Buffer);
      if (out.length === 0 || logs.write(out)) return;
      // The log file is behind: stop reading the terminal, so the trial blocks on its own writes.
      term.pause();
      void logs.fileDrained().then(() => term.resume());
    });
    // Its environment (RUNG_*, CUDA_VISIBLE_DEVICES) is set before any of the trial's code runs.
    warm?.start({ argv: o.order.argv.slice(1), env, cwd: o.workdir });
    o.onStarted(pid);

    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      o.log.info({ pid, why: (signal.reason as StopRequest).detail }, "stopping trial: SIGTERM to its process group");
      killGroup(pid, "SIGTERM");
      killTimer = setTimeout(() => {
        o.log.warn({ pid, graceMs: o.stopGraceMs }, "trial outlived its stop grace period: SIGKILL");
        killGroup(pid, "SIGKILL");
      }, o.stopGraceMs);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });

    const exit = await exited;
    signal.removeEventListener("abort", onAbort);
    if (killTimer) clearTimeout(killTimer);
    // Anything the trial left behind in its group (workers that ignored SIGHUP) goes with it.
    killGroup(pid, "SIGKILL");
    await reports.close();
    const rest = masker.flush();
    if (rest.length > 0) logs.write(rest);
    await logs.finish();

    const sig = exit.signal ? (SIGNAL_NAMES.get(exit.signal) ?? `signal ${exit.signal}`) : null;
    const exitCode = sig ? null : exit.exitCode;
    if (signal.aborted) {
      const stop = signal.reason as StopRequest;
      return { status: "stopped", exitCode, signal: sig, reason: stop.detail, logTail: [], started: true, stop };
    }
    if (!sig && exitCode === 0)
      return { status: "completed", exitCode, signal: null, reason: "exit code 0", logTail: [], started: true, stop: null };
    const reason = sig ? `killed by ${sig}` : `exit code ${exitCode}`;
    const tail = logs.tail();
    const oom = outOfMemoryLine(tail);
    if (oom !== null)
      return {
        status: "oom",
        exitCode,
        signal: sig,
        reason: `out of GPU memory (${reason}): ${oom}`,
        logTail: tail,
        started: true,
        stop: null,
      };
    return { status: "failed", exitCode, signal: sig, reason, logTail: tail, started: true, stop: null };
  }

  /** Checks what can be checked before spawning; returns the program's path. */
  #prepare(env: Record<string, string>): string {
    const o = this.#o;
    const fail = (detail: string) => new TrialStartError(o.order.study, o.order.trial, detail);
    // Checked when the order arrived (whyCannotRun); checked again in case the box changed since.
    const argv0 = o.order.argv[0] as string;
    const why = whyCannotRun(o.workdir, argv0, env.PATH);
    if (why) throw fail(why);
    const program = resolveExecutable(argv0, o.workdir, env.PATH) as string;
    try {
      mkdirSync(o.checkpointDir, { recursive: true });
    } catch (err) {
      throw fail(`cannot create the checkpoint directory ${o.checkpointDir}: ${(err as Error).message}`);
    }
    return program;
  }
}

/**
 * What CUDA's allocator (through PyTorch, or any CUDA program) prints when memory runs out, and what
 * the Python helper prints for a `MemoryError` it reports as such.
 */
// PyTorch and CUDA; cuBLAS and cuDNN failing to allocate their workspace; TensorFlow and JAX/XLA
// (`ResourceExhaustedError: OOM when allocating tensor`, `RESOURCE_EXHAUSTED: Out of memory`).
const OOM_PATTERN =
  /CUDA out of memory|torch\.cuda\.OutOfMemoryError|CUDA error: out of memory|CUDA_ERROR_OUT_OF_MEMORY|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED|RESOURCE_EXHAUSTED: Out of memory|OOM when allocating tensor|\[rung\] out of GPU memory/;

/** The last output line that says the trial ran out of GPU memory, trimmed; null when none does. */
export function outOfMemoryLine(lines: readonly string[]): string | null {
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i] as string;
    if (OOM_PATTERN.test(line)) return line.trim().slice(0, 300);
  }
  return null;
}

/** The result of a trial that never started: the sentence goes into its log as well. */
async function cannotStart(logs: LogStream, detail: string): Promise<TrialResult> {
  logs.write(Buffer.from(`[rung] cannot start: ${detail}\r\n`));
  await logs.finish();
  return {
    status: "failed",
    exitCode: null,
    signal: null,
    reason: `cannot start: ${detail}`,
    logTail: logs.tail(),
    started: false,
    stop: null,
  };
}
