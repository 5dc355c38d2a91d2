import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import { connectNats, encode, ensureResources, MeshNames, startNatsServer } from "@rung/protocol";
import type { Command } from "commander";

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("run the example study end to end on this machine, on an embedded nats-server")
    .action(async () => {
      const dir = mkdtempSync(join(tmpdir(), "rung-demo-"));
      const server = await startNatsServer({ dir });
      try {
        process.stdout.write(`embedded nats-server at ${server.url}\n`);
        const nc = await connectNats({ url: server.url, name: "rung-demo" });
        try {
          const names = new MeshNames();
          const r = await ensureResources(nc, names);
          const ack = await jetstream(nc).publish(names.subjects.events("demo", "hello"), encode({ hello: "rung" }));
          const back = await r.jsm.streams.getMessage(names.streams.events, { seq: ack.seq });
          process.stdout.write(`JetStream round trip ok (stream ${ack.stream}, seq ${back?.seq ?? "?"})\n`);
          process.stdout.write("the example study arrives with the examples; this demo will then run it end to end\n");
        } finally {
          await nc.close();
        }
      } finally {
        await server.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    });
}
