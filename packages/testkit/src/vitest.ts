// @rung/testkit/vitest: the fixtures every end-to-end test file shares. Kept apart from the package's
// root so that only tests load vitest.

import type { NatsServerOptions } from "@rung/protocol";
import { test as base } from "vitest";
import { checkLeaks } from "./leaks.js";
import { openMesh, type TestMesh } from "./mesh.js";
import { startNats, type TestNats } from "./nats.js";
import { stopAll, type TestProcess } from "./processes.js";

/** The processes a test started; each is stopped (`TestProcess.stop`) when the test ends, before the leak check. */
export class Processes {
  readonly #all: TestProcess[] = [];

  push(...procs: TestProcess[]): number {
    return this.#all.push(...procs);
  }

  async stopAll(): Promise<void> {
    await stopAll(this.#all.splice(0));
  }
}

/**
 * `test` (and `it`) with these fixtures, each made only for the tests that ask for it:
 *
 *  - `nats` — one real nats-server for the whole file (`startNats(natsOptions)`), destroyed after its
 *    last test. `natsOptions` (default {}) is a file fixture too: extend it for a server of another kind.
 *  - `mesh` — the test's own mesh on that server: a new prefix, a connection, the streams and buckets
 *    made; closed after the test.
 *  - `procs` — push the processes the test starts; they are stopped after the test.
 *  - the leak check, for every test whether it asks or not: after the test (and after the fixtures
 *    above are disposed of) `checkLeaks({ graceMs: leakGraceMs })` fails it if it left a process or a
 *    connection behind. `leakGraceMs` defaults to 3000; extend it for slower processes.
 *
 * A file extends it for its own needs:
 *
 *     const test = meshTest.extend("leakGraceMs", 5000);
 */
export const meshTest = base
  .extend("natsOptions", { scope: "file" }, {} as Partial<NatsServerOptions>)
  .extend("nats", { scope: "file" }, async ({ natsOptions }, { onCleanup }): Promise<TestNats> => {
    const nats = await startNats(natsOptions);
    onCleanup(() => nats.destroy());
    return nats;
  })
  .extend("leakGraceMs", 3000 as number)
  // Set up before any fixture that starts something, so it is disposed of after all of them.
  .extend("leakCheck", { auto: true }, ({ leakGraceMs }, { onCleanup }): void => {
    onCleanup(() => checkLeaks({ graceMs: leakGraceMs }));
  })
  .extend("procs", ({ leakCheck: _ }, { onCleanup }): Processes => {
    const procs = new Processes();
    onCleanup(() => procs.stopAll());
    return procs;
  })
  .extend("mesh", async ({ nats, leakCheck: _ }, { onCleanup }): Promise<TestMesh> => {
    const mesh = await openMesh(nats.url);
    onCleanup(() => mesh.close());
    return mesh;
  });

export { meshTest as it, meshTest as test };
