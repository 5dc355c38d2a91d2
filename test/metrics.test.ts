import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, rung, rungAgent, spawnProcess, uniquePrefix, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { specFile, startUi } from "./ui-helpers.js";

/** This machine's first address that is not loopback, if it has one. */
function outsideAddress(): string | null {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  return null;
}

/**
 * Prometheus: a real Prometheus (Debian's, which ./setup installs) scrapes `rung agent
 * --metrics-port` and `rung ui`'s /metrics, and its query API returns the simulated GPUs' series.
 */

const PROMETHEUS = "/usr/bin/prometheus";
const HAVE_PROMETHEUS = existsSync(PROMETHEUS);
if (!HAVE_PROMETHEUS)
  console.warn(`skipping the Prometheus test: ${PROMETHEUS} is missing (./setup installs Debian's prometheus)`);

const it = meshTest.extend("leakGraceMs", 8000);

interface Series {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(base: string, q: string): Promise<Series[]> {
  const res = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(q)}`);
  if (!res.ok) return [];
  const body = (await res.json()) as { status: string; data: { result: Series[] } };
  return body.status === "success" ? body.data.result : [];
}

describe.skipIf(!HAVE_PROMETHEUS)("Prometheus metrics", () => {
  it("a real Prometheus scrapes an agent's simulated GPUs and rung ui's view of the mesh", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    const metricsPort = await freePort();
    const state = mkdtempSync(join(tmpdir(), "rung-metrics-"));
    const agent = rungAgent(nats.url, prefix, {
      name: "gpubox",
      stateDir: join(state, "agent"),
      fakeGpus: 2,
      // A bare port: loopback only.
      flags: ["--metrics-port", String(metricsPort)],
    });
    procs.push(agent);
    await waitFor(
      "the agent's /metrics",
      async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`).catch(() => null))?.ok,
      20_000,
    );
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(text).toMatch(/rung_gpu_utilization_percent\{gpu="0",agent="gpubox"\} \d/);
    expect(text).toContain("rung_trials_running");
    const outside = outsideAddress();
    if (outside !== null)
      expect(
        await fetch(`http://${outside}:${metricsPort}/metrics`).then(
          () => "answered",
          () => "refused",
        ),
      ).toBe("refused");

    const ui = await startUi(["--nats", nats.url, "--prefix", prefix]);
    procs.push(ui.proc);
    const uiHostPort = new URL(ui.url).host;

    const promPort = await freePort();
    const config = join(state, "prometheus.yml");
    writeFileSync(
      config,
      `global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: rung-agent
    static_configs: [{ targets: ["127.0.0.1:${metricsPort}"] }]
  - job_name: rung-ui
    static_configs: [{ targets: ["${uiHostPort}"] }]
`,
    );
    const prom = spawnProcess(PROMETHEUS, [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(state, "tsdb")}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ]);
    procs.push(prom);
    const base = `http://127.0.0.1:${promPort}`;

    let agentSeries: Series[] = [];
    await waitFor(
      "Prometheus to have the agent's GPU utilization",
      async () => {
        agentSeries = await query(base, 'rung_gpu_utilization_percent{job="rung-agent"}').catch(() => []);
        return agentSeries.length === 2;
      },
      60_000,
      500,
    );
    expect(agentSeries.map((s) => `${s.metric.agent}/${s.metric.gpu}`).sort()).toEqual(["gpubox/0", "gpubox/1"]);
    for (const s of agentSeries) expect(Number(s.value[1])).toBeGreaterThanOrEqual(0);

    // rung ui's /metrics: the same GPUs, from the mesh's telemetry.
    let uiSeries: Series[] = [];
    await waitFor(
      "Prometheus to have rung ui's view of the GPUs",
      async () => {
        uiSeries = await query(base, 'rung_gpu_memory_total_bytes{job="rung-ui"}').catch(() => []);
        return uiSeries.length === 2;
      },
      60_000,
      500,
    );
    expect(uiSeries.map((s) => `${s.metric.agent}/${s.metric.gpu}`).sort()).toEqual(["gpubox/0", "gpubox/1"]);
    expect(Number(uiSeries[0]?.value[1])).toBeGreaterThan(0);
    if (prom.out().includes("err=")) console.warn(prom.out().slice(-2000));

    // A study on both GPUs: rung ui counts its trials running from the GPUs, and no series names a trial.
    const run = rung([
      "study",
      "run",
      specFile({
        name: "busy",
        command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs {max_t} --epoch-ms 500`,
        metric: { name: "val_acc", mode: "max" },
        search: { algorithm: "grid", seed: 5, space: { quality: { grid: [0.5, 0.9] } } },
        scheduler: { type: "fifo", time_attr: "epoch", max_t: 20 },
        max_concurrent: 2,
        retries: 0,
      }),
      "--nats",
      nats.url,
      "--prefix",
      prefix,
    ]);
    procs.push(run);
    let uiText = "";
    await waitFor(
      "rung ui to count both trials running",
      async () => {
        uiText = await (await fetch(`${ui.url}/metrics`)).text();
        return uiText.includes('rung_trials_running{study="busy"} 2');
      },
      60_000,
      500,
    );
    expect(uiText).toMatch(/rung_gpu_trial\{agent="gpubox",gpu="\d",study="busy"\} 1/);
    expect(uiText).not.toMatch(/trial="/);
    const agentText = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(agentText).toMatch(/rung_gpu_trial\{gpu="\d",study="busy",agent="gpubox"\} 1/);
    expect(agentText).not.toMatch(/trial="/);
  });
});
