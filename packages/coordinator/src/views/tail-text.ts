import type { GpuSample, Telemetry, TrialEvent } from "@rung/protocol";

/**
 * `rung tail` lines: one per GPU per sample and one per trial event, as coloured text on a terminal,
 * plain text in a pipe, or newline-delimited JSON. Pure and allocation-light: at 1,000 agents × 8
 * GPUs a second this runs 8,000 times a second, so bars and colours are looked up, clock strings are
 * made once per second, and nothing is formatted for an entry a filter drops.
 *
 *   14:02:11  a12  gpu0 ██████▍   78%  mem 12.1/24.0G  231W 66°C  digits/t0007 epoch 3 val_acc 0.9722 wait 12%
 *   14:02:11  a12  gpu1            0%  mem  0.0/24.0G   30W 30°C  idle
 *   14:02:12  ▶ digits/t0009 started on a12 gpu 1 (attempt 1)
 *   14:02:15  · digits/t0007 epoch 4 val_acc 0.9750 wait 11%
 *   14:02:15  ■ digits/t0004 stopped at rung 3 by asha (val_acc 0.7120, cutoff 0.8011)
 *   14:02:16  [rung tail: disconnected from nats://127.0.0.1:4222 — reconnecting; …]
 *   14:02:19  [rung tail: reconnected to nats://127.0.0.1:4222 after 3.2 s]
 */

export const TailFormat = { text: "text", json: "json" } as const;
export type TailFormat = (typeof TailFormat)[keyof typeof TailFormat];

export interface TailFilter {
  readonly study?: string;
  readonly trial?: string;
  readonly agent?: string;
}

export interface TailViewOptions {
  readonly format: TailFormat;
  /** ANSI colours (text only). The CLI turns them on for a TTY without NO_COLOR. Default false. */
  readonly color?: boolean;
  readonly filter?: TailFilter;
  /** Called once per study the first time it is seen, so its metric and time attribute can be looked up. */
  readonly onNewStudy?: (study: string) => void;
}

/** The tail's connection went down or came back: a gap in what the tail shows. */
export type TailConnectionEvent =
  | { readonly event: "disconnected"; readonly server: string; readonly ts: number; readonly missed: boolean }
  | { readonly event: "reconnected"; readonly server: string; readonly ts: number; readonly downMs: number };

/** The study's headline metric and time attribute (from its spec), for the GPU lines. */
export interface StudyMeta {
  readonly metric: string;
  readonly timeAttr: string;
}

interface TrialProgress {
  t: number | null;
  metric: string | null;
  value: number | null;
  waitShare: number | null;
  agent: string | null;
}

const TIME_KEYS = ["epoch", "training_iteration", "step", "iteration", "iter"];
const NOT_METRICS = new Set([
  "data_wait_s",
  "data_wait_host_cpu",
  "compute_s",
  "num_workers",
  "time_total_s",
  "time_this_iter_s",
  ...TIME_KEYS,
]);

const ESC = "\x1b[";
const RESET = `${ESC}0m`;
const DIM = `${ESC}2m`;
const RED = `${ESC}31m`;
const GREEN = `${ESC}32m`;
const YELLOW = `${ESC}33m`;
const CYAN = `${ESC}36m`;

const BAR_WIDTH = 8;
const EIGHTHS = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
/** BAR[u] for u = 0..100: the bar padded to BAR_WIDTH. */
const BAR: string[] = Array.from({ length: 101 }, (_, u) => {
  const eighths = Math.round((u / 100) * BAR_WIDTH * 8);
  const full = Math.floor(eighths / 8);
  const s = "█".repeat(full) + (EIGHTHS[eighths % 8] ?? "");
  return s.padEnd(BAR_WIDTH, " ");
});
const PCT: string[] = Array.from({ length: 101 }, (_, u) => `${String(u).padStart(3)}%`);

