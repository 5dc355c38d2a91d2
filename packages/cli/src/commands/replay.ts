import { createInterface } from "node:readline";
import { loadStudy, Replayer, readStudyEvents, replayStudy, type SchedulerType } from "@rung/coordinator";
import type { Command } from "commander";
import { withMesh } from "../connect.js";
import { type NatsFlags, withNatsOptions } from "../nats-options.js";

interface ReplayFlags extends NatsFlags {
  scheduler: SchedulerType;
  mode?: "max" | "min";
  gracePeriod?: string;
  reductionFactor?: string;
  maxT?: string;
  brackets?: string;
  stopLastTrials: boolean;
  seed: string;
  study?: string;
  json?: boolean;
}

const num = (s: string | undefined) => (s === undefined ? undefined : Number(s));

export function registerReplay(program: Command): void {
  withNatsOptions(
    program
      .command("replay")
      .description("run the scheduler as a pure function: JSON-lines results on stdin, decisions on stdout (or --study NAME)")
      .option("--scheduler <type>", "asha | hyperband | median | fifo", "asha")
      .option("--mode <mode>", "max | min")
      .option("--grace-period <n>", "first rung")
      .option("--reduction-factor <n>", "rung spacing and cutoff")
      .option("--max-t <n>", "time limit")
      .option("--brackets <n>", "number of brackets (hyperband)")
      .option("--no-stop-last-trials", "do not stop trials at max_t")
      .option("--seed <n>", "seed of the bracket draws", "0")
      .option("--study <name>", "replay a stored study's own reports with these settings")
      .option("--json", "with --study: machine-readable output"),
  ).action(async (o: ReplayFlags) => {
    const settings = {
      scheduler: o.scheduler,
      mode: o.mode,
      gracePeriod: num(o.gracePeriod),
      reductionFactor: num(o.reductionFactor),
      maxT: num(o.maxT),
      brackets: num(o.brackets),
      stopLastTrials: o.stopLastTrials,
      seed: Number(o.seed),
    };
    if (o.study) {
      const study = o.study;
      await withMesh(o, "rung-replay", async (nc, names) => {
        const loaded = await loadStudy(nc, names, study);
        const events = await readStudyEvents(nc, names, study);
        const r = replayStudy(events, {
          ...settings,
          mode: settings.mode ?? loaded.spec.metric.mode,
          metric: loaded.spec.metric.name,
          timeAttr: loaded.spec.scheduler.timeAttr,
        });
        if (o.json) {
          process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
          return;
        }
        const unit = loaded.spec.scheduler.timeAttr;
        process.stdout.write(
          `${r.trials} trials: these settings spend ${r.timeSpent} ${unit}s (the live run spent ${r.liveTimeSpent}), stopping ${r.stopped}` +
            (r.truncated ? ` (${r.truncated} trials had no results past where the live run stopped them)` : "") +
            `\nwinner: ${r.winner ? `${r.winner.trial} ${loaded.spec.metric.name}=${r.winner.value} at ${unit} ${r.winner.t}` : "none"}` +
            ` · live winner: ${r.liveWinner ? `${r.liveWinner.trial} ${r.liveWinner.value}` : "none"}\n`,
        );
      });
      return;
    }
    const replayer = new Replayer(settings);
    const rl = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
    for await (const line of rl) {
      const out = replayer.push(line);
      if (out !== null) process.stdout.write(`${out}\n`);
    }
  });
}
