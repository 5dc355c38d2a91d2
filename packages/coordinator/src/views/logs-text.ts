/** `rung logs` when there is nothing to print: say so, and how the attempt ended, rather than print nothing. */

interface Ending {
  readonly finished: {
    readonly status: string;
    readonly exitCode: number | null;
    readonly signal: string | null;
    readonly reason: string;
  } | null;
  readonly ended: { readonly status: string; readonly reason: string } | null;
}

/**
 *   trial digits/t0003 attempt 1 wrote nothing to its terminal (completed, exit 0)
 *   trial digits/t0003 ended (cancelled) without writing anything to its terminal
 *   trial digits/t0003 attempt 2 has written nothing to its terminal so far (still running; follow it with -f)
 */
export function noOutputText(study: string, trial: string, attempt: number | null, e: Ending): string {
  const who = `trial ${study}/${trial}${attempt === null ? "" : ` attempt ${attempt}`}`;
  if (e.finished) {
    const f = e.finished;
    const how = f.exitCode !== null ? `exit ${f.exitCode}` : (f.signal ?? f.reason);
    return `${who} wrote nothing to its terminal (${f.status}, ${how})`;
  }
  if (e.ended) return `trial ${study}/${trial} ended (${e.ended.status}) without writing anything to its terminal`;
  return `${who} has written nothing to its terminal so far (still running; follow it with -f)`;
}
