import { randomBytes } from "node:crypto";
import { realpathSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { dirname, join, resolve } from "node:path";
import type { Logger } from "@rung/protocol";
import pty from "node-pty";
import { AgentOptionsError } from "./errors.js";
import type { CompiledAgentOptions } from "./options.js";
import { StateMachine, type Transitions } from "./state-machine.js";
import { PYTHON_HELPER_DIR, resolveExecutable } from "./trial-runner.js";

/**
 * WARM STARTS (`rung agent --warm-python /usr/bin/python3 --warm-preload torch,sklearn`): the agent keeps
 * a few Python interpreters started ahead of time, the heavy imports done, each waiting for ONE trial.
 *
 * An interpreter is started exactly as a trial is — node-pty, its own pseudo-terminal, its own session
 * and process group — in the working directory of the trials it will serve and with the environment they
 * share (the trial's environment less `RUNG_*` and `CUDA_VISIBLE_DEVICES`; CUDA_VISIBLE_DEVICES is empty
 * while it imports, and rung_warm.py refuses to serve if the imports loaded the CUDA driver). Once the
 * imports are done it says so on the agent's warm socket and waits. A trial whose command is
 * `<that python> script.py …`, in the same directory and with the same shared environment, is handed to a
 * waiting interpreter: argv, its full environment and directory go over the socket, and the interpreter
 * becomes the trial (rung_warm.py): same PTY, same process group, output and exit status as its own.
 * The trial runner then treats it as a process it had spawned itself.
 *
 * An interpreter serves one trial and is never handed another; a new one is started in the background
 * for the next. Interpreters are kept per (directory, shared environment) — a "set" — created the first
 * time a trial with that pair arrives (that trial starts cold); at most {@link MAX_SETS} sets, the least
 * recently used one is dropped for a new one. Anything that does not match starts cold, as without warm
 * starts, and the agent log says why once per reason.
 *
 * One interpreter's life:
 *
 *   starting ─▶ ready ─▶ taken          (handed to a trial: the trial runner owns it from here)
 *       └─────────┴─────▶ gone          (exited before a trial came, or dropped by the pool)
 */
export const WarmState = { starting: "starting", ready: "ready", taken: "taken", gone: "gone" } as const;
export type WarmState = (typeof WarmState)[keyof typeof WarmState];

export const WARM_TRANSITIONS: Transitions<WarmState> = {
  starting: ["ready", "gone"],
  ready: ["taken", "gone"],
  taken: [],
  gone: [],
};

/** What `--warm-python` and `--warm-preload` compile to. */
export interface WarmOptions {
  /** The interpreter, as given (absolute, or looked up on the agent's PATH). */
  readonly python: string;
  /** Modules imported before a trial arrives. */
  readonly preload: readonly string[];
  /** Interpreters kept waiting per set; null: one per trial slot of the agent plus one (at most 8). */
  readonly spares: number | null;
}

/** Where rung_warm.py lives (next to rung_trial.py). */
export const WARM_SCRIPT = join(PYTHON_HELPER_DIR, "rung_warm.py");

/** rung_warm.py's exit statuses for "cannot serve" (before it said ready). */
const EXIT_PRELOAD_FAILED = 90;
const EXIT_CUDA_LOADED = 91;

/** Sets of interpreters kept at once (one per working directory and environment in use). */
export const MAX_SETS = 2;
/** An interpreter set that failed this often before serving a trial is given up. */
const MAX_FAILURES = 3;
const PREAMBLE_LIMIT = 64 * 1024;

/**
 * Which interpreter in which environment a path starts: the file it resolves to, and the directory the
 * link itself lies in, both with symlinks resolved. A venv's `bin/python` and `bin/python3` (links to one
 * file, in one environment) are the same; the venv's python and the system one (the same file, two
 * environments — a venv is found from the link's directory) are not; `/bin/python3` and
 * `/usr/bin/python3` on a system whose /bin is a link to /usr/bin are the same.
 */
export function interpreterIdentity(path: string): string {
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  return `${real(dirname(path))}\0${real(path)}`;
}

/** The per-trial part of a trial's environment: set when the interpreter becomes the trial. */
export function isPerTrialEnv(name: string): boolean {
  return name.startsWith("RUNG_") || name === "CUDA_VISIBLE_DEVICES";
}

/** The environment an interpreter for this trial starts with: the trial's, less the per-trial part. */
export function sharedEnv(env: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(env).sort()) if (!isPerTrialEnv(k)) out[k] = env[k] as string;
  return out;
}

/** What the trial runner asks for: the program it resolved, the order's argv, directory and env. */
export interface WarmRequest {
  program: string;
  argv: readonly string[];
  cwd: string;
  env: Readonly<Record<string, string>>;
}

