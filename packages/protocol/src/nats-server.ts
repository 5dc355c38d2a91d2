import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { NatsServerMissingError } from "./errors.js";

/**
 * Launches a real nats-server with JetStream: the embedded default behind `rung server` and
 * `rung demo`, and the server every test talks to (through testkit). It follows the NATS client's own
 * test launcher: the server picks its port (`-1`) and writes a ports file we wait for, JetStream gets
 * its own store directory, and stderr is kept so a failure can say what the server said.
 */

export interface NatsServerOptions {
  /** Directory for the generated config, ports file and (unless `storeDir`) the JetStream store. */
  dir: string;
  /** JetStream store. Default `<dir>/jetstream`. */
  storeDir?: string;
  /** Client port; -1 lets the server pick. Default -1. */
  port?: number;
  /** Listen address. Default 127.0.0.1. */
  host?: string;
  /** A full nats-server config of the user's; when given, Rung adds nothing to it. */
  configFile?: string;
  /** Extra config text appended to the generated config (accounts, TLS, cluster). */
  extraConfig?: string;
  serverName?: string;
  /** Cluster membership for `startCluster`. */
  cluster?: { name: string; port: number; routes: string[] };
  /** Also open the HTTP monitoring port (testkit's leak check reads /connz). Default false. */
  monitoring?: boolean;
  /** Path to the binary. Default `RUNG_NATS_SERVER`, else `nats-server` on PATH or in the sbin dirs. */
  binary?: string;
  /** How long to wait for readiness. Default 15 s. */
  readyTimeoutMs?: number;
}

export function findNatsServer(explicit?: string): string {
  const wanted = explicit ?? process.env.RUNG_NATS_SERVER;
  if (wanted) {
    if (isExecutable(wanted)) return wanted;
    throw new NatsServerMissingError(wanted);
  }
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/sbin"];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, "nats-server");
    if (isExecutable(p)) return p;
  }
  throw new NatsServerMissingError("nats-server");
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * A nats-server that would not start, as one sentence: the port or the store already in use, or the
 * server's own fatal line. The server's full log stays in `stderr` (and, for `--verbose`, in `cause`).
 */
export class NatsServerStartError extends Error {
  override name = "NatsServerStartError";
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(
      message,
      stderr.trim() ? { cause: `nats-server said:\n${stderr.trim().split("\n").slice(-15).join("\n")}` } : undefined,
    );
  }
}

/** A running nats-server that exited without being asked to (`rung server` then exits non-zero). */
export class NatsServerExitedError extends Error {
  override name = "NatsServerExitedError";
  constructor(
    readonly pid: number | undefined,
    readonly exit: NatsServerExit | null,
    readonly stderr: string,
  ) {
    const how = exit?.signal
      ? `killed by ${exit.signal}`
      : exit?.code !== null && exit?.code !== undefined
        ? `exit code ${exit.code}`
        : "no exit status";
    const last = logLines(stderr)
      .filter((l) => /^\[(FTL|ERR)\]/.test(l))
      .slice(-1)
      .map((l) => `: ${l.replace(/^\[(FTL|ERR)\] /, "")}`)
      .join("");
    super(
      `nats-server${pid === undefined ? "" : ` (pid ${pid})`} exited unexpectedly (${how})${last} — the mesh is down until a server runs again`,
      stderr.trim() ? { cause: `nats-server said:\n${stderr.trim().split("\n").slice(-15).join("\n")}` } : undefined,
    );
  }
}

/** How a nats-server process ended: an exit code, or the signal that ended it. */
export interface NatsServerExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** The server log's lines without nats-server's `[pid] date time ` prefix. */
function logLines(stderr: string): string[] {
  return stderr
    .trim()
    .split("\n")
    .map((l) => l.replace(/^\[\d+\] \S+ \S+ /, ""))
    .filter((l) => l !== "");
}

