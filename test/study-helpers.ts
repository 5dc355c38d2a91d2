import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** Test helpers that start the real `rung` CLI as child processes. */

export const REPO = resolve(import.meta.dirname, "..");
export const RUNG = join(REPO, "packages", "cli", "dist", "bin.js");
export const FIXTURES = join(REPO, "test", "fixtures");

export interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

export function rung(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, [RUNG, ...args], {
    cwd: REPO,
    env: { ...process.env, RUNG_LOG_LEVEL: process.env.RUNG_LOG_LEVEL ?? "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, out: () => out, exited };
}

/** `rung agent` processes; unsigned orders unless `extra` passes `--trust` (the tests' coordinators sign nothing). */
export function startAgents(url: string, prefix: string, n: number, extra: string[] = []): Proc[] {
  const state = mkdtempSync(join(tmpdir(), "rung-agents-"));
  const security = extra.includes("--trust") ? [] : ["--insecure"];
  return Array.from({ length: n }, (_, i) =>
    rung([
      "agent",
      "--nats",
      url,
      "--prefix",
      prefix,
      "--name",
      `a${i + 1}`,
      "--fake-gpus",
      "1",
      "--workdir",
      REPO,
      "--state-dir",
      join(state, `a${i + 1}`),
      "--lease",
      "3s",
      "--stop-grace",
      "2s",
      ...security,
      ...extra,
    ]),
  );
}

export async function stopAll(procs: Proc[]): Promise<void> {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGTERM");
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((r) => {
          if (p.child.exitCode !== null || p.child.signalCode !== null) return r();
          const t = setTimeout(() => p.child.kill("SIGKILL"), 8000);
          p.child.once("exit", () => {
            clearTimeout(t);
            r();
          });
        }),
    ),
  );
}

/** A study spec for the curve fixture: `qualities` become a grid, so trial i has qualities[i]. */
export function curveSpec(name: string, qualities: number[], extra: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-spec-"));
  const file = join(dir, `${name}.json`);
  const spec = {
    name,
    command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs {max_t} --epoch-ms 120`,
    workdir: ".",
    metric: { name: "val_acc", mode: "max" },
    search: { algorithm: "grid", samples: 1, seed: 1, space: { quality: { grid: qualities } } },
    scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 9 },
    resources: { gpus: 1 },
    max_concurrent: 2,
    retries: 1,
    ...extra,
  };
  writeFileSync(file, JSON.stringify(spec));
  return file;
}
