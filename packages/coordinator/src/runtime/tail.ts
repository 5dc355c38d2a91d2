import { type ConsumerMessages, DeliverPolicy, type JsMsg, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  BadMessageCounter,
  DecodeError,
  decode,
  expandEvent,
  isNotFound,
  type MeshNames,
  StudyRecordSchema,
  sourceOf,
  TelemetrySchema,
  type TrialEvent,
  TrialEventSchema,
} from "@rung/protocol";
import { studyMetaFromSpec, type TailFilter, type TailFormat, TailView } from "../views/index.js";

/**
 * `rung tail`: telemetry and trial events, live. Live means core NATS subscriptions on
 * `rung.telemetry.<agent|*>` and the events subjects — no JetStream consumer per viewer, so a
 * hundred people tailing cost the server a hundred subscriptions. `since` replays first: ordered
 * consumers start at `now - since` on the events and telemetry streams, the replayed lines come in
 * time order, and the same consumers then keep following.
 *
 * Lines are collected and written once per flush tick (100 ms). When the output cannot keep up
 * (a slow terminal or pipe) lines are dropped, counted and said so, rather than buffered without
 * bound.
 *
 * `follow: false` prints history and returns: what is stored (from `now - since`, or all of it), in
 * time order, up to the moment the tail started — so `rung tail --since 1h --json --no-follow` can be
 * scripted.
 *
 * A NATS outage is a gap in what the tail shows, so it is said in the output itself (a line, or a
 * `{"kind":"connection"}` object), as dropped lines are. A `--study` or `--agent` that does not exist
 * yet is waited for, and `onNotice` says so.
 */

export interface TailOutput {
  write(chunk: string): boolean;
  /** Bytes the output still holds (a Node stream's `writableLength`); drives dropping. */
  readonly writableLength?: number;
}

export interface TailOptions {
  readonly nc: NatsConnection;
  readonly names: MeshNames;
  readonly filter?: TailFilter;
  /** Replay this many ms of stored telemetry and events first. Default: live only. */
  readonly sinceMs?: number | null;
  readonly format: TailFormat;
  /** ANSI colours for text. Default false. */
  readonly color?: boolean;
  readonly out: TailOutput;
  /** Aborting ends the tail. */
  readonly signal: AbortSignal;
  /** How often lines are written. Default 100 ms. */
  readonly flushMs?: number;
  /** Lines are dropped while the output holds more than this. Default 8 MiB. */
  readonly maxPendingBytes?: number;
  readonly drops?: BadMessageCounter;
  /** Called once the subscriptions are in place (live) or the replay consumers exist (since). */
  readonly onReady?: () => void;
  /**
   * Keep following after the history (default true). false: print what is stored — from `sinceMs`
   * ago, or everything when `sinceMs` is null — and return.
   */
  readonly follow?: boolean;
  /** Sentences for the person watching, not the output: "waiting for study x — none by that name yet". */
  readonly onNotice?: (text: string) => void;
}

export interface TailStats {
  messages: number;
  lines: number;
  droppedLines: number;
}

