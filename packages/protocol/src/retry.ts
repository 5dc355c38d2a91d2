/**
 * Retry with backoff: the one loop every NATS write that can outlive a hiccup (a server restarting, a
 * cluster electing a leader, two processes creating the same stream) goes through. Retrying is safe
 * only for what the server de-duplicates or what says the same each time: publishes with a message id
 * (message-ids.ts), KV puts of a whole value, idempotent stream and consumer setup.
 *
 * Waits grow from `initialDelayMs` by `factor` up to `maxDelayMs`; `jitter` spreads processes that
 * failed together. It stops at the first success, at an error `retryable` refuses, after `attempts`
 * tries, when the next wait would end past `deadlineMs`, or when `signal` aborts — and then rejects with
 * the last error of `fn` as it was thrown (callers wrap it in their own error if they want one).
 */

export interface RetryOptions {
  /** Tries in all, the first included. Default 5, or no limit when `deadlineMs` is given. */
  attempts?: number;
  /**
   * Gives up when the next wait would end more than this long after the first try began (a deadline for
   * the whole operation, not for one try). Default: none — `attempts` bounds it.
   */
  deadlineMs?: number;
  /** The wait after the first failure. Default 250 ms. */
  initialDelayMs?: number;
  /** The longest wait. Default 5 s (or `initialDelayMs` when that is longer). */
  maxDelayMs?: number;
  /** Each wait is the previous one times this; 1 waits the same each time. Default 2. */
  factor?: number;
  /**
   * The random share of each wait, 0 to 1: a wait is `delay × (1 − jitter × random())`. Default 0 (every
   * wait exactly the backoff); 0.5 and up for many processes that restart together.
   */
  jitter?: number;
  /**
   * Aborting ends the retrying: the wait in progress is cut short and no further try is made. Rejects
   * with the last error of `fn`, or with `signal.reason` when aborted before the first try. A try in
   * progress is not interrupted (pass the signal into `fn` for that).
   */
  signal?: AbortSignal;
  /** Whether an error is worth another try; others reject at once. Default: every error. */
  retryable?: (error: unknown) => boolean;
  /** Called after each failure that will be retried, before its wait: the place for a log line. */
  onRetry?: (info: RetryInfo) => void;
}

export interface RetryInfo {
  /** What the failed try threw. */
  error: unknown;
  /** Failed tries so far, this one included (1 on the first failure). */
  failures: number;
  /** How long it waits before the next try. */
  delayMs: number;
  /** Since the first try began. */
  elapsedMs: number;
}

const DEFAULT_ATTEMPTS = 5;

interface CompiledRetryOptions {
  attempts: number;
  deadlineMs: number;
  initialDelayMs: number;
  maxDelayMs: number;
  factor: number;
  jitter: number;
}

function compileRetryOptions(o: RetryOptions): CompiledRetryOptions {
  const attempts = o.attempts ?? (o.deadlineMs === undefined ? DEFAULT_ATTEMPTS : Number.POSITIVE_INFINITY);
  const c = {
    attempts,
    deadlineMs: o.deadlineMs ?? Number.POSITIVE_INFINITY,
    initialDelayMs: o.initialDelayMs ?? 250,
    maxDelayMs: o.maxDelayMs ?? Math.max(5000, o.initialDelayMs ?? 0),
    factor: o.factor ?? 2,
    jitter: o.jitter ?? 0,
  };
  if (!(c.attempts >= 1) || (Number.isFinite(c.attempts) && !Number.isInteger(c.attempts)))
    throw new RangeError(`retry: attempts must be a positive integer, got ${o.attempts}`);
  if (!(c.deadlineMs >= 0)) throw new RangeError(`retry: deadlineMs must be 0 or more, got ${o.deadlineMs}`);
  if (!(c.initialDelayMs >= 0)) throw new RangeError(`retry: initialDelayMs must be 0 or more, got ${o.initialDelayMs}`);
  if (!(c.maxDelayMs >= c.initialDelayMs))
    throw new RangeError(`retry: maxDelayMs (${o.maxDelayMs}) must be at least initialDelayMs (${c.initialDelayMs})`);
  if (!(c.factor >= 1)) throw new RangeError(`retry: factor must be 1 or more, got ${o.factor}`);
  if (!(c.jitter >= 0 && c.jitter <= 1)) throw new RangeError(`retry: jitter must be between 0 and 1, got ${o.jitter}`);
  return c;
}

/** Runs `fn` (given the 1-based try number) until it resolves; see the file comment for when it gives up. */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const o = compileRetryOptions(options);
  const { signal } = options;
  if (signal?.aborted) throw signal.reason;
  const start = Date.now();
  let backoff = o.initialDelayMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (error) {
      if (options.retryable && !options.retryable(error)) throw error;
      if (attempt >= o.attempts || signal?.aborted) throw error;
      const delayMs = Math.round(backoff * (1 - o.jitter * Math.random()));
      const elapsedMs = Date.now() - start;
      if (elapsedMs + delayMs > o.deadlineMs) throw error;
      options.onRetry?.({ error, failures: attempt, delayMs, elapsedMs });
      if (!(await sleep(delayMs, signal))) throw error;
      backoff = Math.min(o.maxDelayMs, backoff * o.factor);
    }
  }
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
