/**
 * The one place where signal handlers are installed. The first SIGINT/SIGTERM asks for a graceful
 * shutdown; a second one forces it (exit 130 at once). Long-running commands register one callback.
 */
export interface ShutdownHandle {
  /** Resolves with the signal name when the first signal arrives. */
  readonly requested: Promise<NodeJS.Signals>;
  dispose(): void;
}

export function onShutdown(graceful: (signal: NodeJS.Signals) => void, force?: () => void): ShutdownHandle {
  let count = 0;
  let resolve!: (s: NodeJS.Signals) => void;
  const requested = new Promise<NodeJS.Signals>((r) => {
    resolve = r;
  });
  const handler = (signal: NodeJS.Signals) => {
    count += 1;
    if (count === 1) {
      process.stderr.write(`\n${signal}: shutting down gracefully — press Ctrl-C again to force\n`);
      resolve(signal);
      graceful(signal);
    } else {
      process.stderr.write(`${signal} again: forcing shutdown\n`);
      force?.();
      process.exit(130);
    }
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return {
    requested,
    dispose() {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
    },
  };
}