/** Why a start failed, as one sentence from the server's log. */
function startFailure(stderr: string, exit: string): string {
  const lines = logLines(stderr);
  const inUse = lines.find((l) => /address already in use/.test(l));
  if (inUse) {
    const addr = /listening on (?:\w+ )?port: ([^\s,]+)/i.exec(inUse)?.[1] ?? /listen tcp ([^:\s]+:\d+)/.exec(inUse)?.[1];
    return `nats-server exited during start: address already in use${addr ? ` on ${addr}` : ""} — another server listens there (is "rung server" already running?); stop it or choose another port`;
  }
  const fatal = lines.filter((l) => /^\[(FTL|ERR)\]/.test(l)).map((l) => l.replace(/^\[(FTL|ERR)\] /, ""));
  const said = fatal.length > 0 ? fatal.slice(-2) : lines.slice(-1);
  return `nats-server exited during start (${exit})${said.length > 0 ? `: ${said.join("; ")}` : ""}`;
}

/**
 * The pid of a live nats-server that has a ports file in `portsDir` (a server writes
 * `nats-server_<pid>.ports` there once it listens and removes it when it stops); null if none. Two
 * servers on one JetStream store corrupt it, and nats-server does not refuse that by itself.
 */
function liveServerIn(portsDir: string): number | null {
  let files: string[];
  try {
    files = readdirSync(portsDir);
  } catch {
    return null;
  }
  for (const f of files) {
    const pid = Number(/^nats-server_(\d+)\.ports$/.exec(f)?.[1]);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
    } catch {
      continue; // gone (a server killed with SIGKILL leaves its file behind)
    }
    try {
      // The pid may have been reused by another program since.
      if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("nats-server")) continue;
    } catch {
      // no /proc (macOS): trust the live pid
    }
    return pid;
  }
  return null;
}

export class NatsServerProcess {
  readonly options: NatsServerOptions;
  #child: ChildProcess | undefined;
  #stderr = "";
  #port = -1;
  #monitorPort = -1;
  #exited: Promise<void> = Promise.resolve();
  #exit: NatsServerExit | null = null;
  #stopping: Promise<void> | undefined;

  constructor(options: NatsServerOptions) {
    this.options = options;
  }

