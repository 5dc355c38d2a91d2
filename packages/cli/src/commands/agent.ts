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
  drain?: string;
  maxCheckpoint: string;
  idleExit?: string;
  onIdle?: string;
  trust: string[];
  insecure?: boolean;
  replicas?: string;
  logFormat: string;
  metricsPort?: string;
  warmPython?: string;
  warmPreload?: string;
  warmSpares?: string;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** A list from an environment variable (the systemd unit's /etc/rung/agent.env), `sep`-separated. */
function envList(name: string, sep: string): string[] {
  return (process.env[name] ?? "")
    .split(sep)
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

export function registerAgent(program: Command): void {
  withNatsOptions(program.command("agent"))
    .description("run trials on this machine's GPUs: advertise them, claim work, stream what happens")
    .option(
      "--name <name>",
      "agent name in adverts and telemetry (env RUNG_AGENT_NAME; default: the hostname)",
      process.env.RUNG_AGENT_NAME,
    )
    .option("--gpus <list>", "use only these GPU indices, e.g. 0,2 (default: all)")
    .option("--nvidia-smi <path>", "nvidia-smi executable (env RUNG_NVIDIA_SMI)")
    .option("--fake-gpus <n>", "simulate N GPUs on a machine without one")
    .option("--cpu-slots <n>", "also offer N CPU-only trial slots")
    .option(
      "--label <key=value>",
      "label for the advert (repeatable; env RUNG_LABELS, comma-separated)",
      collect,
      envList("RUNG_LABELS", ","),
    )
    .option(
      "--metrics-port <[host:]port>",
      "serve this box's GPU metrics for Prometheus on /metrics (a port: loopback only; 0.0.0.0:PORT for every interface; env RUNG_METRICS_PORT)",
      process.env.RUNG_METRICS_PORT || undefined,
    )
    .option(
      "--price-per-gpu-hour <amount>",
      "what one GPU-hour on this box costs, for cost reports (env RUNG_PRICE_PER_GPU_HOUR)",
      process.env.RUNG_PRICE_PER_GPU_HOUR || undefined,
    )
    .option(
      "--workdir <dir>",
      "root under which trial workdirs are resolved; must exist (env RUNG_WORKDIR; default: the current directory)",
      process.env.RUNG_WORKDIR || undefined,
    )
    .option(
      "--state-dir <dir>",
      "logs, checkpoints, accepted orders (env RUNG_STATE_DIR; default: ~/.rung/agent/<name>)",
      process.env.RUNG_STATE_DIR || undefined,
    )
    .option("--lease <duration>", "claim lease: an order not kept alive this long goes to another agent", "30s")
    .option("--stop-grace <duration>", "time between SIGTERM and SIGKILL when a trial is stopped", "10s")
    .option(
      "--drain <mode>",
      "on the first signal: finish (let trials end) or requeue (stop them after a last checkpoint, hand them to other agents); without it, SIGTERM (a spot reclaim, a shutdown) requeues and SIGINT finishes (env RUNG_DRAIN)",
      process.env.RUNG_DRAIN || undefined,
    )
    .option(
      "--max-checkpoint <size>",
      "largest checkpoint snapshot stored in the mesh, e.g. 512MiB (env RUNG_MAX_CHECKPOINT)",
      process.env.RUNG_MAX_CHECKPOINT || "4GiB",
    )
    .option("--idle-exit <duration>", "exit after this long without work, e.g. 15m")
    .option("--on-idle <command>", "shell command to run on --idle-exit, e.g. 'sudo poweroff'")
    .option(
      "--allow-command <prefix>",
      "run only orders whose command starts with this (repeatable; env RUNG_ALLOW_COMMAND, ;-separated)",
      collect,
      envList("RUNG_ALLOW_COMMAND", ";"),
    )
    .option(
      "--trust <pubkey>",
      'run only orders signed by this coordinator key, signing.pub from "rung auth init" (repeatable; env RUNG_TRUST, comma-separated)',
      collect,
      envList("RUNG_TRUST", ","),
    )
    .option(
      "--insecure",
      "run unsigned orders from anyone who can publish work (a private machine only; env RUNG_INSECURE=1)",
      process.env.RUNG_INSECURE === "1",
    )
    .option(
      "--warm-python <path>",
      "warm starts: hand trials whose command is '<path> script.py …' to interpreters started ahead of time (env RUNG_WARM_PYTHON)",
      process.env.RUNG_WARM_PYTHON || undefined,
    )
    .option(
      "--warm-preload <modules>",
      "modules those interpreters import before a trial arrives, e.g. torch,sklearn (env RUNG_WARM_PRELOAD)",
      process.env.RUNG_WARM_PRELOAD || undefined,
    )
    .option(
      "--warm-spares <n>",
      "warm interpreters kept waiting per working directory (default: one per trial slot plus one, at most 8)",
    )
    .option("--replicas <n>", "JetStream replicas for streams and buckets this agent creates (3 on a cluster)")
    .option(
      "--log-format <format>",
      "auto (readable lines on a terminal, JSON when piped), json or pretty (env RUNG_LOG_FORMAT)",
      process.env.RUNG_LOG_FORMAT || "auto",
    )
    .action(async (o: AgentFlags) => {
      const agent = await startAgent({
        // The connection is named after the agent once its name is known (the hostname by default).
        nats: { ...natsOptionsFrom(o, ""), name: undefined },
        prefix: o.prefix,
        name: o.name,
        gpus: o.gpus,
        nvidiaSmi: o.nvidiaSmi,
        // Counts and prices go as typed: compileAgentOptions names a bad value ("--fake-gpus: … got \"two\"").
        fakeGpus: o.fakeGpus,
        cpuSlots: o.cpuSlots,
        labels: o.label,
        allowCommand: o.allowCommand,
        trust: o.trust,
        insecure: o.insecure === true,
        replicas: o.replicas,
        pricePerGpuHour: o.pricePerGpuHour ?? null,
        workdir: o.workdir,
        stateDir: o.stateDir,
        lease: o.lease,
        stopGrace: o.stopGrace,
        drain: (o.drain ?? "finish") as DrainMode,
        maxCheckpoint: o.maxCheckpoint,
        idleExit: o.idleExit ?? null,
        onIdle: o.onIdle ?? null,
        logFormat: o.logFormat,
        metricsPort: o.metricsPort ?? null,
        warm: o.warmPython || o.warmPreload ? { python: o.warmPython ?? "", preload: o.warmPreload, spares: o.warmSpares } : null,
      });
      // SIGTERM is a box going away (a spot reclaim, a shutdown): its trials are preempted — they save a
      // last checkpoint and move to other agents. Ctrl-C lets them finish. --drain decides for both.
      const shutdown = onShutdown(
        (signal) => {
          void agent.drain((o.drain as DrainMode | undefined) ?? (signal === "SIGTERM" ? "requeue" : "finish"));
          void agent.close();
        },
        () => agent.kill(),
      );
      await agent.done;
      shutdown.dispose();
      if (agent.exitReason === "failed") process.exitCode = 1;
    });
}
