import { type ChildProcess, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import type { GpuSample, Telemetry, TrialEvent } from "@rung/protocol";

/** The built `rung` CLI as a child process, stdout kept apart (as bytes) from stderr. */

export const REPO = resolve(import.meta.dirname, "..");
const RUNG = join(REPO, "packages", "cli", "dist", "bin.js");

export interface Cli {
  child: ChildProcess;
  stdout(): Buffer;
  stderr(): string;
  /** Complete stdout lines so far. */
  lines(): string[];
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
}

export function cli(args: string[], env: Record<string, string> = {}): Cli {
  const child = spawn(process.execPath, [RUNG, ...args], {
    cwd: REPO,
    env: { ...process.env, RUNG_LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out: Buffer[] = [];
  let err = "";
  child.stdout?.on("data", (d: Buffer) => out.push(d));
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const stdout = () => Buffer.concat(out);
  return {
    child,
    stdout,
    stderr: () => err,
    lines: () => {
      const text = stdout().toString("utf8");
      return text
        .slice(0, text.lastIndexOf("\n") + 1)
        .split("\n")
        .filter((l) => l !== "");
    },
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGINT");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export function gpuSample(index: number, util: number, study: string | null, trial: string | null): GpuSample {
  return {
    index,
    uuid: `GPU-${index}`,
    utilizationGpu: util,
    utilizationMemory: Math.round(util * 0.6),
    memoryUsedMiB: trial ? 8000 : 0,
    memoryTotalMiB: 24_576,
    powerW: 60 + 2 * util,
    temperatureC: 40,
    smClockMHz: 1755,
    study,
    trial,
  };
}

export function gpuMessage(agent: string, ts: number, gpus: GpuSample[]): Telemetry {
  return { v: 1, type: "gpu", agent, ts, fake: true, gpus };
}

type EventInit<T extends TrialEvent["type"]> = Omit<Extract<TrialEvent, { type: T }>, "v" | "type" | "study" | "trial" | "ts">;

export function trialEvent<T extends TrialEvent["type"]>(
  type: T,
  study: string,
  trial: string,
  ts: number,
  rest: EventInit<T>,
): TrialEvent {
  return { v: 1, type, study, trial, ts, ...rest } as TrialEvent;
}