  get port(): number {
    return this.#port;
  }
  get url(): string {
    return `nats://${this.options.host ?? "127.0.0.1"}:${this.#port}`;
  }
  /** HTTP monitoring URL, when started with `monitoring: true`. */
  get monitorUrl(): string | undefined {
    return this.#monitorPort > 0 ? `http://127.0.0.1:${this.#monitorPort}` : undefined;
  }
  get pid(): number | undefined {
    return this.#child?.pid;
  }
  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }
  /** How the process ended; null while it runs (or before it started). */
  get exitStatus(): NatsServerExit | null {
    return this.#exit;
  }
  /** The last lines the server wrote to stderr (its log). */
  get stderr(): string {
    return this.#stderr;
  }

  async start(): Promise<this> {
    const o = this.options;
    const binary = findNatsServer(o.binary);
    mkdirSync(o.dir, { recursive: true });
    const portsDir = join(o.dir, "ports");
    mkdirSync(portsDir, { recursive: true });
    const other = liveServerIn(portsDir);
    if (other !== null) {
      const what = o.configFile
        ? `the server directory ${o.dir}`
        : `the JetStream store ${o.storeDir ?? join(o.dir, "jetstream")}`;
      throw new NatsServerStartError(
        `${what} is in use by another nats-server (pid ${other}; is "rung server" already running?) — stop that one, or use another directory`,
        "",
      );
    }
    for (const f of readdirSync(portsDir)) writeFileSync(join(portsDir, f), "");
    let args: string[];
    if (o.configFile) {
      args = ["-c", o.configFile, "--ports_file_dir", portsDir];
      if (o.port !== undefined) args.push("-p", String(o.port));
    } else {
      const conf = join(o.dir, "nats-server.conf");
      writeFileSync(conf, this.#config(portsDir));
      args = ["-c", conf];
    }
    const child = spawn(binary, args, { stdio: ["ignore", "ignore", "pipe"] });
    this.#child = child;
    this.#stderr = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (d: string) => {
      this.#stderr = (this.#stderr + d).slice(-64 * 1024);
    });
    this.#exit = null;
    this.#exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        this.#exit = { code, signal };
        resolve();
      }),
    );
    child.once("error", () => {});
    const deadline = Date.now() + (o.readyTimeoutMs ?? 15_000);
    const portsFile = join(portsDir, `nats-server_${child.pid}.ports`);
    while (Date.now() < deadline) {
      if (!this.running) {
        // The log's last lines may still be in the pipe when the exit is seen.
        if (child.stderr && !child.stderr.destroyed)
          await Promise.race([new Promise((r) => child.stderr?.once("close", r)), sleep(1000)]);
        const how = child.exitCode !== null ? `exit code ${child.exitCode}` : String(child.signalCode);
        throw new NatsServerStartError(startFailure(this.#stderr, how), this.#stderr);
      }
      if (existsSync(portsFile)) {
        try {
          const ports = JSON.parse(readFileSync(portsFile, "utf8")) as { nats?: string[]; monitoring?: string[] };
          const first = ports.nats?.[0];
          if (first) {
            this.#port = Number(new URL(first.replace(/^nats:/, "http:")).port);
            const mon = ports.monitoring?.[0];
            if (mon) this.#monitorPort = Number(new URL(mon).port);
            if (/Server is ready/.test(this.#stderr) || o.configFile) return this;
          }
        } catch {
          // ports file half-written: read again
        }
      }
      await sleep(20);
    }
    await this.stop();
    throw new NatsServerStartError("nats-server did not become ready in time", this.#stderr);
  }

  #config(portsDir: string): string {
    const o = this.options;
    const store = o.storeDir ?? join(o.dir, "jetstream");
    const lines = [
      `host: ${JSON.stringify(o.host ?? "127.0.0.1")}`,
      `port: ${o.port ?? -1}`,
      `ports_file_dir: ${JSON.stringify(portsDir)}`,
      `jetstream { store_dir: ${JSON.stringify(store)} }`,
    ];
    if (o.monitoring) lines.push(`http: "127.0.0.1:${this.#monitorPort > 0 ? this.#monitorPort : -1}"`);
    if (o.serverName) lines.push(`server_name: ${JSON.stringify(o.serverName)}`);
    if (o.cluster) {
      lines.push(
        `cluster { name: ${JSON.stringify(o.cluster.name)}, listen: "127.0.0.1:${o.cluster.port}", routes: [${o.cluster.routes
          .map((r) => JSON.stringify(r))
          .join(", ")}] }`,
      );
    }
    if (o.extraConfig) lines.push(o.extraConfig);
    return `${lines.join("\n")}\n`;
  }

  /** Restarts on the same port and store (chaos tests, `rung server` after a crash). */
  async restart(): Promise<this> {
    const port = this.#port;
    await this.stop();
    if (port > 0 && !this.options.configFile) this.options.port = port;
    return this.start();
  }

  /** Signals the server without waiting (SIGKILL for a crash, SIGSTOP to freeze). */
  signal(sig: NodeJS.Signals): void {
    this.#child?.kill(sig);
  }

  /** Graceful stop (SIGTERM, then SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void> {
    if (!this.running) return this.#exited;
    if (this.#stopping) return this.#stopping;
    const child = this.#child as ChildProcess;
    this.#stopping = (async () => {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await this.#exited;
      clearTimeout(timer);
      this.#stopping = undefined;
    })();
    return this.#stopping;
  }

  /** Resolves when the process has exited. */
  get exited(): Promise<void> {
    return this.#exited;
  }
}

export async function startNatsServer(options: NatsServerOptions): Promise<NatsServerProcess> {
  return new NatsServerProcess(options).start();
}
