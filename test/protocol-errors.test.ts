import { createServer, type Server } from "node:net";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  AckedPublisher,
  connectNats,
  isAuthError,
  isConnectionClosed,
  isConnectionRefused,
  isConsumerNotFound,
  isJetStreamNotEnabled,
  isNoResponders,
  isNotFound,
  isPermissionError,
  isStreamNotFound,
  isTimeout,
  isTlsError,
  isWrongLastSequence,
  jetStreamApiCode,
  NatsAuthError,
  NatsUnreachableError,
} from "@rung/protocol";
import { checkLeaks, failure, freePort, startNats, type TestNats, uniquePrefix } from "@rung/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

/**
 * Each predicate of protocol's nats-errors.ts against the error a real nats-server and the real client
 * produce: it says yes to its own case and every other predicate says no.
 */

const predicates = {
  isNotFound,
  isStreamNotFound,
  isConsumerNotFound,
  isWrongLastSequence,
  isJetStreamNotEnabled,
  isTimeout,
  isNoResponders,
  isPermissionError,
  isAuthError,
  isConnectionClosed,
  isConnectionRefused,
  isTlsError,
};
type Predicate = keyof typeof predicates;

/** Asserts that exactly the `expected` predicates hold for `err`. */
function expectOnly(err: unknown, ...expected: Predicate[]): void {
  const holding = (Object.keys(predicates) as Predicate[]).filter((p) => predicates[p](err));
  expect(holding, `${(err as Error)?.name}: ${(err as Error)?.message}`).toEqual(expected);
}

let nats: TestNats;
const conns: NatsConnection[] = [];
beforeAll(async () => {
  nats = await startNats({
    extraConfig: `authorization { users = [
      { user: full, password: full },
      { user: limited, password: limited, permissions: { publish: { deny: ["denied.>"] }, subscribe: { deny: ["hidden.>"] } } }
    ] }`,
  });
});
afterAll(async () => {
  await nats?.destroy();
});
afterEach(async () => {
  await Promise.all(conns.splice(0).map((c) => c.close()));
  await checkLeaks();
});

async function as(user: "full" | "limited"): Promise<NatsConnection> {
  const nc = await connect({ servers: nats.url, user, pass: user, name: `errors ${user}` });
  conns.push(nc);
  return nc;
}

const quick = { maxReconnectAttempts: 1, reconnectTimeWait: 100, timeout: 2000 } as const;

