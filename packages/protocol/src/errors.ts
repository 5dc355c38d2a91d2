/** Errors of the protocol package. Each sets `name`, carries typed fields and reads as one sentence. */

export class InvalidTokenError extends Error {
  override name = "InvalidTokenError";
  constructor(
    readonly what: string,
    readonly value: string,
    readonly problem: string,
  ) {
    super(`${what} ${JSON.stringify(value)} ${problem}; use letters, digits, "-" and "_" only (at most 64 characters)`);
  }
}

export class NatsUnreachableError extends Error {
  override name = "NatsUnreachableError";
  constructor(
    readonly url: string,
    options?: { cause?: unknown },
  ) {
    super(`cannot reach NATS at ${url} — start one with "rung server" or pass --nats URL (or set RUNG_NATS_URL)`, options);
  }
}

export class NatsServerMissingError extends Error {
  override name = "NatsServerMissingError";
  constructor(readonly binary: string) {
    super(
      `nats-server was not found (looked for ${JSON.stringify(binary)}) — install it with "sudo apt-get install -y nats-server" or run ./setup, or pass its path in RUNG_NATS_SERVER`,
    );
  }
}

export class ResourceSetupError extends Error {
  override name = "ResourceSetupError";
  constructor(
    readonly resource: string,
    options?: { cause?: unknown },
  ) {
    const why = options?.cause instanceof Error ? `: ${options.cause.message}` : "";
    super(
      `could not create or update ${resource} in JetStream${why} — is JetStream enabled on the server (nats-server -js)?`,
      options,
    );
  }
}

export class DurationError extends Error {
  override name = "DurationError";
  constructor(
    readonly what: string,
    readonly value: unknown,
  ) {
    super(`${what}: ${JSON.stringify(value)} is not a duration; write it like "500ms", "30s", "15m" or "2h"`);
  }
}
