import { runTail, TailFormat } from "@rung/coordinator";
import { connectNats, MeshNames, parseDuration } from "@rung/protocol";
import type { Command } from "commander";
import { type NatsFlags, natsOptionsFrom, withNatsOptions } from "../nats-options.js";
import { onShutdown } from "../signals.js";

interface TailFlags extends NatsFlags {
  study?: string;
  trial?: string;
  agent?: string;
  since?: string;
  json?: boolean;
  follow: boolean;
}

export function registerTail(program: Command): void {
  withNatsOptions(
    program
      .command("tail")
      .description("follow GPU telemetry and trial events live: one line per GPU per second, one per trial event")
      .option("--study <name>", "only this study's GPUs and trials")
      .option("--trial <id>", "only this trial (with --study when trial ids repeat across studies)")
      .option("--agent <name>", "only this agent's GPUs and trials")
      .option("--since <duration>", "replay this much stored telemetry and events first (e.g. 5m; the stream keeps 1 h)")
      .option("--no-follow", "print the stored history (--since, else all that is kept) and exit")
      .option("--json", "newline-delimited JSON, one object per line"),
  ).action(async (o: TailFlags) => {
    const sinceMs = o.since !== undefined ? parseDuration(o.since, "--since") : null;
    // History only is a one-shot read: give up on a server that is gone rather than wait for it.
    const nc = await connectNats({ ...natsOptionsFrom(o, "rung-tail"), reconnectForever: o.follow });
    const stop = new AbortController();
    const shutdown = onShutdown(() => stop.abort());
    // `rung tail | head` closes the pipe: end quietly.
    const onError = () => stop.abort();
    process.stdout.on("error", onError);
    const color = !o.json && process.stdout.isTTY === true && !process.env.NO_COLOR;
    try {
      await runTail({
        nc,
        names: new MeshNames(o.prefix),
        filter: { study: o.study, trial: o.trial, agent: o.agent },
        sinceMs,
        format: o.json ? TailFormat.json : TailFormat.text,
        color,
        out: process.stdout,
        signal: stop.signal,
        follow: o.follow,
        onNotice: (text) => process.stderr.write(`rung tail: ${text}\n`),
      });
    } finally {
      shutdown.dispose();
      process.stdout.off("error", onError);
      await nc.close();
    }
  });
}
