import { connectNats, createLogger, MeshNames, parseDuration } from "@rung/protocol";
import type { Command } from "commander";
import { type NatsFlags, natsOptionsFrom, withNatsOptions } from "../nats-options.js";
import { onShutdown } from "../signals.js";
import { isLoopback, newToken, startUiServer } from "../ui/server.js";

interface UiFlags extends NatsFlags {
  port: string;
  host: string;
  token?: string;
  keepWatch: string;
}

export function registerUi(program: Command): void {
  withNatsOptions(
    program
      .command("ui")
      .description("a read-only web dashboard: studies, live learning curves, trials, the mesh's GPUs, and /metrics")
      .option("--port <n>", "port to listen on (0: any free port)", "8080")
      .option("--host <address>", "address to bind; anything but loopback requires the token printed at start", "127.0.0.1")
      // No commander default from the environment: --help would print the token.
      .option("--token <token>", "the token to require off loopback (env RUNG_UI_TOKEN); default a new random one")
      .option("--keep-watch <duration>", "how long a study stays followed after its last browser leaves", "30s"),
  ).action(async (o: UiFlags) => {
    const port = Number(o.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new Error(`--port: must be a whole number from 0 to 65535, got ${JSON.stringify(o.port)}`);
    const keepWatchMs = parseDuration(o.keepWatch, "--keep-watch");
    const given = o.token ?? (process.env.RUNG_UI_TOKEN || undefined);
    const token = isLoopback(o.host) ? null : (given ?? newToken());
    const log = createLogger({ base: { component: "ui" }, format: "auto" });
    const nc = await connectNats({ ...natsOptionsFrom(o, "rung-ui"), reconnectForever: true });
    const stop = new AbortController();
    const shutdown = onShutdown(() => stop.abort());
    try {
      const server = await startUiServer({
        nc,
        names: new MeshNames(o.prefix),
        host: o.host,
        port,
        token,
        log,
        keepWatchMs,
      }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === "EADDRINUSE") throw new Error(`port ${port} on ${o.host} is already in use — pick another with --port`);
        throw err;
      });
      process.stdout.write(`rung ui: ${server.url}\n`);
      if (token) process.stdout.write(`rung ui: not on loopback, so every request needs the token: ${token}\n`);
      log.info({ port: server.port, host: o.host }, "serving");
      await new Promise<void>((r) => stop.signal.addEventListener("abort", () => r(), { once: true }));
      await server.close();
    } finally {
      shutdown.dispose();
      await nc.close();
    }
  });
}
