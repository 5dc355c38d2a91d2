import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { dirname } from "node:path";
import { StringDecoder } from "node:string_decoder";
import type { JetStreamClient } from "@nats-io/jetstream";
import { encode, type LogChunk, type Logger, logChunkMsgId, SCHEMA_VERSION, studyScope } from "@rung/protocol";

/**
 * One attempt's terminal output, on its three ways out:
 *  - the logs stream, in chunks: batched (every {@link LogStreamOptions.flushMs} or once
 *    {@link LogStreamOptions.chunkBytes} are waiting, whichever comes first), one publish in flight
 *    at a time. Memory is bounded: when the trial prints faster than NATS takes it, the oldest unsent
 *    bytes beyond `maxPendingBytes` are dropped and the next chunk says so in the output itself;
 *  - a local file per attempt, complete, whatever NATS did (a slow disk slows the trial down through
 *    the terminal rather than filling memory);
 *  - a ring of the last lines, cleaned of escape sequences, for the `finished` event of a failure.
 */

export interface LogStreamOptions {
  js: JetStreamClient;
  subject: string;
  study: string;
  /** The study's incarnation id (scopes the chunks' message ids); none for older studies. */
  studyId?: string | null;
  /** This agent's id tag for the order (protocol's `agentIdTag`), which ends every chunk's message id. */
  tag?: string | null;
  trial: string;
  attempt: number;
  agent: string;
  filePath: string;
  log: Logger;
  /** Default 200 ms. */
  flushMs?: number;
  /** Default 32 KiB. */
  chunkBytes?: number;
  /** Default 1 MiB. */
  maxPendingBytes?: number;
  /** Lines kept for the log tail. Default 50. */
  tailLines?: number;
  /** When this says so (the connection is closed for good), publishing stops. */
  giveUp?: () => boolean;
}

const MAX_LINE_CHARS = 4096;
// CSI and OSC sequences and single-character escapes: what colours and progress bars are made of.
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

/** A terminal line as a person saw it: escapes gone, and only what followed the last carriage return. */
export function cleanLine(raw: string): string {
  const s = raw.replace(ANSI, "").replace(/\r+$/, "");
  const cr = s.lastIndexOf("\r");
  return cr >= 0 ? s.slice(cr + 1) : s;
}

export class LogStream {
  readonly #o: Required<Omit<LogStreamOptions, "js" | "log" | "giveUp">>;
  readonly #giveUp: () => boolean;
  readonly #js: JetStreamClient;
  readonly #log: Logger;
  #file: WriteStream | undefined;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #droppedUnreported = 0;
  #droppedTotal = 0;
  #seq = 0;
  #timer: NodeJS.Timeout | undefined;
  #pumping: Promise<void> | undefined;
  #eof = false;
  #eofSent = false;
  #giveUpAt = Number.POSITIVE_INFINITY;
  #decoder = new StringDecoder("utf8");
  #line = "";
  #tail: string[] = [];
  #publishFailures = 0;

