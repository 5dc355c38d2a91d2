import { writeFileSync } from "node:fs";
import { studyStatusJson } from "@rung/coordinator";
import type { Command } from "commander";
import { runDemo } from "../demo.js";
import { progressPrinter } from "../progress.js";
import { onShutdown } from "../signals.js";

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("run the example study end to end on this machine: embedded nats-server, local agents, ASHA, leaderboard")
    .option("--nats <url>", "use this NATS instead of an embedded nats-server")
    .option("--prefix <name>", "mesh prefix", "rung")
    .option("--spec <file>", "study spec (default configs/digits.yaml, the recommended configuration)")
    .option("--workdir <dir>", "root the spec's workdir is relative to (default the checkout)")
    .option("--agents <n>", "local agents", "4")
    .option("--fake-gpus <n>", "simulated GPUs per agent, even where real ones exist")
    .option("--out <file>", "also write the final study status as JSON (the `study status --json` form)")
    .action(
      async (o: {
        nats?: string;
        prefix: string;
        spec?: string;
        workdir?: string;
        agents: string;
        fakeGpus?: string;
        out?: string;
      }) => {
        const printer = progressPrinter();
        const abort = new AbortController();
        const shutdown = onShutdown(() => abort.abort());
        try {
          const { result, spec } = await runDemo({
            nats: o.nats,
            prefix: o.prefix,
            spec: o.spec,
            workdir: o.workdir,
            agents: Number(o.agents),
            fakeGpus: o.fakeGpus === undefined ? undefined : Number(o.fakeGpus),
            out: process.stdout,
            signal: abort.signal,
            onProgress: (p) => printer.update(p),
            onStudyEnd: () => printer.end(),
          });
          if (o.out) {
            const status = studyStatusJson({
              record: { state: result.status },
              spec,
              state: result.state,
              planned: result.planned,
            });
            writeFileSync(o.out, `${JSON.stringify(status, null, 2)}\n`);
          }
        } finally {
          printer.end();
          shutdown.dispose();
        }
      },
    );
}
