import { initAuth } from "@rung/protocol";
import type { Command } from "commander";

export function registerAuth(program: Command): void {
  const auth = program.command("auth").description("NATS users, permissions and the order-signing key of a secured mesh");
  auth
    .command("init")
    .description(
      "write the nats-server auth fragment, per-role credentials and the coordinator's signing key (keeps existing keys)",
    )
    .option("--dir <dir>", "where the files go", "rung-auth")
    .option("--prefix <name>", "mesh prefix the permissions are scoped to (env RUNG_PREFIX)", process.env.RUNG_PREFIX ?? "rung")
    .option("--agents <names>", "one agent user per name, comma-separated, each scoped to its own telemetry and advert")
    .option("--agent-template", "also write one shared agent user for boxes not named in advance (the default without --agents)")
    .option("--account <name>", "NATS account of the mesh's users (default: the prefix in capitals)")
    .action((o: { dir: string; prefix: string; agents?: string; agentTemplate?: boolean; account?: string }) => {
      const agents = o.agents ? o.agents.split(",").filter((a) => a.trim() !== "") : [];
      const r = initAuth({ dir: o.dir, prefix: o.prefix, agents, agentTemplate: o.agentTemplate, account: o.account });
      const say = (s: string) => process.stdout.write(`${s}\n`);
      if (r.configState === "new")
        say(`${r.config}  server fragment: include it from the nats-server config, then reload the server`);
      else if (r.configState === "same") say(`${r.config}  server fragment: unchanged, nothing to reload`);
      else
        say(
          `${r.config}  server fragment: CHANGED (other users, or this version's permissions: each agent may write only its own trials' events and logs) — reload the server between studies (nats-server --signal reload): trials running through a reload lose their claim and run again`,
        );
      for (const c of r.credentials) say(`${c.file}  ${c.label} (${c.created ? "new" : "kept"}, mode 0600)`);
      say(
        `${r.signingKey.file}  order-signing key (${r.signingKey.created ? "new" : "kept"}, mode 0600): rung study run --signing-key ${r.signingKey.file}`,
      );
      say("");
      say("start agents with:");
      say(`  rung agent --creds <its .creds file> --trust ${r.signingKey.publicKey}`);
    });
}
