import { Asha } from "./asha.js";
import { FifoScheduler } from "./fifo.js";
import { MedianStoppingRule } from "./median.js";
import type { SchedulerOptions } from "./options.js";
import { PromotionAsha } from "./promotion.js";
import type { Scheduler } from "./scheduler.js";

/** Builds the scheduler for compiled options. `seed` feeds the bracket draws (ASHA/Hyperband only). */
export function createScheduler(options: SchedulerOptions, seed = 0): Scheduler {
  switch (options.type) {
    case "asha":
    case "hyperband":
      return new Asha(options, seed);
    case "promotion":
      return new PromotionAsha(options);
    case "median":
      return new MedianStoppingRule(options);
    case "fifo":
      return new FifoScheduler(options);
  }
}
