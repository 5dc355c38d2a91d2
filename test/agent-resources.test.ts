import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { listAdverts } from "@rung/agent";
import { REPO, rung, rungAgent, type TestMesh, type TestProcess, waitFor, waitForOutput } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * Issue 13, item 3: an agent whose JetStream objects were deleted under it creates them again (or says
 * in one sentence why it cannot) instead of retrying a pull for ever. The agent serves two pools
 * (`--fake-gpus 2`: gpu1 and gpu2), the case where the queue-length check before each pull used to
 * throw before the code that re-creates a consumer was reached.
 */

const it = meshTest.extend("leakGraceMs", 5000);

function studySpec(name: string): string {
  const file = join(mkdtempSync(join(tmpdir(), "rung-resources-spec-")), `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      name,
      command: `${process.execPath} test/fixtures/curve-trial.mjs --quality {quality} --epochs {max_t} --epoch-ms 60`,
      workdir: ".",
      metric: { name: "val_acc", mode: "max" },
      search: { algorithm: "grid", samples: 1, seed: 1, space: { quality: { grid: [0.4, 0.8, 0.6] } } },
      scheduler: { type: "asha", time_attr: "epoch", grace_period: 1, reduction_factor: 3, max_t: 3 },
      resources: { gpus: 1 },
      max_concurrent: 2,
      retries: 0,
    }),
  );
  return file;
}

function twoPoolAgent(mesh: TestMesh): TestProcess {
  return rungAgent(mesh.url, mesh.prefix, {
    name: "twin",
    workdir: REPO,
    stateDir: join(mkdtempSync(join(tmpdir(), "rung-resources-state-")), "twin"),
    fakeGpus: 2,
  });
}

async function runStudy(mesh: TestMesh, procs: { push(...p: TestProcess[]): number }, name: string): Promise<void> {
  const study = rung(["study", "run", studySpec(name), ...mesh.flags]);
  procs.push(study);
  expect(await study.exited, study.out()).toBe(0);
  expect(study.out()).toMatch(new RegExp(`study ${name} completed`));
}

describe("an agent whose JetStream objects were deleted", { timeout: 150_000 }, () => {
  it("creates its pools' consumers again, and a study still runs", async ({ mesh, procs }) => {
    const agent = twoPoolAgent(mesh);
    procs.push(agent);
    await waitFor("the advert", async () => (await listAdverts(mesh.nc, mesh.names)).length === 1, 20_000);
    const jsm = await jetstreamManager(mesh.nc);
    for (const pool of ["gpu1", "gpu2"]) await jsm.consumers.delete(mesh.names.streams.work, mesh.names.workConsumer(pool));
    await waitForOutput(agent, /the work consumer \S+-work-gpu1 of pool gpu1 is missing; creating it again/, 20_000);
    await runStudy(mesh, procs, "consumers-gone");
    expect(agent.out()).not.toMatch(/cannot pull work[^\n]*\n[^\n]*cannot pull work/);
  });

  it("creates the work stream again itself, and a study still runs", async ({ mesh, procs }) => {
    const agent = twoPoolAgent(mesh);
    procs.push(agent);
    await waitFor("the advert", async () => (await listAdverts(mesh.nc, mesh.names)).length === 1, 20_000);
    const jsm = await jetstreamManager(mesh.nc);
    await jsm.streams.delete(mesh.names.streams.work);
    // Before any coordinator comes to create it: the agent does.
    await waitForOutput(agent, /the work stream \S+_WORK is missing; creating it again/, 20_000);
    await waitFor("the work stream", () => jsm.streams.info(mesh.names.streams.work).then(() => true), 10_000);
    await runStudy(mesh, procs, "stream-gone");
  });
});