  constructor(options: LogStreamOptions) {
    this.#js = options.js;
    this.#log = options.log;
    this.#giveUp = options.giveUp ?? (() => false);
    this.#o = {
      subject: options.subject,
      study: options.study,
      studyId: options.studyId ?? null,
      tag: options.tag ?? null,
      trial: options.trial,
      attempt: options.attempt,
      agent: options.agent,
      filePath: options.filePath,
      flushMs: options.flushMs ?? 200,
      chunkBytes: options.chunkBytes ?? 32 * 1024,
      maxPendingBytes: options.maxPendingBytes ?? 1024 * 1024,
      tailLines: options.tailLines ?? 50,
    };
    try {
      mkdirSync(dirname(this.#o.filePath), { recursive: true });
      this.#file = createWriteStream(this.#o.filePath, { flags: "w" });
      this.#file.on("error", (err) => {
        this.#log.warn(
          { err: err.message, file: this.#o.filePath },
          "cannot write the local log file; output still goes to NATS",
        );
        this.#file = undefined;
      });
    } catch (err) {
      this.#log.warn({ err: (err as Error).message, file: this.#o.filePath }, "cannot create the local log file");
    }
  }

  /** Bytes of output dropped from the NATS stream because it came faster than NATS took it. */
  get droppedBytes(): number {
    return this.#droppedTotal;
  }

  /**
   * Takes a piece of output. Returns false when the local file is behind (a disk slower than the
   * trial's output): the caller then pauses the terminal until {@link fileDrained}, which slows the
   * trial's writes instead of growing a buffer here.
   */
  write(data: Buffer): boolean {
    if (this.#eof || data.length === 0) return true;
    const fileOk = this.#file ? this.#file.write(data) : true;
    this.#addToTail(this.#decoder.write(data));
    this.#pending.push(data);
    this.#pendingBytes += data.length;
    while (this.#pendingBytes > this.#o.maxPendingBytes) {
      const over = this.#pendingBytes - this.#o.maxPendingBytes;
      const head = this.#pending[0] as Buffer;
      if (head.length <= over) {
        this.#pending.shift();
        this.#drop(head.length);
      } else {
        this.#pending[0] = head.subarray(over);
        this.#drop(over);
      }
    }
    if (this.#pendingBytes >= this.#o.chunkBytes) this.#kick();
    else this.#timer ??= setTimeout(() => this.#kick(), this.#o.flushMs);
    return fileOk;
  }

  /** Resolves when the local file has caught up (at once when it has). */
  fileDrained(): Promise<void> {
    const file = this.#file;
    if (!file || !file.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        file.off("drain", done);
        file.off("close", done);
        resolve();
      };
      file.once("drain", done);
      file.once("close", done);
    });
  }

  #drop(n: number): void {
    this.#pendingBytes -= n;
    this.#droppedUnreported += n;
    this.#droppedTotal += n;
  }

  #addToTail(text: string): void {
    const parts = (this.#line + text).split("\n");
    this.#line = (parts.pop() as string).slice(-MAX_LINE_CHARS);
    for (const p of parts) {
      this.#tail.push(cleanLine(p.slice(-MAX_LINE_CHARS)));
      if (this.#tail.length > this.#o.tailLines) this.#tail.shift();
    }
  }

  /** The last lines of output (an unfinished last line included), for the finished event. */
  tail(): string[] {
    const last = cleanLine(this.#line + this.#decoder.end());
    const lines = last ? [...this.#tail, last] : [...this.#tail];
    return lines.slice(-this.#o.tailLines);
  }

  #kick(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pumping ??= this.#pump().finally(() => {
      this.#pumping = undefined;
      // Output that arrived during the last publish waits for the next batch, not for ever.
      if (this.#pendingBytes > 0 && !this.#eof) this.#timer ??= setTimeout(() => this.#kick(), this.#o.flushMs);
    });
  }

  async #pump(): Promise<void> {
    while (this.#pendingBytes > 0 || this.#droppedUnreported > 0 || (this.#eof && !this.#eofSent)) {
      const parts: Buffer[] = [];
      if (this.#droppedUnreported > 0) {
        parts.push(
          Buffer.from(`\r\n[rung: ${this.#droppedUnreported} bytes of output dropped: it came faster than NATS took it]\r\n`),
        );
        this.#droppedUnreported = 0;
      }
      let size = 0;
      while (this.#pending.length > 0 && size < this.#o.chunkBytes) {
        const head = this.#pending[0] as Buffer;
        const room = this.#o.chunkBytes - size;
        if (head.length <= room) {
          parts.push(head);
          this.#pending.shift();
          size += head.length;
        } else {
          parts.push(head.subarray(0, room));
          this.#pending[0] = head.subarray(room);
          size += room;
        }
      }
      this.#pendingBytes -= size;
      const last = this.#eof && this.#pendingBytes === 0;
      const chunk: LogChunk = {
        v: SCHEMA_VERSION,
        type: "log",
        study: this.#o.study,
        trial: this.#o.trial,
        attempt: this.#o.attempt,
        agent: this.#o.agent,
        seq: this.#seq,
        ts: Date.now(),
        data: new Uint8Array(Buffer.concat(parts)),
        eof: last,
      };
      const ok = await this.#publish(chunk);
      if (!ok) return;
      this.#seq += 1;
      if (last) this.#eofSent = true;
    }
  }

  async #publish(chunk: LogChunk): Promise<boolean> {
    const bytes = encode(chunk);
    const msgID = logChunkMsgId(
      studyScope(this.#o.study, this.#o.studyId),
      this.#o.trial,
      this.#o.attempt,
      chunk.seq,
      this.#o.tag,
    );
    for (;;) {
      try {
        await this.#js.publish(this.#o.subject, bytes, { msgID, timeout: 5000 });
        return true;
      } catch (err) {
        this.#publishFailures += 1;
        if (this.#publishFailures === 1)
          this.#log.warn({ err: (err as Error).message }, "cannot publish terminal output; retrying");
        if (Date.now() >= this.#giveUpAt || this.#giveUp()) return false;
        await new Promise((r) => setTimeout(r, 1000));
        if (Date.now() >= this.#giveUpAt || this.#giveUp()) return false;
      }
    }
  }

  /**
   * Sends what is left and the end-of-output mark, and closes the file. Gives up on NATS after
   * `timeoutMs` (the local file has everything regardless).
   */
  async finish(timeoutMs = 10_000): Promise<void> {
    if (this.#eof) return;
    this.#eof = true;
    this.#giveUpAt = Date.now() + timeoutMs;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    // A pump may be running; wait for it, then pump the rest with the eof mark.
    while (this.#pumping) await this.#pumping;
    if (!this.#eofSent) {
      this.#kick();
      while (this.#pumping) await this.#pumping;
    }
    if (!this.#eofSent) this.#log.warn("gave up sending the end of the terminal output to NATS");
    const file = this.#file;
    this.#file = undefined;
    if (file) await new Promise<void>((r) => file.end(r));
  }
}
