import type { NatsConnection } from "@nats-io/transport-node";
import { connectNats, MeshNames } from "@rung/protocol";
import { type NatsFlags, natsOptionsFrom } from "./nats-options.js";

/** Connects for a one-shot command, runs `fn`, and always closes the connection. */
export async function withMesh<T>(
  flags: NatsFlags,
  name: string,
  fn: (nc: NatsConnection, names: MeshNames) => Promise<T>,
): Promise<T> {
  const nc = await connectNats({ ...natsOptionsFrom(flags, name), reconnectForever: false });
  try {
    return await fn(nc, new MeshNames(flags.prefix));
  } finally {
    await nc.close();
  }
}
