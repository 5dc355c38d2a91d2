import { jetstreamManager } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type AgentAdvert,
  AgentAdvertSchema,
  type BadMessageCounter,
  bucketKeys,
  decode,
  durationText,
  encode,
  type Logger,
  type MeshNames,
} from "@rung/protocol";

/**
 * The agent's advert in the agents bucket (key = agent name): who it is, its GPUs with their current
 * use, free slots, labels and price. Refreshed every few seconds; the bucket's TTL (15 s) removes the
 * advert of an agent that died without saying goodbye, and a clean exit deletes it at once.
 */

export interface AdvertiserOptions {
  kv: KV;
  agent: string;
  intervalMs: number;
  build(): AgentAdvert;
  isConnected(): boolean;
  log: Logger;
  /** Called after a refresh failed (the agents bucket may be gone: the agent creates it again). */
  onFailure?(err: Error): void;
}

export class Advertiser {
  readonly #o: AdvertiserOptions;
  #timer: NodeJS.Timeout | undefined;
  #putting: Promise<void> | undefined;
  /** A refresh was asked for while a put was in flight: put again after it. */
  #again = false;
  #failures = 0;
  #closed = false;

  constructor(options: AdvertiserOptions) {
    this.#o = options;
  }

  /** Puts the first advert (its failure is the caller's: an agent nobody can see is no use) and starts refreshing. */
  async start(): Promise<void> {
    await this.#o.kv.put(this.#o.agent, encode(this.#o.build()));
    this.#timer = setInterval(() => void this.refresh(), this.#o.intervalMs);
  }

