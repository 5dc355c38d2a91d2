/**
 * Polls `check` until it returns a truthy value or `timeoutMs` passes; the error names `what`. A check
 * that never settles (a request the server never answers) counts against the same deadline: it is
 * raced against it rather than awaited for ever.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 10_000,
  everyMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    try {
      const late = new Promise<"late">((r) => {
        timer = setTimeout(() => r("late"), Math.max(0, deadline - Date.now()) + 1000);
      });
      const v = await Promise.race([Promise.resolve().then(check), late]);
      if (v === "late") last = new Error("a check did not settle before the deadline");
      else if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    } finally {
      clearTimeout(timer);
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? ` (last error: ${last.message})` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** What `p` rejects with; throws when it fulfils instead (the test expected a failure). */
export async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a failure");
}
