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
 */

export const MAX_REPORT_LINE = 64 * 1024;
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
    const server = createServer({ allowHalfOpen: false });
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
    });
    socket.on("end", () => {
      if (buf && !skipping) take(buf);
      buf = "";
    });
    socket.on("error", () => {});
    socket.on("close", () => this.#sockets.delete(socket));
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
