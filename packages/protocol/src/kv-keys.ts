import type { JetStreamManager } from "@nats-io/jetstream";
import { isNotFound } from "./nats-errors.js";

/**
 * The keys of a KV bucket (those matching `filter`, a key pattern such as `study1.>`), read from the
 * bucket's stream subjects. Not `kv.keys()`: that follows a consumer until nothing is pending, which on
 * a bucket rewritten every few seconds (adverts, leases) can go on for ever. Stream info answers at
 * once. Keys deleted or purged may still be listed (their marker is the last message): read each with
 * `kv.get` and skip what is not a PUT. A bucket that does not exist has no keys.
 */
export async function bucketKeys(jsm: JetStreamManager, bucket: string, filter = ">"): Promise<string[]> {
  const prefix = `$KV.${bucket}.`;
  try {
    const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}${filter}` });
    return Object.keys(info.state.subjects ?? {})
      .map((s) => s.slice(prefix.length))
      .sort();
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}
