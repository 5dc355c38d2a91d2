import { defineConfig } from "vitest/config";

// The chaos suite (`pnpm test:chaos`): real processes, real nats-servers, faults injected from outside.
// One file at a time — the faults are about timing (leases of 3 s), and two scenarios fighting over
// two cores would measure each other — and a table of results at the end (global-setup.ts).
const conditions = ["source", "import", "module", "node", "default"];

export default defineConfig({
  root: new URL("../..", import.meta.url).pathname,
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    include: ["test/chaos/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**"],
    pool: "forks",
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 180_000,
    hookTimeout: 60_000,
    globalSetup: ["test/chaos/global-setup.ts"],
    reporters: ["default"],
  },
});
