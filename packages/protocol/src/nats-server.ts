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

export class NatsServerStartError extends Error {
  override name = "NatsServerStartError";
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(`${message}${stderr ? `; nats-server said:\n${stderr.trim().split("\n").slice(-15).join("\n")}` : ""}`);
  }
}

export class NatsServerProcess {
  readonly options: NatsServerOptions;
  #child: ChildProcess | undefined;
  #stderr = "";
  #port = -1;
  #monitorPort = -1;
  #exited: Promise<void> = Promise.resolve();
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
    this.#exited = new Promise((resolve) => child.once("exit", () => resolve()));
    child.once("error", () => {});
    const deadline = Date.now() + (o.readyTimeoutMs ?? 15_000);
    const portsFile = join(portsDir, `nats-server_${child.pid}.ports`);
    while (Date.now() < deadline) {
      if (!this.running)
        throw new NatsServerStartError(`nats-server exited during start (${child.exitCode ?? child.signalCode})`, this.#stderr);
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
