import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Finding, FindingKind } from "@rung/coordinator";
import { FakeNvidiaSmi, fakeGpu, rung, rungAgent, type TestProcess, uniquePrefix } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * Labelled diagnosis cases that the fake GPU could not produce before it was honest: trials on a real
 * `rung agent` whose GPUs are the fake nvidia-smi, which reports the memory the trial allocated and
 * the compute it gets (test/fixtures/gpu-trial.mjs registers both), through the agent's real
 * telemetry, judged by `rung study report --json`. Each case names the findings it must produce; any
 * other finding is a false positive.
 */

const it = meshTest.extend("leakGraceMs", 5000);

const TRIAL = `${process.execPath} test/fixtures/gpu-trial.mjs`;

interface Case {
  name: string;
  args: string;
  gpus: number;
  expected: FindingKind[];
}

const CASES: Case[] = [
  // 10 % busy, 2 % data wait, 2 of 80 GiB: the trial is too small for its GPU — not input-bound.
  { name: "small-model", args: "--memory 2000 --compute 0.1 --data-wait 0.02", gpus: 1, expected: ["gpu-under-filled"] },
  // 90 % busy, 78.5 of 79.6 GiB (96 %): close to running out of memory.
  { name: "big-batch", args: "--memory 78500 --compute 0.9 --data-wait 0.02", gpus: 1, expected: ["near-oom"] },
  // Two GPUs, one 90 % busy and the other 30 %: a DataParallel-style imbalance (mean 60 %: not under-filled).
  { name: "uneven", args: "--memory 30000 --compute 0.9,0.3 --data-wait 0.02", gpus: 2, expected: ["multi-gpu-imbalance"] },
];

function specFile(c: Case, env: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-gpu-lab-"));
  const file = join(dir, `${c.name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name: c.name,
      // Seven epochs of a second: at least five GPU samples (1 Hz) while the trial runs.
      command: `${TRIAL} ${c.args} --epochs {max_t} --epoch-ms 1000 --quality {q}`,
      workdir: ".",
      env,
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: { q: { grid: [0.7] } } },
      scheduler: { type: "fifo", time_attr: "epoch", max_t: 7 },
      resources: { gpus: c.gpus },
      retries: 0,
    }),
  );
  return file;
}

async function runAndReport(c: Case, flags: string[], env: Record<string, string>, push: (p: TestProcess) => void) {
  const run = rung(["study", "run", specFile(c, env), ...flags]);
  push(run);
  const code = await run.exited;
  if (code !== 0) throw new Error(`rung study run ${c.name} exited with ${code}:\n${run.out()}`);
  // The agent's last samples of the trial may still be on their way: the report reads what is stored.
  await new Promise((r) => setTimeout(r, 1000));
  const rep = rung(["study", "report", c.name, "--json", ...flags]);
  push(rep);
  if ((await rep.exited) !== 0) throw new Error(`rung study report ${c.name} failed:\n${rep.out()}`);
  return JSON.parse(rep.stdout().toString()) as { findings: Finding[] };
}

describe("diagnosis on honest fake GPUs (labelled)", () => {
  it("finds under-filled with low data wait, near-OOM and multi-GPU imbalance, and nothing else", async ({ nats, procs }) => {
    const prefix = uniquePrefix();
    const flags = ["--nats", nats.url, "--prefix", prefix];
    const smi = new FakeNvidiaSmi(mkdtempSync(join(tmpdir(), "rung-smi-")), [fakeGpu(0), fakeGpu(1)]);
    const state = mkdtempSync(join(tmpdir(), "rung-gpu-lab-agent-"));
    procs.push(rungAgent(nats.url, prefix, { name: "lab", stateDir: state, fakeGpus: null, flags: ["--nvidia-smi", smi.path] }));
    const push = (p: TestProcess) => void procs.push(p);
    // The two one-GPU cases side by side (one GPU each), then the two-GPU case.
    const [small, big] = await Promise.all([
      runAndReport(CASES[0] as Case, flags, smi.stateEnv, push),
      runAndReport(CASES[1] as Case, flags, smi.stateEnv, push),
    ]);
    const uneven = await runAndReport(CASES[2] as Case, flags, smi.stateEnv, push);
    const found = [small, big, uneven].map((r) => r.findings.map((f) => f.kind).sort());
    expect(found).toEqual(CASES.map((c) => [...c.expected].sort()));

    const under = small.findings[0];
    expect(Number(under?.evidence.meanUtilization)).toBeLessThan(20);
    expect(Number(under?.evidence.dataWaitShare)).toBeLessThan(0.1);
    const oom = big.findings[0];
    expect(Number(oom?.evidence.memoryHighWaterShare)).toBeGreaterThan(0.95);
    expect(oom?.severity).toBe("warning");
    const imb = uneven.findings[0];
    expect(Number(imb?.evidence.spread)).toBeGreaterThan(40);
    expect(imb?.summary).toMatch(/gpu0 \d+%.*gpu1 \d+%/);
  }, 120_000);
});
