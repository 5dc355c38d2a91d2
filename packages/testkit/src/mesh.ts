import { type JetStreamClient, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats, ensureResources, MeshNames, type MeshResources, type ResourceOptions } from "@rung/protocol";
import { uniquePrefix } from "./nats.js";

/** One test's mesh on a test server: its own prefix, so tests sharing the server never see each other. */
export interface TestMesh {
  readonly url: string;
  readonly prefix: string;
  readonly names: MeshNames;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  /** What `ensureResources` made: the JetStream manager and the buckets. */
  readonly resources: MeshResources;
  /** `--nats URL --prefix PREFIX`, as every `rung` command takes them. */
  readonly flags: string[];
  /** Closes the connection. */
  close(): Promise<void>;
}

export interface OpenMeshOptions {
  /** Default: a new `uniquePrefix()`. */
  prefix?: string;
  /** The connection's name, shown by the leak check. Default "rung-test". */
  name?: string;
  /** Options for `ensureResources`. Default {}. */
  resources?: ResourceOptions;
}

/** Connects to `url` and makes the mesh's streams and buckets, as every agent and coordinator does at start. */
export async function openMesh(url: string, o: OpenMeshOptions = {}): Promise<TestMesh> {
  const prefix = o.prefix ?? uniquePrefix();
  const names = new MeshNames(prefix);
  const nc = await connectNats({ url, name: o.name ?? "rung-test" });
  let resources: MeshResources;
  try {
    resources = await ensureResources(nc, names, o.resources ?? {});
  } catch (err) {
    await nc.close();
    throw err;
  }
  return {
    url,
    prefix,
    names,
    nc,
    js: jetstream(nc),
    resources,
    flags: ["--nats", url, "--prefix", prefix],
    close: () => nc.close(),
  };
}
