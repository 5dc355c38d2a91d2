import type { NatsOptions } from "@rung/protocol";
import type { Command } from "commander";

/** Adds the connection flags every command that talks to NATS shares. */
export function withNatsOptions(cmd: Command): Command {
  return cmd
    .option("--nats <url>", "NATS server URL(s), comma-separated (env RUNG_NATS_URL)", process.env.RUNG_NATS_URL)
    .option("--creds <file>", "NATS credentials file (env RUNG_NATS_CREDS)", process.env.RUNG_NATS_CREDS)
    .option("--tls-ca <file>", "CA certificate that signed the server's (env RUNG_TLS_CA)", process.env.RUNG_TLS_CA)
    .option("--tls-cert <file>", "client certificate for mutual TLS (env RUNG_TLS_CERT)", process.env.RUNG_TLS_CERT)
    .option("--tls-key <file>", "client key for mutual TLS (env RUNG_TLS_KEY)", process.env.RUNG_TLS_KEY)
    .option(
      "--prefix <name>",
      "mesh prefix of subjects, streams and buckets (env RUNG_PREFIX)",
      process.env.RUNG_PREFIX ?? "rung",
    );
}

export interface NatsFlags {
  nats?: string;
  creds?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  prefix: string;
}

export function natsOptionsFrom(flags: NatsFlags, name: string): NatsOptions {
  return { url: flags.nats, creds: flags.creds, tlsCa: flags.tlsCa, tlsCert: flags.tlsCert, tlsKey: flags.tlsKey, name };
}
