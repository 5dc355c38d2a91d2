import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { GpuSample, Logger } from "@rung/protocol";
import { Counter, Gauge, Registry } from "prom-client";
import { AgentOptionsError } from "./errors.js";

/**
 * `rung agent --metrics-port [HOST:]PORT`: this box in the Prometheus text format on `/metrics`
 * (prom-client). The GPU gauges carry the same names as `rung ui`'s `/metrics`, which shows the whole
 * mesh: utilization, memory, power, the study working on each GPU and its trial's data-wait share
 * (its latest report). No label names a trial: one series per trial would grow Prometheus without bound. Everything is read when Prometheus scrapes — the latest readings the telemetry already
 * holds, the claim loop's counters — so serving metrics adds nothing to the agent's own loops.
 */

export interface AgentMetricsSource {
  readonly agent: string;
  /** Each GPU's latest reading, tagged with the trial on it. */
  gpus(): readonly GpuSample[];
  /** 1 − compute share of the trial on GPU `index` (its latest report), or null. */
  dataWait(index: number): number | null;
  /** Trials whose process is running now (not attempts still finishing after their trial exited). */
  running(): number;
  counters(): {
    readonly ordersClaimed: number;
    readonly ordersRejected: number;
    readonly reports: number;
    readonly claimsLost: number;
  };
}

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * `PORT` (loopback only: the metrics name studies and hosts, so they are not offered to the network
 * unasked) or `HOST:PORT` (`0.0.0.0:9400` for a Prometheus on another box).
 */
export function parseMetricsAddress(value: string | number): { host: string; port: number } {
  const text = String(value).trim();
  const m = /^(?:(.+):)?(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new AgentOptionsError(
      "--metrics-port",
      `expects a port (9400) or HOST:PORT (127.0.0.1:9400), got ${JSON.stringify(text)}`,
    );
  return { host: (m[1] ?? "127.0.0.1").replace(/^\[|\]$/g, ""), port };
}

export function agentRegistry(src: AgentMetricsSource): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ agent: src.agent });
  const gpu = ["gpu"] as const;
  const util = new Gauge({
    name: "rung_gpu_utilization_percent",
    help: "GPU utilization, 0-100",
    labelNames: gpu,
    registers: [registry],
  });
  const memUsed = new Gauge({
    name: "rung_gpu_memory_used_bytes",
    help: "GPU memory in use",
    labelNames: gpu,
    registers: [registry],
  });
  const memTotal = new Gauge({ name: "rung_gpu_memory_total_bytes", help: "GPU memory", labelNames: gpu, registers: [registry] });
  const power = new Gauge({ name: "rung_gpu_power_watts", help: "GPU power draw", labelNames: gpu, registers: [registry] });
  const trialOn = new Gauge({
    name: "rung_gpu_trial",
    help: "1 while a trial of the study runs on the GPU",
    labelNames: [...gpu, "study"],
    registers: [registry],
  });
  const dataWait = new Gauge({
    name: "rung_gpu_data_wait_ratio",
    help: "share of the GPU's trial's time spent waiting for data (its latest report), 0-1",
    labelNames: gpu,
    registers: [registry],
  });
  new Gauge({
    name: "rung_trials_running",
    help: "trials whose process is running on this agent",
    registers: [registry],
    collect() {
      this.set(src.running());
    },
  });
  const counter = (name: string, help: string, read: (c: ReturnType<AgentMetricsSource["counters"]>) => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read(src.counters()));
      },
    });
  counter("rung_agent_orders_claimed_total", "work orders this agent claimed", (c) => c.ordersClaimed);
  counter("rung_agent_orders_rejected_total", "work orders this agent rejected", (c) => c.ordersRejected);
  counter("rung_agent_reports_total", "results its trials reported", (c) => c.reports);
  counter("rung_agent_claims_lost_total", "claims lost (the lease ran out)", (c) => c.claimsLost);
  // The GPU gauges are set together from one reading, before the registry collects.
  new Gauge({
    name: "rung_agent_gpus",
    help: "GPUs this agent offers",
    registers: [registry],
    collect() {
      const gpus = src.gpus();
      for (const g of [util, memUsed, memTotal, power, trialOn, dataWait]) g.reset();
      for (const g of gpus) {
        const l = { gpu: String(g.index) };
        if (g.utilizationGpu !== null) util.set(l, g.utilizationGpu);
        if (g.memoryUsedMiB !== null) memUsed.set(l, g.memoryUsedMiB * 1024 * 1024);
        if (g.memoryTotalMiB !== null) memTotal.set(l, g.memoryTotalMiB * 1024 * 1024);
        if (g.powerW !== null) power.set(l, g.powerW);
        if (g.study && g.trial) trialOn.set({ ...l, study: g.study }, 1);
        const w = g.trial ? src.dataWait(g.index) : null;
        if (w !== null) dataWait.set(l, w);
      }
      this.set(gpus.length);
    },
  });
  return registry;
}

/** Serves `/metrics` on `address`; fails with one sentence when the port is taken. */
export async function startMetricsServer(
  address: { host: string; port: number },
  src: AgentMetricsSource,
  log: Logger,
): Promise<MetricsServer> {
  const registry = agentRegistry(src);
  // The GPU gauges are filled by the `rung_agent_gpus` collector: make it run first.
  const first = registry.getSingleMetric("rung_agent_gpus");
  const server = createServer((req, res) => {
    if ((req.url ?? "/").split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("rung agent serves /metrics only\n");
      return;
    }
    void (async () => {
      await first?.get();
      return registry.metrics();
    })().then(
      (text) => {
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(text);
      },
      (err: Error) => {
        log.warn({ err: err.message }, "collecting metrics failed");
        res.writeHead(500, { "content-type": "text/plain" });
        res.end(`${err.message}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(
        err.code === "EADDRINUSE"
          ? new AgentOptionsError("--metrics-port", `${address.host}:${address.port} is already in use — pick another port`)
          : err,
      ),
    );
    server.listen(address.port, address.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ port, host: address.host }, `metrics on http://${address.host}:${port}/metrics`);
  return {
    port,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