/** An interpreter handed to a trial runner: a pty it did not spawn, which it then owns. */
export interface WarmProcess {
  readonly pid: number;
  readonly term: pty.IPty;
  /** Resolves when the process exits (registered when it was spawned, so no exit is missed). */
  readonly exited: Promise<{ exitCode: number; signal?: number }>;
  /** What it printed while importing (warnings), for the trial's log; the runner's onData takes over. */
  readonly preamble: Buffer;
  readonly preload: readonly string[];
  /** Milliseconds it had been ready (waiting) when taken. */
  readonly waitedMs: number;
  /** Sends the trial to it: argv from the script on, the full environment, the directory. */
  start(trial: { argv: readonly string[]; env: Readonly<Record<string, string>>; cwd: string }): void;
}

/** What a trial runner needs of a pool. */
export interface WarmSource {
  /** A waiting interpreter for this trial, taken out of the pool; null: start the trial cold. */
  take(request: WarmRequest): WarmProcess | null;
}

interface Interpreter {
  readonly token: string;
  readonly life: StateMachine<WarmState>;
  readonly term: pty.IPty;
  readonly exited: Promise<{ exitCode: number; signal?: number }>;
  readonly set: WarmSet;
  readonly dataListener: { dispose(): void };
  chunks: Buffer[];
  bytes: number;
  socket: Socket | null;
  readyAt: number;
}

interface WarmSet {
  readonly key: string;
  readonly cwd: string;
  readonly env: Record<string, string>;
  readonly interpreters: Set<Interpreter>;
  failures: number;
  /** Why this set serves no more trials; null while it does. */
  broken: string | null;
  lastUsed: number;
  /** Trials that arrived while none of its interpreters was ready. */
  missed: number;
}

export interface WarmPoolOptions extends WarmOptions {
  /** Path of the Unix socket interpreters say ready on (short: ~100 bytes at most). */
  socketPath: string;
  /** Interpreters per set when `spares` is null. */
  slots: number;
  log: Logger;
}

export class WarmPool implements WarmSource {
  readonly #o: WarmPoolOptions;
  readonly #python: string;
  readonly #spares: number;
  readonly #sets = new Map<string, WarmSet>();
  readonly #byToken = new Map<string, Interpreter>();
  readonly #said = new Set<string>();
  #server: Server | undefined;
  #closing: Promise<void> | undefined;
  /** Counters for tests and the bench. */
  readonly stats = { started: 0, taken: 0, cold: 0, failed: 0 };
  readonly #identity: string;

  /** Throws AgentOptionsError when `python` is not an executable on this box. */
  constructor(options: WarmPoolOptions) {
    this.#o = options;
    const found = resolveExecutable(options.python, process.cwd(), process.env.PATH);
    if (!found)
      throw new AgentOptionsError("--warm-python", `${JSON.stringify(options.python)} is not an executable on this agent`);
    // Started through the path as given, symlinks kept: a virtual environment's python is a symlink to
    // the system one, and only started through the link does it find the environment (pyvenv.cfg in the
    // directory above the link) and its packages; started through its target, `import torch` may fail.
    this.#python = resolve(found);
    this.#identity = interpreterIdentity(this.#python);
    // One per slot, plus one: a slot's next trial may come before its replacement has imported.
    this.#spares = Math.max(1, options.spares ?? Math.min(8, options.slots + 1));
  }

