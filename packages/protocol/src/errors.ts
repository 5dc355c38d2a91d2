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

/** A signing key file (`--signing-key`) that cannot be used. */
export class SigningKeyError extends Error {
  override name = "SigningKeyError";
  constructor(
    readonly file: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`signing key ${file} ${problem} — create one with "rung auth init", or pass --signing-key FILE`, options);
  }
}

/** A NATS credentials file (`--creds`) that cannot be used. */
export class NatsCredentialsError extends Error {
  override name = "NatsCredentialsError";
  constructor(
    readonly file: string,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(
      `credentials file ${file} ${problem} — pass a file written by "rung auth init" (or a NATS .creds file) with --creds`,
      options,
    );
  }
}

/** The server refused who we said we were: wrong or missing credentials, or a certificate it does not accept. */
export class NatsAuthError extends Error {
  override name = "NatsAuthError";
  constructor(
    readonly url: string,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(
      `NATS at ${url} refused the connection (${detail}) — check --creds and the --tls-* files (see docs/deploy.md)`,
      options,
    );
  }
}
