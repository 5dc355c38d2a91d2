import { RUNG_VERSION } from "@rung/protocol";
import { Command } from "commander";
import { registerAgent } from "./commands/agent.js";
import { registerAgents } from "./commands/agents.js";
import { registerAuth } from "./commands/auth.js";
import { registerDemo } from "./commands/demo.js";
import { registerLogs } from "./commands/logs.js";
import { registerReplay } from "./commands/replay.js";
import { registerServer } from "./commands/server.js";
import { registerStudy } from "./commands/study.js";
import { registerTail } from "./commands/tail.js";
import { registerUi } from "./commands/ui.js";

export function buildProgram(): Command {
  const program = new Command("rung")
    .description("tune classifiers on rented GPU boxes: agents, ASHA, telemetry — over NATS")
    .version(RUNG_VERSION)
    .option("--verbose", "show stack traces and debug logs")
    .showHelpAfterError();
  registerServer(program);
  registerAuth(program);
  registerDemo(program);
  registerAgent(program);
  registerAgents(program);
  registerStudy(program);
  registerReplay(program);
  registerTail(program);
  registerLogs(program);
  registerUi(program);
  return program;
}
