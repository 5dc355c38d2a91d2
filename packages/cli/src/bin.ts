#!/usr/bin/env node
import { buildProgram } from "./program.js";

const verbose = process.argv.includes("--verbose");
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
