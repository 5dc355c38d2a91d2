import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { agentFootprint } from "./agent-footprint.js";
import { bookkeepingOverhead } from "./bookkeeping.js";
import { type BenchContext, type BenchOutcome, killStarted, machine, REPO, round, saveResult } from "./common.js";
import { digitsSearch } from "./digits-search.js";
import { packingBench } from "./packing.js";
import { preemptionLoss } from "./preemption.js";
import { realGpu } from "./real-gpu.js";
import { resultThroughput } from "./result-throughput.js";
import { searchEfficiency } from "./search-efficiency.js";
import { telemetryScale } from "./telemetry-scale.js";
import { uiLoad } from "./ui-load.js";
import { warmStart } from "./warm-start.js";

/**
 * `pnpm bench [--quick] [--only name,name]`: runs the benchmarks one after another (never in
 * parallel: they measure the same two cores), prints one Markdown section per benchmark, and merges
 * the figures into bench/results.json (key per benchmark). Benchmarks measure; nothing here asserts a
 * speed.
 */

const BENCHMARKS: readonly { name: string; title: string; run(ctx: BenchContext): Promise<BenchOutcome> }[] = [
  { name: "search-efficiency", title: "5. Search efficiency on real learning curves", run: searchEfficiency },
  { name: "bookkeeping-overhead", title: "1. Bookkeeping overhead", run: bookkeepingOverhead },
  { name: "result-throughput", title: "2. Result throughput", run: resultThroughput },
  { name: "telemetry-scale", title: "3. Telemetry at mesh scale", run: telemetryScale },
  { name: "agent-footprint", title: "4. Agent footprint", run: agentFootprint },
  { name: "preemption-loss", title: "6. GPU time lost per preemption", run: preemptionLoss },
  { name: "ui-load", title: "7. The study page with many trials", run: uiLoad },
  { name: "digits-search", title: "8. The digits example under each search method", run: digitsSearch },
  { name: "warm-start", title: "9. Warm starts: order to first report", run: warmStart },
  { name: "packing", title: "10. Several trials per GPU", run: packingBench },
  { name: "real-gpu", title: "11. The digits study on this machine's GPU, packed and not", run: realGpu },
];

function usage(): never {
  process.stdout.write(
    `usage: pnpm bench [--quick] [--only ${BENCHMARKS.map((b) => b.name).join(",")}]\n` +
      "  --quick   a subset that fits in under five minutes\n" +
      "  --only    run only these benchmarks\n",
  );
  process.exit(2);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes("--help") || args.includes("-h")) usage();
  const quick = args.includes("--quick");
  const onlyAt = args.indexOf("--only");
  const only = onlyAt >= 0 ? (args[onlyAt + 1] ?? "").split(",").filter(Boolean) : null;
  for (const a of args) if (a.startsWith("-") && !["--quick", "--only"].includes(a)) usage();
  if (only) for (const o of only) if (!BENCHMARKS.some((b) => b.name === o)) usage();
  const selected = BENCHMARKS.filter((b) => !only || only.includes(b.name));
  const m = machine();
  const started = Date.now();
  const log = (line: string) => process.stderr.write(`${line}\n`);
  log(
    `rung bench${quick ? " --quick" : ""}: ${selected.map((b) => b.name).join(", ")} on ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, node ${m.node}, load ${m.loadAverageAtStart.join(" ")}`,
  );
  const sections: string[] = [];
  let failed = 0;
  for (const b of selected) {
    const t0 = Date.now();
    log(`\n== ${b.title} ==`);
    const limitS = Number(process.env.BENCH_LIMIT_S ?? (quick ? 240 : 1200));
    let timer: NodeJS.Timeout | undefined;
    try {
      const outcome = await Promise.race([
        b.run({ quick, log }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`gave up after ${limitS} s (BENCH_LIMIT_S)`)), limitS * 1000);
        }),
      ]);
      const seconds = round((Date.now() - t0) / 1000, 1);
      saveResult(b.name, { ...(outcome.data as object), quick, seconds, at: new Date().toISOString(), machine: m });
      sections.push(outcome.markdown);
      process.stdout.write(`\n${outcome.markdown}\n`);
      log(`(${b.name}: ${seconds} s)`);
    } catch (err) {
      failed += 1;
      log(`${b.name} failed: ${(err as Error).message}`);
      if (process.env.BENCH_VERBOSE) log((err as Error).stack ?? "");
      await killStarted();
    } finally {
      clearTimeout(timer);
    }
  }
  const header = `Measured ${new Date().toISOString()} on ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, node ${m.node}${quick ? " — quick subset" : ""}; ${round((Date.now() - started) / 60_000, 1)} min.`;
  mkdirSync(join(REPO, "bench", "dist"), { recursive: true });
  writeFileSync(join(REPO, "bench", "dist", "results.md"), `${header}\n\n${sections.join("\n\n")}\n`);
  log(
    `\nfigures merged into bench/results.json; tables also in bench/dist/results.md (${round((Date.now() - started) / 60_000, 1)} min)`,
  );
  // A benchmark that gave up may leave a promise pending for ever: exit rather than wait on it.
  process.exit(failed > 0 ? 1 : 0);
}

await main();
