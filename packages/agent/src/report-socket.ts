import { rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";

/**
 * The reporting channel, language-neutral on purpose: `RUNG_REPORT` names a Unix stream socket the
 * agent listens on for one attempt; the trial connects and writes one flat JSON object per line, numbers
 * only, e.g. `{"epoch": 3, "val_acc": 0.91, "data_wait_s": 4.1, "compute_s": 9.7}`. JSON has no NaN or
 * infinities, so the three strings "NaN", "Infinity" and "-Infinity" stand for them. One key is not a
 * metric: `"checkpoint": true` says the trial has just written its checkpoint files (checkpoints.ts).
 *
 * A line that is not such an object is counted and skipped — never a reason to stop the trial. A line
 * longer than {@link MAX_REPORT_LINE} bytes is skipped too, so a trial cannot make the agent buffer
 * without bound.
 *
 * Reads rest: after each read a connection stops reading until the next tick of one shared timer
 * (every {@link READ_REST_MS}), and the lines written meanwhile wait in the kernel and come in one
 * read. A trial that reports now and then is read the moment it writes; one that reports 50 times a
 * second is read 20 times a second, a few lines a read — the wakeup and read of each line were most of
 * an agent's CPU per result (docs/benchmarks.md, "Agent CPU per result"). A line waits one tick at
 * most. A paused Node socket keeps reading from the kernel into its own buffer, so the rest stops and
 * starts the connection's handle itself, as Node's own pause does for a socket that reads into a
 * buffer of its caller's (`restHandle`); where a Node lacks that handle, a one-byte high-water mark
 * still stops the reads one chunk after the pause, and a line waits up to two ticks.
 */

export const MAX_REPORT_LINE = 64 * 1024;
/** How long a connection rests after a read (see above). */
export const READ_REST_MS = 50;
const MAX_KEYS = 256;
const MAX_CONNECTIONS = 16;

const SPECIAL: Readonly<Record<string, number>> = {
  NaN: Number.NaN,
  Infinity: Number.POSITIVE_INFINITY,
  "-Infinity": Number.NEGATIVE_INFINITY,
};

export type ParsedReport = { ok: true; metrics: Record<string, number>; checkpoint: boolean } | { ok: false; why: string };

export function parseReportLine(line: string): ParsedReport {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { ok: false, why: "not JSON" };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return { ok: false, why: "not a JSON object" };
  const metrics: Record<string, number> = {};
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) return { ok: false, why: "no metrics" };
  if (entries.length > MAX_KEYS) return { ok: false, why: `more than ${MAX_KEYS} metrics` };
  let checkpoint = false;
  for (const [k, v] of entries) {
    if (!k) return { ok: false, why: "an empty metric name" };
    if (k === "checkpoint") {
      if (typeof v !== "boolean") return { ok: false, why: '"checkpoint" is not true or false' };
      checkpoint = v;
      continue;
    }
    if (typeof v === "number") metrics[k] = v;
    else if (typeof v === "string" && v in SPECIAL) metrics[k] = SPECIAL[v] as number;
    else return { ok: false, why: `${JSON.stringify(k)} is not a number` };
  }
  if (Object.keys(metrics).length === 0) return { ok: false, why: "no metrics" };
  return { ok: true, metrics, checkpoint };
}

export interface ReportHandlers {
  onReport(metrics: Record<string, number>, checkpoint: boolean): void;
  onMalformed(why: string, line: string): void;
}

/** The libuv handle under a connection, where this Node has it: what the rest stops and starts. */
interface ReadHandle {
  reading: boolean;
  readStop(): number;
  readStart(): number;
}

function restHandle(socket: Socket): ReadHandle | null {
  const h = (socket as unknown as { _handle?: Partial<ReadHandle> | null })._handle;
  return h && typeof h.reading === "boolean" && typeof h.readStop === "function" && typeof h.readStart === "function"
    ? (h as ReadHandle)
    : null;
}

/** Connections resting after a read, and the one timer that wakes them all (running only while some rest). */
const resting = new Set<Socket>();
let restTimer: NodeJS.Timeout | null = null;

function rest(socket: Socket): void {
  socket.pause();
  const h = restHandle(socket);
  if (h?.reading) {
    h.reading = false;
    h.readStop();
  }
  resting.add(socket);
  restTimer ??= setInterval(wake, READ_REST_MS).unref(); // the agent's own work keeps it alive, never a rest
}

function wake(): void {
  if (resting.size === 0) {
    clearInterval(restTimer as NodeJS.Timeout);
    restTimer = null;
    return;
  }
  const due = [...resting];
  resting.clear();
  for (const s of due) {
    if (s.destroyed) continue;
    s.resume();
    const h = restHandle(s);
    if (h && !h.reading) {
      h.reading = true;
      if (h.readStart() !== 0) s.destroy();
    }
  }
}

export class ReportSocket {
  readonly path: string;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #closing: Promise<void> | undefined;

  private constructor(path: string, server: Server) {
    this.path = path;
    this.#server = server;
  }

  /** Listens on `path` (removed first if a stale socket is there). */
  static listen(path: string, handlers: ReportHandlers): Promise<ReportSocket> {
    rmSync(path, { force: true });
    // A one-byte high-water mark: without its handle, a paused connection stops reading one chunk later (see the top).
    const server = createServer({ allowHalfOpen: false, highWaterMark: 1 });
    const rs = new ReportSocket(path, server);
    server.maxConnections = MAX_CONNECTIONS;
    server.on("connection", (socket) => rs.#accept(socket, handlers));
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        // A listen error after start (none expected on a Unix socket) must not crash the agent.
        server.on("error", () => {});
        resolve(rs);
      });
    });
  }

  #accept(socket: Socket, h: ReportHandlers): void {
    this.#sockets.add(socket);
    socket.setEncoding("utf8");
    let buf = "";
    let skipping = false;
    const take = (line: string) => {
      if (!line.trim()) return;
      const r = parseReportLine(line);
      if (r.ok) h.onReport(r.metrics, r.checkpoint);
      else h.onMalformed(r.why, line.slice(0, 200));
    };
    socket.on("data", (chunk: string) => {
      buf += chunk;
      for (;;) {
        const nl = buf.indexOf("\n");
        if (nl < 0) break;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (skipping) skipping = false;
        else take(line);
      }
      if (buf.length > MAX_REPORT_LINE) {
        if (!skipping) h.onMalformed(`a line longer than ${MAX_REPORT_LINE} bytes`, buf.slice(0, 200));
        skipping = true;
        buf = "";
      }
      rest(socket);
    });
    socket.on("end", () => {
      if (buf && !skipping) take(buf);
      buf = "";
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.#sockets.delete(socket);
      resting.delete(socket);
    });
  }

  /**
   * Stops listening. Connections still open get `graceMs` to deliver what the trial wrote just before
   * it exited (the kernel may hold the last line after the process is gone), then are cut.
   */
  close(graceMs = 500): Promise<void> {
    this.#closing ??= (async () => {
      const closed = new Promise<void>((r) => this.#server.close(() => r()));
      const deadline = Date.now() + graceMs;
      while (this.#sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const s of this.#sockets) s.destroy();
      await closed;
      rmSync(this.path, { force: true });
    })();
    return this.#closing;
  }
}
