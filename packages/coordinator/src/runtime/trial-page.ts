import { DeliverPolicy, type JsMsg, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { decode, describeSource, isNotFound, LogChunkSchema, type MeshNames } from "@rung/protocol";
import { TrialNotFoundError } from "../errors.js";
import { rungMilestones } from "../scheduling/index.js";
import { StudyState } from "../study/index.js";
import { type TrialPageData, terminalText, trialPageData } from "../views/index.js";
import { loadStudySpec } from "./study-watch.js";
import { readTrialEvents } from "./trial-output.js";

/** How much of a trial's terminal output its page shows: the last 64 KiB, at most 400 lines. */
const OUTPUT_TAIL_BYTES = 64 * 1024;
const OUTPUT_TAIL_LINES = 400;
/** Attempts whose output tail is kept between polls, per connection (the least recently shown go first). */
const MAX_TAILS = 64;

/**
 * The end of one attempt's output as far as it has been read: the chunks that make its last
 * `OUTPUT_TAIL_BYTES`, and the stream sequence read up to, so the next poll reads only what came after.
 */
interface OutputTail {
  chunks: Buffer[];
  bytes: number;
  truncated: boolean;
  lastSeq: number;
  eof: boolean;
}

const tails = new WeakMap<NatsConnection, Map<string, OutputTail>>();

function tailFor(nc: NatsConnection, key: string): OutputTail {
  let all = tails.get(nc);
  if (!all) {
    all = new Map();
    tails.set(nc, all);
  }
  const have = all.get(key);
  const tail = have ?? { chunks: [], bytes: 0, truncated: false, lastSeq: 0, eof: false };
  all.delete(key);
  all.set(key, tail);
  for (const old of all.keys()) {
    if (all.size <= MAX_TAILS) break;
    all.delete(old);
  }
  return tail;
}

/** The attempts of a trial with stored output from their claimant, in order (from the logs stream's subjects). */
async function attemptsWithOutput(
  nc: NatsConnection,
  names: MeshNames,
  state: StudyState,
  study: string,
  trial: string,
): Promise<{ attempt: number; agent: string }[]> {
  let subjects: string[];
  try {
    const info = await (await jetstreamManager(nc)).streams.info(names.streams.logs, {
      subjects_filter: names.subjects.trialLogs(study, trial),
    });
    subjects = Object.keys(info.state.subjects ?? {});
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
  const attempts = state.trials.get(trial)?.attempts ?? [];
  const out: { attempt: number; agent: string }[] = [];
  for (const s of subjects) {
    const at = names.subjects.parseLogs(s);
    // Only the claimant's output counts (as `rung logs` reads it): another box's chunks are not the attempt's.
    if (at && attempts.find((a) => a.attempt === at.attempt)?.claimant === at.agent) out.push(at);
  }
  return out.sort((a, b) => a.attempt - b.attempt);
}

/** Reads the attempt's chunks after those `tail` holds, keeping the last `OUTPUT_TAIL_BYTES`. */
async function readMore(nc: NatsConnection, names: MeshNames, subject: string, tail: OutputTail): Promise<void> {
  if (tail.eof) return;
  const consumer = await jetstream(nc).consumers.get(names.streams.logs, {
    filter_subjects: subject,
    ...(tail.lastSeq > 0
      ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: tail.lastSeq + 1 }
      : { deliver_policy: DeliverPolicy.All }),
  });
  const pending = (await consumer.info()).num_pending;
  if (pending === 0) return;
  const messages = await consumer.consume({ max_messages: 256 });
  let seen = 0;
  try {
    for await (const m of messages as AsyncIterable<JsMsg>) {
      seen += 1;
      tail.lastSeq = m.seq;
      const r = decode(LogChunkSchema, m.data, "log chunk");
      if (r.ok) {
        if (r.value.data.byteLength > 0) {
          tail.chunks.push(Buffer.from(r.value.data));
          tail.bytes += r.value.data.byteLength;
          while (tail.chunks.length > 1 && tail.bytes - (tail.chunks[0]?.byteLength ?? 0) >= OUTPUT_TAIL_BYTES) {
            tail.bytes -= (tail.chunks.shift() as Buffer).byteLength;
            tail.truncated = true;
          }
        }
        if (r.value.eof) tail.eof = true;
      }
      if (m.info.pending === 0 || seen >= pending || tail.eof) break;
    }
  } finally {
    messages.stop();
  }
}

/**
 * A trial's page (`rung ui`): its events folded with the study's spec (who may say what:
 * `StudyState`), its curve, and the tail of its latest attempt's terminal output. The events are read
 * once per call; the output is kept per attempt between calls (a page polls every 3 s), so a poll reads
 * only the chunks written since the last one. Throws `StudyNotFoundError` or `TrialNotFoundError`.
 */
export async function loadTrialPage(nc: NatsConnection, names: MeshNames, study: string, trial: string): Promise<TrialPageData> {
  const spec = await loadStudySpec(nc, names, study);
  const state = new StudyState({
    study,
    metric: spec.metric.name,
    mode: spec.metric.mode,
    timeAttr: spec.scheduler.timeAttr,
    gpus: spec.resources.gpus,
  });
  const events = await readTrialEvents(nc, names, study, trial);
  for (const e of events) state.apply(e.event, e.from);
  if (!state.trials.get(trial)?.createdAt) throw new TrialNotFoundError(trial, study);

  let output: TrialPageData["output"] = { attempt: null, text: "", truncated: false };
  const latest = (await attemptsWithOutput(nc, names, state, study, trial).catch(() => [])).at(-1);
  if (latest !== undefined) {
    const subject = names.subjects.logs(study, trial, latest.attempt, latest.agent);
    const tail = tailFor(nc, subject);
    await readMore(nc, names, subject, tail);
    let text = terminalText(Buffer.concat(tail.chunks).toString("utf8"));
    let truncated = tail.truncated;
    const lines = text.split("\n");
    if (lines.length > OUTPUT_TAIL_LINES) {
      text = lines.slice(-OUTPUT_TAIL_LINES).join("\n");
      truncated = true;
    }
    output = { attempt: latest.attempt, text, truncated };
  }
  const s = spec.scheduler as { type: string; gracePeriod?: number; reductionFactor?: number; maxT?: number };
  const rungs =
    (s.type === "asha" || s.type === "hyperband" || s.type === "promotion") && s.maxT && s.gracePeriod && s.reductionFactor
      ? rungMilestones(s.gracePeriod, s.reductionFactor, s.maxT, 0)
      : [];
  const page = trialPageData(
    state,
    spec,
    trial,
    events.map((e) => ({ event: e.event, from: describeSource(e.from) })),
    output,
    rungs,
  );
  if (!page) throw new TrialNotFoundError(trial, study);
  return page;
}
