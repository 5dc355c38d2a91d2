// Pure model-based search: multivariate TPE with a constant liar, and BOHB's budget rule. No I/O, no clock.

export type { ModelSamplerOptions, Observation, SampledValue, SpaceParam } from "./tpe.js";
export { bohbBudget, MODEL_SAMPLER_DEFAULTS, scoreCandidates, suggest, suggestParams } from "./tpe.js";