  /** Listens on the warm socket; interpreters are started when trials arrive. */
  async start(): Promise<void> {
    rmSync(this.#o.socketPath, { force: true });
    const server = createServer((s) => this.#onConnection(s));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#o.socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.#server = server;
    this.#o.log.info(
      { python: this.#python, preload: this.#o.preload, spares: this.#spares },
      "warm starts on: Python trials are handed to pre-started interpreters",
    );
  }

  /** Interpreters alive now (waiting or starting), for tests. */
  get waiting(): number {
    let n = 0;
    for (const s of this.#sets.values()) n += s.interpreters.size;
    return n;
  }

  /** Interpreters done importing and waiting for a trial, for tests and the bench. */
  get ready(): number {
    let n = 0;
    for (const s of this.#sets.values()) for (const i of s.interpreters) if (i.life.state === WarmState.ready) n += 1;
    return n;
  }

  /** Why each set that was given up was, for tests and the agent log. */
  get givenUp(): string[] {
    return [...this.#sets.values()].flatMap((s) => (s.broken ? [s.broken] : []));
  }

  take(r: WarmRequest): WarmProcess | null {
    if (this.#closing || !this.#server) return null;
    const cold = (reason: string, onceKey: string, fields: Record<string, unknown> = {}) => {
      this.stats.cold += 1;
      if (!this.#said.has(onceKey)) {
        this.#said.add(onceKey);
        this.#o.log.info({ ...fields, reason }, `warm start not used, trial starts cold: ${reason}`);
      }
      return null;
    };
    const program = resolve(r.program);
    if (interpreterIdentity(program) !== this.#identity)
      return cold(`its command does not start with the warm interpreter ${this.#o.python}`, `program:${program}`, {
        program: r.argv[0],
      });
    const script = r.argv[1];
    if (script === undefined || script.startsWith("-") || script === "")
      return cold(
        "its command is not `python script.py …` (interpreter options, -m or -c)",
        `args:${r.argv.slice(0, 2).join(" ")}`,
      );
    const env = sharedEnv(r.env);
    const key = `${r.cwd}\0${JSON.stringify(env)}`;
    let set = this.#sets.get(key);
    if (!set) {
      set = this.#newSet(key, r.cwd, env);
      return cold(
        `no interpreters were waiting for working directory ${r.cwd} with this environment; they start now for the next trials`,
        `new:${key}`,
        { cwd: r.cwd },
      );
    }
    set.lastUsed = Date.now();
    if (set.broken) return cold(set.broken, `broken:${key}`, { cwd: r.cwd });
    const it = [...set.interpreters].find((i) => i.life.state === WarmState.ready);
    if (!it) {
      set.missed += 1;
      return cold(
        "every warm interpreter is still importing or serving (trials arrive faster than they warm up)",
        `busy:${key}`,
        {
          cwd: r.cwd,
        },
      );
    }
    it.life.transition(WarmState.taken);
    set.interpreters.delete(it);
    this.#byToken.delete(it.token);
    this.stats.taken += 1;
    // The trial runner's onData takes over in this same tick: nothing is emitted in between.
    it.dataListener.dispose();
    const socket = it.socket as Socket;
    const waitedMs = Date.now() - it.readyAt;
    // The next one for this set starts once the trial has its turn on the CPU.
    setImmediate(() => this.#fill(set));
    return {
      pid: it.term.pid,
      term: it.term,
      exited: it.exited,
      preamble: Buffer.concat(it.chunks),
      preload: this.#o.preload,
      waitedMs,
      start: (trial) => {
        socket.end(`${JSON.stringify({ argv: trial.argv, env: trial.env, cwd: trial.cwd })}\n`);
      },
    };
  }

  /** Kills every interpreter not handed to a trial and stops listening. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const exits: Promise<unknown>[] = [];
      for (const set of this.#sets.values()) for (const it of set.interpreters) exits.push(this.#drop(it));
      this.#sets.clear();
      await Promise.all(exits);
      await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
      rmSync(this.#o.socketPath, { force: true });
    })();
    return this.#closing;
  }

  /** Kills every waiting interpreter now (a forced exit). */
  killAll(): void {
    for (const set of this.#sets.values()) for (const it of set.interpreters) killGroup(it.term.pid);
  }

  #newSet(key: string, cwd: string, env: Record<string, string>): WarmSet {
    if (this.#sets.size >= MAX_SETS) {
      const oldest = [...this.#sets.values()].sort((a, b) => a.lastUsed - b.lastUsed)[0] as WarmSet;
      this.#sets.delete(oldest.key);
      this.#o.log.info({ cwd: oldest.cwd }, "warm interpreters dropped for a newer working directory or environment");
      for (const it of oldest.interpreters) void this.#drop(it);
    }
    const set: WarmSet = { key, cwd, env, interpreters: new Set(), failures: 0, broken: null, lastUsed: Date.now(), missed: 0 };
    this.#sets.set(key, set);
    this.#fill(set);
    return set;
  }

  /** Starts interpreters until the set has its spares. */
  #fill(set: WarmSet): void {
    if (this.#closing || set.broken || this.#sets.get(set.key) !== set) return;
    while (set.interpreters.size < this.#spares) {
      try {
        this.#spawn(set);
      } catch (err) {
        this.#breakSet(set, `the warm interpreter cannot start: ${(err as Error).message}`);
        return;
      }
    }
  }

  #spawn(set: WarmSet): void {
    const token = randomBytes(8).toString("hex");
    const term = pty.spawn(this.#python, [WARM_SCRIPT], {
      name: "xterm-256color",
      cols: 120,
      rows: 40,
      cwd: set.cwd,
      env: {
        ...set.env,
        // Should an import start CUDA anyway, it sees no GPU rather than every GPU of the box.
        CUDA_VISIBLE_DEVICES: "",
        RUNG_WARM_SOCKET: this.#o.socketPath,
        RUNG_WARM_TOKEN: token,
        RUNG_WARM_PRELOAD: this.#o.preload.join(","),
      },
      encoding: null,
    });
    const exited = new Promise<{ exitCode: number; signal?: number }>((r) => term.onExit(r));
    const it: Interpreter = {
      token,
      life: new StateMachine(`warm interpreter ${term.pid}`, WarmState.starting, WARM_TRANSITIONS),
      term,
      exited,
      set,
      dataListener: term.onData((d) => {
        const b = d as unknown as Buffer;
        it.chunks.push(b);
        it.bytes += b.length;
        while (it.bytes > PREAMBLE_LIMIT && it.chunks.length > 1) it.bytes -= (it.chunks.shift() as Buffer).length;
      }),
      chunks: [],
      bytes: 0,
      socket: null,
      readyAt: 0,
    };
    this.stats.started += 1;
    set.interpreters.add(it);
    this.#byToken.set(token, it);
    void exited.then((e) => this.#onExit(it, e));
  }

  #onConnection(s: Socket): void {
    let buf = "";
    s.setEncoding("utf8");
    s.on("error", () => {});
    const onData = (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf("\n");
      if (nl < 0) {
        if (buf.length > 1024) s.destroy();
        return;
      }
      s.off("data", onData);
      let token: unknown;
      try {
        token = (JSON.parse(buf.slice(0, nl)) as { ready?: unknown }).ready;
      } catch {
        token = undefined;
      }
      const it = typeof token === "string" ? this.#byToken.get(token) : undefined;
      if (!it || it.life.state !== WarmState.starting) {
        s.destroy();
        return;
      }
      it.socket = s;
      it.readyAt = Date.now();
      it.life.transition(WarmState.ready);
      it.set.failures = 0;
    };
    s.on("data", onData);
  }

  #onExit(it: Interpreter, e: { exitCode: number; signal?: number }): void {
    if (it.life.state === WarmState.taken) return; // the trial's exit: the runner's business
    const was = it.life.state;
    if (was !== WarmState.gone) it.life.transition(WarmState.gone);
    it.set.interpreters.delete(it);
    this.#byToken.delete(it.token);
    it.socket?.destroy();
    killGroup(it.term.pid);
    if (this.#closing || this.#sets.get(it.set.key) !== it.set || was === WarmState.gone) return;
    this.stats.failed += 1;
    const tail = Buffer.concat(it.chunks).toString("utf8").replace(/\r/g, "").trim().split("\n").slice(-5).join(" | ");
    const how = e.signal ? `signal ${e.signal}` : `exit code ${e.exitCode}`;
    it.set.failures += 1;
    const fatal =
      e.exitCode === EXIT_CUDA_LOADED
        ? "importing the preload modules loaded the CUDA driver, so each trial's GPUs could not apply"
        : e.exitCode === EXIT_PRELOAD_FAILED
          ? `a preload module failed to import: ${tail}`
          : it.set.failures >= MAX_FAILURES
            ? `warm interpreters keep exiting before a trial arrives (${how}): ${tail}`
            : null;
    if (fatal !== null) {
      this.#breakSet(it.set, fatal);
      return;
    }
    this.#o.log.warn({ pid: it.term.pid, how, output: tail }, "a warm interpreter exited while waiting; starting another");
    this.#fill(it.set);
  }

  #breakSet(set: WarmSet, why: string): void {
    if (set.broken) return;
    set.broken = why;
    this.#o.log.warn({ cwd: set.cwd, why }, `warm starts given up for this working directory: ${why}; its trials start cold`);
    for (const it of set.interpreters) void this.#drop(it);
  }

  /** Ends an interpreter that no trial has: closing its socket ends it; the kill makes sure. */
  #drop(it: Interpreter): Promise<unknown> {
    if (it.life.state === WarmState.taken) return Promise.resolve();
    if (it.life.state !== WarmState.gone) it.life.transition(WarmState.gone);
    it.socket?.destroy();
    killGroup(it.term.pid);
    return it.exited;
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // gone already
  }
}

/**
 * The agent's pool, found from the options its claim loop hands every attempt (the claim loop passes
 * those through unchanged, so the pool needs no field of its own there).
 */
const pools = new WeakMap<CompiledAgentOptions, WarmSource>();

export function registerWarmPool(options: CompiledAgentOptions, pool: WarmSource): void {
  pools.set(options, pool);
}

export function warmPoolFor(options: CompiledAgentOptions): WarmSource | null {
  return pools.get(options) ?? null;
}
