import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { jserrors } from "@nats-io/jetstream/internal";
import {
  AuthorizationError,
  ClosedConnectionError,
  ConnectionError,
  DrainingConnectionError,
  InvalidArgumentError,
  NoRespondersError,
  PermissionViolationError,
  TimeoutError,
  UserAuthenticationExpiredError,
} from "@nats-io/transport-node";

/**
 * What a NATS failure means, read from the classes and codes the @nats-io v3 client exports — never
 * from error text, which the client and the server reword between versions. Each predicate looks
 * through the `cause` chain, because the client wraps: a request refused for permissions is a
 * RequestError caused by a PermissionViolationError, a publish to a subject no stream takes is a
 * JetStreamNotEnabled caused by a RequestError caused by a NoRespondersError, a refused dial is a
 * ConnectionError caused by the socket's ECONNREFUSED.
 *
 * What the JetStream API refuses is a JetStreamApiError whose `code` is the server's `err_code`
 * ({@link JetStreamApiCodes}; `status` is the HTTP-like 400/404/503). Checked against nats-server 2.x
 * in test/protocol-errors.test.ts.
 */

/** Server error codes the client does not name (nats-server's errors.json). */
const JS_NOT_ENABLED = 10076;

/** `err` and its causes, outermost first (bounded: a cause chain can be circular). */
function chain(err: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e = err; e !== undefined && e !== null && out.length < 8 && !out.includes(e); ) {
    out.push(e);
    e = e instanceof Error ? e.cause : undefined;
  }
  return out;
}

const some = (err: unknown, test: (e: unknown) => boolean): boolean => chain(err).some(test);

/** The JetStream API's `err_code` of the first JetStreamApiError in the chain, if any. */
export function jetStreamApiCode(err: unknown): number | undefined {
  const api = chain(err).find((e): e is JetStreamApiError => e instanceof JetStreamApiError);
  return api?.code;
}

const hasCode = (err: unknown, ...codes: number[]): boolean => {
  const code = jetStreamApiCode(err);
  return code !== undefined && codes.includes(code);
};

/** No such stream (10059). */
export function isStreamNotFound(err: unknown): boolean {
  return hasCode(err, JetStreamApiCodes.StreamNotFound);
}

/** No such consumer (10014). A missing stream is {@link isStreamNotFound}, not this. */
export function isConsumerNotFound(err: unknown): boolean {
  return hasCode(err, JetStreamApiCodes.ConsumerNotFound);
}

/**
 * No such stream, consumer or stored message (10059, 10014, 10037). A missing KV key is no error:
 * `kv.get` resolves null.
 */
export function isNotFound(err: unknown): boolean {
  return hasCode(err, JetStreamApiCodes.StreamNotFound, JetStreamApiCodes.ConsumerNotFound, JetStreamApiCodes.NoMessageFound);
}

/**
 * A compare-and-set lost (10071, or 10164 when the server cannot tell the last sequence): a publish
 * with an expected last (subject) sequence, `kv.update` with a stale revision, `kv.delete` with a stale
 * `previousSeq`, and `kv.create` on a key that exists — v3 reports that as this code too, there is no
 * "key exists" error any more.
 */
export function isWrongLastSequence(err: unknown): boolean {
  return hasCode(err, JetStreamApiCodes.StreamWrongLastSequence, JetStreamApiCodes.StreamWrongLastSequenceUnknown);
}

/**
 * JetStream did not answer as JetStream: not enabled for the account (10039) or the server (10076),
 * or nothing answered the API or a publish (the client's JetStreamNotEnabled) — also what a publish to
 * a subject no stream takes and a cluster without a meta leader look like.
 */
export function isJetStreamNotEnabled(err: unknown): boolean {
  return (
    some(err, (e) => e instanceof jserrors.JetStreamNotEnabled) ||
    hasCode(err, JetStreamApiCodes.JetStreamNotEnabledForAccount, JS_NOT_ENABLED)
  );
}

/** A request, a JetStream API call or a publish waiting for its ack ran out of time. */
export function isTimeout(err: unknown): boolean {
  return some(err, (e) => e instanceof TimeoutError);
}

/** Nobody subscribes to the subject of a request (a JetStream publish to no stream: also {@link isJetStreamNotEnabled}). */
export function isNoResponders(err: unknown): boolean {
  return some(err, (e) => e instanceof NoRespondersError);
}

/** The server refused a publish or subscription this user has no permission for. */
export function isPermissionError(err: unknown): boolean {
  return some(err, (e) => e instanceof PermissionViolationError);
}

/** The server refused who we said we were: no or wrong credentials, or expired ones. */
export function isAuthError(err: unknown): boolean {
  return some(err, (e) => e instanceof AuthorizationError || e instanceof UserAuthenticationExpiredError);
}

/** The connection was closed (or is draining) on our side: nothing more will go through it. */
export function isConnectionClosed(err: unknown): boolean {
  return some(err, (e) => e instanceof ClosedConnectionError || e instanceof DrainingConnectionError);
}

/** Nothing listens at the address (the socket's ECONNREFUSED). */
export function isConnectionRefused(err: unknown): boolean {
  return some(err, (e) => errnoCode(e) === "ECONNREFUSED");
}

/** OpenSSL's certificate verification codes, as Node sets them on `err.code` (Node's tls docs). */
const X509_CODES = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_CRL",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECRYPT_CRL_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CRL_SIGNATURE_FAILURE",
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "CRL_NOT_YET_VALID",
  "CRL_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "ERROR_IN_CRL_LAST_UPDATE_FIELD",
  "ERROR_IN_CRL_NEXT_UPDATE_FIELD",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "CERT_CHAIN_TOO_LONG",
  "CERT_REVOKED",
  "INVALID_CA",
  "PATH_LENGTH_EXCEEDED",
  "INVALID_PURPOSE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "HOSTNAME_MISMATCH",
]);

/**
 * The TLS handshake failed, or TLS was asked of a server without it: a certificate that does not
 * verify (OpenSSL's codes), Node's `ERR_TLS_*` (a host name not in the certificate) and OpenSSL's
 * `ERR_SSL_*` (a TLS client talking to a plain socket, an alert from the server).
 *
 * Falls back to text in one place: the client (v3.4) reports "TLS asked of a server without it" as a
 * plain ConnectionError / InvalidArgumentError, which carry no code, so those two exact messages of its
 * own are matched (nats-core options.js `checkOptions`, transport-node node_transport.js).
 */
export function isTlsError(err: unknown): boolean {
  return some(err, (e) => {
    const code = errnoCode(e);
    if (code !== undefined && (X509_CODES.has(code) || code.startsWith("ERR_TLS_") || code.startsWith("ERR_SSL_"))) return true;
    if (e instanceof ConnectionError) return e.message === "server does not support 'tls'";
    if (e instanceof InvalidArgumentError) return e.message === "'tls' is not available on this server";
    return false;
  });
}

/** The string `code` of a Node system or TLS error (not a JetStreamApiError's number). */
function errnoCode(e: unknown): string | undefined {
  const code = e instanceof Error ? (e as NodeJS.ErrnoException).code : undefined;
  return typeof code === "string" ? code : undefined;
}
