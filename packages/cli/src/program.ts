import { RUNG_VERSION } from "@rung/protocol";
import { Command } from "commander";
import { registerDemo } from "./commands/demo.js";
import { registerServer } from "./commands/server.js";

export function buildProgram(): Command {
  const program = new Command("rung")
    .description("tune classifiers on rented GPU boxes: agents, ASHA, telemetry — over NATS")
    .version(RUNG_VERSION)
    .option("--verbose", "show stack traces and debug logs")
    .showHelpAfterError();
  registerServer(program);
  registerDemo(program);
  return program;
}
