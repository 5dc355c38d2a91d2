import { defineConfig } from "vitest/config";

// Benchmarks are measurements, not tests: they print figures and assert nothing about speed.
// Run one with `npx vitest run --config bench/vitest.config.ts tail-throughput` (after `pnpm build`);
// `pnpm bench` runs it as part of the suite. The suite's own harness (bench/src, built to bench/dist) is not vitest.
const conditions = ["source", "import", "module", "node", "default"];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    include: ["bench/**/*.ts"],
    exclude: ["bench/vitest.config.ts", "bench/src/**", "bench/dist/**", "bench/fixtures/**", "**/node_modules/**"],
    pool: "forks",
    maxWorkers: 1,
    testTimeout: 600_000,
    hookTimeout: 60_000,
  },
});
