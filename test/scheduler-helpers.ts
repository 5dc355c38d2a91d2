import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readStudyEvents } from "@rung/coordinator";
import { connectNats, MeshNames, type TrialEvent, type TrialEventOf } from "@rung/protocol";
import { rung, type TestProcess } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";

/** What the end-to-end scheduler tests (promotion ASHA, PBT) share: a mesh, the CLI, the stream. */

export const it = meshTest.extend("leakGraceMs", 5000);

/** The events of one type, typed. */
export const of = <T extends TrialEvent["type"]>(evs: TrialEvent[], type: T) =>
  evs.filter((e): e is TrialEventOf<T> => e.type === type);

/** Runs a `rung` command on the mesh to its end. */
export async function run(url: string, prefix: string, args: string[], procs: TestProcess[]): Promise<TestProcess> {
  const p = rung([...args, "--nats", url, "--prefix", prefix]);
  procs.push(p);
  await p.exited;
  return p;
}

/** The study's stored events, with their publishers. */
export async function streamOf(url: string, prefix: string, study: string) {
  const nc = await connectNats({ url });
  try {
    return await readStudyEvents(nc, new MeshNames(prefix), study);
  } finally {
    await nc.close();
  }
}

/**
 * Writes a spec for the curve fixture (test/fixtures/curve-trial.mjs: one epoch every `epochMs`, quality
 * `{quality}` from the space) and returns its path: val_acc (max), one GPU a trial, no retry.
 */
export function curveSpec(
  name: string,
  o: {
    space: Record<string, unknown>;
    scheduler: Record<string, unknown>;
    epochMs: number;
    args?: string;
    extra?: Record<string, unknown>;
  },
): string {
  const file = join(mkdtempSync(join(tmpdir(), "rung-spec-")), `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      command:
        `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs {max_t} --epoch-ms ${o.epochMs} ${o.args ?? ""}`.trim(),
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", space: o.space },
      scheduler: o.scheduler,
      resources: { gpus: 1 },
      retries: 0,
      ...o.extra,
    }),
  );
  return file;
}
