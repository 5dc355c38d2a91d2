import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readStudyEvents } from "@rung/coordinator";
import { connectNats, MeshNames, type TrialEvent, type TrialEventOf } from "@rung/protocol";
import { type FakeNvidiaSmi, rungAgent, type TestProcess } from "@rung/testkit";

/** What the GPU tests share: the trial on the fake GPUs, a study spec file, an agent on them, the events. */

/** test/fixtures/gpu-trial.mjs: registers its memory and compute with the fake GPU it is given. */
export const GPU_TRIAL = `${process.execPath} test/fixtures/gpu-trial.mjs`;

/** A spec file with the GPU tests' defaults (workdir ".", val_acc max, no retries) under `spec`. */
export function specFile(spec: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), "rung-gpu-spec-"));
  const file = join(dir, `${spec.name as string}.json`);
  writeFileSync(file, JSON.stringify({ workdir: ".", metric: { name: "val_acc", mode: "max" }, retries: 0, ...spec }));
  return file;
}

/** `rung agent` on the fake GPUs of `smi`. */
export function agentOn(url: string, prefix: string, smi: FakeNvidiaSmi, name = "box"): TestProcess {
  const state = mkdtempSync(join(tmpdir(), "rung-gpu-agent-"));
  return rungAgent(url, prefix, { name, stateDir: state, fakeGpus: null, flags: ["--nvidia-smi", smi.path] });
}

/** The study's events as stored. */
export async function studyEvents(url: string, prefix: string, study: string): Promise<TrialEvent[]> {
  const nc = await connectNats({ url });
  try {
    return (await readStudyEvents(nc, new MeshNames(prefix), study)).map((s) => s.event);
  } finally {
    await nc.close();
  }
}

/** The most attempts running at once, in all and on each GPU, from their `started` and `finished` events. */
export function concurrency(events: TrialEvent[]): { all: number; perGpu: Map<number, number> } {
  const edges: { ts: number; gpu: number; d: number }[] = [];
  for (const s of events.filter((e): e is TrialEventOf<"started"> => e.type === "started")) {
    const end = events.find((e) => e.type === "finished" && e.trial === s.trial && e.attempt === s.attempt);
    for (const gpu of s.gpus) edges.push({ ts: s.ts, gpu, d: 1 }, { ts: end?.ts ?? Number.POSITIVE_INFINITY, gpu, d: -1 });
  }
  edges.sort((a, b) => a.ts - b.ts || a.d - b.d);
  const now = new Map<number, number>();
  const perGpu = new Map<number, number>();
  let running = 0;
  let all = 0;
  for (const e of edges) {
    now.set(e.gpu, (now.get(e.gpu) ?? 0) + e.d);
    perGpu.set(e.gpu, Math.max(perGpu.get(e.gpu) ?? 0, now.get(e.gpu) as number));
    running += e.d;
    all = Math.max(all, running);
  }
  return { all, perGpu };
}

/** The most attempts that ran on one GPU at once. */
export function mostOnOneGpu(events: TrialEvent[]): number {
  return Math.max(0, ...concurrency(events).perGpu.values());
}
