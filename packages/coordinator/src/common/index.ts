// Small pure helpers every layer may use: seeded RNG, percentiles as Ray computes them, zod issue formatting,
// and the search space's parameter types.

export type { ParamSpec, ParamValue } from "./params.js";
export { ashaCutoff, ashaPercentile, nanPercentile } from "./percentile.js";
export type { Rng } from "./rng.js";
export { createRng } from "./rng.js";
export { describeValue, formatPath, issuesToProblems, strictObject, suggest } from "./zod-issues.js";
