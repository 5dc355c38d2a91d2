import { createInterface } from "node:readline";
import {
  loadStudy,
  Replayer,
  readStudyEvents,
  redrawSampledTrials,
  replayStudy,
  type SchedulerOptionsInput,
  type SchedulerType,
  studyReplayOptions,
  studyReplayText,
} from "@rung/coordinator";
import type { Command } from "commander";
import { withMesh } from "../connect.js";
import { type NatsFlags, withNatsOptions } from "../nats-options.js";

interface ReplayFlags extends NatsFlags {
  scheduler?: SchedulerType;
  mode?: "max" | "min";
  gracePeriod?: string;
  reductionFactor?: string;
  maxT?: string;
  brackets?: string;
  minSamplesRequired?: string;
  probability?: string;
  topK?: string;
  stopLastTrials: boolean;
  seed?: string;
  study?: string;
  json?: boolean;
}

const num = (s: string | undefined) => (s === undefined ? undefined : Number(s));

export function registerReplay(program: Command): void {
  withNatsOptions(
    program
      .command("replay")
      .description("run the scheduler as a pure function: JSON-lines results on stdin, decisions on stdout (or --study NAME)")
      .option("--scheduler <type>", "asha | hyperband | curve | median | fifo (default asha; with --study, the study's)")
      .option("--mode <mode>", "max | min (with --study, the study's)")
      .option("--grace-period <n>", "first rung")
      .option("--reduction-factor <n>", "rung spacing and cutoff")
      .option("--max-t <n>", "time limit")
      .option("--brackets <n>", "number of brackets (hyperband)")
      .option("--min-samples-required <n>", "median: other trials that must have got as far")
      .option("--probability <p>", "curve: stop when the chance of beating the best is below this")
      .option("--top-k <k>", "curve: the reference is the k-th best final value")
      .option("--no-stop-last-trials", "do not stop trials at max_t")
      .option("--seed <n>", "seed of the bracket draws (default 0; with --study, the study's search seed)")
      .option("--study <name>", "replay a stored study's own reports: its settings, with the ones given here on top")
      .option("--json", "with --study: machine-readable output"),
  ).action(async (o: ReplayFlags) => {
    // Only what was given: an absent setting takes the default (or, with --study, the study's own).
    const settings: SchedulerOptionsInput & { seed?: number } = {
      scheduler: o.scheduler,
      mode: o.mode,
      gracePeriod: num(o.gracePeriod),
      reductionFactor: num(o.reductionFactor),
      maxT: num(o.maxT),
      brackets: num(o.brackets),
      minSamplesRequired: num(o.minSamplesRequired),
      probability: num(o.probability),
      topK: num(o.topK),
      stopLastTrials: o.stopLastTrials === false ? false : undefined,
      seed: num(o.seed),
    };
    if (o.study) {
      const study = o.study;
      await withMesh(o, "rung-replay", async (nc, names) => {
        const loaded = await loadStudy(nc, names, study);
        const events = await readStudyEvents(nc, names, study);
        const r = replayStudy(events, studyReplayOptions(loaded.spec, settings));
        // Model-drawn parameters (search.algorithm tpe / bohb) drawn again from the stream.
        const redrawn = redrawSampledTrials(loaded.spec, events);
        const sampling = { drawn: redrawn.length, same: redrawn.filter((x) => x.same).length };
        if (o.json) {
          process.stdout.write(`${JSON.stringify({ ...r, sampling }, null, 2)}\n`);
          return;
        }
        process.stdout.write(studyReplayText(study, loaded.spec, r));
        if (sampling.drawn > 0)
          process.stdout.write(
            `sampling: ${sampling.drawn} trials drawn by ${loaded.spec.search.algorithm}; drawn again from the event stream, ${sampling.same} of them get the same parameters (other settings replayed here keep these trials: the model chose them from this run's results)\n`,
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