export async function runTail(o: TailOptions): Promise<TailStats> {
  const stats: TailStats = { messages: 0, lines: 0, droppedLines: 0 };
  const drops = o.drops ?? new BadMessageCounter();
  const maxPending = o.maxPendingBytes ?? 8 * 1024 * 1024;
  const subjects = o.names.subjects;
  const f = o.filter ?? {};
  const follow = o.follow ?? true;
  const notice = o.onNotice ?? (() => {});
  let studies: KV | null | undefined;
  // A filter that names a study or agent nobody has seen: said once, and again when it turns up.
  let awaitedStudy: string | null = null;
  let awaitedAgent: string | null = null;
  const view = new TailView({
    format: o.format,
    color: o.color,
    filter: f,
    onNewStudy: (study) => {
      if (study === awaitedStudy) {
        awaitedStudy = null;
        notice(`study ${study} is here`);
      }
      void lookUpStudy(study);
    },
  });

  /** Whether any stored message has this subject (a stream's per-subject counts, filtered). */
  async function stored(stream: string, subject: string): Promise<boolean> {
    try {
      const info = await (await jetstreamManager(o.nc)).streams.info(stream, { subjects_filter: subject });
      return Object.keys(info.state.subjects ?? {}).length > 0;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async function studyKnown(study: string): Promise<boolean> {
    studies ??= await new Kvm(o.nc).open(o.names.buckets.studies).catch(() => null);
    const e = await studies?.get(subjects.studyKey(study));
    if (e && e.operation === "PUT") return true;
    return stored(o.names.streams.events, subjects.studyEvents(study));
  }

  async function agentKnown(agent: string): Promise<boolean> {
    const agents = await new Kvm(o.nc).open(o.names.buckets.agents).catch(() => null);
    const e = await agents?.get(subjects.agentKey(agent));
    if (e && e.operation === "PUT") return true;
    return stored(o.names.streams.telemetry, subjects.telemetry(agent));
  }

  /** Says which of the filter's names do not exist (yet). A viewer's check: failing it changes nothing. */
  async function checkNames(): Promise<void> {
    try {
      if (f.study !== undefined && !(await studyKnown(f.study))) {
        awaitedStudy = follow ? f.study : null;
        notice(follow ? `waiting for study ${f.study} — none by that name yet` : `no study ${f.study} in this mesh (yet)`);
      }
      if (f.agent !== undefined && !(await agentKnown(f.agent))) {
        awaitedAgent = follow ? f.agent : null;
        notice(follow ? `waiting for agent ${f.agent} — none by that name yet` : `no agent ${f.agent} in this mesh (yet)`);
      }
    } catch {
      // no right to read the buckets or stream info: say nothing
    }
  }

  // The study's metric and time attribute come from its record; until they do, the view guesses.
  async function lookUpStudy(study: string): Promise<void> {
    try {
      studies ??= await new Kvm(o.nc).open(o.names.buckets.studies).catch(() => null);
      const e = await studies?.get(subjects.studyKey(study));
      if (!e || e.operation !== "PUT") return;
      const r = decode(StudyRecordSchema, e.value, "study record");
      const meta = r.ok ? studyMetaFromSpec(r.value.spec) : null;
      if (meta) view.setStudyMeta(study, meta);
    } catch {
      // a viewer: a missing record only means the lines show a guessed metric
    }
  }

  let lines: string[] = [];
  let replaying = false;
  let dropped = 0;
  const flush = () => {
    if (lines.length === 0 && dropped === 0) return;
    if ((o.out.writableLength ?? 0) > maxPending) {
      if (replaying) return; // the replay waits for the output (see drain) instead
      dropped += lines.length;
      stats.droppedLines += lines.length;
      lines = [];
      return;
    }
    if (dropped > 0) {
      const note =
        o.format === "json"
          ? JSON.stringify({ kind: "dropped", lines: dropped, ts: Date.now() })
          : `[rung tail: ${dropped} lines dropped — the output is slower than the telemetry]`;
      lines.push(note);
      dropped = 0;
    }
    stats.lines += lines.length;
    const text = `${lines.join("\n")}\n`;
    lines = [];
    o.out.write(text);
  };

  /** Replay: write what is rendered and wait until the output has taken most of it. */
  const drain = async () => {
    while ((o.out.writableLength ?? 0) > maxPending / 2 && !o.signal.aborted) await new Promise((r) => setTimeout(r, 10));
    flush();
  };

  const onTelemetry = (data: Uint8Array) => {
    stats.messages += 1;
    const r = decode(TelemetrySchema, data, "telemetry");
    if (!r.ok) return drops.record("telemetry", r.error);
    if (awaitedAgent !== null && r.value.agent === awaitedAgent) {
      awaitedAgent = null;
      notice(`agent ${r.value.agent} is here`);
    }
    view.telemetry(r.value, lines);
  };
  /**
   * An event as its publisher may say it: the subject names the publisher (which a box cannot forge)
   * and the body must say the same. (Whether an agent holds the attempt it writes about is checked by
   * the fold behind `study status` and `report`; the tail shows what arrives.)
   */
  const eventsOf = (data: Uint8Array, subject: string): TrialEvent[] => {
    const r = decode(TrialEventSchema, data, "trial event");
    if (!r.ok) {
      drops.record("events", r.error);
      return [];
    }
    const ev = r.value;
    const at = subjects.parseEvents(subject);
    const says = sourceOf(ev);
    const same =
      at?.study === ev.study &&
      at.trial === ev.trial &&
      at.from.role === says.role &&
      (says.role === "coordinator" || (at.from.role === "agent" && at.from.agent === says.agent));
    if (!same) {
      drops.record(
        "events",
        new DecodeError("stray", "trial event", `trial event: ${ev.type} of ${ev.study}/${ev.trial} arrived on ${subject}`),
      );
      return [];
    }
    // A batch of reports is shown as the reports it holds.
    return expandEvent(ev);
  };
  const onEvent = (data: Uint8Array, subject: string) => {
    stats.messages += 1;
    for (const ev of eventsOf(data, subject)) view.event(ev, lines);
  };

  const eventsSubject =
    f.study !== undefined
      ? f.trial !== undefined
        ? subjects.trialEvents(f.study, f.trial)
        : subjects.studyEvents(f.study)
      : subjects.eventsAll();
  const telemetrySubject = f.agent !== undefined ? subjects.telemetry(f.agent) : subjects.telemetryAll();

  const timer = setInterval(flush, o.flushMs ?? 100);
  const subs: Subscription[] = [];
  const consumers: ConsumerMessages[] = [];
  const loops: Promise<void>[] = [];
  const live = follow && (o.sinceMs === undefined || o.sinceMs === null);
  let ended = false;
  // The status iterator ends only when the connection closes (the caller's job): not awaited.
  void (async () => {
    let downSince: number | null = null;
    for await (const st of o.nc.status()) {
      if (ended) break;
      if (st.type === "disconnect" && downSince === null) {
        downSince = Date.now();
        view.connection({ event: "disconnected", server: st.server, ts: downSince, missed: live }, lines);
      } else if (st.type === "reconnect") {
        const now = Date.now();
        view.connection({ event: "reconnected", server: st.server, ts: now, downMs: now - (downSince ?? now) }, lines);
        downSince = null;
      }
    }
  })().catch(() => {});
  let finished!: () => void;
  const historyDone = new Promise<void>((r) => {
    finished = r;
  });
  try {
    await checkNames();
    if (live) {
      subs.push(
        o.nc.subscribe(telemetrySubject, {
          callback: (err, m) => {
            if (!err) onTelemetry(m.data);
          },
        }),
      );
      subs.push(
        o.nc.subscribe(eventsSubject, {
          callback: (err, m) => {
            if (!err) onEvent(m.data, m.subject);
          },
        }),
      );
      await o.nc.flush();
    } else {
      const js = jetstream(o.nc);
      const startedAt = Date.now();
      const sinceMs = o.sinceMs ?? null;
      const from =
        sinceMs === null
          ? { deliver_policy: DeliverPolicy.All }
          : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(startedAt - sinceMs).toISOString() };
      const open = async (stream: string, filter: string) => {
        const c = await js.consumers.get(stream, { filter_subjects: filter, ...from });
        return { pending: (await c.info()).num_pending, messages: await c.consume({ max_messages: 2000 }) };
      };
      // Replay. Events are few: their backlog is read first and held. Telemetry is many (5 min of
      // 1,000 agents is 300,000 messages): it is rendered as it streams in, each message preceded by
      // the held events older than it, and the replay waits for the output rather than drop lines.
      // Caught up means the end of what was stored, or a message newer than the tail itself (a busy
      // stream may never show zero pending).
      const held: TrialEvent[] = [];
      let telemetryLive = false;
      replaying = true;
      const releaseEvents = (upTo: number) => {
        let i = 0;
        while (i < held.length && (held[i] as TrialEvent).ts <= upTo) view.event(held[i++] as TrialEvent, lines);
        if (i > 0) held.splice(0, i);
      };
      const evs = await open(o.names.streams.events, eventsSubject);
      consumers.push(evs.messages);
      let eventsCaughtUp!: () => void;
      const eventsReady = new Promise<void>((r) => {
        eventsCaughtUp = r;
      });
      if (evs.pending === 0) eventsCaughtUp();
      loops.push(
        (async () => {
          let caughtUp = evs.pending === 0;
          for await (const m of evs.messages as AsyncIterable<JsMsg>) {
            if (telemetryLive) {
              if (follow) onEvent(m.data, m.subject);
              continue;
            }
            stats.messages += 1;
            const evs = eventsOf(m.data, m.subject);
            held.push(...evs);
            if (!caughtUp && (m.info.pending === 0 || evs.some((ev) => ev.ts >= startedAt))) {
              caughtUp = true;
              held.sort((a, b) => a.ts - b.ts);
              eventsCaughtUp();
            }
          }
          eventsCaughtUp();
        })(),
      );
      await Promise.race([eventsReady, new Promise((r) => o.signal.addEventListener("abort", r, { once: true }))]);
      const tel = await open(o.names.streams.telemetry, telemetrySubject);
      consumers.push(tel.messages);
      const goLive = () => {
        if (telemetryLive) return;
        held.sort((a, b) => a.ts - b.ts);
        releaseEvents(Number.POSITIVE_INFINITY);
        telemetryLive = true;
        replaying = false;
        // History only: what was stored when the tail started has been shown.
        if (!follow) finished();
      };
      if (tel.pending === 0) goLive();
      loops.push(
        (async () => {
          for await (const m of tel.messages as AsyncIterable<JsMsg>) {
            if (telemetryLive) {
              if (follow) onTelemetry(m.data);
              continue;
            }
            stats.messages += 1;
            const r = decode(TelemetrySchema, m.data, "telemetry");
            if (r.ok) {
              releaseEvents(r.value.ts);
              view.telemetry(r.value, lines);
            } else drops.record("telemetry", r.error);
            if (m.info.pending === 0 || (r.ok && r.value.ts >= startedAt)) goLive();
            else if (lines.length >= 10_000) await drain();
          }
        })(),
      );
    }
    o.onReady?.();
    if (!o.signal.aborted)
      await Promise.race([historyDone, new Promise<void>((r) => o.signal.addEventListener("abort", () => r(), { once: true }))]);
  } finally {
    ended = true;
    clearInterval(timer);
    for (const s of subs) s.unsubscribe();
    for (const c of consumers) c.stop();
    await Promise.allSettled(loops);
    flush();
  }
  return stats;
}
