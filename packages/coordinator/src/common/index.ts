// Small pure helpers every layer may use: seeded RNG, percentiles as Ray computes them, zod issue formatting.

export { ashaCutoff, ashaPercentile, nanPercentile } from "./percentile.js";
export type { Rng } from "./rng.js";
export { createRng } from "./rng.js";
export { describeValue, formatPath, issuesToProblems, strictObject, suggest } from "./zod-issues.js";