function two(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

function fmtValue(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  return Number.isInteger(x) ? String(x) : x.toPrecision(4);
}

function finite(x: number | null | undefined): x is number {
  return typeof x === "number" && Number.isFinite(x);
}

export class TailView {
  readonly #o: TailViewOptions;
  readonly #json: boolean;
  readonly #color: boolean;
  readonly #progress = new Map<string, TrialProgress>();
  readonly #meta = new Map<string, StudyMeta | null>();
  #clockSecond = -1;
  #clock = "";
  #agentWidth = 4;

  constructor(options: TailViewOptions) {
    this.#o = options;
    this.#json = options.format === "json";
    this.#color = !this.#json && options.color === true;
  }

  /** Sets a study's metric and time attribute once they are known. */
  setStudyMeta(study: string, meta: StudyMeta): void {
    this.#meta.set(study, meta);
  }

  #seeStudy(study: string): void {
    if (this.#meta.has(study)) return;
    this.#meta.set(study, null);
    this.#o.onNewStudy?.(study);
  }

  #time(ts: number): string {
    const second = Math.floor(ts / 1000);
    if (second !== this.#clockSecond) {
      const d = new Date(ts);
      this.#clockSecond = second;
      this.#clock = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
    }
    return this.#clock;
  }

  #paint(code: string, s: string): string {
    return this.#color ? code + s + RESET : s;
  }

  /** Appends the line for a connection change to `out`. */
  connection(c: TailConnectionEvent, out: string[]): void {
    if (this.#json) {
      out.push(JSON.stringify({ kind: "connection", ...c }));
      return;
    }
    const head = `${this.#paint(DIM, this.#time(c.ts))}  `;
    const text =
      c.event === "disconnected"
        ? `[rung tail: disconnected from ${c.server} — reconnecting${c.missed ? "; what is published until then is not shown (--since shows what was stored)" : ""}]`
        : `[rung tail: reconnected to ${c.server} after ${(c.downMs / 1000).toFixed(1)} s]`;
    out.push(head + this.#paint(c.event === "disconnected" ? RED : GREEN, text));
  }

  /** Appends the lines for one telemetry message to `out`; host samples make no line. */
  telemetry(m: Telemetry, out: string[]): void {
    if (m.type !== "gpu") return;
    const f = this.#o.filter;
    if (f?.agent !== undefined && m.agent !== f.agent) return;
    for (const g of m.gpus) {
      if (f?.study !== undefined && g.study !== f.study) continue;
      if (f?.trial !== undefined && g.trial !== f.trial) continue;
      if (g.study !== null) this.#seeStudy(g.study);
      out.push(this.#json ? this.#gpuJson(m.agent, m.ts, m.fake, g) : this.#gpuText(m.agent, m.ts, g));
    }
  }

  #progressOf(g: GpuSample): TrialProgress | undefined {
    return g.study !== null && g.trial !== null ? this.#progress.get(`${g.study}/${g.trial}`) : undefined;
  }

  #gpuJson(agent: string, ts: number, fake: boolean, g: GpuSample): string {
    const p = this.#progressOf(g);
    const timeAttr = g.study !== null ? (this.#meta.get(g.study)?.timeAttr ?? null) : null;
    return JSON.stringify({
      kind: "gpu",
      ts,
      agent,
      gpu: g.index,
      util: g.utilizationGpu,
      memUsedMiB: g.memoryUsedMiB,
      memTotalMiB: g.memoryTotalMiB,
      powerW: g.powerW,
      tempC: g.temperatureC,
      fake,
      study: g.study,
      trial: g.trial,
      t: p?.t ?? null,
      timeAttr: p ? (timeAttr ?? "epoch") : null,
      metric: p?.metric ?? null,
      value: p?.value ?? null,
      dataWaitShare: p?.waitShare ?? null,
    });
  }

  #gpuText(agent: string, ts: number, g: GpuSample): string {
    if (agent.length > this.#agentWidth) this.#agentWidth = Math.min(24, agent.length);
    const u = finite(g.utilizationGpu) ? Math.max(0, Math.min(100, Math.round(g.utilizationGpu))) : -1;
    let bar: string;
    let pct: string;
    if (u < 0) {
      bar = " ".repeat(BAR_WIDTH);
      pct = "   -";
    } else {
      bar = BAR[u] as string;
      pct = PCT[u] as string;
      if (this.#color) {
        const c = u >= 70 ? GREEN : u >= 30 ? YELLOW : RED;
        bar = c + bar + RESET;
        pct = c + pct + RESET;
      }
    }
    const memUsed = finite(g.memoryUsedMiB) ? (g.memoryUsedMiB / 1024).toFixed(1).padStart(4) : "   -";
    const memTotal = finite(g.memoryTotalMiB) ? (g.memoryTotalMiB / 1024).toFixed(1) : "-";
    const power = finite(g.powerW) ? `${Math.round(g.powerW)}W`.padStart(4) : "   -";
    const temp = finite(g.temperatureC) ? `${Math.round(g.temperatureC)}°C` : "  -";
    let line = `${this.#paint(DIM, this.#time(ts))}  ${agent.padEnd(this.#agentWidth)}  gpu${g.index} ${bar} ${pct}  mem ${memUsed}/${memTotal}G  ${power} ${temp}  `;
    if (g.study === null || g.trial === null) return `${line}${this.#paint(DIM, "idle")}`;
    line += this.#paint(CYAN, `${g.study}/${g.trial}`);
    const p = this.#progress.get(`${g.study}/${g.trial}`);
    if (p) line += this.#progressText(g.study, p);
    return line;
  }

  #progressText(study: string, p: TrialProgress): string {
    let s = "";
    if (p.t !== null) s += ` ${this.#meta.get(study)?.timeAttr ?? "epoch"} ${fmtValue(p.t)}`;
    if (p.metric !== null && p.value !== null) s += ` ${p.metric} ${fmtValue(p.value)}`;
    if (p.waitShare !== null) {
      const w = `wait ${Math.round(100 * p.waitShare)}%`;
      s += ` ${this.#color && p.waitShare > 0.3 ? RED + w + RESET : w}`;
    }
    return s;
  }

  #passes(ev: TrialEvent): boolean {
    const f = this.#o.filter;
    if (!f) return true;
    if (f.study !== undefined && ev.study !== f.study) return false;
    if (f.trial !== undefined && ev.trial !== f.trial) return false;
    if (f.agent !== undefined) {
      const agent = "agent" in ev ? ev.agent : (this.#progress.get(`${ev.study}/${ev.trial}`)?.agent ?? null);
      if (agent !== f.agent) return false;
    }
    return true;
  }

  #track(ev: TrialEvent): void {
    const key = `${ev.study}/${ev.trial}`;
    if (ev.type === "started" || ev.type === "claimed") {
      const p = this.#progress.get(key);
      if (p) p.agent = ev.agent;
      else this.#progress.set(key, { t: null, metric: null, value: null, waitShare: null, agent: ev.agent });
    } else if (ev.type === "report") {
      const m = ev.metrics;
      const meta = this.#meta.get(ev.study) ?? null;
      let timeKey = meta?.timeAttr;
      if (timeKey === undefined) timeKey = TIME_KEYS.find((k) => m[k] !== undefined);
      let metric = meta?.metric;
      if (metric === undefined || m[metric] === undefined) metric = Object.keys(m).find((k) => !NOT_METRICS.has(k));
      const wait = m.data_wait_s;
      const compute = m.compute_s;
      const p: TrialProgress = this.#progress.get(key) ?? {
        t: null,
        metric: null,
        value: null,
        waitShare: null,
        agent: ev.agent,
      };
      p.agent = ev.agent;
      p.t = timeKey !== undefined && m[timeKey] !== undefined ? (m[timeKey] as number) : p.t;
      p.metric = metric ?? null;
      p.value = metric !== undefined ? (m[metric] ?? null) : null;
      p.waitShare = finite(wait) && finite(compute) && wait + compute > 0 ? wait / (wait + compute) : p.waitShare;
      this.#progress.set(key, p);
    } else if (ev.type === "ended") {
      this.#progress.delete(key);
    }
  }

  /** Appends the line for one trial event to `out` (lifecycle events that say nothing new make none). */
  event(ev: TrialEvent, out: string[]): void {
    this.#seeStudy(ev.study);
    const pass = this.#passes(ev);
    if (ev.type !== "ended") this.#track(ev);
    if (pass) {
      const line = this.#json ? this.#eventJson(ev) : this.#eventText(ev);
      if (line !== null) out.push(line);
    }
    if (ev.type === "ended") this.#track(ev);
  }

  #eventJson(ev: TrialEvent): string | null {
    const base = { kind: "trial", event: ev.type as string, ts: ev.ts, study: ev.study, trial: ev.trial };
    switch (ev.type) {
      case "started":
        return JSON.stringify({ ...base, attempt: ev.attempt, agent: ev.agent, gpus: ev.gpus });
      case "report": {
        const p = this.#progress.get(`${ev.study}/${ev.trial}`);
        return JSON.stringify({
          ...base,
          attempt: ev.attempt,
          agent: ev.agent,
          metrics: ev.metrics,
          dataWaitShare: p?.waitShare ?? null,
        });
      }
      case "decision":
        if (ev.decision !== "STOP") return null;
        return JSON.stringify({
          ...base,
          event: "stopped",
          attempt: ev.attempt,
          rung: ev.rung,
          t: ev.t,
          value: ev.value,
          cutoff: ev.cutoff,
          by: ev.by,
        });
      case "finished":
        return JSON.stringify({
          ...base,
          event: ev.status === "failed" ? "failed" : "finished",
          attempt: ev.attempt,
          agent: ev.agent,
          status: ev.status,
          exitCode: ev.exitCode,
          signal: ev.signal,
          reason: ev.reason,
        });
      case "ended":
        if (ev.status !== "failed" && ev.status !== "cancelled") return null;
        return JSON.stringify({ ...base, event: ev.status, final: true, attempts: ev.attempts, reason: ev.reason });
      case "rejected":
        return JSON.stringify({ ...base, attempt: ev.attempt, agent: ev.agent, reason: ev.reason, detail: ev.detail });
      default:
        return null;
    }
  }

  #eventText(ev: TrialEvent): string | null {
    const head = `${this.#paint(DIM, this.#time(ev.ts))}  `;
    const who = this.#paint(CYAN, `${ev.study}/${ev.trial}`);
    switch (ev.type) {
      case "started":
        return `${head}${this.#paint(GREEN, "▶")} ${who} started on ${ev.agent} gpu ${ev.gpus.length ? ev.gpus.join(",") : "-"} (attempt ${ev.attempt})`;
      case "report": {
        const p = this.#progress.get(`${ev.study}/${ev.trial}`);
        const m = ev.metrics;
        const parts = p ? this.#progressText(ev.study, p) : "";
        const thr = Object.keys(m).find((k) => /throughput|_per_s(ec)?$/.test(k));
        return `${head}· ${who}${parts}${thr !== undefined ? ` ${thr} ${fmtValue(m[thr] as number)}` : ""}`;
      }
      case "decision": {
        if (ev.decision !== "STOP") return null;
        const at =
          ev.rung !== null ? `rung ${fmtValue(ev.rung)}` : `${this.#meta.get(ev.study)?.timeAttr ?? "t"} ${fmtValue(ev.t)}`;
        const detail =
          ev.value !== null
            ? ` (${this.#meta.get(ev.study)?.metric ?? "metric"} ${fmtValue(ev.value)}${ev.cutoff !== null ? `, cutoff ${fmtValue(ev.cutoff)}` : ""})`
            : "";
        return `${head}${this.#paint(YELLOW, "■")} ${who} stopped at ${at} by ${ev.by}${detail}`;
      }
      case "finished": {
        const exit = ev.exitCode !== null ? `exit ${ev.exitCode}` : ev.signal !== null ? ev.signal : "no exit code";
        if (ev.status === "completed")
          return `${head}${this.#paint(GREEN, "✓")} ${who} finished (${exit}, attempt ${ev.attempt})`;
        if (ev.status === "stopped") return `${head}${this.#paint(YELLOW, "■")} ${who} stopped on ${ev.agent} (${ev.reason})`;
        return `${head}${this.#paint(RED, "✗")} ${who} failed (${exit}, attempt ${ev.attempt}): ${firstLine(ev.reason)}`;
      }
      case "ended":
        if (ev.status !== "failed" && ev.status !== "cancelled") return null;
        return `${head}${this.#paint(RED, "✗")} ${who} ${ev.status} after ${ev.attempts} attempt(s): ${firstLine(ev.reason)}`;
      case "rejected":
        return `${head}${this.#paint(RED, "✗")} ${who} rejected by ${ev.agent}: ${ev.reason}: ${firstLine(ev.detail)}`;
      default:
        return null;
    }
  }
}

function firstLine(s: string): string {
  const i = s.indexOf("\n");
  return i < 0 ? s : s.slice(0, i);
}

/** A study record's spec (as stored, snake_case) → its metric and time attribute. */
export function studyMetaFromSpec(spec: Record<string, unknown>): StudyMeta | null {
  const metric = spec.metric as { name?: unknown } | undefined;
  const scheduler = spec.scheduler as { time_attr?: unknown } | undefined;
  if (!metric || typeof metric.name !== "string") return null;
  return { metric: metric.name, timeAttr: typeof scheduler?.time_attr === "string" ? scheduler.time_attr : "epoch" };
}
