import { formatAgentsTable, listAdverts } from "@rung/agent";
import { connectNats, MeshNames } from "@rung/protocol";
import type { Command } from "commander";
import { type NatsFlags, natsOptionsFrom, withNatsOptions } from "../nats-options.js";

export function registerAgents(program: Command): void {
  withNatsOptions(program.command("agents"))
    .description("list the mesh: one row per GPU with its agent, model, memory, utilization and trial")
    .option("--json", "print the adverts as JSON")
    .action(async (o: NatsFlags & { json?: boolean }) => {
      const nc = await connectNats({ ...natsOptionsFrom(o, "rung-agents"), reconnectForever: false });
      try {
        const adverts = await listAdverts(nc, new MeshNames(o.prefix));
        process.stdout.write(o.json ? `${JSON.stringify(adverts, null, 2)}\n` : formatAgentsTable(adverts));
      } finally {
        await nc.close();
      }
    });
}
