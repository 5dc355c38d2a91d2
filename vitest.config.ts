import { defineConfig } from "vitest/config";

// Workspace packages resolve to their TypeScript sources (the "source" export condition), so tests
// never run stale builds; processes the tests spawn (`rung agent`, …) run the built CLI, which
// `pnpm test` builds first.
const conditions = ["source", "import", "module", "node", "default"];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    include: ["packages/*/src/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**", "test/chaos/**"],
    pool: "forks",
    maxWorkers: 2,
    // Generous: end-to-end tests run real processes on a 2-core machine that CI may load; a hang still fails.
    testTimeout: 120_000,
    hookTimeout: 60_000,
    reporters: ["default", "json"],
    outputFile: { json: "test-results/vitest.json" },
  },
});
