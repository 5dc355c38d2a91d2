#!/usr/bin/env node
import { buildProgram } from "./program.js";

const verbose = process.argv.includes("--verbose");

// `rung study status NAME | head`: the reader went away, as a pipe's reader may. That ends the output,
// not with a crash: exit quietly, as other command-line tools do (the exit status of a broken pipe).
for (const stream of [process.stdout, process.stderr])
  stream.on("error", (err: NodeJS.ErrnoException) => {
    // A command that handles its own stream's errors (`rung tail`, `rung logs -f` close their NATS
    // connection first) decides itself.
    if (stream.listenerCount("error") > 1) return;
    if (err.code === "EPIPE") process.exit(141);
    throw err;
  });
if (verbose && !process.env.RUNG_LOG_LEVEL) process.env.RUNG_LOG_LEVEL = "debug";

buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    // One sentence for the user; the stack only when asked for.
    const e = err instanceof Error ? err : new Error(String(err));
    process.stderr.write(`rung: ${e.message}\n`);
    if (verbose)
      process.stderr.write(`${e.stack ?? ""}\n${e.cause ? `cause: ${String((e.cause as Error).stack ?? e.cause)}\n` : ""}`);
    else if (e.cause) process.stderr.write("(run with --verbose for details)\n");
    process.exitCode = 1;
  });
