import { Asha } from "./asha.js";
import { CurveStopping } from "./curve-stopping.js";
import { FifoScheduler } from "./fifo.js";
import { MedianStoppingRule } from "./median.js";
import type { SchedulerOptions } from "./options.js";
import { PromotionAsha } from "./promotion.js";
import { rungMilestones } from "./rung-ladder.js";
import type { Scheduler } from "./scheduler.js";

/** Builds the scheduler for compiled options. `seed` feeds the bracket draws (ASHA/Hyperband) and learning-curve stopping's own draws. */
export function createScheduler(options: SchedulerOptions, seed = 0): Scheduler {
  switch (options.type) {
    case "asha":
    case "hyperband":
      return new Asha(options, seed);
    case "promotion":
      return new PromotionAsha(options);
    case "pbt":
      // The study's policy builds it, with the search space (study/pbt.ts).
      throw new RangeError(
        'population-based training (scheduler pbt) perturbs a study\'s search-space parameters, so it runs only inside "rung study run"; replaying results through it is not supported',
      );
    case "curve":
      return new CurveStopping({
        mode: options.mode,
        maxT: options.maxT,
        gracePeriod: options.gracePeriod,
        milestones: rungMilestones(options.gracePeriod, options.reductionFactor, options.maxT, 0).filter((m) => m < options.maxT),
        probability: options.probability,
        topK: options.topK,
        seed,
      });
    case "median":
      return new MedianStoppingRule(options);
    case "fifo":
      return new FifoScheduler(options);
  }
}
