import { type DrainMode, startAgent } from "@rung/agent";
import type { Command } from "commander";
import { type NatsFlags, natsOptionsFrom, withNatsOptions } from "../nats-options.js";
import { onShutdown } from "../signals.js";

interface AgentFlags extends NatsFlags {
  name?: string;
  gpus?: string;
  nvidiaSmi?: string;
  fakeGpus?: string;
  cpuSlots?: string;
  label: string[];
  allowCommand: string[];
  pricePerGpuHour?: string;
  workdir?: string;
  stateDir?: string;
  lease: string;
  stopGrace: string;
  drain: string;
  idleExit?: string;
  onIdle?: string;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `"4"` → 4; anything else is handed on as NaN for compileAgentOptions to name the flag. */
function int(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  return /^\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
}

export function registerAgent(program: Command): void {
  withNatsOptions(program.command("agent"))
    .description("run trials on this machine's GPUs: advertise them, claim work, stream what happens")
    .option("--name <name>", "agent name in adverts and telemetry (default: the hostname)")
    .option("--gpus <list>", "use only these GPU indices, e.g. 0,2 (default: all)")
    .option("--nvidia-smi <path>", "nvidia-smi executable (env RUNG_NVIDIA_SMI)")
    .option("--fake-gpus <n>", "simulate N GPUs on a machine without one")
    .option("--cpu-slots <n>", "also offer N CPU-only trial slots")
    .option("--label <key=value>", "label for the advert (repeatable)", collect, [])
    .option("--price-per-gpu-hour <amount>", "what one GPU-hour on this box costs, for cost reports")
    .option("--workdir <dir>", "root under which trial workdirs are resolved (default: the current directory)")
    .option("--state-dir <dir>", "logs and checkpoints (default: ~/.rung/agent/<name>)")
    .option("--lease <duration>", "claim lease: an order not kept alive this long goes to another agent", "30s")
    .option("--stop-grace <duration>", "time between SIGTERM and SIGKILL when a trial is stopped", "10s")
    .option("--drain <mode>", "on the first signal: finish (let trials end) or requeue (stop them, hand orders back)", "finish")
    .option("--idle-exit <duration>", "exit after this long without work, e.g. 15m")
    .option("--on-idle <command>", "shell command to run on --idle-exit, e.g. 'sudo poweroff'")
    .option("--allow-command <prefix>", "run only orders whose command starts with this (repeatable)", collect, [])
    .action(async (o: AgentFlags) => {
      const agent = await startAgent({
        // The connection is named after the agent once its name is known (the hostname by default).
        nats: { ...natsOptionsFrom(o, ""), name: undefined },
        prefix: o.prefix,
        name: o.name,
        gpus: o.gpus,
        nvidiaSmi: o.nvidiaSmi,
        fakeGpus: int(o.fakeGpus),
        cpuSlots: int(o.cpuSlots),
        labels: o.label,
        allowCommand: o.allowCommand,
        pricePerGpuHour: o.pricePerGpuHour === undefined ? null : Number(o.pricePerGpuHour),
        workdir: o.workdir,
        stateDir: o.stateDir,
        lease: o.lease,
        stopGrace: o.stopGrace,
        drain: o.drain as DrainMode,
        idleExit: o.idleExit ?? null,
        onIdle: o.onIdle ?? null,
      });
      const shutdown = onShutdown(
        () => void agent.close(),
        () => agent.kill(),
      );
      await agent.done;
      shutdown.dispose();
      if (agent.exitReason === "failed") process.exitCode = 1;
    });
}
