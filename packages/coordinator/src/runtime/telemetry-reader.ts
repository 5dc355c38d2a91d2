import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  type AgentAdvert,
  AgentAdvertSchema,
  type BadMessageCounter,
  bucketKeys,
  decode,
  type MeshNames,
  type Telemetry,
  TelemetrySchema,
} from "@rung/protocol";
import type { StudyState } from "../study/index.js";
import { buildStudyReport, type StudyReport, type StudyReportOptions } from "../telemetry/index.js";
import { readStudyEvents } from "./event-reader.js";
import { loadStudy } from "./study-admin.js";

/**
 * Stored telemetry, read back: the samples of a time window (ordered consumers starting at the
 * window's first second, so nothing is read from before it), the agents' adverts, and the study
 * report that joins them with the study's events. The telemetry stream keeps one hour by default, so
 * for an older study the report says how much of it the samples still cover.
 */

export interface ReadTelemetryOptions {
  /** Epoch ms of the window's start. */
  fromTs: number;
  /** Epoch ms of its end; samples after it end the read. Default: everything stored. */
  toTs?: number;
  /** Only these agents (one consumer per agent up to 16 of them; above that one consumer, filtered here). */
  agents?: readonly string[];
  drops?: BadMessageCounter;
  /** Batch size of each fetch. Default 5000. */
  batch?: number;
}

const PER_AGENT_CONSUMERS = 16;

async function readSubject(nc: NatsConnection, names: MeshNames, subject: string, o: ReadTelemetryOptions, out: Telemetry[]) {
  const js = jetstream(nc);
  const consumer = await js.consumers.get(names.streams.telemetry, {
    filter_subjects: subject,
    deliver_policy: DeliverPolicy.StartTime,
    opt_start_time: new Date(o.fromTs).toISOString(),
  });
  let pending = (await consumer.info()).num_pending;
  // Many agents: one consumer over all of them, the others' messages skipped by subject, undecoded.
  const keep =
    o.agents && o.agents.length > PER_AGENT_CONSUMERS ? new Set(o.agents.map((a) => names.subjects.telemetry(a))) : null;
  const batch = o.batch ?? 5000;
  while (pending > 0) {
    const msgs = await consumer.fetch({ max_messages: Math.min(pending, batch), expires: 2000 });
    let got = 0;
    let past = false;
    for await (const m of msgs) {
      got += 1;
      pending = m.info.pending;
      if (keep && !keep.has(m.subject)) {
        if (pending === 0) break;
        continue;
      }
      const r = decode(TelemetrySchema, m.data, "telemetry");
      if (!r.ok) o.drops?.record("telemetry", r.error);
      else if (o.toTs !== undefined && r.value.ts > o.toTs) past = true;
      else out.push(r.value);
      if (pending === 0 || past) break;
    }
    if (got === 0 || past) break;
  }
}

/** Telemetry stored for a time window, in stream order per agent. */
export async function readTelemetry(nc: NatsConnection, names: MeshNames, o: ReadTelemetryOptions): Promise<Telemetry[]> {
  const out: Telemetry[] = [];
  if (o.agents && o.agents.length === 0) return out;
  if (o.agents && o.agents.length <= PER_AGENT_CONSUMERS) {
    for (const agent of o.agents) await readSubject(nc, names, names.subjects.telemetry(agent), o, out);
  } else {
    await readSubject(nc, names, names.subjects.telemetryAll(), o, out);
  }
  return out;
}

/** Every advert in the agents bucket now (expired agents are gone). */
export async function readAdverts(nc: NatsConnection, names: MeshNames, drops?: BadMessageCounter): Promise<AgentAdvert[]> {
  let kv: Awaited<ReturnType<Kvm["open"]>>;
  try {
    kv = await new Kvm(nc).open(names.buckets.agents);
  } catch {
    return [];
  }
  const out: AgentAdvert[] = [];
  for (const key of await bucketKeys(await jetstreamManager(nc), names.buckets.agents)) {
    const e = await kv.get(key);
    if (!e || e.operation !== "PUT") continue;
    const r = decode(AgentAdvertSchema, e.value, "agent advert");
    if (r.ok) out.push(r.value);
    else drops?.record("agents", r.error);
  }
  return out;
}

export interface LoadStudyReportOptions extends Omit<StudyReportOptions, "events"> {
  drops?: BadMessageCounter;
  /** Samples this long before the first event and after the last are read too. Default 10 s. */
  slackMs?: number;
}

/** Reads a study, its telemetry window and the adverts, and builds its report. */
export async function loadStudyReport(
  nc: NatsConnection,
  names: MeshNames,
  study: string,
  options: LoadStudyReportOptions = {},
): Promise<StudyReport> {
  const now = options.now ?? Date.now();
  const loaded = await loadStudy(nc, names, study);
  const events = (await readStudyEvents(nc, names, study, options.drops)).map((s) => s.event);
  const state = loaded.state;
  const agents = new Set<string>();
  for (const t of state.trials.values()) for (const a of t.attempts) if (a.agent !== null) agents.add(a.agent);
  const slack = options.slackMs ?? 10_000;
  const telemetry =
    state.firstTs === null
      ? []
      : await readTelemetry(nc, names, {
          fromTs: state.firstTs - slack,
          toTs: state.inFlight().length > 0 ? undefined : (state.lastTs ?? now) + slack,
          agents: [...agents].sort(),
          drops: options.drops,
        });
  const adverts = (await readAdverts(nc, names, options.drops)).filter((a) => agents.has(a.agent));
  const checkpointBytes = await storedCheckpointBytes(nc, names, state);
  return buildStudyReport(loaded, telemetry, adverts, { ...options, events, now, checkpointBytes });
}

/** Bytes of the study's snapshots still in the bucket (those its events name); null when it cannot be read. */
async function storedCheckpointBytes(nc: NatsConnection, names: MeshNames, state: StudyState): Promise<number | null> {
  const named = new Set([...state.trials.values()].flatMap((t) => t.checkpoints.map((c) => c.ref.object)));
  if (named.size === 0) return 0;
  try {
    const os = await new Objm(nc).open(names.checkpoints);
    let bytes = 0;
    for (const info of await os.list()) if (!info.deleted && named.has(info.name)) bytes += info.size;
    return bytes;
  } catch {
    return null;
  }
}
