import { once } from "node:events";
import {
  attachTrial,
  attemptEnding,
  findTrialOutput,
  NoTrialOutputError,
  noOutputText,
  parseTrialRef,
  streamTrialOutput,
} from "@rung/coordinator";
import { connectNats, MeshNames } from "@rung/protocol";
import type { Command } from "commander";
import { type NatsFlags, natsOptionsFrom, withNatsOptions } from "../nats-options.js";
import { onShutdown } from "../signals.js";

/** Raw bytes to stdout, waiting when the pipe is full. */
function writeRaw(data: Uint8Array): void | Promise<void> {
  if (process.stdout.write(data)) return;
  return once(process.stdout, "drain").then(() => undefined);
}

/** A trial may leave colours set or the cursor hidden; give the terminal back as it was. */
function restoreTerminal(): void {
  if (process.stdout.isTTY) process.stdout.write("\x1b[0m\x1b[?25h\n");
}

async function withFollow<T>(
  o: NatsFlags,
  name: string,
  fn: (args: { names: MeshNames; signal: AbortSignal; nc: Awaited<ReturnType<typeof connectNats>> }) => Promise<T>,
): Promise<T> {
  const nc = await connectNats(natsOptionsFrom(o, name));
  const stop = new AbortController();
  const shutdown = onShutdown(() => stop.abort());
  const onError = () => stop.abort();
  process.stdout.on("error", onError);
  try {
    return await fn({ nc, names: new MeshNames(o.prefix), signal: stop.signal });
  } finally {
    shutdown.dispose();
    process.stdout.off("error", onError);
    await nc.close();
  }
}

export function registerLogs(program: Command): void {
  withNatsOptions(
    program
      .command("logs <trial>")
      .description(
        "print a trial's terminal output (escape sequences intact); TRIAL is study/trial, or a trial id with --study, or a trial id only one study has",
      )
      .option("--study <name>", "the trial's study")
      .option("--attempt <n>", "this attempt (default: the latest with output)", (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1) throw new Error(`--attempt must be a positive integer, got ${v}`);
        return n;
      })
      .option("-f, --follow", "keep printing new output until the attempt ends"),
  ).action(async (arg: string, o: NatsFlags & { study?: string; attempt?: number; follow?: boolean }) => {
    const ref = parseTrialRef(arg, o.study);
    await withFollow(o, "rung-logs", async ({ nc, names, signal }) => {
      const index = await findTrialOutput(nc, names, ref);
      const attempt = o.attempt ?? index.attempts.at(-1) ?? null;
      if (!o.follow && attempt === null) {
        // No output stored at all: a trial that ended that way wrote nothing (or never ran); say which.
        const ending = await attemptEnding(nc, names, index.study, index.trial, null);
        if (ending.ended === null) throw new NoTrialOutputError(index.study, index.trial, attempt, index.attempts);
        process.stderr.write(`rung logs: ${noOutputText(index.study, index.trial, null, ending)}\n`);
        return;
      }
      if (!o.follow && (attempt === null || !index.attempts.includes(attempt)))
        throw new NoTrialOutputError(index.study, index.trial, attempt, index.attempts);
      try {
        const r = await streamTrialOutput(nc, names, {
          study: index.study,
          trial: index.trial,
          attempt,
          follow: o.follow === true,
          write: writeRaw,
          signal,
        });
        // An attempt whose output is empty ends without a byte on stdout: say so on stderr, and how it ended.
        if (r.bytes === 0 && r.attempt !== null && !signal.aborted) {
          const ending = await attemptEnding(nc, names, index.study, index.trial, r.attempt);
          process.stderr.write(`rung logs: ${noOutputText(index.study, index.trial, r.attempt, ending)}\n`);
        }
      } finally {
        restoreTerminal();
      }
    });
  });

  withNatsOptions(
    program
      .command("attach <trial>")
      .description("show a running trial's terminal live, read-only, until it ends or Ctrl-C (TRIAL as for rung logs)")
      .option("--study <name>", "the trial's study"),
  ).action(async (arg: string, o: NatsFlags & { study?: string }) => {
    const ref = parseTrialRef(arg, o.study);
    await withFollow(o, "rung-attach", async ({ nc, names, signal }) => {
      try {
        await attachTrial(nc, names, {
          ref,
          write: writeRaw,
          signal,
          onWaiting: (study, trial) => process.stderr.write(`waiting for ${study}/${trial} to start…\n`),
        });
      } finally {
        restoreTerminal();
      }
    });
  });
}
