// The search space's types, shared by the study (spec, sampling) and the model-based samplers (search/).

/** A parameter value as it reaches the trial (argv and RUNG_PARAMS). */
export type ParamValue = string | number | boolean;

/**
 * One search-space entry, compiled. In the spec each is either a plain value (a constant) or a
 * one-key mapping naming the distribution, after Ray Tune's `tune.*` functions:
 *
 *   uniform:     [lower, upper]      float in [lower, upper)
 *   quniform:    [lower, upper, q]   uniform, rounded to a multiple of q: in [lower, upper]
 *                                    (lower and upper must be multiples of q, as Ray requires)
 *   loguniform:  [lower, upper]      float in [lower, upper), uniform in log space; 0 < lower
 *   qloguniform: [lower, upper, q]   loguniform rounded to a multiple of q: in [lower, upper]
 *   randint:     [lower, upper]      integer in [lower, upper) — upper exclusive, as tune.randint
 *   randn:       [mean, sd]          normal
 *   choice:      [a, b, …]           one of the values, uniformly
 *   grid:        [a, b, …]           every value: crossed with everything else (tune.grid_search)
 */
export type ParamSpec =
  | { readonly kind: "constant"; readonly value: ParamValue }
  | { readonly kind: "grid" | "choice"; readonly values: readonly ParamValue[] }
  | { readonly kind: "uniform" | "loguniform" | "randint"; readonly lower: number; readonly upper: number }
  | { readonly kind: "quniform" | "qloguniform"; readonly lower: number; readonly upper: number; readonly q: number }
  | { readonly kind: "randn"; readonly mean: number; readonly sd: number };
