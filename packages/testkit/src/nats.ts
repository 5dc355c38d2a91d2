import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connectNats, type NatsServerOptions, NatsServerProcess } from "@rung/protocol";
import { registerServer, unregisterServer } from "./leaks.js";

/**
 * A real nats-server for a test file, in a temp directory that is removed on stop. One per test file;
 * tests keep apart by using their own mesh prefix (see `uniquePrefix`).
 */
export class TestNats extends NatsServerProcess {
  readonly dir: string;

  constructor(options: Partial<NatsServerOptions> = {}) {
    const dir = options.dir ?? mkdtempSync(join(tmpdir(), "rung-nats-"));
    super({ monitoring: true, ...options, dir });
    this.dir = dir;
  }

  override async start(): Promise<this> {
    registerServer(this);
    return super.start();
  }

  /** Stops the server and removes its directory. */
  async destroy(): Promise<void> {
    await this.stop();
    unregisterServer(this);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Open client connections, read from the server's own monitoring endpoint. */
  async connections(): Promise<{ cid: number; name?: string }[]> {
    const url = this.monitorUrl;
    if (!url || !this.running) return [];
    const res = await fetch(`${url}/connz?limit=1024`);
    const body = (await res.json()) as { connections?: { cid: number; name?: string }[] };
    return body.connections ?? [];
  }
}

export async function startNats(options: Partial<NatsServerOptions> = {}): Promise<TestNats> {
  return new TestNats(options).start();
}

export interface TestCluster {
  servers: TestNats[];
  /** All client URLs, comma-separated, as `--nats` takes them. */
  url: string;
  destroy(): Promise<void>;
}

/** A free TCP port on loopback (for cluster routes, which must be known before the servers start). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** A JetStream cluster of `n` nodes on loopback; streams created on it can use `replicas: 3`. */
export async function startCluster(n = 3): Promise<TestCluster> {
  const clusterPorts = await Promise.all(Array.from({ length: n }, () => freePort()));
  const clientPorts = await Promise.all(Array.from({ length: n }, () => freePort()));
  const routes = clusterPorts.map((p) => `nats-route://127.0.0.1:${p}`);
  const servers = clusterPorts.map(
    (cp, i) =>
      new TestNats({
        port: clientPorts[i],
        serverName: `n${i + 1}`,
        cluster: { name: "rung-test", port: cp, routes: routes.filter((_, j) => j !== i) },
      }),
  );
  await Promise.all(servers.map((s) => s.start()));
  await waitForJetStream(servers.map((s) => s.url).join(","));
  return {
    servers,
    url: servers.map((s) => s.url).join(","),
    destroy: async () => {
      await Promise.all(servers.map((s) => s.destroy()));
    },
  };
}

let counter = 0;
/** A mesh prefix no other test in this run uses: `t<pid>x<n>`. */
export function uniquePrefix(): string {
  counter += 1;
  return `t${process.pid.toString(36)}x${counter}${Math.random().toString(36).slice(2, 6)}`;
}

/** Waits until JetStream answers on `url` (a cluster needs its meta leader elected first). */
export async function waitForJetStream(url: string, timeoutMs = 30_000): Promise<void> {
  const nc = await connectNats({ url, name: "testkit-wait" });
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 1000 });
        await jsm.getAccountInfo();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`JetStream did not become ready on ${url}`, { cause: err });
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } finally {
    await nc.close();
  }
}
