import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TRIAL } from "./config.js";

export interface ChaosSpecOptions {
  /** One trial per value, in this order (a grid). Default one curve trial per quality. */
  qualities?: number[];
  /** Grid over the fixture's --mode instead of qualities. */
  modes?: string[];
  epochMs?: number;
  maxT?: number;
  scheduler?: "asha" | "fifo";
  maxConcurrent?: number;
  retries?: number;
  /** Extra fixture flags, e.g. ["--term-delay", "3000"]. */
  flags?: string[];
}

/** Writes a study spec for the chaos fixture and returns its path. */
export function chaosSpec(name: string, o: ChaosSpecOptions = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-chaos-spec-"));
  const file = join(dir, `${name}.json`);
  const maxT = o.maxT ?? 9;
  const space = o.modes ? { mode: { grid: o.modes } } : { quality: { grid: o.qualities ?? [0.5, 0.9] } };
  const command = [
    process.execPath,
    TRIAL,
    ...(o.modes ? ["--mode", "{mode}"] : ["--quality", "{quality}"]),
    "--epochs",
    "{max_t}",
    "--epoch-ms",
    String(o.epochMs ?? 150),
    ...(o.flags ?? []),
  ].join(" ");
  const scheduler =
    (o.scheduler ?? "asha") === "asha"
      ? { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: maxT }
      : { type: "fifo", time_attr: "epoch", max_t: maxT };
  const spec = {
    name,
    command,
    workdir: ".",
    metric: { name: "val_acc", mode: "max" },
    search: { algorithm: "grid", samples: 1, seed: 1, space },
    scheduler,
    resources: { gpus: 1 },
    max_concurrent: o.maxConcurrent ?? 3,
    retries: o.retries ?? 1,
  };
  writeFileSync(file, JSON.stringify(spec, null, 2));
  return file;
}
