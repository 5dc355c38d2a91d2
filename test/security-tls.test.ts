import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectNats, ensureResources, MeshNames, NatsAuthError, NatsUnreachableError } from "@rung/protocol";
import { REPO, rung, waitFor } from "@rung/testkit";
import { meshTest } from "@rung/testkit/vitest";
import { describe, expect } from "vitest";

/**
 * TLS with a CA and certificates made by openssl for this run: the server proves itself to clients
 * with --tls-ca and asks each client for a certificate of its own (mutual TLS, `verify: true`).
 */

interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate from a CA the server does not know. */
  strangerCert: string;
  strangerKey: string;
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

function makePki(): Pki {
  const dir = mkdtempSync(join(tmpdir(), "rung-pki-"));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const ca = (name: string) =>
    openssl(
      dir,
      "req",
      "-x509",
      ...ec,
      "-keyout",
      `${name}-key.pem`,
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
    );
  const leaf = (name: string, issuer: string, ext: string) => {
    openssl(dir, "req", ...ec, "-keyout", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(
      dir,
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${issuer}.pem`,
      "-CAkey",
      `${issuer}-key.pem`,
      "-CAcreateserial",
      "-out",
      `${name}.pem`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    );
  };
  ca("ca");
  ca("other-ca");
  leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  leaf("client", "ca", "extendedKeyUsage=clientAuth\n");
  leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
  const f = (n: string) => join(dir, n);
  return {
    dir,
    ca: f("ca.pem"),
    serverCert: f("server.pem"),
    serverKey: f("server-key.pem"),
    clientCert: f("client.pem"),
    clientKey: f("client-key.pem"),
    strangerCert: f("stranger.pem"),
    strangerKey: f("stranger-key.pem"),
  };
}

/** The file's server asks for TLS with this run's certificates. */
const it = meshTest
  .extend("pki", { scope: "file" }, () => makePki())
  .extend("natsOptions", { scope: "file" }, ({ pki }) => ({
    extraConfig: `tls { cert_file: ${JSON.stringify(pki.serverCert)}, key_file: ${JSON.stringify(pki.serverKey)}, ca_file: ${JSON.stringify(pki.ca)}, verify: true, timeout: 2 }`,
  }))
  .extend("leakGraceMs", 5000);

const quick = { reconnectForever: false, timeoutMs: 1500 } as const;

describe("TLS", () => {
  it("connects with the CA and a client certificate, and JetStream works over it", async ({ nats, pki }) => {
    const nc = await connectNats({ url: nats.url, tlsCa: pki.ca, tlsCert: pki.clientCert, tlsKey: pki.clientKey, ...quick });
    try {
      expect(nc.info?.tls_required).toBe(true);
      const res = await ensureResources(nc, new MeshNames("tls"));
      expect((await res.jsm.streams.info("TLS_WORK")).config.name).toBe("TLS_WORK");
    } finally {
      await nc.close();
    }
  });

  it("fails without the CA, without a client certificate, and with a certificate from another CA", async ({ nats, pki }) => {
    await expect(connectNats({ url: nats.url, tlsCert: pki.clientCert, tlsKey: pki.clientKey, ...quick })).rejects.toThrow(
      NatsAuthError,
    );
    await expect(connectNats({ url: nats.url, ...quick })).rejects.toThrow(/refused the connection \(.*certificate/);
    await expect(connectNats({ url: nats.url, tlsCa: pki.ca, ...quick })).rejects.toThrow(NatsUnreachableError);
    await expect(
      connectNats({ url: nats.url, tlsCa: pki.ca, tlsCert: pki.strangerCert, tlsKey: pki.strangerKey, ...quick }),
    ).rejects.toThrow();
    expect(nats.running).toBe(true);
  });

  it("rung server --config deploy/nats/single.conf: TLS and generated users, reached by rung agent and rung agents", async ({
    pki,
    procs,
  }) => {
    // The deploy config as shipped, with its /etc and /var paths moved into a temp root and ports picked by the server.
    const root = mkdtempSync(join(tmpdir(), "rung-single-"));
    const etc = join(root, "etc", "rung");
    mkdirSync(join(etc, "nats"), { recursive: true });
    mkdirSync(join(etc, "tls"), { recursive: true });
    for (const [from, to] of [
      [pki.ca, "ca.pem"],
      [pki.serverCert, "server.pem"],
      [pki.serverKey, "server-key.pem"],
    ] as const)
      writeFileSync(join(etc, "tls", to), readFileSync(from));
    const conf = readFileSync(join(REPO, "deploy", "nats", "single.conf"), "utf8")
      .replaceAll("/etc/rung", etc)
      .replaceAll("/var/lib/rung", join(root, "var", "lib", "rung"))
      .replace("0.0.0.0:4222", "127.0.0.1:-1")
      .replace("127.0.0.1:8222", "127.0.0.1:-1");
    writeFileSync(join(etc, "nats", "single.conf"), conf);
    const init = rung(["auth", "init", "--dir", join(etc, "nats"), "--prefix", "prod", "--agents", "box1"]);
    expect(await init.exited).toBe(0);
    const trust = readFileSync(join(etc, "nats", "signing.pub"), "utf8").trim();
    expect(init.out()).toContain(`--trust ${trust}`);

    const server = rung(["server", "--config", join(etc, "nats", "single.conf"), "--store", join(root, "store")]);
    procs.push(server);
    const url = await waitFor("the server to be ready", () => /ready at (\S+)/.exec(server.out())?.[1], 15_000);
    const tls = ["--tls-ca", pki.ca, "--tls-cert", pki.clientCert, "--tls-key", pki.clientKey];
    const common = ["--nats", url, "--prefix", "prod", ...tls];
    const agent = rung([
      "agent",
      ...common,
      "--creds",
      join(etc, "nats", "agent-box1.creds"),
      "--trust",
      trust,
      "--name",
      "box1",
      "--fake-gpus",
      "2",
      "--state-dir",
      join(root, "agent"),
    ]);
    procs.push(agent);
    const seen = await waitFor(
      "the agent's advert, read by a viewer over TLS",
      async () => {
        const p = rung(["agents", "--json", ...common, "--creds", join(etc, "nats", "viewer.creds")]);
        procs.push(p);
        await p.exited;
        const adverts = JSON.parse(p.out() || "[]") as { agent: string; gpus: unknown[] }[];
        return adverts.find((a) => a.agent === "box1");
      },
      20_000,
      300,
    );
    expect(seen.gpus).toHaveLength(2);
    // Without the client certificate the same viewer is turned away.
    const bare = rung([
      "agents",
      "--nats",
      url,
      "--prefix",
      "prod",
      "--tls-ca",
      pki.ca,
      "--creds",
      join(etc, "nats", "viewer.creds"),
    ]);
    procs.push(bare);
    expect(await bare.exited).toBe(1);
  });
});
