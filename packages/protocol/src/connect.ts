import { accessSync, constants, readFileSync } from "node:fs";
import { fromSeed } from "@nats-io/nkeys";
import {
  type Authenticator,
  ConnectionError,
  connect,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
} from "@nats-io/transport-node";
import { NatsAuthError, NatsCredentialsError, NatsUnreachableError } from "./errors.js";
import { isAuthError, isConnectionRefused, isPermissionError, isTlsError } from "./nats-errors.js";
import { seedFromText } from "./order-signing.js";

export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

/** How every Rung process reaches NATS. Each field has a `RUNG_…` environment variable. */
export interface NatsOptions {
  /** Server URL(s), comma-separated. Default `RUNG_NATS_URL`, else nats://127.0.0.1:4222. */
  url?: string;
  /**
   * Credentials file. Default `RUNG_NATS_CREDS`. Either a NATS `.creds` file (a user JWT and its seed,
   * for servers in operator mode) or a file holding an nkey user seed, as `rung auth init` writes them.
   */
  creds?: string;
  /**
   * Prefix of this connection's reply inboxes. Default `RUNG_NATS_INBOX_PREFIX`, else, with an nkey
   * seed, `_INBOX_<public key>` (what `rung auth init` lets each user subscribe to, so no user can read
   * another's replies), else `_INBOX`.
   */
  inboxPrefix?: string;
  /** CA certificate to verify the server. Default `RUNG_TLS_CA`. */
  tlsCa?: string;
  /** Client certificate and key for mutual TLS. Default `RUNG_TLS_CERT` / `RUNG_TLS_KEY`. */
  tlsCert?: string;
  tlsKey?: string;
  /** Connection name shown by the server (`rung-agent gpu-box-1`). */
  name?: string;
  /** Keep reconnecting forever (long-running processes) or give up (one-shot commands). Default true. */
  reconnectForever?: boolean;
  /**
   * Skip the stack the client captures when each request starts (to show where a failed request was
   * made). Two stack captures per request were a quarter of an agent's CPU per reported result; errors
   * are recognised by their codes and classes (nats-errors.ts), never by a stack. Default false.
   */
  noAsyncTraces?: boolean;
  /** How long a first connection may take. Default 5 s. */
  timeoutMs?: number;
}

export function natsUrl(options: NatsOptions = {}): string {
  return options.url ?? process.env.RUNG_NATS_URL ?? DEFAULT_NATS_URL;
}

/** The inbox prefix of an nkey user: `rung auth init` allows that user to subscribe to it and no other. */
export function inboxPrefixFor(publicKey: string): string {
  return `_INBOX_${publicKey}`;
}

/** What a credentials file says about who we are. */
export interface NatsCredentials {
  authenticator: Authenticator;
  /** The nkey user's public key; null for a JWT `.creds` file. */
  publicKey: string | null;
}

/** Reads a credentials file: a NATS `.creds` file (JWT + seed) or an nkey user seed. */
export function readNatsCredentials(file: string): NatsCredentials {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new NatsCredentialsError(file, code === "ENOENT" ? "does not exist" : `cannot be read (${code ?? String(cause)})`, {
      cause,
    });
  }
  const text = new TextDecoder().decode(bytes);
  if (text.includes("BEGIN NATS USER JWT")) return { authenticator: credsAuthenticator(bytes), publicKey: null };
  const seed = seedFromText(text);
  if (!seed?.startsWith("SU")) throw new NatsCredentialsError(file, "holds neither a NATS user JWT nor an nkey user seed");
  const seedBytes = new TextEncoder().encode(seed);
  let publicKey: string;
  try {
    publicKey = fromSeed(seedBytes).getPublicKey();
  } catch (cause) {
    throw new NatsCredentialsError(file, "holds a damaged nkey seed", { cause });
  }
  return { authenticator: nkeyAuthenticator(seedBytes), publicKey };
}

/** The reply inbox prefix each connection was made with (its user may subscribe there and nowhere else). */
const inboxPrefixes = new WeakMap<NatsConnection, string>();

/** The reply inbox prefix of a connection made by {@link connectNats}; undefined for the client's default. */
export function inboxPrefixOf(nc: NatsConnection): string | undefined {
  return inboxPrefixes.get(nc);
}

export async function connectNats(options: NatsOptions = {}): Promise<NatsConnection> {
  const url = natsUrl(options);
  const credsFile = options.creds ?? process.env.RUNG_NATS_CREDS;
  const ca = options.tlsCa ?? process.env.RUNG_TLS_CA;
  const cert = options.tlsCert ?? process.env.RUNG_TLS_CERT;
  const key = options.tlsKey ?? process.env.RUNG_TLS_KEY;
  const tls = ca || cert ? { caFile: ca, certFile: cert, keyFile: key } : undefined;
  const creds = credsFile ? readNatsCredentials(credsFile) : undefined;
  const inboxPrefix =
    options.inboxPrefix ?? process.env.RUNG_NATS_INBOX_PREFIX ?? (creds?.publicKey ? inboxPrefixFor(creds.publicKey) : undefined);
  try {
    const nc = await connect({
      servers: url.split(",").map((s) => s.trim()),
      name: options.name,
      authenticator: creds?.authenticator,
      inboxPrefix,
      tls,
      timeout: options.timeoutMs ?? 5000,
      maxReconnectAttempts: options.reconnectForever === false ? 3 : -1,
      reconnectTimeWait: 500,
      waitOnFirstConnect: false,
      ...(options.noAsyncTraces ? { noAsyncTraces: true } : {}),
    });
    if (inboxPrefix) inboxPrefixes.set(nc, inboxPrefix);
    return nc;
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    if (isAuthError(cause) || isPermissionError(cause) || isTlsError(cause) || tlsFileUnreadable(cause, [ca, cert, key]))
      throw new NatsAuthError(url, why, { cause });
    throw new NatsUnreachableError(url, { cause });
  }
}

/**
 * The client reads the TLS files only once the server asks for TLS, and reports one it cannot read as a
 * ConnectionError without a code ("<file> doesn't exist"); so look at the files themselves. A refused
 * dial is no file's fault (the client never got as far as reading them).
 */
function tlsFileUnreadable(cause: unknown, files: (string | undefined)[]): boolean {
  if (!(cause instanceof ConnectionError) || isConnectionRefused(cause)) return false;
  return files.some((f) => {
    if (!f) return false;
    try {
      accessSync(f, constants.R_OK);
      return false;
    } catch {
      return true;
    }
  });
}
