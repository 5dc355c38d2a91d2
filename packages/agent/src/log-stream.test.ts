import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JetStreamClient } from "@nats-io/jetstream";
import { decode, LogChunkSchema, silentLogger } from "@rung/protocol";
import { afterAll, describe, expect, it } from "vitest";
import { cleanLine, LogStream } from "./log-stream.js";

const dir = mkdtempSync(join(tmpdir(), "rung-log-stream-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A JetStream stand-in whose publishes wait until the test lets them through. */
function gatedJs() {
  const sent: { subject: string; chunk: ReturnType<typeof decodeChunk>; msgID: string }[] = [];
  let open = false;
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const js = {
    async publish(subject: string, data: Uint8Array, opts: { msgID: string }) {
      if (!open) await gate;
      sent.push({ subject, chunk: decodeChunk(data), msgID: opts.msgID });
      return { seq: sent.length, duplicate: false, stream: "LOGS" };
    },
  } as unknown as JetStreamClient;
  return {
    js,
    sent,
    open() {
      open = true;
      release();
    },
  };
}

function decodeChunk(data: Uint8Array) {
  const r = decode(LogChunkSchema, data);
  if (!r.ok) throw r.error;
  return r.value;
}

function stream(js: JetStreamClient, file: string, maxPendingBytes: number) {
  return new LogStream({
    js,
    subject: "t.logs.s.tr.1",
    study: "s",
    trial: "tr",
    attempt: 1,
    agent: "a",
    filePath: join(dir, file),
    log: silentLogger(),
    flushMs: 20,
    chunkBytes: 1024,
    maxPendingBytes,
  });
}

describe("log stream", () => {
  it("batches output into ordered chunks with an eof mark, and keeps every byte in the file", async () => {
    const g = gatedJs();
    g.open();
    const s = stream(g.js, "a.log", 1 << 20);
    for (let i = 1; i <= 100; i++) s.write(Buffer.from(`line ${i}\r\n`));
    await s.finish();
    const text = g.sent.map((x) => Buffer.from(x.chunk.data).toString()).join("");
    expect(text).toBe(Array.from({ length: 100 }, (_, i) => `line ${i + 1}\r\n`).join(""));
    expect(g.sent.map((x) => x.chunk.seq)).toEqual(g.sent.map((_, i) => i));
    expect(g.sent.at(-1)?.chunk.eof).toBe(true);
    expect(g.sent.every((x) => x.chunk.data.length <= 1024)).toBe(true);
    expect(g.sent[0]?.msgID).toBe("s.tr.1.log.0");
    expect(readFileSync(join(dir, "a.log"), "utf8")).toBe(text);
    expect(s.tail()).toHaveLength(50);
    expect(s.tail().at(-1)).toBe("line 100");
  });

  it("stays bounded when output comes faster than NATS takes it, and says what it dropped", async () => {
    const g = gatedJs();
    const s = stream(g.js, "b.log", 8 * 1024);
    const line = Buffer.from(`${"x".repeat(98)}\r\n`);
    for (let i = 0; i < 50_000; i++) s.write(line); // 5 MB while the first publish hangs
    g.open();
    await s.finish();
    const sentBytes = g.sent.reduce((n, x) => n + x.chunk.data.length, 0);
    // At most what was in flight (one chunk) + the cap + the drop note made it out.
    expect(sentBytes).toBeLessThan(1024 + 8 * 1024 + 200);
    expect(s.droppedBytes).toBeGreaterThan(4_900_000);
    const text = g.sent.map((x) => Buffer.from(x.chunk.data).toString()).join("");
    expect(text).toMatch(/\[rung: \d+ bytes of output dropped/);
    expect(g.sent.at(-1)?.chunk.eof).toBe(true);
    // The local file has everything.
    expect(readFileSync(join(dir, "b.log")).length).toBe(50_000 * 100);
  });
});

describe("log tail lines", () => {
  it("cleans terminal lines for the log tail", () => {
    expect(cleanLine("\x1b[31mred\x1b[0m\r")).toBe("red");
    expect(cleanLine("10%\r50%\r100%")).toBe("100%");
  });
});
