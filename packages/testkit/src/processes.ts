import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { waitFor } from "./wait.js";

/**
 * Child processes as the tests start them: the built `rung` CLI (`rung agent`, `rung study run`, `rung
 * tail` …) run the way users run it, with its output kept for assertions and post-mortems, and stopped
 * the same way everywhere — the stop signal, then SIGKILL if it does not go.
 */

/** The repository root (this file is packages/testkit/src/ or, built, packages/testkit/dist/). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
/** The built CLI (`pnpm build`); the tests run it rather than the sources, as users do. */
export const RUNG_BIN = join(REPO, "packages", "cli", "dist", "bin.js");

export interface SpawnOptions {
  /** Set on top of this process's environment. */
  env?: Record<string, string>;
  /** Default: the repository root. */
  cwd?: string;
  /** What `stop()` sends. Default SIGTERM. */
  stopSignal?: NodeJS.Signals;
  /** How long `stop()` waits for the exit before it sends SIGKILL. Default 8 s. */
  killAfterMs?: number;
}

export interface TestProcess {
  readonly child: ChildProcess;
  /** stdout and stderr together, in the order they arrived. */
  out(): string;
  /** stdout alone, as bytes. */
  stdout(): Buffer;
  stderr(): string;
  /** Complete stdout lines so far, empty ones left out. */
  lines(): string[];
  /** The exit code; null when a signal ended it. */
  readonly exited: Promise<number | null>;
  /** Neither exited nor ended by a signal yet. */
  alive(): boolean;
  /**
   * Sends SIGCONT (a frozen process acts on no other signal) and `signal` (default: the process's
   * `stopSignal`), SIGKILL after `killAfterMs`, and resolves with the exit code. Does nothing to a
   * process that has already exited.
   */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function spawnProcess(command: string, args: string[], options: SpawnOptions = {}): TestProcess {
  const child = spawn(command, args, {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  const stdout: Buffer[] = [];
  child.stdout?.on("data", (d: Buffer) => {
    stdout.push(d);
    out += d;
  });
  child.stderr?.on("data", (d: Buffer) => {
    err += d;
    out += d;
  });
  const exited = new Promise<number | null>((r) => {
    child.once("exit", (code) => r(code));
    // A command that cannot be started emits "error" and never "exit".
    child.once("error", (e) => {
      err += `${e.message}\n`;
      out += `${e.message}\n`;
      if (child.pid === undefined) r(null);
    });
  });
  const alive = () => child.exitCode === null && child.signalCode === null && child.pid !== undefined;
  const stopSignal = options.stopSignal ?? "SIGTERM";
  const killAfterMs = options.killAfterMs ?? 8000;
  const stdoutBytes = () => Buffer.concat(stdout);
  return {
    child,
    out: () => out,
    stdout: stdoutBytes,
    stderr: () => err,
    lines: () => {
      const text = stdoutBytes().toString("utf8");
      return text
        .slice(0, text.lastIndexOf("\n") + 1)
        .split("\n")
        .filter((l) => l !== "");
    },
    exited,
    alive,
    stop: async (signal = stopSignal) => {
      if (!alive()) return exited;
      child.kill("SIGCONT");
      child.kill(signal);
      const t = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/**
 * `rung ARGS…`: the built CLI under this Node, in the repository root. It logs at RUNG_LOG_LEVEL,
 * `warn` when that is unset (pass `env` to change it).
 */
export function rung(args: string[], options: SpawnOptions = {}): TestProcess {
  if (!existsSync(RUNG_BIN)) throw new Error(`${RUNG_BIN} is missing: build first with "pnpm build"`);
  return spawnProcess(process.execPath, [RUNG_BIN, ...args], {
    ...options,
    env: { RUNG_LOG_LEVEL: process.env.RUNG_LOG_LEVEL ?? "warn", ...options.env },
  });
}

export interface RungAgentOptions extends SpawnOptions {
  name: string;
  stateDir: string;
  /** `--workdir`. Default: the repository root. */
  workdir?: string;
  /** `--fake-gpus N`; null: no such flag (pass `--nvidia-smi` or `--fake-gpus` in `flags`). Default 1. */
  fakeGpus?: number | null;
  /** `--lease`. Default 3s. */
  lease?: string;
  /** `--stop-grace`. Default 2s. */
  stopGrace?: string;
  /**
   * Further flags, after the ones above: where they name a flag again, they win. Without `--trust`
   * among them the agent also gets `--insecure` (runs unsigned orders, as the tests' coordinators sign nothing).
   */
  flags?: string[];
}

/** `rung agent` on the mesh `prefix` at `url`. */
export function rungAgent(url: string, prefix: string, o: RungAgentOptions): TestProcess {
  const { name, stateDir, workdir = REPO, fakeGpus = 1, lease = "3s", stopGrace = "2s", flags = [], ...spawnOptions } = o;
  const args = [
    "agent",
    "--nats",
    url,
    "--prefix",
    prefix,
    "--name",
    name,
    ...(fakeGpus === null ? [] : ["--fake-gpus", String(fakeGpus)]),
    "--workdir",
    workdir,
    "--state-dir",
    stateDir,
    "--lease",
    lease,
    "--stop-grace",
    stopGrace,
    ...(flags.includes("--trust") ? [] : ["--insecure"]),
    ...flags,
  ];
  return rung(args, spawnOptions);
}

/** `n` agents a1…an, one fake GPU each, state in a new temp directory; `flags` go to every one. */
export function rungAgents(url: string, prefix: string, n: number, flags: string[] = []): TestProcess[] {
  const state = mkdtempSync(join(tmpdir(), "rung-agents-"));
  return Array.from({ length: n }, (_, i) =>
    rungAgent(url, prefix, { name: `a${i + 1}`, stateDir: join(state, `a${i + 1}`), flags }),
  );
}

/** Stops them all at once (see `TestProcess.stop`). */
export async function stopAll(procs: Iterable<TestProcess>): Promise<void> {
  await Promise.all([...procs].map((p) => p.stop()));
}

/** Waits until the process's output matches `pattern`, and returns the match. */
export function waitForOutput(
  p: TestProcess,
  pattern: RegExp,
  timeoutMs = 10_000,
  what = `output matching ${pattern}`,
): Promise<RegExpExecArray> {
  return waitFor(what, () => pattern.exec(p.out()), timeoutMs, 50);
}

/** How a child process ended: at once if it already has, else when it does. */
export function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
}

/** Sends `signal` to `pid` (a negative pid: to its process group); false if no such process is left. */
export function signalPid(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Whether a process (any, not only our children) still exists. */
export function pidAlive(pid: number): boolean {
  return signalPid(pid, 0);
}
