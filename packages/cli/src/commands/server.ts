import { homedir } from "node:os";
import { join } from "node:path";
import { NatsServerExitedError, startNatsServer } from "@rung/protocol";
import type { Command } from "commander";
import { onShutdown } from "../signals.js";

export function registerServer(program: Command): void {
  program
    .command("server")
    .description("run a local nats-server with JetStream for the mesh")
    .option("--port <n>", "client port (default 4222; with --config, the config's own unless given)")
    .option("--host <addr>", "listen address (use 0.0.0.0 only with TLS and accounts, see docs/deploy.md)", "127.0.0.1")
    .option("--store <dir>", "JetStream store directory", join(homedir(), ".rung", "nats"))
    .option("--config <file>", "a full nats-server config file (deploy/nats: TLS, accounts, cluster); --host is ignored then")
    .action(async (o: { port?: string; host: string; store: string; config?: string }) => {
      const server = await startNatsServer({
        dir: o.store,
        storeDir: join(o.store, "jetstream"),
        port: o.port !== undefined ? Number(o.port) : o.config ? undefined : 4222,
        host: o.host,
        configFile: o.config,
      });
      let asked = false;
      const shutdown = onShutdown(
        () => {
          asked = true;
          void server.stop();
        },
        () => server.signal("SIGKILL"),
      );
      // Ready is said once Ctrl-C is handled: whoever reads it may stop us at once.
      process.stdout.write(
        `nats-server ready at ${server.url} (pid ${server.pid}, JetStream store ${o.store}); Ctrl-C stops it\n`,
      );
      await server.exited;
      shutdown.dispose();
      // Supervisors (systemd, a shell loop) restart what exits non-zero: a server that died must say so.
      if (!asked) throw new NatsServerExitedError(server.pid, server.exitStatus, server.stderr);
      process.stdout.write("nats-server stopped\n");
    });
}
