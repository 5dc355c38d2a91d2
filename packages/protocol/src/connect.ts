import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { NatsUnreachableError } from "./errors.js";

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

/** How every Rung process reaches NATS. Each field has a `RUNG_…` environment variable. */
export interface NatsOptions {
  /** Server URL(s), comma-separated. Default `RUNG_NATS_URL`, else nats://127.0.0.1:4222. */
  url?: string;
  /** NATS credentials file (`rung auth init` writes them). Default `RUNG_NATS_CREDS`. */
  creds?: string;
  /** CA certificate to verify the server. Default `RUNG_TLS_CA`. */
  tlsCa?: string;
  /** Client certificate and key for mutual TLS. Default `RUNG_TLS_CERT` / `RUNG_TLS_KEY`. */
  tlsCert?: string;
  tlsKey?: string;
  /** Connection name shown by the server (`rung-agent gpu-box-1`). */
  name?: string;
  /** Keep reconnecting forever (long-running processes) or give up (one-shot commands). Default true. */
  reconnectForever?: boolean;
  /** How long a first connection may take. Default 5 s. */
  timeoutMs?: number;
}

export function natsUrl(options: NatsOptions = {}): string {
  return options.url ?? process.env.RUNG_NATS_URL ?? DEFAULT_NATS_URL;
}

export async function connectNats(options: NatsOptions = {}): Promise<NatsConnection> {
  const url = natsUrl(options);
  const creds = options.creds ?? process.env.RUNG_NATS_CREDS;
  const ca = options.tlsCa ?? process.env.RUNG_TLS_CA;
  const cert = options.tlsCert ?? process.env.RUNG_TLS_CERT;
  const key = options.tlsKey ?? process.env.RUNG_TLS_KEY;
  const tls = ca || cert ? { caFile: ca, certFile: cert, keyFile: key } : undefined;
  try {
    return await connect({
      servers: url.split(",").map((s) => s.trim()),
      name: options.name,
      authenticator: creds ? credsAuthenticator(readFileSync(creds)) : undefined,
      tls,
      timeout: options.timeoutMs ?? 5000,
      maxReconnectAttempts: options.reconnectForever === false ? 3 : -1,
      reconnectTimeWait: 500,
      waitOnFirstConnect: false,
    });
  } catch (cause) {
    throw new NatsUnreachableError(url, { cause });
  }
}
