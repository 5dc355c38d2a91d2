import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type DiagnosisInput, diagnose, type FindingKind } from "@rung/coordinator";
import { it } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";
import { type LabelledCase, REPO, type RealRun, realCase, runDigits, syntheticCases } from "./telemetry-scenarios.js";

/**
 * Diagnosis accuracy on a labelled suite. Real PyTorch runs (Debian's python3-torch, CPU) of the
 * digits classifier whose Dataset sleeps 3.5 ms per item (slow storage): once with num_workers=0
 * (starved: input-bound), once with 8 workers (healthy), and once without the delay (healthy). Their
 * real reports drive fake-GPU traces exactly as the agent's fake GPU does; synthetic scenarios cover
 * the GPU side (under-filled, imbalance, near-OOM, host saturation, idle GPUs).
 *
 * The only assertion is that every labelled case gets its findings and nothing else. Precision and
 * recall are printed (and written to test-results/diagnosis-accuracy.json), not asserted.
 */

// 3.5 ms of per-item latency against ~40 ms of compute per batch of 64: alone the loader needs 220 ms
// a batch (more than five times the compute), so the starved run stays input-bound even when a busy
// machine slows its compute (which stands for GPU time here) 3–4×; eight workers (sleeping, so two
// cores are enough) bring the wait to about a fifth.
const COMMON = ["--hidden", "2048", "--data-delay-ms", "3.5"];

interface Outcome {
  name: string;
  source: string;
  expected: FindingKind[];
  found: FindingKind[];
  note: string;
}

function score(outcomes: Outcome[]) {
  let tp = 0;
  let fp = 0;
  let fn = 0;
  for (const o of outcomes) {
    for (const k of o.found)
      if (o.expected.includes(k)) tp += 1;
      else fp += 1;
    for (const k of o.expected) if (!o.found.includes(k)) fn += 1;
  }
  return { tp, fp, fn, precision: tp + fp > 0 ? tp / (tp + fp) : 1, recall: tp + fn > 0 ? tp / (tp + fn) : 1 };
}

function describeRun(r: RealRun, input: DiagnosisInput): string {
  const t = input.trials[0];
  const util = t?.utilization ? `GPU ${Math.round(t.utilization.mean)}%` : "no GPU samples";
  const wait = t?.dataWaitShare != null ? `data wait ${Math.round(100 * t.dataWaitShare)}%` : "no data wait";
  return `${((r.endedAt - r.startedAt) / 1000).toFixed(1)} s run, ${util}, ${wait}, num_workers=${r.reports[0]?.metrics.num_workers}`;
}

describe("diagnosis accuracy on a labelled suite", () => {
  it("names the right finding in every labelled case, and no input-bound on the healthy runs", async () => {
    // The starved run alone: a neighbour would slow its compute and blur its label. The two healthy
    // runs side by side: slower compute only makes them less input-bound.
    const starved = await runDigits([...COMMON, "--num-workers", "0", "--epochs", "2"]);
    const [healthyRun, cleanRun] = await Promise.all([
      runDigits([...COMMON, "--num-workers", "8", "--epochs", "3"]),
      runDigits(["--hidden", "2048", "--num-workers", "0", "--epochs", "3"]),
    ]);
    for (const r of [starved, healthyRun, cleanRun]) {
      expect(r.exitCode, r.output).toBe(0);
      expect(r.reports.length).toBeGreaterThanOrEqual(2);
    }
    const real = (name: string, run: RealRun, trial: string, expected: FindingKind[]): LabelledCase => {
      const input = realCase(run, trial);
      return { name, source: "real", expected, input, note: describeRun(run, input) };
    };
    const cases: LabelledCase[] = [
      real("real: data-delay 3.5 ms/item, num_workers=0", starved, "starved", ["input-bound"]),
      real("real: data-delay 3.5 ms/item, num_workers=8", healthyRun, "workers", []),
      real("real: no data delay, num_workers=0", cleanRun, "clean", []),
      ...syntheticCases(),
    ];

    const outcomes: Outcome[] = cases.map((c) => ({
      name: c.name,
      source: c.source,
      expected: c.expected,
      found: [...new Set(diagnose(c.input).map((f) => f.kind))],
      note: c.note,
    }));
    const total = score(outcomes);
    const realScore = score(outcomes.filter((o) => o.source === "real"));
    const table = outcomes
      .map((o) => `  ${o.name.padEnd(60)} expected [${o.expected.join(", ")}] found [${o.found.join(", ")}] (${o.note})`)
      .join("\n");
    console.log(
      `diagnosis accuracy: precision ${total.precision.toFixed(2)}, recall ${total.recall.toFixed(2)} over ${outcomes.length} cases (tp ${total.tp}, fp ${total.fp}, fn ${total.fn}); real runs: precision ${realScore.precision.toFixed(2)}, recall ${realScore.recall.toFixed(2)}\n${table}`,
    );
    mkdirSync(join(REPO, "test-results"), { recursive: true });
    writeFileSync(
      join(REPO, "test-results", "diagnosis-accuracy.json"),
      `${JSON.stringify({ total, real: realScore, outcomes }, null, 2)}\n`,
    );

    // Input-bound is the finding this suite is about: it must be on the starved run and on no healthy one.
    expect(outcomes[0]?.found).toContain("input-bound");
    expect(outcomes[1]?.found).not.toContain("input-bound");
    expect(outcomes[2]?.found).not.toContain("input-bound");
    for (const o of outcomes)
      expect({ case: o.name, found: [...o.found].sort() }).toEqual({ case: o.name, found: [...o.expected].sort() });
    // About 22 s on a quiet 2-core box; twice that beside other test files.
  }, 120_000);
});
