import { RUNG_VERSION } from "@rung/protocol";
import { Command } from "commander";
import { registerDemo } from "./commands/demo.js";
import { registerReplay } from "./commands/replay.js";
import { registerServer } from "./commands/server.js";
import { registerStudy } from "./commands/study.js";

export function buildProgram(): Command {
  const program = new Command("rung")
    .description("tune classifiers on rented GPU boxes: agents, ASHA, telemetry — over NATS")
    .version(RUNG_VERSION)
    .option("--verbose", "show stack traces and debug logs")
    .showHelpAfterError();
  registerServer(program);
  registerDemo(program);
  registerStudy(program);
  registerReplay(program);
  return program;
}