  /**
   * Puts the advert now (state changed, reconnected). At most one put in flight; a refresh asked for
   * while one is in flight puts again after it, with the state as it is then — the one in flight was
   * built before the change. (Dropping it left the advert showing a GPU free that an attempt had just
   * taken, for up to a refresh interval: the coordinator queued an order no agent could take until a
   * trial ended.)
   */
  refresh(): Promise<void> {
    if (this.#closed || !this.#o.isConnected()) return Promise.resolve();
    if (this.#putting) {
      this.#again = true;
      return this.#putting;
    }
    this.#putting = (async () => {
      try {
        do {
          this.#again = false;
          try {
            await this.#o.kv.put(this.#o.agent, encode(this.#o.build()));
            if (this.#failures > 0) this.#o.log.info("advert refreshed again");
            this.#failures = 0;
          } catch (err) {
            this.#failures += 1;
            if (this.#failures === 1) this.#o.log.warn({ err: (err as Error).message }, "cannot refresh the advert; retrying");
            this.#o.onFailure?.(err as Error);
            return;
          }
        } while (this.#again && !this.#closed && this.#o.isConnected());
      } finally {
        this.#putting = undefined;
      }
    })();
    return this.#putting;
  }

  /** Stops refreshing and deletes the advert, so `rung agents` drops this agent at once. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#putting;
    try {
      await this.#o.kv.delete(this.#o.agent);
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, "cannot delete the advert; it expires by TTL");
    }
  }
}

/** Every live advert in the mesh, sorted by agent name. Malformed adverts are counted and skipped. */
export async function listAdverts(nc: NatsConnection, names: MeshNames, bad?: BadMessageCounter): Promise<AgentAdvert[]> {
  let kv: KV;
  try {
    kv = await new Kvm(nc).open(names.buckets.agents);
  } catch {
    return [];
  }
  const out: AgentAdvert[] = [];
  // Not `kv.keys()`, which can follow a bucket rewritten every few seconds for ever: see bucketKeys.
  let keys: string[] = [];
  try {
    keys = await bucketKeys(await jetstreamManager(nc), names.buckets.agents);
  } catch {
    keys = [];
  }
  for (const key of keys.sort()) {
    const e = await kv.get(key).catch(() => null);
    if (!e || e.operation !== "PUT") continue;
    const r = decode(AgentAdvertSchema, e.value, "advert");
    if (r.ok) out.push(r.value);
    else bad?.record("adverts", r.error);
  }
  return out;
}

function ago(ms: number): string {
  if (ms < 1000) return "now";
  if (ms < 60_000) return `${Math.round(ms / 1000)}s ago`;
  return `${Math.round(ms / 60_000)}m ago`;
}

function gib(mib: number | null): string {
  return mib === null ? "?" : (mib / 1024).toFixed(1);
}

/** What runs on a GPU: its trials (with their shares when it is shared), or `-`. */
function trialsOn(g: AgentAdvert["gpus"][number]): string {
  const placed = g.placed ?? [];
  if (placed.length === 0 || (placed.length === 1 && (placed[0]?.share ?? 1) >= 1))
    return g.trial ? `${g.study ?? "?"}/${g.trial}` : "-";
  return placed.map((p) => `${p.study}/${p.trial} (${p.share})`).join(", ");
}

/**
 * The mesh as a table: one row per GPU or MIG instance (`<gpu>/<device>`; or per CPU-only agent) with
 * the share of it in use and what runs on it.
 */
export function formatAgentsTable(adverts: readonly AgentAdvert[], now = Date.now()): string {
  const header = ["AGENT", "GPU", "MODEL", "MEMORY GiB", "UTIL", "SHARE", "TRIAL", "STATE", "LAST SEEN"];
  const rows: string[][] = [];
  for (const a of adverts) {
    const seen = ago(Math.max(0, now - a.updatedAt));
    for (const g of a.gpus) {
      rows.push([
        a.agent,
        g.mig ? `${g.mig.parent}/${g.index % 100}` : String(g.index),
        g.fake ? `${g.name} (fake)` : g.name,
        `${gib(g.memoryUsedMiB)}/${gib(g.memoryTotalMiB)}`,
        g.utilization === null ? "?" : `${Math.round(g.utilization)}%`,
        g.shareInUse === undefined ? "?" : `${Math.round(g.shareInUse * 100)}%`,
        trialsOn(g),
        a.state,
        seen,
      ]);
    }
    if (a.cpuSlots > 0)
      rows.push([a.agent, "cpu", `${a.cpuSlots} CPU slot(s), ${a.freeCpuSlots} free`, "-", "-", "-", "-", a.state, seen]);
  }
  if (rows.length === 0) return "no agents in the mesh — start one with: rung agent --nats URL\n";
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] as number))
      .join("  ")
      .trimEnd();
  // What each agent could not run, and why: the line an operator needs to fix a misconfigured box.
  const refused = adverts.flatMap((a) =>
    (a.refusals ?? []).map(
      (r) => `${a.agent} cannot run ${r.study}/${r.trial} (${r.reason}, ${ago(Math.max(0, now - r.ts))}): ${r.detail}`,
    ),
  );
  const footer =
    refused.length > 0 ? `\nrefused orders (handed back for other agents):\n${refused.map((l) => `  ${l}`).join("\n")}\n` : "";
  return `${[line(header), ...rows.map(line)].join("\n")}\n${footer}${leasesLine(adverts)}`;
}

/**
 * A line when the agents' claim leases differ (adverts of older agents do not say): a study's
 * coordinator keeps the work consumers at the longest lease of the running agents, so an order lost by
 * any agent can wait that long for another.
 */
function leasesLine(adverts: readonly AgentAdvert[]): string {
  const known = adverts.filter((a) => a.leaseMs !== undefined);
  if (new Set(known.map((a) => a.leaseMs)).size < 2) return "";
  const longest = Math.max(...known.map((a) => a.leaseMs as number));
  const each = known.map((a) => `${a.agent} ${durationText(a.leaseMs as number)}`).join(", ");
  return `\nclaim leases differ (${each}): the mesh's work consumers keep the longest of the running agents', so an order an agent loses can wait up to ${durationText(longest)} for another; give every agent the same --lease\n`;
}