describe("NATS error predicates against a real nats-server", () => {
  it("isNotFound / isStreamNotFound: info of a missing stream, a consumer of a missing stream", async () => {
    const jsm = await jetstreamManager(await as("full"));
    const missing = await failure(jsm.streams.info(`${uniquePrefix().toUpperCase()}_NONE`));
    expectOnly(missing, "isNotFound", "isStreamNotFound");
    expect(jetStreamApiCode(missing)).toBe(10059);
    expectOnly(new Error("could not set up the mesh", { cause: missing }), "isNotFound", "isStreamNotFound");
    expectOnly(await failure(jsm.consumers.info(`${uniquePrefix().toUpperCase()}_NONE`, "c")), "isNotFound", "isStreamNotFound");
    expectOnly(await failure(jsm.streams.delete(`${uniquePrefix().toUpperCase()}_NONE`)), "isNotFound", "isStreamNotFound");
  });

  it("isNotFound / isConsumerNotFound: info of a missing consumer of a stream that exists", async () => {
    const jsm = await jetstreamManager(await as("full"));
    const p = uniquePrefix();
    await jsm.streams.add({ name: `${p.toUpperCase()}_S`, subjects: [`${p}.s.>`] });
    const err = await failure(jsm.consumers.info(`${p.toUpperCase()}_S`, "nobody"));
    expectOnly(err, "isNotFound", "isConsumerNotFound");
    expect(jetStreamApiCode(err)).toBe(10014);
    await jsm.streams.delete(`${p.toUpperCase()}_S`);
  });

  it("isWrongLastSequence: kv.update with a stale revision, kv.create on an existing key, a stale delete, an expected sequence", async () => {
    const nc = await as("full");
    const bucket = `${uniquePrefix()}-cas`;
    const kv = await new Kvm(nc).create(bucket, { history: 1 });
    const rev = await kv.create("lease", "one");
    await kv.update("lease", "two", rev);
    expectOnly(await failure(kv.update("lease", "three", rev)), "isWrongLastSequence");
    expectOnly(await failure(kv.create("lease", "again")), "isWrongLastSequence");
    expectOnly(await failure(kv.delete("lease", { previousSeq: rev })), "isWrongLastSequence");
    expect(jetStreamApiCode(await failure(kv.update("lease", "four", rev)))).toBe(10071);
    const js = jetstream(nc);
    expectOnly(
      await failure(js.publish(`$KV.${bucket}.lease`, "x", { expect: { lastSubjectSequence: rev } })),
      "isWrongLastSequence",
    );
    await (await jetstreamManager(nc)).streams.delete(`KV_${bucket}`);
  });

  it("isNoResponders: a request nobody subscribes to; with isJetStreamNotEnabled, a publish no stream takes", async () => {
    const nc = await as("full");
    expectOnly(await failure(nc.request(`${uniquePrefix()}.nobody`, "x", { timeout: 2000 })), "isNoResponders");
    const js = jetstream(nc);
    expectOnly(await failure(js.publish(`${uniquePrefix()}.nostream`, "x")), "isJetStreamNotEnabled", "isNoResponders");
    // The agent's publisher (acknowledgements on one subscription) fails the client's way.
    const acked = new AckedPublisher(nc);
    expectOnly(
      await failure(acked.publish(`${uniquePrefix()}.nostream`, new Uint8Array(1), "id")),
      "isJetStreamNotEnabled",
      "isNoResponders",
    );
  });

  it("isTimeout: a request and a JetStream publish that nobody answers", async () => {
    const nc = await as("full");
    const p = uniquePrefix();
    nc.subscribe(`${p}.silent.>`);
    expectOnly(await failure(nc.request(`${p}.silent.req`, "x", { timeout: 200 })), "isTimeout");
    expectOnly(await failure(jetstream(nc).publish(`${p}.silent.pub`, "x", { timeout: 200 })), "isTimeout");
    expectOnly(await failure(new AckedPublisher(nc).publish(`${p}.silent.acked`, new Uint8Array(1), "id", 200)), "isTimeout");
  });

  it("isPermissionError: a request and a JetStream publish to a denied subject, a denied subscription", async () => {
    const nc = await as("limited");
    const p = uniquePrefix();
    expectOnly(await failure(nc.request(`denied.${p}`, "x", { timeout: 2000 })), "isPermissionError");
    expectOnly(await failure(jetstream(nc).publish(`denied.${p}.js`, "x")), "isPermissionError");
    // The agent's publisher: refused at once (the server says so on the connection, with no reply), not
    // after its 5 s wait; and a reply subscription the server refuses fails what waits on it.
    const acked = new AckedPublisher(nc);
    expectOnly(await failure(acked.publish(`denied.${p}.acked`, new Uint8Array(1), "id", 5000)), "isPermissionError");
    expect(acked.waiting).toBe(0);
    const deaf = new AckedPublisher(nc, `hidden.${p}`);
    expectOnly(await failure(deaf.publish(`${p}.anything`, new Uint8Array(1), "id", 5000)), "isPermissionError");
    acked.close();
    deaf.close();
    const sub = nc.subscribe(`hidden.${p}`);
    expectOnly(
      await failure(
        (async () => {
          for await (const _ of sub) break;
        })(),
      ),
      "isPermissionError",
    );
  });

  it("isAuthError: no credentials, a wrong password", async () => {
    expectOnly(await failure(connect({ servers: nats.url, ...quick })), "isAuthError");
    expectOnly(await failure(connect({ servers: nats.url, user: "full", pass: "wrong", ...quick })), "isAuthError");
  });

  it("isConnectionRefused: nothing listening at the address", async () => {
    const port = await freePort();
    expectOnly(await failure(connect({ servers: `nats://127.0.0.1:${port}`, ...quick })), "isConnectionRefused");
  });

  it("isConnectionClosed: a request and a JetStream publish on a closed connection", async () => {
    const nc = await connect({ servers: nats.url, user: "full", pass: "full" });
    await nc.close();
    expectOnly(await failure(nc.request("x", "y")), "isConnectionClosed");
    expectOnly(await failure(jetstream(nc).publish("x", "y")), "isConnectionClosed");
  });

  it("isTlsError: TLS asked of a server without it, and a TLS handshake with a plain socket", async () => {
    const creds = { user: "full", pass: "full" };
    expectOnly(await failure(connect({ servers: nats.url, ...creds, tls: {}, ...quick })), "isTlsError");
    expectOnly(await failure(connect({ servers: nats.url, ...creds, tls: { handshakeFirst: true }, ...quick })), "isTlsError");
  });

  it("read codes and classes, not text", () => {
    expectOnly(new Error("stream not found: wrong last sequence, timeout, Authorization Violation, tls"));
    for (const x of [undefined, null, "timeout", 10059, { code: 10059 }]) expectOnly(x);
  });
});

describe("connectNats sorts connection failures with the predicates", () => {
  const quickRung = { reconnectForever: false, timeoutMs: 2000 } as const;

  it("credentials the server refuses, and TLS it does not offer, are NatsAuthError", async () => {
    await expect(connectNats({ url: nats.url, ...quickRung })).rejects.toThrow(
      /refused the connection \(Authorization Violation\)/,
    );
    await expect(connectNats({ url: nats.url, tlsCa: "/dev/null", ...quickRung })).rejects.toThrow(NatsAuthError);
  });

  it("nothing listening is NatsUnreachableError", async () => {
    const port = await freePort();
    await expect(connectNats({ url: `nats://127.0.0.1:${port}`, ...quickRung })).rejects.toThrow(NatsUnreachableError);
  });

  it("a TLS file it cannot read is NatsAuthError, whatever its path", async () => {
    // A socket that says what a TLS-only nats-server says first, so that the client goes on to read its
    // TLS files (it reads them only then); the one real nats-server of this file has no TLS.
    const banner = { server_id: "fake", version: "2.9.10", proto: 1, max_payload: 1048576, tls_required: true };
    const server: Server = createServer((s) => {
      s.on("error", () => {});
      s.end(`INFO ${JSON.stringify(banner)}\r\n`);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const addr = server.address();
    const url = `nats://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
    try {
      const err = await failure(connectNats({ url, tlsCa: "/nonexistent/home/me/ca.pem", ...quickRung }));
      expect(err).toBeInstanceOf(NatsAuthError);
      expect((err as Error).message).toMatch(/\/nonexistent\/home\/me\/ca\.pem/);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
