import { startCluster, type TestCluster } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { ChaosMesh, type OpenOptions } from "./mesh.js";

/**
 * The chaos suite's `it`: testkit's fixtures (a nats-server per file, the leak check, with 5 s for
 * killed processes to wind down), plus
 *  - `openChaos(options)` — a `ChaosMesh`, closed after the test (its row goes to the results file);
 *  - `cluster` — a three-node JetStream cluster for the file, instead of the single `nats`.
 */
export const it = meshTest
  .extend("leakGraceMs", 5000)
  // biome-ignore lint/correctness/noEmptyPattern: vitest reads what a fixture needs from this pattern
  .extend("cluster", { scope: "file" }, async ({}, { onCleanup }): Promise<TestCluster> => {
    const cluster = await startCluster(3);
    onCleanup(() => cluster.destroy());
    return cluster;
  })
  .extend("openChaos", ({ leakCheck: _ }, { onCleanup }) => {
    const meshes: ChaosMesh[] = [];
    onCleanup(async () => {
      for (const m of meshes.splice(0)) await m.close();
    });
    return async (o: OpenOptions): Promise<ChaosMesh> => {
      const m = await ChaosMesh.open(o);
      meshes.push(m);
      return m;
    };
  });
