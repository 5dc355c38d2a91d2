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
